//! What waits to be sealed: messages and our CLOSE in order, and the replies a peer can ask
//! for as often as it likes.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::core::codec::{FrameEncoder, Outgoing};
use crate::error::Result;

/// The queue in front of the sealer.
///
/// Bounds: the items are counted against the driver's send budget (each carries its cost,
/// handed back once written); each reply is one slot holding the latest value (one ACK, one
/// PONG, one PING at most, however many the peer provokes: HTTP/2's ping flood is the same
/// attack against an unbounded reply queue).
#[derive(Default)]
pub struct Outbox {
    items: VecDeque<(Outgoing, usize)>,
    ack: Option<u64>,
    pong: Option<u64>,
    ping: Option<u64>,
    /// Our CLOSE was sealed: it is the last frame we send.
    fin: bool,
    /// Nothing more is sent at all (after a frame failed authentication, or once ended).
    silent: bool,
}

/// What one [`Outbox::seal`] produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Transmit {
    /// The send budget of the items sealed: the driver gives it back once they are written.
    pub cost: usize,
    /// Our CLOSE was among them: after writing, the driver shuts the stream down (FIN).
    pub fin: bool,
}

impl Outbox {
    pub fn push(&mut self, item: Outgoing, cost: usize) {
        self.items.push_back((item, cost));
    }

    pub fn ack(&mut self, next_expected: u64) {
        self.ack = self.ack.max(Some(next_expected));
    }

    pub fn pong(&mut self, opaque: u64) {
        self.pong = Some(opaque);
    }

    pub fn ping(&mut self, opaque: u64) {
        self.ping = Some(opaque);
    }

    /// Stop sending anything; what was queued is dropped (its budget with it: the driver is
    /// ending the connection).
    pub fn silence(&mut self) {
        self.silent = true;
        self.items.clear();
    }

    /// No item waits (replies may: they are unordered with respect to messages).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn is_done(&self) -> bool {
        self.fin || self.silent
    }

    /// True when [`Outbox::seal`] has something to seal.
    pub fn wants_transmit(&self) -> bool {
        !self.is_done()
            && (!self.items.is_empty()
                || self.ack.is_some()
                || self.pong.is_some()
                || self.ping.is_some())
    }

    /// Seal replies, then items in order, into `out` until it holds `max` bytes or our CLOSE
    /// was sealed.
    pub fn seal(
        &mut self,
        encoder: &mut FrameEncoder,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<Transmit> {
        let mut sent = Transmit::default();
        if self.is_done() {
            return Ok(sent);
        }
        if let Some(v) = self.ack.take() {
            encoder.encode_item(Outgoing::Ack(v), out)?;
        }
        if let Some(v) = self.pong.take() {
            encoder.encode_item(Outgoing::Pong(v), out)?;
        }
        if let Some(v) = self.ping.take() {
            encoder.encode_item(Outgoing::Ping(v), out)?;
        }
        while out.len() < max {
            let Some((item, cost)) = self.items.pop_front() else {
                break;
            };
            sent.cost += cost;
            let closing = matches!(item, Outgoing::Close { .. });
            encoder.encode_item(item, out)?;
            if closing {
                self.fin = true;
                sent.fin = true;
                break;
            }
        }
        Ok(sent)
    }

    /// Seal one message straight into `out` (the caller checked that no item waits).
    pub fn seal_now(
        &mut self,
        encoder: &mut FrameEncoder,
        msg: Bytes,
        out: &mut BytesMut,
    ) -> Result<()> {
        debug_assert!(self.items.is_empty() && !self.is_done());
        encoder.encode_item(Outgoing::Message(msg), out)
    }
}
