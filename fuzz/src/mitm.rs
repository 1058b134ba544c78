//! `handshake_mitm`: the real client and server state machines run the whole handshake (hello,
//! parameters, message 1, message 2, CONFIRM) over two in-memory byte streams, fed exactly the
//! bytes they ask for as the I/O layer feeds them, while a man in the middle edits one of the
//! five messages: flips bits, truncates, inserts bytes, or replaces it.
//!
//! Invariants: no panic; without an edit the handshake succeeds with matching keys; whenever
//! both sides derive keys they are the same keys; after any real edit the server never accepts
//! the connection, and the client never completes unless the edit left every handshake message
//! it and the server read intact (CONFIRM edited, or bytes appended after message 1 or 2).

use argonlink::core::codec::FrameDecoder;
use argonlink::core::handshake::client::{ClientHandshake, ClientSetup, ClientStep};
use argonlink::core::handshake::server::{ServerHandshake, ServerSetup, ServerStep};
use argonlink::core::handshake::Identity;
use argonlink::core::handshake::{Admission, Established};
use argonlink::core::kdf::KdfBounds;
use argonlink::core::record::{Event, Opener, RekeyPolicy, Sealer};
use argonlink::{CloseCode, Error};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::handshake::{prs, server_params, CLIENT_NODE, SERVER_NODE};
use crate::Reader;

pub const SEGMENTS: [&str; 5] = ["hello", "params", "msg1", "msg2", "confirm"];
const CLIENT_MAX: u64 = 1 << 20;
const SERVER_MAX: u64 = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// XOR the byte at the offset.
    Xor = 0,
    /// Keep only the bytes before the offset.
    Truncate = 1,
    /// Insert the payload at the offset.
    Insert = 2,
    /// Send the payload instead.
    Replace = 3,
}

#[derive(Clone, Debug)]
pub struct Input {
    /// Which message is edited (index into `SEGMENTS`).
    pub segment: u8,
    pub edit: Edit,
    pub offset: u16,
    /// Bit 0: the server is busy; bit 1: it also offers another key epoch.
    pub flags: u8,
    pub epoch_hint: u8,
    pub payload: Vec<u8>,
}

impl Input {
    pub fn decode(data: &[u8]) -> Option<Input> {
        let mut r = Reader::new(data);
        let segment = r.u8()? % SEGMENTS.len() as u8;
        let edit = match r.u8()? % 4 {
            0 => Edit::Xor,
            1 => Edit::Truncate,
            2 => Edit::Insert,
            _ => Edit::Replace,
        };
        Some(Input {
            segment,
            edit,
            offset: r.u16()?,
            flags: r.u8()?,
            epoch_hint: r.u8()?,
            payload: r.rest().to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.segment, self.edit as u8];
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&[self.flags, self.epoch_hint]);
        out.extend_from_slice(&self.payload);
        out
    }

    /// The message as the man in the middle passes it on.
    fn apply(&self, segment: usize, msg: Vec<u8>) -> Vec<u8> {
        if segment != self.segment as usize {
            return msg;
        }
        let mut msg = msg;
        let at = self.offset as usize % (msg.len() + 1);
        match self.edit {
            Edit::Xor => {
                if let (Some(b), Some(x)) = (msg.get_mut(at), self.payload.first()) {
                    *b ^= x;
                }
            }
            Edit::Truncate => msg.truncate(at),
            Edit::Insert => {
                msg.splice(at..at, self.payload.iter().copied());
            }
            Edit::Replace => msg = self.payload.clone(),
        }
        msg
    }
}

/// One direction of the connection: bytes written, and how far the reader got.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    read: usize,
}

impl Stream {
    /// `None`: the bytes are not there, so the reader waits forever (its deadline ends it).
    fn read_exact(&mut self, n: usize) -> Option<&[u8]> {
        let got = self.bytes.get(self.read..self.read + n)?;
        self.read += n;
        Some(got)
    }

    fn rest(&mut self) -> &[u8] {
        let rest = &self.bytes[self.read..];
        self.read = self.bytes.len();
        rest
    }
}

/// What `feed` needs of each side's state machine.
trait Side {
    type Step: PartialEq;
    const NEED_INPUT: Self::Step;
    fn wants(&self, buffered: &[u8]) -> usize;
    fn handle_input(&mut self, buf: &mut BytesMut) -> Result<Self::Step, Error>;
}

impl Side for ClientHandshake {
    type Step = ClientStep;
    const NEED_INPUT: ClientStep = ClientStep::NeedInput;
    fn wants(&self, buffered: &[u8]) -> usize {
        ClientHandshake::wants(self, buffered)
    }
    fn handle_input(&mut self, buf: &mut BytesMut) -> Result<ClientStep, Error> {
        ClientHandshake::handle_input(self, buf)
    }
}

impl Side for ServerHandshake {
    type Step = ServerStep;
    const NEED_INPUT: ServerStep = ServerStep::NeedInput;
    fn wants(&self, buffered: &[u8]) -> usize {
        ServerHandshake::wants(self, buffered)
    }
    fn handle_input(&mut self, buf: &mut BytesMut) -> Result<ServerStep, Error> {
        ServerHandshake::handle_input(self, buf)
    }
}

/// Feed a side exactly the bytes it wants, the way the I/O layer does, until it asks for
/// something other than input: `None` if it waits for bytes that never come.
fn feed<S: Side>(stream: &mut Stream, side: &mut S) -> Option<Result<S::Step, Error>> {
    let mut buf = BytesMut::new();
    loop {
        match side.handle_input(&mut buf) {
            Ok(step) if step == S::NEED_INPUT => {
                let want = side.wants(&buf);
                buf.extend_from_slice(stream.read_exact(want)?);
            }
            other => return Some(other),
        }
    }
}

/// How far each side got.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Whether the man in the middle changed anything at all.
    pub edited: bool,
    /// The edit only appended bytes to the message.
    pub trailing: bool,
    pub client_keys: bool,
    pub server_keys: bool,
    /// The client finished the handshake and the server's stream to it ended cleanly.
    pub client_done: bool,
    /// The client was told the server is busy, by an authenticated message 2.
    pub client_busy: bool,
    /// The server opened CONFIRM and the rest of the client's stream cleanly.
    pub server_accepted: bool,
}

/// Decode the rest of a stream with a fresh decoder: its events, or `None` on any error.
fn decode_all(opener: Opener, bytes: &[u8]) -> Option<Vec<Event>> {
    let mut decoder = FrameDecoder { opener };
    let mut src = BytesMut::from(bytes);
    let mut events = Vec::new();
    loop {
        match decoder.decode_eof(&mut src) {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => return Some(events),
            Err(_) => return None,
        }
    }
}

/// Run the edited handshake up to where it fails, with the real state machines.
fn handshake(input: &Input, out: &mut Outcome) -> Option<(Established, Established)> {
    let policy = RekeyPolicy::default();
    let mut c2s = Stream::default();
    let mut s2c = Stream::default();
    let send = |stream: &mut Stream, segment: usize, msg: Vec<u8>, out: &mut Outcome| {
        let passed = input.apply(segment, msg.clone());
        out.edited |= passed != msg;
        out.trailing |= passed.len() > msg.len() && passed.starts_with(&msg);
        stream.bytes.extend_from_slice(&passed);
    };
    let mut client = ClientHandshake::new(ClientSetup {
        node_id: CLIENT_NODE,
        limits: limits(CLIENT_MAX),
        kdf_bounds: KdfBounds::default(),
        rekey: policy,
        epoch_hint: input.epoch_hint as u32,
        session: None,
        identity: Identity::new("fuzz").expect("a valid identity"),
    });
    let mut server = ServerHandshake::new(ServerSetup {
        node_id: SERVER_NODE,
        limits: limits(SERVER_MAX),
        rekey: policy,
    });
    let admission = if input.flags & 1 != 0 {
        Admission::Busy
    } else {
        Admission::Accepted
    };
    let failed_cleanly = |e: &Error| {
        assert!(
            matches!(e, Error::Authentication(_) | Error::Protocol(_)),
            "{e:?}"
        );
    };

    // Client: hello. Server: the key for its epoch hint, then its parameters.
    send(&mut c2s, 0, client.poll_transmit().to_vec(), out);
    let step = feed(&mut c2s, &mut server)?;
    let ServerStep::NeedKey { .. } = step.map_err(|e| failed_cleanly(&e)).ok()? else {
        panic!("a hello leads to the key");
    };
    let other_epoch = if input.flags & 2 != 0 { 2 } else { 0 };
    let params = server_params(other_epoch);
    server
        .offer(&prs(), &params.encode(), params.epoch)
        .unwrap();
    send(&mut s2c, 1, server.poll_transmit().to_vec(), out);

    // Client: the parameters, its key, message 1.
    let step = feed(&mut s2c, &mut client)?;
    let ClientStep::NeedKey(_) = step.map_err(|e| failed_cleanly(&e)).ok()? else {
        panic!("parameters lead to the key");
    };
    client.set_key(&prs(), false).ok()?;
    send(&mut c2s, 2, client.poll_transmit().to_vec(), out);

    // Server: message 1, admission, message 2.
    let step = feed(&mut c2s, &mut server)?;
    step.map_err(|e| failed_cleanly(&e)).ok()?;
    let admitted = server.admit(admission);
    out.server_keys = true;
    send(&mut s2c, 3, server.poll_transmit().to_vec(), out);

    // Client: message 2, then CONFIRM.
    let step = feed(&mut s2c, &mut client)?;
    match step {
        Ok(ClientStep::Done) => {}
        Ok(other) => panic!("message 2 leads to the end: {other:?}"),
        Err(Error::Closed(info)) => {
            assert_eq!(info.code, CloseCode::BUSY);
            assert_eq!(
                admission,
                Admission::Busy,
                "busy without the server saying so"
            );
            out.client_busy = true;
            return None;
        }
        Err(e) => {
            failed_cleanly(&e);
            return None;
        }
    }
    out.client_keys = true;
    send(&mut c2s, 4, client.poll_transmit().to_vec(), out);
    let client = client.finish().expect("done");
    // The server's stream must end here: anything more is a frame the client must open.
    out.client_done = decode_all(client.opener, s2c.rest()) == Some(vec![]);

    // Server: key confirmation, then the client's stream must end cleanly.
    admitted.ok()?;
    let step = feed(&mut c2s, &mut server)?;
    match step {
        Ok(ServerStep::Confirmed(None)) => {}
        Ok(other) => panic!("CONFIRM without a request: {other:?}"),
        Err(e) => {
            failed_cleanly(&e);
            return None;
        }
    }
    server.accept(None).unwrap();
    let server = server.finish().expect("done");
    out.server_accepted = decode_all(server.opener, c2s.rest()) == Some(vec![]);
    Some((client.established, server.established))
}

pub fn run(data: &[u8]) -> Outcome {
    let Some(input) = Input::decode(data) else {
        return Outcome::default();
    };
    let mut out = Outcome::default();
    if let Some((client, server)) = handshake(&input, &mut out) {
        // Both sides derived keys: they must be the same keys, for the same transcript.
        assert_eq!(*client.send_key, *server.recv_key, "keys differ");
        assert_eq!(*client.recv_key, *server.send_key, "keys differ");
        assert_eq!(client.handshake_hash, server.handshake_hash);
        assert_eq!(client.peer_node_id, SERVER_NODE);
        assert_eq!(server.peer_node_id, CLIENT_NODE);
        assert_eq!(client.peer_max_message, SERVER_MAX);
        assert_eq!(server.peer_max_message, CLIENT_MAX);
        // And they work: a message from the server opens at the client.
        let mut sealer = Sealer::new(&server.send_key, RekeyPolicy::default(), CLIENT_MAX);
        let mut wire = BytesMut::new();
        sealer.seal_message(b"established", &mut wire).unwrap();
        let opener = Opener::new(&client.recv_key, RekeyPolicy::default(), CLIENT_MAX, false);
        let events = decode_all(opener, &wire).expect("the session keys work");
        assert_eq!(
            events,
            vec![Event::Message {
                channel: 0,
                message: Bytes::from_static(b"established").into(),
                credit: 11 + 64,
            }]
        );
    }
    let busy = input.flags & 1 != 0;
    let segment = input.segment as usize;
    if !out.edited {
        assert!(out.client_done || (busy && out.client_busy), "{out:?}");
        assert_eq!(out.server_accepted, !busy, "{out:?}");
    } else if out.trailing && segment == 3 {
        // Bytes after message 2 are the server's first transport frame as far as the client
        // is concerned: the handshake itself stands, the client refuses that frame.
        assert!(out.client_keys || out.client_busy, "{out:?}");
        assert!(
            !out.client_done,
            "the client accepted bytes after message 2: {out:?}"
        );
        assert_eq!(out.server_accepted, !busy, "{out:?}");
    } else {
        assert!(
            !out.server_accepted,
            "the server accepted an edited handshake: {out:?}"
        );
        // Bytes appended to message 1 only delay CONFIRM (the server then refuses it): the
        // client cannot tell. Any other edit of the first four messages stops the client.
        if segment < 4 && !(segment == 2 && out.trailing) {
            assert!(
                !out.client_done && !out.client_busy,
                "the client completed an edited handshake: {out:?}"
            );
        }
    }
    out
}

fn limits(max_message: u64) -> argonlink::core::channel::Limits {
    argonlink::core::channel::Limits {
        max_message,
        ..argonlink::core::channel::Config::default().limits
    }
}
