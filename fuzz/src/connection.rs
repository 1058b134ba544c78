//! `connection`: two core connection state machines (`argonlink::core::connection`) joined by
//! in-memory pipes on a virtual clock, driven by a fuzzed schedule: messages, closes, PINGs,
//! ACKs, pauses, time passing, partial deliveries, a flipped bit, an end of stream.
//!
//! Invariants: no panic; nothing is sealed after a side's CLOSE (M17), nor anything at all
//! after it met a frame that failed authentication (M13, M19); an outcome, once recorded, never
//! changes; what a side delivers is, in order and without duplicates, a prefix of what the other
//! sent, unless a bit was flipped on the way; a PING flood is answered by one PONG per
//! transmission at most (M24); every deadline a side announces lies in the future of the time
//! it was told.

use argonlink::core::channel::{self, Mux, Role};
use std::time::{Duration, Instant};

use argonlink::core::codec::FrameDecoder;
use argonlink::core::connection::{Connection, Event, Timers};
use argonlink::core::record::{Event as Frame, Opener, RekeyPolicy, Sealer};
use argonlink::error::{CloseCode, CloseInfo, Error};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;
use zeroize::Zeroizing;

use crate::Reader;

const MAX: u64 = 1 << 16;

#[derive(Clone, Debug)]
pub enum Op {
    /// Side (0: a, 1: b) queues a message of this length (or seals it at once, when it may).
    Send {
        side: u8,
        len: u16,
        now: bool,
    },
    Close {
        side: u8,
        code: u16,
    },
    Ping {
        side: u8,
        value: u64,
    },
    Ack {
        side: u8,
        value: u64,
    },
    /// The side's application stops (or starts again) taking messages.
    Pause {
        side: u8,
    },
    /// Up to this many bytes of what `side` sealed reach its peer.
    Deliver {
        side: u8,
        bytes: u16,
    },
    /// Flip one bit of what is in flight from `side`, at this offset.
    Flip {
        side: u8,
        at: u16,
    },
    /// The stream from `side` ends (FIN) after what is in flight.
    Eof {
        side: u8,
    },
    Advance {
        millis: u16,
    },
}

#[derive(Clone, Debug)]
pub struct Input {
    pub ping_interval_ms: Option<u16>,
    pub idle_ms: Option<u16>,
    pub close_ms: u16,
    pub ops: Vec<Op>,
}

impl Input {
    pub fn decode(data: &[u8]) -> Input {
        let mut r = Reader::new(data);
        let flags = r.u8().unwrap_or(0);
        let ping = r.u16().unwrap_or(1000).max(1);
        let idle = r.u16().unwrap_or(5000).max(1);
        let close_ms = r.u16().unwrap_or(2000);
        let mut ops = Vec::new();
        while let Some(tag) = r.u8() {
            let side = tag >> 7;
            let op = match tag & 0x0f {
                0 => Op::Send {
                    side,
                    len: r.u16().unwrap_or(0) % 20_000,
                    now: tag & 0x40 != 0,
                },
                1 => Op::Close {
                    side,
                    code: r.u16().unwrap_or(1000),
                },
                2 => Op::Ping {
                    side,
                    value: r.u64().unwrap_or(0),
                },
                3 => Op::Ack {
                    side,
                    value: r.u64().unwrap_or(0),
                },
                4 => Op::Pause { side },
                5 => Op::Flip {
                    side,
                    at: r.u16().unwrap_or(0),
                },
                6 => Op::Eof { side },
                7 | 8 => Op::Advance {
                    millis: r.u16().unwrap_or(100),
                },
                _ => Op::Deliver {
                    side,
                    bytes: r.u16().unwrap_or(u16::MAX),
                },
            };
            ops.push(op);
        }
        Input {
            ping_interval_ms: (flags & 1 != 0).then_some(ping),
            idle_ms: (flags & 2 != 0).then_some(idle),
            close_ms,
            ops,
        }
    }
}

impl Input {
    /// The bytes [`Input::decode`] reads back as this input.
    pub fn encode(&self) -> Vec<u8> {
        let flags =
            u8::from(self.ping_interval_ms.is_some()) | u8::from(self.idle_ms.is_some()) << 1;
        let mut out = vec![flags];
        out.extend_from_slice(&self.ping_interval_ms.unwrap_or(1000).to_be_bytes());
        out.extend_from_slice(&self.idle_ms.unwrap_or(5000).to_be_bytes());
        out.extend_from_slice(&self.close_ms.to_be_bytes());
        for op in &self.ops {
            let tag = |side: u8, kind: u8| side << 7 | kind;
            match *op {
                Op::Send { side, len, now } => {
                    out.push(tag(side, 0) | u8::from(now) << 6);
                    out.extend_from_slice(&len.to_be_bytes());
                }
                Op::Close { side, code } => {
                    out.push(tag(side, 1));
                    out.extend_from_slice(&code.to_be_bytes());
                }
                Op::Ping { side, value } => {
                    out.push(tag(side, 2));
                    out.extend_from_slice(&value.to_be_bytes());
                }
                Op::Ack { side, value } => {
                    out.push(tag(side, 3));
                    out.extend_from_slice(&value.to_be_bytes());
                }
                Op::Pause { side } => out.push(tag(side, 4)),
                Op::Flip { side, at } => {
                    out.push(tag(side, 5));
                    out.extend_from_slice(&at.to_be_bytes());
                }
                Op::Eof { side } => out.push(tag(side, 6)),
                Op::Advance { millis } => {
                    out.push(7);
                    out.extend_from_slice(&millis.to_be_bytes());
                }
                Op::Deliver { side, bytes } => {
                    out.push(tag(side, 9));
                    out.extend_from_slice(&bytes.to_be_bytes());
                }
            }
        }
        out
    }
}

struct Side {
    conn: Connection,
    decoder: FrameDecoder,
    /// Bytes sealed by this side, not yet delivered to the peer.
    in_flight: BytesMut,
    /// Bytes delivered to this side, not yet read.
    inbound: BytesMut,
    /// Every byte this side ever sealed (what went on the wire), for the shadow reader.
    wire: Vec<u8>,
    eof_sent: bool,
    eof_seen: bool,
    paused: bool,
    /// The side met a tag failure: from then on it must send nothing.
    tag_failed: bool,
    outcome: Option<CloseInfo>,
    sent: Vec<Bytes>,
    delivered: Vec<Bytes>,
}

fn keys(first: bool) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (x, y) = (Zeroizing::new([1u8; 32]), Zeroizing::new([2u8; 32]));
    if first {
        (x, y)
    } else {
        (y, x)
    }
}

/// The channels of a side as both sides announce them (the default ones, and `MAX`).
fn mux(first: bool) -> Mux {
    let config = channel::Config::default();
    let mut peer = config.limits;
    peer.max_message = MAX;
    Mux::new(
        if first { Role::Client } else { Role::Server },
        config,
        peer,
    )
}

impl Side {
    fn new(first: bool, timers: Timers, now: Instant) -> Side {
        let (send, recv) = keys(first);
        let p = RekeyPolicy::default();
        Side {
            conn: Connection::new(Sealer::new(&send, p, MAX), timers, first, mux(first), now),
            decoder: FrameDecoder {
                opener: Opener::new(&recv, p, MAX, false),
            },
            in_flight: BytesMut::new(),
            inbound: BytesMut::new(),
            wire: Vec::new(),
            eof_sent: false,
            eof_seen: false,
            paused: false,
            tag_failed: false,
            outcome: None,
            sent: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// Seal what the side has to send; checks that a side that must be silent is.
    fn transmit(&mut self) {
        let mut out = BytesMut::new();
        let t = self.conn.poll_transmit(&mut out, 64 * 1024);
        if self.tag_failed {
            assert!(out.is_empty(), "sent after a tag failure");
        }
        if let Ok(t) = t {
            if t.fin {
                self.eof_sent = true;
            }
        }
        self.wire.extend_from_slice(&out);
        self.in_flight.extend_from_slice(&out);
    }

    /// Read what arrived, as far as the side is taking messages.
    fn receive(&mut self, now: Instant) {
        while !self.paused {
            match self
                .conn
                .handle_input(&mut self.decoder, &mut self.inbound, now)
            {
                Ok(Some(Event::Channel(channel::Event::Message {
                    channel,
                    message,
                    credit,
                }))) => {
                    // The application takes each message at once: its credit goes back.
                    self.conn.channels().consumed(channel, credit);
                    self.delivered.push(message.into_bytes());
                }
                Ok(Some(Event::Channel(other))) => panic!("no channels were opened: {other:?}"),
                Ok(Some(Event::Acked(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    self.tag_failed |= matches!(e, Error::Integrity);
                    break;
                }
            }
        }
        if self.eof_seen && self.inbound.is_empty() && !self.paused {
            let _ = self.conn.handle_eof();
        }
        self.check_outcome();
    }

    fn check_outcome(&mut self) {
        match (&self.outcome, self.conn.outcome()) {
            (Some(before), now) => assert_eq!(Some(before), now, "an outcome changed"),
            (None, now) => self.outcome = now.cloned(),
        }
    }
}

/// Move what `from` has in flight (up to `limit` bytes) to `to`.
fn deliver(from: &mut Side, to: &mut Side, limit: usize) {
    let n = from.in_flight.len().min(limit);
    let chunk = from.in_flight.split_to(n);
    to.inbound.extend_from_slice(&chunk);
    if from.eof_sent && from.in_flight.is_empty() {
        to.eof_seen = true;
    }
}

/// The frames a side put on the wire, read back with the peer's key: nothing after CLOSE, and
/// at most one PONG between two of our own frames of other kinds is not checkable here, so the
/// PONG count per transmission is bounded by the number of transmissions instead.
fn check_wire(wire: &[u8], first: bool, pongs_max: usize) {
    let (send, _) = keys(first);
    let mut dec = FrameDecoder {
        opener: Opener::new(&send, RekeyPolicy::default(), MAX, false),
    };
    let mut buf = BytesMut::from(wire);
    let mut closed = false;
    let mut pongs = 0;
    while let Ok(Some(frame)) = dec.decode(&mut buf) {
        assert!(!closed, "a frame after our CLOSE");
        match frame {
            Frame::Close { .. } => closed = true,
            Frame::Pong(_) => pongs += 1,
            _ => {}
        }
    }
    assert!(
        pongs <= pongs_max,
        "{pongs} PONGs in {pongs_max} transmissions"
    );
}

pub fn run(data: &[u8]) {
    let input = Input::decode(data);
    let ms = |v: u16| Duration::from_millis(u64::from(v));
    let timers = Timers {
        ping_interval: input.ping_interval_ms.map(ms),
        ping_timeout: input
            .ping_interval_ms
            .map_or(Duration::from_secs(45), |p| ms(p) * 3),
        idle_timeout: input.idle_ms.map(ms),
        close_timeout: ms(input.close_ms),
    };
    let mut now = Instant::now();
    let mut sides = [Side::new(true, timers, now), Side::new(false, timers, now)];
    let mut flipped = false;
    let mut transmissions = 0;
    for op in input.ops {
        match op {
            Op::Send {
                side,
                len,
                now: direct,
            } => {
                let s = &mut sides[side as usize];
                let msg = Bytes::from(vec![s.sent.len() as u8; len as usize]);
                let ok = if direct && s.conn.can_seal_now(len as usize) {
                    let mut out = BytesMut::new();
                    let r = s.conn.seal_now(msg.clone(), &mut out, now);
                    s.wire.extend_from_slice(&out);
                    s.in_flight.extend_from_slice(&out);
                    r.is_ok()
                } else {
                    s.conn.send(msg.clone(), 0, now).is_ok()
                };
                if ok {
                    s.sent.push(msg);
                }
            }
            Op::Close { side, code } => {
                let code = CloseCode(code);
                if code.travels() {
                    sides[side as usize].conn.close(code, "fuzz", now);
                }
            }
            Op::Ping { side, value } => sides[side as usize].conn.ping(value),
            Op::Ack { side, value } => sides[side as usize].conn.ack(value),
            Op::Pause { side } => {
                let s = &mut sides[side as usize];
                s.paused = !s.paused;
                if s.paused {
                    s.conn.pause_reading();
                } else {
                    s.conn.resume_reading(now);
                }
            }
            Op::Deliver { side, bytes } => {
                let [a, b] = &mut sides;
                let (from, to) = if side == 0 { (a, b) } else { (b, a) };
                from.transmit();
                transmissions += 1;
                deliver(from, to, bytes as usize);
                to.receive(now);
            }
            Op::Flip { side, at } => {
                let s = &mut sides[side as usize];
                if !s.in_flight.is_empty() {
                    let i = at as usize % s.in_flight.len();
                    s.in_flight[i] ^= 1;
                    flipped = true;
                }
            }
            Op::Eof { side } => sides[side as usize].eof_sent = true,
            Op::Advance { millis } => {
                now += ms(millis);
                for s in &mut sides {
                    if let Some(t) = s.conn.poll_timeout() {
                        if t <= now {
                            let _ = s.conn.handle_timeout(now);
                        }
                    }
                    s.check_outcome();
                    if let Some(t) = s.conn.poll_timeout() {
                        assert!(
                            t > now || s.conn.outcome().is_some(),
                            "a deadline already passed"
                        );
                    }
                }
            }
        }
    }
    for (i, s) in sides.iter_mut().enumerate() {
        s.transmit();
        check_wire(&s.wire, i == 0, transmissions + 2);
    }
    if !flipped {
        for (from, to) in [(0, 1), (1, 0)] {
            let (sent, got) = (&sides[from].sent, &sides[to].delivered);
            assert!(got.len() <= sent.len(), "more delivered than sent");
            assert_eq!(
                &sent[..got.len()],
                &got[..],
                "delivered out of order or altered"
            );
        }
    }
}
