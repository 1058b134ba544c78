//! A received message as the frames delivered it: one decrypted buffer, or the fragments of a
//! long message, which are copied exactly once, into whatever the application reads into.

use bytes::{Bytes, BytesMut};

#[derive(Clone)]
pub struct Message {
    parts: Vec<Bytes>,
    len: usize,
}

impl Message {
    pub fn new() -> Self {
        Message {
            parts: Vec::new(),
            len: 0,
        }
    }

    pub fn push(&mut self, part: Bytes) {
        self.len += part.len();
        if !part.is_empty() {
            self.parts.push(part);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy the whole message into `dst`, which must be exactly `len()` bytes.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len,
            "destination must fit the message exactly"
        );
        let mut at = 0;
        for part in &self.parts {
            dst[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }

    /// One contiguous buffer (no copy for a single-frame message).
    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().expect("one part"),
            _ => {
                let mut out = BytesMut::zeroed(self.len);
                self.copy_to(&mut out);
                out.freeze()
            }
        }
    }
}

/// Equal when the bytes are equal, however they are split.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .parts
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.parts.iter().flat_map(|p| p.iter()))
    }
}

impl Eq for Message {}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Message({} bytes in {} parts)",
            self.len,
            self.parts.len()
        )
    }
}

impl Default for Message {
    fn default() -> Self {
        Message::new()
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        let mut m = Message::new();
        m.push(b);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_copy_in_order() {
        let mut m = Message::new();
        for part in [&b"ab"[..], b"", b"cde", b"f"] {
            m.push(Bytes::copy_from_slice(part));
        }
        assert_eq!(m.len(), 6);
        let mut out = vec![0u8; 6];
        m.copy_to(&mut out);
        assert_eq!(out, b"abcdef");
        assert_eq!(m.into_bytes(), Bytes::from_static(b"abcdef"));
        assert!(Message::new().into_bytes().is_empty());
    }
}
