//! One WebSocket connection: authentication, the catalog, then frames in
//! both directions until either side ends it.
//!
//! The task owns its socket. It selects over: frames from the client (each
//! checked for size and flooding, then submitted to the bus as the user),
//! the worker of the thread the latest message started, frames from the
//! session's outbox (sent as they come), routing-table changes (a fresh
//! catalog when the user's view changed), a keepalive ticker, and server
//! shutdown. When the task ends, the session ends with it; dropping the
//! task's future does the same, through the guards.
//!
//! # One task per round trip
//!
//! A message that starts a thread gets a worker, and the connection runs
//! that worker itself while it has no other: the message is canonicalized,
//! delivered to the agent, and its answer queued and written, all on this
//! task, with no hand-off to another task or thread in between. The worker
//! is first polled right after the frame is taken: when the agent is warm
//! and free it answers within that poll, and the answer is written in the
//! same turn of the loop. A message
//! that starts a second thread while the first is still running gets a
//! task of its own, so threads still run side by side. A worker still
//! running when the connection ends is handed to the runtime: the thread
//! finishes, and its answers wait in the outbox for a resume.

use super::catalog::{capabilities, catalog_frame, CatalogHeader};
use super::flood::FloodGuard;
use super::gate::{GateKey, Socket};
use super::pressure::PendingSlot;
use super::State;
use crate::auth::{Allow, AuthenticatedUser};
use crate::bus::{AuditKind, AuditRecord, Capability, Grants, RefusalKind, Session, SessionId};
use crate::bus::{Frame, Outbox, ThreadWorker, WorkerSlot};
use crate::privileged::Carrier;
use crate::session::{Attached, ResumeError};
use crate::stage_timing::{self, Stage};
use crate::xml::{escape_attribute, ingest, Limits, Tag};
use futures::{SinkExt as _, StreamExt as _};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How long the first frame may take.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A connection silent this long (no frame, no pong) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The one answer to every failed login.
const AUTH_FAILED: &str = "authentication failed";

/// Serves one upgraded connection to its end. `unauthenticated` holds the
/// connection's place among its address's connections that have not logged
/// in; it is given back at login.
pub(crate) async fn serve(
    state: Arc<State>,
    mut ws: Socket,
    gate: GateKey,
    peer: SocketAddr,
    unauthenticated: PendingSlot,
) {
    let _open = Counted::new(&state.counters.connections);
    let Some(login) = authenticate(&state, &mut ws, peer).await else {
        state.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        close(&mut ws, CloseCode::Policy, AUTH_FAILED).await;
        return;
    };
    let login = match login {
        First::Federation(inbound) => {
            drop(unauthenticated);
            gate.open();
            let (code, reason) = super::federated::serve(&state, &mut ws, &inbound).await;
            close(&mut ws, code, reason).await;
            return;
        }
        First::User(login) => login,
    };
    drop(unauthenticated);
    gate.open();
    let user = match &login {
        Login::Fresh(user) => user.name().to_owned(),
        Login::Resumed(attached) => attached.user.clone(),
    };
    let Some(_slot) = state.claim_connection(&user) else {
        if let Login::Resumed(attached) = &login {
            state
                .sessions
                .detach(attached.session.id(), &attached.attachment, Instant::now());
        }
        close(&mut ws, CloseCode::Policy, "too many connections").await;
        return;
    };
    let _session_count = Counted::new(&state.counters.sessions);
    let (attached, resumed) = match login {
        Login::Fresh(user) => {
            let session = state.bus.open_session(user.name(), grants(user.allow()));
            let timeout = Duration::from_secs(state.session_timeout_seconds);
            (state.sessions.create(session, user.name(), timeout), false)
        }
        Login::Resumed(attached) => {
            // Grants may have changed while the client was away.
            if let Some(entry) = state.auth.users().get(&attached.user) {
                attached.session.set_grants(grants(&entry.allow));
            }
            (attached, true)
        }
    };
    let session = attached.session.clone();
    let outcome = crate::stage_timing::scope(
        Connection {
            state: Arc::clone(&state),
            session: session.clone(),
            user,
            flood: state.flood_of(session.id()),
            last_seen: Instant::now(),
            catalog: Vec::new(),
            command_in_flight: Arc::new(AtomicBool::new(false)),
            local: LocalWorker::default(),
        }
        .run(&mut ws, &attached, resumed),
    )
    .await;
    let (code, reason) = match outcome {
        Ending::ClientClosed => {
            state
                .sessions
                .detach(session.id(), &attached.attachment, Instant::now());
            return;
        }
        Ending::EndSession => {
            state.sessions.end(session.id());
            (CloseCode::Normal, "session ended")
        }
        Ending::Flooding => {
            tracing::warn!(
                user = %attached.user,
                %peer,
                reason = "flooding",
                "connection closed and session ended: messages past the flood limit, or too many refused ones"
            );
            state.sessions.end(session.id());
            state.counters.flood_closes.fetch_add(1, Ordering::Relaxed);
            (CloseCode::Policy, "flooding")
        }
        Ending::Idle => {
            state
                .sessions
                .detach(session.id(), &attached.attachment, Instant::now());
            (CloseCode::Normal, "idle timeout")
        }
        Ending::TakenOver => (CloseCode::Policy, "session resumed elsewhere"),
        Ending::FrameTooLarge => {
            state
                .sessions
                .detach(session.id(), &attached.attachment, Instant::now());
            (CloseCode::Size, "frame too large")
        }
        Ending::Shutdown => {
            state
                .sessions
                .detach(session.id(), &attached.attachment, Instant::now());
            (CloseCode::Away, "server shutting down")
        }
    };
    close(&mut ws, code, reason).await;
}

/// A successful first frame.
enum Login {
    /// `<authenticate>`: a new session.
    Fresh(AuthenticatedUser),
    /// `<resume-session>`: an existing one, taken over by this socket.
    Resumed(Attached),
}

/// What a good first frame opens.
enum First {
    /// A user's session.
    User(Login),
    /// `<federation-hello>`: another organism, over a link.
    Federation(Box<crate::federation::Inbound>),
}

/// The tags a user's `allow` list grants.
pub(crate) fn grants(allow: &Allow) -> Grants {
    match allow {
        Allow::All => Grants::All,
        Allow::Tags(tags) => Grants::Tags(tags.iter().map(|t| Tag::new(t)).collect()),
    }
}

/// Audits a login or resume: what happened, who claimed to be whom, from
/// where; never the code or the token.
fn audit_auth(
    state: &State,
    event: &str,
    user: &str,
    session: Option<&SessionId>,
    peer: SocketAddr,
) {
    let mut canonical = String::from("<auth event=\"");
    escape_attribute(&mut canonical, event);
    canonical.push_str("\" peer=\"");
    escape_attribute(&mut canonical, &peer.ip().to_string());
    canonical.push_str("\" user=\"");
    escape_attribute(&mut canonical, user);
    canonical.push_str("\"></auth>");
    let none = SessionId::from_string("");
    let session = session.unwrap_or(&none);
    state.bus.audit(AuditRecord {
        kind: AuditKind::Auth,
        thread: None,
        session,
        from: "server",
        tag: "auth",
        depth: 0,
        canonical: &canonical,
    });
}

/// Reads the first frame and checks it; `None` for every kind of failure.
async fn authenticate(state: &State, ws: &mut Socket, peer: SocketAddr) -> Option<First> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, ws.next())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = first else {
        return None;
    };
    if starts_element(trim_start(text.as_bytes()), b"federation-hello") {
        return match state.federation.accept_hello(&text) {
            Ok(inbound) => Some(First::Federation(Box::new(inbound))),
            Err(reason) => {
                tracing::info!(%peer, %reason, "federation hello refused");
                None
            }
        };
    }
    let limits = Limits {
        max_input_bytes: 4096,
        ..Limits::default()
    };
    let payload = ingest(text.as_bytes(), &limits).ok()?.payloads.pop()?;
    match payload.tag().as_str() {
        "authenticate" => {
            let user = payload.root_attribute("user")?;
            let code = payload.root_attribute("totp")?;
            match state.auth.login(&user, &code, peer.ip(), SystemTime::now()) {
                Ok(user) => {
                    tracing::info!(user = user.name(), %peer, "logged in");
                    audit_auth(state, "login", user.name(), None, peer);
                    Some(First::User(Login::Fresh(user)))
                }
                Err(reason) => {
                    tracing::info!(%peer, %reason, "login refused");
                    audit_auth(state, "login-refused", &user, None, peer);
                    None
                }
            }
        }
        "resume-session" => {
            if state
                .resume_failures
                .is_blocked(&peer.ip().to_string(), Instant::now())
            {
                tracing::info!(%peer, "resume refused: too many failures");
                return None;
            }
            let id = payload.root_attribute("id")?;
            let token = payload.root_attribute("token")?;
            let mut resumed = state.sessions.resume(&id, &token, Instant::now());
            if let (Err(ResumeError::Unknown), Some(cluster)) = (&resumed, &state.cluster) {
                // Held by another node, or by one that is gone: ask the
                // others to let it go, then take it from the shared store.
                cluster.release_elsewhere(&id).await;
                resumed = state.sessions.take_over(
                    &id,
                    &token,
                    &state.bus,
                    |user| state.grants_of(user),
                    Instant::now(),
                );
            }
            match resumed {
                Ok(attached) => {
                    tracing::info!(user = %attached.user, %peer, "session resumed");
                    audit_auth(
                        state,
                        "resume",
                        &attached.user,
                        Some(attached.session.id()),
                        peer,
                    );
                    Some(First::User(Login::Resumed(attached)))
                }
                Err(reason) => {
                    let now_blocked = state
                        .resume_failures
                        .record_failure(&peer.ip().to_string(), Instant::now());
                    if now_blocked {
                        tracing::warn!(
                            %peer,
                            "resume failures: too many from this address; its resumes are refused for a while"
                        );
                    }
                    tracing::info!(%peer, %reason, "resume refused");
                    audit_auth(
                        state,
                        "resume-refused",
                        "",
                        Some(&SessionId::from_string(&id)),
                        peer,
                    );
                    None
                }
            }
        }
        _ => None,
    }
}

/// How a connection ended.
enum Ending {
    ClientClosed,
    /// A frame past the WebSocket cap, refused from its header.
    FrameTooLarge,
    TakenOver,
    EndSession,
    Flooding,
    Idle,
    Shutdown,
}

struct Connection {
    state: Arc<State>,
    session: Session,
    user: String,
    /// The session's flood state (see [`State::flood_of`]).
    flood: Arc<std::sync::Mutex<FloodGuard>>,
    last_seen: Instant,
    catalog: Vec<Capability>,
    /// Whether a privileged command of this connection is being applied.
    command_in_flight: Arc<AtomicBool>,
    /// The thread worker this task runs itself, if any.
    local: LocalWorker,
}

/// The changes of a watched value, as a future that lives across turns of
/// a `select!` loop: dropping [`changed`](Self::changed) unfinished keeps
/// the wait registered for the next turn.
struct Changes<T> {
    next: Pin<Box<dyn Future<Output = watch::Receiver<T>> + Send>>,
}

impl<T: Send + Sync + 'static> Changes<T> {
    fn new(receiver: watch::Receiver<T>) -> Self {
        Changes {
            next: Self::wait(receiver),
        }
    }

    /// Resolves with the receiver at the next change; never, once the
    /// sender is gone.
    fn wait(
        mut receiver: watch::Receiver<T>,
    ) -> Pin<Box<dyn Future<Output = watch::Receiver<T>> + Send>> {
        Box::pin(async move {
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            receiver
        })
    }

    /// Waits for the next change.
    async fn changed(&mut self) {
        let receiver = (&mut self.next).await;
        self.next = Self::wait(receiver);
    }
}

/// The thread worker a connection runs on its own task, in one slot whose
/// memory every worker reuses. Whatever is left of it when the connection
/// ends — however it ends — is handed to the runtime, so a thread never
/// stops halfway because its client went away.
#[derive(Default)]
struct LocalWorker(WorkerSlot);

impl LocalWorker {
    /// Runs `worker` here if nothing else runs here; spawns it otherwise.
    fn take(&mut self, worker: ThreadWorker) {
        self.0.start(worker);
    }

    /// Polls the worker once, in the caller's task; says whether there is
    /// none left (it finished, or there was none).
    async fn poll_once(&mut self) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(self.0.poll_worker(cx).is_ready())).await
    }

    /// Drives the worker to its end; pending forever when there is none.
    async fn finished(&mut self) {
        if self.0.is_busy() {
            std::future::poll_fn(|cx| self.0.poll_worker(cx)).await;
        } else {
            std::future::pending().await
        }
    }
}

impl Connection {
    async fn run(mut self, ws: &mut Socket, attached: &Attached, resumed: bool) -> Ending {
        // The rare signals wait in futures that live across turns of the
        // loop, rather than registering afresh on every frame.
        let mut changes = Changes::new(self.state.bus.changes());
        let mut grant_changes = Changes::new(self.state.privileged.grant_changes());
        let mut shutdown = Changes::new(self.state.shutdown.clone());
        let outbox = Arc::clone(self.session.outbox());
        if resumed {
            // What arrived while the client was away comes first, in order.
            while let Some(frame) = outbox.try_pop() {
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    return Ending::ClientClosed;
                }
                outbox.confirm_sent();
            }
        }
        self.catalog = capabilities(&self.state.bus.table(), &self.session.grants());
        let first = catalog_frame(
            CatalogHeader {
                user: &self.user,
                session: self.session.id().as_str(),
                session_timeout: Some(self.state.session_timeout_seconds),
                resume_token: Some(&attached.token),
                resumed,
            },
            &self.catalog,
        );
        if ws.send(Message::text(first)).await.is_err() {
            return Ending::ClientClosed;
        }
        let taken_over = Arc::clone(&attached.attachment.taken_over);
        let mut taken_over = std::pin::pin!(taken_over.notified());
        let mut keepalive = tokio::time::interval(PING_INTERVAL);
        keepalive.tick().await;
        loop {
            tokio::select! {
                () = &mut taken_over => return Ending::TakenOver,
                () = self.local.finished() => {}
                frame = crate::stage_timing::read(ws.next()) => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(WsError::Capacity(_))) => return Ending::FrameTooLarge,
                        _ => return Ending::ClientClosed,
                    };
                    self.last_seen = Instant::now();
                    match frame {
                        Message::Text(text) => {
                            if let Some(ending) = self.on_text(text.as_bytes()) {
                                return ending;
                            }
                            // A warm, free agent usually answers within the
                            // worker's first poll: then the answer is written
                            // in this same turn of the loop.
                            if self.local.poll_once().await {
                                if let Some(ending) = send_ready(ws, &outbox).await {
                                    return ending;
                                }
                            }
                        }
                        Message::Binary(_) => {
                            let refusal = "<error code=\"bad-frame\">binary frames are not accepted; send XML as text</error>";
                            if let Some(ending) = self.bad_frame(refusal) {
                                return ending;
                            }
                        }
                        Message::Close(_) => return Ending::ClientClosed,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                frame = outbox.pop() => {
                    let Some(frame) = frame else {
                        return Ending::EndSession;
                    };
                    if let Some(ending) = send_frame(ws, &outbox, frame).await {
                        return ending;
                    }
                }
                () = changes.changed() => self.push_catalog_if_changed(ws).await,
                () = grant_changes.changed() => {
                    self.reload_grants();
                    self.push_catalog_if_changed(ws).await;
                }
                _ = keepalive.tick() => {
                    if self.last_seen.elapsed() > IDLE_TIMEOUT {
                        return Ending::Idle;
                    }
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return Ending::ClientClosed;
                    }
                }
                () = shutdown.changed() => {
                    // Answers that made it before the end still go out.
                    while let Some(frame) = outbox.try_pop() {
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            return Ending::ClientClosed;
                        }
                        outbox.confirm_sent();
                    }
                    return Ending::Shutdown;
                }
            }
        }
    }

    /// Takes the user's grants from the user directory again (after a
    /// signed grant or revoke).
    fn reload_grants(&self) {
        if let Some(entry) = self.state.auth.users().get(&self.user) {
            self.session.set_grants(grants(&entry.allow));
        }
    }

    /// Hands a privileged command to the processor; the verdict arrives in
    /// the outbox. One command at a time per connection.
    fn on_privileged_command(&mut self, frame: &[u8]) {
        if self.command_in_flight.swap(true, Ordering::AcqRel) {
            self.session.outbox().push(
                "<privileged-result status=\"refused\">one privileged command at a time per connection</privileged-result>".into(),
            );
            return;
        }
        let privileged = Arc::clone(&self.state.privileged);
        let outbox = Arc::clone(self.session.outbox());
        let in_flight = Arc::clone(&self.command_in_flight);
        let carrier = Carrier {
            from: format!("user:{}", &self.user),
            session: self.session.id().clone(),
        };
        let frame = frame.to_vec();
        tokio::spawn(async move {
            let verdict = privileged.execute(&frame, &carrier).await;
            // Free the slot first: the client may send its next command as
            // soon as it reads this verdict.
            in_flight.store(false, Ordering::Release);
            outbox.push(verdict.to_xml().into());
        });
    }

    fn flood(&self) -> std::sync::MutexGuard<'_, FloodGuard> {
        self.flood.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one text frame; `Some` when the connection must end.
    fn on_text(&mut self, frame: &[u8]) -> Option<Ending> {
        self.state
            .counters
            .frames_received
            .fetch_add(1, Ordering::Relaxed);
        if !self.flood().take(Instant::now()) {
            return Some(Ending::Flooding);
        }
        let head = trim_start(frame);
        if starts_element(head, b"privileged-command") {
            self.on_privileged_command(frame);
            return None;
        }
        if self.state.draining.load(Ordering::Acquire) {
            self.session.outbox().push(
                "<error code=\"shutting-down\">the server is shutting down and takes no new messages</error>".into(),
            );
            return None;
        }
        if self.state.bus.audit_backlogged() {
            self.state
                .counters
                .storage_refusals
                .fetch_add(1, Ordering::Relaxed);
            self.session.outbox().push(
                "<error code=\"storage-unavailable\">the audit log cannot be stored now; nothing was done: send it again later</error>".into(),
            );
            return None;
        }
        if frame.len() > self.state.max_message_bytes {
            let refusal = format!(
                "<error code=\"bad-frame\">frame is {} bytes; the limit is {}</error>",
                frame.len(),
                self.state.max_message_bytes
            );
            return self.bad_frame(&refusal);
        }
        if starts_element(head, b"end-session") {
            return Some(Ending::EndSession);
        }
        stage_timing::mark(Stage::FloodCheck);
        match self.session.submit_and_drive(frame) {
            Ok(submitted) => {
                if let Some(worker) = submitted.worker {
                    self.local.take(worker);
                }
                None
            }
            Err(refusal)
                if matches!(
                    refusal.kind,
                    RefusalKind::AccessDenied | RefusalKind::Malformed
                ) =>
            {
                (!self.flood().bad_message(Instant::now())).then_some(Ending::Flooding)
            }
            Err(_) => None,
        }
    }

    fn bad_frame(&mut self, refusal: &str) -> Option<Ending> {
        self.state
            .counters
            .bad_frames
            .fetch_add(1, Ordering::Relaxed);
        self.session.outbox().push(refusal.into());
        (!self.flood().bad_message(Instant::now())).then_some(Ending::Flooding)
    }

    async fn push_catalog_if_changed(&mut self, ws: &mut Socket) {
        let fresh = capabilities(&self.state.bus.table(), &self.session.grants());
        if fresh == self.catalog {
            return;
        }
        self.catalog = fresh;
        let frame = catalog_frame(
            CatalogHeader {
                user: &self.user,
                session: self.session.id().as_str(),
                session_timeout: None,
                resume_token: None,
                resumed: false,
            },
            &self.catalog,
        );
        let _ = ws.send(Message::text(frame)).await;
    }
}

/// Writes `frame`, taken from `outbox`, to the client; `Some` when the
/// connection must end.
async fn send_frame(ws: &mut Socket, outbox: &Outbox, frame: Frame) -> Option<Ending> {
    stage_timing::mark(Stage::OutboxPop);
    if ws.send(Message::text(frame.to_string())).await.is_err() {
        return Some(Ending::ClientClosed);
    }
    outbox.confirm_sent();
    stage_timing::mark(Stage::Write);
    stage_timing::finish();
    None
}

/// Writes every frame waiting in `outbox` without waiting for more.
async fn send_ready(ws: &mut Socket, outbox: &Outbox) -> Option<Ending> {
    while let Some(frame) = outbox.try_pop() {
        if let Some(ending) = send_frame(ws, outbox, frame).await {
            return Some(ending);
        }
    }
    None
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Whether `frame` starts with element `name` (`<name>`, `<name/>`, `<name …`).
fn starts_element(frame: &[u8], name: &[u8]) -> bool {
    frame.first() == Some(&b'<')
        && frame[1..].starts_with(name)
        && frame
            .get(1 + name.len())
            .is_some_and(|b| matches!(b, b'/' | b'>') || b.is_ascii_whitespace())
}

/// Sends a close frame and waits briefly for the client's answer.
async fn close(ws: &mut Socket, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Counts something open while it lives.
struct Counted<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Counted<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
