//! The handshake's messages: a plaintext hello and server parameters, then Noise `NNpsk0` keyed
//! by the PSK, with both plaintext messages as the Noise prologue so that any edit of them
//! breaks it.
//!
//! ```text
//! client → server  hello          "ALNK" version:u16 suite:u16 epoch_hint:u32          (12 bytes)
//! server → client  params         version:u16 suite:u16 salt[16] m:u32 t:u32 p:u32
//!                                 epoch:u32 server_node_id[16] other_epoch:u32          (56 bytes)
//! client → server  len:u16 msg1   -> psk, e   payload: client_node_id[16] max_message:u64
//! server → client  len:u16 msg2   <- e, ee    payload: max_message:u64 status:u8
//! client → server  first transport frame: CONFIRM (see frame.rs)
//! ```
//! Each state is its own type, so a message can only be processed in the state that expects it.

use std::fmt;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::core::cipher::KEY_LEN;
use crate::core::kdf::{KdfParams, Psk, Salt, SALT_LEN};
use crate::error::{Error, PeerMisbehaved, Result};

pub const MAGIC: [u8; 4] = *b"ALNK";
pub const PROTOCOL_VERSION: u16 = 1;
/// Suite 1: `Noise_NNpsk0_25519_AESGCM_SHA256` handshake, AES-256-GCM transport.
pub const SUITE_NNPSK0_25519_AESGCM_SHA256: u16 = 1;
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";

pub const HELLO_LEN: usize = 12;
pub const PARAMS_LEN: usize = 56;
pub const NODE_ID_LEN: usize = 16;
const DH_LEN: usize = 32;
const TAG_LEN: usize = 16;
const CLIENT_PAYLOAD_LEN: usize = NODE_ID_LEN + 8;
const SERVER_PAYLOAD_LEN: usize = 9;
/// Noise message 1: ephemeral key + encrypted payload.
pub const MSG1_LEN: usize = DH_LEN + CLIENT_PAYLOAD_LEN + TAG_LEN;
/// Noise message 2: ephemeral key + encrypted payload.
pub const MSG2_LEN: usize = DH_LEN + SERVER_PAYLOAD_LEN + TAG_LEN;

/// Identifies one node (a server and the clients it runs). Random unless configured; a node that
/// receives its own id from the other side is talking to itself and refuses.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    pub fn random() -> Self {
        let mut id = [0u8; NODE_ID_LEN];
        rand::rng().fill_bytes(&mut id);
        NodeId(id)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The client's opening bytes: which protocol and suite it speaks, and which key epoch of the
/// server it last authenticated under (0: none), so that during a password change's grace
/// window the server can offer the parameters of the key the client holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u16,
    pub suite: u16,
    pub epoch_hint: u32,
}

impl Default for ClientHello {
    fn default() -> Self {
        ClientHello {
            version: PROTOCOL_VERSION,
            suite: SUITE_NNPSK0_25519_AESGCM_SHA256,
            epoch_hint: 0,
        }
    }
}

/// What the server says in message 2 about the connection it just authenticated.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Accepted = 0,
    /// Authenticated, but the server is at `max_connections`.
    Busy = 1,
}

impl ClientHello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6..8].copy_from_slice(&self.suite.to_be_bytes());
        out[8..12].copy_from_slice(&self.epoch_hint.to_be_bytes());
        out
    }

    /// Parse and insist on what this build speaks.
    pub fn parse(bytes: &[u8; HELLO_LEN]) -> Result<Self> {
        if bytes[..4] != MAGIC {
            return Err(Error::Protocol(PeerMisbehaved::BadMagic));
        }
        let hello = ClientHello {
            version: u16::from_be_bytes([bytes[4], bytes[5]]),
            suite: u16::from_be_bytes([bytes[6], bytes[7]]),
            epoch_hint: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
        };
        let ours = ClientHello::default();
        if (hello.version, hello.suite) != (ours.version, ours.suite) {
            return Err(Error::Protocol(PeerMisbehaved::UnsupportedVersion {
                version: hello.version,
                suite: hello.suite,
            }));
        }
        Ok(hello)
    }
}

/// What the server tells every client before authentication: how to derive the key, and who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerParams {
    pub version: u16,
    pub suite: u16,
    pub salt: Salt,
    pub kdf: KdfParams,
    /// Bumped on every password change; lets clients tell a stale key from a wrong password.
    pub epoch: u32,
    pub node_id: NodeId,
    /// Another key epoch the server also accepts right now (during a password change's grace
    /// window), else 0: a client whose key fails under `epoch` may retry with this hint.
    pub other_epoch: u32,
}

impl ServerParams {
    pub fn new(salt: Salt, kdf: KdfParams, epoch: u32, node_id: NodeId, other_epoch: u32) -> Self {
        let hello = ClientHello::default();
        ServerParams {
            version: hello.version,
            suite: hello.suite,
            salt,
            kdf,
            epoch,
            node_id,
            other_epoch,
        }
    }

    pub fn encode(&self) -> [u8; PARAMS_LEN] {
        let mut out = [0u8; PARAMS_LEN];
        out[0..2].copy_from_slice(&self.version.to_be_bytes());
        out[2..4].copy_from_slice(&self.suite.to_be_bytes());
        out[4..20].copy_from_slice(&self.salt);
        out[20..24].copy_from_slice(&self.kdf.m_cost.to_be_bytes());
        out[24..28].copy_from_slice(&self.kdf.t_cost.to_be_bytes());
        out[28..32].copy_from_slice(&self.kdf.p_cost.to_be_bytes());
        out[32..36].copy_from_slice(&self.epoch.to_be_bytes());
        out[36..52].copy_from_slice(&self.node_id.0);
        out[52..56].copy_from_slice(&self.other_epoch.to_be_bytes());
        out
    }

    pub fn parse(bytes: &[u8; PARAMS_LEN]) -> Result<Self> {
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let (version, suite) = (u16_at(0), u16_at(2));
        let ours = ClientHello::default();
        if version != ours.version || suite != ours.suite {
            return Err(Error::Protocol(PeerMisbehaved::ServerVersion {
                version,
                suite,
                our_version: ours.version,
                our_suite: ours.suite,
            }));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[4..20]);
        let mut node = [0u8; NODE_ID_LEN];
        node.copy_from_slice(&bytes[36..52]);
        Ok(ServerParams {
            version,
            suite,
            salt,
            kdf: KdfParams {
                m_cost: u32_at(20),
                t_cost: u32_at(24),
                p_cost: u32_at(28),
            },
            epoch: u32_at(32),
            node_id: NodeId(node),
            other_epoch: u32_at(52),
        })
    }
}

/// Per-direction transport keys and what each side learned about the other.
pub struct Established {
    pub send_key: Zeroizing<[u8; KEY_LEN]>,
    pub recv_key: Zeroizing<[u8; KEY_LEN]>,
    /// The largest message the peer accepts; `send` refuses bigger ones locally.
    pub peer_max_message: u64,
    pub peer_node_id: NodeId,
    /// Noise handshake hash: a unique, public name for this session (channel binding).
    pub handshake_hash: [u8; 32],
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("peer_max_message", &self.peer_max_message)
            .field("peer_node_id", &self.peer_node_id)
            .finish_non_exhaustive()
    }
}

fn noise_builder<'a>(psk: &'a Psk, prologue: &'a [u8]) -> Result<snow::Builder<'a>> {
    let params = NOISE_PATTERN.parse().expect("valid Noise pattern");
    snow::Builder::new(params)
        .psk(0, psk.as_bytes())
        .and_then(|b| b.prologue(prologue))
        .map_err(|e| Error::Noise(format!("setup: {e}")))
}

fn prologue(hello: &[u8; HELLO_LEN], params: &[u8; PARAMS_LEN]) -> [u8; HELLO_LEN + PARAMS_LEN] {
    let mut p = [0u8; HELLO_LEN + PARAMS_LEN];
    p[..HELLO_LEN].copy_from_slice(hello);
    p[HELLO_LEN..].copy_from_slice(params);
    p
}

fn split(
    noise: &mut snow::HandshakeState,
    initiator: bool,
    peer_max_message: u64,
    peer_node_id: NodeId,
) -> Established {
    let (i_to_r, r_to_i) = noise.dangerously_get_raw_split();
    let (i_to_r, r_to_i) = (Zeroizing::new(i_to_r), Zeroizing::new(r_to_i));
    let (send_key, recv_key) = if initiator {
        (i_to_r, r_to_i)
    } else {
        (r_to_i, i_to_r)
    };
    let mut handshake_hash = [0u8; 32];
    handshake_hash.copy_from_slice(noise.get_handshake_hash());
    Established {
        send_key,
        recv_key,
        peer_max_message,
        peer_node_id,
        handshake_hash,
    }
}

/// Client, after the server's parameters: sends message 1 and waits for message 2.
pub struct ClientAwaitingReply {
    noise: snow::HandshakeState,
    server_node_id: NodeId,
}

impl ClientAwaitingReply {
    /// Build message 1. `params_bytes` must be the server parameters exactly as received.
    pub fn start(
        psk: &Psk,
        hello: &[u8; HELLO_LEN],
        params_bytes: &[u8; PARAMS_LEN],
        our_node: NodeId,
        our_max_message: u64,
    ) -> Result<(Self, [u8; MSG1_LEN])> {
        let params = ServerParams::parse(params_bytes)?;
        if params.node_id == our_node {
            return Err(Error::Protocol(PeerMisbehaved::DialedItself));
        }
        let pro = prologue(hello, params_bytes);
        let mut noise = noise_builder(psk, &pro)?
            .build_initiator()
            .map_err(|e| Error::Noise(e.to_string()))?;
        let mut payload = [0u8; CLIENT_PAYLOAD_LEN];
        payload[..NODE_ID_LEN].copy_from_slice(&our_node.0);
        payload[NODE_ID_LEN..].copy_from_slice(&our_max_message.to_be_bytes());
        let mut msg1 = [0u8; MSG1_LEN];
        let n = noise
            .write_message(&payload, &mut msg1)
            .map_err(|e| Error::Noise(e.to_string()))?;
        debug_assert_eq!(n, MSG1_LEN);
        Ok((
            ClientAwaitingReply {
                noise,
                server_node_id: params.node_id,
            },
            msg1,
        ))
    }

    /// Process message 2. Failure means the server does not hold our key.
    pub fn finish(mut self, msg2: &[u8]) -> Result<Established> {
        if msg2.len() != MSG2_LEN {
            return Err(Error::Protocol(PeerMisbehaved::MessageLength {
                what: "handshake reply",
                len: msg2.len(),
                expected: MSG2_LEN,
            }));
        }
        let mut payload = [0u8; MSG2_LEN];
        let n = self.noise.read_message(msg2, &mut payload).map_err(|_| {
            Error::Authentication(
                "the server could not prove it knows the password (its handshake reply failed)"
                    .into(),
            )
        })?;
        if n != SERVER_PAYLOAD_LEN {
            return Err(Error::Protocol(PeerMisbehaved::ReplyPayloadSize));
        }
        match payload[8] {
            0 => {}
            1 => {
                return Err(Error::Closed(crate::error::CloseInfo::error(
                    crate::error::CloseCode::BUSY,
                    "the server is at its connection limit (max_connections)",
                )))
            }
            other => return Err(Error::Protocol(PeerMisbehaved::UnknownAdmission(other))),
        }
        let peer_max = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
        Ok(split(&mut self.noise, true, peer_max, self.server_node_id))
    }
}

/// Server, after message 1 opened under the key: the client knows the password, or replays
/// someone's message 1 (only CONFIRM tells the two apart). Message 2 is built once the caller
/// knows whether there is room.
pub struct ServerAwaitingAdmission {
    noise: snow::HandshakeState,
    client_node: NodeId,
    peer_max_message: u64,
    our_max_message: u64,
}

impl ServerAwaitingAdmission {
    /// Open message 1. `params_bytes` must be the parameters exactly as sent.
    pub fn read(
        psk: &Psk,
        hello: &[u8; HELLO_LEN],
        params_bytes: &[u8; PARAMS_LEN],
        our_node: NodeId,
        our_max_message: u64,
        msg1: &[u8],
    ) -> Result<Self> {
        if msg1.len() != MSG1_LEN {
            return Err(Error::Protocol(PeerMisbehaved::MessageLength {
                what: "handshake message",
                len: msg1.len(),
                expected: MSG1_LEN,
            }));
        }
        let pro = prologue(hello, params_bytes);
        let mut noise = noise_builder(psk, &pro)?
            .build_responder()
            .map_err(|e| Error::Noise(e.to_string()))?;
        let mut payload = [0u8; MSG1_LEN];
        // With psk0 the payload is encrypted under a PSK-derived key: a wrong password fails
        // here, before the server does any Diffie-Hellman work.
        let n = noise
            .read_message(msg1, &mut payload)
            .map_err(|_| Error::Authentication("the client does not know the password".into()))?;
        if n != CLIENT_PAYLOAD_LEN {
            return Err(Error::Protocol(PeerMisbehaved::PayloadSize));
        }
        let client_node = NodeId(payload[..NODE_ID_LEN].try_into().expect("16 bytes"));
        if client_node == our_node {
            return Err(Error::Protocol(PeerMisbehaved::Reflected));
        }
        let peer_max_message =
            u64::from_be_bytes(payload[NODE_ID_LEN..n].try_into().expect("8 bytes"));
        Ok(ServerAwaitingAdmission {
            noise,
            client_node,
            peer_max_message,
            our_max_message,
        })
    }

    /// Build message 2. The connection is then established but unconfirmed: the server trusts
    /// it only once the client's first transport frame (CONFIRM) opens.
    pub fn reply(mut self, admission: Admission) -> Result<(Established, [u8; MSG2_LEN])> {
        let mut reply = [0u8; SERVER_PAYLOAD_LEN];
        reply[..8].copy_from_slice(&self.our_max_message.to_be_bytes());
        reply[8] = admission as u8;
        let mut msg2 = [0u8; MSG2_LEN];
        let n = self
            .noise
            .write_message(&reply, &mut msg2)
            .map_err(|e| Error::Noise(e.to_string()))?;
        debug_assert_eq!(n, MSG2_LEN);
        let est = split(
            &mut self.noise,
            false,
            self.peer_max_message,
            self.client_node,
        );
        Ok((est, msg2))
    }
}

/// Server: message 1 in, message 2 out, in one step ([`ServerAwaitingAdmission`] in two).
pub fn server_respond(
    psk: &Psk,
    hello: &[u8; HELLO_LEN],
    params_bytes: &[u8; PARAMS_LEN],
    our_node: NodeId,
    our_max_message: u64,
    msg1: &[u8],
    admission: Admission,
) -> Result<(Established, [u8; MSG2_LEN])> {
    ServerAwaitingAdmission::read(psk, hello, params_bytes, our_node, our_max_message, msg1)?
        .reply(admission)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::kdf::{derive_psk, random_salt};

    const FAST: KdfParams = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };

    struct Setup {
        psk: Psk,
        hello: [u8; HELLO_LEN],
        params: [u8; PARAMS_LEN],
        server_node: NodeId,
        client_node: NodeId,
    }

    fn setup(password: &[u8]) -> Setup {
        let salt = random_salt();
        let server_node = NodeId::random();
        Setup {
            psk: derive_psk(password, &salt, &FAST).unwrap(),
            hello: ClientHello::default().encode(),
            params: ServerParams::new(salt, FAST, 1, server_node, 0).encode(),
            server_node,
            client_node: NodeId::random(),
        }
    }

    fn run(s: &Setup, client_psk: &Psk) -> Result<(Established, Established)> {
        let (client, msg1) =
            ClientAwaitingReply::start(client_psk, &s.hello, &s.params, s.client_node, 1000)?;
        let (server, msg2) = server_respond(
            &s.psk,
            &s.hello,
            &s.params,
            s.server_node,
            2000,
            &msg1,
            Admission::Accepted,
        )?;
        Ok((client.finish(&msg2)?, server))
    }

    #[test]
    fn handshake_agrees_on_keys() {
        let s = setup(b"pw");
        let (c, srv) = run(&s, &s.psk).unwrap();
        assert_eq!(*c.send_key, *srv.recv_key);
        assert_eq!(*c.recv_key, *srv.send_key);
        assert_ne!(*c.send_key, *c.recv_key);
        assert_eq!(c.handshake_hash, srv.handshake_hash);
        assert_eq!((c.peer_max_message, srv.peer_max_message), (2000, 1000));
        assert_eq!(
            (c.peer_node_id, srv.peer_node_id),
            (s.server_node, s.client_node)
        );
    }

    #[test]
    fn fresh_keys_per_handshake() {
        let s = setup(b"pw");
        let (a, _) = run(&s, &s.psk).unwrap();
        let (b, _) = run(&s, &s.psk).unwrap();
        assert_ne!(*a.send_key, *b.send_key);
    }

    #[test]
    fn wrong_password_fails_at_the_server() {
        let s = setup(b"pw");
        let wrong = derive_psk(b"other", &[0; 16], &FAST).unwrap();
        let err = run(&s, &wrong).unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
    }

    #[test]
    fn server_without_the_password_fails_at_the_client() {
        let s = setup(b"pw");
        let (client, msg1) =
            ClientAwaitingReply::start(&s.psk, &s.hello, &s.params, s.client_node, 1).unwrap();
        // An impostor cannot read msg1; the best it can do is answer with its own Noise state.
        let impostor = derive_psk(b"guess", &[0; 16], &FAST).unwrap();
        let pro = prologue(&s.hello, &s.params);
        let mut noise = noise_builder(&impostor, &pro)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut buf = [0u8; 128];
        assert!(noise.read_message(&msg1, &mut buf).is_err());
        let mut fake = [0u8; MSG2_LEN];
        rand::rng().fill_bytes(&mut fake);
        assert!(matches!(
            client.finish(&fake),
            Err(Error::Authentication(_))
        ));
    }

    #[test]
    fn any_edit_of_hello_or_params_breaks_the_handshake() {
        let s = setup(b"pw");
        let truth = prologue(&s.hello, &s.params);
        for i in 0..truth.len() {
            let mut edited = truth;
            edited[i] ^= 0x01;
            let hello: [u8; HELLO_LEN] = edited[..HELLO_LEN].try_into().unwrap();
            let params: [u8; PARAMS_LEN] = edited[HELLO_LEN..].try_into().unwrap();
            // A man in the middle showed the client edited bytes; the server has the true ones.
            let client_fooled =
                ClientAwaitingReply::start(&s.psk, &hello, &params, s.client_node, 1).and_then(
                    |(_, m1)| {
                        server_respond(
                            &s.psk,
                            &s.hello,
                            &s.params,
                            s.server_node,
                            1,
                            &m1,
                            Admission::Accepted,
                        )
                    },
                );
            assert!(
                client_fooled.is_err(),
                "edit of byte {i} seen by the client went unnoticed"
            );
            // ... or showed the server edited bytes while the client has the true ones.
            let (_, m1) =
                ClientAwaitingReply::start(&s.psk, &s.hello, &s.params, s.client_node, 1).unwrap();
            let server_fooled = server_respond(
                &s.psk,
                &hello,
                &params,
                s.server_node,
                1,
                &m1,
                Admission::Accepted,
            );
            assert!(
                server_fooled.is_err(),
                "edit of byte {i} seen by the server went unnoticed"
            );
        }
    }

    #[test]
    fn reflection_is_refused_both_ways() {
        let s = setup(b"pw");
        let r = ClientAwaitingReply::start(&s.psk, &s.hello, &s.params, s.server_node, 1);
        assert!(matches!(
            r,
            Err(Error::Protocol(PeerMisbehaved::DialedItself))
        ));
        let (_, msg1) =
            ClientAwaitingReply::start(&s.psk, &s.hello, &s.params, s.client_node, 1).unwrap();
        let r = server_respond(
            &s.psk,
            &s.hello,
            &s.params,
            s.client_node,
            1,
            &msg1,
            Admission::Accepted,
        );
        assert!(r.is_err());
    }

    #[test]
    fn hello_and_params_parse() {
        assert!(ClientHello::parse(&ClientHello::default().encode()).is_ok());
        assert!(ClientHello::parse(b"HTTP/1.1 200").is_err());
        let v2 = ClientHello {
            version: 2,
            suite: 1,
            epoch_hint: 0,
        }
        .encode();
        assert!(ClientHello::parse(&v2).is_err());
        let p = ServerParams::new([3; 16], FAST, 7, NodeId([9; 16]), 6);
        assert_eq!(ServerParams::parse(&p.encode()).unwrap(), p);
    }
}
