//! Listening: accept TCP, run the server side of the handshake under a deadline and a cap on
//! pending handshakes, and hand only confirmed connections to the application.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::connection::{Connection, Start};
use super::link::{Attached, Link};
use super::mailbox::Mailbox;
use super::pending::{PendingTable, Source};
use super::session::SessionConfig;
use super::wire::Wire;
use super::LinkConfig;
use crate::core::frame::{ResumeReply, ResumeStatus, SessionRequest, SESSION_ID_LEN};
use crate::core::handshake::server::{busy, ServerHandshake, ServerSetup, ServerStep};
use crate::core::handshake::{Admission, NodeId, ServerParams, PARAMS_LEN};
use crate::core::kdf::{KdfParams, ServerKey};
use crate::error::{CloseCode, CloseInfo, Error, PeerMisbehaved, Result};
use crate::net::{lock, read_lock, write_lock};

mod accept;
mod handshake;

/// The logger the server's records go to, whichever file they come from (a stable name for
/// applications to filter on: `argonlink.net.server` in Python).
const LOG: &str = "argonlink::net::server";

use accept::accept_loop;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub link: LinkConfig,
    /// Deadline from TCP accept to the client's CONFIRM.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; at the cap one is dropped (see `net::pending`).
    pub max_pending_handshakes: usize,
    /// Handshakes in progress from one source (IPv4 address or IPv6 /64) at once; None: half
    /// of `max_pending_handshakes` (many clients on one host, or behind one NAT, still fit,
    /// and no one source can take the whole table).
    pub max_pending_per_source: Option<usize>,
    /// Authenticated connections waiting for `accept()`; beyond it, new ones are closed (BUSY).
    pub accept_backlog: usize,
    /// Live connections at most; a client beyond it is told so in message 2 (BUSY).
    pub max_connections: Option<usize>,
    /// Acknowledged sessions (asked for by clients): the server's end of each.
    pub session: SessionConfig,
    /// How long a session whose connection dropped waits for its client to resume it.
    pub session_linger: Duration,
    /// Acknowledged sessions alive at once (connected or lingering): each may hold up to
    /// `recv_buffer` + `max_unacked` bytes after its connection dropped, so their number is
    /// bounded too. A new session beyond it is refused as busy (1013).
    pub max_sessions: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            link: LinkConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 256,
            max_pending_per_source: None,
            accept_backlog: 128,
            max_connections: None,
            session: SessionConfig::default(),
            session_linger: Duration::from_secs(60),
            max_sessions: 1024,
        }
    }
}

impl ServerConfig {
    /// Every check a server's settings get (the binding runs the same one).
    pub fn validate(&self) -> Result<()> {
        self.link.validate()?;
        self.session.validate()?;
        if self.max_pending_handshakes == 0
            || self.max_pending_per_source == Some(0)
            || self.max_sessions == 0
            || self.accept_backlog == 0
            || self.max_connections == Some(0)
        {
            return Err(Error::config(
                "max_pending_handshakes, max_pending_per_source, max_sessions, accept_backlog and \
                 max_connections must be positive",
            ));
        }
        Ok(())
    }
}

/// How the server learns its key.
pub enum ServerKeySource {
    /// A plaintext password: derived once, with a fresh random salt, when the server starts.
    Password(Zeroizing<Vec<u8>>, KdfParams),
    /// A key given ready-made (from a PHC string): no derivation at all.
    Key(ServerKey),
}

impl ServerKeySource {
    /// From a PHC string of `hash_password`, parsed at once: the string is password-equivalent,
    /// so it is wiped here rather than kept until the server starts (the key holds only the
    /// PSK, salt and costs).
    pub fn from_phc(phc: Zeroizing<String>) -> Result<Self> {
        Ok(ServerKeySource::Key(ServerKey::from_phc(&phc)?))
    }

    /// Turn into a key; may run Argon2, so call on a blocking thread.
    pub fn into_key(self) -> Result<(ServerKey, bool)> {
        match self {
            ServerKeySource::Password(pw, params) => {
                Ok((ServerKey::from_password(&pw, params)?, true))
            }
            ServerKeySource::Key(key) => Ok((key, false)),
        }
    }
}

/// A key and the epoch it was installed in (1 at start, +1 per password change).
struct KeyEpoch {
    key: ServerKey,
    epoch: u32,
}

/// The keys the server accepts: the current one and, during a password change's grace window,
/// the previous one.
struct Keys {
    current: Arc<KeyEpoch>,
    grace: Option<Arc<KeyEpoch>>,
}

impl Keys {
    /// The key to offer a client that last authenticated under `hint`, with its parameters.
    fn offer(&self, hint: u32, node: NodeId) -> (Arc<KeyEpoch>, [u8; PARAMS_LEN]) {
        let (chosen, other) = match &self.grace {
            Some(old) if old.epoch == hint => (old, self.current.epoch),
            Some(old) => (&self.current, old.epoch),
            None => (&self.current, 0),
        };
        let k = &chosen.key;
        let params = ServerParams::new(k.salt, k.params, chosen.epoch, node, other).encode();
        (chosen.clone(), params)
    }
}

#[derive(Default, Debug)]
pub struct ServerStats {
    pub handshakes_ok: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub handshakes_evicted: AtomicU64,
    pub key_derivations: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub password_changes: AtomicU64,
}

/// A live connection and the key epoch it authenticated under.
struct Live {
    conn: Connection,
    epoch: u32,
}

/// What `accept` hands out: a connection, or the server's end of a new acknowledged session
/// (which lives on across the connections its client resumes it with).
#[derive(Clone)]
pub enum Accepted {
    Connection(Connection),
    Session(Link),
}

impl Accepted {
    /// The connection it came in on.
    pub fn connection(&self) -> Connection {
        match self {
            Accepted::Connection(c) => c.clone(),
            Accepted::Session(link) => link.latest().expect("sessions start with a connection"),
        }
    }
}

/// Where a confirmed connection goes.
enum Route {
    /// To `accept` as it is.
    Plain,
    /// To `accept` as the first connection of a new session.
    NewSession(SessionRequest),
    /// To the session it resumes (already told so in RESUME), with the sequence numbers the
    /// server announced and the client asked for.
    Resume {
        link: Link,
        announced: u64,
        peer_next_expected: u64,
        peer_window: u32,
    },
    /// Nowhere: the session it asks for is gone (it was told so in RESUME).
    Refuse,
}

struct Shared {
    config: ServerConfig,
    keys: RwLock<Keys>,
    accepted: Mailbox<Accepted, CloseInfo>,
    /// The server's ends of acknowledged sessions, by session id, until each ends.
    sessions: Mutex<HashMap<[u8; SESSION_ID_LEN], Link>>,
    live: Mutex<HashMap<u64, Live>>,
    /// Connection slots taken (live or being admitted), for `max_connections`.
    slots: AtomicUsize,
    pending: Mutex<PendingTable<CancellationToken>>,
    next_id: AtomicU64,
    cancel: CancellationToken,
    /// The accept loop, which owns the listening socket: `close` waits for it to end, so the
    /// port is free when `close` returns.
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stats: ServerStats,
}

/// A listening server. Dropping it does not stop it; call [`Server::close`].
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl Server {
    /// Bind, derive the key (off the async threads), and start accepting.
    pub async fn bind(
        host: &str,
        port: u16,
        source: ServerKeySource,
        config: ServerConfig,
    ) -> Result<Server> {
        config.validate()?;
        let (key, derived) = tokio::task::spawn_blocking(move || source.into_key())
            .await
            .map_err(|_| Error::config("key derivation was cancelled"))??;
        let listener = TcpListener::bind((host, port)).await?;
        let local_addr = listener.local_addr()?;
        let keys = Keys {
            current: Arc::new(KeyEpoch { key, epoch: 1 }),
            grace: None,
        };
        let per_source = config
            .max_pending_per_source
            .unwrap_or(config.max_pending_handshakes.div_ceil(2));
        let pending = PendingTable::new(config.max_pending_handshakes, per_source);
        let shared = Arc::new(Shared {
            accepted: Mailbox::new(config.accept_backlog),
            config,
            keys: RwLock::new(keys),
            live: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            slots: AtomicUsize::new(0),
            pending: Mutex::new(pending),
            next_id: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            accepting: Mutex::new(None),
            stats: ServerStats::default(),
        });
        shared.stats.key_derivations.store(derived as u64, Relaxed);
        let accepting = tokio::spawn(accept_loop(shared.clone(), listener));
        *lock(&shared.accepting) = Some(accepting);
        Ok(Server { shared, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    pub fn live_connections(&self) -> usize {
        self.shared.lock_live().len()
    }

    /// The key epoch new clients authenticate under.
    pub fn key_epoch(&self) -> u32 {
        self.shared.lock_keys().current.epoch
    }

    /// Install a new password (or PHC string): derived off the async threads, then every new
    /// handshake uses it. Live connections authenticated under older keys are closed with
    /// REAUTHENTICATE now, or when `grace` ends; during the grace window clients may still
    /// authenticate with the previous password. Returns the new key epoch.
    pub async fn set_password(&self, source: ServerKeySource, grace: Duration) -> Result<u32> {
        let (key, derived) = tokio::task::spawn_blocking(move || source.into_key())
            .await
            .map_err(|_| Error::config("key derivation was cancelled"))??;
        let shared = &self.shared;
        shared
            .stats
            .key_derivations
            .fetch_add(derived as u64, Relaxed);
        shared.stats.password_changes.fetch_add(1, Relaxed);
        let (new_epoch, old) = {
            let mut keys = write_lock(&shared.keys);
            let old = keys.current.clone();
            let new_epoch = old.epoch + 1;
            keys.current = Arc::new(KeyEpoch {
                key,
                epoch: new_epoch,
            });
            keys.grace = (!grace.is_zero()).then(|| old.clone());
            (new_epoch, old)
        };
        log::info!(target: LOG, "password changed: key epoch {new_epoch} (grace {grace:?})");
        if grace.is_zero() {
            shared.expire_before(new_epoch);
        } else {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(grace) => {}
                }
                {
                    let mut keys = write_lock(&shared.keys);
                    if keys.grace.as_ref().is_some_and(|g| g.epoch == old.epoch) {
                        keys.grace = None;
                    }
                }
                shared.expire_before(new_epoch);
            });
        }
        Ok(new_epoch)
    }

    pub fn pending_handshakes(&self) -> usize {
        self.shared.lock_pending().len()
    }

    /// The next authenticated connection or new session, if one is waiting.
    pub fn try_accept(&self) -> Result<Option<Accepted>> {
        self.shared.accepted.try_pop().map_err(Error::Closed)
    }

    /// Resolves when `try_accept` has something to say. Cancel-safe.
    pub async fn acceptable(&self) {
        self.shared.accepted.readable().await
    }

    pub async fn accept(&self) -> Result<Accepted> {
        self.shared.accepted.pop().await.map_err(Error::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Stop listening, drop pending handshakes, and close every live connection (GOING_AWAY),
    /// each flushing what it had accepted. Idempotent.
    pub async fn close(&self) {
        self.shared.cancel.cancel();
        let accepting = lock(&self.shared.accepting).take();
        if let Some(task) = accepting {
            let _ = task.await; // the listener is dropped when the loop ends
        }
        let unaccepted = self
            .shared
            .accepted
            .end_and_drain(CloseInfo::clean(CloseCode::GOING_AWAY, "server closed"));
        drop(unaccepted); // still in `live`, closed below
        let live: Vec<Connection> = self
            .shared
            .lock_live()
            .values()
            .map(|l| l.conn.clone())
            .collect();
        let closing = live
            .iter()
            .map(|c| c.close(CloseCode::GOING_AWAY, "server shutting down"));
        futures_util::future::join_all(closing).await;
        // Sessions waiting for their client to come back end now.
        let sessions: Vec<Link> = self.shared.lock_sessions().values().cloned().collect();
        for link in sessions {
            link.end_now();
        }
    }

    /// Acknowledged sessions alive (connected, or waiting for their client to resume).
    pub fn sessions(&self) -> usize {
        self.shared.lock_sessions().len()
    }
}

impl Shared {
    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; SESSION_ID_LEN], Link>> {
        lock(&self.sessions)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, PendingTable<CancellationToken>> {
        lock(&self.pending)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        lock(&self.live)
    }

    fn lock_keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        read_lock(&self.keys)
    }

    /// Close every live connection authenticated under an epoch older than `epoch`.
    fn expire_before(&self, epoch: u32) {
        let stale: Vec<Connection> = self
            .lock_live()
            .values()
            .filter(|l| l.epoch < epoch)
            .map(|l| l.conn.clone())
            .collect();
        for conn in stale {
            tokio::spawn(async move {
                conn.close(CloseCode::REAUTHENTICATE, "the server's password changed")
                    .await
            });
        }
    }

    /// Take a connection slot if `max_connections` allows; released by [`Shared::release_slot`].
    fn take_slot(&self) -> bool {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.slots
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Whether `take_slot` would succeed now.
    fn slot_free(&self) -> bool {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.slots.load(Relaxed) < max
    }

    fn release_slot(&self) {
        self.slots.fetch_sub(1, Relaxed);
    }
}
