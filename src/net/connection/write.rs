//! The writing side: the writer task, and the direct path that lets a sender write a lone small
//! message itself.
//!
//! Who may write is decided under the connection's lock: the writer task marks itself
//! `writing` while it has bytes in hand; the direct path writes only when it is not and nothing
//! is queued or left unwritten (so order is kept: everything sealed earlier is on the socket).
//! What the direct path cannot write at once stays in `unwritten` for the writer task.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;

use super::{Locked, Shared};
use crate::error::{Error, Result};

/// Bytes the writer seals before it writes (a whole 1 MiB message goes out in a few syscalls).
const WRITE_BATCH: usize = 256 * 1024;
/// Messages up to this size may be sealed and written by the sending thread itself; larger ones
/// always go to the writer task (sealing them would hold up the caller, e.g. an event loop).
const DIRECT_MAX: usize = 16 * 1024;
/// A message sent sooner than this after the previous one is part of a burst: it goes to the
/// writer task, which seals a burst into one write (one syscall for many small messages), where
/// the direct path would make a syscall per message. Request/response traffic, whose sends are
/// a round trip apart, stays on the direct path.
const BURST_GAP: Duration = Duration::from_micros(10);

/// What the writer task took to write.
// The batch carries the sealer (the large variant): one job exists at a time and moves twice
// per batch, where a box would allocate per batch.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// Frames to seal, then write.
    Batch(crate::core::connection::Batch),
    /// Bytes the direct path sealed and could not write, with their budget.
    Unwritten(BytesMut, usize),
}

impl Shared {
    /// Queue a message whose budget (`cost`) is held, or seal and write it at once when it is
    /// small, not part of a burst, and nothing is ahead of it. A refused message's budget is
    /// given back.
    pub(super) fn enqueue(&self, msg: Bytes, cost: usize) -> Result<()> {
        let now = Instant::now();
        let nanos = (now - self.started).as_nanos() as u64;
        let previous = self.last_send.swap(nanos, Relaxed);
        let burst = nanos.saturating_sub(previous) < BURST_GAP.as_nanos() as u64;
        let direct = !burst && msg.len() <= DIRECT_MAX;
        let mut failed = false;
        let sent = self.update(|st| {
            if !(direct && st.may_write_directly(msg.len())) {
                return st.conn.send(msg, cost, now).map(|()| 0);
            }
            let r = st.write_directly(msg, cost, now);
            self.stats.rekeys_sent.store(st.conn.rekeys_sent(), Relaxed);
            failed = r.is_err();
            r.map(|all| if all { cost } else { 0 })
        });
        match sent {
            Ok(written) => {
                // Written: it no longer counts against the send buffer.
                self.return_budget(written);
                Ok(())
            }
            Err(e) => {
                self.return_budget(cost);
                if failed {
                    // The socket or the sealer failed under the direct write: it is over.
                    self.cancel.cancel();
                    return Err(self.closed_error());
                }
                Err(e)
            }
        }
    }
}

impl Locked {
    fn may_write_directly(&self, len: usize) -> bool {
        !self.writing
            && self.unwritten.is_empty()
            && self.sock.is_some()
            && self.conn.can_seal_now(len)
    }

    /// Seal `msg` and write what the socket takes now; true when all of it went. What is left
    /// waits in `unwritten` for the writer task (`flushed` means written, not merely sealed).
    fn write_directly(&mut self, msg: Bytes, cost: usize, now: Instant) -> Result<bool> {
        if let Err(e) = self.conn.seal_now(msg, &mut self.unwritten, now) {
            self.unwritten.clear(); // whatever a failed seal left is not for the wire
            return Err(e);
        }
        let sock = self.sock.as_ref().expect("checked by may_write_directly");
        match try_write_out(sock, &mut self.unwritten) {
            Ok(()) if self.unwritten.is_empty() => Ok(true),
            Ok(()) => {
                self.unwritten_cost += cost;
                Ok(false)
            }
            Err(e) => {
                let e = Error::Io(e);
                self.conn.finish(e.to_close_info());
                Err(e)
            }
        }
    }
}

/// Write as much of `buf` as the socket takes now, without waiting.
fn try_write_out(sock: &OwnedWriteHalf, buf: &mut BytesMut) -> std::io::Result<()> {
    while !buf.is_empty() {
        match sock.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write all of `buf`, waiting for the socket as needed.
async fn write_all(sock: &OwnedWriteHalf, buf: &mut BytesMut) -> std::io::Result<()> {
    loop {
        try_write_out(sock, buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        sock.writable().await?;
    }
}

/// The writer task: woken by the doorbell, it takes what the core has to send, seals it
/// outside the lock, writes it, and gives the budget back. After our CLOSE it shuts the
/// stream down (FIN) and ends; it also ends when the connection ends (cancelled: that stops a
/// write stuck on a peer that no longer reads).
pub(super) async fn run(shared: Arc<Shared>, sock: Arc<OwnedWriteHalf>) {
    let cancel = shared.cancel.clone();
    let work = async {
        // One batch sealed: about WRITE_BATCH, or one message of ours (at most the peer's
        // announced limit) when a single message is larger; counted against the send budget.
        let mut out = BytesMut::new();
        loop {
            let job = {
                let mut st = shared.lock();
                st.next_job()
            };
            let Some(job) = job else {
                if shared.lock().conn.is_done_sending() {
                    return Ok(());
                }
                shared.doorbell.notified().await;
                continue;
            };
            let (cost, fin) = match job {
                Job::Unwritten(mut bytes, cost) => {
                    write_all(&sock, &mut bytes).await?;
                    (cost, false)
                }
                Job::Batch(mut batch) => {
                    out.clear();
                    let sealed = batch.seal(&mut out);
                    let t = shared.update(|st| {
                        let t = st.conn.end_transmit(batch, sealed);
                        shared
                            .stats
                            .rekeys_sent
                            .store(st.conn.rekeys_sent(), Relaxed);
                        if st.conn.is_silenced() {
                            out.clear(); // a frame failed authentication meanwhile: not a byte more
                        }
                        t
                    })?;
                    write_all(&sock, &mut out).await?;
                    shared.channel_budget(&t.released);
                    (t.cost, t.fin)
                }
            };
            shared.return_budget(cost);
            if fin {
                return Ok::<(), Error>(()); // CLOSE is our last frame; FIN tells the peer so
            }
        }
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = work => r,
    };
    // Dropping the last handle on the writing half sends FIN (the reader keeps the socket open
    // until it is done too). A failure is recorded in the same step: no send can be queued
    // (and reported sent) in between, for a writer that is gone.
    shared.update(|st| {
        st.sock = None;
        st.writing = false;
        st.unwritten = BytesMut::new();
        if let Err(e) = &result {
            st.conn.finish(e.to_close_info());
        }
        shared
            .stats
            .rekeys_sent
            .store(st.conn.rekeys_sent(), Relaxed);
    });
    drop(sock);
    if let Err(e) = result {
        shared.finish(e.to_close_info());
    }
}

impl Locked {
    /// What the writer task does next; None (and no longer `writing`) when nothing waits.
    fn next_job(&mut self) -> Option<Job> {
        if self.conn.is_silenced() {
            self.unwritten.clear(); // sealed before the failure, and not for the wire now
            self.writing = false;
            return None;
        }
        let job = if !self.unwritten.is_empty() {
            let bytes = std::mem::take(&mut self.unwritten);
            Some(Job::Unwritten(
                bytes,
                std::mem::take(&mut self.unwritten_cost),
            ))
        } else {
            self.conn.begin_transmit(WRITE_BATCH).map(Job::Batch)
        };
        self.writing = job.is_some();
        job
    }
}
