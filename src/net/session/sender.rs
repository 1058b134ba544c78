//! The sending half of an acknowledged session, shared by a link and its connections: messages
//! wait in the [`Outbox`] until the peer acknowledges them, and are (re)transmitted, in order, on
//! whichever connection is current. `send` returns once the message is in the outbox: from then
//! on it is delivered exactly once, whatever happens to the connections, while both ends live.
//!
//! Transmission never blocks under the lock: it hands messages to the connection with
//! `try_send`; when the connection's send buffer is full, a small task (the pump) waits for room
//! and carries on.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::core::frame::SESSION_ID_LEN;
use crate::core::record::Sealer;
use crate::core::reliable::Outbox;
use crate::error::{Error, PeerMisbehaved, Result};
use crate::net::connection::Connection;

/// What one unacknowledged message costs besides its payload: the same as what it costs in the
/// receiver's queue, so a window counted here never overfills the peer's queue.
use crate::net::connection::ITEM_OVERHEAD as ENTRY_OVERHEAD;
use crate::net::lock;

struct SendState {
    outbox: Outbox,
    /// The connection messages are transmitted on (None before the first, and between them).
    conn: Option<Connection>,
}

enum Progress {
    /// Everything is transmitted, or there is no connection to transmit on.
    Idle,
    /// The connection's send buffer is full: wait for room for a message of this size.
    Blocked(Connection, usize),
}

pub struct ReliableSender {
    session_id: [u8; SESSION_ID_LEN],
    state: Mutex<SendState>,
    /// Bytes of unacknowledged messages allowed; `send` waits here.
    budget: Semaphore,
    /// The budget's size: our max_unacked, lowered to the peer's window once it is known.
    max_unacked: AtomicUsize,
    /// The window the peer announced first (it may not change within a session).
    peer_window: OnceLock<u32>,
    /// Wakes the pump: a message was pushed or a connection attached.
    wake: Notify,
    /// Wakes `flush`: the outbox emptied.
    emptied: Notify,
    stop: CancellationToken,
}

impl ReliableSender {
    pub fn new(session_id: [u8; SESSION_ID_LEN], max_unacked: usize) -> Arc<Self> {
        let sender = Arc::new(ReliableSender {
            session_id,
            state: Mutex::new(SendState {
                outbox: Outbox::default(),
                conn: None,
            }),
            budget: Semaphore::new(max_unacked),
            max_unacked: AtomicUsize::new(max_unacked),
            peer_window: OnceLock::new(),
            wake: Notify::new(),
            emptied: Notify::new(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(pump(sender.clone()));
        sender
    }

    pub fn session_id(&self) -> [u8; SESSION_ID_LEN] {
        self.session_id
    }

    fn lock(&self) -> MutexGuard<'_, SendState> {
        lock(&self.state)
    }

    fn cost(&self, len: usize) -> Result<usize> {
        if let Some(conn) = &self.lock().conn {
            Sealer::check_len(conn.peer_max_message(), len)?;
        }
        Ok((len + ENTRY_OVERHEAD).min(self.max_unacked.load(Relaxed)))
    }

    /// The peer holds at most `window` bytes of messages for its application: never have more
    /// than that unacknowledged, or its reader would stop reading and never see our ACKs (each
    /// side waiting for the other). Set before any message is sent; it may not change later.
    pub fn limit_window(&self, window: u32) -> Result<()> {
        if *self.peer_window.get_or_init(|| window) != window {
            return Err(Error::Protocol(PeerMisbehaved::WindowChanged));
        }
        let window = window as usize;
        let current = self.max_unacked.load(Relaxed);
        if window < current && self.lock().outbox.is_empty() {
            let taken = self.budget.forget_permits(current - window);
            self.max_unacked.fetch_sub(taken, Relaxed);
        }
        Ok(())
    }

    /// Keep the message until acknowledged if the budget has room now; `Ok(false)`: no room,
    /// nothing kept.
    pub fn try_send(&self, msg: Bytes) -> Result<bool> {
        let cost = self.cost(msg.len())?;
        match self.budget.try_acquire_many(cost as u32) {
            Ok(permit) => {
                permit.forget();
                self.push(msg, cost);
                Ok(true)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(false),
            Err(tokio::sync::TryAcquireError::Closed) => Err(self.ended()),
        }
    }

    /// Keep the message until acknowledged, waiting for room in the budget. Cancel-safe:
    /// nothing is kept unless this completes.
    pub async fn send(&self, msg: Bytes) -> Result<()> {
        let cost = self.cost(msg.len())?;
        let permit = self
            .budget
            .acquire_many(cost as u32)
            .await
            .map_err(|_| self.ended())?;
        permit.forget();
        self.push(msg, cost);
        Ok(())
    }

    fn ended(&self) -> Error {
        Error::Closed(crate::error::CloseInfo::abnormal("the session ended"))
    }

    fn push(&self, msg: Bytes, cost: usize) {
        let mut st = self.lock();
        st.outbox.push(msg, cost);
        let (progress, released) = transmit(&mut st);
        drop(st);
        self.released(released);
        if let Progress::Blocked(..) = progress {
            self.wake.notify_one();
        }
    }

    fn released(&self, cost: usize) {
        if cost > 0 {
            self.budget.add_permits(cost);
            if self.lock().outbox.is_empty() {
                self.emptied.notify_waiters();
            }
        }
    }

    /// The peer delivered every message below `next_expected`.
    pub fn acknowledged(&self, next_expected: u64) -> Result<()> {
        let mut st = self.lock();
        let released = st.outbox.ack(next_expected)?;
        let empty = st.outbox.is_empty();
        drop(st);
        self.budget.add_permits(released);
        if empty {
            self.emptied.notify_waiters();
        }
        Ok(())
    }

    /// Whether a new connection may start at `next_expected`: at least every acknowledged
    /// message, at most every message sent.
    pub fn can_resume_at(&self, next_expected: u64) -> bool {
        self.lock().outbox.can_resume_at(next_expected)
    }

    /// A new connection, on which the peer expects message `next_expected` first: forget what
    /// it acknowledged that way and retransmit the rest there.
    pub fn attach(&self, conn: Connection, next_expected: u64) -> Result<()> {
        let mut st = self.lock();
        let released = st.outbox.resume_at(next_expected)?;
        st.conn = Some(conn);
        let empty = st.outbox.is_empty();
        drop(st);
        self.budget.add_permits(released);
        if empty {
            self.emptied.notify_waiters();
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Messages not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.lock().outbox.len()
    }

    /// Resolves once every message kept so far was acknowledged.
    pub async fn flushed(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.lock().outbox.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// The session is over: wake and fail every waiting sender, stop the pump.
    pub fn end(&self) {
        self.budget.close();
        self.stop.cancel();
        self.lock().conn = None;
    }
}

/// Hand the connection every message it has not had yet, without waiting. Also returns the
/// cost of messages this released (acknowledged before they were handed over).
fn transmit(st: &mut SendState) -> (Progress, usize) {
    let Some(conn) = st.conn.clone() else {
        return (Progress::Idle, 0);
    };
    let mut released = 0;
    while let Some(msg) = st.outbox.next_to_transmit() {
        let len = msg.len();
        match conn.try_send(msg.clone()) {
            Ok(true) => released += st.outbox.mark_transmitted(),
            Ok(false) => return (Progress::Blocked(conn, len), released),
            // Ending: everything not acknowledged goes again on the next connection.
            Err(Error::Closed(_)) => return (Progress::Idle, released),
            Err(e) => {
                // The peer of this connection accepts smaller messages than an earlier one
                // did: this session cannot continue on it.
                conn.abort(&format!("cannot resend a message: {e}"));
                return (Progress::Idle, released);
            }
        }
    }
    (Progress::Idle, released)
}

/// Transmits what `push` and `attach` could not hand over at once.
/// Runs until the session ends (`end`).
async fn pump(sender: Arc<ReliableSender>) {
    let stop = sender.stop.clone();
    loop {
        let (progress, released) = transmit(&mut sender.lock());
        sender.released(released);
        let wake = async {
            let notified = sender.wake.notified();
            match progress {
                Progress::Idle => notified.await,
                Progress::Blocked(conn, len) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = conn.writable(len) => {}
                        // A dying connection's buffer never drains: wait for the next one.
                        _ = conn.wait_finished() => {}
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake => {}
        }
    }
}
