//! Acknowledged, exactly-once delivery across connections: the bookkeeping only, no I/O.
//!
//! Messages of a session are numbered from 0 in each direction. Numbers are implicit on the
//! wire: when a connection (re)starts, each side announces the next number it has yet to
//! deliver (CONFIRM's session request, RESUME), and the sender transmits from exactly there, in
//! order, so the n-th message received on a connection is `announced + n`. The receiver delivers
//! a message only if its number is the next expected one (older ones are duplicates of what was
//! delivered before a reconnect) and acknowledges with ACK frames. The sender keeps every
//! message until it is acknowledged, and resends the unacknowledged ones on the next connection.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::{Error, PeerMisbehaved, Result};

/// The sending side: messages not yet acknowledged, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Sequence number of `entries[0]` (every number below it is acknowledged).
    base: u64,
    entries: VecDeque<(Bytes, usize)>,
    /// The next sequence number to hand to the current connection.
    transmitted: u64,
    /// Every number below it was acknowledged. It may run ahead of `base`: a message is
    /// forgotten only once it was also handed to the current connection, because the receiver
    /// numbers a connection's messages by position and none may be skipped on it.
    acked: u64,
    /// Sum of the costs of `entries`.
    cost: usize,
}

impl Outbox {
    /// The sequence number the next pushed message gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Every message pushed so far is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sum of the costs of the unacknowledged messages.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Keep `msg` until acknowledged; returns its sequence number.
    pub fn push(&mut self, msg: Bytes, cost: usize) -> u64 {
        self.entries.push_back((msg, cost));
        self.cost += cost;
        self.next_seq() - 1
    }

    /// The peer delivered every message below `next_expected`: forget them (once handed to
    /// the current connection). Returns the cost released. An acknowledgement of messages
    /// never sent is a protocol violation.
    pub fn ack(&mut self, next_expected: u64) -> Result<usize> {
        if next_expected > self.next_seq() {
            return Err(Error::Protocol(PeerMisbehaved::AckBeyondSent {
                next_expected,
                sent: self.next_seq(),
            }));
        }
        self.acked = self.acked.max(next_expected);
        Ok(self.release())
    }

    fn release(&mut self) -> usize {
        let upto = self.acked.min(self.transmitted);
        let mut released = 0;
        while self.base < upto {
            let (_, cost) = self.entries.pop_front().expect("below next_seq");
            released += cost;
            self.base += 1;
        }
        self.cost -= released;
        released
    }

    /// Whether a new connection may start at `next_expected` (see `resume_at`).
    pub fn can_resume_at(&self, next_expected: u64) -> bool {
        (self.base..=self.next_seq()).contains(&next_expected)
    }

    /// A new connection: the peer announced the next number it expects. Everything below it is
    /// acknowledged; transmission restarts there. Returns the cost released.
    pub fn resume_at(&mut self, next_expected: u64) -> Result<usize> {
        if !self.can_resume_at(next_expected) {
            // The peer lost messages it had acknowledged, or claims ones never sent: it is not
            // the session we had.
            return Err(Error::Protocol(PeerMisbehaved::ResumeOutsideUnacked {
                next_expected,
                base: self.base,
                next: self.next_seq(),
            }));
        }
        self.transmitted = next_expected;
        self.acked = self.acked.max(next_expected);
        Ok(self.release())
    }

    /// The next message to transmit on the current connection, if any (not yet marked).
    pub fn next_to_transmit(&self) -> Option<&Bytes> {
        let index = self.transmitted.checked_sub(self.base)? as usize;
        self.entries.get(index).map(|(m, _)| m)
    }

    /// The message returned by `next_to_transmit` was handed to the connection. Returns the
    /// cost released (it may have been acknowledged already, through an earlier connection).
    pub fn mark_transmitted(&mut self) -> usize {
        debug_assert!(self.next_to_transmit().is_some());
        self.transmitted += 1;
        self.release()
    }

    /// Everything pushed was handed to the connection (not necessarily acknowledged).
    pub fn all_transmitted(&self) -> bool {
        self.transmitted >= self.next_seq()
    }
}

/// The receiving side of one connection of a session: numbers its messages and decides which
/// are new.
#[derive(Debug, Clone, Copy)]
pub struct Numbering {
    next_on_connection: u64,
}

impl Numbering {
    /// A connection whose first message is number `announced`.
    pub fn starting_at(announced: u64) -> Self {
        Numbering {
            next_on_connection: announced,
        }
    }

    /// Number the next message received on this connection.
    pub fn assign(&mut self) -> u64 {
        let n = self.next_on_connection;
        self.next_on_connection += 1;
        n
    }
}

/// What the receiver has delivered, across connections.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    next_expected: u64,
}

impl Delivered {
    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    /// Message number `seq` arrived: true if it is to be delivered now (and counts as
    /// delivered), false if it is a duplicate of one delivered before. A gap means the sender
    /// broke the protocol.
    pub fn accept(&mut self, seq: u64) -> Result<bool> {
        match seq.cmp(&self.next_expected) {
            std::cmp::Ordering::Less => Ok(false),
            std::cmp::Ordering::Equal => {
                self.next_expected += 1;
                Ok(true)
            }
            std::cmp::Ordering::Greater => Err(Error::Protocol(PeerMisbehaved::MessageAhead {
                seq,
                expected: self.next_expected,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u64) -> Bytes {
        Bytes::from(i.to_be_bytes().to_vec())
    }

    #[test]
    fn numbers_acks_and_resends_from_where_the_peer_is() {
        let mut out = Outbox::default();
        for i in 0..5 {
            assert_eq!(out.push(msg(i), 10), i);
        }
        assert_eq!(out.cost(), 50);
        // Transmit three, then the connection drops.
        for i in 0..3 {
            assert_eq!(out.next_to_transmit(), Some(&msg(i)));
            out.mark_transmitted();
        }
        assert_eq!(out.ack(1).unwrap(), 10);
        // The peer delivered two before the drop (its ACK for the second was lost).
        assert_eq!(out.resume_at(2).unwrap(), 10);
        let resent: Vec<_> = std::iter::from_fn(|| {
            let m = out.next_to_transmit().cloned();
            if m.is_some() {
                out.mark_transmitted();
            }
            m
        })
        .collect();
        assert_eq!(resent, vec![msg(2), msg(3), msg(4)]);
        assert!(out.all_transmitted());
        assert_eq!(out.ack(5).unwrap(), 30);
        assert!(out.is_empty());
        assert_eq!(out.cost(), 0);
    }

    #[test]
    fn a_late_ack_never_makes_a_connection_skip_a_message() {
        let mut out = Outbox::default();
        for i in 0..5 {
            out.push(msg(i), 1);
        }
        out.mark_transmitted();
        out.mark_transmitted();
        // New connection: the peer announced 1 (message 1 was still queued on the old one).
        out.resume_at(1).unwrap();
        // It then delivered 1..3 from the old connection's queue and says so.
        assert_eq!(
            out.ack(4).unwrap(),
            0,
            "nothing handed to this connection yet"
        );
        // The new connection still gets 1, 2, 3 (its receiver numbers by position) then 4.
        let mut sent = vec![];
        while let Some(m) = out.next_to_transmit().cloned() {
            sent.push(m);
            out.mark_transmitted();
        }
        assert_eq!(sent, vec![msg(1), msg(2), msg(3), msg(4)]);
        assert_eq!(out.len(), 1, "message 4 waits for its acknowledgement");
    }

    #[test]
    fn impossible_acks_and_resumes_are_protocol_errors() {
        let mut out = Outbox::default();
        out.push(msg(0), 1);
        out.mark_transmitted();
        assert!(out.ack(2).is_err(), "acks a message never pushed");
        out.ack(1).unwrap();
        assert!(out.resume_at(0).is_err(), "forgot an acknowledged message");
        assert!(out.ack(0).is_ok(), "a stale ack is harmless");
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_refused() {
        let mut d = Delivered::default();
        let mut first = Numbering::starting_at(0);
        for _ in 0..3 {
            assert!(d.accept(first.assign()).unwrap());
        }
        // Reconnect: the receiver announced 2 (the third was still queued, undelivered, when it
        // did), so the resend starts at 2 and message 2 is a duplicate.
        let mut second = Numbering::starting_at(2);
        assert!(!d.accept(second.assign()).unwrap());
        assert!(d.accept(second.assign()).unwrap());
        assert_eq!(d.next_expected(), 4);
        assert!(d.accept(9).is_err());
    }
}
