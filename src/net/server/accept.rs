//! The accept loop: each TCP connection gets a handshake task under the deadline and the cap on
//! pending handshakes; a confirmed connection is admitted (to `accept`, to a new session, or to
//! the session it resumes).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::handshake::{server_handshake, Confirmed};
use super::*;
use crate::net::throttle::Admit;

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!(target: super::LOG, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let source = Source::of(peer.ip());
        let start = match throttle_admit(&shared, source) {
            Admit::Now => None,
            Admit::At(at) => Some(at),
            Admit::Refuse => {
                shared.stats.throttle_refusals.fetch_add(1, Relaxed);
                log::debug!(target: super::LOG, "refused {peer}: too many failed handshakes");
                // Reset at once, before any byte: a client takes it for a network fault and
                // tries again later, as it should.
                let _ = stream.set_zero_linger();
                continue;
            }
        };
        let id = shared.next_id.fetch_add(1, Relaxed);
        let token = shared.cancel.child_token();
        let evicted = shared.lock_pending().insert(id, source, token.clone());
        for victim in evicted {
            victim.cancel();
            shared.stats.handshakes_evicted.fetch_add(1, Relaxed);
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let deadline = shared.config.handshake_timeout;
            let mut named = None;
            let handshake = async {
                if let Some(at) = start {
                    // Slowed: the wait comes before any byte of the handshake, the same for a
                    // wrong password as for random bytes (PROTOCOL.md §6).
                    shared.stats.throttled.fetch_add(1, Relaxed);
                    tokio::time::sleep_until(at.into()).await;
                }
                tokio::time::timeout(deadline, server_handshake(&shared, stream, id, &mut named))
                    .await
                    .unwrap_or(Err(Error::Timeout("handshake")))
            };
            let result = tokio::select! {
                _ = token.cancelled() => Err(Error::Closed(CloseInfo::abnormal("handshake dropped (server closing or too many pending)"))),
                r = handshake => r,
            };
            shared.lock_pending().remove(id);
            throttle_record(&shared, source, peer, &result);
            // The identity is printable ASCII; shown quoted, so an empty one shows too.
            let who = named
                .map(|id| format!(" (identity {:?})", id.as_str()))
                .unwrap_or_default();
            match result {
                Ok(confirmed) => admit(&shared, id, confirmed),
                Err(Error::Closed(info)) if info.code == CloseCode::BUSY => {
                    shared.stats.rejected_busy.fetch_add(1, Relaxed);
                    log::info!(target: super::LOG, "refused {peer}{who}: {}", info.reason);
                }
                Err(e) => {
                    shared.stats.handshakes_failed.fetch_add(1, Relaxed);
                    if matches!(e, Error::Authentication(_)) {
                        shared.stats.auth_failures.fetch_add(1, Relaxed);
                    }
                    log::info!(target: super::LOG, "handshake from {peer} failed{who}: {e}");
                }
            }
        });
    }
}

/// When a new connection from `source` may start its handshake.
fn throttle_admit(shared: &Shared, source: Source) -> Admit {
    let horizon = shared.config.handshake_timeout;
    match &shared.throttle {
        Some(throttle) => lock(throttle).admit(source, Instant::now(), horizon),
        None => Admit::Now,
    }
}

/// Count a handshake's outcome against its source: a failed authentication slows the source
/// down past its allowance (logged when it starts), a success vouches for it.
fn throttle_record<T>(shared: &Shared, source: Source, peer: SocketAddr, result: &Result<T>) {
    let Some(throttle) = &shared.throttle else {
        return;
    };
    let now = Instant::now();
    let mut throttle = lock(throttle);
    match result {
        Ok(_) => throttle.succeeded(source, now),
        Err(Error::Authentication(_)) => {
            let failures = throttle.failed(source, now);
            let delay = throttle.delay_after(failures);
            let first = throttle.delay_after(failures - 1).is_none();
            drop(throttle);
            if let (Some(delay), true) = (delay, first) {
                log::warn!(
                    target: super::LOG,
                    "{failures} failed handshakes from {}: slowing it to one handshake per \
                     {delay:?}, doubling with each further failure",
                    peer.ip()
                );
            }
        }
        Err(_) => {}
    }
}

/// Register a confirmed connection and queue it (or its new session) for `accept()`, or hand
/// it to the session it resumes.
fn admit(shared: &Arc<Shared>, id: u64, confirmed: Confirmed) {
    let Confirmed {
        conn,
        generation,
        route,
    } = confirmed;
    shared.stats.handshakes_ok.fetch_add(1, Relaxed);
    if !register(shared, id, &conn, generation) {
        return; // its key went while its handshake ran: closed, handed to no one
    }
    if shared.cancel.is_cancelled() {
        // The server closed while this handshake finished: close like the others.
        close_later(conn, CloseCode::GOING_AWAY, "server shutting down");
        return;
    }
    let accepted = match route {
        Route::Plain => Accepted::Connection(conn),
        Route::NewSession(request) => Accepted::Session(new_session(shared, conn, request)),
        Route::Resume {
            link,
            announced,
            peer_next_expected,
            peer_window,
        } => {
            // The client gave up on its previous connection; so do we.
            if let Some(old) = link.current() {
                old.abort("the client resumed the session on a new connection");
            }
            let attached = Attached {
                conn: conn.clone(),
                peer_next_expected,
                announced,
                peer_window,
            };
            if !link.attach(attached) {
                close_later(conn, CloseCode::SESSION_LOST, "the session ended");
            }
            return;
        }
        Route::Refuse => {
            close_later(conn, CloseCode::SESSION_LOST, "no such session");
            return;
        }
    };
    if let Err((accepted, _)) = shared.accepted.try_push(accepted, 1) {
        shared.stats.rejected_busy.fetch_add(1, Relaxed);
        let conn = accepted.connection();
        if let Accepted::Session(link) = accepted {
            link.end_now();
        }
        close_later(conn, CloseCode::BUSY, "server busy");
    }
}

/// Count the connection as live, and close it at once if the key it authenticated under was
/// retired (or its identity revoked) while its handshake ran: then false, and it goes nowhere.
fn register(shared: &Shared, id: u64, conn: &Connection, generation: u64) -> bool {
    let mut live = lock(&shared.live);
    live.insert(
        id,
        Live {
            conn: conn.clone(),
            generation,
        },
    );
    // A connection that already ended ran its removal before this insert: undo it.
    if conn.is_finished() {
        live.remove(&id);
    }
    // A key change may have come while this handshake ran on the old key: `enforce` only saw
    // the connections already here. Keys are read under the live lock, which `enforce` also
    // takes after changing them, so one of the two always catches the connection.
    let refused = shared
        .lock_keys()
        .still_accepts(conn.peer_identity(), generation);
    if let Some(code) = refused {
        close_later(conn.clone(), code, super::close_reason(code));
    }
    refused.is_none()
}

/// The server's end of a new exactly-once session, registered under its id until it ends.
fn new_session(shared: &Arc<Shared>, conn: Connection, request: SessionRequest) -> Link {
    let weak = Arc::downgrade(shared);
    let session_id = request.session_id;
    let owner = conn.peer_identity().clone();
    let link = Link::accepted(
        Attached {
            conn,
            peer_next_expected: request.next_expected,
            announced: 0,
            peer_window: request.window,
        },
        session_id,
        &shared.config.session,
        shared.config.session_linger,
        shared.config.link.close_timeout,
        Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.lock_sessions().remove(&session_id);
            }
        }),
    );
    shared
        .lock_sessions()
        .insert(session_id, (link.clone(), owner));
    link
}

/// Close `conn` with a closing handshake, without waiting for it.
fn close_later(conn: Connection, code: CloseCode, reason: &'static str) {
    tokio::spawn(async move { conn.close(code, reason).await });
}
