//! The handshake, with no I/O.
//!
//! - [`messages`]: the hello, the server parameters and the two Noise messages, each state its
//!   own type, so a message can only be processed in the state that expects it;
//! - [`client`] / [`server`]: each side's whole sequence as a state machine over bytes, from
//!   the first byte to the connection's record layer: length prefixes, key confirmation,
//!   admission, the session request and its answer, and what a close means at each point.
//!
//! A driver reads exactly the bytes a side `wants` and feeds them to `handle_input` (so the
//! handshake never reads into the connection's bytes, and holds at most one record), writes
//! what `poll_transmit` gives, and answers the questions only it can (the key: an Argon2 run or
//! a cache hit; whether there is room). After an error it still writes what `poll_transmit`
//! gives (a CLOSE saying why, where the peer has proved it holds the keys), then hangs up.

pub mod client;
mod messages;

pub mod server;

pub use messages::*;

use bytes::{Buf, BytesMut};

use super::frame::{MAX_FRAME_LEN, MIN_FRAME_LEN};
use super::record::{Event, Opener};
use crate::error::{Error, PeerMisbehaved, Result};

/// Bytes still missing for a fixed-size message, given what is buffered.
fn exact_wants<const N: usize>(buf: &[u8]) -> usize {
    N.saturating_sub(buf.len())
}

/// Bytes still missing for a length-prefixed record (a Noise message or a transport frame).
fn record_wants(buf: &[u8]) -> usize {
    if buf.len() < 2 {
        return 2 - buf.len();
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    (2 + len).saturating_sub(buf.len())
}

/// A whole length-prefixed record at the front of `buf`, taken off it; `None` until all of it
/// is there. The u16 prefix bounds what a peer can make us buffer to one record.
fn take_record(buf: &mut BytesMut) -> Result<Option<BytesMut>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    debug_assert!(len <= MAX_FRAME_LEN);
    if len < MIN_FRAME_LEN {
        return Err(Error::Protocol(PeerMisbehaved::FrameTooShort(len)));
    }
    if buf.len() < 2 + len {
        return Ok(None);
    }
    let mut record = buf.split_to(2 + len);
    record.advance(2);
    Ok(Some(record))
}

/// The first transport frame of a direction, which must be a whole control frame (CONFIRM,
/// RESUME or CLOSE): `None` until it is all there.
fn first_frame(
    opener: &mut Opener,
    buf: &mut BytesMut,
    expected: &'static str,
) -> Result<Option<Event>> {
    let Some(mut record) = take_record(buf)? else {
        return Ok(None);
    };
    match opener.open_frame(&mut record)? {
        Some(event) => Ok(Some(event)),
        // The first fragment of a message: not what the handshake allows first.
        None => Err(Error::Protocol(PeerMisbehaved::FirstFrameMustBe(expected))),
    }
}

/// A fixed-size message at the front of `buf`, taken off it.
fn take_exact<const N: usize>(buf: &mut BytesMut) -> Option<[u8; N]> {
    (buf.len() >= N).then(|| {
        let mut out = [0u8; N];
        out.copy_from_slice(&buf[..N]);
        buf.advance(N);
        out
    })
}

/// A u16-length-prefixed Noise message of exactly `N` bytes at the front of `buf`.
fn take_noise_message<const N: usize>(
    buf: &mut BytesMut,
    what: &'static str,
) -> Result<Option<[u8; N]>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if len != N {
        return Err(Error::Protocol(PeerMisbehaved::MessageLength {
            what,
            len,
            expected: N,
        }));
    }
    if buf.len() < 2 + N {
        return Ok(None);
    }
    buf.advance(2);
    Ok(take_exact(buf))
}

/// A Noise message with its u16 length prefix, as it goes on the wire.
fn framed(msg: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
}

#[cfg(test)]
mod tests;
