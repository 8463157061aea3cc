//! A connection from another organism over a federation link, once its
//! hello was accepted: the welcome goes out, then each frame from the peer
//! is checked and put on the link's session, and each frame of that
//! session's outbox goes back signed. The server's flood limits hold as
//! for a user: past the message rate, or too many refused messages, the
//! connection is closed (`flooding`); a refused message alone keeps it.

use super::flood::FloodGuard;
use super::gate::Socket;
use super::State;
use crate::federation::{Inbound, Taken};
use futures::{SinkExt as _, StreamExt as _};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::Message;
use std::sync::Arc;
use std::time::Instant;

/// Serves the link until either side ends it; returns the close reason.
pub(super) async fn serve(
    state: &State,
    ws: &mut Socket,
    inbound: &Inbound,
) -> (CloseCode, &'static str) {
    if ws
        .send(Message::text(inbound.welcome().to_owned()))
        .await
        .is_err()
    {
        return (CloseCode::Normal, "gone");
    }
    let peer = inbound.peer().to_owned();
    let outbox = Arc::clone(inbound.session().outbox());
    let mut closed = inbound.closed();
    let mut shutdown = state.shutdown.clone();
    let mut flood = FloodGuard::new(state.flood);
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        if !flood.bad_message(Instant::now()) {
                            return (CloseCode::Policy, "flooding");
                        }
                        continue;
                    }
                    _ => return (CloseCode::Normal, "closed"),
                };
                if !flood.take(Instant::now()) {
                    tracing::warn!(%peer, reason = "flooding", "federation link closed: messages past the flood limit");
                    return (CloseCode::Policy, "flooding");
                }
                match inbound.take(text.as_bytes()) {
                    Taken::Accepted(worker) => {
                        if let Some(worker) = worker {
                            worker.spawn();
                        }
                    }
                    Taken::Answer(answer) => {
                        if ws.send(Message::text(answer)).await.is_err() {
                            return (CloseCode::Normal, "gone");
                        }
                    }
                    Taken::Close(_) => return (CloseCode::Policy, "certificate expired"),
                    Taken::Dropped(_) => {
                        if !flood.bad_message(Instant::now()) {
                            tracing::warn!(%peer, reason = "flooding", "federation link closed: too many refused messages");
                            return (CloseCode::Policy, "flooding");
                        }
                    }
                }
            }
            frame = outbox.pop() => {
                let Some(frame) = frame else { return (CloseCode::Normal, "link session ended") };
                if let Some(answer) = inbound.answer(&frame) {
                    if ws.send(Message::text(answer)).await.is_err() {
                        return (CloseCode::Normal, "gone");
                    }
                }
            }
            _ = closed.changed() => return (CloseCode::Normal, "federation link ended"),
            _ = shutdown.changed() => return (CloseCode::Away, "server shutting down"),
        }
    }
}
