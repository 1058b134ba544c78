//! A received message: one buffer of exactly its bytes (a fragmented message was reassembled
//! into one allocation of its announced length), copied once more only into whatever the
//! application reads it into.

use bytes::Bytes;

/// One allocation per message and no more: a queue of many tiny messages costs their bytes
/// and a small fixed overhead each (what the per-message credit stands for).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message(Bytes);

impl Message {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Copy the whole message into `dst`, which must be exactly `len()` bytes.
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.0.len(),
            "destination must fit the message exactly"
        );
        dst.copy_from_slice(&self.0);
    }

    /// The bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message({} bytes)", self.0.len())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_exactly_its_bytes() {
        let m = Message::from(Bytes::from_static(b"abcdef"));
        assert_eq!(m.len(), 6);
        let mut out = vec![0u8; 6];
        m.copy_to(&mut out);
        assert_eq!(out, b"abcdef");
        assert_eq!(m.into_bytes(), Bytes::from_static(b"abcdef"));
        assert!(Message::default().into_bytes().is_empty());
    }
}
