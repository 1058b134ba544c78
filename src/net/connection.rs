//! An authenticated connection: two tasks (reading, writing) and the handle the application uses.
//!
//! ```text
//!  application ── send ──▶ [byte budget] ─▶ channel ─▶ writer task ─▶ WriteSide(seal) ─▶ socket
//!       └─ small message, writer idle: sealed and written from the caller's thread ─┘
//!  application ◀─ recv ─── Mailbox (bytes-bounded) ◀── reader task ◀── FramedRead(open) ◀── socket
//! ```
//! The direct path saves a hand-off to the writer task (a thread wake-up) for each small message
//! sent while nothing else is waiting to be written: that hand-off dominated request/response
//! latency. Order is kept because both paths seal under one lock and the direct path is only
//! taken when no item is queued and no sealed byte is waiting.
//! The reader answers PING and CLOSE through the writer's channel. Either task ending in error
//! ends the connection: the outcome is recorded once, the other task is cancelled, pending
//! senders are woken, and received messages already queued still drain to the application.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::mailbox::{Mailbox, Wakeup};
use super::LinkConfig;
use crate::core::codec::{FrameDecoder, FrameEncoder, Outgoing};
use crate::core::handshake::{Established, NodeId};
use crate::core::message::Message;
use crate::core::session::{Event, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, Result};

/// Bytes the writer buffers before it writes (a whole 1 MiB message goes out in a few syscalls).
const WRITE_BATCH: usize = 256 * 1024;
/// What one queued item costs besides its payload: keeps a flood of empty messages bounded.
pub(crate) const ITEM_OVERHEAD: usize = 64;
/// Messages up to this size may be sealed and written by the sending thread itself; larger ones
/// always go to the writer task (sealing them would hold up the caller, e.g. an event loop).
const DIRECT_MAX: usize = 16 * 1024;
/// A message sent sooner than this after the previous one is part of a burst: it goes to the
/// writer task, which seals a burst into one write (one syscall for many small messages), where
/// the direct path would make a syscall per message. Request/response traffic, whose sends are
/// a round trip apart, stays on the direct path.
const BURST_GAP: Duration = Duration::from_micros(10);

pub type Reader = FramedRead<OwnedReadHalf, FrameDecoder>;
pub type Writer = FramedWrite<OwnedWriteHalf, FrameEncoder>;

/// Counters for `stats()`; application payload bytes, not wire bytes.
#[derive(Default, Debug)]
pub struct ConnStats {
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub rekeys_sent: AtomicU64,
    pub rekeys_received: AtomicU64,
}

#[derive(Default)]
struct CloseState {
    /// Our CLOSE frame (code, reason), once queued.
    sent: Option<(CloseCode, String)>,
    /// How the connection ended, once it has.
    outcome: Option<CloseInfo>,
}

struct Shared {
    config: LinkConfig,
    inbound: Mailbox<Message, CloseInfo>,
    /// Items for the writer task with their send-budget cost; `None` asks it to write out what
    /// the direct path left in the buffer.
    outbound: mpsc::UnboundedSender<(Option<Outgoing>, usize)>,
    /// Items sent into `outbound` and not yet sealed: the direct path waits for zero.
    queued: AtomicUsize,
    /// The sealing and writing end of the socket, shared by the writer task and the direct path.
    /// Never held across an await.
    write: Mutex<WriteSide>,
    /// When the last message was handed to `write_direct` (nanoseconds since `started`).
    last_send: AtomicU64,
    started: Instant,
    /// Bytes queued for the writer; senders wait here, which is what bounds memory.
    send_budget: Semaphore,
    /// One-shot wake-ups for senders waiting for room (see `Connection::arm_writable`), and how
    /// many there are (so that returning budget skips the lock when nobody waits).
    writers: Mutex<Vec<(u64, Wakeup)>>,
    writers_armed: AtomicUsize,
    close: Mutex<CloseState>,
    cancel: CancellationToken,
    finished: watch::Receiver<bool>,
    peer_max_message: u64,
    peer_node_id: NodeId,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    handshake_hash: [u8; 32],
    key_epoch: u32,
    stats: ConnStats,
    /// Acknowledged sessions: the ACK to send.
    ack: Coalesced,
    /// The PONG to send: one queued, echoing the latest PING.
    pong: Coalesced,
    /// Our keepalive PING: one queued, however long the peer leaves it unread.
    ping: Coalesced,
    /// What to do with the peer's ACKs.
    acks: Mutex<Acks>,
}

/// A reply the peer can ask for as often as it likes (ACK values to send, PONGs): at most one is
/// queued at a time, carrying whatever value is latest when the writer gets to it. This is what
/// bounds the replies to a peer that floods us and never reads: one queued item, whatever it
/// sends (HTTP/2's ping flood is the same attack against an unbounded reply queue).
#[derive(Default)]
struct Coalesced {
    value: AtomicU64,
    queued: AtomicBool,
}

impl Coalesced {
    /// Raise the value to send; true when no reply is queued (the caller queues one).
    ///
    /// SeqCst here and in `take`: each side writes one flag and then reads the other's. Weaker
    /// orderings let `take` read the value before its `queued = false` is seen (a store may pass
    /// a later load, on x86 too), while `offer`, still seeing a reply queued, queues none: the
    /// value offered would go out only with some later reply, if any.
    fn offer_max(&self, value: u64) -> bool {
        self.value.fetch_max(value, SeqCst);
        !self.queued.swap(true, SeqCst)
    }

    /// Replace the value to send (a PONG echoes the latest PING); as `offer_max` otherwise.
    fn offer(&self, value: u64) -> bool {
        self.value.store(value, SeqCst);
        !self.queued.swap(true, SeqCst)
    }

    /// The value for the queued reply the writer is sealing; from now on `offer` queues another.
    fn take(&self) -> u64 {
        self.queued.store(false, SeqCst);
        self.value.load(SeqCst)
    }
}

/// Where the peer's ACKs go.
enum Acks {
    /// Not a connection of an acknowledged session: an ACK breaks the protocol.
    Refused,
    /// A session's connection not yet attached by its link: the highest ACK so far waits.
    /// (Applied earlier, an ACK for messages the peer took from an older connection after it
    /// announced where this one starts would move the sender past that start.)
    Held(Option<u64>),
    Attached(AckHandler),
}

/// The socket's writing half, its sealer, and sealed bytes not yet written.
struct WriteSide {
    /// Taken (and so released) when the writer task ends: the connection's handles may live on.
    sock: Option<OwnedWriteHalf>,
    encoder: FrameEncoder,
    buf: BytesMut,
}

impl WriteSide {
    fn seal(&mut self, item: Outgoing) -> Result<()> {
        self.encoder.encode(item, &mut self.buf)
    }

    /// Write what the buffer holds; Ready(Ok) once it is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(sock) = self.sock.as_mut() else {
            return Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()));
        };
        while !self.buf.is_empty() {
            match Pin::new(&mut *sock).poll_write(cx, &self.buf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => self.buf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Write as much as the socket takes now, without waiting.
    fn try_write_out(&mut self) -> std::io::Result<()> {
        let Some(sock) = self.sock.as_ref() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        while !self.buf.is_empty() {
            match sock.try_write(&self.buf) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.buf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Called by the reading task with each ACK from the peer; an error ends the connection.
pub type AckHandler = Box<dyn Fn(u64) -> Result<()> + Send + Sync>;

/// How a freshly authenticated connection starts.
#[derive(Default)]
pub(crate) struct Start {
    /// Runs once when the connection has fully ended.
    pub on_done: Option<Box<dyn FnOnce() + Send>>,
    /// A connection of an acknowledged session: the peer's ACKs are held until
    /// [`Connection::attach_acks`].
    pub acknowledged: bool,
}

/// A handle to one authenticated connection. Cheap to clone; all clones are the same connection.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer_addr)
            .field("local", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Start the tasks of a freshly authenticated connection.
    pub(crate) fn spawn(
        reader: Reader,
        writer: Writer,
        est: &Established,
        key_epoch: u32,
        config: LinkConfig,
        start: Start,
    ) -> Result<Connection> {
        let Start {
            on_done,
            acknowledged,
        } = start;
        let peer_addr = reader.get_ref().peer_addr()?;
        let local_addr = reader.get_ref().local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = AtomicUsize::new(0);
        let parts = writer.into_parts();
        let write = Mutex::new(WriteSide {
            sock: Some(parts.io),
            encoder: parts.codec,
            buf: parts.write_buf,
        });
        let (finished_tx, finished_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            inbound: Mailbox::new(config.recv_buffer),
            outbound: tx,
            queued,
            write,
            last_send: AtomicU64::new(0),
            started: Instant::now(),
            send_budget: Semaphore::new(config.send_buffer),
            writers: Mutex::new(Vec::new()),
            writers_armed: AtomicUsize::new(0),
            close: Mutex::new(CloseState::default()),
            cancel: CancellationToken::new(),
            finished: finished_rx,
            peer_max_message: est.peer_max_message,
            peer_node_id: est.peer_node_id,
            peer_addr,
            local_addr,
            handshake_hash: est.handshake_hash,
            key_epoch,
            stats: ConnStats::default(),
            ack: Coalesced::default(),
            pong: Coalesced::default(),
            ping: Coalesced::default(),
            acks: Mutex::new(if acknowledged {
                Acks::Held(None)
            } else {
                Acks::Refused
            }),
            config,
        });
        let writer_task = tokio::spawn(write_loop(shared.clone(), rx));
        tokio::spawn(read_loop(
            shared.clone(),
            reader,
            writer_task,
            finished_tx,
            on_done,
        ));
        Ok(Connection { shared })
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer_addr
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn peer_node_id(&self) -> NodeId {
        self.shared.peer_node_id
    }

    /// The largest message the peer accepts (announced in the handshake).
    pub fn peer_max_message(&self) -> u64 {
        self.shared.peer_max_message
    }

    /// A public, unique name for this session (the Noise handshake hash).
    pub fn session_id(&self) -> [u8; 32] {
        self.shared.handshake_hash
    }

    /// The server key epoch this connection authenticated under.
    pub fn key_epoch(&self) -> u32 {
        self.shared.key_epoch
    }

    pub fn stats(&self) -> &ConnStats {
        &self.shared.stats
    }

    /// How the connection ended, if it has.
    pub fn outcome(&self) -> Option<CloseInfo> {
        self.shared.lock_close().outcome.clone()
    }

    /// True once close was requested or the connection ended.
    pub fn is_closing(&self) -> bool {
        let st = self.shared.lock_close();
        st.sent.is_some() || st.outcome.is_some()
    }

    fn check_sendable(&self, len: usize) -> Result<usize> {
        Sealer::check_len(self.shared.peer_max_message, len)?;
        closing_error(&self.shared.lock_close()).map_or(Ok(()), Err)?;
        Ok((len + ITEM_OVERHEAD).min(self.shared.config.send_buffer))
    }

    /// Queue a message whose send-budget permits are held. The check and the queueing happen
    /// under the close lock, so a message can never slip in behind a CLOSE (where the writer
    /// would drop it after `send` had reported success).
    fn enqueue(&self, msg: Bytes, cost: usize) -> Result<()> {
        let len = msg.len() as u64;
        let st = self.shared.lock_close();
        let refused = match closing_error(&st) {
            Some(e) => Some(e),
            None => match self.shared.write_direct(msg, cost) {
                Ok(None) => None,
                Ok(Some(msg)) => self
                    .shared
                    .queue(Outgoing::Message(msg), cost)
                    .then(|| self.shared.closed_error_locked(&st)),
                Err(e) => {
                    // The socket failed under the direct write: the connection is over.
                    drop(st);
                    self.shared.finish(e.to_close_info());
                    return Err(self.shared.closed_error());
                }
            },
        };
        drop(st);
        if let Some(err) = refused {
            self.shared.return_budget(cost);
            return Err(err);
        }
        self.shared.stats.messages_sent.fetch_add(1, Relaxed);
        self.shared.stats.bytes_sent.fetch_add(len, Relaxed);
        Ok(())
    }

    /// Queue a message if the send buffer has room now. `Ok(false)`: no room, nothing queued.
    pub fn try_send(&self, msg: Bytes) -> Result<bool> {
        let cost = self.check_sendable(msg.len())?;
        match self.shared.send_budget.try_acquire_many(cost as u32) {
            Ok(permit) => {
                permit.forget();
                self.enqueue(msg, cost).map(|()| true)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(false),
            Err(tokio::sync::TryAcquireError::Closed) => Err(self.shared.closed_error()),
        }
    }

    /// Queue a message, waiting for room in the send buffer. Cancel-safe: if the future is
    /// dropped before it completes, nothing was queued.
    pub async fn send(&self, msg: Bytes) -> Result<()> {
        let cost = self.check_sendable(msg.len())?;
        // Cancelled, the wait gives back what it was handed: see `WakeWriters`.
        let wake = WakeWriters(&self.shared);
        let permit = self
            .shared
            .send_budget
            .acquire_many(cost as u32)
            .await
            .map_err(|_| self.shared.closed_error())?;
        std::mem::forget(wake); // the permits stay taken
        permit.forget();
        self.enqueue(msg, cost)
    }

    /// Take the next received message; `Ok(None)` if none is queued yet. After the connection
    /// ended and every queued message was taken: `Err(Closed)`.
    pub fn try_recv(&self) -> Result<Option<Message>> {
        self.shared.inbound.try_pop().map_err(Error::Closed)
    }

    /// Resolves when `try_recv` has something to say. Cancel-safe; takes nothing.
    pub async fn readable(&self) {
        self.shared.inbound.readable().await
    }

    /// Call `wakeup` once, the next time `try_recv` may have something to say, unless it has
    /// already: then true, and nothing is registered. `key` names it for `disarm`.
    pub fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        self.shared.inbound.arm(key, wakeup)
    }

    /// Forget the wake-up registered under `key`.
    pub fn disarm(&self, key: u64) {
        self.shared.inbound.disarm(key);
    }

    pub async fn recv(&self) -> Result<Message> {
        self.shared.inbound.pop().await.map_err(Error::Closed)
    }

    /// Start the closing handshake without waiting: queued messages go first, then CLOSE.
    /// Returns false if the connection was already closing or closed.
    pub fn start_close(&self, code: CloseCode, reason: &str) -> bool {
        let mut st = self.shared.lock_close();
        if st.sent.is_some() || st.outcome.is_some() {
            return false;
        }
        let reason =
            crate::core::frame::truncate_utf8(reason, crate::core::frame::MAX_CLOSE_REASON);
        st.sent = Some((code, reason.to_owned()));
        let item = Outgoing::Close {
            code: code.0,
            reason: reason.to_owned(),
        };
        self.shared.queue(item, 0);
        drop(st);
        self.shared.wake_writers(); // their next try_send reports the close
        true
    }

    /// Close: flush what `send` accepted, send CLOSE, wait for the peer's CLOSE (at most the
    /// close timeout), then release the socket. Idempotent. Returns how the connection ended.
    pub async fn close(&self, code: CloseCode, reason: &str) -> CloseInfo {
        self.start_close(code, reason);
        if tokio::time::timeout(self.shared.config.close_timeout, self.wait_finished())
            .await
            .is_err()
        {
            self.shared.finish(CloseInfo::abnormal(
                "the peer did not complete the closing handshake within close_timeout",
            ));
            self.wait_finished().await;
        }
        self.outcome()
            .expect("finished connections have an outcome")
    }

    /// End the connection at once, without a closing handshake.
    pub fn abort(&self, reason: &str) {
        self.shared.finish(CloseInfo::abnormal(reason.to_owned()));
    }

    /// End the connection because of `err`, found outside its tasks (in the peer's answer to a
    /// session request, say): with our CLOSE first when the error has a code to send (the
    /// channel is intact), at once otherwise. Returns without waiting for the close.
    pub fn fail(&self, err: &Error) {
        match err.close_code_to_send() {
            Some(code) => {
                let (conn, reason) = (self.clone(), err.to_string());
                tokio::spawn(async move { conn.close(code, &reason).await });
            }
            None => self.abort(&err.to_string()),
        }
    }

    /// True when both handles are the same connection.
    pub fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Received messages waiting to be read.
    pub fn queued(&self) -> usize {
        self.shared.inbound.len()
    }

    pub fn is_finished(&self) -> bool {
        *self.shared.finished.borrow()
    }

    /// Resolves once both tasks have ended and the socket is released.
    pub async fn wait_finished(&self) {
        let mut rx = self.shared.finished.clone();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Wait until the send buffer has room for a message of `len` bytes (`try_send` may still
    /// find it full if another sender got there first). Returns at once on a closed connection.
    pub async fn writable(&self, len: usize) {
        let cost = (len + ITEM_OVERHEAD).min(self.shared.config.send_buffer);
        // Taking the permits and giving them straight back: this waits in the semaphore's fair
        // queue without keeping anything.
        let _wake = WakeWriters(&self.shared);
        let _ = self.shared.send_budget.acquire_many(cost as u32).await;
    }

    /// Call `wakeup` once, when the send buffer may have room for a message of `len` bytes
    /// (or the connection started closing), unless it has already: then true, and nothing is
    /// registered. `key` names it for `disarm_writable`.
    pub fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> bool {
        let cost = (len + ITEM_OVERHEAD).min(self.shared.config.send_buffer);
        {
            let mut w = self
                .shared
                .writers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            w.push((key, wakeup));
            self.shared.writers_armed.store(w.len(), Relaxed);
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let ready = self.shared.send_budget.available_permits() >= cost
            || self.shared.send_budget.is_closed()
            || self.is_closing();
        if ready {
            self.disarm_writable(key);
        }
        ready
    }

    /// Forget the wake-up registered under `key` by `arm_writable`.
    pub fn disarm_writable(&self, key: u64) {
        let mut w = self
            .shared
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        w.retain(|(k, _)| *k != key);
        self.shared.writers_armed.store(w.len(), Relaxed);
    }

    /// Wait until everything queued was written to the socket.
    pub async fn flushed(&self) {
        let all = self.shared.config.send_buffer as u32;
        let _wake = WakeWriters(&self.shared);
        let _ = self.shared.send_budget.acquire_many(all).await;
    }

    /// Acknowledged sessions: tell the peer every message below `next_expected` was delivered.
    /// Cheap to call per message: at most one ACK is queued at a time, carrying the latest value.
    pub fn ack(&self, next_expected: u64) {
        if self.shared.ack.offer_max(next_expected) {
            self.shared.queue(Outgoing::Ack(0), 0);
        }
    }

    /// Acknowledged sessions: from now on the peer's ACKs go to `handler`, starting with the
    /// highest one held so far. Called once the link attached this connection.
    pub fn attach_acks(&self, handler: AckHandler) -> Result<()> {
        let mut acks = self.shared.lock_acks();
        let held = match &*acks {
            Acks::Held(held) => *held,
            _ => {
                return Err(Error::config(
                    "not a connection waiting for its ACK handler",
                ))
            }
        };
        let applied = held.map_or(Ok(()), &handler);
        *acks = Acks::Attached(handler);
        applied
    }

    /// Queue a PING carrying `opaque` (at most one waits to be sent; a later call only
    /// updates its value). False when the connection's writer is gone.
    pub fn ping(&self, opaque: u64) -> bool {
        self.shared.queue_ping(opaque)
    }
}

/// Wakes the armed senders when dropped. A wait for send budget (`send`, `writable`,
/// `flushed`) is handed the budget that `return_budget` gives back while it waits, and the
/// armed senders rung then find no room; when the wait ends without keeping the permits
/// (`writable` and `flushed` give them straight back, a cancelled `send` gives back what it was
/// handed) they go back to the semaphore, not through `return_budget`: without this, nothing
/// would tell those senders. Declared before the wait, so dropped after it.
struct WakeWriters<'a>(&'a Shared);

impl Drop for WakeWriters<'_> {
    fn drop(&mut self) {
        self.0.wake_writers();
    }
}

/// Why nothing more may be sent, if that is so.
fn closing_error(st: &CloseState) -> Option<Error> {
    match (&st.outcome, &st.sent) {
        (Some(info), _) => Some(Error::Closed(info.clone())),
        (None, Some((code, reason))) => {
            Some(Error::Closed(CloseInfo::clean(*code, reason.clone())))
        }
        (None, None) => None,
    }
}

impl Shared {
    /// Give send budget back, and tell senders waiting for room.
    fn return_budget(&self, cost: usize) {
        self.send_budget.add_permits(cost);
        self.wake_writers();
    }

    /// Wake every armed sender: each tries again and arms again if there is still no room.
    fn wake_writers(&self) {
        // Pairs with the fence in `arm_writable`: either the sender sees the budget we returned
        // or we see its registration.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.writers_armed.load(Relaxed) == 0 {
            return;
        }
        let woken = {
            let mut w = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            self.writers_armed.store(0, Relaxed);
            std::mem::take(&mut *w)
        };
        for (_, wakeup) in woken {
            wakeup();
        }
    }

    /// Hand an item to the writer task. Returns true if the task is gone (the item is dropped).
    fn queue(&self, item: Outgoing, cost: usize) -> bool {
        self.queued.fetch_add(1, Relaxed);
        if self.outbound.send((Some(item), cost)).is_err() {
            self.queued.fetch_sub(1, Relaxed);
            return true;
        }
        false
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_write(&self) -> std::sync::MutexGuard<'_, WriteSide> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seal and write a small message from the caller's thread when the writer task has nothing
    /// to do; `Ok(Some(msg))` gives it back for the writer task otherwise. Called under the
    /// close lock (nothing can be queued behind a CLOSE). What the socket does not take at once
    /// stays in the buffer for the writer task, which is told to write it out.
    fn write_direct(&self, msg: Bytes, cost: usize) -> Result<Option<Bytes>> {
        let now = self.started.elapsed().as_nanos() as u64;
        let previous = self.last_send.swap(now, Relaxed);
        let burst = now.saturating_sub(previous) < BURST_GAP.as_nanos() as u64;
        if burst || msg.len() > DIRECT_MAX || self.queued.load(Relaxed) != 0 {
            return Ok(Some(msg));
        }
        // The writer task holds the lock only to seal and write, never across an await; busy
        // means it is working, and the message queues behind what it is doing.
        let Ok(mut w) = self.write.try_lock() else {
            return Ok(Some(msg));
        };
        // Checked again under the lock: the writer task decrements `queued` under it, so zero
        // here means every earlier item is sealed into the buffer (or written).
        if !w.buf.is_empty() || self.queued.load(Relaxed) != 0 || w.sock.is_none() {
            return Ok(Some(msg));
        }
        w.seal(Outgoing::Message(msg))?;
        self.stats
            .rekeys_sent
            .store(w.encoder.sealer.rekeys(), Relaxed);
        w.try_write_out()?;
        if w.buf.is_empty() {
            // Written: it no longer counts against the send buffer.
            self.return_budget(cost);
        } else {
            // The writer task writes the rest, then gives the budget back (`flushed` means
            // written, not merely sealed).
            drop(w);
            self.queued.fetch_add(1, Relaxed);
            let _ = self.outbound.send((None, cost));
        }
        Ok(None)
    }

    /// Queue our PING unless one is already waiting; false if the writer is gone.
    fn queue_ping(&self, opaque: u64) -> bool {
        !self.ping.offer(opaque) || !self.queue(Outgoing::Ping(0), 0)
    }

    /// A queued ACK, PONG or PING carries the latest value at the moment it is sealed.
    fn latest_reply(&self, item: Outgoing) -> Outgoing {
        match item {
            Outgoing::Ack(_) => Outgoing::Ack(self.ack.take()),
            Outgoing::Pong(_) => Outgoing::Pong(self.pong.take()),
            Outgoing::Ping(_) => Outgoing::Ping(self.ping.take()),
            other => other,
        }
    }

    fn closed_error_locked(&self, st: &CloseState) -> Error {
        closing_error(st).unwrap_or_else(|| Error::Closed(CloseInfo::abnormal("connection ended")))
    }

    fn lock_close(&self) -> std::sync::MutexGuard<'_, CloseState> {
        self.close.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self) -> Error {
        self.closed_error_locked(&self.lock_close())
    }

    /// Record how the connection ended (first call wins) and stop both tasks.
    fn finish(&self, info: CloseInfo) {
        {
            let mut st = self.lock_close();
            if st.outcome.is_none() {
                st.outcome = Some(info.clone());
            }
        }
        let info = self.lock_close().outcome.clone().expect("set above");
        self.inbound.end(info);
        self.send_budget.close();
        self.wake_writers();
        self.cancel.cancel();
    }

    /// The connection failed on the peer's account (`err`), with the channel still intact:
    /// record the outcome, tell the application at once, and queue a CLOSE with `code` as our
    /// last frame (unless we had sent one). True when the CLOSE was queued.
    fn fail_with_close(&self, code: CloseCode, err: &Error) -> bool {
        let info = err.to_close_info();
        let mut st = self.lock_close();
        if st.outcome.is_none() {
            st.outcome = Some(info.clone());
        }
        let queued = st.sent.is_none() && {
            let reason = crate::core::frame::truncate_utf8(
                &info.reason,
                crate::core::frame::MAX_CLOSE_REASON,
            )
            .to_owned();
            st.sent = Some((code, reason.clone()));
            !self.queue(
                Outgoing::Close {
                    code: code.0,
                    reason,
                },
                0,
            )
        };
        let info = st.outcome.clone().expect("set above");
        drop(st);
        self.inbound.end(info);
        self.send_budget.close();
        self.wake_writers();
        queued
    }

    /// The peer's CLOSE arrived: the outcome is clean, and names whoever closed first.
    fn peer_closed(&self, code: u16, reason: String) -> bool {
        let mut st = self.lock_close();
        let info = match &st.sent {
            Some((our_code, our_reason)) => CloseInfo::clean(*our_code, our_reason.clone()),
            None => CloseInfo::clean(CloseCode(code), reason.clone()),
        };
        let must_echo = st.sent.is_none();
        if must_echo {
            st.sent = Some((CloseCode(code), reason.clone()));
        }
        if st.outcome.is_none() {
            st.outcome = Some(info.clone());
        }
        if must_echo {
            // Under the lock, like every enqueue: nothing can be queued behind this CLOSE.
            self.queue(Outgoing::Close { code, reason }, 0);
        }
        drop(st);
        self.wake_writers(); // their next try_send reports the close
                             // No more messages can arrive: let readers drain and then see the close.
        self.inbound.end(info);
        must_echo
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(Option<Outgoing>, usize)>,
) {
    let cancel = shared.cancel.clone();
    let work = async {
        loop {
            let Some(first) = rx.recv().await else {
                return Ok(());
            };
            let mut closing = false;
            // The budget of what this batch seals, given back once it is written.
            let mut batch_cost = 0;
            {
                let mut w = shared.lock_write();
                let mut next = Some(first);
                // Seal everything already queued (up to a batch) before writing: few syscalls.
                while let Some((item, cost)) = next.take() {
                    if let Some(item) = item {
                        let item = shared.latest_reply(item);
                        closing = matches!(item, Outgoing::Close { .. });
                        let sealed = w.seal(item);
                        shared.queued.fetch_sub(1, Relaxed);
                        sealed?;
                    } else {
                        shared.queued.fetch_sub(1, Relaxed);
                    }
                    batch_cost += cost;
                    if closing || w.buf.len() >= WRITE_BATCH {
                        break;
                    }
                    next = rx.try_recv().ok();
                }
                shared
                    .stats
                    .rekeys_sent
                    .store(w.encoder.sealer.rekeys(), Relaxed);
            }
            poll_fn(|cx| shared.lock_write().poll_write_out(cx)).await?;
            shared.return_budget(batch_cost);
            if closing {
                // CLOSE is the last frame we send; FIN tells the peer nothing follows.
                let _ = poll_fn(|cx| match shared.lock_write().sock.as_mut() {
                    Some(sock) => Pin::new(sock).poll_shutdown(cx),
                    None => Poll::Ready(Ok(())),
                })
                .await;
                return Ok(());
            }
        }
    };
    // Cancellation also stops a flush stuck on a peer that no longer reads.
    let result: Result<()> = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = work => r,
    };
    let sock = {
        let mut w = shared.lock_write();
        shared
            .stats
            .rekeys_sent
            .store(w.encoder.sealer.rekeys(), Relaxed);
        w.buf = BytesMut::new();
        w.sock.take()
    };
    drop(sock); // with the reading half gone too, the socket is closed
    if let Err(e) = result {
        shared.finish(e.to_close_info());
    }
}

/// Keepalive and idle tracking for the reading task: PING after `ping_interval` of silence,
/// give up after `ping_timeout` of silence (a dead host sends no RST), close after
/// `idle_timeout` without application messages in either direction.
struct Liveness {
    ping_interval: Option<Duration>,
    ping_timeout: Duration,
    idle_timeout: Option<Duration>,
    ticker: Option<tokio::time::Interval>,
    last_heard: Instant,
    last_ping: Instant,
    pings: u64,
    traffic: (u64, u64),
    last_traffic: Instant,
    /// When the idle close began: without keepalive nothing else would notice a peer that
    /// never answers it.
    idle_close_since: Option<Instant>,
    close_timeout: Duration,
}

impl Liveness {
    fn new(config: &LinkConfig) -> Self {
        let period = [
            config.ping_interval,
            config.ping_interval.map(|_| config.ping_timeout / 4),
            config.idle_timeout.map(|d| d / 4),
        ]
        .into_iter()
        .flatten()
        .min();
        let ticker = period.map(|p| {
            let p = p.max(Duration::from_millis(10));
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let now = Instant::now();
        Liveness {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            idle_timeout: config.idle_timeout,
            ticker,
            last_heard: now,
            last_ping: now,
            pings: 0,
            traffic: (0, 0),
            last_traffic: now,
            idle_close_since: None,
            close_timeout: config.close_timeout,
        }
    }

    async fn tick(&mut self) {
        match &mut self.ticker {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Send a PING now (if keepalive is on).
    fn ping(&mut self, shared: &Shared) {
        if self.ping_interval.is_some() {
            self.pings += 1;
            shared.queue_ping(self.pings);
            self.last_ping = Instant::now();
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    fn check(&mut self, shared: &Arc<Shared>) -> Result<()> {
        if self
            .idle_close_since
            .is_some_and(|t| t.elapsed() >= self.close_timeout)
        {
            return Err(Error::Closed(CloseInfo::abnormal(
                "the peer did not complete the closing handshake within close_timeout",
            )));
        }
        if let Some(interval) = self.ping_interval {
            let silent = self.last_heard.elapsed();
            if silent >= self.ping_timeout {
                return Err(Error::Unresponsive(silent));
            }
            if silent >= interval && self.last_ping.elapsed() >= interval {
                self.ping(shared);
            }
        }
        if let Some(idle) = self.idle_timeout {
            let s = &shared.stats;
            let now = (
                s.messages_sent.load(Relaxed),
                s.messages_received.load(Relaxed),
            );
            if now != self.traffic {
                self.traffic = now;
                self.last_traffic = Instant::now();
            } else if self.last_traffic.elapsed() >= idle {
                let conn = Connection {
                    shared: shared.clone(),
                };
                conn.start_close(CloseCode::NORMAL, "idle timeout");
                self.idle_timeout = None;
                self.idle_close_since = Some(Instant::now());
            }
        }
        Ok(())
    }
}

async fn read_loop(
    shared: Arc<Shared>,
    mut reader: Reader,
    mut writer_task: tokio::task::JoinHandle<()>,
    finished: watch::Sender<bool>,
    on_done: Option<Box<dyn FnOnce() + Send>>,
) {
    let cancel = shared.cancel.clone();
    let mut liveness = Liveness::new(&shared.config);
    let outcome: Result<()> = async {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                event = reader.next() => event,
                _ = liveness.tick() => {
                    liveness.check(&shared)?;
                    continue;
                }
            };
            liveness.heard();
            let event = match event {
                None => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Some(event) => event?,
            };
            let rekeys = reader.decoder().opener.rekeys();
            shared.stats.rekeys_received.store(rekeys, Relaxed);
            match event {
                Event::Message(m) => {
                    let len = m.len();
                    let push = shared.inbound.push(m, len + ITEM_OVERHEAD);
                    tokio::pin!(push);
                    let pushed = loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            pushed = &mut push => break pushed,
                            // Not reading while the application catches up: keep the peer from
                            // declaring us dead (any frame from us counts as a sign of life).
                            _ = liveness.tick() => liveness.ping(&shared),
                        }
                    };
                    if pushed.is_err() {
                        return Ok(());
                    }
                    shared.stats.messages_received.fetch_add(1, Relaxed);
                    shared.stats.bytes_received.fetch_add(len as u64, Relaxed);
                    // Time spent waiting for the application to make room is not the peer's.
                    liveness.heard();
                }
                Event::Ping(v) => {
                    if shared.pong.offer(v) {
                        shared.queue(Outgoing::Pong(0), 0);
                    }
                }
                Event::Pong(_) => {}
                Event::Close { code, reason } => {
                    shared.peer_closed(code, reason);
                    return Ok(());
                }
                Event::Ack(next_expected) => match &mut *shared.lock_acks() {
                    Acks::Attached(handler) => handler(next_expected)?,
                    Acks::Held(held) => *held = (*held).max(Some(next_expected)),
                    Acks::Refused => {
                        return Err(Error::protocol("ACK outside an acknowledged session"))
                    }
                },
                Event::Confirmed(_) => return Err(Error::protocol("unexpected CONFIRM")),
                Event::Resume(_) => return Err(Error::protocol("unexpected RESUME")),
            }
        }
    }
    .await;
    shared
        .stats
        .rekeys_received
        .store(reader.decoder().opener.rekeys(), Relaxed);
    let writer_done = match outcome {
        Err(e) => match e.close_code_to_send() {
            // The peer broke the protocol over an intact channel: tell it why before the FIN,
            // within the close timeout (after a tag failure we send nothing: see `Error`).
            Some(code) if shared.fail_with_close(code, &e) => {
                let flushed =
                    tokio::time::timeout(shared.config.close_timeout, &mut writer_task).await;
                shared.finish(e.to_close_info());
                flushed.is_ok()
            }
            _ => {
                shared.finish(e.to_close_info());
                false
            }
        },
        Ok(()) => {
            // Orderly end: give the writer the close timeout to flush our CLOSE, then stop it.
            let flushed = tokio::time::timeout(shared.config.close_timeout, &mut writer_task).await;
            shared.finish(CloseInfo::abnormal("the writer did not finish in time"));
            flushed.is_ok()
        }
    };
    drop(reader);
    if !writer_done {
        let _ = writer_task.await;
    }
    let _ = finished.send(true);
    if let Some(f) = on_done {
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::Coalesced;
    use std::sync::atomic::{AtomicUsize, Ordering::Acquire, Ordering::Release};
    use std::time::{Duration, Instant};

    /// A value offered while an ACK is queued rides on that ACK: an `offer` that found one queued
    /// (and so queued none) is seen by the `take` that sealed it. Two threads race one offer
    /// against one take, round after round; a take that missed the value of an offer that
    /// queued nothing would leave that value unsent.
    #[test]
    fn an_offer_that_queues_nothing_is_taken_by_the_queued_ack() {
        const ROUNDS: usize = 200_000;
        let slot = Coalesced::default();
        let (started, offered) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let finished = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(3);
        let lost = std::thread::scope(|scope| {
            let offering = scope.spawn(|| {
                let mut queued_none = vec![false; ROUNDS];
                for round in 1..=ROUNDS {
                    wait_for(&finished, round - 1);
                    if Instant::now() > deadline {
                        started.store(usize::MAX, Release);
                        return (queued_none, round - 1);
                    }
                    started.store(round, Release);
                    queued_none[round - 1] = !slot.offer_max(round as u64);
                    offered.store(round, Release);
                }
                (queued_none, ROUNDS)
            });
            let mut taken = vec![0u64; ROUNDS];
            for round in 1..=ROUNDS {
                wait_for(&started, round);
                if started.load(Acquire) == usize::MAX {
                    break;
                }
                taken[round - 1] = slot.take();
                wait_for(&offered, round);
                // The next round starts with an ACK queued again.
                slot.offer_max(0);
                finished.store(round, Release);
            }
            let (queued_none, rounds) = offering.join().unwrap();
            (0..rounds)
                .filter(|&i| queued_none[i] && taken[i] < i as u64 + 1)
                .count()
        });
        assert_eq!(lost, 0, "ACK values offered and never sent");
    }

    /// Until `counter` is `value` (or `usize::MAX`: stop).
    fn wait_for(counter: &AtomicUsize, value: usize) {
        let mut spins = 0u32;
        loop {
            let now = counter.load(Acquire);
            if now == value || now == usize::MAX {
                return;
            }
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}
