//! A connection from another organism over a federation link, once its
//! hello was accepted: the welcome goes out, then each frame from the peer
//! is checked and put on the link's session, and each frame of that
//! session's outbox goes back signed. This owner's node-key revocations go
//! to the peer after the welcome and whenever one is applied; once the
//! peer's owner revokes the key that authenticated the connection (or
//! this owner revokes this node's), it closes (`node key revoked`). The
//! server's flood limits hold for the link as for a user's session, shared
//! by all the link's inbound connections: past the message rate, or too
//! many refused messages, the connection is closed (`flooding`); a refused
//! message alone keeps it.

use super::flood::FloodGuard;
use super::gate::Socket;
use super::State;
use crate::federation::{Inbound, Taken};
use futures::{SinkExt as _, StreamExt as _};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::Message;
use std::sync::Arc;
use std::time::Instant;

/// The close reason once the key on either end is revoked.
const REVOKED: &str = "node key revoked";

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
    let mut feed = inbound.revocation_feed();
    if let Some(frame) = feed.pending() {
        if ws.send(Message::text(frame)).await.is_err() {
            return (CloseCode::Normal, "gone");
        }
    }
    if inbound.own_key_revoked().is_some() {
        return (CloseCode::Policy, REVOKED);
    }
    let outbox = Arc::clone(inbound.session().outbox());
    let mut closed = inbound.closed();
    let mut shutdown = state.shutdown.clone();
    let flood = inbound.flood(|| FloodGuard::new(state.flood));
    let take = |now: Instant| flood.lock().unwrap_or_else(|e| e.into_inner()).take(now);
    let bad = |now: Instant| {
        flood
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bad_message(now)
    };
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        if !bad(Instant::now()) {
                            return (CloseCode::Policy, "flooding");
                        }
                        continue;
                    }
                    _ => return (CloseCode::Normal, "closed"),
                };
                if !take(Instant::now()) {
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
                    Taken::Revoked(_) => return (CloseCode::Policy, REVOKED),
                    Taken::Noted => {}
                    Taken::Denied(answer) => {
                        if ws.send(Message::text(answer)).await.is_err() {
                            return (CloseCode::Normal, "gone");
                        }
                        if !bad(Instant::now()) {
                            tracing::warn!(%peer, reason = "flooding", "federation link closed: too many refused messages");
                            return (CloseCode::Policy, "flooding");
                        }
                    }
                    Taken::Dropped(_) => {
                        if !bad(Instant::now()) {
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
            () = feed.changed() => {
                if let Some(frame) = feed.pending() {
                    if ws.send(Message::text(frame)).await.is_err() {
                        return (CloseCode::Normal, "gone");
                    }
                }
                if inbound.own_key_revoked().is_some() || inbound.revoked().is_some() {
                    return (CloseCode::Policy, REVOKED);
                }
            }
            _ = closed.changed() => return (CloseCode::Normal, "federation link ended"),
            _ = shutdown.changed() => return (CloseCode::Away, "server shutting down"),
        }
    }
}
