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
use super::throttle::{Throttle, ThrottlePolicy};
use super::wire::Wire;
use super::LinkConfig;
use crate::core::frame::{ResumeReply, ResumeStatus, SessionRequest, SESSION_ID_LEN};
use crate::core::handshake::server::{busy, ServerHandshake, ServerSetup, ServerStep};
use crate::core::handshake::{Admission, Identity};
use crate::core::kdf::{KdfParams, ServerKey};
use crate::error::{CloseCode, CloseInfo, Error, PeerMisbehaved, Result};
use crate::net::{lock, read_lock, write_lock};

mod accept;
mod handshake;
mod keys;
mod lookup;

pub use keys::ServerSecrets;
use keys::{Keys, Ring};
pub use lookup::PeerLookup;
use lookup::{Found, Lookups};

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
    /// How failed handshakes slow their sources down (None: not at all).
    pub throttle: Option<ThrottlePolicy>,
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
            throttle: Some(ThrottlePolicy::default()),
        }
    }
}

impl ServerConfig {
    /// Every check a server's settings get (the binding runs the same one).
    pub fn validate(&self) -> Result<()> {
        self.link.validate()?;
        self.session.validate()?;
        if let Some(throttle) = &self.throttle {
            throttle.validate()?;
        }
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
    /// PRS, salt and costs).
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

#[derive(Default, Debug)]
pub struct ServerStats {
    pub handshakes_ok: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub handshakes_evicted: AtomicU64,
    pub key_derivations: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub password_changes: AtomicU64,
    /// Hellos that named an identity the server has no password for (or revoked): offered a
    /// decoy, they fail at message 1 like a wrong password.
    pub unknown_identities: AtomicU64,
    pub revocations: AtomicU64,
    /// Connections made to wait for their handshake because their source (or all sources
    /// together) failed too often, and those closed at once because the wait would outlast
    /// the handshake deadline.
    pub throttled: AtomicU64,
    pub throttle_refusals: AtomicU64,
}

/// A live connection, and the key (by generation) it authenticated under.
struct Live {
    conn: Connection,
    generation: u64,
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
    /// The server's ends of acknowledged sessions, by session id, until each ends, with the
    /// identity that opened each (only it may resume it).
    sessions: Mutex<HashMap<[u8; SESSION_ID_LEN], (Link, Identity)>>,
    live: Mutex<HashMap<u64, Live>>,
    /// Connection slots taken (live or being admitted), for `max_connections`.
    slots: AtomicUsize,
    pending: Mutex<PendingTable<CancellationToken>>,
    /// Failed handshakes by source (None: throttling is off).
    throttle: Option<Mutex<Throttle>>,
    /// The application's lookup of peers' passwords, if it gave one.
    lookups: Option<Lookups>,
    next_id: AtomicU64,
    cancel: CancellationToken,
    /// The accept loop, which owns the listening socket: `close` waits for it to end, so the
    /// port is free when `close` returns.
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stats: ServerStats,
    /// The runtime the server runs on: `revoke` may be called from outside it.
    runtime: tokio::runtime::Handle,
}

/// What a connection is told when its key no longer applies.
fn close_reason(code: CloseCode) -> &'static str {
    if code == CloseCode::REVOKED {
        "the server revoked this identity"
    } else {
        "the server's password changed"
    }
}

/// A listening server. Dropping it does not stop it; call [`Server::close`].
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl Server {
    /// Bind, derive the keys (off the async threads), and start accepting.
    pub async fn bind(
        host: &str,
        port: u16,
        secrets: impl Into<ServerSecrets>,
        config: ServerConfig,
    ) -> Result<Server> {
        config.validate()?;
        let mut secrets = secrets.into();
        let lookups = secrets.lookup.take().map(Lookups::new);
        if secrets.shared.is_none() && secrets.peers.is_empty() && lookups.is_none() {
            return Err(Error::config(
                "give a password (or password hash), peers, or both",
            ));
        }
        let mut named = std::collections::HashSet::new();
        if !secrets
            .peers
            .iter()
            .all(|(id, _)| !id.is_anonymous() && named.insert(id))
        {
            return Err(Error::config(
                "peer identities must be non-empty and distinct",
            ));
        }
        let (keys, derived) = tokio::task::spawn_blocking(move || keys::derive(secrets))
            .await
            .map_err(|_| Error::config("key derivation was cancelled"))??;
        let listener = TcpListener::bind((host, port)).await?;
        let local_addr = listener.local_addr()?;
        let per_source = config
            .max_pending_per_source
            .unwrap_or(config.max_pending_handshakes.div_ceil(2));
        let pending = PendingTable::new(config.max_pending_handshakes, per_source);
        let throttle = config.throttle.map(|p| Mutex::new(Throttle::new(p)));
        let shared = Arc::new(Shared {
            accepted: Mailbox::new(config.accept_backlog),
            config,
            keys: RwLock::new(keys),
            live: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            slots: AtomicUsize::new(0),
            pending: Mutex::new(pending),
            throttle,
            lookups,
            next_id: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            accepting: Mutex::new(None),
            stats: ServerStats::default(),
            runtime: tokio::runtime::Handle::current(),
        });
        shared.stats.key_derivations.store(derived, Relaxed);
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

    /// The key epoch new clients of the shared password authenticate under (0: there is no
    /// shared password).
    pub fn key_epoch(&self) -> u32 {
        self.shared.lock_keys().shared_epoch()
    }

    /// The key epoch new clients of `identity` authenticate under (0: none is accepted).
    pub fn key_epoch_of(&self, identity: &Identity) -> u32 {
        self.shared.lock_keys().epoch_of(identity)
    }

    /// Install a new password (or PHC string): derived off the async threads, then every new
    /// handshake uses it. For `identity`, that identity's own password (given one, it no
    /// longer uses the shared password; a revoked identity is admitted again); else the shared
    /// password. Live connections that authenticated under the key it replaces are closed
    /// with REAUTHENTICATE now, or when `grace` ends; during the grace window clients may
    /// still authenticate with the previous password. Returns the new key epoch.
    pub async fn set_password(
        &self,
        source: ServerKeySource,
        grace: Duration,
        identity: Option<Identity>,
    ) -> Result<u32> {
        let (key, derived) = tokio::task::spawn_blocking(move || source.into_key())
            .await
            .map_err(|_| Error::config("key derivation was cancelled"))??;
        let shared = &self.shared;
        shared
            .stats
            .key_derivations
            .fetch_add(derived as u64, Relaxed);
        shared.stats.password_changes.fetch_add(1, Relaxed);
        let ring = identity.map_or(Ring::Shared, Ring::Peer);
        let change = write_lock(&shared.keys).install(ring, key, !grace.is_zero());
        match &change.ring {
            Ring::Shared => log::info!(
                target: LOG,
                "password changed: key epoch {} (grace {grace:?})",
                change.epoch
            ),
            Ring::Peer(id) => log::info!(
                target: LOG,
                "password of identity {id:?} changed: key epoch {} (grace {grace:?})",
                change.epoch
            ),
        }
        shared.enforce();
        if let (Some(retired), false) = (change.retired, grace.is_zero()) {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(grace) => {}
                }
                write_lock(&shared.keys).end_grace(&change.ring, retired);
                shared.enforce();
            });
        }
        Ok(change.epoch)
    }

    /// Refuse `identity` from now on (its hellos get a decoy, as an unknown identity's), and
    /// close its live connections and sessions at once (REVOKED). Returns how many
    /// connections and sessions that ended.
    pub fn revoke(&self, identity: &Identity) -> usize {
        write_lock(&self.shared.keys).revoke(identity);
        self.shared.stats.revocations.fetch_add(1, Relaxed);
        log::info!(target: LOG, "identity {identity:?} revoked");
        self.shared.enforce()
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
        let sessions: Vec<Link> = self
            .shared
            .lock_sessions()
            .values()
            .map(|(link, _)| link.clone())
            .collect();
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
    fn lock_sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<[u8; SESSION_ID_LEN], (Link, Identity)>> {
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

    /// If the application's lookup should be asked about `identity`, ask it (once, however
    /// many handshakes wait) and keep what it found.
    async fn look_up(&self, identity: &Identity) {
        let Some(lookups) = &self.lookups else {
            return;
        };
        if !self.lock_keys().needs_lookup(identity) || lookups.known_unknown(identity) {
            return;
        }
        lookups
            .look_up(identity, |found| {
                if let Found::Key(key, derived) = found {
                    self.stats
                        .key_derivations
                        .fetch_add(derived as u64, Relaxed);
                    write_lock(&self.keys).learn(identity, key);
                }
            })
            .await;
    }

    /// Close every live connection whose key no longer applies to it (retired, replaced by
    /// the identity's own, or revoked), and end the sessions of revoked identities. Returns
    /// how many it ended.
    fn enforce(&self) -> usize {
        let doomed: Vec<(Connection, CloseCode)> = {
            // Live before keys, the order `register` takes them in.
            let live = self.lock_live();
            let keys = self.lock_keys();
            live.values()
                .filter_map(|l| {
                    let code = keys.still_accepts(l.conn.peer_identity(), l.generation)?;
                    Some((l.conn.clone(), code))
                })
                .collect()
        };
        let revoked: Vec<Link> = {
            let sessions = self.lock_sessions();
            let keys = self.lock_keys();
            sessions
                .values()
                .filter(|(_, id)| keys.is_revoked(id))
                .map(|(link, _)| link.clone())
                .collect()
        };
        let ended = doomed.len() + revoked.len();
        for (conn, code) in doomed {
            self.runtime
                .spawn(async move { conn.close(code, close_reason(code)).await });
        }
        for link in revoked {
            // Told why first (a client's session ends on that CLOSE), then gone, lingering or not.
            self.runtime.spawn(async move {
                if let Some(conn) = link.current() {
                    let code = CloseCode::REVOKED;
                    conn.close(code, close_reason(code)).await;
                }
                link.end_now();
            });
        }
        ended
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
