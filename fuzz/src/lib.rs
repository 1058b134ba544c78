//! The fuzz targets' logic, shared by the libFuzzer entry points in `fuzz_targets/` and by the
//! seed generator in `examples/seeds.rs`.
//!
//! Each module decodes a fuzz input with a simple, total byte format (every input means
//! something; a truncated record just ends the input), runs the code under test and asserts
//! invariants. The structured formats have encoders, so seeds are real encodings.

pub mod connection;
pub mod decoder;
pub mod frame_parse;
pub mod handshake;
pub mod mitm;
pub mod reassembly;
pub mod roundtrip;

use argonlink::core::cipher::{CipherState, KEY_LEN, TAG_LEN};
use argonlink::error::Error;
use zeroize::Zeroizing;

/// Reads fields off the front of a fuzz input; `None` once the input runs out.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N).map(|b| b.try_into().expect("N bytes"))
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// The transport key both sides of the frame targets use.
pub fn test_key() -> Zeroizing<[u8; KEY_LEN]> {
    Zeroizing::new([0x42; KEY_LEN])
}

/// Seal one plaintext (at most `MAX_PLAINTEXT_LEN` bytes) and append it, with its u16 length
/// prefix, to `wire`.
pub fn seal_into(cs: &mut CipherState, plain: &[u8], wire: &mut Vec<u8>) {
    let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
    buf.extend_from_slice(plain);
    buf.extend_from_slice(&[0; TAG_LEN]);
    cs.seal_in_place(&mut buf).expect("sealing a valid frame");
    wire.extend_from_slice(&(buf.len() as u16).to_be_bytes());
    wire.extend_from_slice(&buf);
}

/// An error reduced to what two runs must agree on.
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Authentication(_) => "authentication",
        Error::Protocol(_) => "protocol",
        Error::Integrity => "integrity",
        Error::MessageTooLarge { .. } => "too-large",
        Error::Timeout(_) => "timeout",
        Error::Closed(_) => "closed",
        Error::Config(_) => "config",
        Error::Misuse(_) => "misuse",
        Error::Noise(_) => "noise",
        Error::KeyExhausted => "key-exhausted",
        Error::ChannelReset { .. } => "channel-reset",
        Error::ChannelFinished => "channel-finished",
        Error::ChannelClosed => "channel-closed",
        Error::ChannelLimit(_) => "channel-limit",
        Error::Unresponsive(_) => "unresponsive",
        Error::Io(_) => "io",
    }
}
