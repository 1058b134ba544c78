//! Argon2id: a password becomes a 32-byte password-related string (PRS, CPace's input), once
//! per (password, salt, parameters). Derivation is slow on purpose; callers run it off any event loop.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use base64ct::{Base64Unpadded, Encoding};
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, PeerMisbehaved, Result};

pub const PRS_LEN: usize = 32;
pub const SALT_LEN: usize = 16;

/// Argon2id cost parameters. `m_cost` is in KiB, as in RFC 9106 and PHC strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdfParams {
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106 §4, second recommended option: 64 MiB, 3 passes, 4 lanes. The default.
    pub const RFC9106: KdfParams = KdfParams {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
    };
    /// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane. Also the floor a client accepts
    /// from a server by default.
    pub const OWASP: KdfParams = KdfParams {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };
    /// The most a client agrees to spend by default when a server asks (256 MiB, 10 passes,
    /// 16 lanes): a hostile server must not make it allocate gigabytes.
    pub const DEFAULT_CAP: KdfParams = KdfParams {
        m_cost: 256 * 1024,
        t_cost: 10,
        p_cost: 16,
    };

    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<Self> {
        let p = KdfParams {
            m_cost,
            t_cost,
            p_cost,
        };
        // Argon2's own rule, said in its units (its error would only say "too small").
        if u64::from(m_cost) < 8 * u64::from(p_cost) {
            return Err(Error::config(format!(
                "m_cost must be at least 8 KiB per lane, got {p}"
            )));
        }
        p.argon2_params()?;
        Ok(p)
    }

    fn argon2_params(&self) -> Result<Params> {
        Params::new(self.m_cost, self.t_cost, self.p_cost, Some(PRS_LEN))
            .map_err(|e| Error::config(format!("invalid Argon2 parameters {self}: {e}")))
    }

    /// True when every cost is at least the other's.
    pub fn at_least(&self, floor: &KdfParams) -> bool {
        self.m_cost >= floor.m_cost && self.t_cost >= floor.t_cost && self.p_cost >= floor.p_cost
    }

    /// True when no cost exceeds the other's.
    pub fn at_most(&self, cap: &KdfParams) -> bool {
        self.m_cost <= cap.m_cost && self.t_cost <= cap.t_cost && self.p_cost <= cap.p_cost
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams::RFC9106
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={},t={},p={}", self.m_cost, self.t_cost, self.p_cost)
    }
}

/// The range of Argon2 costs a client accepts from a server. The floor stops a man in the
/// middle from lowering the cost of offline guessing against a recorded handshake; the cap
/// stops a hostile server from making the client allocate gigabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfBounds {
    pub floor: KdfParams,
    pub cap: KdfParams,
}

impl Default for KdfBounds {
    fn default() -> Self {
        KdfBounds {
            floor: KdfParams::OWASP,
            cap: KdfParams::DEFAULT_CAP,
        }
    }
}

impl KdfBounds {
    pub fn check(&self, offered: &KdfParams) -> Result<()> {
        if !offered.at_most(&self.cap) {
            return Err(Error::Protocol(PeerMisbehaved::KdfAboveCap {
                offered: *offered,
                cap: self.cap,
            }));
        }
        if !offered.at_least(&self.floor) {
            return Err(Error::Protocol(PeerMisbehaved::KdfBelowFloor {
                offered: *offered,
                floor: self.floor,
            }));
        }
        Ok(())
    }
}

pub type Salt = [u8; SALT_LEN];

pub fn random_salt() -> Salt {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key` (at most one 64-byte block long).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    assert!(
        key.len() <= 64,
        "HMAC keys longer than a block are not needed here"
    );
    let mut ipad = Zeroizing::new([0x36u8; 64]);
    let mut opad = Zeroizing::new([0x5cu8; 64]);
    for (i, b) in key.iter().enumerate() {
        ipad[i] ^= b;
        opad[i] ^= b;
    }
    let inner = Sha256::new()
        .chain_update(&ipad[..])
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad[..])
        .chain_update(inner)
        .finalize()
        .into()
}

/// The 32-byte Argon2id output, CPace's password-related string (PRS). Zeroized on drop,
/// compared in constant time, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Prs([u8; PRS_LEN]);

impl Prs {
    pub fn from_bytes(bytes: [u8; PRS_LEN]) -> Self {
        Prs(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; PRS_LEN] {
        &self.0
    }
}

impl PartialEq for Prs {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Prs {}

impl fmt::Debug for Prs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prs(<redacted>)")
    }
}

/// Argon2id(password, salt, params) → PRS. Slow by design: call from a blocking thread.
pub fn derive_prs(password: &[u8], salt: &Salt, params: &KdfParams) -> Result<Prs> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.argon2_params()?);
    let mut out = Zeroizing::new([0u8; PRS_LEN]);
    argon
        .hash_password_into(password, salt, out.as_mut())
        .map_err(|e| Error::config(format!("Argon2 derivation failed: {e}")))?;
    Ok(Prs(*out))
}

/// What a server needs to authenticate clients: salt, costs and the derived key.
/// The key is password-equivalent for this protocol.
#[derive(Clone)]
pub struct ServerKey {
    pub salt: Salt,
    pub params: KdfParams,
    pub prs: Prs,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// Derive from a plaintext password with a fresh random salt.
    pub fn from_password(password: &[u8], params: KdfParams) -> Result<Self> {
        let salt = random_salt();
        let prs = derive_prs(password, &salt, &params)?;
        Ok(ServerKey { salt, params, prs })
    }

    /// Parse a PHC string (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) made by [`hash_password`].
    /// No derivation runs: the hash is the key.
    pub fn from_phc(phc: &str) -> Result<Self> {
        let bad = |why: &str| Error::config(format!("invalid Argon2 PHC string: {why}"));
        // The hash field is the key itself: decode it straight into memory that is wiped, and
        // let the PHC parser (whose copy of a hash is never wiped) see only the rest.
        let (head, encoded) = phc
            .rsplit_once('$')
            .ok_or_else(|| bad("not a PHC string"))?;
        let hash = argon2::PasswordHash::new(head).map_err(|_| bad("not a PHC string"))?;
        if hash.hash.is_some() {
            return Err(bad("not a PHC string"));
        }
        if hash.algorithm != argon2::ARGON2ID_IDENT {
            return Err(bad("the algorithm must be argon2id"));
        }
        if hash.version.is_some_and(|v| v != u32::from(Version::V0x13)) {
            return Err(bad("the Argon2 version must be 19 (0x13)"));
        }
        let argon_params = Params::try_from(&hash).map_err(|_| bad("bad m/t/p parameters"))?;
        let params = KdfParams::new(
            argon_params.m_cost(),
            argon_params.t_cost(),
            argon_params.p_cost(),
        )?;
        let salt_bytes = hash.salt.as_ref().ok_or_else(|| bad("missing salt"))?;
        let salt: Salt = salt_bytes
            .as_ref()
            .try_into()
            .map_err(|_| bad("the salt must be 16 bytes"))?;
        // One spare byte: a longer hash fails to fit instead of being cut to size.
        let mut buf = Zeroizing::new([0u8; PRS_LEN + 1]);
        let decoded = Base64Unpadded::decode(encoded, &mut buf[..])
            .map_err(|_| bad("the hash must be 32 bytes"))?;
        if decoded.len() != PRS_LEN {
            return Err(bad("the hash must be 32 bytes"));
        }
        let mut prs = Prs([0u8; PRS_LEN]);
        prs.0.copy_from_slice(&buf[..PRS_LEN]);
        Ok(ServerKey { salt, params, prs })
    }

    /// The PHC string for this key (password-equivalent: store it like a password).
    pub fn to_phc(&self) -> Result<String> {
        use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt as PhcSalt};
        let argon_params = self.params.argon2_params()?;
        let internal = || Error::config("cannot encode PHC string");
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&argon_params).map_err(|_| internal())?,
            salt: Some(PhcSalt::new(&self.salt).map_err(|_| internal())?),
            hash: Some(Output::new(self.prs.as_bytes()).map_err(|_| internal())?),
        };
        Ok(phc.to_string())
    }
}

/// Make a PHC string for `password` with a fresh salt, for servers configured without plaintext.
pub fn hash_password(password: &[u8], params: KdfParams) -> Result<String> {
    ServerKey::from_password(password, params)?.to_phc()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn derivation_is_deterministic_and_salted() {
        let salt = [7u8; SALT_LEN];
        let a = derive_prs(b"pw", &salt, &FAST).unwrap();
        let b = derive_prs(b"pw", &salt, &FAST).unwrap();
        let c = derive_prs(b"pw", &[8u8; SALT_LEN], &FAST).unwrap();
        let d = derive_prs(b"pw2", &salt, &FAST).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn matches_rfc9106_reference_shape() {
        // Cross-check against an independent call of the argon2 crate's PHC hasher.
        use argon2::password_hash::PasswordHasher;
        let salt = [1u8; SALT_LEN];
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(FAST.m_cost, FAST.t_cost, FAST.p_cost, Some(32)).unwrap(),
        );
        let phc = argon
            .hash_password_with_salt(b"secret", &salt)
            .unwrap()
            .to_string();
        let key = ServerKey::from_phc(&phc).unwrap();
        assert_eq!(key.prs, derive_prs(b"secret", &salt, &FAST).unwrap());
        assert_eq!(key.salt, salt);
        assert_eq!(key.params, FAST);
    }

    #[test]
    fn phc_round_trip() {
        let phc = hash_password(b"correct horse", FAST).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        let key = ServerKey::from_phc(&phc).unwrap();
        assert_eq!(key.to_phc().unwrap(), phc);
        assert_eq!(
            key.prs,
            derive_prs(b"correct horse", &key.salt, &FAST).unwrap()
        );
    }

    #[test]
    fn phc_rejects_other_algorithms_and_shapes() {
        assert!(ServerKey::from_phc("not a hash").is_err());
        let phc = hash_password(b"x", FAST).unwrap();
        assert!(ServerKey::from_phc(&phc.replace("argon2id", "argon2i")).is_err());
        // A 16-byte hash is not a 32-byte key.
        let short = "$argon2id$v=19$m=256,t=1,p=1$AQEBAQEBAQEBAQEBAQEBAQ$AAAAAAAAAAAAAAAAAAAAAA";
        assert!(ServerKey::from_phc(short).is_err());
    }

    #[test]
    fn hmac_sha256_matches_rfc4231() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // Test cases 1 and 2.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn phc_hash_field_must_be_exactly_the_key() {
        let phc = hash_password(b"x", FAST).unwrap();
        let (head, _) = phc.rsplit_once('$').unwrap();
        assert!(ServerKey::from_phc(head).is_err(), "no hash field");
        let long = format!("{head}${}", "A".repeat(45)); // 33 bytes
        assert!(ServerKey::from_phc(&long).is_err());
        assert!(ServerKey::from_phc(&format!("{phc}$AAAA")).is_err());
    }

    #[test]
    fn bounds_reject_above_cap_and_below_floor() {
        let bounds = KdfBounds::default();
        assert!(bounds.check(&KdfParams::RFC9106).is_ok());
        assert!(bounds.check(&KdfParams::OWASP).is_ok());
        assert!(bounds
            .check(&KdfParams {
                m_cost: 4 * 1024 * 1024,
                t_cost: 1,
                p_cost: 1
            })
            .is_err());
        assert!(bounds.check(&FAST).is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let key = ServerKey::from_password(b"hunter2", FAST).unwrap();
        let shown = format!("{key:?} {:?}", key.prs);
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("redacted"));
        let hex: String = key
            .prs
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex[..8]));
    }
}
