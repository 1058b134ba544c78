//! Dialing a server: TCP connect, the client side of the handshake, then a [`Connection`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_util::codec::{FramedRead, FramedWrite};
use zeroize::Zeroizing;

use super::connection::{Connection, Start};
use super::LinkConfig;
use crate::core::codec::{FrameDecoder, FrameEncoder, Outgoing};
use crate::core::frame::{ResumeReply, SessionRequest};
use crate::core::handshake::{
    ClientAwaitingReply, ClientHello, ServerParams, MSG2_LEN, PARAMS_LEN,
};
use rand::RngCore;

use crate::core::kdf::{derive_psk, hmac_sha256, KdfBounds, KdfParams, Psk, Salt};
use crate::core::session::{Event, Opener, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, Result};

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
    cells: HashMap<CacheKey, Arc<OnceCell<Psk>>>,
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
    fn cell(&mut self, key: CacheKey) -> Arc<OnceCell<Psk>> {
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

/// The client's password; the keys derived from it live in the process-wide cache.
pub struct Credentials {
    password: Zeroizing<Vec<u8>>,
    /// This password's name in the key cache (see [`CacheKey`]).
    tag: Zeroizing<[u8; 32]>,
    /// Argon2 runs this password's dials performed (a run shared with other clients counts
    /// once, for the client that ran it).
    derivations: AtomicU64,
    /// Server configurations this password has completed a handshake with: for those, a
    /// handshake cut before the server's reply is a network fault, not a wrong password.
    verified: Mutex<HashSet<(Salt, KdfParams)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    pub fn new(password: &[u8]) -> Self {
        Credentials {
            password: Zeroizing::new(password.to_vec()),
            tag: Zeroizing::new(hmac_sha256(&TAG_SECRET[..], password)),
            derivations: AtomicU64::new(0),
            verified: Mutex::new(HashSet::new()),
        }
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<(Salt, KdfParams)>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Argon2 runs performed so far.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(Relaxed)
    }

    /// The PSK for a server's salt and costs: cached process-wide, or derived once on a
    /// blocking thread even when many connections (of any client) ask at the same time.
    pub async fn psk_for(self: &Arc<Self>, salt: Salt, params: KdfParams) -> Result<Psk> {
        self.psk_and_wait(salt, params).await.map(|(psk, _)| psk)
    }

    /// [`Self::psk_for`], and whether the key had to be derived first (this call waited for an
    /// Argon2 run, its own or another client's).
    async fn psk_and_wait(self: &Arc<Self>, salt: Salt, params: KdfParams) -> Result<(Psk, bool)> {
        let cell = KEY_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cell((salt, params, *self.tag));
        if let Some(psk) = cell.get() {
            return Ok((psk.clone(), false));
        }
        let me = self.clone();
        // In a task of its own: if the caller gives up (open_timeout), the derivation still
        // lands in the cache for the next attempt instead of being thrown away and restarted.
        let filling = tokio::spawn(async move {
            cell.get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    me.derivations.fetch_add(1, Relaxed);
                    derive_psk(&me.password, &salt, &params)
                })
                .await
                .map_err(|_| Error::config("key derivation was cancelled"))?
            })
            .await
            .cloned()
        });
        let psk = filling
            .await
            .map_err(|_| Error::config("key derivation was cancelled"))??;
        Ok((psk, true))
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

fn eof_means(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::protocol(what.to_owned())
    } else {
        Error::Io(e)
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
    let (conn, _) = dial(host, port, credentials, config, epoch_hint, None).await?;
    Ok(conn)
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
) -> Result<(Connection, Option<ResumeReply>)> {
    config.link.validate()?;
    let attempts = async {
        let mut hint = epoch_hint;
        let mut cut_retried = false;
        // At most two handshakes under distinct keys: the key the server offered first, then
        // the other one; and one more if the first was cut while this client derived its key.
        let mut retry = false;
        loop {
            let mut offered = (0, 0);
            let mut derived = false;
            let attempt = handshake(
                host,
                port,
                credentials,
                config,
                hint,
                session,
                &mut offered,
                &mut derived,
            )
            .await;
            match attempt {
                // A first-time client spends its Argon2 run between the parameters and
                // message 1, where a server under a connection flood may drop it as idle
                // (PROTOCOL.md M25): the connection is found closed before message 1 is sent.
                // Once more with the key now cached, and only once.
                Err(Error::Io(e))
                    if derived
                        && !cut_retried
                        && e.kind() == std::io::ErrorKind::ConnectionAborted =>
                {
                    cut_retried = true;
                }
                Err(Error::Authentication(why)) => {
                    let (epoch, other) = offered;
                    if retry || other == 0 || other == epoch {
                        return Err(Error::Authentication(why));
                    }
                    hint = other;
                    retry = true;
                }
                result => return result,
            }
        }
    };
    tokio::time::timeout(config.open_timeout, attempts)
        .await
        .map_err(|_| Error::Timeout("opening the connection (open_timeout)"))?
}

fn closed_before_message1() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the server closed the connection before message 1 (busy or restarting)",
    ))
}

/// One handshake; `offered` receives the (epoch, other epoch) of the parameters the server sent,
/// `derived` whether its key had to be derived first.
#[allow(clippy::too_many_arguments)]
async fn handshake(
    host: &str,
    port: u16,
    credentials: &Arc<Credentials>,
    config: &ClientConfig,
    epoch_hint: u32,
    session: Option<SessionRequest>,
    offered: &mut (u32, u32),
    derived: &mut bool,
) -> Result<(Connection, Option<ResumeReply>)> {
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let hello = ClientHello {
        epoch_hint,
        ..ClientHello::default()
    }
    .encode();
    wr.write_all(&hello).await?;

    let mut params_bytes = [0u8; PARAMS_LEN];
    rd.read_exact(&mut params_bytes).await.map_err(|e| {
        eof_means(
            e,
            "the server closed the connection before the handshake (busy, or not argonlink)",
        )
    })?;
    let params = ServerParams::parse(&params_bytes)?;
    *offered = (params.epoch, params.other_epoch);
    config.kdf_bounds.check(&params.kdf)?;
    let (psk, waited) = credentials.psk_and_wait(params.salt, params.kdf).await?;
    *derived = waited;
    // The server can judge the password only once it has message 1. If it closed the
    // connection before that (evicted at its pending-handshake cap, restarted), that is a
    // network fault to retry, not a wrong password: say so now, while it is still certain.
    let mut probe = [0u8; 1];
    if let Some(early) = rd.peek(&mut probe).now_or_never() {
        return Err(match early {
            Ok(0) => closed_before_message1(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed_before_message1(),
            Ok(_) => Error::protocol("the server sent data before message 1"),
            Err(e) => Error::Io(e),
        });
    }

    let link = &config.link;
    let (state, msg1) = ClientAwaitingReply::start(
        &psk,
        &hello,
        &params_bytes,
        link.node_id,
        link.max_message_size,
    )?;
    let mut out = Vec::with_capacity(2 + msg1.len());
    out.extend_from_slice(&(msg1.len() as u16).to_be_bytes());
    out.extend_from_slice(&msg1);
    wr.write_all(&out).await?;

    let server_config = (params.salt, params.kdf);
    let len = rd.read_u16().await.map_err(|e| match e.kind() {
        // The server hangs up on a handshake it cannot decrypt; it says nothing else, by design.
        // Unless this password already completed a handshake with this very server key: then
        // the connection was lost (a restart, a network fault), and trying again is right.
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            if !credentials.verified().contains(&server_config) =>
        {
            Error::Authentication(
                "the server rejected the handshake (wrong password, or a password change)".into(),
            )
        }
        _ => Error::Io(e),
    })?;
    if len as usize != MSG2_LEN {
        return Err(Error::protocol(format!(
            "handshake reply of {len} bytes, expected {MSG2_LEN}"
        )));
    }
    let mut msg2 = [0u8; MSG2_LEN];
    rd.read_exact(&mut msg2).await?;
    let est = state.finish(&msg2)?;
    {
        let mut verified = credentials.verified();
        if verified.len() >= VERIFIED_ENTRIES {
            verified.clear();
        }
        verified.insert(server_config);
    }

    let reader = FramedRead::new(
        rd,
        FrameDecoder {
            opener: Opener::new(&est.recv_key, link.rekey, link.max_message_size, false),
        },
    );
    let mut writer = FramedWrite::new(
        wr,
        FrameEncoder {
            sealer: Sealer::new(&est.send_key, link.rekey, est.peer_max_message),
        },
    );
    let mut reader = reader;
    let reply =
        match session {
            None => None,
            Some(request) => {
                // Where each side resumes must be settled before either sends a message.
                writer.send(Outgoing::Confirm(Some(request))).await?;
                match reader.next().await {
                    Some(Ok(Event::Resume(reply))) => Some(reply),
                    // Refused with a reason (busy, a protocol error): report the server's code.
                    Some(Ok(Event::Close { code, reason })) => {
                        return Err(Error::Closed(CloseInfo::error(CloseCode(code), reason)))
                    }
                    Some(Err(e)) => return Err(e),
                    Some(Ok(_)) => return Err(Error::protocol("expected RESUME")),
                    None => return Err(Error::protocol(
                        "the server closed the connection instead of answering the session request",
                    )),
                }
            }
        };
    let first = reply.is_none().then_some(Outgoing::Confirm(None));
    let conn = Connection::spawn(
        reader,
        writer,
        &est,
        params.epoch,
        link.clone(),
        Start {
            acknowledged: reply.is_some(),
            first,
            on_done: None,
        },
    )?;
    Ok((conn, reply))
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
    fn the_password_tag_is_keyed() {
        let a = Credentials::new(b"pw");
        assert_eq!(*a.tag, *Credentials::new(b"pw").tag);
        assert_ne!(*a.tag, *Credentials::new(b"pw2").tag);
        use sha2::{Digest, Sha256};
        assert_ne!(a.tag[..], Sha256::digest(b"pw")[..], "not an unkeyed hash");
    }
}
