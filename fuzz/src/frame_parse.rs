//! `frame_parse`: arbitrary bytes as a decrypted frame body. A body that parses must re-encode
//! to exactly the same bytes: the encoding is canonical, so two different plaintexts never
//! mean the same frame.

use argonlink::core::frame::{Frame, FrameType, FLAG_LENGTH, FLAG_MORE};

/// Encode a parsed frame the way the sender does.
pub fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match frame {
        Frame::Data {
            channel,
            more,
            total_len,
            chunk,
        } => {
            if *channel == 0 {
                out.push(FrameType::Data as u8);
            } else {
                out.push(FrameType::ChannelData as u8);
                out.extend_from_slice(&channel.to_be_bytes());
            }
            let mut flags = 0;
            if *more {
                flags |= FLAG_MORE;
            }
            if total_len.is_some() {
                flags |= FLAG_LENGTH;
            }
            out.push(flags);
            if let Some(total) = total_len {
                out.extend_from_slice(&total.to_be_bytes());
            }
            out.extend_from_slice(chunk);
        }
        control => control.write_control(&mut out),
    }
    out
}

/// Returns whether the input parsed.
pub fn run(data: &[u8]) -> bool {
    match Frame::parse(data) {
        Ok(frame) => {
            assert_eq!(
                encode(&frame),
                data,
                "{frame:?} does not re-encode to its bytes"
            );
            true
        }
        Err(e) => {
            assert!(
                matches!(e, argonlink::Error::Protocol(_)),
                "a malformed frame must be a protocol error, got {e:?}"
            );
            false
        }
    }
}
