//! The plaintext inside a transport frame: one type byte, then a body fixed by the type.
//! Every parser here checks each length against the bytes present before reading them.
//!
//! ```text
//! DATA    0x01  flags:u8 [total_len:u64 if flags & LENGTH] chunk...
//! PING    0x02  opaque:u64
//! PONG    0x03  opaque:u64 (echoes the PING)
//! CLOSE   0x04  code:u16 reason:utf-8 (at most 123 bytes)
//! REKEY   0x05  (empty) — the sender's next frame uses the next key
//! CONFIRM 0x06  [session request] — the client's first frame: proves it holds the keys;
//!               with a body (29 bytes), asks for an acknowledged session (see below)
//! ACK     0x07  next_expected:u64 — acknowledged sessions: every message below it was delivered
//! RESUME  0x08  status:u8 next_expected:u64 window:u32 — the server's first frame when a
//!               session was asked for
//! CH_DATA 0x09  channel:u32 flags:u8 [total_len:u64 if flags & LENGTH] chunk... (channel ≠ 0)
//! OPEN    0x0a  channel:u32 name:utf-8 (at most 255 bytes)
//! WINDOW  0x0b  channel:u32 limit:u64 — the peer may send on the channel up to this credit
//! BLOCKED 0x0c  channel:u32 needed:u64 — the sender waits for credit up to this
//! FIN     0x0d  channel:u32 — no more messages from the sender on the channel (half-close)
//! RESET   0x0e  channel:u32 code:u16 reason:utf-8 (at most 123 bytes) — abandon the channel
//!
//! session request: flags:u8 (bit 0: resume) session_id:16 next_expected:u64 window:u32
//! ```
//! All integers are big-endian.

use crate::error::{Error, PeerMisbehaved, Result};

use super::cipher::TAG_LEN;

/// Noise transport messages are at most 65535 bytes; so are our frames (length prefix: u16).
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - TAG_LEN;
/// The smallest sealed frame: a type byte and a tag.
pub const MIN_FRAME_LEN: usize = 1 + TAG_LEN;
pub const MAX_CLOSE_REASON: usize = 123;

pub const DATA_HEADER: usize = 2;
pub const DATA_LENGTH_FIELD: usize = 8;
/// CH_DATA: the type, the channel id and the flags.
pub const CHANNEL_DATA_HEADER: usize = 6;
pub const MAX_CHANNEL_NAME: usize = 255;
/// Reset codes below this (but 0) are the protocol's and none is defined yet: a peer sending
/// one breaks the protocol. 0 is "cancelled" (a reset without a code, or a dropped handle).
pub const MIN_APPLICATION_RESET_CODE: u16 = 1000;

/// More fragments of this message follow.
pub const FLAG_MORE: u8 = 0x01;
/// The message's total length follows the flags (first fragment of a multi-fragment message).
pub const FLAG_LENGTH: u8 = 0x02;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Data = 0x01,
    Ping = 0x02,
    Pong = 0x03,
    Close = 0x04,
    Rekey = 0x05,
    Confirm = 0x06,
    Ack = 0x07,
    Resume = 0x08,
    ChannelData = 0x09,
    Open = 0x0a,
    Window = 0x0b,
    Blocked = 0x0c,
    Fin = 0x0d,
    Reset = 0x0e,
}

impl TryFrom<u8> for FrameType {
    type Error = Error;

    fn try_from(b: u8) -> Result<Self> {
        Ok(match b {
            0x01 => FrameType::Data,
            0x02 => FrameType::Ping,
            0x03 => FrameType::Pong,
            0x04 => FrameType::Close,
            0x05 => FrameType::Rekey,
            0x06 => FrameType::Confirm,
            0x07 => FrameType::Ack,
            0x08 => FrameType::Resume,
            0x09 => FrameType::ChannelData,
            0x0a => FrameType::Open,
            0x0b => FrameType::Window,
            0x0c => FrameType::Blocked,
            0x0d => FrameType::Fin,
            0x0e => FrameType::Reset,
            other => return Err(Error::Protocol(PeerMisbehaved::UnknownFrameType(other))),
        })
    }
}

/// A parsed plaintext frame, borrowing its body.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA (channel 0, the default channel) or CH_DATA.
    Data {
        channel: u32,
        more: bool,
        total_len: Option<u64>,
        chunk: &'a [u8],
    },
    Ping(u64),
    Pong(u64),
    Close {
        code: u16,
        reason: &'a str,
    },
    Rekey,
    Confirm(Option<SessionRequest>),
    Ack(u64),
    Resume(ResumeReply),
    Open {
        channel: u32,
        name: &'a str,
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
        reason: &'a str,
    },
}

pub const SESSION_ID_LEN: usize = 16;
/// The smallest session window a side may announce (the smallest `recv_buffer`). The sender
/// charges each message at most the window, so a window of 0 would make messages free: a peer
/// announcing it would have us keep everything the application sends.
pub const MIN_WINDOW: u32 = 1024;
pub const SESSION_REQUEST_LEN: usize = 1 + SESSION_ID_LEN + 8 + 4;
const RESUME_LEN: usize = 1 + 8 + 4;
const FLAG_RESUME: u8 = 0x01;

/// What a client asks for in its CONFIRM when it wants acknowledged delivery across
/// connections: a new session, or the continuation of one it already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    pub session_id: [u8; SESSION_ID_LEN],
    /// True when the client already had this session (it reconnects).
    pub resume: bool,
    /// The sequence number of the next message the client has yet to deliver.
    pub next_expected: u64,
    /// Bytes of messages the client holds for its application: the server may have at most
    /// this much unacknowledged (so the client never stops reading, and ACKs always get through).
    pub window: u32,
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeStatus {
    /// A new session was created.
    Created = 0,
    /// The session exists and continues on this connection.
    Resumed = 1,
    /// The server has no such session (expired, or the server restarted): what it had
    /// received but not delivered is gone, so exactly-once cannot continue.
    Unknown = 2,
}

/// The server's answer to a [`SessionRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeReply {
    pub status: ResumeStatus,
    /// The sequence number of the next message the server has yet to deliver.
    pub next_expected: u64,
    /// Bytes of messages the server holds for its application (see [`SessionRequest::window`]).
    pub window: u32,
}

fn exact<const N: usize>(body: &[u8], what: &'static str) -> Result<[u8; N]> {
    body.try_into().map_err(|_| {
        Error::Protocol(PeerMisbehaved::FrameBody {
            what,
            expected: N,
            len: body.len(),
        })
    })
}

/// A DATA body after its channel: flags, the total length if flagged, the chunk.
fn data(channel: u32, body: &[u8]) -> Result<Frame<'_>> {
    let (&flags, rest) = body
        .split_first()
        .ok_or(Error::Protocol(PeerMisbehaved::DataWithoutFlags))?;
    if flags & !(FLAG_MORE | FLAG_LENGTH) != 0 {
        return Err(Error::Protocol(PeerMisbehaved::UnknownDataFlags(flags)));
    }
    let (total_len, chunk) = if flags & FLAG_LENGTH != 0 {
        if rest.len() < DATA_LENGTH_FIELD {
            return Err(Error::Protocol(PeerMisbehaved::DataLengthFieldMissing));
        }
        let (len, chunk) = rest.split_at(DATA_LENGTH_FIELD);
        (
            Some(u64::from_be_bytes(len.try_into().expect("8 bytes"))),
            chunk,
        )
    } else {
        (None, rest)
    };
    Ok(Frame::Data {
        channel,
        more: flags & FLAG_MORE != 0,
        total_len,
        chunk,
    })
}

/// The channel id at the start of a channel frame's body, and the rest. Channel 0 (the default
/// channel) is never opened, finished, reset or sent CH_DATA: its messages are DATA frames.
fn channel_of<'a>(body: &'a [u8], what: &'static str) -> Result<(u32, &'a [u8])> {
    let channel = channel_id(body, what)?;
    if channel == 0 {
        return Err(Error::Protocol(PeerMisbehaved::ChannelZero(what)));
    }
    Ok((channel, &body[4..]))
}

/// The channel id at the start of a body, which may be 0 (WINDOW, BLOCKED).
fn channel_id(body: &[u8], what: &'static str) -> Result<u32> {
    let id: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::Protocol(PeerMisbehaved::FrameBody {
            what,
            expected: 4,
            len: body.len(),
        }))?;
    Ok(u32::from_be_bytes(id))
}

/// A WINDOW or BLOCKED body: channel (0 allowed) and a u64.
fn channel_and_u64(body: &[u8], what: &'static str) -> Result<(u32, u64)> {
    let b: [u8; 12] = exact(body, what)?;
    Ok((
        u32::from_be_bytes(b[..4].try_into().expect("4 bytes")),
        u64::from_be_bytes(b[4..].try_into().expect("8 bytes")),
    ))
}

fn text(bytes: &[u8], max: usize) -> Result<&str> {
    if bytes.len() > max {
        return Err(Error::Protocol(PeerMisbehaved::ChannelText));
    }
    std::str::from_utf8(bytes).map_err(|_| Error::Protocol(PeerMisbehaved::ChannelText))
}

fn window(field: &[u8]) -> Result<u32> {
    let window = u32::from_be_bytes(field.try_into().expect("4 bytes"));
    if window < MIN_WINDOW {
        return Err(Error::Protocol(PeerMisbehaved::WindowTooSmall(window)));
    }
    Ok(window)
}

impl<'a> Frame<'a> {
    // Long: one arm per frame type, each the layout of its body (§4.1), side by side.
    pub fn parse(plain: &'a [u8]) -> Result<Self> {
        let (&kind, body) = plain
            .split_first()
            .ok_or(Error::Protocol(PeerMisbehaved::EmptyFrame))?;
        Ok(match FrameType::try_from(kind)? {
            FrameType::Data => data(0, body)?,
            FrameType::ChannelData => {
                let (channel, rest) = channel_of(body, "CH_DATA")?;
                data(channel, rest)?
            }
            FrameType::Ping => Frame::Ping(u64::from_be_bytes(exact(body, "PING")?)),
            FrameType::Pong => Frame::Pong(u64::from_be_bytes(exact(body, "PONG")?)),
            FrameType::Close => {
                if body.len() < 2 || body.len() > 2 + MAX_CLOSE_REASON {
                    return Err(Error::Protocol(PeerMisbehaved::CloseLength));
                }
                let code = u16::from_be_bytes([body[0], body[1]]);
                if !crate::error::CloseCode(code).travels() {
                    return Err(Error::Protocol(PeerMisbehaved::ReservedCloseCode(code)));
                }
                let reason = std::str::from_utf8(&body[2..])
                    .map_err(|_| Error::Protocol(PeerMisbehaved::CloseReasonNotUtf8))?;
                Frame::Close { code, reason }
            }
            FrameType::Rekey => {
                exact::<0>(body, "REKEY")?;
                Frame::Rekey
            }
            FrameType::Confirm => match body.len() {
                0 => Frame::Confirm(None),
                SESSION_REQUEST_LEN => {
                    let flags = body[0];
                    if flags & !FLAG_RESUME != 0 {
                        return Err(Error::Protocol(PeerMisbehaved::UnknownSessionFlags(flags)));
                    }
                    Frame::Confirm(Some(SessionRequest {
                        resume: flags & FLAG_RESUME != 0,
                        session_id: body[1..1 + SESSION_ID_LEN].try_into().expect("16 bytes"),
                        next_expected: u64::from_be_bytes(
                            body[17..25].try_into().expect("8 bytes"),
                        ),
                        window: window(&body[25..])?,
                    }))
                }
                n => return Err(Error::Protocol(PeerMisbehaved::ConfirmBody(n))),
            },
            FrameType::Ack => Frame::Ack(u64::from_be_bytes(exact(body, "ACK")?)),
            FrameType::Resume => {
                let b: [u8; RESUME_LEN] = exact(body, "RESUME")?;
                let status = match b[0] {
                    0 => ResumeStatus::Created,
                    1 => ResumeStatus::Resumed,
                    2 => ResumeStatus::Unknown,
                    other => {
                        return Err(Error::Protocol(PeerMisbehaved::UnknownResumeStatus(other)))
                    }
                };
                Frame::Resume(ResumeReply {
                    status,
                    next_expected: u64::from_be_bytes(b[1..9].try_into().expect("8 bytes")),
                    window: window(&b[9..])?,
                })
            }
            FrameType::Open => {
                let (channel, name) = channel_of(body, "OPEN")?;
                Frame::Open {
                    channel,
                    name: text(name, MAX_CHANNEL_NAME)?,
                }
            }
            FrameType::Window => {
                let (channel, limit) = channel_and_u64(body, "WINDOW")?;
                Frame::Window { channel, limit }
            }
            FrameType::Blocked => {
                let (channel, needed) = channel_and_u64(body, "BLOCKED")?;
                Frame::Blocked { channel, needed }
            }
            FrameType::Fin => {
                let (channel, rest) = channel_of(body, "FIN")?;
                exact::<0>(rest, "FIN")?;
                Frame::Fin { channel }
            }
            FrameType::Reset => {
                let (channel, rest) = channel_of(body, "RESET")?;
                if rest.len() < 2 {
                    return Err(Error::Protocol(PeerMisbehaved::FrameBody {
                        what: "RESET",
                        expected: 6,
                        len: body.len(),
                    }));
                }
                let code = u16::from_be_bytes([rest[0], rest[1]]);
                if code != 0 && code < MIN_APPLICATION_RESET_CODE {
                    return Err(Error::Protocol(PeerMisbehaved::ReservedResetCode(code)));
                }
                Frame::Reset {
                    channel,
                    code,
                    reason: text(&rest[2..], MAX_CLOSE_REASON)?,
                }
            }
        })
    }

    /// Append the plaintext of a non-DATA frame to `out`.
    pub fn write_control(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Ping(v) => {
                out.push(FrameType::Ping as u8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Frame::Pong(v) => {
                out.push(FrameType::Pong as u8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Frame::Close { code, reason } => {
                out.push(FrameType::Close as u8);
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(truncate_utf8(reason, MAX_CLOSE_REASON).as_bytes());
            }
            Frame::Rekey => out.push(FrameType::Rekey as u8),
            Frame::Confirm(request) => {
                out.push(FrameType::Confirm as u8);
                if let Some(r) = request {
                    out.push(if r.resume { FLAG_RESUME } else { 0 });
                    out.extend_from_slice(&r.session_id);
                    out.extend_from_slice(&r.next_expected.to_be_bytes());
                    out.extend_from_slice(&r.window.to_be_bytes());
                }
            }
            Frame::Ack(v) => {
                out.push(FrameType::Ack as u8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Frame::Resume(r) => {
                out.push(FrameType::Resume as u8);
                out.push(r.status as u8);
                out.extend_from_slice(&r.next_expected.to_be_bytes());
                out.extend_from_slice(&r.window.to_be_bytes());
            }
            Frame::Open { channel, name } => {
                out.push(FrameType::Open as u8);
                out.extend_from_slice(&channel.to_be_bytes());
                out.extend_from_slice(truncate_utf8(name, MAX_CHANNEL_NAME).as_bytes());
            }
            Frame::Window { channel, limit } => {
                out.push(FrameType::Window as u8);
                out.extend_from_slice(&channel.to_be_bytes());
                out.extend_from_slice(&limit.to_be_bytes());
            }
            Frame::Blocked { channel, needed } => {
                out.push(FrameType::Blocked as u8);
                out.extend_from_slice(&channel.to_be_bytes());
                out.extend_from_slice(&needed.to_be_bytes());
            }
            Frame::Fin { channel } => {
                out.push(FrameType::Fin as u8);
                out.extend_from_slice(&channel.to_be_bytes());
            }
            Frame::Reset {
                channel,
                code,
                reason,
            } => {
                out.push(FrameType::Reset as u8);
                out.extend_from_slice(&channel.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(truncate_utf8(reason, MAX_CLOSE_REASON).as_bytes());
            }
            Frame::Data { .. } => unreachable!("DATA frames are written by the session's sealer"),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame<'_>) {
        let mut buf = Vec::new();
        f.write_control(&mut buf);
        assert_eq!(Frame::parse(&buf).unwrap(), f);
    }

    #[test]
    fn control_frames_round_trip() {
        round_trip(Frame::Ping(42));
        round_trip(Frame::Pong(u64::MAX));
        round_trip(Frame::Close {
            code: 1000,
            reason: "bye",
        });
        round_trip(Frame::Rekey);
        round_trip(Frame::Confirm(None));
        round_trip(Frame::Confirm(Some(SessionRequest {
            session_id: [7; 16],
            resume: true,
            next_expected: 1 << 40,
            window: 1 << 22,
        })));
        round_trip(Frame::Ack(99));
        for status in [
            ResumeStatus::Created,
            ResumeStatus::Resumed,
            ResumeStatus::Unknown,
        ] {
            round_trip(Frame::Resume(ResumeReply {
                status,
                next_expected: 5,
                window: MIN_WINDOW,
            }));
        }
    }

    #[test]
    fn data_frames_parse() {
        assert_eq!(
            Frame::parse(&[1, 0, b'h', b'i']).unwrap(),
            Frame::Data {
                channel: 0,
                more: false,
                total_len: None,
                chunk: b"hi"
            }
        );
        let mut first = vec![1, FLAG_MORE | FLAG_LENGTH];
        first.extend_from_slice(&100_000u64.to_be_bytes());
        first.extend_from_slice(b"abc");
        assert_eq!(
            Frame::parse(&first).unwrap(),
            Frame::Data {
                channel: 0,
                more: true,
                total_len: Some(100_000),
                chunk: b"abc"
            }
        );
    }

    #[test]
    fn malformed_frames_are_rejected() {
        for bad in [
            &[][..],
            &[0x00],
            &[0x07],
            &[0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x08, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x08, 0],
            &[0x09],
            &[0xff, 1, 2],
            &[1],
            &[1, 0x80],
            &[1, FLAG_LENGTH, 0, 0, 0],
            &[2, 0, 0, 0],
            &[3],
            &[4, 0],
            &[4, 3, 0xe8, 0xff, 0xfe],
            // Reserved close codes: 0, 1006 (never sent), 1005, 2000, 4000, 5000.
            &[4, 0, 0],
            &[4, 0x03, 0xee],
            &[4, 0x03, 0xed],
            &[4, 0x07, 0xd0],
            &[4, 0x0f, 0xa0],
            &[4, 0x13, 0x88],
            &[5, 0],
            &[6, 1],
            &[
                6, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            assert!(Frame::parse(bad).is_err(), "{bad:?}");
        }
        let mut long = vec![4, 3, 0xe8];
        long.extend_from_slice(&[b'x'; MAX_CLOSE_REASON + 1]);
        assert!(Frame::parse(&long).is_err());
    }

    #[test]
    fn session_windows_below_the_minimum_are_refused() {
        for window in [0, 1, MIN_WINDOW - 1] {
            let mut confirm = Vec::new();
            Frame::Confirm(Some(SessionRequest {
                session_id: [1; 16],
                resume: false,
                next_expected: 0,
                window,
            }))
            .write_control(&mut confirm);
            assert!(Frame::parse(&confirm).is_err(), "CONFIRM window {window}");
            let mut resume = Vec::new();
            Frame::Resume(ResumeReply {
                status: ResumeStatus::Created,
                next_expected: 0,
                window,
            })
            .write_control(&mut resume);
            assert!(Frame::parse(&resume).is_err(), "RESUME window {window}");
        }
    }

    #[test]
    fn only_codes_that_travel_are_accepted_in_close() {
        for code in [
            1000u16, 1001, 1002, 1009, 1013, 3000, 3999, 4001, 4003, 4100, 4999,
        ] {
            let mut buf = vec![4];
            buf.extend_from_slice(&code.to_be_bytes());
            assert!(Frame::parse(&buf).is_ok(), "{code}");
        }
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let mut buf = Vec::new();
        Frame::Close {
            code: 1000,
            reason: &reason,
        }
        .write_control(&mut buf);
        match Frame::parse(&buf).unwrap() {
            Frame::Close { reason, .. } => assert!(reason.len() <= MAX_CLOSE_REASON),
            other => panic!("{other:?}"),
        }
    }
}
