//! What waits to be sealed: the replies a peer can ask for as often as it likes, what the
//! channels have to send ([`Mux::poll`]), and our CLOSE once they have sent everything.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::core::channel::{Mux, Output, DEFAULT};
use crate::core::codec::{FrameEncoder, Outgoing};
use crate::error::Result;

/// The queue in front of the sealer.
///
/// Bounds: messages wait in the channels' queues, counted against the driver's send budgets
/// (each carries its cost, handed back once sealed and written); `items` holds our CLOSE at
/// most; each reply is one slot holding the latest value (one ACK, one PONG, one PING at most,
/// however many the peer provokes: HTTP/2's ping flood is the same attack against an unbounded
/// reply queue), and the channels keep one control frame of each kind per channel.
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
    /// The vector the last batch carried, kept for the next (no allocation per batch).
    spare: Vec<Outgoing>,
}

/// What one batch carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Transmit {
    /// The send budget of the default channel's messages sealed: the driver gives it back once
    /// they are written.
    pub cost: usize,
    /// The same for other channels' messages: (channel, cost), one entry per message.
    pub released: Vec<(u32, usize)>,
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

    pub fn is_silent(&self) -> bool {
        self.silent
    }

    pub fn is_done(&self) -> bool {
        self.fin || self.silent
    }

    /// True when [`Outbox::take_batch`] has something to take.
    /// `close_now`: our CLOSE need not wait for the channels to send everything (nothing more
    /// is read: no credit can come for what waits).
    pub fn wants_transmit(&self, mux: &Mux, close_now: bool) -> bool {
        !self.is_done()
            && (mux.wants_transmit()
                || (!self.items.is_empty() && (close_now || mux.is_drained()))
                || self.ack.is_some()
                || self.pong.is_some()
                || self.ping.is_some())
    }

    /// Take replies, then what the channels have (control frames first, then data in turn),
    /// until about `max` bytes, then our CLOSE once the channels sent everything (or at once
    /// with `close_now`: what still waits for credit then is never sent), for `encoder` to
    /// seal (see [`Batch::seal`]).
    pub fn take_batch(
        &mut self,
        encoder: FrameEncoder,
        max: usize,
        mux: &mut Mux,
        close_now: bool,
    ) -> Batch {
        let mut items = std::mem::take(&mut self.spare);
        let mut transmit = Transmit::default();
        let mut size = 0;
        if !self.is_done() {
            items.extend(self.ack.take().map(Outgoing::Ack));
            items.extend(self.pong.take().map(Outgoing::Pong));
            items.extend(self.ping.take().map(Outgoing::Ping));
            while size < max {
                let Some(out) = mux.poll() else { break };
                size += ITEM_WIRE_OVERHEAD;
                items.push(match out {
                    Output::Control(frame) => Outgoing::Channel(frame),
                    Output::Piece(p) => {
                        size += p.chunk.len();
                        match (p.released, p.channel) {
                            (Some(cost), DEFAULT) => transmit.cost += cost,
                            (Some(cost), channel) => transmit.released.push((channel, cost)),
                            (None, _) => {}
                        }
                        Outgoing::Piece {
                            channel: p.channel,
                            piece: p.piece,
                            chunk: p.chunk,
                        }
                    }
                });
            }
            if size < max && (close_now || mux.is_drained()) {
                if let Some((item, cost)) = self.items.pop_front() {
                    transmit.cost += cost;
                    debug_assert!(matches!(item, Outgoing::Close { .. }));
                    items.push(item);
                    self.fin = true;
                    transmit.fin = true;
                }
            }
        }
        Batch {
            encoder,
            items,
            transmit,
        }
    }

    /// The batch is sealed (or failed): its sealer, and what it carried.
    pub fn return_batch(&mut self, batch: Batch) -> (FrameEncoder, Transmit) {
        let Batch {
            encoder,
            mut items,
            transmit,
        } = batch;
        items.clear();
        self.spare = items;
        (encoder, transmit)
    }
}

/// About what one item adds on the wire besides its payload (length prefix, header, tag): how
/// a batch's size is reckoned before it is sealed.
const ITEM_WIRE_OVERHEAD: usize = 32;

/// Frames taken from the outbox with the sealer, to seal where the caller likes (outside the
/// lock a threaded driver keeps the connection under).
pub struct Batch {
    encoder: FrameEncoder,
    items: Vec<Outgoing>,
    transmit: Transmit,
}

impl Batch {
    /// Seal the frames, in order, into `out`.
    pub fn seal(&mut self, out: &mut BytesMut) -> Result<()> {
        for item in self.items.drain(..) {
            self.encoder.encode_item(item, out)?;
        }
        Ok(())
    }

    pub fn transmit(&self) -> &Transmit {
        &self.transmit
    }
}
