//! The handshake's messages: a plaintext hello and server parameters carrying CPace's shares,
//! then Noise `NNpsk0` keyed by CPace's output, with every plaintext byte as the Noise prologue.
//!
//! ```text
//! client → server  hello     "ALNK" version:u16 suite:u16 epoch_hint:u32 nonce[16]
//!                            n:u8 identity[n]                                        (29 + n bytes)
//! server → client  params    version:u16 suite:u16 salt[16] m:u32 t:u32 p:u32 epoch:u32
//!                            server_node_id[16] other_epoch:u32 nonce[16] share[32]  (104 bytes)
//! client → server  len:u16   share[32] ‖ msg1: -> psk, e   payload: client_node_id[16] limits[20]
//! server → client  len:u16   msg2: <- e, ee                payload: limits[20] status:u8
//!
//! limits: max_message:u64 window:u32 channel_window:u32 max_channels:u32 (what the sender
//! accepts: see `channel::Limits`)
//! client → server  first transport frame: CONFIRM (see frame.rs)
//! ```
//! Each state is its own type, so a message can only be processed in the state that expects it.

use std::fmt;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::core::channel::{Limits, LIMITS_LEN};
use crate::core::cipher::KEY_LEN;
use crate::core::cpace::{self, SHARE_LEN};
use crate::core::kdf::{KdfParams, Prs, Salt, SALT_LEN};
use crate::error::{Error, PeerMisbehaved, Result};

pub const MAGIC: [u8; 4] = *b"ALNK";
pub const PROTOCOL_VERSION: u16 = 2;
/// Suite 1: CPACE-RISTR255-SHA512, then `Noise_NNpsk0_25519_AESGCM_SHA256`; AES-256-GCM
/// transport.
pub const SUITE_CPACE_NNPSK0: u16 = 1;
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// Domain separation of CI from any other use of CPace.
const CI_LABEL: &[u8] = b"argonlink/2";

pub const NONCE_LEN: usize = 16;
pub const MAX_IDENTITY_LEN: usize = 255;
/// The hello up to and including the identity's length byte.
pub const HELLO_FIXED_LEN: usize = 29;
pub const MAX_HELLO_LEN: usize = HELLO_FIXED_LEN + MAX_IDENTITY_LEN;
/// The parameters that belong to the server's key (the same on every connection).
pub const KEY_PARAMS_LEN: usize = 56;
/// The parameters CI covers: the key's, then the server nonce.
const CI_PARAMS_LEN: usize = KEY_PARAMS_LEN + NONCE_LEN;
pub const PARAMS_LEN: usize = CI_PARAMS_LEN + SHARE_LEN;
pub const NODE_ID_LEN: usize = 16;
const DH_LEN: usize = 32;
const TAG_LEN: usize = 16;
const CLIENT_PAYLOAD_LEN: usize = NODE_ID_LEN + LIMITS_LEN;
const SERVER_PAYLOAD_LEN: usize = LIMITS_LEN + 1;
const NOISE_MSG1_LEN: usize = DH_LEN + CLIENT_PAYLOAD_LEN + TAG_LEN;
/// Message 1: the client's CPace share, then Noise message 1 (ephemeral key + payload).
pub const MSG1_LEN: usize = SHARE_LEN + NOISE_MSG1_LEN;
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

/// The name a client gives itself in the hello, which picks its password on the server: 0 to
/// 255 bytes of printable ASCII without spaces (empty: anonymous). Safe to log as it is.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);

impl Identity {
    pub fn new(name: &str) -> Result<Self> {
        Identity::check(name.as_bytes())
            .map(|()| Identity(name.to_owned()))
            .map_err(|_| {
                Error::config(format!(
                    "an identity is at most {MAX_IDENTITY_LEN} printable ASCII characters \
                     without spaces (0x21-0x7e)"
                ))
            })
    }

    fn check(bytes: &[u8]) -> Result<()> {
        if bytes.len() > MAX_IDENTITY_LEN || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(Error::Protocol(PeerMisbehaved::BadIdentity));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_anonymous(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:?})", self.0)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's opening bytes: which protocol and suite it speaks, which key epoch of the
/// server it last authenticated under (0: none), so that during a password change's grace
/// window the server can offer the parameters of the key the client holds, its nonce, and
/// its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u16,
    pub suite: u16,
    pub epoch_hint: u32,
    pub nonce: [u8; NONCE_LEN],
    pub identity: Identity,
}

impl ClientHello {
    /// A hello with a fresh nonce.
    pub fn new(epoch_hint: u32, identity: Identity) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        ClientHello {
            version: PROTOCOL_VERSION,
            suite: SUITE_CPACE_NNPSK0,
            epoch_hint,
            nonce,
            identity,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let id = self.identity.as_str().as_bytes();
        let mut out = Vec::with_capacity(HELLO_FIXED_LEN + id.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.suite.to_be_bytes());
        out.extend_from_slice(&self.epoch_hint.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out
    }

    /// Bytes still missing for the whole hello, given the buffered ones: the fixed part says
    /// how long the identity is.
    pub fn wants(buffered: &[u8]) -> usize {
        match buffered.get(HELLO_FIXED_LEN - 1) {
            None => HELLO_FIXED_LEN - buffered.len(),
            Some(&n) => (HELLO_FIXED_LEN + n as usize).saturating_sub(buffered.len()),
        }
    }

    /// Insist on the magic, version and suite this build speaks, given at least the hello's
    /// first 8 bytes.
    pub fn check_prefix(bytes: &[u8]) -> Result<(u16, u16)> {
        if bytes.len() < 8 || bytes[..4] != MAGIC {
            return Err(Error::Protocol(PeerMisbehaved::BadMagic));
        }
        let (version, suite) = (
            u16::from_be_bytes([bytes[4], bytes[5]]),
            u16::from_be_bytes([bytes[6], bytes[7]]),
        );
        if (version, suite) != (PROTOCOL_VERSION, SUITE_CPACE_NNPSK0) {
            return Err(Error::Protocol(PeerMisbehaved::UnsupportedVersion {
                version,
                suite,
            }));
        }
        Ok((version, suite))
    }

    /// Parse a whole hello (exactly [`Self::wants`] bytes) and insist on what this build
    /// speaks.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let (version, suite) = Self::check_prefix(bytes)?;
        let expected = bytes
            .get(HELLO_FIXED_LEN - 1)
            .map_or(HELLO_FIXED_LEN, |&n| HELLO_FIXED_LEN + n as usize);
        if bytes.len() != expected {
            return Err(Error::Protocol(PeerMisbehaved::MessageLength {
                what: "hello",
                len: bytes.len(),
                expected,
            }));
        }
        let id = &bytes[HELLO_FIXED_LEN..];
        Identity::check(id)?;
        Ok(ClientHello {
            version,
            suite,
            epoch_hint: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
            nonce: bytes[12..28].try_into().expect("16 bytes"),
            identity: Identity(String::from_utf8(id.to_vec()).expect("checked ASCII")),
        })
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

/// What the server tells every client before authentication about the key it offers: how to
/// derive it, and who the server is. The parameters message adds a nonce and a CPace share.
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
        ServerParams {
            version: PROTOCOL_VERSION,
            suite: SUITE_CPACE_NNPSK0,
            salt,
            kdf,
            epoch,
            node_id,
            other_epoch,
        }
    }

    /// The key's part of the parameters message (its first 56 bytes).
    pub fn encode(&self) -> [u8; KEY_PARAMS_LEN] {
        let mut out = [0u8; KEY_PARAMS_LEN];
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

    /// Parse a whole parameters message: the key's part, and a share that must be a valid
    /// element (checked now, before the client spends an Argon2 run on it).
    pub fn parse(bytes: &[u8; PARAMS_LEN]) -> Result<Self> {
        let params = Self::parse_key(bytes)?;
        if !cpace::is_valid_share(share_of(bytes)) {
            return Err(Error::Protocol(PeerMisbehaved::BadShare));
        }
        Ok(params)
    }

    /// The key's part alone (the share is judged when CPace uses it).
    fn parse_key(bytes: &[u8; PARAMS_LEN]) -> Result<Self> {
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let (version, suite) = (u16_at(0), u16_at(2));
        if version != PROTOCOL_VERSION || suite != SUITE_CPACE_NNPSK0 {
            return Err(Error::Protocol(PeerMisbehaved::ServerVersion {
                version,
                suite,
                our_version: PROTOCOL_VERSION,
                our_suite: SUITE_CPACE_NNPSK0,
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

fn share_of(params: &[u8; PARAMS_LEN]) -> &[u8; SHARE_LEN] {
    params[CI_PARAMS_LEN..].try_into().expect("32 bytes")
}

/// Per-direction transport keys and what each side learned about the other.
pub struct Established {
    pub send_key: Zeroizing<[u8; KEY_LEN]>,
    pub recv_key: Zeroizing<[u8; KEY_LEN]>,
    /// The largest message the peer accepts; `send` refuses bigger ones locally.
    pub peer_max_message: u64,
    /// What the peer accepts on channels (its `max_message` is `peer_max_message`).
    pub peer_limits: Limits,
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

/// CPace's inputs other than the PRS, from the bytes both sides saw: CI binds the whole hello
/// (the client's identity among it) and the parameters before the share (the server's node
/// id, the key's salt, costs and epoch); sid is both nonces.
fn cpace_inputs(hello: &[u8], params: &[u8; PARAMS_LEN]) -> (Vec<u8>, [u8; 2 * NONCE_LEN]) {
    let ci = cpace::lv_cat(&[CI_LABEL, hello, &params[..CI_PARAMS_LEN]]);
    let mut sid = [0u8; 2 * NONCE_LEN];
    sid[..NONCE_LEN].copy_from_slice(&hello[12..28]);
    sid[NONCE_LEN..].copy_from_slice(&params[KEY_PARAMS_LEN..CI_PARAMS_LEN]);
    (ci, sid)
}

/// The Noise handshake keyed by the first 32 bytes of ISK, with every plaintext byte of the
/// handshake (hello, parameters, the client's share) as the prologue.
fn noise_builder_for(
    isk: &cpace::Isk,
    hello: &[u8],
    params: &[u8; PARAMS_LEN],
    client_share: &[u8; SHARE_LEN],
    initiator: bool,
) -> Result<snow::HandshakeState> {
    let mut prologue = Vec::with_capacity(hello.len() + PARAMS_LEN + SHARE_LEN);
    prologue.extend_from_slice(hello);
    prologue.extend_from_slice(params);
    prologue.extend_from_slice(client_share);
    let params = NOISE_PATTERN.parse().expect("valid Noise pattern");
    let builder = snow::Builder::new(params)
        .psk(0, isk.as_bytes()[..32].try_into().expect("32 bytes"))
        .and_then(|b| b.prologue(&prologue))
        .map_err(|e| Error::Noise(format!("setup: {e}")))?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(|e| Error::Noise(e.to_string()))
}

fn split(
    noise: &mut snow::HandshakeState,
    initiator: bool,
    peer_limits: Limits,
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
        peer_max_message: peer_limits.max_message,
        peer_limits,
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
    /// Run CPace against the server's share and build message 1. `hello` and `params_bytes`
    /// must be exactly as sent and received.
    pub fn start(
        prs: &Prs,
        hello: &[u8],
        params_bytes: &[u8; PARAMS_LEN],
        our_node: NodeId,
        ours: Limits,
    ) -> Result<(Self, [u8; MSG1_LEN])> {
        // The share was checked with the rest when the parameters arrived, and CPace's own
        // decoding below refuses it again if not: no third decoding here.
        let params = ServerParams::parse_key(params_bytes)?;
        if params.node_id == our_node {
            return Err(Error::Protocol(PeerMisbehaved::DialedItself));
        }
        let (ci, sid) = cpace_inputs(hello, params_bytes);
        let run = cpace::Run::start(prs.as_bytes(), &ci, &sid);
        let our_share = *run.share();
        // We are CPace's responder B: the server's share comes first in the transcript.
        let isk = run
            .finish(share_of(params_bytes), false, b"", b"")
            .map_err(|_| Error::Protocol(PeerMisbehaved::BadShare))?;
        let mut noise = noise_builder_for(&isk, hello, params_bytes, &our_share, true)?;
        let mut payload = [0u8; CLIENT_PAYLOAD_LEN];
        payload[..NODE_ID_LEN].copy_from_slice(&our_node.0);
        payload[NODE_ID_LEN..].copy_from_slice(&ours.encode());
        let mut msg1 = [0u8; MSG1_LEN];
        msg1[..SHARE_LEN].copy_from_slice(&our_share);
        let n = noise
            .write_message(&payload, &mut msg1[SHARE_LEN..])
            .map_err(|e| Error::Noise(e.to_string()))?;
        debug_assert_eq!(n, NOISE_MSG1_LEN);
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
        match payload[LIMITS_LEN] {
            0 => {}
            1 => {
                return Err(Error::Closed(crate::error::CloseInfo::error(
                    crate::error::CloseCode::BUSY,
                    "the server is at its connection limit (max_connections)",
                )))
            }
            other => return Err(Error::Protocol(PeerMisbehaved::UnknownAdmission(other))),
        }
        let peer = Limits::decode(payload[..LIMITS_LEN].try_into().expect("20 bytes"))?;
        Ok(split(&mut self.noise, true, peer, self.server_node_id))
    }
}

/// Server, after the hello: its CPace run started and its parameters built, for the key it
/// offers; waits for message 1.
pub struct ServerAwaitingMessage1 {
    hello: Vec<u8>,
    params: [u8; PARAMS_LEN],
    run: cpace::Run,
}

impl ServerAwaitingMessage1 {
    /// Start CPace for this connection (a fresh nonce and scalar) under the key `prs` whose
    /// parameters are `key_params`; gives the parameters message to send.
    pub fn offer(
        prs: &Prs,
        hello: &[u8],
        key_params: &[u8; KEY_PARAMS_LEN],
    ) -> (Self, [u8; PARAMS_LEN]) {
        let mut params = [0u8; PARAMS_LEN];
        params[..KEY_PARAMS_LEN].copy_from_slice(key_params);
        rand::rng().fill_bytes(&mut params[KEY_PARAMS_LEN..CI_PARAMS_LEN]);
        let (ci, sid) = cpace_inputs(hello, &params);
        let run = cpace::Run::start(prs.as_bytes(), &ci, &sid);
        params[CI_PARAMS_LEN..].copy_from_slice(run.share());
        let me = ServerAwaitingMessage1 {
            hello: hello.to_vec(),
            params,
            run,
        };
        (me, params)
    }

    /// Open message 1: finish CPace with the client's share, then read Noise message 1 under
    /// the key it gave. A client without the password (or a replay: our share is new) fails
    /// here, and is told nothing.
    pub fn read(
        self,
        our_node: NodeId,
        ours: Limits,
        msg1: &[u8],
    ) -> Result<ServerAwaitingAdmission> {
        if msg1.len() != MSG1_LEN {
            return Err(Error::Protocol(PeerMisbehaved::MessageLength {
                what: "handshake message",
                len: msg1.len(),
                expected: MSG1_LEN,
            }));
        }
        let refused = || Error::Authentication("the client does not know the password".into());
        let client_share: &[u8; SHARE_LEN] = msg1[..SHARE_LEN].try_into().expect("32 bytes");
        // We are CPace's initiator A: our share comes first in the transcript.
        let isk = self
            .run
            .finish(client_share, true, b"", b"")
            .map_err(|_| refused())?;
        let mut noise = noise_builder_for(&isk, &self.hello, &self.params, client_share, false)?;
        let mut payload = [0u8; NOISE_MSG1_LEN];
        let n = noise
            .read_message(&msg1[SHARE_LEN..], &mut payload)
            .map_err(|_| refused())?;
        if n != CLIENT_PAYLOAD_LEN {
            return Err(Error::Protocol(PeerMisbehaved::PayloadSize));
        }
        let client_node = NodeId(payload[..NODE_ID_LEN].try_into().expect("16 bytes"));
        if client_node == our_node {
            return Err(Error::Protocol(PeerMisbehaved::Reflected));
        }
        let peer = Limits::decode(payload[NODE_ID_LEN..n].try_into().expect("20 bytes"))?;
        Ok(ServerAwaitingAdmission {
            noise,
            client_node,
            peer,
            ours,
        })
    }
}

/// Server, after message 1 opened: the client ran CPace with the right password against this
/// connection's share. Message 2 is built once the caller knows whether there is room.
pub struct ServerAwaitingAdmission {
    noise: snow::HandshakeState,
    client_node: NodeId,
    peer: Limits,
    ours: Limits,
}

impl ServerAwaitingAdmission {
    /// Build message 2. The connection is then established but unconfirmed: the server trusts
    /// it only once the client's first transport frame (CONFIRM) opens.
    pub fn reply(mut self, admission: Admission) -> Result<(Established, [u8; MSG2_LEN])> {
        let mut reply = [0u8; SERVER_PAYLOAD_LEN];
        reply[..LIMITS_LEN].copy_from_slice(&self.ours.encode());
        reply[LIMITS_LEN] = admission as u8;
        let mut msg2 = [0u8; MSG2_LEN];
        let n = self
            .noise
            .write_message(&reply, &mut msg2)
            .map_err(|e| Error::Noise(e.to_string()))?;
        debug_assert_eq!(n, MSG2_LEN);
        let est = split(&mut self.noise, false, self.peer, self.client_node);
        Ok((est, msg2))
    }
}

/// Server: message 1 in, message 2 out, in one step.
pub fn server_respond(
    offered: ServerAwaitingMessage1,
    our_node: NodeId,
    ours: Limits,
    msg1: &[u8],
    admission: Admission,
) -> Result<(Established, [u8; MSG2_LEN])> {
    offered.read(our_node, ours, msg1)?.reply(admission)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::kdf::{derive_prs, random_salt};

    fn limits(max_message: u64) -> Limits {
        Limits {
            max_message,
            ..crate::core::channel::Config::default().limits
        }
    }

    const FAST: KdfParams = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };

    struct Setup {
        prs: Prs,
        hello: Vec<u8>,
        key_params: [u8; KEY_PARAMS_LEN],
        server_node: NodeId,
        client_node: NodeId,
    }

    fn setup(password: &[u8], identity: &str) -> Setup {
        let salt = random_salt();
        let server_node = NodeId::random();
        Setup {
            prs: derive_prs(password, &salt, &FAST).unwrap(),
            hello: ClientHello::new(0, Identity::new(identity).unwrap()).encode(),
            key_params: ServerParams::new(salt, FAST, 1, server_node, 0).encode(),
            server_node,
            client_node: NodeId::random(),
        }
    }

    /// The server offers under `server_prs` for the hello it saw; the client answers under
    /// `client_prs` for the hello it sent and the parameters it saw.
    fn run_seen(
        s: &Setup,
        client_prs: &Prs,
        hello_seen_by_server: &[u8],
        edit_params: impl FnOnce(&mut [u8; PARAMS_LEN]),
    ) -> Result<(Established, Established)> {
        let (offered, mut params) =
            ServerAwaitingMessage1::offer(&s.prs, hello_seen_by_server, &s.key_params);
        edit_params(&mut params);
        let (client, msg1) =
            ClientAwaitingReply::start(client_prs, &s.hello, &params, s.client_node, limits(1000))?;
        let (server, msg2) = server_respond(
            offered,
            s.server_node,
            limits(2000),
            &msg1,
            Admission::Accepted,
        )?;
        Ok((client.finish(&msg2)?, server))
    }

    fn run(s: &Setup, client_prs: &Prs) -> Result<(Established, Established)> {
        run_seen(s, client_prs, &s.hello, |_| {})
    }

    #[test]
    fn limits_below_the_minimum_are_refused() {
        // M29: a window under a frame's worth could never carry a full fragment.
        let s = setup(b"pw", "db-1");
        for (window, channel_window) in [(1023, 256 << 10), (1 << 20, (128 << 10) - 1)] {
            let small = Limits {
                window,
                channel_window,
                ..limits(1000)
            };
            let (offered, params) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
            let (client, msg1) =
                ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.client_node, small)
                    .unwrap();
            let err = offered
                .read(s.server_node, limits(2000), &msg1)
                .err()
                .unwrap();
            assert!(
                matches!(err, Error::Protocol(PeerMisbehaved::LimitsTooSmall { .. })),
                "{err:?}"
            );
            // And a server announcing them fails the client the same way.
            let (offered, params) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
            let (client2, msg1) =
                ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.client_node, limits(1))
                    .unwrap();
            let (_, msg2) =
                server_respond(offered, s.server_node, small, &msg1, Admission::Accepted).unwrap();
            assert!(matches!(
                client2.finish(&msg2),
                Err(Error::Protocol(PeerMisbehaved::LimitsTooSmall { .. }))
            ));
            drop(client);
        }
    }

    #[test]
    fn handshake_agrees_on_keys() {
        let s = setup(b"pw", "db-1");
        let (c, srv) = run(&s, &s.prs).unwrap();
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
        let s = setup(b"pw", "");
        let (a, _) = run(&s, &s.prs).unwrap();
        let (b, _) = run(&s, &s.prs).unwrap();
        assert_ne!(*a.send_key, *b.send_key);
    }

    #[test]
    fn wrong_password_fails_at_the_server() {
        let s = setup(b"pw", "");
        let wrong = derive_prs(b"other", &[0; 16], &FAST).unwrap();
        let err = run(&s, &wrong).unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
    }

    #[test]
    fn a_replayed_message1_fails_against_a_new_share() {
        let s = setup(b"pw", "");
        let (_, params) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
        let (_, msg1) =
            ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.client_node, limits(1))
                .unwrap();
        // The same hello again: the server's nonce and share are new, so the old message 1
        // opens under nothing the server holds.
        let (offered, _) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
        let err = offered.read(s.server_node, limits(1), &msg1).err().unwrap();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
    }

    #[test]
    fn server_without_the_password_fails_at_the_client() {
        let s = setup(b"pw", "");
        // An impostor offers under its guess; the client cannot tell until message 2.
        let guess = derive_prs(b"guess", &s.key_params[4..20].try_into().unwrap(), &FAST).unwrap();
        let (impostor, params) = ServerAwaitingMessage1::offer(&guess, &s.hello, &s.key_params);
        let (client, msg1) =
            ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.client_node, limits(1))
                .unwrap();
        assert!(impostor.read(s.server_node, limits(1), &msg1).is_err());
        let mut fake = [0u8; MSG2_LEN];
        rand::rng().fill_bytes(&mut fake);
        assert!(matches!(
            client.finish(&fake),
            Err(Error::Authentication(_))
        ));
    }

    #[test]
    fn any_edit_of_hello_or_params_breaks_the_handshake() {
        let s = setup(b"pw", "edge-7");
        assert!(run(&s, &s.prs).is_ok());
        // A man in the middle showed the server an edited hello (the client has its own).
        for i in 0..s.hello.len() {
            let mut edited = s.hello.clone();
            edited[i] ^= 0x01;
            assert!(
                run_seen(&s, &s.prs, &edited, |_| {}).is_err(),
                "edit of hello byte {i} went unnoticed"
            );
        }
        // ... or showed the client edited parameters (the server has the ones it sent).
        for i in 0..PARAMS_LEN {
            assert!(
                run_seen(&s, &s.prs, &s.hello, |p| p[i] ^= 0x01).is_err(),
                "edit of parameter byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn any_edit_of_the_client_share_fails_at_the_server() {
        let s = setup(b"pw", "");
        for i in 0..SHARE_LEN {
            let (offered, params) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
            let (_, mut msg1) =
                ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.client_node, limits(1))
                    .unwrap();
            msg1[i] ^= 0x01;
            let err = offered.read(s.server_node, limits(1), &msg1).err().unwrap();
            assert!(matches!(err, Error::Authentication(_)), "byte {i}: {err}");
        }
    }

    #[test]
    fn the_identity_is_bound_to_the_password_run() {
        // The client named "a"; a server that sees "b" (swapped in transit, same length or
        // not) runs CPace with other inputs, even under the same password.
        let s = setup(b"pw", "a");
        for other in ["b", "ab", ""] {
            let mut seen = s.hello.clone();
            seen.truncate(HELLO_FIXED_LEN - 1);
            seen.push(other.len() as u8);
            seen.extend_from_slice(other.as_bytes());
            assert!(ClientHello::parse(&seen).is_ok());
            let err = run_seen(&s, &s.prs, &seen, |_| {}).unwrap_err();
            assert!(matches!(err, Error::Authentication(_)), "{other:?}: {err}");
        }
    }

    #[test]
    fn reflection_is_refused_both_ways() {
        let s = setup(b"pw", "");
        let (_, params) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
        let r = ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.server_node, limits(1));
        assert!(matches!(
            r,
            Err(Error::Protocol(PeerMisbehaved::DialedItself))
        ));
        let (offered, params) = ServerAwaitingMessage1::offer(&s.prs, &s.hello, &s.key_params);
        let (_, msg1) =
            ClientAwaitingReply::start(&s.prs, &s.hello, &params, s.client_node, limits(1))
                .unwrap();
        let r = offered.read(s.client_node, limits(1), &msg1);
        assert!(matches!(r, Err(Error::Protocol(PeerMisbehaved::Reflected))));
    }

    #[test]
    fn hello_and_params_parse() {
        let hello = ClientHello::new(7, Identity::new("db-1.eu").unwrap());
        let bytes = hello.encode();
        assert_eq!(bytes.len(), HELLO_FIXED_LEN + 7);
        assert_eq!(ClientHello::wants(&bytes[..3]), HELLO_FIXED_LEN - 3);
        assert_eq!(ClientHello::wants(&bytes[..HELLO_FIXED_LEN]), 7);
        assert_eq!(ClientHello::wants(&bytes), 0);
        assert_eq!(ClientHello::parse(&bytes).unwrap(), hello);
        assert!(ClientHello::parse(b"HTTP/1.1 200 OK\r\n....................").is_err());
        let mut v1 = bytes.clone();
        v1[5] = 1;
        assert!(matches!(
            ClientHello::parse(&v1),
            Err(Error::Protocol(PeerMisbehaved::UnsupportedVersion {
                version: 1,
                ..
            }))
        ));
        for bad in [b' ', b'\n', 0x7f, 0xc3] {
            let mut b = bytes.clone();
            b[HELLO_FIXED_LEN + 2] = bad;
            assert!(matches!(
                ClientHello::parse(&b),
                Err(Error::Protocol(PeerMisbehaved::BadIdentity))
            ));
        }
        assert!(Identity::new("with space").is_err());
        assert!(Identity::new(&"x".repeat(256)).is_err());
        assert!(Identity::new(&"x".repeat(255)).is_ok());
        let p = ServerParams::new([3; 16], FAST, 7, NodeId([9; 16]), 6);
        let prs = derive_prs(b"pw", &[3; 16], &FAST).unwrap();
        let (_, params) = ServerAwaitingMessage1::offer(&prs, &bytes, &p.encode());
        assert_eq!(ServerParams::parse(&params).unwrap(), p);
        // A share that is not an element (or is the identity) is refused before any work.
        for share in [[0u8; 32], [0xff; 32]] {
            let mut bad = params;
            bad[CI_PARAMS_LEN..].copy_from_slice(&share);
            assert!(matches!(
                ServerParams::parse(&bad),
                Err(Error::Protocol(PeerMisbehaved::BadShare))
            ));
        }
    }
}
