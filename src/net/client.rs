//! Dialing a server: TCP connect, the client side of the handshake, then a [`Connection`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::connection::{Connection, Start};
use super::wire::Wire;
use super::LinkConfig;
use crate::core::frame::{ResumeReply, SessionRequest};
use crate::core::handshake::client::{ClientHandshake, ClientSetup, ClientStep};
use crate::core::handshake::Identity;
use rand::RngCore;

use crate::core::kdf::{derive_prs, hmac_sha256, KdfBounds, KdfParams, Prs, Salt};
use crate::error::{CloseCode, Error, Result};
use crate::net::lock;

/// Server configurations remembered per password as verified (bounded: a server rarely has
/// more than two; past this, the set starts over).
const VERIFIED_ENTRIES: usize = 8;

/// Process-wide bound on cached keys: one per (password, server salt, costs); past it, the
/// least recently used entry is evicted. Many clients of one server then share one Argon2 run.
const KEY_CACHE_ENTRIES: usize = 64;

/// (server salt, costs, password tag). The tag is HMAC-SHA256 of the password under a random
/// per-process secret: it tells passwords apart without being a fast unkeyed hash of one (an
/// offline guess needs the secret, which never leaves this process).
type CacheKey = (Salt, KdfParams, [u8; 32]);

/// Derived keys shared by every client in the process; each cell is filled once (single
/// flight: concurrent dials for one entry wait for the same derivation).
#[derive(Default)]
struct KeyCache {
    cells: HashMap<CacheKey, Arc<OnceCell<Prs>>>,
    /// Use order, least recent first: what to evict.
    order: VecDeque<CacheKey>,
}

static KEY_CACHE: LazyLock<Mutex<KeyCache>> = LazyLock::new(Mutex::default);

/// The key of password tags; random per process and wiped at exit.
static TAG_SECRET: LazyLock<Zeroizing<[u8; 32]>> = LazyLock::new(|| {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut secret[..]);
    secret
});

impl KeyCache {
    fn cell(&mut self, key: CacheKey) -> Arc<OnceCell<Prs>> {
        if let Some(cell) = self.cells.get(&key).cloned() {
            // Least recently used goes first: a hit moves to the back.
            self.order.retain(|k| k != &key);
            self.order.push_back(key);
            return cell;
        }
        while self.cells.len() >= KEY_CACHE_ENTRIES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            // A derivation in flight keeps its cell for those already waiting on it.
            self.cells.remove(&oldest);
        }
        let cell = Arc::new(OnceCell::new());
        self.cells.insert(key, cell.clone());
        self.order.push_back(key);
        cell
    }
}

/// The client's identity and password; the keys derived from it live in the process-wide
/// cache.
pub struct Credentials {
    /// Who the client says it is in the hello (the handshake authenticates it).
    identity: Identity,
    password: Zeroizing<Vec<u8>>,
    /// This password's name in the key cache (see [`CacheKey`]).
    tag: Zeroizing<[u8; 32]>,
    /// Argon2 runs this password's dials performed (a run shared with other clients counts
    /// once, for the client that ran it).
    derivations: AtomicU64,
    /// Server configurations this password has completed a handshake with: for those, a
    /// handshake cut before the server's reply is a network fault, not a wrong password.
    verified: Mutex<HashSet<(Salt, KdfParams)>>,
    /// Pacing of derivations for parameters that never completed a handshake (see
    /// [`Unverified`]).
    unverified: Mutex<Unverified>,
}

/// A server that offers new parameters on every dial (an impostor on its address, a man in
/// the middle) would cost a reconnecting client an Argon2 run per redial, at whatever costs
/// up to its cap. So only the first derivation for unverified parameters is free; each
/// further one waits twice as long as the last (1 s, 2 s, ... 64 s), until a handshake
/// completes (a password change then costs one derivation, as it should).
/// Dials that wait for the same parameters share one derivation and count once.
#[derive(Default)]
struct Unverified {
    strikes: u32,
    not_before: Option<tokio::time::Instant>,
    last: Option<(Salt, KdfParams)>,
}

impl Unverified {
    /// When a derivation for `params` may start (None: now), counting it if they are new.
    fn next_slot(&mut self, params: (Salt, KdfParams)) -> Option<tokio::time::Instant> {
        if self.last == Some(params) {
            return None; // the same derivation (in flight or cached), not a new one
        }
        self.last = Some(params);
        let now = tokio::time::Instant::now();
        let at = self.not_before.filter(|t| *t > now);
        let start = at.unwrap_or(now);
        let pause = Duration::from_secs(1 << self.strikes.min(6));
        self.strikes = self.strikes.saturating_add(1);
        self.not_before = Some(start + pause);
        at
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// A password with no identity (anonymous: for a server's shared password).
    pub fn new(password: &[u8]) -> Self {
        Credentials::with_identity(Identity::default(), password)
    }

    pub fn with_identity(identity: Identity, password: &[u8]) -> Self {
        Credentials {
            identity,
            password: Zeroizing::new(password.to_vec()),
            tag: Zeroizing::new(hmac_sha256(&TAG_SECRET[..], password)),
            derivations: AtomicU64::new(0),
            verified: Mutex::new(HashSet::new()),
            unverified: Mutex::new(Unverified::default()),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<(Salt, KdfParams)>> {
        lock(&self.verified)
    }

    /// This password completed a handshake under this server key: a cut before message 2
    /// is from now on a fault, not a refusal, and derivations for it are no longer paced.
    fn record_verified(&self, server_key: (Salt, KdfParams)) {
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_ENTRIES {
            verified.clear();
        }
        verified.insert(server_key);
        drop(verified);
        *lock(&self.unverified) = Unverified::default();
    }

    /// Argon2 runs performed so far.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(Relaxed)
    }

    /// The PRS for a server's salt and costs: cached process-wide, or derived once on a
    /// blocking thread even when many connections (of any client) ask at the same time.
    pub async fn prs_for(self: &Arc<Self>, salt: Salt, params: KdfParams) -> Result<Prs> {
        self.prs_and_wait(salt, params).await.map(|(prs, _)| prs)
    }

    /// [`Self::prs_for`], and whether the key had to be derived first (this call waited for an
    /// Argon2 run, its own or another client's).
    async fn prs_and_wait(self: &Arc<Self>, salt: Salt, params: KdfParams) -> Result<(Prs, bool)> {
        let cell = lock(&KEY_CACHE).cell((salt, params, *self.tag));
        if let Some(prs) = cell.get() {
            return Ok((prs.clone(), false));
        }
        if !self.verified().contains(&(salt, params)) {
            let slot = lock(&self.unverified).next_slot((salt, params));
            if let Some(at) = slot {
                // In the dialing caller: bounded by its open_timeout, dropped with it.
                tokio::time::sleep_until(at).await;
            }
        }
        let me = self.clone();
        // In a task of its own: if the caller gives up (open_timeout), the derivation still
        // lands in the cache for the next attempt instead of being thrown away and restarted.
        let filling = tokio::spawn(async move {
            cell.get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    me.derivations.fetch_add(1, Relaxed);
                    derive_prs(&me.password, &salt, &params)
                })
                .await
                .map_err(|_| Error::config("key derivation was cancelled"))?
            })
            .await
            .cloned()
        });
        let prs = filling
            .await
            .map_err(|_| Error::config("key derivation was cancelled"))??;
        Ok((prs, true))
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub link: LinkConfig,
    /// Deadline for TCP connect plus the whole handshake (including a first key derivation).
    pub open_timeout: Duration,
    pub kdf_bounds: KdfBounds,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            link: LinkConfig::default(),
            open_timeout: Duration::from_secs(10),
            kdf_bounds: KdfBounds::default(),
        }
    }
}

/// Connect and authenticate. Fails with `Authentication` when either side lacks the password,
/// within `open_timeout` in every case.
///
/// `epoch_hint` is the server key epoch this client last authenticated under (0: none). When the
/// key fails and the server says it also accepts another epoch (a password change's grace
/// window), the handshake is tried once more under that epoch.
pub async fn connect(
    host: &str,
    port: u16,
    credentials: &Arc<Credentials>,
    config: &ClientConfig,
    epoch_hint: u32,
) -> Result<Connection> {
    let (conn, _) = dial(host, port, credentials, config, epoch_hint, None)
        .await
        .map_err(|f| f.error)?;
    Ok(conn)
}

/// Why a dial failed, and whether the peer had proved it knows the password by then.
#[derive(Debug)]
pub(crate) struct DialFailure {
    pub error: Error,
    pub authenticated: bool,
}

impl DialFailure {
    /// Dialling again cannot help: the password is wrong, or a peer that knows it broke the
    /// protocol (or said we did), which it would do again. Anything before the peer proved
    /// itself may be a fault or an attacker on the path, gone by the next try.
    pub fn is_final(&self) -> bool {
        match &self.error {
            Error::Authentication(_) => true,
            Error::Closed(info) => {
                self.authenticated
                    && matches!(
                        info.code,
                        CloseCode::PROTOCOL_ERROR | CloseCode::MESSAGE_TOO_LARGE
                    )
            }
            e => self.authenticated && e.close_code_to_send().is_some(),
        }
    }
}

/// What one handshake attempt learned, for deciding on the next.
#[derive(Default)]
struct Attempt {
    /// (epoch, other epoch) of the parameters the server sent.
    offered: (u32, u32),
    /// The key had to be derived first.
    derived: bool,
    /// Message 2 verified: the server knows the password.
    authenticated: bool,
    /// The server key's salt and costs, once its parameters arrived.
    server_key: Option<(Salt, KdfParams)>,
}

/// [`connect`], asking for an acknowledged session when `session` is given: the connection
/// comes back with the server's answer, before any message was sent on it.
pub(crate) async fn dial(
    host: &str,
    port: u16,
    credentials: &Arc<Credentials>,
    config: &ClientConfig,
    epoch_hint: u32,
    session: Option<SessionRequest>,
) -> Result<(Connection, Option<ResumeReply>), DialFailure> {
    let unauthenticated = |error| DialFailure {
        error,
        authenticated: false,
    };
    config.link.validate().map_err(unauthenticated)?;
    let attempts = async {
        let mut hint = epoch_hint;
        let mut cut_retried = false;
        // At most two handshakes under distinct keys: the key the server offered first, then
        // the other one; and one more if the first was cut while this client derived its key.
        let mut retry = false;
        loop {
            let mut attempt = Attempt::default();
            let result =
                handshake(host, port, credentials, config, hint, session, &mut attempt).await;
            match result {
                // A first-time client spends its Argon2 run between the parameters and
                // message 1, where a server under a connection flood may drop it as idle
                // (PROTOCOL.md M25): the connection is found closed before message 1 is sent.
                // Once more with the key now cached, and only once.
                Err(Error::Io(e))
                    if attempt.derived
                        && !cut_retried
                        && e.kind() == std::io::ErrorKind::ConnectionAborted =>
                {
                    cut_retried = true;
                }
                Err(Error::Authentication(why)) => {
                    let (epoch, other) = attempt.offered;
                    if retry || other == 0 || other == epoch {
                        return Err(unauthenticated(Error::Authentication(why)));
                    }
                    hint = other;
                    retry = true;
                }
                result => {
                    return result.map_err(|error| DialFailure {
                        error,
                        authenticated: attempt.authenticated,
                    })
                }
            }
        }
    };
    tokio::time::timeout(config.open_timeout, attempts)
        .await
        .map_err(|_| unauthenticated(Error::Timeout("opening the connection (open_timeout)")))?
}

/// One handshake, recording in `attempt` what it learned along the way. The protocol is
/// [`ClientHandshake`]'s; this moves its bytes and gets its key.
async fn handshake(
    host: &str,
    port: u16,
    credentials: &Arc<Credentials>,
    config: &ClientConfig,
    epoch_hint: u32,
    session: Option<SessionRequest>,
    attempt: &mut Attempt,
) -> Result<(Connection, Option<ResumeReply>)> {
    let mut wire = Wire::new(TcpStream::connect((host, port)).await?)?;
    let link = &config.link;
    let mut hs = ClientHandshake::new(ClientSetup {
        node_id: link.node_id,
        limits: link.limits(),
        kdf_bounds: config.kdf_bounds,
        rekey: link.rekey,
        epoch_hint,
        session,
        identity: credentials.identity.clone(),
    });
    if let Err(e) = drive(&mut hs, &mut wire, credentials, attempt).await {
        wire.last_words(&hs.poll_transmit()).await;
        return Err(e);
    }
    let done = hs.finish()?;
    let socket = wire.into_socket(done.opener, done.sealer);
    let conn = Connection::spawn(
        socket,
        &done.established,
        done.params.epoch,
        link.clone(),
        Start {
            acknowledged: done.reply.is_some(),
            on_done: None,
            peer_identity: Default::default(),
            server: false,
        },
    )?;
    Ok((conn, done.reply))
}

/// Run `hs` to completion over `wire`.
async fn drive(
    hs: &mut ClientHandshake,
    wire: &mut Wire,
    credentials: &Arc<Credentials>,
    attempt: &mut Attempt,
) -> Result<()> {
    loop {
        let step = hs.handle_input(&mut wire.buf);
        // Message 2 verified (whatever comes next): remember it once.
        if hs.is_authenticated() && !attempt.authenticated {
            attempt.authenticated = true;
            if let Some(key) = attempt.server_key {
                credentials.record_verified(key);
            }
        }
        match step? {
            ClientStep::NeedInput => {
                // What we have to say goes out before we wait for the answer.
                wire.write(&hs.poll_transmit()).await?;
                let want = hs.wants(&wire.buf);
                if let Err(e) = wire.read(want).await {
                    return Err(hs.connection_lost(e));
                }
            }
            ClientStep::NeedKey(params) => {
                attempt.offered = (params.epoch, params.other_epoch);
                attempt.server_key = Some((params.salt, params.kdf));
                let (prs, waited) = credentials.prs_and_wait(params.salt, params.kdf).await?;
                attempt.derived = waited;
                // Whatever came while we derived is judged by the handshake: a close (a
                // fault to retry: the server could not judge the password yet) or data (not
                // argonlink).
                let mut probe = [0u8; 1];
                if let Some(early) = wire.rd.peek(&mut probe).now_or_never() {
                    match early {
                        Ok(0) => {
                            return Err(hs.connection_lost(std::io::ErrorKind::UnexpectedEof.into()))
                        }
                        Ok(_) => {
                            wire.buf.extend_from_slice(&probe);
                            hs.handle_input(&mut wire.buf)?;
                        }
                        Err(e) => return Err(hs.connection_lost(e)),
                    }
                }
                let proven = credentials.verified().contains(&(params.salt, params.kdf));
                hs.set_key(&prs, proven)?;
            }
            ClientStep::Done => {
                wire.write(&hs.poll_transmit()).await?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_evicts_its_least_recently_used_entry_at_the_bound() {
        let mut cache = KeyCache::default();
        let params = KdfParams::new(256, 1, 1).unwrap();
        let key = |i: usize| ([i as u8; 16], params, [0u8; 32]);
        for i in 0..KEY_CACHE_ENTRIES {
            cache.cell(key(i));
        }
        let kept = cache.cell(key(0)); // used again: now the most recent
        cache.cell(key(KEY_CACHE_ENTRIES));
        assert_eq!(cache.cells.len(), KEY_CACHE_ENTRIES);
        assert!(
            !cache.cells.contains_key(&key(1)),
            "the least recently used goes first"
        );
        assert!(
            Arc::ptr_eq(&kept, &cache.cell(key(0))),
            "a hit is the same cell"
        );
    }

    #[test]
    fn only_an_authenticated_peer_breaking_the_protocol_ends_the_redialling() {
        let failure = |error, authenticated| DialFailure {
            error,
            authenticated,
        };
        let closed = |code| Error::Closed(crate::error::CloseInfo::error(code, "x"));
        // Before message 2 verified, anything may be the network or an attacker on the path.
        assert!(!failure(
            Error::Protocol(crate::error::PeerMisbehaved::BadMagic),
            false
        )
        .is_final());
        assert!(!failure(closed(CloseCode::PROTOCOL_ERROR), false).is_final());
        assert!(failure(Error::Authentication("wrong".into()), false).is_final());
        // After: a peer that knows the password and breaks the protocol would do it again.
        assert!(failure(
            Error::Protocol(crate::error::PeerMisbehaved::WindowTooSmall(0)),
            true
        )
        .is_final());
        assert!(failure(closed(CloseCode::PROTOCOL_ERROR), true).is_final());
        assert!(failure(closed(CloseCode::MESSAGE_TOO_LARGE), true).is_final());
        // Tag failures, cuts and refusals for capacity stay worth another try.
        assert!(!failure(Error::Integrity, true).is_final());
        assert!(!failure(closed(CloseCode::BUSY), true).is_final());
        let cut = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!failure(Error::Io(cut), true).is_final());
    }

    #[test]
    fn the_password_tag_is_keyed() {
        let a = Credentials::new(b"pw");
        assert_eq!(*a.tag, *Credentials::new(b"pw").tag);
        assert_ne!(*a.tag, *Credentials::new(b"pw2").tag);
        use sha2::{Digest, Sha256};
        assert_ne!(a.tag[..], Sha256::digest(b"pw")[..], "not an unkeyed hash");
    }
}
