//! The routes of the one port: the WebSocket channel and the web console
//! on `/`, the JavaScript client library the console imports under
//! `/client/`, `/healthz`, `/metrics`; anything else is 404.

use super::pressure::PendingSlot;
use super::{connection, gate, metrics, proxy, State};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The web console, served from the binary.
const CONSOLE_HTML: &str = include_str!("console.html");

/// The JavaScript client library (`clients/js`), served from the binary as
/// the ES modules the console imports (`/client/index.js` and the modules
/// it imports in turn).
const CLIENT_MODULES: &[(&str, &str)] = &[
    (
        "/client/index.js",
        include_str!("../../../clients/js/index.js"),
    ),
    (
        "/client/client.js",
        include_str!("../../../clients/js/client.js"),
    ),
    (
        "/client/errors.js",
        include_str!("../../../clients/js/errors.js"),
    ),
    (
        "/client/frames.js",
        include_str!("../../../clients/js/frames.js"),
    ),
    (
        "/client/limits.js",
        include_str!("../../../clients/js/limits.js"),
    ),
    (
        "/client/totp.js",
        include_str!("../../../clients/js/totp.js"),
    ),
    ("/client/xml.js", include_str!("../../../clients/js/xml.js")),
];

/// The client module served at `path`, if any.
fn client_module(path: &str) -> Option<&'static str> {
    CLIENT_MODULES
        .iter()
        .find(|(served_at, _)| *served_at == path)
        .map(|(_, source)| *source)
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Answers one HTTP request from `peer` (the client a trusted proxy's
/// PROXY header named, or the TCP peer). `connection_slot` is the
/// connection's place among its address's connections that have not logged
/// in, if it counts there: an upgrade takes it over.
pub(crate) async fn handle(
    state: Arc<State>,
    mut request: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    connection_slot: Arc<Mutex<Option<PendingSlot>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    if path == "/" && hyper_tungstenite::is_upgrade_request(&request) {
        let client = proxy::forwarded_client(request.headers(), peer, &state.proxies);
        let held = connection_slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let slot = match held {
            Some(slot) if slot.address() == client.ip() => Ok(slot),
            _ => state.limits.try_pending(client.ip()),
        };
        let Ok(unauthenticated) = slot else {
            return Ok(respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "too many connections from this address that have not logged in\n",
            ));
        };
        // tungstenite refuses frames past this hard cap before buffering
        // them (close 1009); frames between `max_message_bytes` and the cap
        // get a polite bad-frame error from the connection, unless they are
        // privileged commands (which may carry a component inline). Before
        // login the gate allows far less (see `gate`).
        let cap = state
            .max_message_bytes
            .saturating_mul(4)
            .max(state.max_command_bytes);
        // Small I/O buffers: an idle connection should cost kilobytes, not
        // the 128 KiB read buffer tungstenite starts with, and tungstenite
        // zeroes the buffer's free room before every read; frames larger
        // than the buffer are still read, in several steps.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 << 10)
            .write_buffer_size(0)
            .max_message_size(Some(cap))
            .max_frame_size(Some(cap));
        return Ok(match gate::accept(&mut request) {
            Ok((switching, upgrade)) => {
                tokio::spawn(async move {
                    if let Ok((socket, key)) = gate::open(upgrade, config).await {
                        connection::serve(state, socket, key, client, unauthenticated).await;
                    }
                });
                switching
            }
            Err(error) => respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("bad WebSocket upgrade: {error}\n"),
            ),
        });
    }
    if request.method() == Method::GET {
        if let Some(module) = client_module(path) {
            return Ok(respond(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                module,
            ));
        }
    }
    Ok(match (request.method(), path) {
        (&Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", CONSOLE_HTML),
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok"),
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics::render(&state),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    })
}
