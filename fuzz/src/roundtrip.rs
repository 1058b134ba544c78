//! `roundtrip`: what one side sends (messages of any length, PING, PONG, CLOSE, under a rekey
//! policy with small thresholds) through the real `Sealer` and `FrameEncoder`, read back by the
//! `FrameDecoder` in pieces.
//!
//! Invariants: no panic; every item arrives, in order and byte-identical, and the stream ends
//! cleanly; both sides count the same rekeys; a message takes exactly `sealed_len` bytes on the
//! wire plus one REKEY frame per rekey it triggered.

use argonlink::core::cipher::TAG_LEN;
use argonlink::core::codec::{FrameDecoder, FrameEncoder, Outgoing};
use argonlink::core::record::{sealed_len, Event, Opener, RekeyPolicy, Sealer};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

use crate::decoder::Seen;
use crate::{test_key, Reader};
use argonlink::CloseCode;

/// The longest message generated, and the most message bytes per input.
pub const MAX_MESSAGE: usize = 200_000;
pub const MAX_TOTAL: usize = 1 << 19;
/// A REKEY frame on the wire: length prefix, type byte, tag.
const REKEY_FRAME: usize = 2 + 1 + TAG_LEN;

#[derive(Clone, Debug)]
pub enum Item {
    Message(u32),
    Ping,
    Pong,
    Close(u16),
}

#[derive(Clone, Debug)]
pub struct Input {
    /// Rekey after this many frames (0: the default).
    pub rekey_frames: u8,
    /// Rekey after this many KiB (0: the default).
    pub rekey_kib: u8,
    /// The first frame is CONFIRM (the client's side).
    pub confirm: bool,
    /// The reader takes `piece * 97 + 1` bytes at a time (more for long streams).
    pub piece: u8,
    pub items: Vec<Item>,
}

impl Input {
    pub fn decode(data: &[u8]) -> Input {
        let mut r = Reader::new(data);
        let [rekey_frames, rekey_kib, flags, piece] = r.array().unwrap_or_default();
        let mut items = Vec::new();
        while let Some(op) = r.u8() {
            items.push(match op % 4 {
                0 => {
                    let Some(len) = r.array::<3>() else { break };
                    let len = u32::from_be_bytes([0, len[0], len[1], len[2]]);
                    Item::Message(len % (MAX_MESSAGE as u32 + 1))
                }
                1 => Item::Ping,
                2 => Item::Pong,
                _ => {
                    let Some(code) = r.u16() else { break };
                    Item::Close(code)
                }
            });
        }
        Input {
            rekey_frames,
            rekey_kib,
            confirm: flags & 1 != 0,
            piece,
            items,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![
            self.rekey_frames,
            self.rekey_kib,
            self.confirm as u8,
            self.piece,
        ];
        for item in &self.items {
            match item {
                Item::Message(len) => {
                    out.push(0);
                    out.extend_from_slice(&len.to_be_bytes()[1..]);
                }
                Item::Ping => out.push(1),
                Item::Pong => out.push(2),
                Item::Close(code) => {
                    out.push(3);
                    out.extend_from_slice(&code.to_be_bytes());
                }
            }
        }
        out
    }
}

fn message(index: usize, len: usize) -> Bytes {
    let start = (index as u8).wrapping_mul(61);
    (0..len)
        .map(|j| (j as u8).wrapping_mul(13).wrapping_add(start) ^ (j >> 8) as u8)
        .collect()
}

/// Returns the number of rekeys.
pub fn run(data: &[u8]) -> u64 {
    let input = Input::decode(data);
    let default = RekeyPolicy::default();
    let policy = RekeyPolicy {
        frames: match input.rekey_frames {
            0 => default.frames,
            n => n as u64,
        },
        bytes: match input.rekey_kib {
            0 => default.bytes,
            n => (n as u64) << 10,
        },
        interval: Duration::from_secs(3600),
    };
    let key = test_key();
    let mut encoder = FrameEncoder {
        sealer: Sealer::new(&key, policy, MAX_MESSAGE as u64),
    };
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    if input.confirm {
        encoder.encode(Outgoing::Confirm(None), &mut wire).unwrap();
        expected.push(Seen::Confirmed);
    }
    let mut total = 0;
    for (i, item) in input.items.iter().enumerate() {
        let before = (wire.len(), encoder.sealer.rekeys());
        let (out, seen) = match *item {
            Item::Message(len) => {
                total += len as usize;
                if total > MAX_TOTAL {
                    break;
                }
                let m = message(i, len as usize);
                (Outgoing::Message(m.clone()), Seen::Message(m))
            }
            Item::Ping => (Outgoing::Ping(i as u64), Seen::Ping(i as u64)),
            Item::Pong => (Outgoing::Pong(!(i as u64)), Seen::Pong(!(i as u64))),
            Item::Close(code) => {
                // An honest sender sends only codes that travel (PROTOCOL.md M20).
                let code = if CloseCode(code).travels() {
                    code
                } else {
                    4100 + code % 900
                };
                let reason = format!("item {i}");
                (
                    Outgoing::Close {
                        code,
                        reason: reason.clone(),
                    },
                    Seen::Close(code, reason),
                )
            }
        };
        encoder.encode(out, &mut wire).unwrap();
        if let Item::Message(len) = *item {
            let rekeys = (encoder.sealer.rekeys() - before.1) as usize;
            assert_eq!(
                wire.len() - before.0,
                sealed_len(len as usize) + rekeys * REKEY_FRAME,
                "wire size of a message of {len} bytes"
            );
        }
        expected.push(seen);
    }

    let mut decoder = FrameDecoder {
        opener: Opener::new(&key, policy, MAX_MESSAGE as u64, input.confirm),
    };
    let mut src = BytesMut::new();
    let mut events = Vec::new();
    let piece = (input.piece as usize * 97 + 1).max(wire.len() / crate::decoder::MAX_READS);
    for read in wire.chunks(piece) {
        src.extend_from_slice(read);
        while let Some(ev) = decoder.decode(&mut src).expect("a valid stream") {
            if !matches!(ev, Event::Fragment { .. }) {
                events.push(Seen::from(ev));
            }
        }
    }
    while let Some(ev) = decoder.decode_eof(&mut src).expect("a valid stream") {
        if !matches!(ev, Event::Fragment { .. }) {
            events.push(Seen::from(ev));
        }
    }
    assert!(events == expected, "items lost or altered");
    assert_eq!(decoder.opener.rekeys(), encoder.sealer.rekeys());
    encoder.sealer.rekeys()
}
