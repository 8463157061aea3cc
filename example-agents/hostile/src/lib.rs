//! `hostile`: an agent that misbehaves on request, for testing the host's limits.
//!
//! Each tag picks one way to misbehave; the host must end each with its typed
//! error and carry on serving everyone else.
//!
//! | tag       | behaviour                                           |
//! |-----------|-----------------------------------------------------|
//! | `loop`    | spins forever without calling the host (fuel)       |
//! | `spin`    | spins for an hour, reading the clock (wall time)    |
//! | `sleep`   | sleeps for an hour in a host call (wall time)       |
//! | `grow`    | allocates memory without bound (memory limit)       |
//! | `recurse` | recurses without bound (stack limit)                |
//! | `trap`    | executes `unreachable`                              |
//! | `flood`   | returns 10,000 payloads                             |
//! | `shout`   | writes 8 MiB to stdout                              |
//! | `hold`    | sleeps `ms` milliseconds, then answers `<held/>`    |
//! | `log`     | logs through the host and stdout, answers `<logged/>` |
//! | `refuse`  | returns `failure::refused`                          |
//! | `ping`    | answers `<pong/>` (with `pong`: ping-pong forever)  |
//! | `pong`    | answers `<ping/>`                                   |
//! | `spray`   | answers 200 `<spray/>` (feeds itself, exponentially) |
//! | `forge`   | emits its text as a payload of its own (forgery attempts) |
//! | `quit`    | emits `<end-session/>`: ends the caller's session       |
//! | anything else | answers `<ok/>`                                 |

use agentserver_guest::{export_agent, log, xml, Agent, Envelope, Failure};
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

struct Hostile;

impl Agent for Hostile {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        match msg.tag.as_str() {
            "loop" => endless_loop(),
            "spin" => {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(3600) {
                    black_box(());
                }
                Ok(vec![])
            }
            "sleep" => {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(vec![])
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Ok(vec![format!("<depth>{}</depth>", recurse(0))]),
            "trap" => trap(),
            "flood" => Ok((0..10_000).map(|i| format!("<spam n=\"{i}\"/>")).collect()),
            "shout" => {
                let line = [b'!'; 1023];
                let mut stdout = std::io::stdout();
                for _ in 0..8 * 1024 {
                    stdout
                        .write_all(&line)
                        .and_then(|()| stdout.write_all(b"\n"))
                        .map_err(|e| Failure::Internal(e.to_string()))?;
                }
                Ok(vec![])
            }
            "hold" => {
                let payload = xml::Element::parse(&msg.payload)?;
                let ms = payload
                    .attribute("ms")
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(50);
                std::thread::sleep(Duration::from_millis(ms));
                Ok(vec!["<held/>".into()])
            }
            "log" => {
                log::info(&format!("hello from thread {}", msg.thread));
                println!("a line on stdout");
                Ok(vec!["<logged/>".into()])
            }
            "refuse" => Err(Failure::Refused("this agent declines".into())),
            "ping" => Ok(vec!["<pong/>".into()]),
            "pong" => Ok(vec!["<ping/>".into()]),
            "spray" => Ok(vec!["<spray/>".into(); 200]),
            "chatter" => {
                // Emits during the call, far past the per-call limit.
                for i in 0..10_000 {
                    agentserver_guest::emit(&format!("<chat n=\"{i}\"/>"));
                }
                Ok(vec!["<chatted/>".into()])
            }
            "forge" => Ok(vec![xml::Element::parse(&msg.payload)?.text()]),
            "quit" => Ok(vec!["<end-session/>".into()]),
            _ => Ok(vec!["<ok/>".into()]),
        }
    }
}

fn endless_loop() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // Not a tail call: the addition after the call keeps every frame alive.
    black_box(recurse(black_box(depth + 1))) + 1
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    panic!("trap");
}

export_agent!(Hostile);
