//! `reassembly`: sequences of DATA fragments (any flags, chunk lengths, announced totals) mixed
//! with control frames, sealed with the real key and opened one by one by an `Opener`, checked
//! step by step against a small model of the reassembly rules.
//!
//! Invariants: no panic; each frame has the outcome the model predicts (nothing yet, an event,
//! or which error); a delivered message is byte-identical to the concatenation of its chunks,
//! never longer than the receiver's limit, and as long as its first fragment announced; the
//! bytes held for a partial message never exceed the limit.

use argonlink::core::cipher::CipherState;
use argonlink::core::frame::{
    Frame, FrameType, DATA_HEADER, DATA_LENGTH_FIELD, FLAG_LENGTH, FLAG_MORE, MAX_PLAINTEXT_LEN,
};
use std::collections::HashMap;

use argonlink::core::record::{first_fragment, max_chunk, Event, Opener, RekeyPolicy};
use argonlink::Error;

use crate::{seal_into, test_key, Reader};

#[derive(Clone, Debug)]
pub enum Op {
    Data {
        flags: u8,
        /// Also set an undefined flag bit.
        bad_flag: bool,
        chunk_len: u16,
        total: Option<u64>,
    },
    Ping(u64),
    Rekey,
    Confirm,
    Close,
    /// Any plaintext.
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Input {
    /// The receiver's limit (24 bits).
    pub max_message: u32,
    /// The rekey policy's frame count (0: the default); the peer is cut off at twice this.
    pub rekey_frames: u8,
    pub expect_confirm: bool,
    pub ops: Vec<Op>,
}

impl Input {
    pub fn decode(data: &[u8]) -> Input {
        let mut r = Reader::new(data);
        let max = r.array::<3>().unwrap_or_default();
        let max_message = u32::from_be_bytes([0, max[0], max[1], max[2]]);
        let rekey_frames = r.u8().unwrap_or(0);
        let expect_confirm = r.u8().unwrap_or(0) & 1 != 0;
        let mut ops = Vec::new();
        while let Some(op) = r.u8() {
            let op = if op < 0x80 {
                let flags = op & (FLAG_MORE | FLAG_LENGTH);
                let Some(chunk_len) = r.u16() else { break };
                let total = if flags & FLAG_LENGTH != 0 {
                    let Some(t) = r.u64() else { break };
                    Some(t)
                } else {
                    None
                };
                Op::Data {
                    flags,
                    bad_flag: op & 0x04 != 0,
                    chunk_len,
                    total,
                }
            } else {
                match (op - 0x80) % 5 {
                    0 => {
                        let Some(v) = r.u64() else { break };
                        Op::Ping(v)
                    }
                    1 => Op::Rekey,
                    2 => Op::Confirm,
                    3 => Op::Close,
                    _ => {
                        let Some(len) = r.u8() else { break };
                        let Some(raw) = r.bytes(len as usize) else {
                            break;
                        };
                        Op::Raw(raw.to_vec())
                    }
                }
            };
            ops.push(op);
        }
        Input {
            max_message,
            rekey_frames,
            expect_confirm,
            ops,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.max_message.to_be_bytes()[1..].to_vec();
        out.push(self.rekey_frames);
        out.push(self.expect_confirm as u8);
        for op in &self.ops {
            match op {
                Op::Data {
                    flags,
                    bad_flag,
                    chunk_len,
                    total,
                } => {
                    out.push(flags | if *bad_flag { 0x04 } else { 0 });
                    out.extend_from_slice(&chunk_len.to_be_bytes());
                    if flags & FLAG_LENGTH != 0 {
                        out.extend_from_slice(&total.unwrap_or(0).to_be_bytes());
                    }
                }
                Op::Ping(v) => {
                    out.push(0x80);
                    out.extend_from_slice(&v.to_be_bytes());
                }
                Op::Rekey => out.push(0x81),
                Op::Confirm => out.push(0x82),
                Op::Close => out.push(0x83),
                Op::Raw(raw) => {
                    out.extend_from_slice(&[0x84, raw.len() as u8]);
                    out.extend_from_slice(raw);
                }
            }
        }
        out
    }
}

/// The chunk bytes of frame `index`: distinct per frame, so a misplaced chunk shows.
fn chunk_bytes(index: usize, len: usize) -> Vec<u8> {
    let start = (index as u8).wrapping_mul(131);
    (0..len)
        .map(|j| (j as u8).wrapping_mul(7).wrapping_add(start))
        .collect()
}

/// Chunk bytes generated per input at most: keeps every run fast (a few frames of 64 KiB).
pub const MAX_GENERATED: usize = 1 << 20;

/// A frame as the model sees it: what the sender meant (malformed: the receiver must refuse).
#[derive(Clone, Debug, PartialEq)]
enum Meant {
    Malformed,
    Data {
        channel: u32,
        more: bool,
        total: Option<u64>,
        chunk: Vec<u8>,
    },
    Ping(u64),
    Pong(u64),
    Close(u16, String),
    Rekey,
    Confirm,
    Ack(u64),
    Resume(Vec<u8>),
    /// A channel's control frame, by its debug form; FIN and RESET end its partial message.
    Channel {
        channel: u32,
        fin: bool,
        reset: bool,
        text: Vec<u8>,
    },
}

/// What the receiver must make of one frame.
#[derive(Debug, PartialEq)]
pub enum Expect {
    Nothing,
    Confirmed,
    Ping(u64),
    Pong(u64),
    Close(u16, String),
    Message(Vec<u8>),
    Ack(u64),
    /// A RESUME frame, by its debug form (the model only passes it through).
    Resume(Vec<u8>),
    /// A channel's control frame, by its debug form.
    Channel(Vec<u8>),
    Protocol,
    TooLarge,
    KeyExhausted,
}

impl Expect {
    fn is_error(&self) -> bool {
        matches!(
            self,
            Expect::Protocol | Expect::TooLarge | Expect::KeyExhausted
        )
    }
}

/// The reassembly rules of PROTOCOL.md §4, written out independently of the `Opener`.
struct Model {
    max: u64,
    /// The peer is cut off at this many frames under one key.
    frame_cap: u64,
    awaiting_confirm: bool,
    frames: u64,
    /// The message being reassembled on each channel.
    partials: HashMap<u32, (Vec<u8>, u64)>,
}

impl Model {
    fn step(&mut self, frame: Meant) -> Expect {
        if frame == Meant::Malformed {
            return Expect::Protocol;
        }
        if std::mem::take(&mut self.awaiting_confirm) != (frame == Meant::Confirm) {
            return Expect::Protocol;
        }
        if frame != Meant::Rekey {
            if self.frames >= self.frame_cap {
                return Expect::KeyExhausted;
            }
            self.frames += 1;
        }
        // Any frame may come between the fragments of a message (other channels' too).
        match frame {
            Meant::Malformed => unreachable!(),
            Meant::Confirm => Expect::Confirmed,
            Meant::Ping(v) => Expect::Ping(v),
            Meant::Ack(v) => Expect::Ack(v),
            Meant::Resume(r) => Expect::Resume(r),
            Meant::Pong(v) => Expect::Pong(v),
            Meant::Close(code, reason) => Expect::Close(code, reason),
            Meant::Rekey => {
                self.frames = 0;
                Expect::Nothing
            }
            Meant::Channel {
                channel,
                fin,
                reset,
                text,
            } => {
                if fin && self.partials.contains_key(&channel) {
                    return Expect::Protocol; // a FIN in the middle of a message
                }
                if reset {
                    self.partials.remove(&channel);
                }
                Expect::Channel(text)
            }
            Meant::Data {
                channel,
                more,
                total,
                chunk,
            } => {
                let (first, full) = (first_fragment(channel), max_chunk(channel));
                match (self.partials.remove(&channel), more, total) {
                    (None, false, None) if chunk.len() as u64 > self.max => Expect::TooLarge,
                    (None, false, None) => Expect::Message(chunk),
                    (None, true, Some(t)) if t > self.max => Expect::TooLarge,
                    // Every fragment but the last is full (M14).
                    (None, true, Some(_)) if chunk.len() != first => Expect::Protocol,
                    (None, true, Some(t)) if t <= full as u64 => Expect::Protocol,
                    (None, true, Some(t)) => {
                        self.partials.insert(channel, (chunk, t));
                        Expect::Nothing
                    }
                    (Some((mut got, t)), more, None) => {
                        if (got.len() + chunk.len()) as u64 > t {
                            return Expect::Protocol;
                        }
                        if more && chunk.len() != full {
                            return Expect::Protocol;
                        }
                        got.extend_from_slice(&chunk);
                        if more {
                            self.partials.insert(channel, (got, t));
                            Expect::Nothing
                        } else if got.len() as u64 != t {
                            Expect::Protocol
                        } else {
                            Expect::Message(got)
                        }
                    }
                    _ => Expect::Protocol,
                }
            }
        }
    }

    fn buffered(&self) -> usize {
        self.partials.values().map(|(got, _)| got.len()).sum()
    }
}

/// Build the plaintext of one op, and what it means.
fn plaintext(index: usize, op: &Op) -> (Vec<u8>, Meant) {
    match op {
        Op::Data {
            flags,
            bad_flag,
            chunk_len,
            total,
        } => {
            let mut plain = vec![
                FrameType::Data as u8,
                flags | if *bad_flag { 0x80 } else { 0 },
            ];
            let mut header = DATA_HEADER;
            if let Some(t) = total {
                plain.extend_from_slice(&t.to_be_bytes());
                header += DATA_LENGTH_FIELD;
            }
            let len = (*chunk_len as usize).min(MAX_PLAINTEXT_LEN - header);
            let chunk = chunk_bytes(index, len);
            plain.extend_from_slice(&chunk);
            let meant = if *bad_flag {
                Meant::Malformed
            } else {
                Meant::Data {
                    channel: 0,
                    more: flags & FLAG_MORE != 0,
                    total: *total,
                    chunk,
                }
            };
            (plain, meant)
        }
        Op::Ping(v) => {
            let mut plain = Vec::new();
            Frame::Ping(*v).write_control(&mut plain);
            (plain, Meant::Ping(*v))
        }
        Op::Rekey => (vec![FrameType::Rekey as u8], Meant::Rekey),
        Op::Confirm => (vec![FrameType::Confirm as u8], Meant::Confirm),
        Op::Close => {
            let mut plain = Vec::new();
            let reason = format!("close after {index} frames");
            Frame::Close {
                code: 1000,
                reason: &reason,
            }
            .write_control(&mut plain);
            (plain, Meant::Close(1000, reason))
        }
        Op::Raw(raw) => {
            let meant = match Frame::parse(raw) {
                Err(_) => Meant::Malformed,
                Ok(Frame::Data {
                    channel,
                    more,
                    total_len,
                    chunk,
                }) => Meant::Data {
                    channel,
                    more,
                    total: total_len,
                    chunk: chunk.to_vec(),
                },
                Ok(Frame::Ping(v)) => Meant::Ping(v),
                Ok(Frame::Pong(v)) => Meant::Pong(v),
                Ok(Frame::Close { code, reason }) => Meant::Close(code, reason.to_owned()),
                Ok(Frame::Rekey) => Meant::Rekey,
                Ok(Frame::Confirm(_)) => Meant::Confirm,
                Ok(Frame::Ack(v)) => Meant::Ack(v),
                Ok(Frame::Resume(r)) => Meant::Resume(format!("{r:?}").into_bytes()),
                Ok(frame) => {
                    let channel = match frame {
                        Frame::Open { channel, .. }
                        | Frame::Window { channel, .. }
                        | Frame::Blocked { channel, .. }
                        | Frame::Fin { channel }
                        | Frame::Reset { channel, .. } => channel,
                        _ => unreachable!("every other frame is matched above"),
                    };
                    Meant::Channel {
                        channel,
                        fin: matches!(frame, Frame::Fin { .. }),
                        reset: matches!(frame, Frame::Reset { .. }),
                        text: channel_text(&frame),
                    }
                }
            };
            (raw.clone(), meant)
        }
    }
}

/// A channel frame as both the model and the opener's event name it.
fn channel_text(frame: &Frame<'_>) -> Vec<u8> {
    format!("{frame:?}").into_bytes()
}

fn observed(result: Result<Option<Event>, Error>) -> Expect {
    match result {
        Ok(None) => Expect::Nothing,
        Ok(Some(Event::Confirmed(_))) => Expect::Confirmed,
        Ok(Some(Event::Ack(v))) => Expect::Ack(v),
        Ok(Some(Event::Resume(r))) => Expect::Resume(format!("{r:?}").into_bytes()),
        Ok(Some(Event::Ping(v))) => Expect::Ping(v),
        Ok(Some(Event::Pong(v))) => Expect::Pong(v),
        Ok(Some(Event::Close { code, reason })) => Expect::Close(code, reason),
        Ok(Some(Event::Message { message, .. })) => Expect::Message(message.into_bytes().to_vec()),
        Ok(Some(Event::Fragment { .. })) => Expect::Nothing,
        Ok(Some(Event::Channel(frame))) => Expect::Channel(channel_text(&frame.as_frame())),
        #[allow(unreachable_patterns)]
        Ok(Some(other)) => panic!("an event the model does not know: {other:?}"),
        Err(Error::Protocol(_)) => Expect::Protocol,
        Err(Error::MessageTooLarge { .. }) => Expect::TooLarge,
        Err(Error::KeyExhausted) => Expect::KeyExhausted,
        Err(e) => panic!("unexpected error from a correctly sealed frame: {e:?}"),
    }
}

/// Returns the messages delivered.
pub fn run(data: &[u8]) -> Vec<Vec<u8>> {
    let input = Input::decode(data);
    let max = input.max_message as u64;
    let policy = match input.rekey_frames {
        0 => RekeyPolicy::default(),
        n => RekeyPolicy {
            frames: n as u64,
            ..RekeyPolicy::default()
        },
    };
    let key = test_key();
    let mut sender: CipherState = CipherState::new(&key);
    let mut opener = Opener::new(&key, policy, max, input.expect_confirm);
    let mut model = Model {
        max,
        frame_cap: policy.frames * 2,
        awaiting_confirm: input.expect_confirm,
        frames: 0,
        partials: HashMap::new(),
    };
    let mut delivered = Vec::new();
    let mut generated = 0;
    for (index, op) in input.ops.iter().enumerate() {
        let (plain, meant) = plaintext(index, op);
        generated += plain.len();
        if plain.len() > MAX_PLAINTEXT_LEN || generated > MAX_GENERATED {
            break;
        }
        let rekeys = meant == Meant::Rekey;
        let mut wire = Vec::new();
        seal_into(&mut sender, &plain, &mut wire);
        if rekeys {
            sender.rekey();
        }
        let expect = model.step(meant);
        let got = observed(opener.open_frame(&mut wire[2..]));
        assert_eq!(got, expect, "frame {index} ({op:?})");
        if got.is_error() {
            // After an error the session is over: nothing more is opened.
            return delivered;
        }
        assert_eq!(opener.buffered(), model.buffered());
        assert!(
            opener.buffered() as u64 <= max,
            "partial message over the limit"
        );
        if let Expect::Message(m) = got {
            assert!(m.len() as u64 <= max, "message over the limit delivered");
            delivered.push(m);
        }
    }
    delivered
}
