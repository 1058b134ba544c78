//! A client link that outlives its connections: with a [`ReconnectPolicy`] it redials after a
//! drop (full handshake every time, exponential backoff with jitter), lets `send` wait while it
//! does, and keeps `recv` going across connections. A wrong password ends it: never retried.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::{connect, ClientConfig, Credentials};
use super::connection::Connection;
use crate::core::message::Message;
use crate::error::{CloseCode, CloseInfo, Error, Result};

/// How to redial. Delays grow from `initial_delay` by `multiplier` up to `max_delay`, each
/// multiplied by a random factor in [1 - jitter, 1 + jitter].
#[derive(Clone, Debug)]
pub struct ReconnectPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    pub jitter: f64,
    /// Failed dials in a row before giving up (None: never give up).
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.initial_delay > self.max_delay
            || self.multiplier < 1.0
            || !(0.0..=1.0).contains(&self.jitter)
        {
            return Err(Error::config(
                "reconnect: need initial_delay <= max_delay, multiplier >= 1, 0 <= jitter <= 1",
            ));
        }
        Ok(())
    }

    /// The delay before redial number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial_delay.as_secs_f64()
            * self
                .multiplier
                .powi(attempt.saturating_sub(1).min(64) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        let factor = 1.0 + self.jitter * (rand::rng().random::<f64>() * 2.0 - 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

#[derive(Clone)]
enum State {
    Connecting,
    Connected(Connection),
    /// Ended for good: the error every later call reports.
    Ended(Arc<Error>),
}

struct Shared {
    host: String,
    port: u16,
    credentials: RwLock<Arc<Credentials>>,
    config: ClientConfig,
    policy: Option<ReconnectPolicy>,
    state: watch::Sender<State>,
    /// The connections `recv` drains, oldest first: one leaves once it ended and is empty.
    reading: Mutex<VecDeque<Connection>>,
    /// The most recent connection, even after it ended (for its close code, stats, ...).
    latest: Mutex<Option<Connection>>,
    epoch_hint: AtomicU32,
    reconnects: AtomicU64,
    closing: AtomicBool,
    cancel: CancellationToken,
}

/// A client's link to one server. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    /// Start dialing; resolves once the first connection is up (or the link failed for good).
    pub async fn open(
        host: &str,
        port: u16,
        credentials: Arc<Credentials>,
        config: ClientConfig,
        policy: Option<ReconnectPolicy>,
    ) -> Result<Link> {
        config.link.validate()?;
        if let Some(p) = &policy {
            p.validate()?;
        }
        let (state, _) = watch::channel(State::Connecting);
        let link = Link {
            shared: Arc::new(Shared {
                host: host.to_owned(),
                port,
                credentials: RwLock::new(credentials),
                config,
                policy,
                state,
                reading: Mutex::new(VecDeque::new()),
                latest: Mutex::new(None),
                epoch_hint: AtomicU32::new(0),
                reconnects: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                cancel: CancellationToken::new(),
            }),
        };
        tokio::spawn(supervise(link.shared.clone()));
        match link.connected().await {
            Ok(_) => Ok(link),
            // The handshake succeeded but the connection already ended (the peer hung up at
            // once): opening worked; its end is reported by the next send or recv.
            Err(_) if link.latest().is_some() => Ok(link),
            Err(e) => Err(e),
        }
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
        self.shared
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Connections re-established after a drop.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Relaxed)
    }

    /// Use this password for every later handshake (the current connection is unaffected).
    pub fn set_credentials(&self, credentials: Arc<Credentials>) {
        *self
            .shared
            .credentials
            .write()
            .unwrap_or_else(|e| e.into_inner()) = credentials;
    }

    pub fn credentials(&self) -> Arc<Credentials> {
        self.shared
            .credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn retrying(&self) -> bool {
        self.shared.policy.is_some() && !self.shared.closing.load(Relaxed)
    }

    pub fn try_send(&self, msg: Bytes) -> Result<bool> {
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
    /// arrived on a connection is lost when a later one comes up before it was read.
    pub fn try_recv(&self) -> Result<Option<Message>> {
        let mut reading = self
            .shared
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            let Some(conn) = reading.front().cloned() else {
                return self.ended_or_none();
            };
            match conn.try_recv() {
                // Drained and ended: move on to its successor, if one is up yet.
                Err(Error::Closed(_)) if self.retrying() && reading.len() > 1 => {
                    reading.pop_front();
                }
                Err(Error::Closed(_)) if self.retrying() => return self.ended_or_none(),
                other => return other,
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
                let reading = self
                    .shared
                    .reading
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                (reading.front().cloned(), reading.len() > 1)
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
    pub async fn close(&self, code: CloseCode, reason: &str) {
        self.shared.closing.store(true, Relaxed);
        self.shared.cancel.cancel();
        if let Some(conn) = self.current() {
            conn.close(code, reason).await;
        }
    }
}

async fn supervise(shared: Arc<Shared>) {
    let mut failures = 0u32;
    // `send_replace`, not `send`: the value must be stored even when nobody is waiting.
    let end = |e: Error| {
        shared.state.send_replace(State::Ended(Arc::new(e)));
    };
    loop {
        let credentials = shared
            .credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let hint = shared.epoch_hint.load(Relaxed);
        let dial = connect(
            &shared.host,
            shared.port,
            &credentials,
            &shared.config,
            hint,
        );
        let result = tokio::select! {
            _ = shared.cancel.cancelled() => {
                return end(Error::Closed(CloseInfo::clean(CloseCode::NORMAL, "client closed")));
            }
            r = dial => r,
        };
        match result {
            Ok(conn) => {
                failures = 0;
                shared.epoch_hint.store(conn.key_epoch(), Relaxed);
                {
                    // `recv` reaches it once every earlier connection is drained.
                    let mut reading = shared.reading.lock().unwrap_or_else(|e| e.into_inner());
                    reading.push_back(conn.clone());
                }
                *shared.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                shared.state.send_replace(State::Connected(conn.clone()));
                tokio::select! {
                    _ = conn.wait_finished() => {}
                    // `close` may have looked before this connection was published: close it
                    // here too (idempotent), or it would outlive the link.
                    _ = shared.cancel.cancelled() => {
                        conn.close(CloseCode::NORMAL, "client closed").await;
                    }
                }
                conn.wait_finished().await;
                let outcome = conn
                    .outcome()
                    .expect("finished connections have an outcome");
                if shared.closing.load(Relaxed) || shared.policy.is_none() {
                    return end(Error::Closed(outcome));
                }
                shared.reconnects.fetch_add(1, Relaxed);
                log::info!(
                    "connection to {}:{} ended ({outcome}); reconnecting",
                    shared.host,
                    shared.port
                );
                shared.state.send_replace(State::Connecting);
                // A password change asks for an immediate new handshake; other drops back off.
                if outcome.code != CloseCode::REAUTHENTICATE {
                    failures += 1;
                }
            }
            // Never retry a wrong password: it would only hammer the server.
            Err(e @ Error::Authentication(_)) => {
                log::warn!(
                    "authentication to {}:{} failed: {e}",
                    shared.host,
                    shared.port
                );
                return end(e);
            }
            Err(e) => {
                let Some(policy) = &shared.policy else {
                    return end(e);
                };
                failures += 1;
                if policy.max_attempts.is_some_and(|max| failures >= max) {
                    log::warn!(
                        "giving up on {}:{} after {failures} attempts: {e}",
                        shared.host,
                        shared.port
                    );
                    return end(e);
                }
                log::info!(
                    "dial {}:{} failed ({e}); retrying",
                    shared.host,
                    shared.port
                );
            }
        }
        if failures > 0 {
            let delay = shared
                .policy
                .as_ref()
                .map(|p| p.delay(failures))
                .unwrap_or_default();
            tokio::select! {
                _ = shared.cancel.cancelled() => {
                    return end(Error::Closed(CloseInfo::clean(CloseCode::NORMAL, "client closed")));
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
