//! Channels as the application holds them: a [`Channel`] handle per channel, the table the
//! reader delivers through, and the queue of channels the peer opened.
//!
//! The protocol (ids, counts, credit, which frame goes when) is the core's
//! ([`crate::core::channel`]); this module keeps each channel's queues and wake-ups:
//! - received messages wait in the channel's own mailbox, bounded by the credit the core
//!   granted (the reader never waits for room: a channel whose reader stops holds at most its
//!   window, and the connection keeps reading);
//! - `send` waits for room in the channel's own send budget (`send_buffer`), so a channel the
//!   peer gives no credit holds up its own senders, not the others';
//! - what the application takes is reported to the core in batches (an eighth of the initial
//!   window, or when the mailbox empties: a reader that keeps up never leaves credit unreported
//!   while the sender waits).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{Connection, Shared};
use crate::core::channel::{self, CANCELLED};
use crate::core::message::Message;
use crate::error::{CloseInfo, Error, Result};
use crate::net::lock;
use crate::net::mailbox::{Mailbox, Wakeup};
use crate::net::wake::WakeList;

/// The name of the channels requests travel on (PROTOCOL.md §10): the peer's channels of this
/// name wait in their own queue, never in the one `accept_channel` takes from.
pub const REQUESTS: &str = "argonlink.requests";
/// The name of the channels single files travel on (PROTOCOL.md §9).
pub const FILES: &str = "argonlink.file";
/// The name of the channels that announce a directory (PROTOCOL.md §9.9); its files travel on
/// channels named after it, which the receiver listens for while it receives it.
pub const DIRS: &str = "argonlink.dir";
/// Names starting with this are the library's own: the peer's channels of such a name wait in
/// the queue of that exact name, and are reset at once if this side does not listen for it.
pub const RESERVED: &str = "argonlink.";

type AcceptQueue = Mailbox<Arc<Slot>, CloseInfo>;

/// The channels the peer opened and nobody accepted yet, by queue. Bound: the peer's open
/// channels, at most our `max_channels` (the core refuses more); the reserved queues are the
/// three above plus those the application listens on (`Connection::listen`), never the peer's
/// choice.
pub(crate) struct Accepts {
    /// The application's channels: every name outside [`RESERVED`].
    apps: Arc<AcceptQueue>,
    reserved: std::sync::Mutex<HashMap<String, Arc<AcceptQueue>>>,
}

impl Accepts {
    pub(crate) fn new() -> Accepts {
        let queues = [REQUESTS, FILES, DIRS]
            .into_iter()
            .map(|name| (name.to_owned(), Arc::new(Mailbox::new(usize::MAX))))
            .collect();
        Accepts {
            apps: Arc::new(Mailbox::new(usize::MAX)),
            reserved: std::sync::Mutex::new(queues),
        }
    }

    /// The queue a channel of this name waits in ("" and every name outside [`RESERVED`]: the
    /// application's); None for a reserved name nobody listens for.
    fn find(&self, name: &str) -> Option<Arc<AcceptQueue>> {
        if name.starts_with(RESERVED) {
            lock(&self.reserved).get(name).cloned()
        } else {
            Some(self.apps.clone())
        }
    }

    fn all(&self) -> Vec<Arc<AcceptQueue>> {
        let mut all = vec![self.apps.clone()];
        all.extend(lock(&self.reserved).values().cloned());
        all
    }

    fn queue(&self, name: &str) -> Result<Arc<AcceptQueue>> {
        self.find(name)
            .ok_or_else(|| Error::config(format!("not listening for channels named {name:?}")))
    }
}

/// How a channel's receiving side ended.
#[derive(Clone, Debug)]
pub(crate) enum End {
    /// The peer finished it: every message it sent was delivered.
    Finished,
    Reset {
        code: u16,
        reason: String,
        by_peer: bool,
    },
    /// The connection ended.
    Closed(CloseInfo),
}

impl End {
    fn error(&self) -> Error {
        match self {
            End::Finished => Error::ChannelFinished,
            End::Reset {
                code,
                reason,
                by_peer,
            } => Error::ChannelReset {
                code: *code,
                reason: reason.clone(),
                by_peer: *by_peer,
            },
            End::Closed(info) => Error::Closed(info.clone()),
        }
    }
}

/// One channel's queues. The table holds it weakly: when the application drops the last
/// handle, the channel is abandoned (what was sent still goes, then FIN; anything the peer
/// still sends resets it: nobody reads it any more).
pub(crate) struct Slot {
    id: u32,
    name: String,
    /// Bound: the credit the core granted the channel (its window, plus the one message per
    /// connection a window lets through beyond itself).
    inbound: Mailbox<Message, End>,
    /// Bytes queued on the channel and not yet written (`send_buffer`).
    send_budget: Semaphore,
    send_buffer: usize,
    writers: WakeList,
    /// Why sending ended, once it has for a reason of the channel's own (a reset, or the
    /// connection's end); the receiving side may have ended earlier (the peer's FIN).
    send_end: std::sync::OnceLock<End>,
    /// Credit taken is reported to the core once this much adds up (or the queue empties).
    report_step: usize,
    shared: Weak<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let id = self.id;
            shared.update(|st| st.conn.channels().abandon(id));
        }
    }
}

/// The channels of one connection that have handles (or are waiting to be accepted).
pub(crate) type Table = HashMap<u32, Weak<Slot>>;

impl Shared {
    fn new_slot(self: &Arc<Self>, id: u32, name: String) -> Arc<Slot> {
        Arc::new(Slot {
            id,
            name,
            inbound: Mailbox::new(usize::MAX),
            send_budget: Semaphore::new(self.config.send_buffer),
            send_buffer: self.config.send_buffer,
            writers: WakeList::default(),
            send_end: std::sync::OnceLock::new(),
            report_step: (self.config.channel_window as usize / 8).max(1),
            shared: Arc::downgrade(self),
        })
    }

    fn slot(&self, id: u32) -> Option<Arc<Slot>> {
        lock(&self.channels).get(&id).and_then(Weak::upgrade)
    }

    /// What the reader does with a channel event. False: the connection ended meanwhile.
    pub(super) fn channel_event(self: &Arc<Self>, event: channel::Event) {
        match event {
            channel::Event::Opened { channel, name } => {
                let Some(queue) = self.accepts.find(&name) else {
                    // A reserved name this side does not listen for: nobody would ever take it.
                    let reason = "nobody here accepts channels of that name";
                    let _ = self.update(|st| st.conn.channels().reset(channel, CANCELLED, reason));
                    return;
                };
                let slot = self.new_slot(channel, name);
                lock(&self.channels).insert(channel, Arc::downgrade(&slot));
                if let Err((slot, _)) = queue.try_push(slot, 1) {
                    drop(slot); // the connection is ending: dropped, it resets
                }
            }
            channel::Event::Message {
                channel,
                message,
                credit,
            } => {
                // The handle may be gone (its reset is on its way): dropped, the credit moot.
                if let Some(slot) = self.slot(channel) {
                    let _ = slot.inbound.try_push(message, credit as usize);
                }
            }
            // Ended under the lock already (`end_channels_now`).
            channel::Event::Finished { .. } | channel::Event::Reset { .. } => {}
            // Out of the table and the accept queues already (`end_channels_now`).
            channel::Event::Freed { .. } => self.channel_room.notify_waiters(),
        }
    }

    /// A channel ended both ways: it leaves the table, and the accept queues if nobody took it
    /// yet (the peer opened and reset it: it is gone, and must not pile up there); openers
    /// waiting for room try again.
    fn freed(&self, channel: u32) {
        lock(&self.channels).remove(&channel);
        let unaccepted: Vec<_> = self
            .accepts
            .all()
            .iter()
            .flat_map(|queue| queue.take_where(|slot| slot.id == channel))
            .collect();
        self.channel_room.notify_waiters();
        drop(unaccepted); // no lock held: a slot's drop takes the connection's
    }

    /// Under the connection's lock: end the handles of the channels the peer finished or reset
    /// in `events`, and take the freed ones out of the table and the accept queues. The handles
    /// are pushed to `keep`, for the caller to drop once the lock is released (the last one's
    /// drop takes the lock).
    pub(super) fn end_channels_now(
        &self,
        events: &[crate::core::connection::Event],
        keep: &mut Vec<Arc<Slot>>,
    ) {
        use crate::core::connection::Event as E;
        for event in events {
            if let E::Channel(channel::Event::Freed { channel }) = event {
                // In the same step too: once the core forgot it, no accept finds it.
                lock(&self.channels).remove(channel);
                for queue in self.accepts.all() {
                    keep.extend(queue.take_where(|slot| slot.id == *channel));
                }
                continue;
            }
            let (id, end) = match event {
                E::Channel(channel::Event::Finished { channel }) => (*channel, End::Finished),
                E::Channel(channel::Event::Reset {
                    channel,
                    code,
                    reason,
                }) => (
                    *channel,
                    End::Reset {
                        code: *code,
                        reason: reason.clone(),
                        by_peer: true,
                    },
                ),
                _ => continue,
            };
            if let Some(slot) = self.slot(id) {
                match end {
                    End::Finished => slot.inbound.end(end),
                    end => slot.end_all(end),
                }
                keep.push(slot);
            }
        }
    }

    /// An event not made by a frame the reader handed over (see `Effects::events`): a
    /// channel freed by what we sent. Frames make the others, and the reader takes those.
    pub(super) fn leftover_event(&self, event: crate::core::connection::Event) {
        match event {
            crate::core::connection::Event::Channel(channel::Event::Freed { channel }) => {
                self.freed(channel)
            }
            other => debug_assert!(false, "only the reader's frames make {other:?}"),
        }
    }

    /// The connection ended: every channel ends with it. What arrived before the end stays
    /// readable (channels not yet accepted too), as on the default channel: a message that
    /// arrived is never lost to the application.
    pub(super) fn end_channels(&self, info: &CloseInfo) {
        let slots: Vec<Arc<Slot>> = lock(&self.channels)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for slot in &slots {
            slot.end_sending(End::Closed(info.clone()));
            slot.inbound.end(End::Closed(info.clone()));
        }
        for queue in self.accepts.all() {
            queue.end(info.clone());
        }
        self.channel_room.notify_waiters();
        drop(slots);
    }

    /// The writer wrote channel messages: their budget goes back to their channels.
    pub(super) fn channel_budget(&self, released: &[(u32, usize)]) {
        for &(id, cost) in released {
            if let Some(slot) = self.slot(id) {
                slot.send_budget.add_permits(cost);
                slot.writers.wake_all();
            }
        }
    }
}

impl Slot {
    /// A reset: nothing more is sent or read; what was queued either way is dropped.
    fn end_all(&self, end: End) {
        self.end_sending(end.clone());
        drop(self.inbound.end_and_drain(end));
    }

    fn end_sending(&self, end: End) {
        let _ = self.send_end.set(end);
        self.send_budget.close();
        self.writers.wake_all();
    }
}

/// One channel of a connection: an ordered stream of messages each way, with its own flow
/// control. Cheap to clone; when the last clone is dropped, what it sent still goes out, then
/// FIN, and anything the peer sends after that resets it (code 0).
#[derive(Clone)]
pub struct Channel {
    conn: Connection,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.slot.id)
            .field("name", &self.slot.name)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Open a channel if the peer's limit allows one more now; `Ok(None)` otherwise.
    pub fn try_open_channel(&self, name: &str) -> Result<Option<Channel>> {
        let shared = &self.shared;
        let opened = shared.update(|st| -> Result<Option<Arc<Slot>>> {
            let limit = st.conn.channels().peer_limits().max_channels;
            if limit == 0 {
                return Err(Error::ChannelLimit(0)); // waiting would be for ever
            }
            if !st.conn.channels().can_open() && st.conn.closing_error().is_none() {
                return Ok(None);
            }
            let id = st.conn.open_channel(name)?;
            // In the table before the OPEN can leave: the peer's first frame on it finds it.
            let slot = shared.new_slot(id, name.to_owned());
            lock(&shared.channels).insert(id, Arc::downgrade(&slot));
            Ok(Some(slot))
        })?;
        Ok(opened.map(|slot| Channel {
            conn: self.clone(),
            slot,
        }))
    }

    /// Open a channel, waiting while the peer's limit of open channels is reached.
    /// Cancel-safe: nothing is opened unless this completes.
    pub async fn open_channel(&self, name: &str) -> Result<Channel> {
        loop {
            let room = self.shared.channel_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(ch) = self.try_open_channel(name)? {
                return Ok(ch);
            }
            room.await;
        }
    }

    /// Listen for the peer's channels named `name` (one starting with [`RESERVED`]): from now
    /// on they wait in their own queue (`accept_channel(name)`) instead of being reset.
    pub fn listen(&self, name: &str) -> Result<()> {
        if !name.starts_with(RESERVED) || name.len() > 255 {
            return Err(Error::config(format!(
                "only names starting with {RESERVED:?} have queues of their own"
            )));
        }
        // Under the connection's lock (taken before the queues', as everywhere): either the
        // end has not come yet, and `end_channels` will find the new queue, or it has.
        let st = self.shared.lock();
        let mut reserved = lock(&self.shared.accepts.reserved);
        let queue = reserved
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Mailbox::new(usize::MAX)));
        if let Some(info) = st.conn.outcome() {
            queue.end(info.clone());
        }
        Ok(())
    }

    /// Stop listening for channels named `name`: those still waiting are reset, later ones
    /// are reset at once.
    pub fn unlisten(&self, name: &str) {
        let queue = lock(&self.shared.accepts.reserved).remove(name);
        let Some(queue) = queue else { return };
        let waiting = queue.take_where(|_| true);
        let reason = "nobody here accepts channels of that name any more";
        self.shared.update(|st| {
            for slot in &waiting {
                if st.conn.channels().reset(slot.id, CANCELLED, reason).is_ok() {
                    slot.end_all(End::Reset {
                        code: CANCELLED,
                        reason: reason.to_owned(),
                        by_peer: false,
                    });
                }
            }
        });
        drop(waiting); // no lock held: a slot's drop takes the connection's
    }

    /// The next channel the peer opened onto the queue `queue` ("": the application's), if
    /// one waits. After the connection ended and every waiting channel was taken:
    /// `Err(Closed)`.
    pub fn try_accept_channel(&self, queue: &str) -> Result<Option<Channel>> {
        let slot = self
            .shared
            .accepts
            .queue(queue)?
            .try_pop()
            .map_err(Error::Closed)?;
        Ok(slot.map(|slot| Channel {
            conn: self.clone(),
            slot,
        }))
    }

    pub async fn accept_channel(&self, queue: &str) -> Result<Channel> {
        let slot = self
            .shared
            .accepts
            .queue(queue)?
            .pop()
            .await
            .map_err(Error::Closed)?;
        Ok(Channel {
            conn: self.clone(),
            slot,
        })
    }

    /// Call `wakeup` once, when `try_accept_channel(queue)` may have something to say.
    pub fn arm_accept(&self, queue: &str, key: u64, wakeup: Wakeup) -> Result<bool> {
        Ok(self.shared.accepts.queue(queue)?.arm(key, wakeup))
    }

    pub fn disarm_accept(&self, queue: &str, key: u64) {
        if let Some(queue) = self.shared.accepts.find(queue) {
            queue.disarm(key);
        }
    }

    /// Resolves when `try_accept_channel(queue)` has something to say. Cancel-safe.
    pub async fn acceptable(&self, queue: &str) -> Result<()> {
        self.shared.accepts.queue(queue)?.readable().await;
        Ok(())
    }

    /// Channels open on this connection now (the default one not counted).
    pub fn open_channels(&self) -> usize {
        self.shared.lock().conn.channels().open_channels()
    }
}

impl Channel {
    pub fn id(&self) -> u32 {
        self.slot.id
    }

    /// The name the opener gave it (may be empty).
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn cost(&self, len: usize) -> usize {
        (len + super::ITEM_OVERHEAD).min(self.slot.send_buffer)
    }

    fn ended_error(&self) -> Error {
        if let Some(end) = self.slot.send_end.get() {
            return end.error();
        }
        match self.slot.inbound.ended() {
            Some(End::Finished) | None => self
                .conn
                .shared
                .lock()
                .conn
                .closing_error()
                .unwrap_or(Error::ChannelClosed),
            Some(end) => end.error(),
        }
    }

    /// Queue a message whose budget is held; a refused one gives it back.
    fn enqueue(&self, msg: Bytes, cost: usize) -> Result<()> {
        let now = Instant::now();
        let id = self.slot.id;
        let queued = self
            .conn
            .shared
            .update(|st| st.conn.send_on(id, msg, cost, now));
        match queued {
            Ok(()) => Ok(()),
            Err(e) => {
                self.slot.send_budget.add_permits(cost);
                match (e, self.slot.send_end.get()) {
                    // The core forgot a channel that ended: the handle knows how.
                    (Error::ChannelClosed, Some(end)) => Err(end.error()),
                    (e, _) => Err(e),
                }
            }
        }
    }

    /// Queue a message if the channel's send buffer has room now; `Ok(false)` otherwise.
    pub fn try_send(&self, msg: Bytes) -> Result<bool> {
        crate::core::record::Sealer::check_len(self.conn.peer_max_message(), msg.len())?;
        let cost = self.cost(msg.len());
        match self.slot.send_budget.try_acquire_many(cost as u32) {
            Ok(permit) => {
                permit.forget();
                self.enqueue(msg, cost).map(|()| true)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(false),
            Err(tokio::sync::TryAcquireError::Closed) => Err(self.ended_error()),
        }
    }

    /// Queue a message, waiting for room in the channel's send buffer. Cancel-safe.
    pub async fn send(&self, msg: Bytes) -> Result<()> {
        crate::core::record::Sealer::check_len(self.conn.peer_max_message(), msg.len())?;
        let cost = self.cost(msg.len());
        let permit = self
            .slot
            .send_budget
            .acquire_many(cost as u32)
            .await
            .map_err(|_| self.ended_error())?;
        permit.forget();
        self.enqueue(msg, cost)
    }

    /// Take the next message; `Ok(None)` if none is queued. After the peer finished the
    /// channel and every message was taken: `Err(ChannelFinished)`; after a reset or the
    /// connection's end, that error.
    pub fn try_recv(&self) -> Result<Option<Message>> {
        let slot = &self.slot;
        let taken = slot.inbound.try_take(slot.report_step);
        let Some((message, credit)) = taken.map_err(|e| e.error())? else {
            return Ok(None);
        };
        if credit > 0 {
            let (id, credit) = (slot.id, credit as u64);
            self.conn
                .shared
                .update(|st| st.conn.channels().consumed(id, credit));
        }
        Ok(Some(message))
    }

    pub async fn recv(&self) -> Result<Message> {
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            self.slot.inbound.readable().await;
        }
    }

    /// Resolves when `try_recv` has something to say. Cancel-safe; takes nothing.
    pub async fn readable(&self) {
        self.slot.inbound.readable().await
    }

    pub fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        self.slot.inbound.arm(key, wakeup)
    }

    pub fn disarm(&self, key: u64) {
        self.slot.inbound.disarm(key);
    }

    /// Call `wakeup` once, when the channel's send buffer may have room for `len` bytes.
    pub fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> bool {
        let cost = self.cost(len);
        self.slot.writers.arm(key, wakeup);
        let ready =
            self.slot.send_budget.available_permits() >= cost || self.slot.send_budget.is_closed();
        if ready {
            self.slot.writers.disarm(key);
        }
        ready
    }

    pub fn disarm_writable(&self, key: u64) {
        self.slot.writers.disarm(key);
    }

    /// Half-close: no more messages from us (FIN goes after what is queued); the peer may
    /// still send, and we still receive.
    pub fn finish(&self) -> Result<()> {
        let id = self.slot.id;
        self.conn.shared.update(|st| st.conn.channels().finish(id))
    }

    /// Abandon the channel both ways: what is queued is dropped, what arrives is dropped, the
    /// peer is told with RESET `code` (0, or 1000–65535).
    pub fn reset(&self, code: u16, reason: &str) -> Result<()> {
        if code != CANCELLED && code < crate::core::frame::MIN_APPLICATION_RESET_CODE {
            return Err(Error::config(format!(
                "reset code {code} is reserved; use 0 or 1000-65535"
            )));
        }
        let id = self.slot.id;
        let slot = &self.slot;
        self.conn.shared.update(|st| {
            st.conn.channels().reset(id, code, reason)?;
            // Under the lock: the handle ends as reset by us before the reader can see the
            // peer's answering RESET (which would end it as reset by the peer).
            slot.end_all(End::Reset {
                code,
                reason: reason.to_owned(),
                by_peer: false,
            });
            Ok(())
        })
    }

    /// Resolves once everything queued on the channel was written to the socket.
    pub async fn flushed(&self) {
        let all = self.slot.send_buffer as u32;
        let _ = self.slot.send_budget.acquire_many(all).await;
        self.slot.writers.wake_all();
    }

    /// Orderly close: finish (if not yet), then wait, at most the close timeout, for the
    /// peer to finish too, dropping what it still sends; a peer that does not is reset.
    pub async fn close(&self) -> Result<()> {
        match self.finish() {
            Ok(()) | Err(Error::ChannelClosed) => {}
            Err(e) => return Err(e),
        }
        let drain = async {
            loop {
                match self.recv().await {
                    Ok(_) => continue,
                    Err(Error::ChannelFinished) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        let timeout = self.conn.shared.config.close_timeout;
        match tokio::time::timeout(timeout, drain).await {
            Ok(Err(Error::ChannelReset { by_peer: false, .. })) => Ok(()),
            Ok(r) => r,
            Err(_) => self.reset(CANCELLED, "the peer did not finish within close_timeout"),
        }
    }

    /// How the channel ended, if it has: reset (by either side), or with its connection. A
    /// channel the peer only finished has not ended (we may still send).
    pub fn ended(&self) -> Option<Error> {
        if let Some(end) = self.slot.send_end.get() {
            return Some(end.error());
        }
        match self.slot.inbound.ended()? {
            End::Finished => {
                let over = self
                    .conn
                    .shared
                    .lock()
                    .conn
                    .outcome()
                    .map(|info| Error::Closed(info.clone()));
                over.or_else(|| {
                    self.slot
                        .send_budget
                        .is_closed()
                        .then_some(Error::ChannelClosed)
                })
            }
            end => Some(end.error()),
        }
    }

    /// Messages received and not yet taken.
    pub fn queued(&self) -> usize {
        self.slot.inbound.len()
    }
}
