//! The session as a tokio-util codec over a byte stream: each frame is a u16 big-endian length
//! followed by that many sealed bytes (Noise's own framing). Lengths are checked before any
//! buffer is reserved; the u16 itself bounds a frame at 64 KiB.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{Frame, ResumeReply, SessionRequest, MIN_FRAME_LEN};
use super::record::{ChannelFrame, Event, Opener, Piece, Sealer};
use crate::error::{Error, PeerMisbehaved, Result};

/// Read at least this much per socket read when the buffer runs dry (fewer, larger reads).
const READ_RESERVE: usize = 256 * 1024;

/// Decrypts and reassembles frames into [`Event`]s.
pub struct FrameDecoder {
    pub opener: Opener,
}

impl Decoder for FrameDecoder {
    type Item = Event;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>> {
        loop {
            if src.len() < 2 {
                src.reserve(READ_RESERVE);
                return Ok(None);
            }
            let len = u16::from_be_bytes([src[0], src[1]]) as usize;
            if len < MIN_FRAME_LEN {
                return Err(Error::Protocol(PeerMisbehaved::FrameTooShort(len)));
            }
            if src.len() < 2 + len {
                src.reserve((2 + len - src.len()).max(READ_RESERVE));
                return Ok(None);
            }
            // Opened in place; the bytes of a message are copied out, so the buffer is reused.
            let event = self.opener.open_frame(&mut src[2..2 + len])?;
            src.advance(2 + len);
            if let Some(event) = event {
                return Ok(Some(event));
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Event>> {
        match self.decode(src)? {
            Some(event) => Ok(Some(event)),
            None if src.is_empty() && self.opener.buffered() == 0 => Ok(None),
            None => Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

/// What the writing side is asked to put on the wire.
#[derive(Debug)]
pub enum Outgoing {
    /// A whole message on the default channel.
    Message(Bytes),
    /// One frame's share of a message on a channel (the default one included).
    Piece {
        channel: u32,
        piece: Piece,
        chunk: Bytes,
    },
    Channel(ChannelFrame),
    Ping(u64),
    Pong(u64),
    Close {
        code: u16,
        reason: String,
    },
    Confirm(Option<SessionRequest>),
    Ack(u64),
    Resume(ResumeReply),
}

/// Seals [`Outgoing`] items straight into the write buffer.
pub struct FrameEncoder {
    pub sealer: Sealer,
}

impl Encoder<Outgoing> for FrameEncoder {
    type Error = Error;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<()> {
        self.encode_item(item, dst)
    }
}

impl FrameEncoder {
    /// Seal `item` into `dst` (the `Encoder` impl, without needing the trait in scope).
    pub fn encode_item(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<()> {
        match item {
            Outgoing::Message(m) => self.sealer.seal_message(&m, dst),
            Outgoing::Piece {
                channel,
                piece,
                chunk,
            } => self.sealer.seal_piece(channel, piece, &chunk, dst),
            Outgoing::Channel(frame) => self.sealer.seal_control(&frame.as_frame(), dst),
            Outgoing::Ping(v) => self.sealer.seal_control(&Frame::Ping(v), dst),
            Outgoing::Pong(v) => self.sealer.seal_control(&Frame::Pong(v), dst),
            Outgoing::Close { code, reason } => self.sealer.seal_control(
                &Frame::Close {
                    code,
                    reason: &reason,
                },
                dst,
            ),
            Outgoing::Confirm(request) => self.sealer.seal_control(&Frame::Confirm(request), dst),
            Outgoing::Ack(v) => self.sealer.seal_control(&Frame::Ack(v), dst),
            Outgoing::Resume(r) => self.sealer.seal_control(&Frame::Resume(r), dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::RekeyPolicy;
    use zeroize::Zeroizing;

    fn codecs() -> (FrameEncoder, FrameDecoder) {
        let key = Zeroizing::new([8u8; 32]);
        let p = RekeyPolicy::default();
        (
            FrameEncoder {
                sealer: Sealer::new(&key, p, 1 << 20),
            },
            FrameDecoder {
                opener: Opener::new(&key, p, 1 << 20, false),
            },
        )
    }

    #[test]
    fn decodes_byte_by_byte() {
        let (mut enc, mut dec) = codecs();
        let mut wire = BytesMut::new();
        enc.encode(
            Outgoing::Message(Bytes::from(vec![7u8; 200_000])),
            &mut wire,
        )
        .unwrap();
        enc.encode(Outgoing::Ping(9), &mut wire).unwrap();
        let mut src = BytesMut::new();
        let mut events = Vec::new();
        for b in wire {
            src.extend_from_slice(&[b]);
            if let Some(e) = dec.decode(&mut src).unwrap() {
                events.push(e);
            }
        }
        assert_eq!(
            events,
            vec![
                Event::Fragment {
                    channel: 0,
                    credit: 65_509 + 64
                },
                Event::Fragment {
                    channel: 0,
                    credit: 65_517
                },
                Event::Fragment {
                    channel: 0,
                    credit: 65_517
                },
                Event::Message {
                    channel: 0,
                    message: Bytes::from(vec![7u8; 200_000]).into(),
                    credit: 200_000 - 65_509 - 2 * 65_517
                },
                Event::Ping(9)
            ]
        );
    }

    #[test]
    fn short_length_prefix_is_refused() {
        let (_, mut dec) = codecs();
        let mut src = BytesMut::from(&[0u8, 3, 1, 2, 3][..]);
        assert!(matches!(
            dec.decode(&mut src),
            Err(Error::Protocol(PeerMisbehaved::FrameTooShort(3)))
        ));
    }

    #[test]
    fn huge_length_prefix_reserves_at_most_one_frame() {
        let (_, mut dec) = codecs();
        let mut src = BytesMut::from(&[0xffu8, 0xff, 1, 2, 3][..]);
        assert!(dec.decode(&mut src).unwrap().is_none());
        assert!(src.capacity() <= 65_537 + READ_RESERVE);
    }

    #[test]
    fn eof_inside_a_frame_or_message_is_truncation() {
        let (mut enc, mut dec) = codecs();
        let mut wire = BytesMut::new();
        enc.encode(
            Outgoing::Message(Bytes::from(vec![1u8; 300_000])),
            &mut wire,
        )
        .unwrap();
        // Cut after the first two whole frames: no partial frame, but a partial message.
        let first_two = 2 * (2 + 65_535);
        let mut src = wire.split_to(first_two);
        for _ in 0..2 {
            let fragment = dec.decode(&mut src).unwrap();
            assert!(matches!(fragment, Some(Event::Fragment { channel: 0, .. })));
        }
        assert!(dec.decode(&mut src).unwrap().is_none());
        assert!(matches!(dec.decode_eof(&mut src), Err(Error::Io(_))));
        let (_, mut dec) = codecs();
        let mut src = BytesMut::from(&[0u8, 40, 1][..]);
        assert!(matches!(dec.decode_eof(&mut src), Err(Error::Io(_))));
    }
}
