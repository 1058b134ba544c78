//! An authenticated connection driven over a TCP socket: the core state machine
//! ([`crate::core::connection::Connection`]) under one lock, a reading task, a writing task, and
//! the handle the application uses.
//!
//! ```text
//!  application ── send ──▶ [send budget] ─▶ core outbox ─▶ writer task ─▶ seal ─▶ socket
//!       └─ small message, writer idle: sealed and written from the caller's thread ─┘
//!  application ◀─ recv ─── Mailbox (bytes-bounded) ◀── reader task ◀── open ◀── socket
//!                                   time ─▶ reader task ─▶ core timers
//! ```
//! What the protocol decides (which frame answers which, when a PING is due, what a failure
//! tells the peer) is the core's; this module moves bytes, keeps the clock and bounds memory:
//! - [`write`]: the writer task, woken by a doorbell, seals a batch outside the lock and writes
//!   it; the direct path seals and writes a lone small message from the caller's thread (a
//!   hand-off to the writer, a thread wake-up, dominated request/response latency).
//! - [`read`]: the reader task opens frames outside the lock, hands them to the core, delivers
//!   messages into the mailbox (pausing when it is full), and runs the core's timers.
//!
//! Budgets: `send` takes the message's cost from the send budget (a semaphore) and it comes
//! back once the bytes are written; received messages are counted against the mailbox's
//! capacity; the core holds at most one reply of each kind.

mod channels;
mod read;
mod write;

pub use channels::{Channel, DIRS, FILES, REQUESTS, RESERVED};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::mailbox::{Mailbox, Wakeup};
use super::wake::WakeList;
use super::{lock, LinkConfig};
use crate::core::channel::{Mux, Role, DEFAULT};
use crate::core::codec::FrameDecoder;
use crate::core::connection::{self as core_conn, Timers};
use crate::core::handshake::{Established, Identity, NodeId};
use crate::core::message::Message;
use crate::core::record::{Opener, Sealer};
use crate::error::{CloseCode, CloseInfo, Error, Result};

/// What one queued item costs besides its payload: keeps a flood of empty messages bounded.
pub(crate) const ITEM_OVERHEAD: usize = 64;

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
    /// The identity the peer authenticated as (servers; a client's peer has none).
    pub peer_identity: Identity,
    /// The server's end of the connection (it opens even channel ids, the client odd ones).
    pub server: bool,
}

/// The connection's state behind its one lock. Never held across an await, nor while sealing
/// or opening more than one small message.
struct Locked {
    conn: core_conn::Connection,
    /// The writing half, shared with the writer task; gone once that task ended (the handle
    /// may outlive the socket).
    sock: Option<Arc<OwnedWriteHalf>>,
    /// The writer task has bytes in hand (a batch being sealed or written): nobody else writes.
    writing: bool,
    /// Bytes the direct path sealed and the socket did not take at once, and their budget:
    /// the writer task writes them before anything else. Bound: one sealed message of at most
    /// `DIRECT_MAX` (16 KiB), ours (the direct path runs only while this is empty).
    unwritten: BytesMut,
    unwritten_cost: usize,
    /// What the handles were told already (see [`Effects`]).
    told_closing: bool,
    told_outcome: bool,
}

/// What a change to the state asks of the world outside the lock.
#[derive(Default)]
struct Effects {
    /// The writer task has something to do.
    ring: bool,
    /// The connection began closing: senders waiting for room learn it.
    closing: bool,
    /// The connection ended: the mailbox ends.
    outcome: Option<CloseInfo>,
    /// Nothing more will be written (it failed): waiting senders fail at once. After a clean
    /// closing handshake they wait for `finish` instead, so `flushed` still means written.
    fail_senders: bool,
    /// Channel events the change made outside the reader (a channel freed when our FIN or
    /// RESET went out): the reader takes those of the frames it hands over itself.
    events: Vec<core_conn::Event>,
}

impl Locked {
    fn effects(&mut self) -> Effects {
        let pending = !self.unwritten.is_empty() && !self.conn.is_silenced();
        let mut fx = Effects {
            ring: !self.writing && (pending || self.conn.wants_transmit()),
            ..Effects::default()
        };
        while let Some(e) = self.conn.poll_event() {
            fx.events.push(e);
        }
        if !self.told_closing && self.conn.is_closing() {
            self.told_closing = true;
            fx.closing = true;
        }
        if !self.told_outcome {
            if let Some(info) = self.conn.outcome() {
                self.told_outcome = true;
                fx.fail_senders = !info.clean || self.conn.is_silenced();
                fx.outcome = Some(info.clone());
            }
        }
        fx
    }
}

struct Shared {
    config: LinkConfig,
    state: Mutex<Locked>,
    /// The default channel's received messages. Bound: its credit (the window we announced,
    /// `recv_buffer`, plus the one message per connection a window lets through beyond itself),
    /// so the reader never waits for room.
    inbound: Mailbox<Message, CloseInfo>,
    /// The channels with handles, by id (locked after `state` where both are).
    channels: Mutex<channels::Table>,
    /// Channels the peer opened, not yet accepted (see [`channels::Accepts`]). Bound: the
    /// peer's open channels, at most our `max_channels` (the core refuses more).
    accepts: channels::Accepts,
    /// Rung when a channel was freed (or the connection ended): openers waiting for room.
    channel_room: Notify,
    /// Rung when the writer task may have something to do (a permit is kept if it is busy).
    doorbell: Notify,
    /// Rung when a deadline may have moved earlier (a close began): the reader re-arms.
    timers: Notify,
    /// Bytes queued or written and not yet on the socket; senders wait here, which is what
    /// bounds memory.
    send_budget: Semaphore,
    /// One-shot wake-ups for senders waiting for room (see `Connection::arm_writable`).
    writers: WakeList,
    /// When the last message was sent (nanoseconds since `started`), to tell bursts.
    last_send: AtomicU64,
    started: Instant,
    /// Where the peer's ACKs go once attached. Locked before `state` where both are.
    ack_handler: Mutex<Option<AckHandler>>,
    cancel: CancellationToken,
    finished: watch::Receiver<bool>,
    peer_node_id: NodeId,
    peer_identity: Identity,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    handshake_hash: [u8; 32],
    key_epoch: u32,
    peer_max_message: u64,
    stats: ConnStats,
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

/// A freshly authenticated socket: its halves and the record layer the handshake left.
pub(crate) struct Socket {
    pub rd: OwnedReadHalf,
    pub wr: OwnedWriteHalf,
    pub opener: Opener,
    pub sealer: Sealer,
}

impl Connection {
    /// Start the tasks of a freshly authenticated connection.
    pub(crate) fn spawn(
        socket: Socket,
        est: &Established,
        key_epoch: u32,
        config: LinkConfig,
        start: Start,
    ) -> Result<Connection> {
        let Socket {
            rd,
            wr,
            opener,
            sealer,
        } = socket;
        let peer_addr = rd.peer_addr()?;
        let local_addr = rd.local_addr()?;
        let timers = Timers {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            idle_timeout: config.idle_timeout,
            close_timeout: config.close_timeout,
        };
        let now = Instant::now();
        let role = if start.server {
            Role::Server
        } else {
            Role::Client
        };
        let mux = Mux::new(role, config.channels(), est.peer_limits);
        let conn = core_conn::Connection::new(sealer, timers, start.acknowledged, mux, now);
        let sock = Arc::new(wr);
        let (finished_tx, finished_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(Locked {
                conn,
                sock: Some(sock.clone()),
                writing: false,
                unwritten: BytesMut::new(),
                unwritten_cost: 0,
                told_closing: false,
                told_outcome: false,
            }),
            inbound: Mailbox::new(usize::MAX),
            channels: Mutex::new(channels::Table::new()),
            accepts: channels::Accepts::new(),
            channel_room: Notify::new(),
            doorbell: Notify::new(),
            timers: Notify::new(),
            send_budget: Semaphore::new(config.send_buffer),
            writers: WakeList::default(),
            last_send: AtomicU64::new(0),
            started: now,
            ack_handler: Mutex::new(None),
            cancel: CancellationToken::new(),
            finished: finished_rx,
            peer_node_id: est.peer_node_id,
            peer_identity: start.peer_identity.clone(),
            peer_addr,
            local_addr,
            handshake_hash: est.handshake_hash,
            key_epoch,
            peer_max_message: est.peer_max_message,
            stats: ConnStats::default(),
            config,
        });
        let writer = tokio::spawn(write::run(shared.clone(), sock));
        let decoder = FrameDecoder { opener };
        tokio::spawn(read::run(
            shared.clone(),
            rd,
            decoder,
            writer,
            finished_tx,
            start.on_done,
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

    /// The identity the peer authenticated as (empty: anonymous, or this is a client).
    pub fn peer_identity(&self) -> &Identity {
        &self.shared.peer_identity
    }

    /// The largest message the peer accepts (announced in the handshake).
    pub fn peer_max_message(&self) -> u64 {
        self.shared.peer_max_message
    }

    /// How many channels this side and the peer each let the other have open (announced in
    /// the handshake); 0: none.
    pub fn max_channels(&self) -> (u32, u32) {
        let peer = self
            .shared
            .lock()
            .conn
            .channels()
            .peer_limits()
            .max_channels;
        (self.shared.config.max_channels, peer)
    }

    /// The Noise handshake hash: a public name unique to this connection (channel binding).
    pub fn handshake_hash(&self) -> [u8; 32] {
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
        self.shared.lock().conn.outcome().cloned()
    }

    /// True once close was requested or the connection ended.
    pub fn is_closing(&self) -> bool {
        self.shared.lock().conn.is_closing()
    }

    fn check_sendable(&self, len: usize) -> Result<usize> {
        Sealer::check_len(self.shared.peer_max_message, len)?;
        if let Some(e) = self.shared.lock().conn.closing_error() {
            return Err(e);
        }
        Ok(self.shared.cost(len))
    }

    /// Queue a message whose send budget is held. Checked and queued under the connection's
    /// lock, so a message can never slip in behind a CLOSE (where it would be dropped after
    /// `send` had reported success).
    fn enqueue(&self, msg: Bytes, cost: usize) -> Result<()> {
        let len = msg.len() as u64;
        self.shared.enqueue(msg, cost)?;
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
        // The credit goes back to the peer in batches, and at once when the queue empties.
        let step = (self.shared.config.recv_buffer / 8).max(1);
        let Some((message, credit)) = self.shared.inbound.try_take(step).map_err(Error::Closed)?
        else {
            return Ok(None);
        };
        if credit > 0 {
            let credit = credit as u64;
            self.shared
                .update(|st| st.conn.channels().consumed(DEFAULT, credit));
        }
        Ok(Some(message))
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
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            self.shared.inbound.readable().await;
        }
    }

    /// Start the closing handshake without waiting: queued messages go first, then CLOSE; the
    /// peer has the close timeout to answer. Returns false if the connection was already
    /// closing or closed.
    pub fn start_close(&self, code: CloseCode, reason: &str) -> bool {
        let now = Instant::now();
        let started = self.shared.update(|st| st.conn.close(code, reason, now));
        if started {
            self.shared.timers.notify_one(); // the close deadline is the earliest now
        }
        started
    }

    /// Close: flush what `send` accepted, send CLOSE, wait for the peer's CLOSE (at most the
    /// close timeout), then release the socket. Idempotent. Returns how the connection ended.
    pub async fn close(&self, code: CloseCode, reason: &str) -> CloseInfo {
        self.start_close(code, reason);
        self.wait_finished().await;
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
                self.start_close(code, &err.to_string());
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
        let cost = self.shared.cost(len);
        // Taking the permits and giving them straight back: this waits in the semaphore's fair
        // queue without keeping anything.
        let _wake = WakeWriters(&self.shared);
        let _ = self.shared.send_budget.acquire_many(cost as u32).await;
    }

    /// Call `wakeup` once, when the send buffer may have room for a message of `len` bytes
    /// (or the connection started closing), unless it has already: then true, and nothing is
    /// registered. `key` names it for `disarm_writable`.
    pub fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> bool {
        let cost = self.shared.cost(len);
        self.shared.writers.arm(key, wakeup);
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
        self.shared.writers.disarm(key);
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
        self.shared.update(|st| st.conn.ack(next_expected));
    }

    /// Acknowledged sessions: from now on the peer's ACKs go to `handler`, starting with the
    /// highest one held so far. Called once the link attached this connection.
    pub fn attach_acks(&self, handler: AckHandler) -> Result<()> {
        // The handler's lock first: an ACK the reader sees once the gate is open waits for the
        // handler to be in place, and so comes after the held one.
        let mut slot = lock(&self.shared.ack_handler);
        let held = self.shared.update(|st| st.conn.attach_acks())?;
        let applied = held.map_or(Ok(()), &handler);
        *slot = Some(handler);
        applied
    }

    /// Queue a PING carrying `opaque` (at most one waits to be sent; a later call only
    /// updates its value). False when nothing more is sent on this connection.
    pub fn ping(&self, opaque: u64) -> bool {
        self.shared.update(|st| {
            st.conn.ping(opaque);
            !st.conn.is_done_sending()
        })
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Locked> {
        lock(&self.state)
    }

    /// Change the state under the lock, then act on what the change asks for with the lock
    /// released: every change that can make work for someone else goes through here.
    fn update<R>(&self, f: impl FnOnce(&mut Locked) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        let fx = st.effects();
        drop(st);
        self.apply(fx);
        r
    }

    fn apply(&self, fx: Effects) {
        for event in fx.events {
            self.leftover_event(event);
        }
        if fx.ring {
            self.doorbell.notify_one();
        }
        if let Some(info) = fx.outcome {
            // No more messages arrive: readers drain what is queued, then see the end.
            self.end_channels(&info);
            self.inbound.end(info);
        }
        if fx.fail_senders {
            self.send_budget.close();
        }
        if fx.closing || fx.fail_senders {
            self.wake_writers(); // their next try_send reports the close
            self.channel_room.notify_waiters(); // and openers waiting for room
        }
    }

    /// What a message of `len` bytes counts against the send budget.
    fn cost(&self, len: usize) -> usize {
        (len + ITEM_OVERHEAD).min(self.config.send_buffer)
    }

    /// Give send budget back, and tell senders waiting for room.
    fn return_budget(&self, cost: usize) {
        if cost > 0 {
            self.send_budget.add_permits(cost);
            self.wake_writers();
        }
    }

    /// Wake every armed sender: each tries again and arms again if there is still no room.
    fn wake_writers(&self) {
        self.writers.wake_all();
    }

    fn closed_error(&self) -> Error {
        self.lock()
            .conn
            .closing_error()
            .unwrap_or_else(|| Error::Closed(CloseInfo::abnormal("connection ended")))
    }

    /// Record how the connection ended (first outcome wins) and stop both tasks.
    fn finish(&self, info: CloseInfo) {
        self.update(|st| {
            st.conn.finish(info);
        });
        self.send_budget.close();
        self.wake_writers();
        self.cancel.cancel();
    }
}
