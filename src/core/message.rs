//! A received message as the frames delivered it: one buffer for a message that fit one frame,
//! the fragments of a longer one, each copied out of the read buffer once as it arrived. The
//! application's read copies them once more, into whatever it reads into (a Python `bytes`).
//! Nothing is reserved ahead of the fragments: a message being reassembled holds what arrived,
//! which its channel's credit bounds, never the total its first fragment announced.

use bytes::{Bytes, BytesMut};

/// One allocation for a small message (no vector of parts): a queue of many tiny messages
/// costs their bytes and a small fixed overhead each (what the per-message credit stands for).
#[derive(Clone)]
pub struct Message {
    parts: Parts,
    len: usize,
}

#[derive(Clone)]
enum Parts {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Message {
    /// A message of these fragments, in order.
    pub fn from_parts(parts: Vec<Bytes>) -> Self {
        let len = parts.iter().map(Bytes::len).sum();
        Message {
            parts: Parts::Many(parts),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slices(&self) -> &[Bytes] {
        match &self.parts {
            Parts::One(b) => std::slice::from_ref(b),
            Parts::Many(v) => v,
        }
    }

    /// Copy the whole message into `dst`, which must be exactly `len()` bytes.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len,
            "destination must fit the message exactly"
        );
        let mut at = 0;
        for part in self.slices() {
            dst[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }

    /// One contiguous buffer (no copy for a single-frame message).
    pub fn into_bytes(self) -> Bytes {
        match self.parts {
            Parts::One(b) => b,
            Parts::Many(mut v) if v.len() == 1 => v.pop().expect("one part"),
            Parts::Many(v) => {
                let mut out = BytesMut::with_capacity(self.len);
                for part in v {
                    out.extend_from_slice(&part);
                }
                out.freeze()
            }
        }
    }
}

impl Default for Message {
    fn default() -> Self {
        Message::from(Bytes::new())
    }
}

/// Equal when the bytes are equal, however they are split.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .slices()
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.slices().iter().flat_map(|p| p.iter()))
    }
}

impl Eq for Message {}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Message({} bytes in {} parts)",
            self.len,
            self.slices().len()
        )
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message {
            len: b.len(),
            parts: Parts::One(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_copy_in_order() {
        let parts = [&b"ab"[..], b"", b"cde", b"f"]
            .iter()
            .map(|p| Bytes::copy_from_slice(p))
            .collect();
        let m = Message::from_parts(parts);
        assert_eq!(m.len(), 6);
        let mut out = vec![0u8; 6];
        m.copy_to(&mut out);
        assert_eq!(out, b"abcdef");
        assert_eq!(m, Message::from(Bytes::from_static(b"abcdef")));
        assert_eq!(m.into_bytes(), Bytes::from_static(b"abcdef"));
        assert!(Message::default().into_bytes().is_empty());
    }
}
