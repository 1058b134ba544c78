//! Keepalive, idle and close deadlines as a table of instants. Nothing here sleeps: the
//! driver is told the next deadline ([`Liveness::next_deadline`]) and calls back with the time
//! when it has passed ([`Liveness::expire`]). A driver that wakes early is harmless: nothing
//! expires before its instant, so a timer need only be reset when a deadline moves earlier.

use std::time::{Duration, Instant};

/// The connection's timer settings.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// Send a PING after this much silence from the peer (None: no keepalive).
    pub ping_interval: Option<Duration>,
    /// With keepalive on: end the connection after this much silence, PONGs included.
    pub ping_timeout: Duration,
    /// Close (1000, "idle timeout") after this long without application messages.
    pub idle_timeout: Option<Duration>,
    /// How long a closing handshake may take before the connection is dropped.
    pub close_timeout: Duration,
}

/// What came due.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// Send a keepalive PING carrying this value.
    Ping(u64),
    /// No application message either way for `idle_timeout`: close.
    Idle,
    /// Nothing heard for this long with keepalive on.
    Unresponsive(Duration),
    /// Our CLOSE went unanswered for `close_timeout`.
    CloseTimedOut,
}

pub struct Liveness {
    timers: Timers,
    last_heard: Instant,
    last_ping: Instant,
    pings: u64,
    last_traffic: Instant,
    /// Cleared once the idle close has begun (it happens once).
    idle_armed: bool,
    close_deadline: Option<Instant>,
    /// The driver stopped reading (the application is not taking messages): silence is ours,
    /// not the peer's, and PINGs keep the peer from declaring us dead.
    paused: bool,
}

impl Liveness {
    pub fn new(timers: Timers, now: Instant) -> Self {
        Liveness {
            timers,
            last_heard: now,
            last_ping: now,
            pings: 0,
            last_traffic: now,
            idle_armed: timers.idle_timeout.is_some(),
            close_deadline: None,
            paused: false,
        }
    }

    /// A frame arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// An application message went out or came in.
    pub fn traffic(&mut self, now: Instant) {
        self.last_traffic = now;
    }

    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Reading again: the time spent waiting for the application is not the peer's silence,
    /// nor idleness (the application just took a message).
    pub fn resume(&mut self, now: Instant) {
        self.paused = false;
        self.last_heard = now;
        self.last_traffic = now;
    }

    /// Our CLOSE is on its way: the peer has `close_timeout` to answer it.
    pub fn closing(&mut self, now: Instant) {
        self.idle_armed = false;
        if self.close_deadline.is_none() {
            self.close_deadline = now.checked_add(self.timers.close_timeout);
        }
    }

    /// When our CLOSE stops waiting for the peer's, once we sent one.
    pub fn close_deadline(&self) -> Option<Instant> {
        self.close_deadline
    }

    /// How often to PING while paused: often enough for a peer whose `ping_timeout` is as short
    /// as ours (it hears nothing else from us meanwhile: its PINGs go unanswered).
    fn paused_period(&self, interval: Duration) -> Duration {
        interval
            .min(self.timers.ping_timeout / 4)
            .max(Duration::from_millis(10))
    }

    // Deadlines are `checked_add`: a duration too long to reach (`Duration::MAX`, say) is no
    // deadline at all, not a panic.

    fn ping_due(&self) -> Option<Instant> {
        let interval = self.timers.ping_interval?;
        if self.paused {
            self.last_ping.checked_add(self.paused_period(interval))
        } else {
            self.last_heard.max(self.last_ping).checked_add(interval)
        }
    }

    fn unresponsive_due(&self) -> Option<Instant> {
        self.timers.ping_interval?;
        if self.paused {
            return None;
        }
        self.last_heard.checked_add(self.timers.ping_timeout)
    }

    /// Not while paused: a full mailbox means the application is behind, not that nothing moves.
    fn idle_due(&self) -> Option<Instant> {
        let idle = self.timers.idle_timeout?;
        if !self.idle_armed || self.paused {
            return None;
        }
        self.last_traffic.checked_add(idle)
    }

    /// The earliest instant at which [`Liveness::expire`] has something to say.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.close_deadline,
            self.unresponsive_due(),
            self.ping_due(),
            self.idle_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The first thing due at `now`, if any (call until None: each answer moves its deadline).
    pub fn expire(&mut self, now: Instant) -> Option<Expired> {
        if self.close_deadline.is_some_and(|t| now >= t) {
            self.close_deadline = None;
            return Some(Expired::CloseTimedOut);
        }
        if self.unresponsive_due().is_some_and(|t| now >= t) {
            return Some(Expired::Unresponsive(now - self.last_heard));
        }
        if self.ping_due().is_some_and(|t| now >= t) {
            self.pings += 1;
            self.last_ping = now;
            return Some(Expired::Ping(self.pings));
        }
        if self.idle_due().is_some_and(|t| now >= t) {
            self.idle_armed = false;
            return Some(Expired::Idle);
        }
        None
    }
}
