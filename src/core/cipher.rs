//! One direction of the transport: an AES-256-GCM key and its Noise nonce counter.
//!
//! The handshake's `Split()` yields one key per direction; each lives in its own `CipherState`,
//! so the reading and the writing task never share state. Nonces follow the Noise spec (§5.1,
//! AESGCM: 32 zero bits then the 64-bit counter, big-endian), count up from zero and are never
//! reused: a counter that would wrap is an error, and `rekey` (Noise §4.2) replaces the key.
//!
//! Two interchangeable AEAD backends: ring (default) and RustCrypto `aes-gcm` (`rustcrypto`).

use zeroize::Zeroizing;

use crate::error::{Error, PeerMisbehaved, Result};

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// Noise reserves the all-ones nonce for `REKEY`; counters stop one short of it.
const REKEY_NONCE: u64 = u64::MAX;

fn nonce_bytes(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// An AES-256-GCM implementation, with the empty associated data Noise transport messages use.
pub trait Aead: Sized + Send {
    fn new(key: &[u8; KEY_LEN]) -> Self;
    /// Encrypt `data` in place and return the tag.
    fn seal(&self, nonce: [u8; 12], data: &mut [u8]) -> [u8; TAG_LEN];
    /// Decrypt `data` (ciphertext without tag) in place; on failure `data` is garbage.
    fn open(&self, nonce: [u8; 12], data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<()>;
}

#[cfg(feature = "ring")]
pub mod ring_backend {
    use super::*;
    use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

    /// ring's AES-256-GCM (AES-NI / PCLMULQDQ / VAES where the CPU has them).
    pub struct RingAead(LessSafeKey);

    impl Aead for RingAead {
        fn new(key: &[u8; KEY_LEN]) -> Self {
            let unbound = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 key is 32 bytes");
            RingAead(LessSafeKey::new(unbound))
        }

        fn seal(&self, nonce: [u8; 12], data: &mut [u8]) -> [u8; TAG_LEN] {
            let nonce = Nonce::assume_unique_for_key(nonce);
            let tag = self
                .0
                .seal_in_place_separate_tag(nonce, Aad::empty(), data)
                .expect("frame sizes are far below the AES-GCM limit");
            tag.as_ref().try_into().expect("tag is 16 bytes")
        }

        fn open(&self, nonce: [u8; 12], data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<()> {
            let nonce = Nonce::assume_unique_for_key(nonce);
            let tag = Tag::from(*tag);
            self.0
                .open_in_place_separate_tag(nonce, Aad::empty(), tag, data, 0..)
                .map(|_| ())
                .map_err(|_| Error::Integrity)
        }
    }
}

#[cfg(feature = "rustcrypto")]
pub mod rustcrypto_backend {
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit};

    /// RustCrypto's pure-Rust AES-256-GCM.
    pub struct RustCryptoAead(Aes256Gcm);

    impl Aead for RustCryptoAead {
        fn new(key: &[u8; KEY_LEN]) -> Self {
            RustCryptoAead(Aes256Gcm::new(key.into()))
        }

        fn seal(&self, nonce: [u8; 12], data: &mut [u8]) -> [u8; TAG_LEN] {
            let tag = self
                .0
                .encrypt_in_place_detached(&nonce.into(), b"", data)
                .expect("frame sizes are far below the AES-GCM limit");
            tag.into()
        }

        fn open(&self, nonce: [u8; 12], data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<()> {
            self.0
                .decrypt_in_place_detached(&nonce.into(), b"", data, tag.into())
                .map_err(|_| Error::Integrity)
        }
    }
}

#[cfg(feature = "ring")]
pub type DefaultAead = ring_backend::RingAead;
#[cfg(all(feature = "rustcrypto", not(feature = "ring")))]
pub type DefaultAead = rustcrypto_backend::RustCryptoAead;
#[cfg(not(any(feature = "ring", feature = "rustcrypto")))]
compile_error!("enable the `ring` (default) or the `rustcrypto` feature for AES-256-GCM");

/// A key and the next nonce for one direction.
pub struct CipherState<A: Aead = DefaultAead> {
    aead: A,
    nonce: u64,
}

impl<A: Aead> CipherState<A> {
    pub fn new(key: &Zeroizing<[u8; KEY_LEN]>) -> Self {
        CipherState {
            aead: A::new(key),
            nonce: 0,
        }
    }

    /// Frames sealed (or opened) under the current key.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    fn next_nonce(&mut self) -> Result<[u8; 12]> {
        if self.nonce == REKEY_NONCE {
            return Err(Error::KeyExhausted);
        }
        let n = nonce_bytes(self.nonce);
        self.nonce += 1;
        Ok(n)
    }

    /// Encrypt `buf[..len - TAG_LEN]` in place and write the tag into the last `TAG_LEN` bytes.
    pub fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<()> {
        let split = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Error::Protocol(PeerMisbehaved::ShorterThanTag))?;
        let nonce = self.next_nonce()?;
        let (data, tag_out) = buf.split_at_mut(split);
        tag_out.copy_from_slice(&self.aead.seal(nonce, data));
        Ok(())
    }

    /// Decrypt a sealed frame in place; returns the plaintext (the buffer minus the tag).
    /// The nonce advances even on failure: the connection is finished anyway.
    pub fn open_in_place<'a>(&mut self, buf: &'a mut [u8]) -> Result<&'a mut [u8]> {
        let split = buf.len().checked_sub(TAG_LEN).ok_or(Error::Integrity)?;
        let nonce = self.next_nonce()?;
        let (data, tag) = buf.split_at_mut(split);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().expect("split at TAG_LEN");
        self.aead.open(nonce, data, tag)?;
        Ok(data)
    }

    /// Noise `REKEY(k)`: the first 32 bytes of `ENCRYPT(k, 2^64-1, "", zeros)` become the key.
    /// As in Noise §11.3 the counter carries on, so no nonce value ever repeats on a connection.
    pub fn rekey(&mut self) {
        let mut next = Zeroizing::new([0u8; KEY_LEN]);
        let _tag = self.aead.seal(nonce_bytes(REKEY_NONCE), next.as_mut());
        self.aead = A::new(&next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new([b; KEY_LEN])
    }

    fn sealed(cs: &mut CipherState, msg: &[u8]) -> Vec<u8> {
        let mut buf = msg.to_vec();
        buf.extend_from_slice(&[0u8; TAG_LEN]);
        cs.seal_in_place(&mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trip_and_nonce_sequence() {
        let (mut tx, mut rx) = (
            CipherState::<DefaultAead>::new(&key(1)),
            CipherState::<DefaultAead>::new(&key(1)),
        );
        for i in 0..5u8 {
            let mut frame = sealed(&mut tx, &[i; 40]);
            assert_eq!(rx.open_in_place(&mut frame).unwrap(), &[i; 40]);
        }
        assert_eq!(tx.nonce(), 5);
    }

    #[test]
    fn same_plaintext_different_nonce_different_ciphertext() {
        let mut tx = CipherState::<DefaultAead>::new(&key(1));
        assert_ne!(sealed(&mut tx, b"same"), sealed(&mut tx, b"same"));
    }

    #[test]
    fn any_bit_flip_is_rejected() {
        let mut tx = CipherState::<DefaultAead>::new(&key(2));
        let frame = sealed(&mut tx, b"hello world");
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut rx = CipherState::<DefaultAead>::new(&key(2));
            assert!(
                matches!(rx.open_in_place(&mut bad), Err(Error::Integrity)),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn replayed_or_reordered_frame_is_rejected() {
        let mut tx = CipherState::<DefaultAead>::new(&key(3));
        let first = sealed(&mut tx, b"one");
        let second = sealed(&mut tx, b"two");
        let mut rx = CipherState::<DefaultAead>::new(&key(3));
        assert!(rx.open_in_place(&mut second.clone()).is_err());
        let mut rx = CipherState::<DefaultAead>::new(&key(3));
        rx.open_in_place(&mut first.clone()).unwrap();
        assert!(rx.open_in_place(&mut first.clone()).is_err());
    }

    #[test]
    fn rekey_changes_key_and_old_frames_fail() {
        let (mut tx, mut rx) = (
            CipherState::<DefaultAead>::new(&key(4)),
            CipherState::<DefaultAead>::new(&key(4)),
        );
        tx.rekey();
        let mut old_rx = CipherState::<DefaultAead>::new(&key(4));
        let frame = sealed(&mut tx, b"after rekey");
        assert!(old_rx.open_in_place(&mut frame.clone()).is_err());
        rx.rekey();
        assert_eq!(
            rx.open_in_place(&mut frame.clone()).unwrap(),
            b"after rekey"
        );
    }

    #[test]
    fn exhausted_counter_refuses_to_seal() {
        let mut tx = CipherState::<DefaultAead>::new(&key(5));
        tx.nonce = REKEY_NONCE;
        let mut buf = vec![0u8; 20];
        assert!(matches!(
            tx.seal_in_place(&mut buf),
            Err(Error::KeyExhausted)
        ));
    }

    /// Known-answer test: NIST SP 800-38D / McGrew-Viega test case 14 (AES-256, zero key,
    /// zero IV, one zero block).
    #[test]
    fn known_answer() {
        let aead = DefaultAead::new(&[0u8; 32]);
        let mut block = [0u8; 16];
        let tag = aead.seal([0u8; 12], &mut block);
        assert_eq!(hex(&block), "cea7403d4d606b6e074ec5d3baf39d18");
        assert_eq!(hex(&tag), "d0d1c8a799996bf0265b98b5d48ab919");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[cfg(all(feature = "ring", feature = "rustcrypto"))]
    #[test]
    fn ring_and_rustcrypto_interoperate() {
        use super::ring_backend::RingAead;
        use super::rustcrypto_backend::RustCryptoAead;
        let k = key(9);
        let mut ring_tx = CipherState::<RingAead>::new(&k);
        let mut rc_rx = CipherState::<RustCryptoAead>::new(&k);
        let mut rc_tx = CipherState::<RustCryptoAead>::new(&k);
        let mut ring_rx = CipherState::<RingAead>::new(&k);
        for len in [0usize, 1, 15, 16, 17, 1000, 65519] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut buf = msg.clone();
            buf.extend_from_slice(&[0; TAG_LEN]);
            let mut buf2 = buf.clone();
            ring_tx.seal_in_place(&mut buf).unwrap();
            assert_eq!(rc_rx.open_in_place(&mut buf).unwrap(), &msg[..]);
            rc_tx.seal_in_place(&mut buf2).unwrap();
            assert_eq!(ring_rx.open_in_place(&mut buf2).unwrap(), &msg[..]);
        }
        ring_tx.rekey();
        rc_rx.rekey();
        let mut buf = b"rekeyed".to_vec();
        buf.extend_from_slice(&[0; TAG_LEN]);
        ring_tx.seal_in_place(&mut buf).unwrap();
        assert_eq!(rc_rx.open_in_place(&mut buf).unwrap(), b"rekeyed");
    }
}
