//! The record layer of an established connection, one object per direction:
//! - [`Sealer`] cuts messages into DATA frames, seals them and rekeys on schedule;
//! - [`Opener`] opens frames, enforces the frame grammar and reassembles messages.
//!
//! Neither knows about sockets: they turn bytes into bytes.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use zeroize::Zeroizing;

use super::cipher::{CipherState, KEY_LEN, TAG_LEN};
use super::frame::{
    Frame, FrameType, ResumeReply, SessionRequest, CHANNEL_DATA_HEADER, DATA_HEADER,
    DATA_LENGTH_FIELD, FLAG_LENGTH, FLAG_MORE, MAX_PLAINTEXT_LEN,
};
use super::message::Message;
use crate::error::{Error, PeerMisbehaved, Result};

/// When each direction replaces its key (SECURITY-NOTES: 2^36 bytes, 2^24 frames or an hour,
/// whichever comes first). A peer that goes past twice these limits without rekeying is cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyPolicy {
    pub bytes: u64,
    pub frames: u64,
    pub interval: Duration,
}

impl RekeyPolicy {
    /// Every threshold must be reachable: zero would mean "rekey before every frame".
    pub fn validate(&self) -> Result<()> {
        if self.bytes == 0 {
            return Err(Error::config("bytes must be a positive integer, got 0"));
        }
        if self.frames == 0 {
            return Err(Error::config("frames must be a positive integer, got 0"));
        }
        if self.interval.is_zero() {
            return Err(Error::config(
                "interval must be a positive number of seconds, got 0",
            ));
        }
        Ok(())
    }
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            bytes: 1 << 36,
            frames: 1 << 24,
            interval: Duration::from_secs(3600),
        }
    }
}

/// Usage of the current key in one direction.
#[derive(Debug)]
struct KeyUsage {
    bytes: u64,
    frames: u64,
    since: Instant,
}

impl KeyUsage {
    fn new() -> Self {
        KeyUsage {
            bytes: 0,
            frames: 0,
            since: Instant::now(),
        }
    }

    fn add(&mut self, plaintext_len: usize) {
        self.frames += 1;
        self.bytes += plaintext_len as u64;
    }

    fn reached(&self, bytes: u64, frames: u64, age: Duration) -> bool {
        self.bytes >= bytes || self.frames >= frames || self.since.elapsed() >= age
    }
}

/// The largest chunk of a message one DATA frame carries (first fragment of a long message
/// carries 8 bytes less: the total length).
pub const MAX_CHUNK: usize = MAX_PLAINTEXT_LEN - DATA_HEADER;

/// What a message counts against a channel's window besides its bytes (charged with its first
/// frame): keeps a flood of empty messages bounded, like the send and receive buffers' count.
pub const MESSAGE_CREDIT: u64 = 64;

/// The largest chunk one data frame of `channel` carries: DATA for the default channel (0),
/// CH_DATA (4 bytes of channel id more) for the others.
pub const fn max_chunk(channel: u32) -> usize {
    if channel == 0 {
        MAX_CHUNK
    } else {
        MAX_PLAINTEXT_LEN - CHANNEL_DATA_HEADER
    }
}

/// The chunk the first fragment of a fragmented message carries: a frame's worth, less the total.
pub const fn first_fragment(channel: u32) -> usize {
    max_chunk(channel) - DATA_LENGTH_FIELD
}

/// One frame's share of a message: where a sender cuts a message of `len` bytes, and what the
/// receiver requires (M14): one frame if it fits, else a full first fragment with the total,
/// full middle ones, and a last of 1 byte to a full frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub len: usize,
    pub more: bool,
    /// The message's length, carried by the first fragment of a fragmented message.
    pub total: Option<u64>,
}

impl Piece {
    /// The piece of a `len`-byte message on `channel` that starts at `offset`.
    pub fn at(channel: u32, len: usize, offset: usize) -> Piece {
        let max = max_chunk(channel);
        if offset == 0 {
            if len <= max {
                return Piece {
                    len,
                    more: false,
                    total: None,
                };
            }
            return Piece {
                len: first_fragment(channel),
                more: true,
                total: Some(len as u64),
            };
        }
        let take = (len - offset).min(max);
        Piece {
            len: take,
            more: offset + take < len,
            total: None,
        }
    }

    /// What the piece counts against the channel's window (`first`: it starts its message).
    pub fn credit(&self, first: bool) -> u64 {
        self.len as u64 + if first { MESSAGE_CREDIT } else { 0 }
    }
}

/// Total wire bytes of a message of `len` bytes on the default channel (length prefixes,
/// headers and tags included).
pub fn sealed_len(len: usize) -> usize {
    if len <= MAX_CHUNK {
        return 2 + DATA_HEADER + len + TAG_LEN;
    }
    let rest = len - FIRST_FRAGMENT;
    let frames = 1 + rest.div_ceil(MAX_CHUNK);
    len + DATA_LENGTH_FIELD + frames * (2 + DATA_HEADER + TAG_LEN)
}

/// The sending direction.
pub struct Sealer {
    cipher: CipherState,
    policy: RekeyPolicy,
    usage: KeyUsage,
    peer_max_message: u64,
    rekeys: u64,
}

impl Sealer {
    pub fn new(key: &Zeroizing<[u8; KEY_LEN]>, policy: RekeyPolicy, peer_max_message: u64) -> Self {
        Sealer {
            cipher: CipherState::new(key),
            policy,
            usage: KeyUsage::new(),
            peer_max_message,
            rekeys: 0,
        }
    }

    pub fn peer_max_message(&self) -> u64 {
        self.peer_max_message
    }

    pub fn rekeys(&self) -> u64 {
        self.rekeys
    }

    /// Check a message against the peer's limit before anything is queued.
    pub fn check_len(peer_max_message: u64, len: usize) -> Result<()> {
        if len as u64 > peer_max_message {
            return Err(Error::MessageTooLarge {
                size: len as u64,
                limit: peer_max_message,
            });
        }
        Ok(())
    }

    /// Seal `msg` as one or more DATA frames of the default channel appended to `out`.
    pub fn seal_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<()> {
        Self::check_len(self.peer_max_message, msg.len())?;
        out.reserve(sealed_len(msg.len()));
        let mut offset = 0;
        loop {
            let piece = Piece::at(0, msg.len(), offset);
            self.seal_piece(0, piece, &msg[offset..offset + piece.len], out)?;
            offset += piece.len;
            if !piece.more {
                return Ok(());
            }
        }
    }

    /// Seal one frame's share of a message on `channel`: `chunk` is the bytes `piece` covers.
    pub fn seal_piece(
        &mut self,
        channel: u32,
        piece: Piece,
        chunk: &[u8],
        out: &mut BytesMut,
    ) -> Result<()> {
        debug_assert_eq!(chunk.len(), piece.len);
        let flags = if piece.more { FLAG_MORE } else { 0 }
            | if piece.total.is_some() {
                FLAG_LENGTH
            } else {
                0
            };
        let mut header = [0u8; CHANNEL_DATA_HEADER + DATA_LENGTH_FIELD];
        let mut at = 0;
        if channel == 0 {
            header[0] = FrameType::Data as u8;
            at += 1;
        } else {
            header[0] = FrameType::ChannelData as u8;
            header[1..5].copy_from_slice(&channel.to_be_bytes());
            at += 5;
        }
        header[at] = flags;
        at += 1;
        if let Some(total) = piece.total {
            header[at..at + DATA_LENGTH_FIELD].copy_from_slice(&total.to_be_bytes());
            at += DATA_LENGTH_FIELD;
        }
        self.seal_frame(out, &header[..at], chunk)
    }

    /// Seal one control frame (PING, PONG, CLOSE, CONFIRM) appended to `out`.
    pub fn seal_control(&mut self, frame: &Frame<'_>, out: &mut BytesMut) -> Result<()> {
        let mut plain = Vec::with_capacity(16);
        frame.write_control(&mut plain);
        self.seal_frame(out, &plain, &[])
    }

    fn seal_frame(&mut self, out: &mut BytesMut, header: &[u8], body: &[u8]) -> Result<()> {
        let p = self.policy;
        if self.usage.reached(p.bytes, p.frames, p.interval) {
            // REKEY goes out under the old key; every later frame uses the new one.
            self.seal_raw(out, &[FrameType::Rekey as u8], &[])?;
            self.cipher.rekey();
            self.usage = KeyUsage::new();
            self.rekeys += 1;
        }
        self.seal_raw(out, header, body)
    }

    fn seal_raw(&mut self, out: &mut BytesMut, header: &[u8], body: &[u8]) -> Result<()> {
        let plain_len = header.len() + body.len();
        debug_assert!(plain_len <= MAX_PLAINTEXT_LEN);
        let frame_len = plain_len + TAG_LEN;
        out.put_u16(frame_len as u16);
        let start = out.len();
        out.put_slice(header);
        out.put_slice(body);
        out.put_bytes(0, TAG_LEN);
        self.cipher
            .seal_in_place(&mut out[start..start + frame_len])?;
        self.usage.add(plain_len);
        Ok(())
    }
}

/// What one or more frames add up to.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The client's key confirmation arrived (server side, first frame only), with the
    /// session it asks for, if any.
    Confirmed(Option<SessionRequest>),
    /// The peer delivered every message below this sequence number (acknowledged sessions).
    Ack(u64),
    /// The server's answer to a session request (client side, first frame only).
    Resume(ResumeReply),
    /// A message is complete on `channel` (0: the default channel). `credit`: what its last
    /// frame counts against the channel's window.
    Message {
        channel: u32,
        message: Message,
        credit: u64,
    },
    /// A fragment of a message still incomplete on `channel`, and what it counts against the
    /// channel's window: every data frame is charged as it arrives, so a peer that sends past
    /// its credit is stopped at the frame that does.
    Fragment {
        channel: u32,
        credit: u64,
    },
    /// OPEN, WINDOW, BLOCKED, FIN or RESET.
    Channel(ChannelFrame),
    Ping(u64),
    Pong(u64),
    Close {
        code: u16,
        reason: String,
    },
}

/// A channel's control frame, owned (see [`Frame`] for the layouts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelFrame {
    Open {
        channel: u32,
        name: String,
    },
    Window {
        channel: u32,
        limit: u64,
    },
    Blocked {
        channel: u32,
        needed: u64,
    },
    Fin {
        channel: u32,
    },
    Reset {
        channel: u32,
        code: u16,
        reason: String,
    },
}

impl ChannelFrame {
    pub fn channel(&self) -> u32 {
        match self {
            ChannelFrame::Open { channel, .. }
            | ChannelFrame::Window { channel, .. }
            | ChannelFrame::Blocked { channel, .. }
            | ChannelFrame::Fin { channel }
            | ChannelFrame::Reset { channel, .. } => *channel,
        }
    }

    /// The frame, borrowing this one's text, for sealing.
    pub fn as_frame(&self) -> Frame<'_> {
        match self {
            ChannelFrame::Open { channel, name } => Frame::Open {
                channel: *channel,
                name,
            },
            ChannelFrame::Window { channel, limit } => Frame::Window {
                channel: *channel,
                limit: *limit,
            },
            ChannelFrame::Blocked { channel, needed } => Frame::Blocked {
                channel: *channel,
                needed: *needed,
            },
            ChannelFrame::Fin { channel } => Frame::Fin { channel: *channel },
            ChannelFrame::Reset {
                channel,
                code,
                reason,
            } => Frame::Reset {
                channel: *channel,
                code: *code,
                reason,
            },
        }
    }
}

/// A fragmented message being reassembled: the fragments so far (each copied out of the frame
/// as it arrived: nothing is reserved for the announced total), and that total.
struct Partial {
    parts: Vec<Bytes>,
    have: usize,
    total: usize,
}

/// The chunk the first fragment of a fragmented default-channel message carries.
pub const FIRST_FRAGMENT: usize = MAX_CHUNK - DATA_LENGTH_FIELD;

/// The receiving direction.
pub struct Opener {
    cipher: CipherState,
    policy: RekeyPolicy,
    usage: KeyUsage,
    max_message: u64,
    /// The messages being reassembled, one per channel at most. Bound: each is within
    /// `max_message` and filled only as its fragments arrive, each fragment charged against its
    /// channel's window the moment it is opened (the connection checks), so the peer cannot
    /// make this hold more than its channels' credit plus the one message a window lets
    /// through beyond itself (§4.7); an entry for a channel that does not exist ends the
    /// connection at once.
    partials: Vec<(u32, Partial)>,
    awaiting_confirm: bool,
    rekeys: u64,
}

impl Opener {
    /// `expect_confirm`: the server's opener requires CONFIRM as the first frame.
    pub fn new(
        key: &Zeroizing<[u8; KEY_LEN]>,
        policy: RekeyPolicy,
        max_message: u64,
        expect_confirm: bool,
    ) -> Self {
        Opener {
            cipher: CipherState::new(key),
            policy,
            usage: KeyUsage::new(),
            max_message,
            partials: Vec::new(),
            awaiting_confirm: expect_confirm,
            rekeys: 0,
        }
    }

    pub fn rekeys(&self) -> u64 {
        self.rekeys
    }

    /// Bytes held for messages still being reassembled.
    pub fn buffered(&self) -> usize {
        self.partials.iter().map(|(_, p)| p.have).sum()
    }

    /// Open one sealed frame (without its length prefix), decrypting it in place. Nothing of a
    /// frame that fails reaches the caller, and after any error the record layer is finished.
    ///
    /// What a message holds is copied out of `frame`: the caller's read buffer is never pinned
    /// by a message, so the memory a peer makes us hold is the message bytes themselves
    /// (counted against its channel's window and `max_message_size`), however it cuts them
    /// into frames.
    pub fn open_frame(&mut self, frame: &mut [u8]) -> Result<Option<Event>> {
        let plain = &*self.cipher.open_in_place(frame)?;
        let parsed = Frame::parse(plain)?;
        let confirming = std::mem::take(&mut self.awaiting_confirm);
        if confirming != matches!(parsed, Frame::Confirm(_)) {
            return Err(Error::Protocol(if confirming {
                PeerMisbehaved::FirstFrameMustBe("CONFIRM")
            } else {
                PeerMisbehaved::ConfirmNotFirst
            }));
        }
        if parsed != Frame::Rekey {
            let p = self.policy;
            if self.usage.reached(
                p.bytes.saturating_mul(2),
                p.frames.saturating_mul(2),
                p.interval.saturating_mul(2),
            ) {
                return Err(Error::KeyExhausted);
            }
            self.usage.add(plain.len());
        }
        // Frames of other channels, and control frames, may come between the fragments of a
        // message: a long message must not hold up a short one, nor a PONG (§4.2).
        Ok(Some(match parsed {
            Frame::Confirm(request) => Event::Confirmed(request),
            Frame::Ack(v) => Event::Ack(v),
            Frame::Resume(r) => Event::Resume(r),
            Frame::Ping(v) => Event::Ping(v),
            Frame::Pong(v) => Event::Pong(v),
            Frame::Close { code, reason } => Event::Close {
                code,
                reason: reason.to_owned(),
            },
            Frame::Rekey => {
                self.cipher.rekey();
                self.usage = KeyUsage::new();
                self.rekeys += 1;
                return Ok(None);
            }
            Frame::Data {
                channel,
                more,
                total_len,
                chunk,
            } => self.data(channel, more, total_len, chunk)?,
            Frame::Open { channel, name } => Event::Channel(ChannelFrame::Open {
                channel,
                name: name.to_owned(),
            }),
            Frame::Window { channel, limit } => {
                Event::Channel(ChannelFrame::Window { channel, limit })
            }
            Frame::Blocked { channel, needed } => {
                Event::Channel(ChannelFrame::Blocked { channel, needed })
            }
            Frame::Fin { channel } => {
                // The sender said it sends nothing more: a message it left unfinished never ends.
                if self.partial(channel).is_some() {
                    return Err(Error::Protocol(PeerMisbehaved::MessageEndedEarly));
                }
                Event::Channel(ChannelFrame::Fin { channel })
            }
            Frame::Reset {
                channel,
                code,
                reason,
            } => {
                self.partials.retain(|(c, _)| *c != channel);
                Event::Channel(ChannelFrame::Reset {
                    channel,
                    code,
                    reason: reason.to_owned(),
                })
            }
        }))
    }

    fn partial(&self, channel: u32) -> Option<usize> {
        self.partials.iter().position(|(c, _)| *c == channel)
    }

    fn data(
        &mut self,
        channel: u32,
        more: bool,
        total_len: Option<u64>,
        chunk: &[u8],
    ) -> Result<Event> {
        let at = self.partial(channel);
        let credit = chunk.len() as u64;
        match (at, more, total_len) {
            (None, false, None) => {
                if chunk.len() as u64 > self.max_message {
                    return Err(self.too_large(chunk.len() as u64));
                }
                // Its own allocation of exactly its size (see `open_frame`).
                Ok(Event::Message {
                    channel,
                    message: Message::from(Bytes::copy_from_slice(chunk)),
                    credit: credit + MESSAGE_CREDIT,
                })
            }
            (None, true, Some(total)) => {
                if total > self.max_message {
                    return Err(self.too_large(total));
                }
                // An honest sender fills every fragment but the last (see `Piece`): anything
                // else costs us a frame's work for a few bytes, so it is refused.
                if chunk.len() != first_fragment(channel) {
                    return Err(Error::Protocol(PeerMisbehaved::ShortFirstFragment));
                }
                if total <= max_chunk(channel) as u64 {
                    return Err(Error::Protocol(PeerMisbehaved::NeedlessFragments));
                }
                // Held as the fragments arrive: their channel's credit bounds it, not the
                // total (a peer could announce 16 MiB on every channel and send 64 KiB).
                self.partials.push((
                    channel,
                    Partial {
                        parts: vec![Bytes::copy_from_slice(chunk)],
                        have: chunk.len(),
                        total: total as usize,
                    },
                ));
                Ok(Event::Fragment {
                    channel,
                    credit: credit + MESSAGE_CREDIT,
                })
            }
            (Some(i), more, None) => {
                let p = &mut self.partials[i].1;
                let have = p.have + chunk.len();
                if have > p.total {
                    return Err(Error::Protocol(PeerMisbehaved::FragmentsExceedLength));
                }
                if more && chunk.len() != max_chunk(channel) {
                    return Err(Error::Protocol(PeerMisbehaved::ShortFragment));
                }
                if !more && have != p.total {
                    return Err(Error::Protocol(PeerMisbehaved::MessageEndedEarly));
                }
                p.parts.push(Bytes::copy_from_slice(chunk));
                p.have = have;
                if more {
                    return Ok(Event::Fragment { channel, credit });
                }
                let (_, p) = self.partials.swap_remove(i);
                Ok(Event::Message {
                    channel,
                    message: Message::from_parts(p.parts),
                    credit,
                })
            }
            (None, false, Some(_)) | (None, true, None) | (Some(_), _, Some(_)) => {
                Err(Error::Protocol(PeerMisbehaved::FragmentOutOfPlace))
            }
        }
    }

    fn too_large(&self, size: u64) -> Error {
        Error::MessageTooLarge {
            size,
            limit: self.max_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    const BIG: u64 = 64 << 20;

    fn pair(policy: RekeyPolicy, max: u64) -> (Sealer, Opener) {
        let key = Zeroizing::new([5u8; KEY_LEN]);
        (
            Sealer::new(&key, policy, max),
            Opener::new(&key, policy, max, false),
        )
    }

    /// Split a sealed byte stream into frames (without length prefixes).
    fn frames(mut wire: BytesMut) -> Vec<BytesMut> {
        let mut out = Vec::new();
        while wire.has_remaining() {
            let len = wire.get_u16() as usize;
            out.push(wire.split_to(len));
        }
        out
    }

    /// Open every frame; the events but fragments (which only charge credit).
    fn open_all(opener: &mut Opener, wire: BytesMut) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for mut f in frames(wire) {
            match opener.open_frame(&mut f)? {
                Some(Event::Fragment { .. }) | None => {}
                Some(e) => events.push(e),
            }
        }
        Ok(events)
    }

    /// The default channel's messages among `events`, with nothing else in between.
    fn messages(events: Vec<Event>) -> Vec<Message> {
        events
            .into_iter()
            .map(|e| match e {
                Event::Message {
                    channel: 0,
                    message,
                    ..
                } => message,
                other => panic!("not a message: {other:?}"),
            })
            .collect()
    }

    fn msg(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn messages_of_every_shape_round_trip() {
        let (mut s, mut o) = pair(RekeyPolicy::default(), BIG);
        for len in [
            0,
            1,
            MAX_CHUNK - 8,
            MAX_CHUNK,
            MAX_CHUNK + 1,
            3 * MAX_CHUNK,
            1 << 20,
            16 << 20,
        ] {
            let m = msg(len);
            let mut wire = BytesMut::new();
            s.seal_message(&m, &mut wire).unwrap();
            assert_eq!(wire.len(), sealed_len(len), "len {len}");
            assert_eq!(
                messages(open_all(&mut o, wire).unwrap()),
                vec![Message::from(Bytes::from(m))]
            );
        }
    }

    #[test]
    fn oversized_messages_are_refused_on_both_sides() {
        let (mut s, _) = pair(RekeyPolicy::default(), 100);
        let err = s.seal_message(&[0; 101], &mut BytesMut::new()).unwrap_err();
        assert!(matches!(
            err,
            Error::MessageTooLarge {
                size: 101,
                limit: 100
            }
        ));
        // A sender that ignores our limit is stopped at the first frame, before reassembly.
        let (mut s, _) = pair(RekeyPolicy::default(), BIG);
        let (_, mut o) = pair(RekeyPolicy::default(), 100_000);
        let mut wire = BytesMut::new();
        s.seal_message(&msg(1 << 20), &mut wire).unwrap();
        let mut first = frames(wire).remove(0);
        assert!(matches!(
            o.open_frame(&mut first),
            Err(Error::MessageTooLarge { .. })
        ));
        assert_eq!(o.buffered(), 0);
    }

    #[test]
    fn dropped_duplicated_or_reordered_fragments_are_rejected() {
        let mut wire = BytesMut::new();
        let (mut s, _) = pair(RekeyPolicy::default(), BIG);
        s.seal_message(&msg(4 * MAX_CHUNK), &mut wire).unwrap();
        let fs = frames(wire);
        type Tamper<'a> = &'a dyn Fn(&mut Vec<BytesMut>);
        let tamper: [Tamper; 3] = [
            &|v| {
                v.remove(1);
            },
            &|v| {
                let d = v[1].clone();
                v.insert(2, d);
            },
            &|v| v.swap(1, 2),
        ];
        for t in tamper {
            let mut v = fs.clone();
            t(&mut v);
            let (_, mut o) = pair(RekeyPolicy::default(), BIG);
            let mut result = Ok(None);
            for mut f in v {
                result = o.open_frame(&mut f);
                if result.is_err() {
                    break;
                }
                assert!(!matches!(result, Ok(Some(Event::Message { .. }))));
            }
            assert!(matches!(result, Err(Error::Integrity)));
        }
    }

    #[test]
    fn rekeys_on_frame_threshold_and_traffic_continues() {
        let policy = RekeyPolicy {
            frames: 3,
            ..RekeyPolicy::default()
        };
        let (mut s, mut o) = pair(policy, BIG);
        let mut wire = BytesMut::new();
        for i in 0..20u8 {
            s.seal_message(&[i; 10], &mut wire).unwrap();
        }
        let events = open_all(&mut o, wire).unwrap();
        assert_eq!(events.len(), 20);
        assert!(s.rekeys() >= 6, "{}", s.rekeys());
        assert_eq!(s.rekeys(), o.rekeys());
    }

    #[test]
    fn rekeys_on_byte_threshold() {
        let policy = RekeyPolicy {
            bytes: 1000,
            ..RekeyPolicy::default()
        };
        let (mut s, mut o) = pair(policy, BIG);
        let mut wire = BytesMut::new();
        s.seal_message(&msg(10_000), &mut wire).unwrap();
        s.seal_message(&msg(10), &mut wire).unwrap();
        assert_eq!(open_all(&mut o, wire).unwrap().len(), 2);
        assert_eq!(s.rekeys(), 1);
    }

    #[test]
    fn rekey_between_fragments_of_a_message_is_accepted() {
        // Thresholds reached in the middle of a long message put REKEY between its fragments.
        let policy = RekeyPolicy {
            frames: 2,
            ..RekeyPolicy::default()
        };
        let (mut s, mut o) = pair(policy, BIG);
        let m = msg(5 * MAX_CHUNK);
        let mut wire = BytesMut::new();
        s.seal_message(&m, &mut wire).unwrap();
        s.seal_message(b"next", &mut wire).unwrap();
        assert_eq!(
            messages(open_all(&mut o, wire).unwrap()),
            vec![
                Message::from(Bytes::from(m)),
                Message::from(Bytes::from_static(b"next")),
            ]
        );
        assert!(s.rekeys() >= 2, "{}", s.rekeys());
        assert_eq!(s.rekeys(), o.rekeys());
    }

    #[test]
    fn old_key_frame_after_rekey_is_rejected() {
        let policy = RekeyPolicy {
            frames: 2,
            ..RekeyPolicy::default()
        };
        let (mut s, mut o) = pair(policy, BIG);
        let mut wire = BytesMut::new();
        for _ in 0..3 {
            s.seal_message(b"x", &mut wire).unwrap();
        }
        let mut fs = frames(wire);
        assert_eq!(fs.len(), 4, "2 frames, REKEY, 1 frame");
        // Swap the REKEY frame for a replay of an old-key frame.
        fs[2] = fs[0].clone();
        let mut res = Ok(None);
        for mut f in fs {
            res = o.open_frame(&mut f);
            if res.is_err() {
                break;
            }
        }
        assert!(matches!(res, Err(Error::Integrity)));
    }

    #[test]
    fn a_peer_that_never_rekeys_is_cut_off_at_twice_the_limit() {
        let lax = RekeyPolicy {
            frames: u64::MAX,
            ..RekeyPolicy::default()
        };
        let strict = RekeyPolicy {
            frames: 5,
            ..RekeyPolicy::default()
        };
        let key = Zeroizing::new([1u8; KEY_LEN]);
        let mut s = Sealer::new(&key, lax, BIG);
        let mut o = Opener::new(&key, strict, BIG, false);
        let mut wire = BytesMut::new();
        for _ in 0..11 {
            s.seal_message(b"x", &mut wire).unwrap();
        }
        let fs = frames(wire);
        for mut f in fs[..10].iter().cloned() {
            o.open_frame(&mut f).unwrap();
        }
        assert!(matches!(
            o.open_frame(&mut fs[10].clone()),
            Err(Error::KeyExhausted)
        ));
    }

    #[test]
    fn confirm_must_come_first_when_expected() {
        let key = Zeroizing::new([2u8; KEY_LEN]);
        let mut s = Sealer::new(&key, RekeyPolicy::default(), BIG);
        let mut wire = BytesMut::new();
        s.seal_message(b"data first", &mut wire).unwrap();
        let mut o = Opener::new(&key, RekeyPolicy::default(), BIG, true);
        assert!(matches!(
            open_all(&mut o, wire),
            Err(Error::Protocol(PeerMisbehaved::FirstFrameMustBe("CONFIRM")))
        ));

        let mut s = Sealer::new(&key, RekeyPolicy::default(), BIG);
        let mut wire = BytesMut::new();
        s.seal_control(&Frame::Confirm(None), &mut wire).unwrap();
        s.seal_message(b"then data", &mut wire).unwrap();
        s.seal_control(&Frame::Confirm(None), &mut wire).unwrap();
        let mut o = Opener::new(&key, RekeyPolicy::default(), BIG, true);
        let fs = frames(wire);
        assert_eq!(
            o.open_frame(&mut fs[0].clone()).unwrap(),
            Some(Event::Confirmed(None))
        );
        assert!(matches!(
            o.open_frame(&mut fs[1].clone()).unwrap(),
            Some(Event::Message { .. })
        ));
        assert!(matches!(
            o.open_frame(&mut fs[2].clone()),
            Err(Error::Protocol(PeerMisbehaved::ConfirmNotFirst))
        ));
    }

    /// Seal DATA frames with the given flags and chunk sizes, as a hostile sender would.
    fn hostile_fragments(s: &mut Sealer, total: u64, parts: &[(u8, usize)]) -> BytesMut {
        let mut wire = BytesMut::new();
        for (i, &(flags, len)) in parts.iter().enumerate() {
            let mut header = vec![FrameType::Data as u8, flags];
            if i == 0 {
                header.extend_from_slice(&total.to_be_bytes());
            }
            s.seal_frame(&mut wire, &header, &vec![b'x'; len]).unwrap();
        }
        wire
    }

    #[test]
    fn fragments_short_of_a_full_frame_are_refused() {
        let ml = FLAG_MORE | FLAG_LENGTH;
        let total = (FIRST_FRAGMENT + MAX_CHUNK + 10) as u64;
        let cases: [&[(u8, usize)]; 3] = [
            // A tiny first fragment.
            &[(ml, 1), (FLAG_MORE, MAX_CHUNK), (0, 10)],
            // A short middle fragment.
            &[(ml, FIRST_FRAGMENT), (FLAG_MORE, 1)],
            // An empty middle fragment.
            &[(ml, FIRST_FRAGMENT), (FLAG_MORE, 0)],
        ];
        for parts in cases {
            let (mut s, mut o) = pair(RekeyPolicy::default(), BIG);
            let wire = hostile_fragments(&mut s, total, parts);
            assert!(
                matches!(open_all(&mut o, wire), Err(Error::Protocol(_))),
                "{parts:?}"
            );
        }
        // The same total, cut as an honest sender cuts it, is delivered.
        let (mut s, mut o) = pair(RekeyPolicy::default(), BIG);
        let parts = [(ml, FIRST_FRAGMENT), (FLAG_MORE, MAX_CHUNK), (0, 10)];
        let wire = hostile_fragments(&mut s, total, &parts);
        let events = open_all(&mut o, wire).unwrap();
        assert!(matches!(&messages(events)[..], [m] if m.len() as u64 == total));
    }
}
