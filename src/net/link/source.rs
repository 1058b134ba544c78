//! Where a link's connections come from: the client dials (with backoff, under a policy), the
//! server's end of a session has them attached by the server when its client resumes. The rest
//! of the link asks only whether another connection may come.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use super::{Link, ReconnectPolicy, Shared};
use crate::core::frame::{ResumeReply, ResumeStatus, SessionRequest, SESSION_ID_LEN};
use crate::error::{CloseCode, CloseInfo, Error, Result};
use crate::net::client::{dial, ClientConfig, Credentials};
use crate::net::connection::Connection;
use crate::net::session::{Session, SessionConfig};
use crate::net::{lock, read_lock, write_lock};

/// Where the next connection comes from.
pub(super) enum Source {
    Dial {
        host: String,
        port: u16,
        credentials: RwLock<Arc<Credentials>>,
        config: Box<ClientConfig>,
        policy: Option<ReconnectPolicy>,
        epoch_hint: AtomicU32,
    },
    /// The server's end of a session: the server attaches each connection that resumes it.
    Accept {
        incoming: Mutex<Option<mpsc::UnboundedReceiver<Attached>>>,
        attach: mpsc::UnboundedSender<Attached>,
        /// How long the session waits for its client to come back.
        linger: Duration,
    },
}

/// A connection handed to a session, with the first sequence number the peer expects on it.
pub struct Attached {
    pub conn: Connection,
    pub peer_next_expected: u64,
    /// The first sequence number we told the peer we expect on it.
    pub announced: u64,
    /// What the peer holds for its application (the most we may leave unacknowledged).
    pub peer_window: u32,
}

impl Link {
    /// Start dialing; resolves once the first connection is up (or the link failed for good).
    /// With `session`, the link asks the server for an acknowledged session. Without a
    /// `policy` it dials once and never redials, session or not: the caller picks the policy.
    pub async fn open(
        host: &str,
        port: u16,
        credentials: Arc<Credentials>,
        config: ClientConfig,
        policy: Option<ReconnectPolicy>,
        session: Option<SessionConfig>,
    ) -> Result<Link> {
        config.link.validate()?;
        if let Some(p) = &policy {
            p.validate()?;
        }
        let session = session.map(|s| {
            let mut id = [0u8; SESSION_ID_LEN];
            rand::rng().fill(&mut id);
            Session::new(id, &s)
        });
        let close_timeout = config.link.close_timeout;
        let source = Source::Dial {
            host: host.to_owned(),
            port,
            credentials: RwLock::new(credentials),
            config: Box::new(config),
            policy,
            epoch_hint: AtomicU32::new(0),
        };
        let link = Link::start(source, session, close_timeout, None);
        match link.connected().await {
            Ok(_) => Ok(link),
            // The handshake succeeded but the connection already ended (the peer hung up at
            // once): opening worked; its end is reported by the next send or recv.
            Err(_) if link.latest().is_some() => Ok(link),
            Err(e) => Err(e),
        }
    }

    /// The server's end of a new session, on its first connection. `on_end` runs when the
    /// session is over (closed, or its client did not come back within `linger`).
    pub(crate) fn accepted(
        first: Attached,
        session_id: [u8; SESSION_ID_LEN],
        session: &SessionConfig,
        linger: Duration,
        close_timeout: Duration,
        on_end: Box<dyn FnOnce() + Send>,
    ) -> Link {
        let (attach, incoming) = mpsc::unbounded_channel();
        let peer_window = first.peer_window;
        let first_conn = first.conn.clone();
        let _ = attach.send(first);
        let source = Source::Accept {
            incoming: Mutex::new(Some(incoming)),
            attach,
            linger,
        };
        let session = Session::new(session_id, session);
        // Before the application can send anything (it gets the link at once).
        let _ = session.limit_window(peer_window);
        let link = Link::start(source, Some(session), close_timeout, Some(on_end));
        // Known now, before the supervisor takes it over: the application may ask for it
        // (its address, its identity) as soon as it has the link.
        *lock(&link.shared.latest) = Some(first_conn);
        link
    }

    /// Server side: a connection that resumes this session. Returns false if the session has
    /// ended (the caller refuses the connection).
    pub(crate) fn attach(&self, attached: Attached) -> bool {
        match &self.shared.source {
            Source::Accept { attach, .. } => !self.is_ended() && attach.send(attached).is_ok(),
            Source::Dial { .. } => false,
        }
    }

    /// Use this password for every later handshake (the current connection is unaffected).
    pub fn set_credentials(&self, credentials: Arc<Credentials>) {
        if let Source::Dial { credentials: c, .. } = &self.shared.source {
            *write_lock(c) = credentials;
        }
    }

    /// The client's credentials (None for the server's end of a session).
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        match &self.shared.source {
            Source::Dial { credentials, .. } => Some(read_lock(credentials).clone()),
            Source::Accept { .. } => None,
        }
    }
}

/// The server's end of a session: the next connection that resumes it, within `linger`.
pub(super) async fn next_attached(
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
pub(super) async fn next_dialed(shared: &Shared, failures: &mut u32) -> Result<Attached> {
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
        let request = shared.session.as_ref().map(|s| {
            s.request(
                window(config.link.recv_buffer),
                &lock(&shared.reading).delivered,
            )
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
