//! Two connections joined by in-memory byte pipes on a virtual clock: every timer test runs in
//! microseconds and lands on the exact instant (no sleeping, no scheduler noise).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use zeroize::Zeroizing;

use super::*;
use crate::core::channel::Role;
use crate::core::record::{Opener, RekeyPolicy};
use crate::error::PeerMisbehaved;

const MAX: u64 = 1 << 20;

fn timers() -> Timers {
    Timers {
        ping_interval: None,
        ping_timeout: Duration::from_secs(45),
        idle_timeout: None,
        close_timeout: Duration::from_secs(5),
    }
}

fn keys() -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    (Zeroizing::new([1u8; 32]), Zeroizing::new([2u8; 32]))
}

/// Channels as both sides of these tests announce them.
fn mux(role: Role) -> Mux {
    let config = channel::Config::default();
    let mut peer = config.limits;
    peer.max_message = MAX;
    Mux::new(role, config, peer)
}

struct Side {
    conn: Connection,
    /// Opens what the peer sealed (the driver's, not the connection's).
    decoder: FrameDecoder,
    /// Bytes on their way to this side.
    inbound: BytesMut,
    /// The peer sent FIN after its last bytes.
    eof: bool,
    events: Vec<Event>,
    error: Option<Error>,
    /// Frames this side sealed, in bytes (what went on the wire).
    sent: Vec<u8>,
    /// Not taking events (the application stopped reading).
    paused: bool,
    /// Takes messages but never gives their credit back (an application that stopped
    /// reading while the connection goes on).
    keep_credit: bool,
    /// Neither reads nor writes: a host that vanished.
    dead: bool,
    fin: bool,
}

impl Side {
    fn new(conn: Connection, opener: Opener) -> Self {
        Side {
            conn,
            decoder: FrameDecoder { opener },
            inbound: BytesMut::new(),
            eof: false,
            events: Vec::new(),
            error: None,
            sent: Vec::new(),
            paused: false,
            keep_credit: false,
            dead: false,
            fin: false,
        }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Channel(channel::Event::Message { message: m, .. }) => {
                    let mut v = vec![0; m.len()];
                    m.copy_to(&mut v);
                    Some(v)
                }
                _ => None,
            })
            .collect()
    }
}

struct Pair {
    a: Side,
    b: Side,
    now: Instant,
    start: Instant,
}

impl Pair {
    fn new(a: Timers, b: Timers) -> Self {
        Self::with_sessions(a, b, false)
    }

    fn with_sessions(ta: Timers, tb: Timers, acknowledged: bool) -> Self {
        let (k1, k2) = keys();
        let p = RekeyPolicy::default();
        let now = Instant::now();
        let a = Connection::new(
            Sealer::new(&k1, p, MAX),
            ta,
            acknowledged,
            mux(Role::Client),
            now,
        );
        let b = Connection::new(
            Sealer::new(&k2, p, MAX),
            tb,
            acknowledged,
            mux(Role::Server),
            now,
        );
        Pair {
            a: Side::new(a, Opener::new(&k2, p, MAX, false)),
            b: Side::new(b, Opener::new(&k1, p, MAX, false)),
            now,
            start: now,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Move bytes both ways until neither side has anything more to do.
    fn drive(&mut self) {
        loop {
            let moved =
                step(&mut self.a, &mut self.b, self.now) | step(&mut self.b, &mut self.a, self.now);
            if !moved {
                return;
            }
        }
    }

    /// Let virtual time pass up to `until`, waking each side at its own deadlines.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.drive();
        loop {
            let next = [&self.a, &self.b]
                .into_iter()
                .filter(|s| !s.dead && s.error.is_none())
                .filter_map(|s| s.conn.poll_timeout())
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    for side in [&mut self.a, &mut self.b] {
                        if !side.dead && side.error.is_none() {
                            if let Err(e) = side.conn.handle_timeout(self.now) {
                                side.error = Some(e);
                            }
                        }
                    }
                    self.drive();
                }
                _ => break,
            }
        }
        self.now = until;
    }
}

/// One round for `from`: seal what it has into `to`'s inbound bytes, and let `to` read.
fn step(from: &mut Side, to: &mut Side, now: Instant) -> bool {
    let mut moved = false;
    if !from.dead && !from.fin {
        let mut out = BytesMut::new();
        match from.conn.poll_transmit(&mut out, 64 * 1024) {
            Ok(t) => {
                from.fin = t.fin;
                to.eof |= t.fin;
            }
            Err(e) => from.error = Some(e),
        }
        if !out.is_empty() {
            moved = true;
            from.sent.extend_from_slice(&out);
            to.inbound.extend_from_slice(&out);
        }
    }
    if to.dead || to.paused || to.error.is_some() {
        return moved;
    }
    loop {
        match to.conn.handle_input(&mut to.decoder, &mut to.inbound, now) {
            Ok(Some(ev)) => {
                // The application takes every message at once: its credit goes back.
                if let Event::Channel(channel::Event::Message {
                    channel, credit, ..
                }) = &ev
                {
                    if !to.keep_credit {
                        to.conn.channels().consumed(*channel, *credit);
                    }
                }
                to.events.push(ev);
                moved = true;
            }
            Ok(None) => break,
            Err(e) => {
                to.error = Some(e);
                return true;
            }
        }
    }
    if to.eof && to.inbound.is_empty() && to.conn.is_reading() {
        to.error = to.conn.handle_eof().err();
        moved = true;
    }
    moved
}

/// The frames in `wire`, opened with the key of side a's sender (`from_a`) or side b's.
fn frames(wire: &[u8], from_a: bool) -> Vec<Frame> {
    let (k1, k2) = keys();
    let key = if from_a { k1 } else { k2 };
    let mut dec = FrameDecoder {
        opener: Opener::new(&key, RekeyPolicy::default(), MAX, false),
    };
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty());
    out
}

fn closes(frames: &[Frame]) -> Vec<(u16, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Close { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .collect()
}

fn msg(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn a_close_is_echoed_once_and_both_outcomes_name_the_closer() {
    let mut p = Pair::new(timers(), timers());
    assert!(p.a.conn.close(CloseCode(4100), "bye", p.now));
    assert!(
        !p.a.conn.close(CloseCode(4101), "again", p.now),
        "close is idempotent"
    );
    p.drive();
    let expect = CloseInfo::clean(CloseCode(4100), "bye");
    assert_eq!(p.a.conn.outcome(), Some(&expect));
    assert_eq!(p.b.conn.outcome(), Some(&expect));
    assert_eq!(closes(&frames(&p.a.sent, true)), vec![(4100, "bye".into())]);
    assert_eq!(
        closes(&frames(&p.b.sent, false)),
        vec![(4100, "bye".into())]
    );
    assert!(p.a.fin && p.b.fin, "CLOSE is each side's last frame");
    assert!(p.a.error.is_none() && p.b.error.is_none());
}

#[test]
fn the_echo_does_not_wait_for_messages_the_closer_gives_no_credit_for() {
    // a stops reading (its window fills) and closes: b's CLOSE echo goes out at once, ahead
    // of b's messages still waiting for credit that can no longer come (M17).
    let mut p = Pair::new(timers(), timers());
    p.a.keep_credit = true;
    for _ in 0..100 {
        p.b.conn
            .send(msg("x").repeat(60_000).into(), 0, p.now)
            .unwrap();
    }
    p.drive();
    assert!(!p.b.conn.channels().is_drained(), "b waits for credit");
    p.a.conn.close(CloseCode::NORMAL, "done", p.now);
    p.drive();
    let expect = CloseInfo::clean(CloseCode::NORMAL, "done");
    assert_eq!(p.a.conn.outcome(), Some(&expect));
    assert_eq!(p.b.conn.outcome(), Some(&expect));
    assert!(p.a.fin && p.b.fin);
}

#[test]
fn simultaneous_closes_are_not_echoed_and_each_side_keeps_its_own() {
    let mut p = Pair::new(timers(), timers());
    p.a.conn.close(CloseCode(4100), "a", p.now);
    p.b.conn.close(CloseCode(4101), "b", p.now);
    p.drive();
    assert_eq!(closes(&frames(&p.a.sent, true)), vec![(4100, "a".into())]);
    assert_eq!(closes(&frames(&p.b.sent, false)), vec![(4101, "b".into())]);
    assert_eq!(p.a.conn.outcome().unwrap().code, CloseCode(4100));
    assert_eq!(p.b.conn.outcome().unwrap().code, CloseCode(4101));
}

#[test]
fn messages_queued_before_close_arrive_before_it_and_none_after() {
    let mut p = Pair::new(timers(), timers());
    p.a.conn.send(msg("one"), 0, p.now).unwrap();
    p.a.conn.send(msg("two"), 0, p.now).unwrap();
    p.a.conn.close(CloseCode::NORMAL, "done", p.now);
    assert!(matches!(
        p.a.conn.send(msg("late"), 0, p.now),
        Err(Error::Closed(_))
    ));
    let mut out = BytesMut::new();
    assert!(p.a.conn.seal_now(msg("late"), &mut out, p.now).is_err());
    assert!(out.is_empty());
    p.drive();
    assert_eq!(p.b.messages(), vec![b"one".to_vec(), b"two".to_vec()]);
    // And the peer, having seen our CLOSE, refuses to send too.
    assert!(matches!(
        p.b.conn.send(msg("x"), 0, p.now),
        Err(Error::Closed(_))
    ));
}

#[test]
fn seal_now_never_overtakes_a_queued_message() {
    let mut p = Pair::new(timers(), timers());
    let mut out = BytesMut::new();
    p.a.conn.seal_now(msg("first"), &mut out, p.now).unwrap();
    p.a.conn.send(msg("second"), 0, p.now).unwrap();
    assert!(!p.a.conn.can_seal_now(1));
    assert!(p.a.conn.seal_now(msg("third"), &mut out, p.now).is_err());
    p.b.inbound.extend_from_slice(&out);
    p.drive();
    assert_eq!(p.b.messages(), vec![b"first".to_vec(), b"second".to_vec()]);
}

#[test]
fn input_stops_at_each_event() {
    let mut p = Pair::new(timers(), timers());
    for s in ["1", "2", "3"] {
        p.a.conn.send(msg(s), 0, p.now).unwrap();
    }
    let mut out = BytesMut::new();
    p.a.conn.poll_transmit(&mut out, usize::MAX).unwrap();
    let total = out.len();
    let first =
        p.b.conn
            .handle_input(&mut p.b.decoder, &mut out, p.now)
            .unwrap();
    assert!(matches!(
        first,
        Some(Event::Channel(channel::Event::Message { message, .. })) if message == msg("1").into()
    ));
    assert!(out.len() > total / 2, "only the first frame was taken");
}

#[test]
fn a_ping_flood_gets_one_pong_carrying_the_latest_value() {
    let mut p = Pair::new(timers(), timers());
    let mut flood = BytesMut::new();
    for v in 1..=10_000u64 {
        p.b.conn.ping(v);
        p.b.conn.poll_transmit(&mut flood, usize::MAX).unwrap();
    }
    assert_eq!(
        p.a.conn
            .handle_input(&mut p.a.decoder, &mut flood, p.now)
            .unwrap(),
        None
    );
    assert!(flood.is_empty());
    let mut out = BytesMut::new();
    p.a.conn.poll_transmit(&mut out, usize::MAX).unwrap();
    assert_eq!(frames(&out, true), vec![Frame::Pong(10_000)]);
}

#[test]
fn acks_are_held_until_attached_then_the_highest_is_handed_over() {
    let mut p = Pair::with_sessions(timers(), timers(), true);
    for v in [3, 7, 5] {
        p.b.conn.ack(v);
        p.drive();
    }
    assert!(p.a.events.is_empty(), "held, not delivered");
    assert_eq!(p.a.conn.attach_acks().unwrap(), Some(7));
    assert!(p.a.conn.attach_acks().is_err(), "attached once");
    p.b.conn.ack(9);
    p.drive();
    assert_eq!(p.a.events, vec![Event::Acked(9)]);
}

#[test]
fn an_ack_outside_a_session_is_a_protocol_error_told_with_close_1002() {
    let mut p = Pair::new(timers(), timers());
    p.b.conn.ack(1);
    p.drive();
    assert!(matches!(
        p.a.error,
        Some(Error::Protocol(PeerMisbehaved::AckOutsideSession))
    ));
    assert_eq!(closes(&frames(&p.a.sent, true))[0].0, 1002);
    let b = p.b.conn.outcome().unwrap();
    assert_eq!((b.code, b.clean), (CloseCode::PROTOCOL_ERROR, true));
}

#[test]
fn a_confirm_or_resume_after_the_handshake_is_a_protocol_error() {
    for (item, expect) in [
        (Outgoing::Confirm(None), PeerMisbehaved::ConfirmNotFirst),
        (
            Outgoing::Resume(crate::core::frame::ResumeReply {
                status: crate::core::frame::ResumeStatus::Created,
                next_expected: 0,
                window: 1 << 16,
            }),
            PeerMisbehaved::UnexpectedResume,
        ),
    ] {
        let mut p = Pair::new(timers(), timers());
        let mut wire = BytesMut::new();
        p.b.conn
            .encoder
            .as_mut()
            .unwrap()
            .encode_item(item, &mut wire)
            .unwrap();
        p.a.inbound.extend_from_slice(&wire);
        p.drive();
        assert!(
            matches!(&p.a.error, Some(Error::Protocol(e)) if *e == expect),
            "{:?}",
            p.a.error
        );
        assert_eq!(closes(&frames(&p.a.sent, true))[0].0, 1002);
    }
}

#[test]
fn after_a_tampered_frame_nothing_more_is_sent() {
    let mut p = Pair::new(timers(), timers());
    p.a.conn.send(msg("pending"), 0, p.now).unwrap();
    p.b.conn.ping(1); // a owes a PONG for the first of these frames
    p.b.conn.send(msg("x"), 0, p.now).unwrap();
    let mut wire = BytesMut::new();
    p.b.conn.poll_transmit(&mut wire, usize::MAX).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let err =
        p.a.conn
            .handle_input(&mut p.a.decoder, &mut wire, p.now)
            .unwrap_err();
    assert!(matches!(err, Error::Integrity), "{err:?}");
    assert!(!p.a.conn.wants_transmit());
    let mut out = BytesMut::new();
    assert_eq!(
        p.a.conn.poll_transmit(&mut out, usize::MAX).unwrap(),
        Transmit::default()
    );
    assert!(out.is_empty(), "no CLOSE, no PONG, no queued message");
    assert!(!p.a.conn.outcome().unwrap().clean);
}

#[test]
fn eof_without_close_is_a_truncation() {
    let mut p = Pair::new(timers(), timers());
    p.a.eof = true;
    p.drive();
    let info = p.a.conn.outcome().unwrap();
    assert!(!info.clean && info.reason.contains("truncated"), "{info:?}");
    assert!(p.a.sent.is_empty());
}

#[test]
fn keepalive_pings_a_silent_peer_and_its_pongs_keep_the_connection() {
    let t = Timers {
        ping_interval: Some(Duration::from_secs(1)),
        ping_timeout: Duration::from_secs(3),
        ..timers()
    };
    let mut p = Pair::new(t, t);
    p.advance(Duration::from_secs(60));
    assert!(p.a.error.is_none() && p.b.error.is_none());
    let pings = |wire: &[u8], from_a| {
        frames(wire, from_a)
            .iter()
            .filter(|f| matches!(f, Frame::Ping(_)))
            .count()
    };
    // Each side pings after a second without hearing from the other (the PONG that answers
    // its own PING included): one PING a second from each.
    for n in [pings(&p.a.sent, true), pings(&p.b.sent, false)] {
        assert!((59..=60).contains(&n), "{n} PINGs in 60 s");
    }
}

#[test]
fn a_peer_that_vanishes_is_unresponsive_at_ping_timeout() {
    let t = Timers {
        ping_interval: Some(Duration::from_secs(1)),
        ping_timeout: Duration::from_secs(3),
        ..timers()
    };
    let mut p = Pair::new(t, t);
    p.advance(Duration::from_secs(10));
    p.b.dead = true;
    let vanished = p.elapsed();
    p.advance(Duration::from_secs(10));
    let Some(Error::Unresponsive(silent)) = p.a.error else {
        panic!("{:?}", p.a.error)
    };
    assert!(
        silent >= Duration::from_secs(3) && silent < Duration::from_secs(4),
        "{silent:?}"
    );
    assert!(p.elapsed() - vanished < Duration::from_secs(14));
    assert!(!p.a.conn.outcome().unwrap().clean);
}

#[test]
fn a_paused_reader_keeps_pinging_and_is_not_declared_dead() {
    let t = Timers {
        ping_interval: Some(Duration::from_secs(1)),
        ping_timeout: Duration::from_secs(3),
        ..timers()
    };
    let mut p = Pair::new(t, t);
    p.a.paused = true;
    p.a.conn.pause_reading();
    p.advance(Duration::from_secs(30));
    assert!(p.a.error.is_none(), "{:?}", p.a.error);
    assert!(p.b.error.is_none(), "{:?}", p.b.error);
    p.a.paused = false;
    p.a.conn.resume_reading(p.now);
    p.advance(Duration::from_secs(30));
    assert!(p.a.error.is_none() && p.b.error.is_none());
}

#[test]
fn an_idle_connection_closes_at_idle_timeout_and_traffic_postpones_it() {
    let t = Timers {
        idle_timeout: Some(Duration::from_secs(5)),
        ..timers()
    };
    let mut p = Pair::new(t, timers());
    p.advance(Duration::from_secs(3));
    p.a.conn.send(msg("hi"), 0, p.now).unwrap();
    p.advance(Duration::from_millis(4_999));
    assert!(!p.a.conn.is_closing(), "5 s after the message, not before");
    p.advance(Duration::from_millis(1));
    let expect = CloseInfo::clean(CloseCode::NORMAL, "idle timeout");
    assert_eq!(p.a.conn.outcome(), Some(&expect));
    assert_eq!(p.b.conn.outcome(), Some(&expect));
}

#[test]
fn an_unanswered_close_ends_the_connection_at_close_timeout() {
    for idle in [false, true] {
        let t = Timers {
            idle_timeout: idle.then_some(Duration::from_secs(5)),
            close_timeout: Duration::from_secs(2),
            ..timers()
        };
        let mut p = Pair::new(t, timers());
        p.b.dead = true;
        // Both closes begin at 5 s: the idle one by itself, the other by the application.
        p.advance(Duration::from_secs(5));
        assert_eq!(p.a.conn.is_closing(), idle);
        if !idle {
            p.a.conn.close(CloseCode::NORMAL, "bye", p.now);
        }
        p.advance(Duration::from_millis(1_999));
        assert!(p.a.conn.outcome().is_none(), "idle={idle}");
        p.advance(Duration::from_millis(1));
        let info = p.a.conn.outcome().unwrap();
        assert!(
            !info.clean && info.reason.contains("close_timeout"),
            "{info:?}"
        );
    }
}

#[test]
fn nothing_is_sealed_after_our_close() {
    let mut p = Pair::new(timers(), timers());
    p.a.conn.close(CloseCode::NORMAL, "bye", p.now);
    let mut out = BytesMut::new();
    assert!(p.a.conn.poll_transmit(&mut out, usize::MAX).unwrap().fin);
    p.a.conn.ping(3);
    p.a.conn.ack(3);
    let before = out.len();
    assert_eq!(
        p.a.conn.poll_transmit(&mut out, usize::MAX).unwrap(),
        Transmit::default()
    );
    assert_eq!(out.len(), before);
}

#[test]
fn while_a_batch_is_out_nothing_else_is_sealed_and_order_is_kept() {
    let mut p = Pair::new(timers(), timers());
    p.a.conn.send(msg("one"), 7, p.now).unwrap();
    let mut batch = p.a.conn.begin_transmit(usize::MAX).unwrap();
    let mut out = BytesMut::new();
    assert!(!p.a.conn.can_seal_now(1));
    assert!(p.a.conn.seal_now(msg("x"), &mut out, p.now).is_err());
    p.a.conn.send(msg("two"), 5, p.now).unwrap();
    p.a.conn.ping(1);
    assert!(!p.a.conn.wants_transmit());
    assert!(p.a.conn.begin_transmit(usize::MAX).is_none());
    let sealed = batch.seal(&mut out);
    let t = p.a.conn.end_transmit(batch, sealed).unwrap();
    assert_eq!(
        t,
        Transmit {
            released: Vec::new(),
            cost: 7,
            fin: false
        }
    );
    assert!(p.a.conn.wants_transmit());
    assert_eq!(
        p.a.conn.poll_transmit(&mut out, usize::MAX).unwrap().cost,
        5
    );
    p.b.inbound.extend_from_slice(&out);
    p.drive();
    assert_eq!(p.b.messages(), vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn a_paused_reader_is_not_idle_and_resuming_restarts_the_idle_clock() {
    let t = Timers {
        idle_timeout: Some(Duration::from_secs(5)),
        ..timers()
    };
    let mut p = Pair::new(t, timers());
    p.a.paused = true;
    p.a.conn.pause_reading();
    p.advance(Duration::from_secs(60));
    assert!(
        !p.a.conn.is_closing(),
        "the application is behind, the link is not idle"
    );
    p.a.paused = false;
    p.a.conn.resume_reading(p.now);
    p.advance(Duration::from_millis(4_999));
    assert!(!p.a.conn.is_closing());
    p.advance(Duration::from_millis(1));
    assert!(
        p.a.conn.is_closing(),
        "idle 5 s after the application caught up"
    );
}

#[test]
fn durations_too_long_to_reach_are_no_deadline_not_a_panic() {
    let t = Timers {
        ping_interval: Some(Duration::from_secs(1)),
        ping_timeout: Duration::MAX,
        idle_timeout: Some(Duration::MAX),
        close_timeout: Duration::MAX,
    };
    let mut p = Pair::new(t, t);
    p.advance(Duration::from_secs(10));
    p.a.conn.close(CloseCode::NORMAL, "bye", p.now);
    assert_eq!(p.a.conn.close_deadline(), None);
    p.b.dead = true;
    p.advance(Duration::from_secs(10));
    assert!(p.a.error.is_none() && p.a.conn.outcome().is_none());
}
