//! The link's driver: it takes each connection in turn (dialed with backoff, or attached by the
//! server), resumes the session on it, and records why the link ended.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
        let attached = session
            .sender
            .limit_window(peer_window)
            .and_then(|()| session.sender.attach(conn.clone(), peer_next_expected));
        if let Err(e) = attached {
            conn.fail(&e);
            return Err(e);
        }
        session.established.store(true, Relaxed);
        // Only now: an ACK applied before `attach` could move the sender past where this
        // connection starts (the connection held the ACKs that came early).
        let sender = Arc::downgrade(&session.sender);
        let acks = conn.attach_acks(Box::new(move |n| match sender.upgrade() {
            Some(s) => s.acknowledged(n),
            None => Ok(()),
        }));
        if let Err(e) = acks {
            conn.abort(&e.to_string()); // the next connection resumes
        }
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
    // A session ends when either side closes it; a password change only asks for a new
    // handshake.
    let session_closed = shared.session.is_some()
        && outcome.clean
        && (outcome.code != CloseCode::REAUTHENTICATE || shared.close_request.borrow().is_some());
    shared.closing.load(Relaxed) || dial_once || session_closed
}

/// The server's end of a session: the next connection that resumes it, within `linger`.
async fn next_attached(
    shared: &Shared,
    incoming: &mut mpsc::UnboundedReceiver<Attached>,
) -> Result<Attached> {
    let Source::Accept { linger, .. } = &shared.source else {
        unreachable!("attached connections come from the server")
    };
    match tokio::time::timeout(*linger, incoming.recv()).await {
        Ok(Some(attached)) => Ok(attached),
        Ok(None) => Err(Error::Closed(CloseInfo::abnormal("the session ended"))),
        Err(_) => Err(Error::Closed(CloseInfo::error(
            CloseCode::SESSION_LOST,
            format!(
                "the client did not resume the session within {} s",
                linger.as_secs_f64()
            ),
        ))),
    }
}

/// The client: dial until connected (backing off after `failures` failures in a row), or until
/// the policy gives up. A wrong password is never retried: it would only hammer the server.
async fn next_dialed(shared: &Shared, failures: &mut u32) -> Result<Attached> {
    let Source::Dial {
        host,
        port,
        credentials,
        config,
        policy,
        epoch_hint,
    } = &shared.source
    else {
        unreachable!("only clients dial")
    };
    loop {
        if *failures > 0 {
            let delay = policy
                .as_ref()
                .map(|p| p.delay(*failures))
                .unwrap_or_default();
            tokio::time::sleep(delay).await;
        }
        let creds = read_lock(credentials).clone();
        let request = shared.session.as_ref().map(|s| SessionRequest {
            window: window(config.link.recv_buffer),
            session_id: s.sender.session_id(),
            resume: s.established.load(Relaxed),
            next_expected: lock(&shared.reading).delivered.next_expected(),
        });
        let hint = epoch_hint.load(Relaxed);
        let e = match dial(host, *port, &creds, config, hint, request).await {
            Ok((conn, reply)) => {
                *failures = 0;
                epoch_hint.store(conn.key_epoch(), Relaxed);
                return resumed(conn, request, reply);
            }
            Err(f) if f.is_final() => {
                log::warn!(target: super::LOG, "connecting to {host}:{port} failed: {}", f.error);
                return Err(f.error);
            }
            Err(f) => f.error,
        };
        let Some(policy) = policy else {
            return Err(e);
        };
        *failures += 1;
        if policy.max_attempts.is_some_and(|max| *failures >= max) {
            log::warn!(target: super::LOG, "giving up on {host}:{port} after {failures} attempts: {e}");
            return Err(e);
        }
        log::info!(target: super::LOG, "dial {host}:{port} failed ({e}); retrying");
    }
}

/// Check the server's answer to a session request.
fn resumed(
    conn: Connection,
    request: Option<SessionRequest>,
    reply: Option<ResumeReply>,
) -> Result<Attached> {
    let (Some(request), Some(reply)) = (request, reply) else {
        return Ok(Attached {
            conn,
            peer_next_expected: 0,
            announced: 0,
            peer_window: u32::MAX,
        });
    };
    // `dial` checked that the answer fits the request; an unknown session is the one answer
    // that is valid and still ends the link.
    if reply.status == ResumeStatus::Unknown {
        let e = Error::Closed(CloseInfo::error(
            CloseCode::SESSION_LOST,
            "the server no longer has this session (it expired, or the server restarted): \
             messages it had not delivered may be lost",
        ));
        conn.abort(&e.to_string());
        return Err(e);
    }
    Ok(Attached {
        conn,
        peer_next_expected: reply.next_expected,
        announced: request.next_expected,
        peer_window: reply.window,
    })
}

/// The window a side announces: the bytes of messages its connections queue for the
/// application (`recv_buffer`), which is how much the peer may leave unacknowledged.
pub(crate) fn window(recv_buffer: usize) -> u32 {
    recv_buffer.min(u32::MAX as usize) as u32
}
