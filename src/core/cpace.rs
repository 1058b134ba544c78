//! CPace, the balanced PAKE of draft-irtf-cfrg-cpace-21, suite CPACE-RISTR255-SHA512, in its
//! initiator-responder mode.
//!
//! Composed from the draft: the group (ristretto255's element derivation, encoding, decoding
//! and scalar multiplication) is `curve25519-dalek`'s, the hash is SHA-512; what is written
//! here is only the draft's string encodings (`prepend_len`, `lv_cat`, `generator_string`) and
//! the order of operations. The draft's ristretto255 test vector is checked below.
//!
//! Roles in argonlink: the server is the initiator A (its share travels with its parameters),
//! the client the responder B (its share opens message 1).

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand::RngCore;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, Zeroizing};

/// An encoded group element: a share on the wire.
pub const SHARE_LEN: usize = 32;
/// ISK: one SHA-512 output.
pub const ISK_LEN: usize = 64;

const DSI: &[u8] = b"CPaceRistretto255";
const DSI_ISK: &[u8] = b"CPaceRistretto255_ISK";
/// SHA-512's input block: the generator string pads DSI and PRS to fill it (draft §6.1).
const HASH_BLOCK: usize = 128;

/// Why a run was aborted. None of these says anything about the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// The peer's share is not the encoding of a ristretto255 element.
    InvalidShare,
    /// The shared point is the identity (the peer's share was the identity).
    Identity,
}

/// The intermediate session key. Zeroized on drop.
pub struct Isk(Zeroizing<[u8; ISK_LEN]>);

impl Isk {
    pub fn as_bytes(&self) -> &[u8; ISK_LEN] {
        &self.0
    }
}

/// One side's run: its secret scalar and its share, until the peer's share arrives.
pub struct Run {
    scalar: Zeroizing<Scalar>,
    share: [u8; SHARE_LEN],
    sid: Vec<u8>,
}

impl Run {
    /// Start a run: derive the generator from PRS, CI and sid, sample a scalar, compute the
    /// share to send.
    pub fn start(prs: &[u8], ci: &[u8], sid: &[u8]) -> Run {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut bytes[..]);
        Run::with_scalar_bytes(prs, ci, sid, &mut bytes)
    }

    /// The draft's `sample_scalar` for ristretto255 is 32 random bytes with the bits above
    /// the group's 252 cleared, read little-endian (always below the group order). The bytes
    /// are wiped.
    fn with_scalar_bytes(prs: &[u8], ci: &[u8], sid: &[u8], bytes: &mut [u8; 32]) -> Run {
        bytes[31] &= 0x0f;
        let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(*bytes));
        bytes.zeroize();
        // The generator tests password guesses as well as the PRS does: wiped after use.
        let generator = Zeroizing::new(calculate_generator(prs, ci, sid));
        let share = (*generator * *scalar).compress().to_bytes();
        Run {
            scalar,
            share,
            sid: sid.to_vec(),
        }
    }

    /// Our share, to send.
    pub fn share(&self) -> &[u8; SHARE_LEN] {
        &self.share
    }

    /// Finish with the peer's share. `initiator`: we are A, so our share comes first in the
    /// transcript. ADa and ADb are the draft's associated data.
    pub fn finish(
        self,
        peer_share: &[u8; SHARE_LEN],
        initiator: bool,
        ad_a: &[u8],
        ad_b: &[u8],
    ) -> Result<Isk, Abort> {
        // scalar_mult_vfy: decode, multiply, refuse the identity.
        let peer = CompressedRistretto(*peer_share)
            .decompress()
            .ok_or(Abort::InvalidShare)?;
        let k = Zeroizing::new(peer * *self.scalar);
        if k.is_identity() {
            return Err(Abort::Identity);
        }
        let k = Zeroizing::new(k.compress().to_bytes());
        let (ya, yb) = if initiator {
            (&self.share, peer_share)
        } else {
            (peer_share, &self.share)
        };
        let mut h = Sha512::new();
        prepend_len(&mut h, DSI_ISK);
        prepend_len(&mut h, &self.sid);
        prepend_len(&mut h, &k[..]);
        // transcript_ir(Ya, ADa, Yb, ADb) = lv_cat(Ya, ADa) || lv_cat(Yb, ADb)
        prepend_len(&mut h, ya);
        prepend_len(&mut h, ad_a);
        prepend_len(&mut h, yb);
        prepend_len(&mut h, ad_b);
        let mut isk = Zeroizing::new([0u8; ISK_LEN]);
        isk.copy_from_slice(&h.finalize());
        Ok(Isk(isk))
    }
}

/// Whether `share` decodes to a group element other than the identity: what a share must be
/// before anyone spends work on it.
pub fn is_valid_share(share: &[u8; SHARE_LEN]) -> bool {
    CompressedRistretto(*share)
        .decompress()
        .is_some_and(|p| !p.is_identity())
}

/// `calculate_generator`: SHA-512 of the generator string, mapped to the group by
/// ristretto255's element derivation (RFC 9496 §4.3.4).
fn calculate_generator(prs: &[u8], ci: &[u8], sid: &[u8]) -> RistrettoPoint {
    let mut h = Sha512::new();
    // generator_string = lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid), the padding filling
    // the first block, so the work hashed with the PRS does not depend on its length.
    let len_zpad = HASH_BLOCK
        .saturating_sub(leb128_len(prs.len()) + prs.len())
        .saturating_sub(leb128_len(DSI.len()) + DSI.len())
        .saturating_sub(1);
    prepend_len(&mut h, DSI);
    prepend_len(&mut h, prs);
    prepend_len(&mut h, &vec![0u8; len_zpad]);
    prepend_len(&mut h, ci);
    prepend_len(&mut h, sid);
    let mut wide = Zeroizing::new([0u8; 64]);
    wide.copy_from_slice(&h.finalize());
    RistrettoPoint::from_uniform_bytes(&wide)
}

/// `prepend_len`, fed to a hash: the LEB128 length, then the bytes.
fn prepend_len(h: &mut Sha512, bytes: &[u8]) {
    leb128(bytes.len(), |b| h.update([b]));
    h.update(bytes);
}

/// LEB128: 7 bits a byte, least significant first, bit 7 set while more follow.
fn leb128(mut n: usize, mut emit: impl FnMut(u8)) {
    while n >= 0x80 {
        emit((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    emit(n as u8);
}

fn leb128_len(n: usize) -> usize {
    let mut len = 0;
    leb128(n, |_| len += 1);
    len
}

/// `lv_cat` of the parts, as bytes (for CI, which both sides build before the run).
pub fn lv_cat(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for part in parts {
        leb128(part.len(), |b| out.push(b));
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn arr(s: &str) -> [u8; 32] {
        hex(s).try_into().unwrap()
    }

    // draft-irtf-cfrg-cpace-21, Appendix B.3: "Test vector for CPace using group ristretto255
    // and hash SHA-512".
    const PRS: &str = "50617373776f7264";
    const CI: &str = "0b415f696e69746961746f720b425f726573706f6e646572";
    const SID: &str = "7e4b4791d6a8ef019b936c79fb7f2c57";
    const G: &str = "222b6b195fe84b1652badb6f6a3ae3d24341e7306967f0b8115b40d5698c7e56";
    const YA_SCALAR: &str = "da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4ff0976d08";
    const YA: &str = "d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0eec482b9157";
    const YB_SCALAR: &str = "d2316b454718c35362d83d69df6320f38578ed5984651435e2949762d900b80d";
    const YB: &str = "3ea7e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f7258";
    const AD_A: &[u8] = b"ADa";
    const AD_B: &[u8] = b"ADb";
    const ISK_IR: &str = "b69effbf61b51d56401c0f65601abe428de8206feaaf0e32198896dcae7b35cd\
                          2b38950a39dfd5d4a79164614c2984f7daa460b588c1e80c3fa2068af7900447";

    #[test]
    fn the_drafts_ristretto255_vector() {
        let (prs, ci, sid) = (hex(PRS), hex(CI), hex(SID));
        assert_eq!(
            calculate_generator(&prs, &ci, &sid).compress().to_bytes(),
            arr(G)
        );
        let a = Run::with_scalar_bytes(&prs, &ci, &sid, &mut arr(YA_SCALAR));
        let b = Run::with_scalar_bytes(&prs, &ci, &sid, &mut arr(YB_SCALAR));
        assert_eq!(a.share(), &arr(YA));
        assert_eq!(b.share(), &arr(YB));
        let isk_a = a.finish(&arr(YB), true, AD_A, AD_B).unwrap();
        let isk_b = b.finish(&arr(YA), false, AD_A, AD_B).unwrap();
        assert_eq!(isk_a.as_bytes()[..], hex(ISK_IR)[..]);
        assert_eq!(isk_a.as_bytes(), isk_b.as_bytes());
    }

    #[test]
    fn the_drafts_string_vectors() {
        // Appendix A.1: prepend_len and lv_cat.
        assert_eq!(lv_cat(&[b""]), hex("00"));
        assert_eq!(lv_cat(&[b"1234"]), hex("0431323334"));
        let r127: Vec<u8> = (0..127).collect();
        let r128: Vec<u8> = (0..128).collect();
        assert_eq!(lv_cat(&[&r127])[..1], [0x7f]);
        assert_eq!(lv_cat(&[&r128])[..2], [0x80, 0x01]);
        assert_eq!(lv_cat(&[&r128]).len(), 130);
        assert_eq!(
            lv_cat(&[b"1234", b"5", b"", b"678"]),
            hex("043132333401350003363738")
        );
    }

    #[test]
    fn invalid_and_identity_shares_abort() {
        let run = || Run::start(b"prs", b"ci", b"sid");
        // Not a canonical encoding of any element.
        assert_eq!(
            run().finish(&[0xff; 32], true, b"", b"").err(),
            Some(Abort::InvalidShare)
        );
        // The identity's encoding is all zeros.
        assert_eq!(
            run().finish(&[0; 32], true, b"", b"").err(),
            Some(Abort::Identity)
        );
    }

    #[test]
    fn different_inputs_give_different_keys() {
        let agree = |a: (&[u8], &[u8], &[u8]), b: (&[u8], &[u8], &[u8])| {
            let ra = Run::start(a.0, a.1, a.2);
            let rb = Run::start(b.0, b.1, b.2);
            let (sa, sb) = (*ra.share(), *rb.share());
            let ka = ra.finish(&sb, true, b"", b"").unwrap();
            let kb = rb.finish(&sa, false, b"", b"").unwrap();
            ka.as_bytes() == kb.as_bytes()
        };
        let base: (&[u8], &[u8], &[u8]) = (b"prs", b"ci", b"sid");
        assert!(agree(base, base));
        assert!(!agree(base, (b"prt", b"ci", b"sid")));
        assert!(!agree(base, (b"prs", b"cj", b"sid")));
        assert!(!agree(base, (b"prs", b"ci", b"sie")));
    }
}
