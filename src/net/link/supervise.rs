//! The link's driver: it takes each connection in turn (dialed with backoff, or attached by the
//! server), resumes the session on it, and records why the link ended.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::source::{next_attached, next_dialed};
use super::*;

/// Runs the link: takes each connection in turn (dialed, or attached by the server) until the
/// link ends, then records why.
pub(super) async fn supervise(shared: &Arc<Shared>) {
    let end = |e: Error| shared.set_state(State::Ended(Arc::new(e)));
    let closed = || Error::Closed(CloseInfo::clean(CloseCode::NORMAL, "closed"));
    let mut incoming = match &shared.source {
        Source::Accept { incoming, .. } => lock(incoming).take(),
        Source::Dial { .. } => None,
    };
    let mut failures = 0u32;
    loop {
        let next = async {
            match &mut incoming {
                Some(rx) => next_attached(shared, rx).await,
                None => next_dialed(shared, &mut failures).await,
            }
        };
        let attached = tokio::select! {
            _ = shared.cancel.cancelled() => return end(closed()),
            r = next => r,
        };
        let conn = match attached.and_then(|a| take_over(shared, a)) {
            Ok(conn) => conn,
            Err(e) => return end(e),
        };
        let outcome = carry(shared, &conn).await;
        if is_last(shared, &outcome) {
            return end(Error::Closed(outcome));
        }
        shared.reconnects.fetch_add(1, Relaxed);
        log::info!(
            target: super::LOG,
            "connection to {} ended ({outcome}); waiting for the next",
            conn.peer_addr()
        );
        shared.set_state(State::Connecting);
        // A password change asks for an immediate new handshake; other drops back off.
        if outcome.code != CloseCode::REAUTHENTICATE {
            failures += 1;
        }
    }
}

/// Make `attached` the link's connection: the session (if any) resumes on it, its ACKs go to
/// the sender, `recv` reads it once the earlier ones are drained, `send` uses it.
fn take_over(shared: &Shared, attached: Attached) -> Result<Connection> {
    let Attached {
        conn,
        peer_next_expected,
        announced,
        peer_window,
    } = attached;
    if let Some(session) = &shared.session {
        session.take_over(&conn, peer_next_expected, peer_window)?;
    }
    // `recv` reaches it once every earlier connection is drained.
    lock(&shared.reading)
        .conns
        .push_back((conn.clone(), Numbering::starting_at(announced)));
    *lock(&shared.latest) = Some(conn.clone());
    shared.set_state(State::Connected(conn.clone()));
    if shared.session.is_some() {
        // A message delivered while this connection was being set up was acknowledged on
        // the previous one (maybe lost with it) and is not in what we announced: say it.
        let delivered = lock(&shared.reading).delivered.next_expected();
        if delivered > announced {
            conn.ack(delivered);
        }
    }
    Ok(conn)
}

/// Until `conn` ends (closed when the link is, with the code it was asked to); how it ended.
async fn carry(shared: &Shared, conn: &Connection) -> CloseInfo {
    let mut close_request = shared.close_request.subscribe();
    tokio::select! {
        _ = conn.wait_finished() => {}
        // `close` may have looked before this connection was published: close it here too
        // (idempotent), or it would outlive the link.
        _ = shared.cancel.cancelled() => {
            conn.close(CloseCode::NORMAL, "closed").await;
        }
        Some((code, reason)) = async {
            close_request.wait_for(|r| r.is_some()).await.ok().and_then(|r| r.clone())
        } => {
            conn.close(code, &reason).await;
        }
    }
    conn.wait_finished().await;
    conn.outcome()
        .expect("finished connections have an outcome")
}

/// True when a connection that ended so ends the link too.
fn is_last(shared: &Shared, outcome: &CloseInfo) -> bool {
    let dial_once = matches!(&shared.source, Source::Dial { policy: None, .. });
    let session_closed = shared.session.is_some()
        && Session::ended_by(outcome, shared.close_request.borrow().is_some());
    // A revoked identity would only be refused again.
    let revoked = outcome.code == CloseCode::REVOKED;
    shared.closing.load(Relaxed) || dial_once || session_closed || revoked
}
