//! Two muxes joined directly: what one hands to its sealer, the other receives as the record
//! layer would deliver it (pieces reassembled into messages, each frame charged its credit).
//! No time, no sockets: every property is checked at the exact frame where it matters.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::core::record::Piece;

const KIB: u64 = 1024;

fn config(max_channels: u32) -> Config {
    Config {
        limits: Limits {
            max_message: 4 << 20,
            window: 1 << 20,
            channel_window: 256 * 1024,
            max_channels,
        },
        channel_buffer: 8 << 20,
        max_channel_window: 2 << 20,
    }
}

/// One side: its mux, what its application was told, and messages being reassembled.
struct Side {
    mux: Mux,
    events: Vec<Event>,
    partial: HashMap<u32, BytesMut>,
    /// Channels whose application reads at once (the others let messages pile up).
    reading: Vec<u32>,
    frames_sent: usize,
}

impl Side {
    fn new(role: Role, ours: Config, peer: Limits) -> Self {
        Side {
            mux: Mux::new(role, ours, peer),
            events: Vec::new(),
            partial: HashMap::new(),
            reading: vec![DEFAULT],
            frames_sent: 0,
        }
    }

    /// Messages taken so far on `channel`.
    fn messages(&self, channel: u32) -> Vec<Bytes> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    channel: c,
                    message,
                    ..
                } if *c == channel => Some(message.clone().into_bytes()),
                _ => None,
            })
            .collect()
    }

    /// Credit received and not taken on `channel` (what the peer makes us hold there).
    fn unread(&self, channel: u32) -> u64 {
        self.mux
            .channels
            .get(&channel)
            .map_or(0, |c| c.window.unread())
    }

    /// The application reads `channel` from now on, taking what piled up.
    fn read(&mut self, channel: u32) {
        self.reading.push(channel);
        let pending: Vec<u64> = self
            .events
            .iter_mut()
            .filter_map(|e| match e {
                Event::Message {
                    channel: c, credit, ..
                } if *c == channel && *credit > 0 => Some(std::mem::take(credit)),
                _ => None,
            })
            .collect();
        for credit in pending {
            self.mux.consumed(channel, credit);
        }
    }

    fn take_events(&mut self) {
        while let Some(mut e) = self.mux.poll_event() {
            if let Event::Message {
                channel, credit, ..
            } = &mut e
            {
                if self.reading.contains(channel) {
                    self.mux.consumed(*channel, std::mem::take(credit));
                }
            }
            self.events.push(e);
        }
    }

    /// Hand one frame of ours to `to`, as its record layer would. None: nothing to send.
    fn send_one(&mut self, to: &mut Side) -> Option<Result<()>> {
        let out = self.mux.poll()?;
        self.take_events(); // sending can end a channel too (our FIN or RESET after the peer's)
        self.frames_sent += 1;
        let r = match out {
            Output::Control(frame) => to.mux.handle_control(frame),
            Output::Piece(p) => to.piece(p.channel, p.piece, &p.chunk),
        };
        to.take_events();
        Some(r)
    }

    fn piece(&mut self, channel: u32, piece: Piece, chunk: &[u8]) -> Result<()> {
        let first = !self.partial.contains_key(&channel);
        let credit = piece.credit(first);
        let buf = self.partial.entry(channel).or_default();
        buf.extend_from_slice(chunk);
        if piece.more {
            return self.mux.handle_fragment(channel, credit);
        }
        let message = self.partial.remove(&channel).expect("just filled").freeze();
        self.mux.handle_message(channel, message.into(), credit)
    }
}

struct Pair {
    a: Side,
    b: Side,
}

impl Pair {
    fn new(max_channels: u32) -> Pair {
        Self::with(config(max_channels), config(max_channels))
    }

    fn with(a: Config, b: Config) -> Pair {
        Pair {
            a: Side::new(Role::Client, a, b.limits),
            b: Side::new(Role::Server, b, a.limits),
        }
    }

    /// Move frames both ways until neither side has anything to send; the first error.
    fn drive(&mut self) -> Result<()> {
        loop {
            let mut moved = false;
            while let Some(r) = self.a.send_one(&mut self.b) {
                r?;
                moved = true;
            }
            while let Some(r) = self.b.send_one(&mut self.a) {
                r?;
                moved = true;
            }
            if !moved {
                return Ok(());
            }
        }
    }
}

fn bytes(len: usize, tag: u8) -> Bytes {
    Bytes::from(vec![tag; len])
}

#[test]
fn a_stalled_reader_holds_its_window_while_another_channel_moves_on() {
    let mut p = Pair::new(8);
    let slow = p.a.mux.open("slow").unwrap();
    let fast = p.a.mux.open("fast").unwrap();
    p.drive().unwrap();
    p.b.read(fast);
    for i in 0..64 {
        p.a.mux.send(slow, bytes(64 * 1024, 1), 0).unwrap();
        p.a.mux.send(fast, bytes(64 * 1024, i), 0).unwrap();
    }
    p.drive().unwrap();
    // The fast channel's 4 MiB all arrived; the slow one stopped at its window.
    assert_eq!(p.b.messages(fast).len(), 64);
    let window = config(8).limits.channel_window as u64;
    assert!(p.b.unread(slow) <= window, "{}", p.b.unread(slow));
    assert!(p.b.unread(slow) > window / 2, "the window was used");
    assert!(
        !p.a.mux.is_drained(),
        "the slow channel's messages wait for credit"
    );
    // Reading it lets the rest through, in order.
    p.b.read(slow);
    p.drive().unwrap();
    assert_eq!(p.b.messages(slow).len(), 64);
    assert!(p.a.mux.is_drained());
}

#[test]
fn the_window_grows_for_a_reader_that_keeps_up_within_its_bounds() {
    let mut p = Pair::new(8);
    let ch = p.a.mux.open("bulk").unwrap();
    p.drive().unwrap();
    p.b.read(ch);
    // Sent ahead of the window (as over a path with latency): the sender runs dry and says so.
    for _ in 0..200 {
        p.a.mux.send(ch, bytes(64 * 1024, 7), 0).unwrap();
    }
    p.drive().unwrap();
    assert_eq!(p.b.messages(ch).len(), 200);
    let grown = p.b.mux.channels[&ch].window.window;
    assert_eq!(grown, config(8).max_channel_window, "doubled up to its cap");
    assert_eq!(p.b.mux.grown, grown - 256 * KIB);
    // A channel nobody reads never grows, however the peer asks (BLOCKED).
    let idle = p.a.mux.open("idle").unwrap();
    for _ in 0..40 {
        p.a.mux.send(idle, bytes(64 * 1024, 1), 0).unwrap();
    }
    p.drive().unwrap();
    assert_eq!(p.b.mux.channels[&idle].window.window, 256 * KIB);
    // Closing returns the growth to the budget.
    p.a.mux.finish(ch).unwrap();
    p.b.mux.finish(ch).unwrap();
    p.drive().unwrap();
    assert_eq!(p.b.mux.grown, 0);
}

#[test]
fn a_message_that_crosses_the_limit_gets_the_credit_reading_freed() {
    // Less than half a window read, then a message that needs a little more than the limit
    // left: the credit the reader freed goes out as soon as the sender says it is blocked
    // (half-window updates alone would never send it, and both sides would wait for good).
    for (kind, first, second) in [
        ("default", 1usize << 20, 3 << 19),
        ("channel", 100 << 10, 200 << 10),
    ] {
        let mut p = Pair::new(8);
        let ch = if kind == "default" {
            DEFAULT
        } else {
            let ch = p.a.mux.open("x").unwrap();
            p.drive().unwrap();
            p.b.read(ch);
            ch
        };
        p.a.mux.send(ch, bytes(first, 1), 0).unwrap();
        p.a.mux.send(ch, bytes(second, 2), 0).unwrap();
        p.drive().unwrap();
        assert_eq!(p.b.messages(ch).len(), 2, "{kind}");
        assert!(p.a.mux.is_drained(), "{kind}");
    }
}

#[test]
fn blocked_alone_grows_nothing() {
    // A peer that sends no data and claims to be blocked, again and again, on a channel our
    // application never read: its window stays as it was (growth needs our reader to read).
    let mut p = Pair::new(8);
    let ch = p.a.mux.open("x").unwrap();
    p.drive().unwrap();
    for round in 1..=20u64 {
        let granted = p.b.mux.channels[&ch].window.granted;
        p.b.mux
            .handle_control(ChannelFrame::Blocked {
                channel: ch,
                needed: granted + round,
            })
            .unwrap();
    }
    assert_eq!(p.b.mux.channels[&ch].window.window, 256 * KIB);
    assert_eq!(p.b.mux.grown, 0);
}

#[test]
fn growth_is_bounded_by_the_connection_budget() {
    let mut small = config(8);
    small.channel_buffer = 256 * KIB;
    let mut p = Pair::with(config(8), small);
    let (x, y) = (p.a.mux.open("x").unwrap(), p.a.mux.open("y").unwrap());
    p.drive().unwrap();
    p.b.read(x);
    p.b.read(y);
    for _ in 0..100 {
        p.a.mux.send(x, bytes(64 * 1024, 1), 0).unwrap();
        p.a.mux.send(y, bytes(64 * 1024, 2), 0).unwrap();
    }
    p.drive().unwrap();
    let windows = p.b.mux.channels[&x].window.window + p.b.mux.channels[&y].window.window;
    assert_eq!(
        windows,
        2 * 256 * KIB + 256 * KIB,
        "initial windows plus the budget"
    );
}

#[test]
fn a_message_larger_than_its_window_gets_through_one_at_a_time() {
    let mut p = Pair::new(8);
    let (x, y) = (p.a.mux.open("x").unwrap(), p.a.mux.open("y").unwrap());
    p.drive().unwrap();
    // 3 MiB each, windows of 256 KiB growing to 2 MiB at most: neither fits.
    p.a.mux.send(x, bytes(3 << 20, 1), 0).unwrap();
    p.a.mux.send(y, bytes(3 << 20, 2), 0).unwrap();
    p.drive().unwrap();
    let (got_x, got_y) = (p.b.messages(x).len(), p.b.messages(y).len());
    assert_eq!(got_x + got_y, 1, "one oversize grant at a time");
    let first = if got_x == 1 { x } else { y };
    let second = if first == x { y } else { x };
    assert!(p.b.unread(second) <= 256 * KIB);
    // Taking the first releases the grant to the second.
    p.b.read(first);
    p.drive().unwrap();
    assert_eq!(p.b.messages(second).len(), 1);
    assert_eq!(p.b.messages(second)[0].len(), 3 << 20);
}

#[test]
fn the_default_channel_is_flow_controlled_by_its_window() {
    let mut p = Pair::new(8);
    p.b.reading.clear(); // the default channel's reader stops
    for _ in 0..40 {
        p.a.mux.send(DEFAULT, bytes(64 * 1024, 3), 0).unwrap();
    }
    p.drive().unwrap();
    assert!(p.b.unread(DEFAULT) <= 1 << 20);
    assert!(p.b.messages(DEFAULT).len() < 40);
    p.b.read(DEFAULT);
    p.drive().unwrap();
    assert_eq!(p.b.messages(DEFAULT).len(), 40);
}

#[test]
fn channels_take_turns_frame_by_frame() {
    let mut p = Pair::new(8);
    let (x, y) = (p.a.mux.open("x").unwrap(), p.a.mux.open("y").unwrap());
    p.drive().unwrap();
    p.a.mux.send(x, bytes(200_000, 1), 0).unwrap();
    p.a.mux.send(y, bytes(10, 2), 0).unwrap();
    // y's short message goes right after x's first frame, not after all of x.
    let mut order = Vec::new();
    while let Some(Output::Piece(piece)) = p.a.mux.poll() {
        order.push(piece.channel);
    }
    assert_eq!(order, vec![x, y, x, x, x]);
}

#[test]
fn a_peer_past_its_credit_is_cut_off() {
    let mut p = Pair::new(8);
    let ch = p.a.mux.open("x").unwrap();
    p.drive().unwrap();
    let window = 256 * KIB;
    p.b.mux.handle_fragment(ch, window).unwrap();
    let err = p.b.mux.handle_fragment(ch, 1).unwrap_err();
    assert!(matches!(
        err,
        Error::Protocol(PeerMisbehaved::WindowOverrun { .. })
    ));
    // The default channel's window too.
    let mut p = Pair::new(8);
    let err = p.b.mux.handle_fragment(DEFAULT, (1 << 20) + 1).unwrap_err();
    assert!(matches!(
        err,
        Error::Protocol(PeerMisbehaved::WindowOverrun { .. })
    ));
}

#[test]
fn opening_beyond_the_announced_limit() {
    let mut p = Pair::new(2);
    p.a.mux.open("1").unwrap();
    p.a.mux.open("2").unwrap();
    assert!(matches!(p.a.mux.open("3"), Err(Error::ChannelLimit(2))));
    p.drive().unwrap();
    // A peer that opens one more anyway breaks the protocol.
    let err =
        p.b.mux
            .handle_control(ChannelFrame::Open {
                channel: 5,
                name: String::new(),
            })
            .unwrap_err();
    assert!(matches!(
        err,
        Error::Protocol(PeerMisbehaved::TooManyChannels(2))
    ));
    // A channel that ended both ways frees its place.
    p.a.mux.finish(1).unwrap();
    p.b.mux.finish(1).unwrap();
    p.drive().unwrap();
    assert!(p.a.events.contains(&Event::Freed { channel: 1 }));
    assert!(p.a.mux.can_open());
    assert_eq!(p.a.mux.open("3").unwrap(), 5);
}

#[test]
fn ids_parity_and_order_are_checked() {
    let mut p = Pair::new(8);
    let open = |channel| ChannelFrame::Open {
        channel,
        name: String::new(),
    };
    // The server's mux: clients open odd ids, increasing.
    assert!(matches!(
        p.b.mux.handle_control(open(2)),
        Err(Error::Protocol(PeerMisbehaved::ChannelParity(2)))
    ));
    // In order, without gaps (so every id below the last one was opened).
    assert!(matches!(
        p.b.mux.handle_control(open(3)),
        Err(Error::Protocol(
            PeerMisbehaved::ChannelIdNotIncreasing { .. }
        ))
    ));
    let mut p = Pair::new(8);
    p.b.mux.handle_control(open(1)).unwrap();
    p.b.mux.handle_control(open(3)).unwrap();
    for bad in [3, 7] {
        assert!(matches!(
            p.b.mux.handle_control(open(bad)),
            Err(Error::Protocol(
                PeerMisbehaved::ChannelIdNotIncreasing { .. }
            ))
        ));
    }
    // Data on a channel nobody opened.
    assert!(matches!(
        p.b.mux
            .handle_message(9, Bytes::new().into(), MESSAGE_CREDIT),
        Err(Error::Protocol(PeerMisbehaved::UnknownChannel { .. }))
    ));
    assert!(matches!(
        p.b.mux.handle_control(ChannelFrame::Window {
            channel: 4,
            limit: 1
        }),
        Err(Error::Protocol(PeerMisbehaved::UnknownChannel { .. }))
    ));
}

#[test]
fn nothing_follows_a_peers_fin_on_its_channel() {
    let mut p = Pair::new(8);
    let ch = p.a.mux.open("x").unwrap();
    p.a.mux.send(ch, bytes(10, 1), 0).unwrap();
    p.a.mux.finish(ch).unwrap();
    assert!(matches!(
        p.a.mux.send(ch, bytes(1, 1), 0),
        Err(Error::ChannelClosed)
    ));
    p.drive().unwrap();
    p.b.take_events();
    let kinds: Vec<_> = p.b.events.iter().map(std::mem::discriminant).collect();
    assert_eq!(
        kinds.len(),
        3,
        "opened, the message, finished: {:?}",
        p.b.events
    );
    assert_eq!(p.b.events[2], Event::Finished { channel: ch });
    for frame in [
        Err(ch),
        Ok(ChannelFrame::Fin { channel: ch }),
        Ok(ChannelFrame::Blocked {
            channel: ch,
            needed: 1 << 30,
        }),
    ] {
        let r = match frame {
            Err(ch) => {
                p.b.mux
                    .handle_message(ch, Bytes::new().into(), MESSAGE_CREDIT)
            }
            Ok(f) => p.b.mux.handle_control(f),
        };
        assert!(
            matches!(
                r,
                Err(Error::Protocol(PeerMisbehaved::AfterChannelEnd { .. }))
            ),
            "{r:?}"
        );
    }
    // The other way still works: b sends, then finishes; then the channel is gone.
    p.b.mux.send(ch, bytes(5, 2), 0).unwrap();
    p.b.mux.finish(ch).unwrap();
    p.drive().unwrap();
    assert_eq!(p.a.messages(ch).len(), 1);
    assert_eq!(p.a.mux.open_channels(), 0);
    assert_eq!(p.b.mux.open_channels(), 0);
    // Frames for it now: a late WINDOW is ignored, data is refused.
    p.b.mux
        .handle_control(ChannelFrame::Window {
            channel: ch,
            limit: 1 << 40,
        })
        .unwrap();
    assert!(p
        .b
        .mux
        .handle_message(ch, Bytes::new().into(), MESSAGE_CREDIT)
        .is_err());
}

#[test]
fn a_reset_is_answered_and_what_was_in_flight_is_dropped_within_credit() {
    let mut p = Pair::new(8);
    let ch = p.a.mux.open("x").unwrap();
    p.drive().unwrap();
    p.a.mux.send(ch, bytes(100_000, 1), 0).unwrap();
    // b resets before a's data arrives: the data is still charged, then dropped.
    p.b.mux.reset(ch, 4242, "no thanks").unwrap();
    while let Some(r) = p.a.send_one(&mut p.b) {
        r.unwrap();
    }
    assert!(p.b.messages(ch).is_empty(), "dropped after our reset");
    assert!(p.b.mux.channels[&ch].window.received > 0, "still charged");
    p.drive().unwrap();
    assert!(p.a.events.contains(&Event::Reset {
        channel: ch,
        code: 4242,
        reason: "no thanks".into()
    }));
    assert!(p.a.events.contains(&Event::Freed { channel: ch }));
    assert!(p.b.events.contains(&Event::Freed { channel: ch }));
    assert!(matches!(
        p.a.mux.send(ch, bytes(1, 1), 0),
        Err(Error::ChannelClosed)
    ));
    // Reserved reset codes do not travel.
    let mut frame = Vec::new();
    crate::core::frame::Frame::Reset {
        channel: 3,
        code: 7,
        reason: "",
    }
    .write_control(&mut frame);
    assert!(crate::core::frame::Frame::parse(&frame).is_err());
}

#[test]
fn replies_stay_one_per_kind_per_channel() {
    let mut p = Pair::new(8);
    let ch = p.a.mux.open("x").unwrap();
    p.drive().unwrap();
    // A peer that never reads our frames while we consume a lot queues one WINDOW, not many.
    p.b.mux.handle_fragment(ch, 200 * KIB).unwrap();
    for _ in 0..1000 {
        p.b.mux.consumed(ch, 200);
    }
    let mut windows = 0;
    while let Some(out) = p.b.mux.poll() {
        assert!(matches!(out, Output::Control(ChannelFrame::Window { .. })));
        windows += 1;
    }
    assert_eq!(windows, 1);
    // BLOCKED floods likewise: one per limit.
    for _ in 0..100 {
        p.b.mux
            .handle_control(ChannelFrame::Blocked {
                channel: ch,
                needed: p.b.mux.channels[&ch].window.granted + 1,
            })
            .unwrap();
    }
    let mut queued = 0;
    while p.b.mux.poll().is_some() {
        queued += 1;
    }
    assert!(queued <= 1, "{queued}");
    // An impossible BLOCKED (beyond any message) is a protocol error.
    let granted = p.b.mux.channels[&ch].window.granted;
    assert!(matches!(
        p.b.mux.handle_control(ChannelFrame::Blocked {
            channel: ch,
            needed: granted + (4 << 20) + MESSAGE_CREDIT + 1,
        }),
        Err(Error::Protocol(PeerMisbehaved::BlockedOutOfRange { .. }))
    ));
}

#[test]
fn many_channels_move_messages_in_order() {
    let mut p = Pair::new(1000);
    let ids: Vec<u32> = (0..1000)
        .map(|i| p.a.mux.open(&i.to_string()).unwrap())
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..3u8 {
            p.a.mux.send(id, bytes(i % 700 + 1, j), 0).unwrap();
        }
        p.b.reading.push(id);
    }
    p.drive().unwrap();
    for (i, &id) in ids.iter().enumerate() {
        let got = p.b.messages(id);
        assert_eq!(got.len(), 3);
        for (j, m) in got.iter().enumerate() {
            assert_eq!(&m[..], &bytes(i % 700 + 1, j as u8)[..]);
        }
    }
    assert_eq!(p.b.mux.open_channels(), 1000);
}

#[test]
fn a_connection_that_refuses_channels_resets_them_and_holds_nothing() {
    let mut p = Pair::new(8);
    p.b.mux.refuse_channels();
    let ch = p.a.mux.open("x").unwrap();
    for _ in 0..4 {
        p.a.mux.send(ch, bytes(60_000, 1), 0).unwrap();
    }
    p.drive().unwrap();
    assert!(p
        .b
        .events
        .iter()
        .all(|e| !matches!(e, Event::Opened { .. })));
    assert!(p.b.messages(ch).is_empty());
    assert!(p
        .a
        .events
        .iter()
        .any(|e| matches!(e, Event::Reset { code: 0, .. })));
    assert_eq!((p.a.mux.open_channels(), p.b.mux.open_channels()), (0, 0));
}
