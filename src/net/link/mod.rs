//! A link that outlives its connections.
//!
//! On the client, with a [`ReconnectPolicy`], it redials after a drop (full handshake every
//! time, exponential backoff with jitter), lets `send` wait while it does, and keeps `recv`
//! going across connections. A wrong password ends it: never retried.
//!
//! With acknowledged delivery ([`SessionConfig`]) the link carries one end of a session
//! ([`crate::net::session`]) across its connections: the client's dialed, the server's attached
//! by the server when its client resumes (see [`source`]). Both ends are the same code but for
//! where the next connection comes from.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::mailbox::Wakeup;
use super::session::Session;
use super::wake::WakeList;
use crate::core::message::Message;
use crate::core::reliable::{Delivered, Numbering};
use crate::error::{CloseCode, CloseInfo, Error, Result};
use crate::net::lock;

mod policy;
mod source;
mod supervise;

/// The logger the link's records go to (`argonlink.net.link` in Python), whichever file.
const LOG: &str = "argonlink::net::link";

pub use policy::ReconnectPolicy;
pub(crate) use source::window;
pub use source::Attached;
use source::Source;

/// What `recv` drains: the connections in order, and (sessions) what was delivered.
#[derive(Default)]
struct Reading {
    conns: VecDeque<(Connection, Numbering)>,
    delivered: Delivered,
}

#[derive(Clone)]
enum State {
    Connecting,
    Connected(Connection),
    /// Ended for good: the error every later call reports.
    Ended(Arc<Error>),
}

struct Shared {
    source: Source,
    session: Option<Session>,
    state: watch::Sender<State>,
    /// The connections `recv` drains, oldest first: one leaves once it ended and is empty.
    reading: Mutex<Reading>,
    /// The most recent connection, even after it ended (for its close code, stats, ...).
    latest: Mutex<Option<Connection>>,
    reconnects: AtomicU64,
    closing: AtomicBool,
    cancel: CancellationToken,
    close_timeout: Duration,
    /// Sessions: `close` was called with this code and reason; each connection from now on is
    /// closed with it until one closing handshake completes.
    close_request: watch::Sender<Option<(CloseCode, String)>>,
    /// One-shot wake-ups for a change of state (see [`Link::arm`]).
    armed: WakeList,
}

impl Shared {
    /// A new state, and a wake-up: the end, or a successor connection, is news for `recv`.
    fn set_state(&self, state: State) {
        // `send_replace`, not `send`: the value must be stored even when nobody is waiting.
        self.state.send_replace(state);
        self.armed.wake_all();
    }
}

/// A link to one peer across connections. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    fn start(
        source: Source,
        session: Option<Session>,
        close_timeout: Duration,
        on_end: Option<Box<dyn FnOnce() + Send>>,
    ) -> Link {
        let (state, _) = watch::channel(State::Connecting);
        let link = Link {
            shared: Arc::new(Shared {
                source,
                session,
                state,
                reading: Mutex::new(Reading::default()),
                latest: Mutex::new(None),
                reconnects: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                cancel: CancellationToken::new(),
                close_timeout,
                close_request: watch::channel(None).0,
                armed: WakeList::default(),
            }),
        };
        let shared = link.shared.clone();
        tokio::spawn(async move {
            supervise::supervise(&shared).await;
            if let Some(s) = &shared.session {
                s.end();
            }
            if let Some(f) = on_end {
                f();
            }
        });
        link
    }

    /// End at once: no flush, no reconnect; the current connection is aborted.
    pub fn abort(&self) {
        self.end_now();
        if let Some(conn) = self.current() {
            conn.abort("aborted by the application");
        }
    }

    /// End at once: no flush, no closing handshake for a session waiting for its client.
    pub(crate) fn end_now(&self) {
        self.shared.closing.store(true, Relaxed);
        self.shared.cancel.cancel();
    }

    /// Server side: whether a resuming client that expects message `peer_next_expected` next
    /// names a number this session can continue from (checked before RESUME answers it).
    pub(crate) fn can_resume_at(&self, peer_next_expected: u64) -> bool {
        self.shared
            .session
            .as_ref()
            .is_some_and(|s| s.can_resume_at(peer_next_expected))
    }

    /// Acknowledged sessions: the sequence number of the next message to deliver.
    pub(crate) fn next_expected(&self) -> u64 {
        self.lock_reading().delivered.next_expected()
    }

    /// True for a link with acknowledged delivery.
    pub fn is_session(&self) -> bool {
        self.shared.session.is_some()
    }

    /// Acknowledged sessions: resolves once every message sent so far was acknowledged; on a
    /// plain link, once the current connection wrote everything queued to its socket.
    pub async fn flush(&self) -> Result<()> {
        match &self.shared.session {
            Some(s) => {
                tokio::select! {
                    _ = s.flushed() => Ok(()),
                    e = self.wait_ended() => Err(e),
                }
            }
            None => {
                let conn = self.connected().await?;
                conn.flushed().await;
                Ok(())
            }
        }
    }

    /// Sessions: resent messages dropped because they had been delivered before.
    pub fn duplicates_dropped(&self) -> u64 {
        self.shared.session.as_ref().map_or(0, |s| s.duplicates())
    }

    /// Acknowledged sessions: messages sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.shared
            .session
            .as_ref()
            .map_or(0, |s| s.unacknowledged())
    }

    async fn wait_ended(&self) -> Error {
        let mut rx = self.shared.state.subscribe();
        loop {
            if let State::Ended(e) = &*rx.borrow_and_update() {
                return e.duplicate();
            }
            if rx.changed().await.is_err() {
                return Error::Closed(CloseInfo::abnormal("link dropped"));
            }
        }
    }

    /// How the link ended, once it has.
    pub fn ended(&self) -> Option<Error> {
        match &*self.shared.state.borrow() {
            State::Ended(e) => Some(e.duplicate()),
            _ => None,
        }
    }

    fn lock_reading(&self) -> std::sync::MutexGuard<'_, Reading> {
        lock(&self.shared.reading)
    }

    /// The current connection, waiting while (re)connecting.
    pub async fn connected(&self) -> Result<Connection> {
        let mut rx = self.shared.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                State::Connected(c) => return Ok(c.clone()),
                State::Ended(e) => return Err(e.duplicate()),
                State::Connecting => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed(CloseInfo::abnormal("link dropped")));
            }
        }
    }

    /// The current connection if there is one right now.
    pub fn current(&self) -> Option<Connection> {
        match &*self.shared.state.borrow() {
            State::Connected(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// The most recent connection, even if it has ended since.
    pub fn latest(&self) -> Option<Connection> {
        lock(&self.shared.latest).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Connections re-established after a drop.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Relaxed)
    }

    fn retrying(&self) -> bool {
        !self.shared.closing.load(Relaxed)
            && match &self.shared.source {
                Source::Dial { policy, .. } => policy.is_some(),
                Source::Accept { .. } => true,
            }
    }

    pub fn try_send(&self, msg: Bytes) -> Result<bool> {
        if let Some(s) = &self.shared.session {
            if let Some(e) = self.ended() {
                return Err(e);
            }
            return s.try_send(msg);
        }
        match &*self.shared.state.borrow() {
            State::Connected(c) => match c.try_send(msg) {
                Err(Error::Closed(_)) if self.retrying() => Ok(false),
                other => other,
            },
            State::Connecting => Ok(false),
            State::Ended(e) => Err(e.duplicate()),
        }
    }

    /// Send on the current connection, waiting through reconnects (the caller bounds the wait).
    pub async fn send(&self, msg: Bytes) -> Result<()> {
        if let Some(s) = &self.shared.session {
            if let Some(e) = self.ended() {
                return Err(e);
            }
            return tokio::select! {
                r = s.send(msg) => r,
                e = self.wait_ended() => Err(e),
            };
        }
        loop {
            let conn = self.connected().await?;
            match conn.send(msg.clone()).await {
                Err(Error::Closed(_)) if self.retrying() => {
                    // Not queued: wait for the next connection.
                    self.wait_replaced(&conn).await;
                }
                other => return other,
            }
        }
    }

    async fn wait_replaced(&self, old: &Connection) {
        let mut rx = self.shared.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                State::Connected(c) if !c.same(old) => return,
                State::Ended(_) => return,
                _ => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The next message: every connection is drained in turn, oldest first, so nothing that
    /// arrived on a connection is lost when a later one comes up before it was read. In a
    /// session, messages delivered before (resent after a reconnect) are skipped.
    pub fn try_recv(&self) -> Result<Option<Message>> {
        let mut reading = self.lock_reading();
        let Reading { conns, delivered } = &mut *reading;
        loop {
            let Some((conn, numbering)) = conns.front_mut() else {
                return self.ended_or_none();
            };
            let conn = conn.clone();
            match (conn.try_recv(), &self.shared.session) {
                (Ok(Some(m)), Some(session)) => {
                    if session.receive(delivered, numbering, &conn, self.current())? {
                        return Ok(Some(m));
                    }
                }
                // Drained and ended: move on to its successor, if one is up yet.
                (Err(Error::Closed(_)), _) if self.retrying() && conns.len() > 1 => {
                    conns.pop_front();
                }
                (Err(Error::Closed(_)), _) if self.retrying() => return self.ended_or_none(),
                (other, _) => return other,
            }
        }
    }

    fn ended_or_none(&self) -> Result<Option<Message>> {
        match &*self.shared.state.borrow() {
            State::Ended(e) => Err(e.duplicate()),
            _ => Ok(None),
        }
    }

    /// Resolves when `try_recv` has something to say. Cancel-safe; takes nothing.
    pub async fn readable(&self) {
        let mut rx = self.shared.state.subscribe();
        loop {
            rx.borrow_and_update();
            let (front, successors) = {
                let reading = self.lock_reading();
                (
                    reading.conns.front().map(|(c, _)| c.clone()),
                    reading.conns.len() > 1,
                )
            };
            match front {
                Some(c) if c.queued() > 0 => return,
                Some(c) if c.outcome().is_some() => {
                    // Drained and ended: that is news unless a successor is on its way.
                    if !self.retrying() || successors || self.is_ended() {
                        return;
                    }
                    let _ = rx.changed().await;
                }
                Some(c) => {
                    tokio::select! {
                        _ = c.readable() => {}
                        _ = rx.changed() => {}
                    }
                }
                None if self.is_ended() => return,
                None => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    /// True when `try_recv` has something to say now (what `readable` waits for).
    fn is_readable(&self) -> bool {
        let (front, successors) = {
            let reading = self.lock_reading();
            (
                reading.conns.front().map(|(c, _)| c.clone()),
                reading.conns.len() > 1,
            )
        };
        match front {
            Some(c) if c.queued() > 0 => true,
            Some(c) if c.outcome().is_some() => !self.retrying() || successors || self.is_ended(),
            Some(_) => false,
            None => self.is_ended(),
        }
    }

    /// Call `wakeup` once, the next time `try_recv` may have something to say (a message on the
    /// connection being read, a successor connection, the end), unless it has already: then
    /// true, and nothing stays registered. `key` names it for `disarm`.
    pub fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        self.shared.armed.arm(key, wakeup.clone());
        // The connection being read: its messages. (Its answer alone says nothing: drained and
        // ended, it is news only under the conditions `is_readable` checks.)
        if let Some((c, _)) = self.lock_reading().conns.front() {
            c.arm(key, self.through_connection(key, wakeup));
        }
        let ready = self.is_readable();
        if ready {
            self.disarm(key);
        }
        ready
    }

    /// Call `wakeup` once, when `try_send` of `len` bytes may succeed (room on the connection,
    /// a new connection, the end), unless it may already: then true, and nothing stays
    /// registered. Not for acknowledged sessions (an error). `key` names it for `disarm_writable`.
    pub fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> Result<bool> {
        if self.shared.session.is_some() {
            return Err(Error::Misuse(
                "arm_writable is not for acknowledged sessions",
            ));
        }
        // A change of state is news in any case.
        self.shared.armed.arm(key, wakeup.clone());
        let ready = match &*self.shared.state.borrow() {
            // A closing connection is news only once its successor is up (a state change):
            // meanwhile `try_send` says false, and answering true would make a busy loop.
            State::Connected(c) if c.is_closing() && self.retrying() => false,
            State::Connected(c) => c.arm_writable(key, len, self.through_connection(key, wakeup)),
            State::Connecting => false,
            State::Ended(_) => true,
        };
        if ready {
            self.disarm_writable(key);
        }
        Ok(ready)
    }

    /// `wakeup` for a connection to ring: rung, it is spent with the link too (the link's
    /// registration under `key` goes), or every wait that a connection ended would stay
    /// registered with the link until its next change of state.
    fn through_connection(&self, key: u64, wakeup: Wakeup) -> Wakeup {
        let shared = Arc::downgrade(&self.shared);
        Arc::new(move || {
            if let Some(shared) = shared.upgrade() {
                // A leaf lock: nothing else is taken while it is held.
                shared.armed.disarm(key);
            }
            wakeup();
        })
    }

    /// Forget the wake-up registered under `key` by `arm_writable`.
    pub fn disarm_writable(&self, key: u64) {
        self.shared.armed.disarm(key);
        if let Some(c) = self.current() {
            c.disarm_writable(key);
        }
    }

    /// Forget the wake-up registered under `key`.
    pub fn disarm(&self, key: u64) {
        self.shared.armed.disarm(key);
        for (conn, _) in self.lock_reading().conns.iter() {
            conn.disarm(key);
        }
    }

    fn is_ended(&self) -> bool {
        matches!(&*self.shared.state.borrow(), State::Ended(_))
    }

    pub async fn recv(&self) -> Result<Message> {
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            self.readable().await;
        }
    }

    /// Close for good: no more reconnects; the current connection does the closing handshake.
    /// A session first waits (at most the close timeout) for its messages to be acknowledged.
    pub async fn close(&self, code: CloseCode, reason: &str) {
        if self.shared.session.is_some() && !self.is_ended() {
            // Everything acknowledged first, then a closing handshake that completes: if the
            // connection drops during it, the link reconnects to close again (the peer's end of
            // the session would otherwise wait for a resume that never comes). Bounded by the
            // close timeout, twice over.
            let limit = self.shared.close_timeout;
            let _ = tokio::time::timeout(limit, self.flush()).await;
            self.shared
                .close_request
                .send_replace(Some((code, reason.to_owned())));
            if tokio::time::timeout(limit, self.wait_ended()).await.is_ok() {
                return;
            }
        }
        self.shared.closing.store(true, Relaxed);
        self.shared.cancel.cancel();
        if let Some(conn) = self.current() {
            conn.close(code, reason).await;
        }
    }
}
