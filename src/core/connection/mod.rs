//! One authenticated connection as a state machine over bytes and time: the record layer
//! (sealing and opening), the closing handshake and its echo rule, keepalive and idle timers,
//! ACK gating and the rules on which frames may follow the handshake. It does no I/O and reads
//! no clock: the driver feeds it what the socket read ([`Connection::handle_input`]) and the
//! time, writes what it seals ([`Connection::poll_transmit`]), delivers its events
//! ([`Connection::poll_event`]) and wakes it at [`Connection::poll_timeout`]
//! ([`Connection::handle_timeout`]).
//!
//! ```text
//!  socket bytes ─▶ handle_input ─▶ [open, reassemble, rules] ─▶ poll_event ─▶ application
//!                                     │ PING→PONG, CLOSE→echo
//!  application ─▶ send / close ─▶ Outbox ─▶ poll_transmit ─▶ [seal] ─▶ socket bytes
//!  time ─▶ handle_timeout ─▶ [keepalive PING, idle close, unresponsive, close timeout]
//! ```
//! Every failure is recorded here before it is returned: the outcome, and the CLOSE that tells
//! the peer why when the channel is still intact (nothing at all after a tag failure).

mod close;
mod liveness;
mod outbox;
#[cfg(test)]
mod tests;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

pub use close::CloseState;
pub use liveness::{Expired, Timers};
pub use outbox::Transmit;

use self::liveness::Liveness;
use self::outbox::Outbox;
use crate::core::codec::{FrameDecoder, FrameEncoder, Outgoing};
use crate::core::message::Message;
use crate::core::session::{Event as Frame, Opener, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, Result};

/// What the application is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// The peer delivered every message below this number (acknowledged sessions, once
    /// [`Connection::attach_acks`] was called).
    Acked(u64),
}

/// Where the peer's ACKs go.
#[derive(Debug)]
enum AckGate {
    /// Not a connection of an acknowledged session: an ACK breaks the protocol.
    Refused,
    /// A session's connection its exactly-once end has not taken over yet: the highest ACK so
    /// far waits (applied earlier, an ACK for messages the peer took from an older connection
    /// after it announced where this one starts would move the sender past that start).
    Held(Option<u64>),
    Attached,
}

pub struct Connection {
    encoder: FrameEncoder,
    decoder: FrameDecoder,
    outbox: Outbox,
    close: CloseState,
    liveness: Liveness,
    acks: AckGate,
    /// The event not yet taken: input is not processed past it (so a driver that stops
    /// taking events stops the reading, and we hold at most one).
    event: Option<Event>,
    /// False once the peer's CLOSE arrived or the connection failed: nothing more is read.
    reading: bool,
    /// The last failure queued a CLOSE for the peer: the driver lets it out before ending.
    failed_with_close: bool,
}

impl Connection {
    /// A connection whose handshake just finished with these keys. `acknowledged`: it carries
    /// an exactly-once session, whose ACKs are held until [`Connection::attach_acks`].
    pub fn new(
        sealer: Sealer,
        opener: Opener,
        timers: Timers,
        acknowledged: bool,
        now: Instant,
    ) -> Self {
        Connection {
            encoder: FrameEncoder { sealer },
            decoder: FrameDecoder { opener },
            outbox: Outbox::default(),
            close: CloseState::default(),
            liveness: Liveness::new(timers, now),
            acks: if acknowledged {
                AckGate::Held(None)
            } else {
                AckGate::Refused
            },
            event: None,
            reading: true,
            failed_with_close: false,
        }
    }

    // ---- input ----

    /// Process the frames `src` holds, stopping at the first event for the application (take
    /// it with [`Connection::poll_event`], then call again). What a partial frame needs stays
    /// in `src`. An error has been recorded (see [`Connection::fail`]) when it is returned.
    pub fn handle_input(&mut self, src: &mut BytesMut, now: Instant) -> Result<()> {
        while self.reading && self.event.is_none() {
            let frame = match self.decoder.decode(src) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            self.liveness.heard(now);
            match frame {
                Frame::Message(m) => {
                    self.liveness.traffic(now);
                    self.event = Some(Event::Message(m));
                }
                Frame::Ping(v) => self.outbox.pong(v),
                Frame::Pong(_) => {}
                Frame::Close { code, reason } => {
                    self.reading = false;
                    if let Some((code, reason)) = self.close.peer_closed(code, reason) {
                        self.outbox.push(Outgoing::Close { code, reason }, 0);
                    }
                }
                Frame::Ack(next_expected) => match &mut self.acks {
                    AckGate::Attached => self.event = Some(Event::Acked(next_expected)),
                    AckGate::Held(held) => *held = (*held).max(Some(next_expected)),
                    AckGate::Refused => {
                        return Err(
                            self.fail(Error::protocol("ACK outside an acknowledged session"))
                        )
                    }
                },
                Frame::Confirmed(_) => return Err(self.fail(Error::protocol("unexpected CONFIRM"))),
                Frame::Resume(_) => return Err(self.fail(Error::protocol("unexpected RESUME"))),
            }
        }
        Ok(())
    }

    /// The stream ended. Without the peer's CLOSE first that is a truncation.
    pub fn handle_eof(&mut self) -> Result<()> {
        if !self.reading {
            return Ok(());
        }
        Err(self.fail(Error::Io(std::io::ErrorKind::UnexpectedEof.into())))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// False once nothing more will be read: the peer closed, or the connection failed.
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// The application is not taking messages: the driver stopped reading.
    pub fn pause_reading(&mut self) {
        self.liveness.pause();
    }

    pub fn resume_reading(&mut self, now: Instant) {
        self.liveness.resume(now);
    }

    // ---- output ----

    /// Why a message may not be sent now, if that is so (closing or closed).
    pub fn closing_error(&self) -> Option<Error> {
        self.close.closing_error()
    }

    /// Queue a message behind what is queued; `cost` is what the driver counted it as.
    pub fn send(&mut self, msg: Bytes, cost: usize, now: Instant) -> Result<()> {
        Sealer::check_len(self.encoder.sealer.peer_max_message(), msg.len())?;
        if let Some(e) = self.close.closing_error() {
            return Err(e);
        }
        self.liveness.traffic(now);
        self.outbox.push(Outgoing::Message(msg), cost);
        Ok(())
    }

    /// True when a message may be sealed at once by [`Connection::seal_now`]: nothing is
    /// queued ahead of it and we are not closing.
    pub fn can_seal_now(&self) -> bool {
        self.outbox.is_empty() && !self.outbox.is_done() && !self.close.is_closing()
    }

    /// Seal a message straight into `out`, skipping the queue (see `can_seal_now`).
    pub fn seal_now(&mut self, msg: Bytes, out: &mut BytesMut, now: Instant) -> Result<()> {
        Sealer::check_len(self.encoder.sealer.peer_max_message(), msg.len())?;
        if !self.can_seal_now() {
            return Err(self
                .close
                .closing_error()
                .unwrap_or_else(|| Error::config("messages are queued: seal_now would reorder")));
        }
        self.liveness.traffic(now);
        self.outbox.seal_now(&mut self.encoder, msg, out)
    }

    /// Acknowledged sessions: tell the peer every message below `next_expected` arrived. At
    /// most one ACK waits, carrying the highest value.
    pub fn ack(&mut self, next_expected: u64) {
        self.outbox.ack(next_expected);
    }

    /// Queue a PING carrying `opaque` (at most one waits; a later call replaces its value).
    pub fn ping(&mut self, opaque: u64) {
        self.outbox.ping(opaque);
    }

    /// True when [`Connection::poll_transmit`] has something to seal.
    pub fn wants_transmit(&self) -> bool {
        self.outbox.wants_transmit()
    }

    /// Seal what waits into `out`, up to about `max` bytes (replies first, then messages and
    /// our CLOSE in the order they were queued). After our CLOSE nothing more is sealed.
    pub fn poll_transmit(&mut self, out: &mut BytesMut, max: usize) -> Result<Transmit> {
        match self.outbox.seal(&mut self.encoder, out, max) {
            Ok(t) => Ok(t),
            Err(e) => Err(self.fail(e)),
        }
    }

    // ---- closing ----

    /// Begin the closing handshake: what is queued goes first, then our CLOSE; the peer has
    /// `close_timeout` to answer. False when already closing or closed.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> bool {
        let Some(reason) = self.close.start(code, reason) else {
            return false;
        };
        self.outbox.push(
            Outgoing::Close {
                code: code.0,
                reason,
            },
            0,
        );
        self.liveness.closing(now);
        true
    }

    /// The connection failed with `err`: the outcome is recorded, nothing more is read, and the
    /// peer is told why when the channel is intact (a CLOSE with the error's code, behind what
    /// is queued); after a tag failure, or an error with no code, nothing more is sent.
    pub fn fail(&mut self, err: Error) -> Error {
        self.reading = false;
        self.failed_with_close = false;
        match self.close.fail(&err) {
            Some((code, reason)) => {
                self.outbox.push(Outgoing::Close { code, reason }, 0);
                self.failed_with_close = true;
            }
            None if err.close_code_to_send().is_some() => {} // our CLOSE is already queued
            None => self.outbox.silence(),
        }
        err
    }

    /// True when the last failure queued a CLOSE the driver should let out before ending.
    pub fn failed_with_close(&self) -> bool {
        self.failed_with_close
    }

    /// End now, without (more of) a closing handshake: the outcome is `info` unless there was
    /// one, and nothing more is read or sent.
    pub fn finish(&mut self, info: CloseInfo) -> CloseInfo {
        self.reading = false;
        self.outbox.silence();
        self.close.finish(info).clone()
    }

    pub fn outcome(&self) -> Option<&CloseInfo> {
        self.close.outcome()
    }

    /// True once our CLOSE was queued or the connection ended.
    pub fn is_closing(&self) -> bool {
        self.close.is_closing()
    }

    // ---- time ----

    /// When [`Connection::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.close.outcome().is_some() {
            return None;
        }
        self.liveness.next_deadline()
    }

    /// Act on every deadline passed at `now`: keepalive PING, idle close; a silent peer or an
    /// unanswered CLOSE ends the connection (returned as the error, already recorded).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        if self.close.outcome().is_some() {
            return Ok(());
        }
        while let Some(expired) = self.liveness.expire(now) {
            match expired {
                Expired::Ping(v) => self.outbox.ping(v),
                Expired::Idle => {
                    self.close(CloseCode::NORMAL, "idle timeout", now);
                }
                Expired::Unresponsive(silent) => return Err(self.fail(Error::Unresponsive(silent))),
                Expired::CloseTimedOut => {
                    return Err(self.fail(Error::Closed(CloseInfo::abnormal(
                        "the peer did not complete the closing handshake within close_timeout",
                    ))))
                }
            }
        }
        Ok(())
    }

    // ---- ACK gating ----

    /// Acknowledged sessions: from now on the peer's ACKs are events; returns the highest one
    /// held so far.
    pub fn attach_acks(&mut self) -> Result<Option<u64>> {
        match self.acks {
            AckGate::Held(held) => {
                self.acks = AckGate::Attached;
                Ok(held)
            }
            _ => Err(Error::config(
                "not a connection waiting for its ACK handler",
            )),
        }
    }

    // ---- figures ----

    pub fn rekeys_sent(&self) -> u64 {
        self.encoder.sealer.rekeys()
    }

    pub fn rekeys_received(&self) -> u64 {
        self.decoder.opener.rekeys()
    }

    /// The largest message the peer accepts.
    pub fn peer_max_message(&self) -> u64 {
        self.encoder.sealer.peer_max_message()
    }
}
