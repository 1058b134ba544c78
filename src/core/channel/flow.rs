//! Credit-based flow control of one channel, each direction on its own (§4.7).
//!
//! Credit is counted in units of message bytes, plus [`MESSAGE_CREDIT`] per message (charged
//! with its first frame), cumulatively from the channel's start: a WINDOW frame carries the
//! absolute limit, so a late or repeated one can never grant twice.
//!
//! [`MESSAGE_CREDIT`]: crate::core::record::MESSAGE_CREDIT

use crate::core::record::MESSAGE_CREDIT;

/// What the sending side may still send.
#[derive(Debug)]
pub struct SendCredit {
    /// Credit used so far.
    pub sent: u64,
    /// The peer's latest limit.
    pub limit: u64,
    /// The limit at which we last told the peer we were blocked (one BLOCKED per limit).
    pub blocked_at: Option<u64>,
}

impl SendCredit {
    pub fn new(initial: u64) -> Self {
        SendCredit {
            sent: 0,
            limit: initial,
            blocked_at: None,
        }
    }

    pub fn available(&self) -> u64 {
        self.limit - self.sent
    }

    /// Take `credit` if it is there.
    pub fn take(&mut self, credit: u64) -> bool {
        if credit > self.available() {
            return false;
        }
        self.sent += credit;
        true
    }

    /// A WINDOW from the peer; true when it raised the limit (limits only grow: an older one
    /// is ignored).
    pub fn raise(&mut self, limit: u64) -> bool {
        if limit <= self.limit {
            return false;
        }
        self.limit = limit;
        true
    }

    /// We are blocked and need credit up to `needed`: the BLOCKED to send, once per limit.
    pub fn blocked(&mut self, needed: u64) -> Option<u64> {
        if self.blocked_at == Some(self.limit) {
            return None;
        }
        self.blocked_at = Some(self.limit);
        Some(needed)
    }
}

/// What the receiving side granted and what its application took.
#[derive(Debug)]
pub struct RecvWindow {
    /// Credit the peer used (charged frame by frame as frames are opened).
    pub received: u64,
    /// Credit of the messages the application took.
    pub consumed: u64,
    /// The limit granted (sent, or queued to be sent, in a WINDOW).
    pub granted: u64,
    /// How much unread credit the channel may hold: the limit stays `window` ahead of what the
    /// application took.
    pub window: u64,
    /// The window the channel started with (growth beyond it is counted against the
    /// connection's budget).
    pub initial: u64,
    /// `consumed` when the window last changed: the window grows only after the application
    /// has read at least half a window since (a peer cannot grow a channel nobody reads).
    pub consumed_at_growth: u64,
    /// A BLOCKED asking for more than a window: the end of a message larger than the window,
    /// waiting for the connection's one oversize grant.
    pub wants: Option<u64>,
    /// Credit of the fragments received of a message not yet complete (the application
    /// cannot take them before the message is whole).
    pub in_message: u64,
    /// The peer said it is blocked at this limit (BLOCKED): any credit freed from now on goes
    /// out at once, not only half a window at a time (its next message may need just that).
    pub blocked_at: Option<u64>,
}

/// Why a charge was refused: the peer went past the limit we granted.
#[derive(Debug)]
pub struct Overrun {
    pub granted: u64,
}

impl RecvWindow {
    pub fn new(window: u64) -> Self {
        RecvWindow {
            received: 0,
            consumed: 0,
            granted: window,
            window,
            initial: window,
            consumed_at_growth: 0,
            wants: None,
            in_message: 0,
            blocked_at: None,
        }
    }

    /// Charge one frame's credit as it arrives.
    pub fn charge(&mut self, credit: u64) -> Result<(), Overrun> {
        let received = self.received.saturating_add(credit);
        if received > self.granted {
            return Err(Overrun {
                granted: self.granted,
            });
        }
        self.received = received;
        Ok(())
    }

    /// Credit received and not yet taken by the application.
    pub fn unread(&self) -> u64 {
        self.received - self.consumed
    }

    /// The application took a message worth `credit`. True when a WINDOW should go out: at
    /// least half a window was freed since the last grant (fewer, larger updates).
    pub fn consume(&mut self, credit: u64) -> bool {
        self.consumed += credit;
        self.regrant(false)
    }

    /// Move the limit to `consumed + window` if that is at least half a window more than
    /// granted, or at all with `any` or while the peer is blocked at the current limit. True
    /// when the limit moved.
    pub fn regrant(&mut self, any: bool) -> bool {
        let target = self.consumed + self.window;
        let any = any || self.blocked_at == Some(self.granted);
        let step = if any { 1 } else { (self.window / 2).max(1) };
        if target >= self.granted + step {
            self.granted = target;
            self.blocked_at = None;
            return true;
        }
        false
    }

    /// The sender is blocked while the application keeps up (less than a quarter of a window
    /// unread, and at least half a window read since the window last changed): the window,
    /// not the reader, limits the channel, so it doubles, within `max` and `budget` (the
    /// connection's growth left). Returns how much it grew.
    pub fn grow(&mut self, max: u64, budget: u64) -> u64 {
        let keeps_up = self.unread() < self.window / 4;
        let read_since = self.consumed - self.consumed_at_growth >= self.window / 2;
        if !keeps_up || !read_since || self.window >= max {
            return 0;
        }
        let grown = (self.window.min(max - self.window)).min(budget);
        if grown > 0 {
            self.window += grown;
            self.consumed_at_growth = self.consumed;
        }
        grown
    }

    /// Whether credit up to `needed` can come from reading alone: the application takes
    /// every complete message received, and the limit moves a window past that. If not, the
    /// message waiting is larger than the window.
    pub fn fits(&self, needed: u64) -> bool {
        needed <= self.received - self.in_message + self.window
    }

    /// The highest BLOCKED an honest sender can send: the end of a message started within
    /// the limit granted.
    pub fn max_needed(&self, max_message: u64) -> u64 {
        self.granted
            .saturating_add(max_message)
            .saturating_add(MESSAGE_CREDIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_only_grow_and_blocked_is_sent_once_per_limit() {
        let mut c = SendCredit::new(100);
        assert!(c.take(60));
        assert!(!c.take(41), "beyond the limit");
        assert_eq!(c.blocked(141), Some(141));
        assert_eq!(c.blocked(141), None, "once per limit");
        assert!(!c.raise(90), "an older limit");
        assert!(c.raise(200));
        assert_eq!(c.blocked(300), Some(300), "a new limit, a new BLOCKED");
        assert!(c.take(140));
        assert_eq!(c.available(), 0);
    }

    #[test]
    fn overrun_is_refused_and_grants_follow_reading() {
        let mut w = RecvWindow::new(1000);
        w.charge(600).unwrap();
        assert!(w.charge(401).is_err());
        w.charge(400).unwrap();
        assert!(!w.consume(400), "less than half a window freed");
        assert!(w.consume(200));
        assert_eq!(w.granted, 1600);
        assert_eq!(w.unread(), 400);
    }

    #[test]
    fn the_window_grows_only_for_a_reader_that_keeps_up() {
        let mut w = RecvWindow::new(1000);
        assert_eq!(w.grow(10_000, 10_000), 0, "nothing read yet");
        w.charge(1000).unwrap();
        w.consume(1000);
        assert_eq!(w.grow(10_000, 10_000), 1000);
        assert_eq!(w.window, 2000);
        assert_eq!(w.grow(10_000, 10_000), 0, "nothing read since");
        w.charge(1000).unwrap();
        w.consume(1000);
        w.charge(1500).unwrap();
        assert_eq!(w.grow(10_000, 10_000), 0, "the reader is behind");
        w.consume(1500);
        assert_eq!(w.grow(2500, 10_000), 500, "capped by max");
        assert_eq!(w.window, 2500);
        let mut w = RecvWindow::new(1000);
        w.charge(1000).unwrap();
        w.consume(1000);
        assert_eq!(w.grow(10_000, 300), 300, "capped by the budget");
    }
}
