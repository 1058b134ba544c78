//! Online guessing, slowed: each failed handshake (a wrong password at message 1, which is
//! one CPace guess, or bytes that look the same: the server cannot tell them apart) counts
//! against its source; past a free allowance the source gets one handshake per delay, the
//! delay doubling with each further failure up to a cap, and forgotten after a quiet period.
//! Across all sources, past a rate of failures per minute, sources that have not completed a
//! handshake lately share one schedule at that rate (many addresses guessing together).
//!
//! Pure bookkeeping with the time given, like `pending.rs`: the accept loop asks
//! [`Throttle::admit`] when a connection arrives and reports each outcome. The delay comes
//! before the handshake, so it is the same for a wrong password and for random bytes, and a
//! throttled source learns nothing about any password from it (PROTOCOL.md §6).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::pending::Source;
use crate::error::{Error, Result};

/// How failed handshakes slow their sources down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThrottlePolicy {
    /// Failures a source may have before it is slowed.
    pub free_failures: u32,
    /// The first delay; it doubles with each further failure.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// A source's failures are forgotten after this long without one (and a success vouches
    /// for a source this long, for the global limit).
    pub forget_after: Duration,
    /// Failures per minute from all sources together before sources without a recent success
    /// share one schedule at this rate (0: no global limit).
    pub global_failures_per_minute: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_failures: 10,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(15 * 60),
            global_failures_per_minute: 300,
        }
    }
}

impl ThrottlePolicy {
    pub fn validate(&self) -> Result<()> {
        if self.initial_delay.is_zero() || self.max_delay < self.initial_delay {
            return Err(Error::config(
                "throttle: initial_delay must be positive and at most max_delay",
            ));
        }
        if self.forget_after.is_zero() {
            return Err(Error::config("throttle: forget_after must be positive"));
        }
        Ok(())
    }

    /// The delay after `failures`, or None while they are within the allowance.
    fn delay(&self, failures: u32) -> Option<Duration> {
        let excess = failures.checked_sub(self.free_failures)?.checked_sub(1)?;
        let factor = 1u32.checked_shl(excess.min(31)).unwrap_or(u32::MAX);
        Some(
            self.initial_delay
                .checked_mul(factor)
                .map_or(self.max_delay, |d| d.min(self.max_delay)),
        )
    }
}

/// What a new connection is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// Its handshake may start then (the slot is booked).
    At(Instant),
    /// Its slot would come after `horizon`: closed at once, nothing booked.
    Refuse,
}

#[derive(Default)]
struct Entry {
    failures: u32,
    last_failure: Option<Instant>,
    /// When the next handshake from this source may start.
    next_slot: Option<Instant>,
    /// Until when a success vouches for it (exempt from the global limit).
    trusted_until: Option<Instant>,
}

/// The sources the throttle remembers: at most `MAX_SOURCES`; beyond it, the one seen least
/// recently is forgotten (an attacker with that many addresses meets the global limit).
const MAX_SOURCES: usize = 65_536;

pub struct Throttle {
    policy: ThrottlePolicy,
    sources: HashMap<Source, Entry>,
    /// Least recently touched first: what to forget at `MAX_SOURCES`. May hold stale copies
    /// of a key (skipped when popped); bounded to twice `MAX_SOURCES` by compaction.
    order: VecDeque<(Source, Instant)>,
    touched: HashMap<Source, Instant>,
    /// Failures of the last minute, from all sources (their times, oldest first); bounded by
    /// the global rate, beyond which only the count matters.
    recent: VecDeque<Instant>,
    /// The shared schedule of untrusted sources under the global limit.
    global_next: Option<Instant>,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Throttle {
            policy,
            sources: HashMap::new(),
            order: VecDeque::new(),
            touched: HashMap::new(),
            recent: VecDeque::new(),
            global_next: None,
        }
    }

    fn entry(&mut self, source: Source, now: Instant) -> &mut Entry {
        if !self.sources.contains_key(&source) {
            while self.sources.len() >= MAX_SOURCES {
                let Some((old, at)) = self.order.pop_front() else {
                    break;
                };
                if self.touched.get(&old) == Some(&at) {
                    self.sources.remove(&old);
                    self.touched.remove(&old);
                }
            }
        }
        self.touched.insert(source, now);
        self.order.push_back((source, now));
        if self.order.len() > 2 * MAX_SOURCES {
            let touched = &self.touched;
            self.order.retain(|(s, at)| touched.get(s) == Some(at));
        }
        let forget = self.policy.forget_after;
        let entry = self.sources.entry(source).or_default();
        if entry.last_failure.is_some_and(|t| now >= t + forget) {
            entry.failures = 0;
            entry.last_failure = None;
            entry.next_slot = None;
        }
        entry
    }

    /// A connection from `source` arrived at `now`: when may its handshake start? `horizon`:
    /// the longest wait worth booking (past it the handshake's deadline would pass first).
    pub fn admit(&mut self, source: Source, now: Instant, horizon: Duration) -> Admit {
        let policy = self.policy;
        let global_limited = self.global_limited(now);
        let global_interval = self.global_interval();
        let entry = self.entry(source, now);
        let trusted = entry.trusted_until.is_some_and(|t| now < t);
        let mut slot = now;
        if let Some(delay) = policy.delay(entry.failures) {
            // One handshake per delay, however many connections it opens at once.
            slot = slot.max(entry.next_slot.unwrap_or(now));
            if slot > now + horizon {
                return Admit::Refuse;
            }
            entry.next_slot = Some(slot + delay);
        }
        if global_limited && !trusted {
            let shared = self.global_next.unwrap_or(now).max(slot);
            if shared > now + horizon {
                return Admit::Refuse;
            }
            self.global_next = Some(shared + global_interval);
            slot = shared;
        }
        if slot > now {
            Admit::At(slot)
        } else {
            Admit::Now
        }
    }

    /// A handshake from `source` failed authentication. Returns the source's failure count.
    pub fn failed(&mut self, source: Source, now: Instant) -> u32 {
        let minute = Duration::from_secs(60);
        while self.recent.front().is_some_and(|t| now >= *t + minute) {
            self.recent.pop_front();
        }
        // Past the limit only "over it" matters: keep at most one more than the limit.
        if self.recent.len() <= self.policy.global_failures_per_minute as usize {
            self.recent.push_back(now);
        }
        let policy = self.policy;
        let entry = self.entry(source, now);
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = Some(now);
        // The next try waits a full delay after this failure, and after what is booked.
        if let Some(delay) = policy.delay(entry.failures) {
            entry.next_slot = Some(entry.next_slot.unwrap_or(now).max(now + delay));
        }
        entry.failures
    }

    /// A handshake from `source` completed: it is exempt from the global limit for a while.
    /// Its own failures stay counted (one success behind a shared address must not wipe
    /// another's guesses).
    pub fn succeeded(&mut self, source: Source, now: Instant) {
        let until = now + self.policy.forget_after;
        self.entry(source, now).trusted_until = Some(until);
    }

    fn global_limited(&mut self, now: Instant) -> bool {
        let limit = self.policy.global_failures_per_minute as usize;
        let minute = Duration::from_secs(60);
        while self.recent.front().is_some_and(|t| now >= *t + minute) {
            self.recent.pop_front();
        }
        limit > 0 && self.recent.len() > limit
    }

    fn global_interval(&self) -> Duration {
        Duration::from_secs(60) / self.policy.global_failures_per_minute.max(1)
    }

    /// The delay a source's next failure will bring (for the log), if any.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        self.policy.delay(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn src(n: u8) -> Source {
        Source::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    const HORIZON: Duration = Duration::from_secs(10);

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(100),
            global_failures_per_minute: 0,
        }
    }

    #[test]
    fn free_failures_then_doubling_delays_up_to_the_cap() {
        let t0 = Instant::now();
        let mut th = Throttle::new(policy());
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            // Each attempt waits for its slot, then fails.
            now = match th.admit(src(1), now, HORIZON) {
                Admit::Now => now,
                Admit::At(t) => t,
                Admit::Refuse => panic!("within the horizon"),
            };
            waits.push(now - t0);
            th.failed(src(1), now);
        }
        let secs: Vec<u64> = waits.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        // Three free, then 1, 2, 4, 8, 8 s apart.
        assert_eq!(secs, [0, 0, 0, 1, 2, 4, 8]);
        // Another source is not slowed by this one.
        assert_eq!(th.admit(src(2), now, HORIZON), Admit::Now);
    }

    #[test]
    fn parallel_connections_from_a_slowed_source_queue_one_per_delay_and_overflow_is_refused() {
        let now = Instant::now();
        let mut th = Throttle::new(policy());
        for _ in 0..4 {
            th.failed(src(1), now);
        }
        // Delay 1 s: slots at now, +1, +2, ... up to the 10 s horizon, then refused.
        let mut admitted = 0;
        let mut refused = 0;
        for _ in 0..20 {
            match th.admit(src(1), now, HORIZON) {
                Admit::Refuse => refused += 1,
                _ => admitted += 1,
            }
        }
        assert_eq!((admitted, refused), (10, 10));
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_period_and_a_success_does_not_wipe_them() {
        let t0 = Instant::now();
        let mut th = Throttle::new(policy());
        for _ in 0..5 {
            th.failed(src(1), t0);
        }
        th.succeeded(src(1), t0);
        assert!(matches!(
            th.admit(src(1), t0, HORIZON),
            Admit::Now | Admit::At(_)
        ));
        assert!(
            matches!(th.admit(src(1), t0, HORIZON), Admit::At(_)),
            "still slowed"
        );
        let later = t0 + Duration::from_secs(101);
        assert_eq!(th.admit(src(1), later, HORIZON), Admit::Now);
        th.failed(src(1), later);
        assert_eq!(
            th.admit(src(1), later, HORIZON),
            Admit::Now,
            "counting from zero"
        );
    }

    #[test]
    fn many_sources_guessing_together_share_one_schedule_but_trusted_ones_do_not() {
        let now = Instant::now();
        let mut th = Throttle::new(ThrottlePolicy {
            global_failures_per_minute: 6, // one per 10 s beyond it
            ..policy()
        });
        th.succeeded(src(200), now);
        for n in 0..7 {
            th.failed(src(n), now);
        }
        // Over the global rate: new untrusted sources get one slot per 10 s.
        assert_eq!(th.admit(src(100), now, HORIZON), Admit::Now);
        assert_eq!(
            th.admit(src(101), now, HORIZON),
            Admit::At(now + Duration::from_secs(10))
        );
        assert_eq!(th.admit(src(102), now, HORIZON), Admit::Refuse);
        assert_eq!(
            th.admit(src(200), now, HORIZON),
            Admit::Now,
            "a recent success"
        );
        // A minute later the failures have aged out.
        let later = now + Duration::from_secs(61);
        assert_eq!(th.admit(src(103), later, HORIZON), Admit::Now);
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let now = Instant::now();
        let mut th = Throttle::new(policy());
        for n in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            th.failed(Source::of(ip), now);
        }
        assert!(th.sources.len() <= MAX_SOURCES);
        assert!(th.order.len() <= 2 * MAX_SOURCES + 1);
    }

    #[test]
    fn delays_saturate_without_overflow() {
        let p = ThrottlePolicy {
            free_failures: 0,
            ..ThrottlePolicy::default()
        };
        assert_eq!(p.delay(0), None);
        assert_eq!(p.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(p.delay(u32::MAX), Some(p.max_delay));
    }
}
