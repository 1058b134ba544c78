//! Handshakes in progress: who is pending, and whom to drop when there are too many.
//!
//! A pending handshake costs a socket and a task, and anyone who can reach the port can open
//! one. Bounds: at most `max_total` in all, and at most `max_per_source` from one source (an
//! IPv4 address, or an IPv6 /64: one host's share). At either bound a new connection evicts an
//! older one, chosen so that a flood cannot starve a real client:
//! - from the source that holds the most pending handshakes (at the per-source bound: its own),
//! - among those, one that has not yet proved anything (no message 1 that decrypted) before
//!   one that has (it is only waiting for its own CONFIRM),
//! - the oldest first.
//!
//! A first-time client spends its Argon2 run between the server parameters and message 1,
//! looking just like an idle connection; what protects it is that it comes from another source
//! than the flood, and that it retries once with its derived key if it was cut (client side).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Where a connection comes from, for the per-source bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4([u8; 4]),
    /// The /64 prefix: one host is usually given a whole /64.
    V6([u8; 8]),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => Source::V6(v6.octets()[..8].try_into().expect("8 bytes")),
            },
        }
    }
}

struct Entry<T> {
    id: u64,
    source: Source,
    /// Its message 1 decrypted under our key: it knows the password or replays one who does.
    proved: bool,
    token: T,
}

/// The pending handshakes, with the tokens that cancel them.
pub struct PendingTable<T> {
    entries: VecDeque<Entry<T>>,
    per_source: HashMap<Source, usize>,
    max_total: usize,
    max_per_source: usize,
}

impl<T> PendingTable<T> {
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        PendingTable {
            entries: VecDeque::new(),
            per_source: HashMap::new(),
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Register a new handshake; returns the tokens of those evicted to make room (the caller
    /// cancels them). At most one is evicted per insert, so the table never exceeds its bounds.
    pub fn insert(&mut self, id: u64, source: Source, token: T) -> Vec<T> {
        let mut evicted = Vec::new();
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            evicted.extend(self.evict_from(source));
        } else if self.entries.len() >= self.max_total {
            if let Some(busiest) = self.busiest_source() {
                evicted.extend(self.evict_from(busiest));
            }
        }
        *self.per_source.entry(source).or_insert(0) += 1;
        self.entries.push_back(Entry {
            id,
            source,
            proved: false,
            token,
        });
        evicted
    }

    /// The handshake's message 1 decrypted: evict it only after those that proved nothing.
    pub fn proved(&mut self, id: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.proved = true;
        }
    }

    /// The handshake ended (either way).
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let at = self.entries.iter().position(|e| e.id == id)?;
        let entry = self.entries.remove(at).expect("position is in range");
        self.forget_source(entry.source);
        Some(entry.token)
    }

    /// Every token, for shutting down.
    pub fn drain(&mut self) -> Vec<T> {
        self.per_source.clear();
        self.entries.drain(..).map(|e| e.token).collect()
    }

    fn forget_source(&mut self, source: Source) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// The source with the most pending handshakes (ties: any of them).
    fn busiest_source(&self) -> Option<Source> {
        self.per_source
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(s, _)| *s)
    }

    /// Remove `source`'s oldest handshake that proved nothing, else its oldest.
    fn evict_from(&mut self, source: Source) -> Option<T> {
        let at = self
            .entries
            .iter()
            .position(|e| e.source == source && !e.proved)
            .or_else(|| self.entries.iter().position(|e| e.source == source))?;
        let entry = self.entries.remove(at).expect("position is in range");
        self.forget_source(entry.source);
        Some(entry.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(last: u8) -> Source {
        Source::of(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn a_flood_from_one_source_evicts_its_own_never_another_source() {
        let mut t = PendingTable::new(8, 4);
        // A real client from .1, then a flood from .2.
        assert!(t.insert(0, src(1), 0).is_empty());
        for id in 1..100 {
            let evicted = t.insert(id, src(2), id);
            assert!(!evicted.contains(&0), "the real client was evicted");
            assert!(t.len() <= 5);
        }
        assert_eq!(t.remove(0), Some(0));
    }

    #[test]
    fn at_the_total_cap_the_busiest_source_pays() {
        let mut t = PendingTable::new(6, 6);
        for id in 0..2 {
            t.insert(id, src(1), id);
        }
        for id in 2..6 {
            t.insert(id, src(2), id);
        }
        // Full: a newcomer from a third source evicts the oldest of source .2 (4 pending).
        assert_eq!(t.insert(6, src(3), 6), vec![2]);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn handshakes_that_proved_nothing_go_first() {
        let mut t = PendingTable::new(3, 3);
        for id in 0..3 {
            t.insert(id, src(1), id);
        }
        t.proved(0);
        assert_eq!(t.insert(3, src(1), 3), vec![1]);
        t.proved(2);
        t.proved(3);
        // Only proved ones left from .1: the oldest of them.
        assert_eq!(t.insert(4, src(1), 4), vec![0]);
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), src(1));
    }

    #[test]
    fn removal_frees_the_source_share() {
        let mut t = PendingTable::new(10, 2);
        t.insert(0, src(1), 0);
        t.insert(1, src(1), 1);
        t.remove(0);
        assert!(t.insert(2, src(1), 2).is_empty());
        assert_eq!(t.drain().len(), 2);
        assert!(t.is_empty());
    }
}
