//! Peers the server learns on demand: a lookup (the application's callback) asked for the
//! password of an identity the server holds none for, the first time a hello names it. What it
//! returns is derived once and kept like a configured peer's key (until `set_password` or
//! `revoke` for that identity); that it knows nothing is kept for a while, so a prober naming
//! the same unknown identity over and over costs one call.
//!
//! Bounded: lookups of one identity share one call; at most `MAX_RUNNING` calls run at once
//! (each on a blocking thread, with any Argon2 run it needs); at most `MAX_UNKNOWN` unknown
//! identities are remembered; `in_flight` holds one entry per identity being looked up, so no
//! more than there are pending handshakes. A handshake waiting for a lookup holds only its
//! pending slot, within its deadline. Keys found stay, one per identity the application
//! knows: as many as its directory has, not as many as peers invent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

use super::ServerKeySource;
use crate::core::handshake::Identity;
use crate::core::kdf::ServerKey;
use crate::error::{Error, Result};
use crate::net::lock;

/// The application's answer for an identity: its password (or PHC string), or None (unknown).
/// Called on a blocking thread.
pub type PeerLookup = Arc<dyn Fn(&Identity) -> Result<Option<ServerKeySource>> + Send + Sync>;

const MAX_RUNNING: usize = 4;
const MAX_UNKNOWN: usize = 4096;
/// How long "unknown" is believed before the lookup is asked again.
const UNKNOWN_FOR: Duration = Duration::from_secs(60);

/// What a lookup found.
pub(super) enum Found {
    /// A key, and whether deriving it ran Argon2.
    Key(ServerKey, bool),
    Unknown,
    /// The lookup failed (logged); the identity is treated as unknown this once.
    Failed,
}

pub(super) struct Lookups {
    lookup: PeerLookup,
    in_flight: Mutex<HashMap<Identity, Arc<OnceCell<()>>>>,
    running: Semaphore,
    unknown: Mutex<Unknown>,
}

/// Identities the lookup did not know, with when that was learned; oldest first in `order`
/// (stale copies skipped when popped).
#[derive(Default)]
struct Unknown {
    seen: HashMap<Identity, Instant>,
    order: VecDeque<(Identity, Instant)>,
}

impl Unknown {
    fn insert(&mut self, identity: &Identity, now: Instant) {
        while self.seen.len() >= MAX_UNKNOWN {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&old) == Some(&at) {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(identity.clone(), now);
        self.order.push_back((identity.clone(), now));
        if self.order.len() > 2 * MAX_UNKNOWN {
            let seen = &self.seen;
            self.order.retain(|(id, at)| seen.get(id) == Some(at));
        }
    }
}

impl Lookups {
    pub fn new(lookup: PeerLookup) -> Self {
        Lookups {
            lookup,
            in_flight: Mutex::new(HashMap::new()),
            running: Semaphore::new(MAX_RUNNING),
            unknown: Mutex::new(Unknown::default()),
        }
    }

    /// Whether the lookup said lately that it does not know `identity`.
    pub fn known_unknown(&self, identity: &Identity) -> bool {
        lock(&self.unknown)
            .seen
            .get(identity)
            .is_some_and(|at| at.elapsed() < UNKNOWN_FOR)
    }

    fn remember_unknown(&self, identity: &Identity) {
        lock(&self.unknown).insert(identity, Instant::now());
    }

    /// Ask about `identity`, once however many handshakes ask at the same time; `install`
    /// gets what was found (by the one caller that ran the lookup).
    pub async fn look_up(&self, identity: &Identity, install: impl FnOnce(Found)) {
        let cell = lock(&self.in_flight)
            .entry(identity.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut install = Some(install);
        cell.get_or_init(|| async {
            let found = self.run(identity).await;
            if matches!(found, Found::Unknown) {
                self.remember_unknown(identity);
            }
            if let Some(install) = install.take() {
                install(found);
            }
        })
        .await;
        let mut in_flight = lock(&self.in_flight);
        if in_flight
            .get(identity)
            .is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            in_flight.remove(identity);
        }
    }

    async fn run(&self, identity: &Identity) -> Found {
        let Ok(_permit) = self.running.acquire().await else {
            return Found::Failed;
        };
        let lookup = self.lookup.clone();
        let id = identity.clone();
        let answer = tokio::task::spawn_blocking(move || {
            lookup(&id)?.map(ServerKeySource::into_key).transpose()
        })
        .await
        .unwrap_or_else(|_| Err(Error::config("the lookup panicked")));
        match answer {
            Ok(Some((key, derived))) => Found::Key(key, derived),
            Ok(None) => Found::Unknown,
            Err(e) => {
                // The application's own failure: its words, without our "invalid configuration".
                let why = match &e {
                    Error::Config(why) => why.clone(),
                    other => other.to_string(),
                };
                log::warn!(
                    target: super::LOG,
                    "looking up the password of identity {:?} failed: {why}",
                    identity.as_str()
                );
                Found::Failed
            }
        }
    }
}
