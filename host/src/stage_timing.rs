//! Stage timing of a client round trip, measured inside the running server.
//!
//! With the `stage-timing` feature, a connection's task carries a trace: the
//! moment the poll that read a client frame began, then a mark as each
//! stage of the round trip ends (flood check, repair and C14N, routing, new
//! thread, audit record, mailbox, instance lookup, wasm call, emission C14N,
//! envelope, outbox, write). When the answer has been written, the
//! differences between consecutive marks are added to process-wide
//! figures, and every [`DUMP_EVERY`] round trips the median, 90th
//! percentile and mean of each stage are written as a Markdown table to the
//! file named by `AGENTSERVER_STAGES` (nothing is written without it).
//!
//! Without the feature every function here is empty or the identity and
//! compiles to nothing: the hot path pays no clock reads for it.
//!
//! Only a round trip driven by the connection's own task is traced (a
//! worker spawned onto a task of its own carries no trace), and a trace
//! whose marks did not come in the expected order is dropped.

use std::future::Future;

/// One stage of a round trip, named by what has just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// The frame was read: TLS record decrypted, WebSocket frame parsed.
    Read,
    /// Flood check, draining and audit-backlog checks, size limit.
    FloodCheck,
    /// Repair and exclusive C14N of the client's frame.
    Ingest,
    /// Access check and the listeners of the tag.
    Routing,
    /// A new thread: id, the session's and the bus's thread tables.
    NewThread,
    /// The audit record of the client's message queued for the writer.
    AuditIn,
    /// The message queued on its thread's mailbox.
    EnqueueIn,
    /// From the end of the frame's handling to its worker taking the hop.
    WorkerStart,
    /// Admission, the session's instance slot, permits, arming the store.
    InstanceLookup,
    /// The wasm call: lowering, the guest, lifting, output checks.
    WasmCall,
    /// Repair and C14N of what the agent emitted.
    EmissionIngest,
    /// The audit record of the agent's answer.
    AuditOut,
    /// The answer queued on the mailbox and taken again by the worker.
    EnqueueOut,
    /// The answer written into its `<message>` envelope.
    Envelope,
    /// The frame pushed to the session's outbox.
    OutboxPush,
    /// From the outbox to the connection taking the frame.
    OutboxPop,
    /// The frame written: WebSocket frame, TLS record, socket write.
    Write,
}

/// Every stage, in round-trip order.
pub const STAGES: [Stage; 17] = [
    Stage::Read,
    Stage::FloodCheck,
    Stage::Ingest,
    Stage::Routing,
    Stage::NewThread,
    Stage::AuditIn,
    Stage::EnqueueIn,
    Stage::WorkerStart,
    Stage::InstanceLookup,
    Stage::WasmCall,
    Stage::EmissionIngest,
    Stage::AuditOut,
    Stage::EnqueueOut,
    Stage::Envelope,
    Stage::OutboxPush,
    Stage::OutboxPop,
    Stage::Write,
];

/// Round trips between two writes of the figures.
pub const DUMP_EVERY: u64 = 20_000;

impl Stage {
    /// How the stage is named in the table.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Read => "read (TLS, WebSocket)",
            Stage::FloodCheck => "flood check, drain/backlog/size checks",
            Stage::Ingest => "repair + C14N of the client's frame",
            Stage::Routing => "routing: grants, listeners of the tag",
            Stage::NewThread => "new thread (id, tables)",
            Stage::AuditIn => "audit record of the message (queued)",
            Stage::EnqueueIn => "mailbox: enqueue the message",
            Stage::WorkerStart => "worker takes the hop",
            Stage::InstanceLookup => "instance lookup, admission, arming",
            Stage::WasmCall => "wasm call (lower, guest, lift)",
            Stage::EmissionIngest => "repair + C14N of the emission",
            Stage::AuditOut => "audit record of the answer (queued)",
            Stage::EnqueueOut => "mailbox: the answer queued and taken",
            Stage::Envelope => "envelope of the answer",
            Stage::OutboxPush => "outbox push",
            Stage::OutboxPop => "outbox to the connection",
            Stage::Write => "write (WebSocket, TLS, socket)",
        }
    }
}

/// Runs `future` (a connection) with a trace of its own.
#[cfg(feature = "stage-timing")]
pub fn scope<F: Future>(future: F) -> impl Future<Output = F::Output> {
    imp::TRACE.scope(std::cell::RefCell::new(imp::Trace::default()), future)
}

/// Runs `future` (a connection) with a trace of its own.
#[cfg(not(feature = "stage-timing"))]
#[inline(always)]
pub fn scope<F: Future>(future: F) -> F {
    future
}

/// `future` (the read of a client frame), with the start of the poll that
/// completes it taken as the start of a new trace.
#[cfg(feature = "stage-timing")]
pub fn read<F: Future + Unpin>(future: F) -> impl Future<Output = F::Output> {
    imp::TimedRead { inner: future }
}

/// `future` (the read of a client frame), with the start of the poll that
/// completes it taken as the start of a new trace.
#[cfg(not(feature = "stage-timing"))]
#[inline(always)]
pub fn read<F: Future + Unpin>(future: F) -> F {
    future
}

/// Marks the end of `stage` in the current task's trace, if any.
#[inline(always)]
pub fn mark(stage: Stage) {
    #[cfg(feature = "stage-timing")]
    imp::mark(stage);
    #[cfg(not(feature = "stage-timing"))]
    let _ = stage;
}

/// Ends the current trace (the answer is written) and adds it to the
/// figures.
#[inline(always)]
pub fn finish() {
    #[cfg(feature = "stage-timing")]
    imp::finish();
}

#[cfg(feature = "stage-timing")]
mod imp {
    use super::{Stage, DUMP_EVERY, STAGES};
    use std::cell::RefCell;
    use std::fmt::Write as _;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};
    use std::time::Instant;

    tokio::task_local! {
        pub(super) static TRACE: RefCell<Trace>;
    }

    /// The marks of the round trip in progress.
    #[derive(Default)]
    pub(super) struct Trace {
        start: Option<Instant>,
        marks: Vec<(Stage, Instant)>,
    }

    /// Stage durations of finished round trips, in nanoseconds.
    struct Figures {
        samples: Vec<Vec<u64>>,
        totals: Vec<u64>,
        traces: u64,
    }

    static FIGURES: Mutex<Option<Figures>> = Mutex::new(None);

    pub(super) struct TimedRead<F> {
        pub(super) inner: F,
    }

    impl<F: Future + Unpin> Future for TimedRead<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let started = Instant::now();
            let polled = Pin::new(&mut self.inner).poll(cx);
            if polled.is_ready() {
                let _ = TRACE.try_with(|trace| {
                    let mut trace = trace.borrow_mut();
                    trace.start = Some(started);
                    trace.marks.clear();
                });
                super::mark(Stage::Read);
            }
            polled
        }
    }

    pub(super) fn mark(stage: Stage) {
        let now = Instant::now();
        let _ = TRACE.try_with(|trace| {
            let mut trace = trace.borrow_mut();
            if trace.start.is_some() {
                trace.marks.push((stage, now));
            }
        });
    }

    pub(super) fn finish() {
        let Ok(Some((start, marks))) = TRACE.try_with(|trace| {
            let mut trace = trace.borrow_mut();
            let start = trace.start.take()?;
            Some((start, std::mem::take(&mut trace.marks)))
        }) else {
            return;
        };
        // Only complete round trips, their stages in order, count.
        let order: Vec<Stage> = marks.iter().map(|(stage, _)| *stage).collect();
        if order != STAGES {
            return;
        }
        let mut figures = FIGURES.lock().unwrap_or_else(|e| e.into_inner());
        let figures = figures.get_or_insert_with(|| Figures {
            samples: vec![Vec::new(); STAGES.len()],
            totals: Vec::new(),
            traces: 0,
        });
        let mut previous = start;
        for (n, (_, at)) in marks.iter().enumerate() {
            figures.samples[n].push(at.duration_since(previous).as_nanos() as u64);
            previous = *at;
        }
        figures
            .totals
            .push(previous.duration_since(start).as_nanos() as u64);
        figures.traces += 1;
        if figures.traces.is_multiple_of(DUMP_EVERY) {
            if let Some(path) = std::env::var_os("AGENTSERVER_STAGES") {
                let _ = std::fs::write(path, table(figures));
            }
        }
    }

    /// The figures as a Markdown table.
    fn table(figures: &Figures) -> String {
        let stat = |values: &[u64]| {
            let mut sorted = values.to_vec();
            sorted.sort_unstable();
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
            let mean = sorted.iter().sum::<u64>() as f64 / sorted.len() as f64;
            (at(0.5), at(0.9), mean)
        };
        let mut out = format!(
            "{} round trips\n\n| stage | p50 ns | p90 ns | mean ns |\n|---|---|---|---|\n",
            figures.traces
        );
        for (stage, values) in STAGES.iter().zip(&figures.samples) {
            let (p50, p90, mean) = stat(values);
            let _ = writeln!(out, "| {} | {p50} | {p90} | {mean:.0} |", stage.label());
        }
        let (p50, p90, mean) = stat(&figures.totals);
        let _ = writeln!(
            out,
            "| **whole round trip inside the server** | {p50} | {p90} | {mean:.0} |"
        );
        out
    }
}
