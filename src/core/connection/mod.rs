//! One authenticated connection as a state machine over frames and time: the closing handshake
//! and its echo rule, keepalive and idle timers, ACK gating, the rules on which frames may
//! follow the handshake, and the sealing half of the record layer. It does no I/O and reads no
//! clock: the driver opens what the socket read with a [`FrameDecoder`] and hands over each
//! frame ([`Connection::handle_frame`], or [`Connection::handle_input`] for both steps), writes
//! what it seals ([`Connection::poll_transmit`]), and wakes it at [`Connection::poll_timeout`]
//! ([`Connection::handle_timeout`]).
//!
//! ```text
//!  socket bytes ─▶ FrameDecoder (open) ─▶ handle_frame ─▶ [rules] ─▶ Event ─▶ application
//!                                            │ PING→PONG, CLOSE→echo
//!  application ─▶ send / close ─▶ Outbox ─▶ poll_transmit ─▶ [seal] ─▶ socket bytes
//!  time ─▶ handle_timeout ─▶ [keepalive PING, idle close, unresponsive, close timeout]
//! ```
//! Opening and sealing can run outside whatever lock a threaded driver keeps this under: the
//! decoder is the driver's own (it is the reading side's alone), and a [`Batch`] takes the
//! sealer out while it seals ([`Connection::begin_transmit`]), so a large message being sealed
//! never holds up the frames being read, and the reverse.
//!
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
pub use outbox::{Batch, Transmit};

use self::liveness::Liveness;
use self::outbox::Outbox;
use crate::core::channel::{self, Mux, DEFAULT};
use crate::core::codec::{FrameDecoder, FrameEncoder, Outgoing};
use crate::core::record::{Event as Frame, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, PeerMisbehaved, Result};

/// What the application is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// What happened on a channel: a message (on the default channel too), a channel the peer
    /// opened, finished or reset.
    Channel(channel::Event),
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
    /// The sealer; out in a [`Batch`] while one is being sealed.
    encoder: Option<FrameEncoder>,
    peer_max_message: u64,
    rekeys_sent: u64,
    outbox: Outbox,
    channels: Mux,
    /// An ACK event for the application (the latest; they only grow).
    acked: Option<u64>,
    close: CloseState,
    liveness: Liveness,
    acks: AckGate,
    /// False once the peer's CLOSE arrived or the connection failed: nothing more is read.
    reading: bool,
    /// The last failure queued a CLOSE for the peer: the driver lets it out before ending.
    failed_with_close: bool,
}

impl Connection {
    /// A connection whose handshake just finished with this sealer (the driver keeps the
    /// matching opener in its [`FrameDecoder`]) and these channels. `acknowledged`: it carries
    /// an exactly-once session, whose ACKs are held until [`Connection::attach_acks`].
    pub fn new(
        sealer: Sealer,
        timers: Timers,
        acknowledged: bool,
        mut channels: Mux,
        now: Instant,
    ) -> Self {
        if acknowledged {
            channels.refuse_channels(); // sessions carry the default channel only (§4.7)
        }
        Connection {
            peer_max_message: sealer.peer_max_message(),
            rekeys_sent: sealer.rekeys(),
            encoder: Some(FrameEncoder { sealer }),
            outbox: Outbox::default(),
            channels,
            acked: None,
            close: CloseState::default(),
            liveness: Liveness::new(timers, now),
            acks: if acknowledged {
                AckGate::Held(None)
            } else {
                AckGate::Refused
            },
            reading: true,
            failed_with_close: false,
        }
    }

    // ---- input ----

    /// Open the next frames of `src` with `decoder` and handle them, up to the first event
    /// for the application. `Ok(None)`: `src` holds no complete frame more (what a partial
    /// frame needs stays in it), or nothing more is read. An error has been recorded (see
    /// [`Connection::fail`]) when it is returned. More events may wait: see
    /// [`Connection::poll_event`].
    pub fn handle_input(
        &mut self,
        decoder: &mut FrameDecoder,
        src: &mut BytesMut,
        now: Instant,
    ) -> Result<Option<Event>> {
        if let Some(event) = self.poll_event() {
            return Ok(Some(event));
        }
        while self.reading {
            let frame = match decoder.decode(src) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.fail(e)),
            };
            if let Some(event) = self.handle_frame(frame, now)? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Handle one frame the peer sent (opened by the driver's decoder), and return the first
    /// event it made (a frame makes at most two: the rest wait for [`Connection::poll_event`]).
    /// Frames after the peer's CLOSE or a failure are ignored: nothing more is read then.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<Option<Event>> {
        if !self.reading {
            return Ok(None);
        }
        self.liveness.heard(now);
        let handled = match frame {
            Frame::Message {
                channel,
                message,
                credit,
            } => {
                self.liveness.traffic(now);
                self.channels.handle_message(channel, message, credit)
            }
            Frame::Fragment { channel, credit } => {
                self.liveness.traffic(now);
                self.channels.handle_fragment(channel, credit)
            }
            Frame::Channel(frame) => self.channels.handle_control(frame),
            Frame::Ping(v) => {
                self.outbox.pong(v);
                Ok(())
            }
            Frame::Pong(_) => Ok(()),
            Frame::Close { code, reason } => {
                self.reading = false;
                if let Some((code, reason)) = self.close.peer_closed(code, reason) {
                    self.outbox.push(Outgoing::Close { code, reason }, 0);
                }
                Ok(())
            }
            Frame::Ack(next_expected) => match &mut self.acks {
                AckGate::Attached => {
                    self.acked = self.acked.max(Some(next_expected));
                    Ok(())
                }
                AckGate::Held(held) => {
                    *held = (*held).max(Some(next_expected));
                    Ok(())
                }
                AckGate::Refused => Err(Error::Protocol(PeerMisbehaved::AckOutsideSession)),
            },
            Frame::Confirmed(_) => Err(Error::Protocol(PeerMisbehaved::UnexpectedConfirm)),
            Frame::Resume(_) => Err(Error::Protocol(PeerMisbehaved::UnexpectedResume)),
        };
        if let Err(e) = handled {
            return Err(self.fail(e));
        }
        Ok(self.poll_event())
    }

    /// The next event for the application, if one waits.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(n) = self.acked.take() {
            return Some(Event::Acked(n));
        }
        self.channels.poll_event().map(Event::Channel)
    }

    /// The stream ended. Without the peer's CLOSE first that is a truncation.
    pub fn handle_eof(&mut self) -> Result<()> {
        if !self.reading {
            return Ok(());
        }
        Err(self.fail(Error::Io(std::io::ErrorKind::UnexpectedEof.into())))
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

    /// Queue a message on the default channel; `cost` is what the driver counted it as.
    pub fn send(&mut self, msg: Bytes, cost: usize, now: Instant) -> Result<()> {
        self.send_on(DEFAULT, msg, cost, now)
    }

    /// Queue a message on `channel` behind what is queued there.
    pub fn send_on(&mut self, channel: u32, msg: Bytes, cost: usize, now: Instant) -> Result<()> {
        if let Some(e) = self.close.closing_error() {
            return Err(e);
        }
        self.channels.send(channel, msg, cost)?; // checks the size against the peer's limit
        self.liveness.traffic(now);
        Ok(())
    }

    /// The channels, for what does not go through a frame: opening, finishing, resetting,
    /// and telling them what the application took ([`Mux::consumed`]).
    pub fn channels(&mut self) -> &mut Mux {
        &mut self.channels
    }

    /// Open a channel (refused once we are closing).
    pub fn open_channel(&mut self, name: &str) -> Result<u32> {
        if let Some(e) = self.close.closing_error() {
            return Err(e);
        }
        self.channels.open(name)
    }

    /// True when a message of `len` bytes may be sealed at once by [`Connection::seal_now`]:
    /// nothing is queued ahead of it on the default channel, its credit is there, no batch
    /// is out being sealed, and we are not closing.
    pub fn can_seal_now(&self, len: usize) -> bool {
        self.encoder.is_some()
            && self.outbox.is_empty()
            && !self.outbox.is_done()
            && !self.close.is_closing()
            && self.channels.can_send_now(len)
    }

    /// Seal a default-channel message straight into `out`, skipping the queue (see
    /// `can_seal_now`).
    pub fn seal_now(&mut self, msg: Bytes, out: &mut BytesMut, now: Instant) -> Result<()> {
        Sealer::check_len(self.peer_max_message, msg.len())?;
        if !self.can_seal_now(msg.len()) {
            return Err(self.close.closing_error().unwrap_or({
                Error::Misuse("messages are queued or being sealed: seal_now would reorder")
            }));
        }
        self.channels.take_now(msg.len());
        let encoder = self.encoder.as_mut().expect("checked by can_seal_now");
        let sealed = encoder.encode_item(Outgoing::Message(msg), out);
        self.rekeys_sent = encoder.sealer.rekeys();
        match sealed {
            Ok(()) => {
                self.liveness.traffic(now);
                Ok(())
            }
            Err(e) => Err(self.sealing_failed(e)),
        }
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

    /// True when [`Connection::begin_transmit`] has something to seal now.
    pub fn wants_transmit(&self) -> bool {
        self.encoder.is_some() && self.outbox.wants_transmit(&self.channels, !self.reading)
    }

    /// Take what waits (replies first, then messages and our CLOSE in the order they were
    /// queued, about `max` bytes of them) for sealing outside this struct. Until the batch
    /// comes back through [`Connection::end_transmit`] nothing else is sealed.
    pub fn begin_transmit(&mut self, max: usize) -> Option<Batch> {
        if !self.wants_transmit() {
            return None;
        }
        let encoder = self.encoder.take().expect("checked by wants_transmit");
        Some(
            self.outbox
                .take_batch(encoder, max, &mut self.channels, !self.reading),
        )
    }

    /// The batch was sealed (`sealed`) into the driver's buffer: the sealer comes back. A
    /// sealing failure ends the connection (recorded, and returned).
    pub fn end_transmit(&mut self, batch: Batch, sealed: Result<()>) -> Result<Transmit> {
        let (encoder, transmit) = self.outbox.return_batch(batch);
        self.rekeys_sent = encoder.sealer.rekeys();
        self.encoder = Some(encoder);
        match sealed {
            Ok(()) => Ok(transmit),
            Err(e) => Err(self.sealing_failed(e)),
        }
    }

    /// Seal what waits into `out`, up to about `max` bytes (a batch, begun and ended here).
    /// After our CLOSE nothing more is sealed.
    pub fn poll_transmit(&mut self, out: &mut BytesMut, max: usize) -> Result<Transmit> {
        let Some(mut batch) = self.begin_transmit(max) else {
            return Ok(Transmit::default());
        };
        let sealed = batch.seal(out);
        self.end_transmit(batch, sealed)
    }

    /// Our sealer failed (its keys are spent, say): nothing more can be sent, a CLOSE included.
    fn sealing_failed(&mut self, err: Error) -> Error {
        self.reading = false;
        self.close.finish(err.to_close_info());
        self.outbox.silence();
        err
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

    /// True once nothing more will be sealed (our CLOSE was, or the connection ended silently).
    pub fn is_done_sending(&self) -> bool {
        self.outbox.is_done()
    }

    /// True once nothing more may be sent at all, not even bytes sealed already: a frame failed
    /// authentication, our sealer failed, or the connection ended without (more of) a closing
    /// handshake. A driver holding sealed bytes drops them.
    pub fn is_silenced(&self) -> bool {
        self.outbox.is_silent()
    }

    // ---- time ----

    /// When our CLOSE stops waiting for the peer's (None until we sent one): a driver letting
    /// the last frames out after the peer's CLOSE waits no longer than this either.
    pub fn close_deadline(&self) -> Option<Instant> {
        self.liveness.close_deadline()
    }

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
            _ => Err(Error::Misuse(
                "not a connection waiting for its ACK handler",
            )),
        }
    }

    // ---- figures ----

    pub fn rekeys_sent(&self) -> u64 {
        self.rekeys_sent
    }

    /// The largest message the peer accepts.
    pub fn peer_max_message(&self) -> u64 {
        self.peer_max_message
    }
}
