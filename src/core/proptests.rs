//! Property tests over a whole session: a real handshake between the client and server states,
//! then transport frames both ways (messages of many sizes, several of them fragmented, rekeys
//! between and inside messages, a PING, a CLOSE), passed through a man in the middle who flips
//! one bit or cuts one direction's byte stream.
//!
//! The handshake draws fresh ephemeral keys on every run, so the bytes differ from run to run,
//! but their layout (where each message and frame starts and ends) does not: a position in the
//! recorded streams names the same byte of the same frame in every run.
//!
//! Properties:
//! - a flipped bit anywhere (handshake included) is refused by the side that reads it: that side
//!   ends in an error, delivers exactly the messages that ended before the flipped byte,
//!   byte-identical, and nothing after it;
//! - a cut stream delivers exactly the messages that ended before the cut, byte-identical, and
//!   never the CLOSE: the truncation is visible;
//! - the direction that was not touched is delivered whole, unless the handshake failed, in
//!   which case neither side delivers anything.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::{Decoder, Encoder};

use super::codec::{FrameDecoder, FrameEncoder, Outgoing};
use super::handshake::{
    server_respond, Admission, ClientAwaitingReply, ClientHello, Identity, NodeId,
    ServerAwaitingMessage1, ServerParams, MSG1_LEN, MSG2_LEN, PARAMS_LEN,
};
use super::kdf::{KdfParams, Prs};
use super::record::{Event, Opener, RekeyPolicy, Sealer, MAX_CHUNK};

const CLIENT_NODE: NodeId = NodeId([0xc1; 16]);
const SERVER_NODE: NodeId = NodeId([0x5e; 16]);
const MAX_MESSAGE: u64 = 1 << 20;

/// Rekey after every fourth frame: with the scripts below REKEY lands between messages and
/// between the fragments of a message.
fn policy() -> RekeyPolicy {
    RekeyPolicy {
        frames: 4,
        ..RekeyPolicy::default()
    }
}

fn message(seed: usize, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(97) ^ (i >> 8)) as u8)
        .collect()
}

/// What each side sends once the handshake is done.
fn script(client: bool) -> Vec<Outgoing> {
    let lens: &[usize] = if client {
        &[
            0,
            1,
            1000,
            MAX_CHUNK - 8,
            MAX_CHUNK,
            MAX_CHUNK + 1,
            2 * MAX_CHUNK + 100,
            7,
        ]
    } else {
        &[3, MAX_CHUNK + 5, 0]
    };
    let mut out = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        out.push(Outgoing::Message(message(i + client as usize * 100, len)));
        if i == 2 {
            out.push(Outgoing::Ping(42));
        }
    }
    out.push(Outgoing::Close {
        code: 1000,
        reason: "done".into(),
    });
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// What the man in the middle does.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Nothing,
    Flip { dir: Dir, at: usize, bit: u8 },
    Cut { dir: Dir, at: usize },
}

/// One direction's byte stream, its layout, and the reader's position in it.
#[derive(Default)]
struct Pipe {
    bytes: Vec<u8>,
    read: usize,
    /// Where the handshake messages and transport frames start, in order.
    segments: Vec<usize>,
    /// Where the handshake ends (the first transport frame starts).
    handshake_end: usize,
    /// The messages sent, each with the stream offset where its last frame ends.
    sent: Vec<(Bytes, usize)>,
    flip: Option<(usize, u8)>,
    cut: Option<usize>,
}

impl Pipe {
    fn new(dir: Dir, tamper: Tamper) -> Self {
        let mut pipe = Pipe::default();
        match tamper {
            Tamper::Flip { dir: d, at, bit } if d == dir => pipe.flip = Some((at, bit)),
            Tamper::Cut { dir: d, at } if d == dir => pipe.cut = Some(at),
            _ => {}
        }
        pipe
    }

    /// Write one handshake message or transport frame.
    fn write(&mut self, segment: &[u8]) {
        let start = self.bytes.len();
        self.segments.push(start);
        self.bytes.extend_from_slice(segment);
        if let Some((at, bit)) = self.flip {
            if (start..self.bytes.len()).contains(&at) {
                self.bytes[at] ^= 1 << bit;
            }
        }
    }

    /// Write transport frames, one segment per length-prefixed frame.
    fn write_frames(&mut self, mut frames: &[u8]) {
        while frames.len() >= 2 {
            let len = 2 + u16::from_be_bytes([frames[0], frames[1]]) as usize;
            self.write(&frames[..len]);
            frames = &frames[len..];
        }
        assert!(frames.is_empty());
    }

    fn visible(&self) -> usize {
        self.cut
            .map_or(self.bytes.len(), |c| c.min(self.bytes.len()))
    }

    /// `None`: the bytes never arrive (the reader's deadline ends the connection).
    fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.read + n > self.visible() {
            return None;
        }
        self.read += n;
        Some(self.bytes[self.read - n..self.read].to_vec())
    }

    fn read_framed(&mut self, expect: usize) -> Option<Vec<u8>> {
        let len = self.read_exact(2)?;
        if u16::from_be_bytes([len[0], len[1]]) as usize != expect {
            return None;
        }
        self.read_exact(expect)
    }

    /// Everything the reader still gets, up to the end of the stream (or the cut).
    fn rest(&mut self) -> &[u8] {
        let from = self.read;
        self.read = self.visible();
        &self.bytes[from..self.read]
    }
}

/// What one side received.
#[derive(Debug, Default)]
struct Received {
    messages: Vec<Bytes>,
    closed: bool,
    /// The side ended in an error, or waited forever for handshake bytes.
    failed: bool,
}

/// Seal a side's script into its pipe, recording where each message ends.
fn send_script(pipe: &mut Pipe, encoder: &mut FrameEncoder, client: bool) {
    for item in script(client) {
        let msg = match &item {
            Outgoing::Message(m) => Some(m.clone()),
            _ => None,
        };
        let mut wire = BytesMut::new();
        encoder.encode(item, &mut wire).unwrap();
        pipe.write_frames(&wire);
        if let Some(m) = msg {
            pipe.sent.push((m, pipe.bytes.len()));
        }
    }
}

fn limits() -> crate::core::channel::Limits {
    crate::core::channel::Limits {
        max_message: MAX_MESSAGE,
        ..crate::core::channel::Config::default().limits
    }
}

/// Decode the rest of a pipe the way `FramedRead` does, until the end of the stream.
fn receive(pipe: &mut Pipe, opener: Opener, expect_confirm: bool) -> Received {
    let mut decoder = FrameDecoder { opener };
    let mut src = BytesMut::from(pipe.rest());
    let mut got = Received::default();
    loop {
        match decoder.decode_eof(&mut src) {
            // The opener only lets CONFIRM through as the server's first frame.
            Ok(Some(Event::Confirmed(_))) => assert!(expect_confirm),
            Ok(Some(Event::Message { message, .. })) => got.messages.push(message.into_bytes()),
            Ok(Some(Event::Fragment { .. })) => {}
            Ok(Some(Event::Ping(_))) => {}
            Ok(Some(Event::Close { .. })) => got.closed = true,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => break,
            Err(_) => {
                got.failed = true;
                break;
            }
        }
    }
    got
}

/// Both directions after the man in the middle did his work.
struct Session {
    c2s: Pipe,
    s2c: Pipe,
    /// What the server received from the client, and the client from the server.
    at_server: Received,
    at_client: Received,
}

impl Session {
    fn pipe(&self, dir: Dir) -> &Pipe {
        match dir {
            Dir::ClientToServer => &self.c2s,
            Dir::ServerToClient => &self.s2c,
        }
    }

    fn received(&self, dir: Dir) -> &Received {
        match dir {
            Dir::ClientToServer => &self.at_server,
            Dir::ServerToClient => &self.at_client,
        }
    }
}

fn failed() -> Received {
    Received {
        failed: true,
        ..Received::default()
    }
}

fn run(tamper: Tamper) -> Session {
    let mut s = Session {
        c2s: Pipe::new(Dir::ClientToServer, tamper),
        s2c: Pipe::new(Dir::ServerToClient, tamper),
        at_server: failed(),
        at_client: failed(),
    };
    handshake_and_transport(&mut s);
    s
}

/// Runs until a side fails; a side that fails during the handshake leaves both `failed`.
fn handshake_and_transport(s: &mut Session) -> Option<()> {
    let prs = Prs::from_bytes([0x17; 32]);
    let hello = ClientHello::new(0, Identity::default()).encode();
    s.c2s.write(&hello);

    let hello_seen = s.c2s.read_exact(hello.len())?;
    ClientHello::parse(&hello_seen).ok()?;
    let key_params = ServerParams::new([9; 16], KdfParams::OWASP, 1, SERVER_NODE, 0).encode();
    let (offered, params) = ServerAwaitingMessage1::offer(&prs, &hello_seen, &key_params);
    s.s2c.write(&params);

    let params_seen: [u8; PARAMS_LEN] = s.s2c.read_exact(PARAMS_LEN)?.try_into().unwrap();
    let (client, msg1) =
        ClientAwaitingReply::start(&prs, &hello, &params_seen, CLIENT_NODE, limits()).ok()?;
    s.c2s
        .write(&[&(msg1.len() as u16).to_be_bytes()[..], &msg1].concat());

    let msg1_seen = s.c2s.read_framed(MSG1_LEN)?;
    let (server, msg2) = server_respond(
        offered,
        SERVER_NODE,
        limits(),
        &msg1_seen,
        Admission::Accepted,
    )
    .ok()?;
    s.s2c
        .write(&[&(msg2.len() as u16).to_be_bytes()[..], &msg2].concat());

    let msg2_seen = s.s2c.read_framed(MSG2_LEN)?;
    let client = client.finish(&msg2_seen).ok()?;

    // Transport: CONFIRM and the client's script; the server's script.
    s.c2s.handshake_end = s.c2s.bytes.len();
    s.s2c.handshake_end = s.s2c.bytes.len();
    let mut to_server = FrameEncoder {
        sealer: Sealer::new(&client.send_key, policy(), client.peer_max_message),
    };
    let mut confirm = BytesMut::new();
    to_server
        .encode(Outgoing::Confirm(None), &mut confirm)
        .unwrap();
    s.c2s.write_frames(&confirm);
    send_script(&mut s.c2s, &mut to_server, true);
    let mut to_client = FrameEncoder {
        sealer: Sealer::new(&server.send_key, policy(), server.peer_max_message),
    };
    send_script(&mut s.s2c, &mut to_client, false);

    let server_opener = Opener::new(&server.recv_key, policy(), MAX_MESSAGE, true);
    s.at_server = receive(&mut s.c2s, server_opener, true);
    let client_opener = Opener::new(&client.recv_key, policy(), MAX_MESSAGE, false);
    s.at_client = receive(&mut s.s2c, client_opener, false);
    Some(())
}

/// The untampered session, for its layout.
fn reference() -> &'static Session {
    static REFERENCE: OnceLock<Session> = OnceLock::new();
    REFERENCE.get_or_init(|| run(Tamper::Nothing))
}

/// The messages of `dir` whose last frame ends at or before `at`.
fn sent_before(pipe: &Pipe, at: usize) -> Vec<Bytes> {
    pipe.sent
        .iter()
        .filter(|(_, end)| *end <= at)
        .map(|(m, _)| m.clone())
        .collect()
}

fn other(dir: Dir) -> Dir {
    match dir {
        Dir::ClientToServer => Dir::ServerToClient,
        Dir::ServerToClient => Dir::ClientToServer,
    }
}

/// Checks shared by flips and cuts of `dir` at byte `at`.
fn check(s: &Session, dir: Dir, at: usize) {
    let pipe = s.pipe(dir);
    let got = s.received(dir);
    // Exactly the messages that ended before the damage, byte for byte; never the CLOSE.
    assert_eq!(got.messages, sent_before(pipe, at), "{dir:?} at {at}");
    assert!(!got.closed, "{dir:?} at {at}: the CLOSE got through");
    let layout = reference().pipe(dir);
    let other_got = s.received(other(dir));
    if at < layout.handshake_end {
        // The handshake failed: nothing is delivered either way.
        assert!(got.failed && other_got.failed, "{dir:?} at {at}");
        assert!(other_got.messages.is_empty());
    } else {
        // The other direction is untouched and complete.
        let other_pipe = s.pipe(other(dir));
        assert_eq!(
            other_got.messages,
            sent_before(other_pipe, usize::MAX),
            "{dir:?} at {at}: the other direction"
        );
        assert!(other_got.closed && !other_got.failed);
    }
}

fn check_flip(dir: Dir, at: usize, bit: u8) {
    let s = run(Tamper::Flip { dir, at, bit });
    assert!(
        s.received(dir).failed,
        "{dir:?} bit {bit} at {at} went unnoticed"
    );
    check(&s, dir, at);
}

fn check_cut(dir: Dir, at: usize) {
    let s = run(Tamper::Cut { dir, at });
    check(&s, dir, at);
}

#[test]
fn untampered_session_delivers_everything() {
    let s = reference();
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        let got = s.received(dir);
        let pipe = s.pipe(dir);
        assert!(!got.failed && got.closed, "{dir:?}: {got:?}");
        assert_eq!(got.messages, sent_before(pipe, usize::MAX));
    }
    // The script covers what it should: every message, and rekeys (frames of 19 bytes, as is
    // CONFIRM), some of them between the fragments of a message.
    assert_eq!(s.c2s.sent.len(), 8);
    let short_frames = |p: &Pipe| {
        let mut ends = p.segments[1..].to_vec();
        ends.push(p.bytes.len());
        p.segments
            .iter()
            .zip(ends)
            .filter(|&(&start, end)| start >= p.handshake_end && end - start == 19)
            .count()
    };
    assert!(short_frames(&s.c2s) >= 4, "{}", short_frames(&s.c2s));
    assert!(short_frames(&s.s2c) >= 1, "{}", short_frames(&s.s2c));
}

/// Every bit of the four handshake messages, exhaustively.
#[test]
fn any_bit_flip_in_the_handshake_is_refused() {
    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        for at in 0..reference().pipe(dir).handshake_end {
            for bit in 0..8 {
                check_flip(dir, at, bit);
            }
        }
    }
}

/// A position chosen frame first, so that short frames (CONFIRM, PING, REKEY, CLOSE, and the
/// length prefixes) are hit as often as the long ones.
fn position() -> impl Strategy<Value = (Dir, usize)> {
    (any::<bool>(), any::<Index>(), any::<Index>(), 0..3u8).prop_map(
        |(c2s, segment, offset, edge)| {
            let dir = if c2s {
                Dir::ClientToServer
            } else {
                Dir::ServerToClient
            };
            let pipe = reference().pipe(dir);
            let i = segment.index(pipe.segments.len());
            let start = pipe.segments[i];
            let end = pipe
                .segments
                .get(i + 1)
                .copied()
                .unwrap_or(pipe.bytes.len());
            // A third each: the first bytes (length prefix, type, flags), the last (tag), any.
            let at = match edge {
                0 => start + offset.index((end - start).min(12)),
                1 => end - 1 - offset.index((end - start).min(16)),
                _ => start + offset.index(end - start),
            };
            (dir, at)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bit_flip_anywhere_is_refused((dir, at) in position(), bit in 0..8u8) {
        check_flip(dir, at, bit);
    }

    #[test]
    fn any_cut_delivers_a_prefix((dir, at) in position()) {
        check_cut(dir, at);
    }
}
