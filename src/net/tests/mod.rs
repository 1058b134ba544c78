//! End-to-end tests of the I/O layer on loopback, without Python, by concern: one connection
//! ([`connections`]), the server ([`servers`]), links that redial ([`links`]), exactly-once
//! sessions across cut connections ([`sessions`]), and key derivation ([`keys`]). The protocol's own
//! behaviour (closing, timers, ACK gating) is tested in `crate::core` on a virtual clock; these
//! check the drivers with real sockets. The helpers below are shared.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::core::frame::{ResumeStatus, SessionRequest};
use crate::core::kdf::{KdfBounds, KdfParams};
use crate::error::{CloseCode, Error};
use crate::net::link::{Link, ReconnectPolicy};
use crate::net::mailbox::Wakeup;

mod channels;
mod connections;
mod keys;
mod links;
mod peers;
mod servers;
mod sessions;

const FAST: KdfParams = KdfParams {
    m_cost: 256,
    t_cost: 1,
    p_cost: 1,
};

fn client_config() -> ClientConfig {
    ClientConfig {
        kdf_bounds: KdfBounds {
            floor: FAST,
            cap: KdfParams::DEFAULT_CAP,
        },
        ..ClientConfig::default()
    }
}

async fn server(password: &[u8]) -> Server {
    let source = ServerKeySource::Password(password.to_vec().into(), FAST);
    Server::bind("127.0.0.1", 0, source, ServerConfig::default())
        .await
        .unwrap()
}

async fn pair(server: &Server) -> (Connection, Connection) {
    let creds = Arc::new(Credentials::new(b"pw"));
    let port = server.local_addr().port();
    let client = connect("127.0.0.1", port, &creds, &client_config(), 0)
        .await
        .unwrap();
    let accepted = server.accept().await.unwrap().connection();
    (client, accepted)
}

fn policy() -> Option<ReconnectPolicy> {
    Some(ReconnectPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    })
}

/// A relay that forwards the handshake and then never forwards a byte: TCP stays up, the peer
/// is gone.
async fn blackhole_after_handshake(target: std::net::SocketAddr) -> u16 {
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = blackhole.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut inbound, _) = blackhole.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut ri, mut wi) = inbound.split();
        let (mut ro, mut wo) = outbound.split();
        let (mut up, mut down) = (vec![0u8; 4096], vec![0u8; 4096]);
        let mut relayed = 0usize;
        loop {
            tokio::select! {
                n = ri.read(&mut up) => { let n = n.unwrap(); if n == 0 { break; } wo.write_all(&up[..n]).await.unwrap(); relayed += 1; }
                n = ro.read(&mut down) => { let n = n.unwrap(); if n == 0 { break; } wi.write_all(&down[..n]).await.unwrap(); }
            }
            if relayed >= 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    port
}

/// A TCP relay whose connections can all be cut at once (both sockets dropped: RST/EOF).
struct Cutter {
    port: u16,
    cut: Arc<tokio::sync::Notify>,
    cuts: Arc<std::sync::atomic::AtomicU64>,
}

impl Cutter {
    async fn start(target: u16) -> Cutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(tokio::sync::Notify::new());
        let cuts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (c, n) = (cut.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let (inbound, _) = listener.accept().await.unwrap();
                let (c, n) = (c.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = c.notified() => {
                            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Cutter { port, cut, cuts }
    }

    fn cut_all(&self) {
        self.cut.notify_waiters();
    }
}

/// An exactly-once session dialled through `relay`: the client's link and the server's end.
async fn session_through(srv: &Server, relay: &Cutter) -> (Link, Link) {
    let client = Link::open(
        "127.0.0.1",
        relay.port,
        Arc::new(Credentials::new(b"pw")),
        client_config(),
        policy(),
        Some(SessionConfig::default()),
    )
    .await
    .unwrap();
    match srv.accept().await.unwrap() {
        server::Accepted::Session(server_end) => (client, server_end),
        server::Accepted::Connection(_) => panic!("expected a session"),
    }
}

/// Poll `cond` until it holds (10 s at most): for states reached through real sockets.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn numbered(i: u32) -> Bytes {
    // Sizes vary (some messages span several frames) so cuts land mid-message too.
    let len = 4 + (i as usize * 7919) % 100_000;
    let mut v = vec![(i % 251) as u8; len];
    v[..4].copy_from_slice(&i.to_be_bytes());
    Bytes::from(v)
}

fn number_of(m: &[u8]) -> u32 {
    let i = u32::from_be_bytes(m[..4].try_into().unwrap());
    assert_eq!(m, &numbered(i)[..], "message {i} corrupted");
    i
}

/// Two connections over a loopback socket pair, with fixed keys (no handshake): the driver
/// alone. `acknowledged`: `a` carries an exactly-once session (its peer's ACKs are held).
async fn raw_pair(acknowledged: bool) -> (Connection, Connection) {
    use crate::core::record::{Opener, RekeyPolicy, Sealer};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dialled = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (dialled, accepted) = tokio::join!(dialled, listener.accept());
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    let p = RekeyPolicy::default();
    let max = crate::net::DEFAULT_MAX_MESSAGE;
    let side =
        |stream: tokio::net::TcpStream, send: [u8; 32], recv: [u8; 32], ack: bool, server: bool| {
            let (rd, wr) = stream.into_split();
            let est = crate::core::handshake::Established {
                send_key: send.into(),
                recv_key: recv.into(),
                peer_max_message: max,
                peer_limits: LinkConfig::default().limits(),
                peer_node_id: crate::core::handshake::NodeId::random(),
                handshake_hash: [0; 32],
            };
            let socket = connection::Socket {
                rd,
                wr,
                opener: Opener::new(&recv.into(), p, max, false),
                sealer: Sealer::new(&send.into(), p, max),
            };
            let start = connection::Start {
                acknowledged: ack,
                on_done: None,
                peer_identity: Default::default(),
                server,
            };
            Connection::spawn(socket, &est, 0, LinkConfig::default(), start).unwrap()
        };
    let a = side(dialled.unwrap(), k1, k2, acknowledged, false);
    let b = side(accepted.unwrap().0, k2, k1, false, true);
    (a, b)
}

/// A sender that waits for room through `arm_writable` (as the asyncio API does): rung, it
/// looks again and waits again while there is no room; `ready` once there is.
fn rearming(conn: Connection, len: usize, ready: Arc<std::sync::atomic::AtomicBool>) -> Wakeup {
    Arc::new(move || {
        let again = rearming(conn.clone(), len, ready.clone());
        if conn.arm_writable(1, len, again) {
            ready.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    })
}

const STUCK_LEN: usize = 20_000;

/// A client connection with a 64 KiB send budget whose writer is stuck on a full socket (the
/// server reads nothing more), and whose budget is taken by queued messages; with the server's
/// end, and how many messages the client sent.
async fn stuck_writer(srv: &Server) -> (Connection, Connection, usize) {
    let mut config = client_config();
    config.link.send_buffer = 64 << 10;
    let creds = Arc::new(Credentials::new(b"pw"));
    let port = srv.local_addr().port();
    let client = connect("127.0.0.1", port, &creds, &config, 0)
        .await
        .unwrap();
    let accepted = srv.accept().await.unwrap().connection();
    let msg = Bytes::from(vec![7u8; STUCK_LEN]);
    let mut sent = 0;
    while let Ok(r) =
        tokio::time::timeout(Duration::from_millis(300), client.send(msg.clone())).await
    {
        r.unwrap();
        sent += 1;
    }
    (client, accepted, sent)
}

async fn tiny_recv_buffer_server() -> Server {
    let source = ServerKeySource::Password(b"pw".to_vec().into(), FAST);
    let mut config = ServerConfig::default();
    config.link.recv_buffer = 1024;
    Server::bind("127.0.0.1", 0, source, config).await.unwrap()
}

async fn eventually(flag: &std::sync::atomic::AtomicBool) -> bool {
    for _ in 0..200 {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// How many registrations still hold `wakeup` (waiting a little for a ring in progress).
async fn left_registered(wakeup: &Wakeup) -> usize {
    for _ in 0..200 {
        if Arc::strong_count(wakeup) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Arc::strong_count(wakeup) - 1
}
