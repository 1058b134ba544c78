//! The server's keys: a shared password, a password per client identity, or both; each with
//! its current key and, during a change's grace window, the previous one; identities revoked;
//! and the decoy an unknown identity is offered (PROTOCOL.md §3.8, M26).

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::core::handshake::{Identity, NodeId, ServerParams, KEY_PARAMS_LEN};
use crate::core::kdf::{hmac_sha256, KdfParams, Prs, ServerKey, PRS_LEN, SALT_LEN};
use crate::error::{CloseCode, Result};

use super::lookup::PeerLookup;
use super::ServerKeySource;

/// What a server is given to authenticate clients with.
#[derive(Default)]
pub struct ServerSecrets {
    /// The password every identity without one of its own uses (None: only named peers).
    pub shared: Option<ServerKeySource>,
    /// A password (or PHC string) per identity.
    pub peers: Vec<(Identity, ServerKeySource)>,
    /// Asked for the password of an identity that has none here (see `lookup.rs`).
    pub lookup: Option<PeerLookup>,
}

impl From<ServerKeySource> for ServerSecrets {
    fn from(shared: ServerKeySource) -> Self {
        ServerSecrets {
            shared: Some(shared),
            ..ServerSecrets::default()
        }
    }
}

/// Whose key a connection authenticated under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    Shared,
    Peer(Identity),
}

/// A key, the epoch it was installed in (1 at first, +1 per change of its password: what the
/// wire shows), and its generation: unique among every key this server ever installed, so a
/// connection names the one key it authenticated under, whatever was revoked or reinstalled
/// since.
pub struct KeyEpoch {
    pub key: ServerKey,
    pub epoch: u32,
    pub generation: u64,
}

/// One password's keys: the current one and, during a change's grace window, the previous.
struct KeyRing {
    current: Arc<KeyEpoch>,
    grace: Option<Arc<KeyEpoch>>,
}

impl KeyRing {
    fn accepts(&self, generation: u64) -> bool {
        self.current.generation == generation
            || self
                .grace
                .as_ref()
                .is_some_and(|g| g.generation == generation)
    }
}

/// What the handshake offers a client: the PRS, the key's part of the parameters, its epoch,
/// and which key it is (None: a decoy, which no password opens).
pub struct Offer {
    pub prs: Prs,
    pub key_params: [u8; KEY_PARAMS_LEN],
    pub epoch: u32,
    pub generation: Option<u64>,
}

/// A password change: the epoch it installed, and the key it retired (still accepted for the
/// grace window, if any).
pub struct Change {
    pub ring: Ring,
    pub epoch: u32,
    pub retired: Option<u64>,
}

pub struct Keys {
    shared: Option<KeyRing>,
    peers: HashMap<Identity, KeyRing>,
    /// Revoked identities, with the last epoch each had: a password set for one later starts
    /// after it, so epochs never repeat for an identity.
    revoked: HashMap<Identity, u32>,
    /// The generation the next installed key gets.
    next_generation: u64,
    /// Keys the decoy salts: a decoy's salt is the same on every try for one identity, so a
    /// prober cannot tell an unknown identity by salts that change. Derived from the first key
    /// the server was given, so it stays the same across restarts exactly when that key does.
    decoy_secret: Zeroizing<[u8; 32]>,
    /// The costs a decoy shows: the shared password's, else those most peers' keys have.
    decoy_costs: KdfParams,
}

impl Keys {
    pub fn new(shared: Option<ServerKey>, peers: Vec<(Identity, ServerKey)>) -> Self {
        let decoy_secret =
            Zeroizing::new(match shared.as_ref().or(peers.first().map(|(_, k)| k)) {
                Some(first) => hmac_sha256(first.prs.as_bytes(), b"argonlink decoy salts"),
                None => {
                    let mut random = [0u8; 32];
                    rand::rng().fill_bytes(&mut random);
                    random
                }
            });
        let mut keys = Keys {
            shared: None,
            peers: HashMap::new(),
            revoked: HashMap::new(),
            next_generation: 1,
            decoy_secret,
            decoy_costs: KdfParams::RFC9106,
        };
        if let Some(key) = shared {
            keys.shared = Some(keys.ring(key, 1));
        }
        for (id, key) in peers {
            let ring = keys.ring(key, 1);
            keys.peers.insert(id, ring);
        }
        keys.decoy_costs = keys.typical_costs();
        keys
    }

    /// The costs a real key most likely shows: the shared password's, else the most common
    /// among the peers' current keys. Recomputed when keys change, not per hello.
    fn typical_costs(&self) -> KdfParams {
        if let Some(shared) = &self.shared {
            return shared.current.key.params;
        }
        let mut counts: HashMap<KdfParams, usize> = HashMap::new();
        for ring in self.peers.values() {
            *counts.entry(ring.current.key.params).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|&(params, n)| (n, params.m_cost, params.t_cost, params.p_cost))
            .map_or(self.decoy_costs, |(params, _)| params)
    }

    fn key(&mut self, key: ServerKey, epoch: u32) -> Arc<KeyEpoch> {
        let generation = self.next_generation;
        self.next_generation += 1;
        Arc::new(KeyEpoch {
            key,
            epoch,
            generation,
        })
    }

    fn ring(&mut self, key: ServerKey, epoch: u32) -> KeyRing {
        KeyRing {
            current: self.key(key, epoch),
            grace: None,
        }
    }

    /// Whose key applies to `identity` (PROTOCOL.md §3.8): none if revoked, its own, else the
    /// shared one.
    fn ring_of(&self, identity: &Identity) -> Option<(Ring, &KeyRing)> {
        if self.revoked.contains_key(identity) {
            return None;
        }
        if let Some(ring) = self.peers.get(identity) {
            return Some((Ring::Peer(identity.clone()), ring));
        }
        self.shared.as_ref().map(|ring| (Ring::Shared, ring))
    }

    /// The key to offer `identity`, a client that last authenticated under `hint`.
    pub fn offer(&self, identity: &Identity, hint: u32, node: NodeId) -> Offer {
        let Some((_, ring)) = self.ring_of(identity) else {
            return self.decoy(identity, node);
        };
        let (chosen, other) = match &ring.grace {
            Some(old) if old.epoch == hint => (old, ring.current.epoch),
            Some(old) => (&ring.current, old.epoch),
            None => (&ring.current, 0),
        };
        let k = &chosen.key;
        Offer {
            prs: k.prs.clone(),
            key_params: ServerParams::new(k.salt, k.params, chosen.epoch, node, other).encode(),
            epoch: chosen.epoch,
            generation: Some(chosen.generation),
        }
    }

    /// Parameters that look like a real key's, for a random PRS: the handshake then fails at
    /// message 1, as with a wrong password.
    fn decoy(&self, identity: &Identity, node: NodeId) -> Offer {
        let tag = hmac_sha256(&self.decoy_secret[..], identity.as_str().as_bytes());
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&tag[..SALT_LEN]);
        let mut prs = Zeroizing::new([0u8; PRS_LEN]);
        rand::rng().fill_bytes(&mut prs[..]);
        Offer {
            prs: Prs::from_bytes(*prs),
            key_params: ServerParams::new(salt, self.decoy_costs, 1, node, 0).encode(),
            epoch: 1,
            generation: None,
        }
    }

    /// Install `key` for `ring` (a new identity gets epoch 1; an identity that was revoked is
    /// admitted again, its epochs going on from where they stopped). The previous key stays
    /// accepted if `keep_previous`.
    pub fn install(&mut self, ring: Ring, key: ServerKey, keep_previous: bool) -> Change {
        let fresh_epoch = match &ring {
            Ring::Peer(id) => self.revoked.remove(id).map_or(1, |last| last + 1),
            Ring::Shared => 1,
        };
        let existing = match &ring {
            Ring::Shared => self.shared.take(),
            Ring::Peer(id) => self.peers.remove(id),
        };
        let (keys, retired) = match existing {
            Some(mut keys) => {
                let old = keys.current.clone();
                keys.current = self.key(key, old.epoch + 1);
                keys.grace = keep_previous.then_some(old.clone());
                (keys, Some(old.generation))
            }
            None => (self.ring(key, fresh_epoch), None),
        };
        let epoch = keys.current.epoch;
        match &ring {
            Ring::Shared => self.shared = Some(keys),
            Ring::Peer(id) => {
                self.peers.insert(id.clone(), keys);
            }
        }
        self.decoy_costs = self.typical_costs();
        Change {
            ring,
            epoch,
            retired,
        }
    }

    /// End the grace window of `ring` if it still keeps the key of `generation`.
    pub fn end_grace(&mut self, ring: &Ring, generation: u64) {
        let slot = match ring {
            Ring::Shared => self.shared.as_mut(),
            Ring::Peer(id) => self.peers.get_mut(id),
        };
        if let Some(ring) = slot {
            if ring
                .grace
                .as_ref()
                .is_some_and(|g| g.generation == generation)
            {
                ring.grace = None;
            }
        }
    }

    /// Refuse `identity` from now on; its own key is forgotten (its last epoch is kept).
    pub fn revoke(&mut self, identity: &Identity) {
        let last = self.peers.remove(identity).map_or(0, |r| r.current.epoch);
        let last = last.max(self.revoked.get(identity).copied().unwrap_or(0));
        self.revoked.insert(identity.clone(), last);
        self.decoy_costs = self.typical_costs();
    }

    /// Whether a connection of `identity` that authenticated under the key of `generation`
    /// may stay: None, or the code to close it with. Only the keys that apply to the identity
    /// now count: a key retired, revoked, or replaced by the identity's own password is gone,
    /// even if a key with the same epoch was installed since.
    pub fn still_accepts(&self, identity: &Identity, generation: u64) -> Option<CloseCode> {
        match self.ring_of(identity) {
            Some((_, keys)) if keys.accepts(generation) => None,
            None if self.is_revoked(identity) => Some(CloseCode::REVOKED),
            _ => Some(CloseCode::REAUTHENTICATE),
        }
    }

    /// Whether the lookup should be asked about `identity`: named, not revoked, and without a
    /// password of its own here.
    pub fn needs_lookup(&self, identity: &Identity) -> bool {
        !identity.is_anonymous() && !self.is_revoked(identity) && !self.peers.contains_key(identity)
    }

    /// Keep what the lookup found for `identity`, unless a password was set for it (or it was
    /// revoked) while the lookup ran.
    pub fn learn(&mut self, identity: &Identity, key: ServerKey) {
        if self.needs_lookup(identity) {
            let ring = self.ring(key, 1);
            self.peers.insert(identity.clone(), ring);
            self.decoy_costs = self.typical_costs();
        }
    }

    pub fn is_revoked(&self, identity: &Identity) -> bool {
        self.revoked.contains_key(identity)
    }

    /// The epoch new clients of the shared password authenticate under (0: there is none).
    pub fn shared_epoch(&self) -> u32 {
        self.shared.as_ref().map_or(0, |r| r.current.epoch)
    }

    /// The epoch new clients of `identity` authenticate under (0: it has no key).
    pub fn epoch_of(&self, identity: &Identity) -> u32 {
        self.ring_of(identity).map_or(0, |(_, r)| r.current.epoch)
    }
}

/// Turn every source into a key, one after the other (each may be an Argon2 run of the
/// server's costs: run in parallel, many would hold their memory at once). Call on a
/// blocking thread. Returns the keys and how many were derived.
pub fn derive(secrets: ServerSecrets) -> Result<(Keys, u64)> {
    let mut derived = 0;
    let mut key_of = |source: ServerKeySource| -> Result<ServerKey> {
        let (key, ran) = source.into_key()?;
        derived += ran as u64;
        Ok(key)
    };
    let shared = secrets.shared.map(&mut key_of).transpose()?;
    let peers = secrets
        .peers
        .into_iter()
        .map(|(id, source)| Ok((id, key_of(source)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((Keys::new(shared, peers), derived))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::kdf::random_salt;

    fn key(m_cost: u32) -> ServerKey {
        ServerKey {
            salt: random_salt(),
            params: KdfParams {
                m_cost,
                t_cost: 1,
                p_cost: 1,
            },
            prs: Prs::from_bytes([m_cost as u8; PRS_LEN]),
        }
    }

    fn id(name: &str) -> Identity {
        Identity::new(name).unwrap()
    }

    fn generation(keys: &Keys, who: &str) -> u64 {
        keys.offer(&id(who), 0, NodeId([0; 16])).generation.unwrap()
    }

    #[test]
    fn a_key_from_before_a_revocation_stays_refused_after_a_new_password() {
        let mut keys = Keys::new(None, vec![(id("a"), key(256))]);
        let before = generation(&keys, "a");
        keys.install(Ring::Peer(id("a")), key(256), false);
        keys.revoke(&id("a"));
        assert_eq!(
            keys.still_accepts(&id("a"), before),
            Some(CloseCode::REVOKED)
        );
        // Admitted again: epochs go on (2 was reached before), and no older key counts, though
        // an epoch number may be the same as one it had.
        let change = keys.install(Ring::Peer(id("a")), key(256), true);
        assert_eq!((change.epoch, change.retired), (3, None));
        assert_eq!(
            keys.still_accepts(&id("a"), before),
            Some(CloseCode::REAUTHENTICATE)
        );
        assert_eq!(keys.still_accepts(&id("a"), generation(&keys, "a")), None);
    }

    #[test]
    fn a_late_grace_timer_does_not_cut_a_newer_grace_window() {
        let mut keys = Keys::new(Some(key(256)), vec![]);
        let first = generation(&keys, "");
        let one = keys.install(Ring::Shared, key(256), true);
        let second = generation(&keys, "");
        keys.install(Ring::Shared, key(256), true);
        // The timer of the first change fires after the second: the second's grace key stays.
        keys.end_grace(&Ring::Shared, one.retired.unwrap());
        assert_eq!(keys.still_accepts(&id(""), second), None);
        assert!(keys.still_accepts(&id(""), first).is_some());
    }

    #[test]
    fn decoys_show_the_costs_most_keys_have() {
        let mut keys = Keys::new(
            None,
            vec![
                (id("a"), key(512)),
                (id("b"), key(512)),
                (id("c"), key(1024)),
            ],
        );
        let costs = |keys: &Keys| {
            let params = keys.offer(&id("nobody"), 0, NodeId([0; 16])).key_params;
            u32::from_be_bytes(params[20..24].try_into().unwrap())
        };
        assert_eq!(costs(&keys), 512);
        keys.install(Ring::Peer(id("a")), key(1024), false);
        assert_eq!(costs(&keys), 1024);
        // A decoy's salt is the same on every try, and another identity's differs.
        let salt = |keys: &Keys, who: &str| {
            keys.offer(&id(who), 0, NodeId([0; 16])).key_params[4..20].to_vec()
        };
        assert_eq!(salt(&keys, "nobody"), salt(&keys, "nobody"));
        assert_ne!(salt(&keys, "nobody"), salt(&keys, "nobody2"));
    }
}
