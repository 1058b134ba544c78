//! The server's keys: a shared password, a password per client identity, or both; each with
//! its current key and, during a change's grace window, the previous one; identities revoked;
//! and the decoy an unknown identity is offered (PROTOCOL.md §3.8, M26).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::core::handshake::{Identity, NodeId, ServerParams, KEY_PARAMS_LEN};
use crate::core::kdf::{hmac_sha256, KdfParams, Prs, ServerKey, PRS_LEN, SALT_LEN};
use crate::error::{CloseCode, Result};

use super::ServerKeySource;

/// What a server is given to authenticate clients with.
#[derive(Default)]
pub struct ServerSecrets {
    /// The password every identity without one of its own uses (None: only named peers).
    pub shared: Option<ServerKeySource>,
    /// A password (or PHC string) per identity.
    pub peers: Vec<(Identity, ServerKeySource)>,
}

impl From<ServerKeySource> for ServerSecrets {
    fn from(shared: ServerKeySource) -> Self {
        ServerSecrets {
            shared: Some(shared),
            peers: Vec::new(),
        }
    }
}

/// Whose key a connection authenticated under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    Shared,
    Peer(Identity),
}

/// A key and the epoch it was installed in (1 at first, +1 per change of its password).
pub struct KeyEpoch {
    pub key: ServerKey,
    pub epoch: u32,
}

/// One password's keys: the current one and, during a change's grace window, the previous.
struct KeyRing {
    current: Arc<KeyEpoch>,
    grace: Option<Arc<KeyEpoch>>,
}

impl KeyRing {
    fn new(key: ServerKey) -> Self {
        KeyRing {
            current: Arc::new(KeyEpoch { key, epoch: 1 }),
            grace: None,
        }
    }

    fn oldest_accepted(&self) -> u32 {
        self.grace.as_ref().map_or(self.current.epoch, |g| g.epoch)
    }
}

/// What the handshake offers a client: the PRS, the key's part of the parameters, its epoch,
/// and whose key it is (None: a decoy, which no password opens).
pub struct Offer {
    pub prs: Prs,
    pub key_params: [u8; KEY_PARAMS_LEN],
    pub epoch: u32,
    pub ring: Option<Ring>,
}

/// A password change: the epoch it installed, and the key it retired (still accepted for the
/// grace window, if any).
pub struct Change {
    pub ring: Ring,
    pub epoch: u32,
    pub retired: Option<u32>,
}

pub struct Keys {
    shared: Option<KeyRing>,
    peers: HashMap<Identity, KeyRing>,
    revoked: HashSet<Identity>,
    /// Keys the decoy salts: a decoy's salt is the same on every try for one identity, so a
    /// prober cannot tell an unknown identity by salts that change.
    decoy_secret: Zeroizing<[u8; 32]>,
    /// The costs a decoy shows: the server's own.
    decoy_costs: KdfParams,
}

impl Keys {
    pub fn new(shared: Option<ServerKey>, peers: Vec<(Identity, ServerKey)>) -> Self {
        let decoy_costs = shared
            .as_ref()
            .or(peers.first().map(|(_, k)| k))
            .map_or(KdfParams::RFC9106, |k| k.params);
        let mut decoy_secret = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut decoy_secret[..]);
        Keys {
            shared: shared.map(KeyRing::new),
            peers: peers
                .into_iter()
                .map(|(id, key)| (id, KeyRing::new(key)))
                .collect(),
            revoked: HashSet::new(),
            decoy_secret,
            decoy_costs,
        }
    }

    /// Whose key applies to `identity` (PROTOCOL.md §3.8): none if revoked, its own, else the
    /// shared one.
    fn ring_of(&self, identity: &Identity) -> Option<(Ring, &KeyRing)> {
        if self.revoked.contains(identity) {
            return None;
        }
        if let Some(ring) = self.peers.get(identity) {
            return Some((Ring::Peer(identity.clone()), ring));
        }
        self.shared.as_ref().map(|ring| (Ring::Shared, ring))
    }

    /// The key to offer `identity`, a client that last authenticated under `hint`.
    pub fn offer(&self, identity: &Identity, hint: u32, node: NodeId) -> Offer {
        let Some((ring_id, ring)) = self.ring_of(identity) else {
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
            ring: Some(ring_id),
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
            ring: None,
        }
    }

    /// Install `key` for `ring` (a new identity gets epoch 1; an identity that was revoked is
    /// admitted again). The previous key stays accepted if `keep_previous`.
    pub fn install(&mut self, ring: Ring, key: ServerKey, keep_previous: bool) -> Change {
        let existing = match &ring {
            Ring::Shared => self.shared.as_mut(),
            Ring::Peer(id) => {
                self.revoked.remove(id);
                self.peers.get_mut(id)
            }
        };
        let (epoch, retired) = match existing {
            Some(keys) => {
                let old = keys.current.clone();
                keys.current = Arc::new(KeyEpoch {
                    key,
                    epoch: old.epoch + 1,
                });
                keys.grace = keep_previous.then_some(old.clone());
                (old.epoch + 1, Some(old.epoch))
            }
            None => {
                let fresh = KeyRing::new(key);
                match &ring {
                    Ring::Shared => self.shared = Some(fresh),
                    Ring::Peer(id) => {
                        self.peers.insert(id.clone(), fresh);
                    }
                }
                (1, None)
            }
        };
        Change {
            ring,
            epoch,
            retired,
        }
    }

    /// End the grace window of `ring` if it still keeps `epoch`.
    pub fn end_grace(&mut self, ring: &Ring, epoch: u32) {
        let slot = match ring {
            Ring::Shared => self.shared.as_mut(),
            Ring::Peer(id) => self.peers.get_mut(id),
        };
        if let Some(ring) = slot {
            if ring.grace.as_ref().is_some_and(|g| g.epoch == epoch) {
                ring.grace = None;
            }
        }
    }

    /// Refuse `identity` from now on; its own key is forgotten.
    pub fn revoke(&mut self, identity: &Identity) {
        self.peers.remove(identity);
        self.revoked.insert(identity.clone());
    }

    /// Whether a connection of `identity` that authenticated under `ring` at `epoch` may stay:
    /// None, or the code to close it with.
    pub fn still_accepts(&self, identity: &Identity, ring: &Ring, epoch: u32) -> Option<CloseCode> {
        match self.ring_of(identity) {
            None if self.revoked.contains(identity) => Some(CloseCode::REVOKED),
            // The key it used no longer applies to it (it got a password of its own).
            Some((now, _)) if &now != ring => Some(CloseCode::REAUTHENTICATE),
            Some((_, keys)) if epoch >= keys.oldest_accepted() => None,
            _ => Some(CloseCode::REAUTHENTICATE),
        }
    }

    pub fn is_revoked(&self, identity: &Identity) -> bool {
        self.revoked.contains(identity)
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
