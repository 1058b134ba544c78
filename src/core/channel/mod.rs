//! Channels: many ordered message streams over one connection (PROTOCOL.md §4.7), as a state
//! machine with no I/O. The connection hands it what the peer sent on channels (data frames,
//! already reassembled by the record layer and charged frame by frame, and channel control
//! frames) and takes from it, frame by frame, what to seal next.
//!
//! ```text
//!  open / send / finish / reset ─▶ per-channel queues ─▶ round robin, credit permitting ─▶ frames
//!  frames ─▶ [ids, counts, credit checked] ─▶ Event (opened, message, finished, reset) ─▶ app
//!  app took a message ─▶ consumed ─▶ WINDOW (half a window at a time; grows on BLOCKED)
//! ```
//!
//! Channel 0 is the default channel: always open, its messages DATA frames, flow-controlled
//! like every channel (its window is the receiver's `recv_buffer`), never opened, finished or
//! reset. A channel whose reader stops holds at most its window: the connection keeps reading,
//! so the other channels move on.
//!
//! Bounds (everything the peer can make this hold): channels the peer opened, at most the
//! `max_channels` we announced (more is a protocol error: both sides count the same frames);
//! per channel, unread credit within its window, plus one message larger than its window per
//! connection; windows grow beyond their initial size only within `channel_buffer` in all;
//! control frames to send, at most one of each kind per channel (a later value replaces an
//! earlier one), so no reply queue grows with what the peer sends.

pub mod flow;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use self::flow::{RecvWindow, SendCredit};
use crate::core::message::Message;
use crate::core::record::{ChannelFrame, Piece, MESSAGE_CREDIT};
use crate::error::{Error, PeerMisbehaved, Result};

/// The default channel.
pub const DEFAULT: u32 = 0;

/// The reset code of a channel reset without one, or whose handle was dropped.
pub const CANCELLED: u16 = 0;

/// What one side announces in the handshake about what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest message it accepts, on any channel.
    pub max_message: u64,
    /// The default channel's initial window (its `recv_buffer`).
    pub window: u32,
    /// Every other channel's initial window.
    pub channel_window: u32,
    /// How many channels the other side may have open at once (0: it may open none).
    pub max_channels: u32,
}

/// The size of [`Limits`] on the wire.
pub const LIMITS_LEN: usize = 20;

impl Limits {
    /// `max_message:u64 window:u32 channel_window:u32 max_channels:u32`, big-endian.
    pub fn encode(&self) -> [u8; LIMITS_LEN] {
        let mut b = [0u8; LIMITS_LEN];
        b[..8].copy_from_slice(&self.max_message.to_be_bytes());
        b[8..12].copy_from_slice(&self.window.to_be_bytes());
        b[12..16].copy_from_slice(&self.channel_window.to_be_bytes());
        b[16..].copy_from_slice(&self.max_channels.to_be_bytes());
        b
    }

    /// The peer's limits. A window below the minimum is refused (M29): with a window smaller
    /// than a frame, no full fragment could ever be sent.
    pub fn decode(b: &[u8; LIMITS_LEN]) -> Result<Limits> {
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let limits = Limits {
            max_message: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            window: u32_at(8),
            channel_window: u32_at(12),
            max_channels: u32_at(16),
        };
        if limits.window < crate::core::frame::MIN_WINDOW
            || limits.channel_window < MIN_CHANNEL_WINDOW
        {
            return Err(Error::Protocol(PeerMisbehaved::LimitsTooSmall {
                window: limits.window,
                channel_window: limits.channel_window,
            }));
        }
        Ok(limits)
    }
}

/// This side's settings: what it announces, and how far windows may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub limits: Limits,
    /// Growth of all channels' windows beyond their initial size, together.
    pub channel_buffer: u64,
    /// The largest a channel's window grows.
    pub max_channel_window: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits {
                max_message: 16 << 20,
                window: 4 << 20,
                channel_window: 256 << 10,
                max_channels: 128,
            },
            channel_buffer: 64 << 20,
            max_channel_window: 16 << 20,
        }
    }
}

/// The smallest initial window of a channel: two full frames, so a message of any size moves
/// without waiting for its own window update mid-frame.
pub const MIN_CHANNEL_WINDOW: u32 = 128 * 1024;

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.limits.channel_window < MIN_CHANNEL_WINDOW {
            return Err(Error::config("channel_window must be at least 128 KiB"));
        }
        if self.max_channel_window < self.limits.channel_window as u64 {
            return Err(Error::config(
                "max_channel_window must be at least channel_window",
            ));
        }
        Ok(())
    }
}

/// Which ids this side opens: the client odd ones, the server even ones (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// What the peer did, for the application.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a channel.
    Opened { channel: u32, name: String },
    /// A message on a channel (the default one included), with the credit it holds until the
    /// application takes it ([`Mux::consumed`]).
    Message {
        channel: u32,
        message: Message,
        credit: u64,
    },
    /// The peer finished the channel: no message follows those delivered.
    Finished { channel: u32 },
    /// The peer reset the channel: what it had not delivered is dropped, our side of it ends
    /// (our RESET answers, unless we had finished or reset it).
    Reset {
        channel: u32,
        code: u16,
        reason: String,
    },
    /// Both directions ended: the channel no longer counts against either side's limit.
    Freed { channel: u32 },
}

/// What waits in a channel's send queue.
enum Item {
    Message {
        msg: Bytes,
        /// What the driver counted it as (handed back once the message is sealed).
        cost: usize,
        /// Bytes already handed to the sealer.
        offset: usize,
    },
    Fin,
}

/// Control frames waiting for one channel: one slot of each kind.
#[derive(Default)]
struct Pending {
    open: Option<String>,
    window: bool,
    blocked: Option<u64>,
    reset: Option<(u16, String)>,
}

impl Pending {
    fn any(&self) -> bool {
        self.open.is_some() || self.window || self.blocked.is_some() || self.reset.is_some()
    }
}

struct Channel {
    /// Opened by us (else by the peer).
    ours: bool,
    queue: VecDeque<Item>,
    credit: SendCredit,
    window: RecvWindow,
    /// The application may still send (no finish or reset asked for).
    sending: bool,
    /// Our FIN or RESET was handed to the sealer: nothing more goes out on it.
    sent_end: bool,
    /// The peer's FIN or RESET arrived: nothing more comes in on it.
    peer_ended: bool,
    /// We reset it: what still arrives (sent before the peer saw our RESET) is dropped.
    reset_by_us: bool,
    /// Nobody reads it any more (its handle was dropped): data that still arrives resets it.
    abandoned: bool,
    /// How it was reset, for the senders that try after: (code, reason, by the peer).
    reset: Option<(u16, String, bool)>,
    pending: Pending,
    /// In the round robin of channels with something sendable.
    ready: bool,
    /// In the queue of channels with control frames waiting.
    controlled: bool,
}

impl Channel {
    fn new(ours: bool, send_credit: u64, window: u64) -> Self {
        Channel {
            ours,
            queue: VecDeque::new(),
            credit: SendCredit::new(send_credit),
            window: RecvWindow::new(window),
            sending: true,
            sent_end: false,
            peer_ended: false,
            reset_by_us: false,
            abandoned: false,
            reset: None,
            pending: Pending::default(),
            ready: false,
            controlled: false,
        }
    }
}

/// One frame's worth of a queued message, for the sealer.
#[derive(Debug)]
pub struct PieceOut {
    pub channel: u32,
    pub piece: Piece,
    /// The bytes the piece covers (a slice of the message: no copy).
    pub chunk: Bytes,
    /// The message's cost, when this is its last piece: the driver gives it back.
    pub released: Option<usize>,
}

/// What [`Mux::poll`] hands to the sealer next.
#[derive(Debug)]
pub enum Output {
    Control(ChannelFrame),
    Piece(PieceOut),
}

/// Every channel of one connection.
pub struct Mux {
    ours: Config,
    peer: Limits,
    channels: HashMap<u32, Channel>,
    /// The next id we open.
    next_id: u32,
    /// The highest id the peer opened.
    last_peer_id: u32,
    /// Channels we opened that count against the peer's limit, and the peer's against ours.
    opened_by_us: u32,
    opened_by_peer: u32,
    /// Channels with something sendable (data with credit, or a FIN), in turn.
    ready: VecDeque<u32>,
    /// Channels with control frames waiting, oldest first.
    control: VecDeque<u32>,
    /// The one grant beyond a channel's window: (channel, until its consumption reaches).
    oversize: Option<(u32, u64)>,
    /// Channels waiting for the oversize grant, in order.
    oversize_waiting: VecDeque<u32>,
    /// Growth of windows beyond their initial size, all channels together.
    grown: u64,
    events: VecDeque<Event>,
    /// Bytes of messages queued and not yet handed to the sealer, all channels.
    queued_bytes: usize,
    /// Channels the peer opens are reset at once (a connection of an exactly-once session:
    /// sessions carry the default channel only, §4.7), so nothing of theirs is held.
    refusing: bool,
}

impl Mux {
    pub fn new(role: Role, ours: Config, peer: Limits) -> Self {
        let mut channels = HashMap::new();
        channels.insert(
            DEFAULT,
            Channel::new(true, peer.window as u64, ours.limits.window as u64),
        );
        Mux {
            ours,
            peer,
            channels,
            next_id: match role {
                Role::Client => 1,
                Role::Server => 2,
            },
            last_peer_id: 0,
            opened_by_us: 0,
            opened_by_peer: 0,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            oversize: None,
            oversize_waiting: VecDeque::new(),
            grown: 0,
            events: VecDeque::new(),
            queued_bytes: 0,
            refusing: false,
        }
    }

    /// Reset every channel the peer opens from now on (see `refusing`).
    pub fn refuse_channels(&mut self) {
        self.refusing = true;
    }

    pub fn peer_limits(&self) -> &Limits {
        &self.peer
    }

    /// The next event for the application. Each call of a `handle_*` method adds at most two.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Channels open now (the default one not counted).
    pub fn open_channels(&self) -> usize {
        self.channels.len() - 1
    }

    /// Whether we may open a channel now (the peer's limit is not reached).
    pub fn can_open(&self) -> bool {
        self.opened_by_us < self.peer.max_channels
    }

    // ---- the application ----

    /// Open a channel; its OPEN goes out before anything sent on it.
    pub fn open(&mut self, name: &str) -> Result<u32> {
        if !self.can_open() {
            return Err(Error::ChannelLimit(self.peer.max_channels));
        }
        let id = self.next_id;
        if id > u32::MAX - 2 {
            return Err(Error::Misuse(
                "channel ids are exhausted on this connection",
            ));
        }
        self.next_id += 2;
        self.opened_by_us += 1;
        let mut ch = Channel::new(
            true,
            self.peer.channel_window as u64,
            self.ours.limits.channel_window as u64,
        );
        ch.pending.open = Some(name.to_owned());
        self.channels.insert(id, ch);
        self.want_control(id);
        Ok(id)
    }

    /// Queue a message on `channel`; `cost` is what the driver counted it as, handed back in
    /// the [`PieceOut`] that carries its last bytes.
    pub fn send(&mut self, channel: u32, msg: Bytes, cost: usize) -> Result<()> {
        if msg.len() as u64 > self.peer.max_message {
            return Err(Error::MessageTooLarge {
                size: msg.len() as u64,
                limit: self.peer.max_message,
            });
        }
        let ch = self.sendable(channel)?;
        let len = msg.len();
        ch.queue.push_back(Item::Message {
            msg,
            cost,
            offset: 0,
        });
        self.queued_bytes += len;
        self.make_ready(channel);
        Ok(())
    }

    fn sendable(&mut self, channel: u32) -> Result<&mut Channel> {
        let ch = self
            .channels
            .get_mut(&channel)
            .ok_or(Error::ChannelClosed)?;
        if let Some((code, reason, by_peer)) = &ch.reset {
            return Err(Error::ChannelReset {
                code: *code,
                reason: reason.clone(),
                by_peer: *by_peer,
            });
        }
        if !ch.sending {
            return Err(Error::ChannelClosed);
        }
        Ok(ch)
    }

    /// True when a message of `len` bytes may be sealed at once on the default channel (one
    /// frame, nothing queued ahead of it there, its credit available): see [`Mux::take_now`].
    pub fn can_send_now(&self, len: usize) -> bool {
        let ch = &self.channels[&DEFAULT];
        len <= crate::core::record::MAX_CHUNK
            && ch.queue.is_empty()
            && ch.credit.available() >= len as u64 + MESSAGE_CREDIT
    }

    /// Charge a default-channel message sealed at once (checked by `can_send_now`).
    pub fn take_now(&mut self, len: usize) {
        let ch = self.channels.get_mut(&DEFAULT).expect("always there");
        let taken = ch.credit.take(len as u64 + MESSAGE_CREDIT);
        debug_assert!(taken, "checked by can_send_now");
    }

    /// Half-close: FIN goes out after what is queued; the peer may still send.
    pub fn finish(&mut self, channel: u32) -> Result<()> {
        if channel == DEFAULT {
            return Err(Error::Misuse(
                "the default channel is closed with the connection",
            ));
        }
        let ch = self.sendable(channel)?;
        ch.sending = false;
        ch.queue.push_back(Item::Fin);
        self.make_ready(channel);
        Ok(())
    }

    /// Abandon a channel: what is queued is dropped, what arrives from now on is dropped, and
    /// the peer is told with RESET (after our FIN too: it tells the peer to stop sending).
    pub fn reset(&mut self, channel: u32, code: u16, reason: &str) -> Result<()> {
        if channel == DEFAULT {
            return Err(Error::Misuse("the default channel cannot be reset"));
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ok(()); // over already
        };
        if ch.reset_by_us {
            return Ok(());
        }
        drop_queue(ch, &mut self.queued_bytes);
        ch.sending = false;
        ch.reset_by_us = true;
        ch.reset.get_or_insert((code, reason.to_owned(), false));
        ch.pending.blocked = None;
        ch.pending.window = false;
        ch.pending.reset = Some((
            code,
            crate::core::frame::truncate_utf8(reason, crate::core::frame::MAX_CLOSE_REASON)
                .to_owned(),
        ));
        self.want_control(channel);
        Ok(())
    }

    /// The application let go of the channel (dropped its last handle): what it queued still
    /// goes out, then FIN; if the peer sends anything more, nobody would read it, so the
    /// channel is reset then (code 0), and the peer's senders learn it.
    pub fn abandon(&mut self, channel: u32) {
        if channel == DEFAULT {
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        ch.abandoned = true;
        if ch.window.unread() > 0 && !ch.peer_ended {
            // What it held unread is gone with the handle, and its credit with it: a sender
            // waiting for that credit would wait for good.
            let _ = self.reset(channel, CANCELLED, "nobody reads this channel");
            return;
        }
        if ch.sending {
            ch.sending = false;
            ch.queue.push_back(Item::Fin);
            self.make_ready(channel);
        }
    }

    /// The application took a message worth `credit` from `channel`: the peer may send that
    /// much more (a WINDOW once half a window is free).
    pub fn consumed(&mut self, channel: u32, credit: u64) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let update = ch.window.consume(credit) && !ch.reset_by_us && !ch.peer_ended;
        let consumed = ch.window.consumed;
        if update {
            ch.pending.window = true;
            self.want_control(channel);
        }
        if let Some((c, until)) = self.oversize {
            if c == channel && consumed >= until {
                self.oversize = None;
                self.next_oversize();
            }
        }
    }

    // ---- the peer ----

    /// A message the record layer completed on `channel`; `credit` is its last frame's.
    pub fn handle_message(&mut self, channel: u32, message: Message, credit: u64) -> Result<()> {
        let ch = self.receiving(channel, "data")?;
        charge(ch, channel, credit)?;
        ch.window.in_message = 0;
        if ch.abandoned && !ch.reset_by_us {
            return self.reset(channel, CANCELLED, "nobody reads this channel");
        }
        if ch.reset_by_us {
            return Ok(()); // sent before the peer saw our RESET: dropped
        }
        // The application gives back the whole message's credit when it takes it (its
        // earlier fragments were charged as they came).
        let credit = message.len() as u64 + MESSAGE_CREDIT;
        self.events.push_back(Event::Message {
            channel,
            message,
            credit,
        });
        Ok(())
    }

    /// A fragment of a message still incomplete on `channel`.
    pub fn handle_fragment(&mut self, channel: u32, credit: u64) -> Result<()> {
        let ch = self.receiving(channel, "data")?;
        charge(ch, channel, credit)?;
        ch.window.in_message += credit;
        if ch.abandoned && !ch.reset_by_us {
            return self.reset(channel, CANCELLED, "nobody reads this channel");
        }
        Ok(())
    }

    pub fn handle_control(&mut self, frame: ChannelFrame) -> Result<()> {
        match frame {
            ChannelFrame::Open { channel, name } => self.peer_opened(channel, name),
            ChannelFrame::Window { channel, limit } => {
                let existed = self.existed(channel);
                let Some(ch) = lookup(&mut self.channels, existed, channel, "WINDOW")? else {
                    return Ok(()); // a channel over on our side: its late WINDOW is moot
                };
                if ch.credit.raise(limit) && !ch.queue.is_empty() {
                    self.make_ready(channel);
                }
                Ok(())
            }
            ChannelFrame::Blocked { channel, needed } => self.peer_blocked(channel, needed),
            ChannelFrame::Fin { channel } => {
                self.receiving(channel, "FIN")?.peer_ended = true;
                self.events.push_back(Event::Finished { channel });
                self.maybe_free(channel);
                Ok(())
            }
            ChannelFrame::Reset {
                channel,
                code,
                reason,
            } => {
                let existed = self.existed(channel);
                let Some(ch) = lookup(&mut self.channels, existed, channel, "RESET")? else {
                    return Ok(()); // after our FIN and its FIN: the channel is over already
                };
                ch.peer_ended = true;
                ch.reset.get_or_insert((code, reason.clone(), true));
                let answer = !ch.sent_end && ch.pending.reset.is_none();
                drop_queue(ch, &mut self.queued_bytes);
                ch.sending = false;
                ch.pending.blocked = None;
                ch.pending.window = false;
                if answer {
                    ch.pending.reset = Some((code, String::new()));
                    self.want_control(channel);
                }
                self.events.push_back(Event::Reset {
                    channel,
                    code,
                    reason,
                });
                self.maybe_free(channel);
                Ok(())
            }
        }
    }

    fn peer_opened(&mut self, channel: u32, name: String) -> Result<()> {
        if channel % 2 == self.next_id % 2 {
            return Err(Error::Protocol(PeerMisbehaved::ChannelParity(channel)));
        }
        // Ids come in order without gaps: so `existed` knows every id the peer ever opened.
        let expected = if self.last_peer_id == 0 {
            if self.next_id % 2 == 1 {
                2
            } else {
                1
            }
        } else {
            self.last_peer_id + 2
        };
        if channel != expected {
            return Err(Error::Protocol(PeerMisbehaved::ChannelIdNotIncreasing {
                id: channel,
                last: self.last_peer_id,
            }));
        }
        if self.opened_by_peer >= self.ours.limits.max_channels {
            return Err(Error::Protocol(PeerMisbehaved::TooManyChannels(
                self.ours.limits.max_channels,
            )));
        }
        self.last_peer_id = channel;
        self.opened_by_peer += 1;
        self.channels.insert(
            channel,
            Channel::new(
                false,
                self.peer.channel_window as u64,
                self.ours.limits.channel_window as u64,
            ),
        );
        if self.refusing {
            return self.reset(channel, CANCELLED, "this connection carries no channels");
        }
        self.events.push_back(Event::Opened { channel, name });
        Ok(())
    }

    fn peer_blocked(&mut self, channel: u32, needed: u64) -> Result<()> {
        let max_message = self.ours.limits.max_message;
        let max_window = self.ours.max_channel_window;
        let budget = self.ours.channel_buffer - self.grown;
        let (grown, oversize, update, abandoned) = {
            let ch = self.receiving(channel, "BLOCKED")?;
            if needed > ch.window.max_needed(max_message) {
                return Err(Error::Protocol(PeerMisbehaved::BlockedOutOfRange {
                    channel,
                    needed,
                }));
            }
            if ch.reset_by_us {
                return Ok(()); // we take nothing more on it
            }
            if ch.abandoned {
                (0, false, false, true)
            } else {
                if needed > ch.window.granted {
                    ch.window.blocked_at = Some(ch.window.granted);
                }
                // The sender ran dry while our reader keeps up: the window, not the reader, limits
                // the channel (a WINDOW may be on its way: a round trip is what the window does
                // not cover), so it grows.
                let grown = if channel == DEFAULT {
                    0 // its window is the application's recv_buffer
                } else {
                    ch.window.grow(max_window, budget)
                };
                // Whatever reading freed goes out now: the peer waits for it.
                if ch.window.regrant(grown > 0) {
                    ch.pending.window = true;
                }
                // A message larger than the window: reading cannot make room for it. One such
                // message at a time per connection gets credit to its end.
                let oversize = needed > ch.window.granted
                    && !ch.window.fits(needed)
                    && ch.window.wants.is_none();
                if oversize {
                    ch.window.wants = Some(needed);
                }
                (grown, oversize, ch.pending.window, false)
            }
        };
        if abandoned {
            // Nobody will read what it waits to send: tell it, instead of leaving it blocked
            // for good.
            return self.reset(channel, CANCELLED, "nobody reads this channel");
        }
        self.grown += grown;
        if oversize {
            self.oversize_waiting.push_back(channel);
            if self.oversize.is_none() {
                self.next_oversize();
            }
        }
        if update {
            self.want_control(channel);
        }
        Ok(())
    }

    /// Give the oversize grant to the next channel waiting for it.
    fn next_oversize(&mut self) {
        while let Some(id) = self.oversize_waiting.pop_front() {
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            let Some(wants) = ch.window.wants.take() else {
                continue;
            };
            if ch.reset_by_us || wants <= ch.window.granted {
                continue;
            }
            ch.window.granted = wants;
            ch.pending.window = true;
            self.oversize = Some((id, wants));
            self.want_control(id);
            return;
        }
    }

    /// A channel frames of the peer's sending side may name: known and not ended by the peer.
    fn receiving(&mut self, channel: u32, what: &'static str) -> Result<&mut Channel> {
        let existed = self.existed(channel);
        match lookup(&mut self.channels, existed, channel, what)? {
            Some(ch) if !ch.peer_ended => Ok(ch),
            _ => Err(Error::Protocol(PeerMisbehaved::AfterChannelEnd {
                what,
                id: channel,
            })),
        }
    }

    /// Whether `channel` was ever opened (by either side).
    fn existed(&self, channel: u32) -> bool {
        if channel == DEFAULT {
            return true;
        }
        if channel % 2 == self.next_id % 2 {
            channel < self.next_id
        } else {
            channel <= self.last_peer_id
        }
    }

    // ---- output ----

    fn want_control(&mut self, channel: u32) {
        if let Some(ch) = self.channels.get_mut(&channel) {
            if !ch.controlled {
                ch.controlled = true;
                self.control.push_back(channel);
            }
        }
    }

    fn make_ready(&mut self, channel: u32) {
        if let Some(ch) = self.channels.get_mut(&channel) {
            if !ch.ready {
                ch.ready = true;
                self.ready.push_back(channel);
            }
        }
    }

    /// True when [`Mux::poll`] has something to hand over.
    pub fn wants_transmit(&self) -> bool {
        !self.control.is_empty() || !self.ready.is_empty()
    }

    /// Nothing the application sent waits (no message, no FIN): a CLOSE may follow.
    pub fn is_drained(&self) -> bool {
        self.channels.values().all(|c| c.queue.is_empty())
    }

    /// Bytes of messages queued and not yet handed to the sealer.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The next frame to seal: control frames first (they are small, and a WINDOW or RESET
    /// delayed behind data would slow everyone), then one frame of data from the next channel
    /// in turn that has credit for it.
    pub fn poll(&mut self) -> Option<Output> {
        if let Some(frame) = self.poll_control() {
            return Some(Output::Control(frame));
        }
        self.poll_data()
    }

    fn poll_control(&mut self) -> Option<ChannelFrame> {
        while let Some(&id) = self.control.front() {
            let Some(ch) = self.channels.get_mut(&id) else {
                self.control.pop_front();
                continue;
            };
            let frame = if let Some(name) = ch.pending.open.take() {
                ChannelFrame::Open { channel: id, name }
            } else if let Some((code, reason)) = ch.pending.reset.take() {
                ch.sent_end = true;
                let frame = ChannelFrame::Reset {
                    channel: id,
                    code,
                    reason,
                };
                self.after_end_sent(id);
                return Some(frame);
            } else if std::mem::take(&mut ch.pending.window) {
                ChannelFrame::Window {
                    channel: id,
                    limit: ch.window.granted,
                }
            } else if let Some(needed) = ch.pending.blocked.take() {
                ChannelFrame::Blocked {
                    channel: id,
                    needed,
                }
            } else {
                ch.controlled = false;
                self.control.pop_front();
                continue;
            };
            if !ch.pending.any() {
                ch.controlled = false;
                self.control.pop_front();
            }
            return Some(frame);
        }
        None
    }

    /// Our FIN or RESET of `id` was handed over: keep the control queue tidy and free the
    /// channel if the peer's end came too.
    fn after_end_sent(&mut self, id: u32) {
        if let Some(ch) = self.channels.get_mut(&id) {
            if !ch.pending.any() && ch.controlled {
                ch.controlled = false;
                self.control.retain(|c| *c != id);
            }
        }
        self.maybe_free(id);
    }

    fn poll_data(&mut self) -> Option<Output> {
        while let Some(id) = self.ready.pop_front() {
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            ch.ready = false;
            match ch.queue.front_mut() {
                None => continue,
                Some(Item::Fin) => {
                    ch.queue.pop_front();
                    ch.sent_end = true;
                    self.after_end_sent(id);
                    return Some(Output::Control(ChannelFrame::Fin { channel: id }));
                }
                Some(Item::Message { msg, cost, offset }) => {
                    let piece = Piece::at(id, msg.len(), *offset);
                    let credit = piece.credit(*offset == 0);
                    if !ch.credit.take(credit) {
                        // Blocked: the rest of this message is what it waits for.
                        let rest = (msg.len() - *offset) as u64
                            + if *offset == 0 { MESSAGE_CREDIT } else { 0 };
                        if let Some(needed) = ch.credit.blocked(ch.credit.sent + rest) {
                            ch.pending.blocked = Some(needed);
                            self.want_control(id);
                            return self.poll_control().map(Output::Control);
                        }
                        continue; // back in turn once a WINDOW raises the limit
                    }
                    let chunk = msg.slice(*offset..*offset + piece.len);
                    *offset += piece.len;
                    self.queued_bytes -= piece.len;
                    let released = if piece.more {
                        None
                    } else {
                        let cost = *cost;
                        ch.queue.pop_front();
                        Some(cost)
                    };
                    if !ch.queue.is_empty() {
                        ch.ready = true;
                        self.ready.push_back(id);
                    }
                    return Some(Output::Piece(PieceOut {
                        channel: id,
                        piece,
                        chunk,
                        released,
                    }));
                }
            }
        }
        None
    }

    /// Forget a channel once both directions ended, releasing its count and its growth.
    fn maybe_free(&mut self, id: u32) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        if id == DEFAULT || !(ch.sent_end && ch.peer_ended) {
            return;
        }
        let ch = self.channels.remove(&id).expect("checked");
        self.grown -= ch.window.window - ch.window.initial;
        if ch.ours {
            self.opened_by_us -= 1;
        } else {
            self.opened_by_peer -= 1;
        }
        self.oversize_waiting.retain(|c| *c != id);
        if self.oversize.is_some_and(|(c, _)| c == id) {
            self.oversize = None;
            self.next_oversize();
        }
        self.events.push_back(Event::Freed { channel: id });
    }
}

/// A channel that exists (Some), existed and is over (None), or an error for an id never
/// opened.
fn lookup<'a>(
    channels: &'a mut HashMap<u32, Channel>,
    existed: bool,
    channel: u32,
    what: &'static str,
) -> Result<Option<&'a mut Channel>> {
    match channels.get_mut(&channel) {
        Some(ch) => Ok(Some(ch)),
        None if existed => Ok(None),
        None => Err(Error::Protocol(PeerMisbehaved::UnknownChannel {
            what,
            id: channel,
        })),
    }
}

/// Drop a channel's queue (a reset channel's senders fail; their budget goes with it).
fn drop_queue(ch: &mut Channel, queued_bytes: &mut usize) {
    for item in ch.queue.drain(..) {
        if let Item::Message { msg, offset, .. } = item {
            *queued_bytes -= msg.len() - offset;
        }
    }
}

fn charge(ch: &mut Channel, channel: u32, credit: u64) -> Result<()> {
    ch.window.charge(credit).map_err(|o| {
        Error::Protocol(PeerMisbehaved::WindowOverrun {
            channel,
            granted: o.granted,
        })
    })
}
