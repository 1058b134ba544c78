//! tokio I/O: listening, connecting, and the tasks that drive each connection.
//! Everything protocol-shaped comes from [`crate::core`]; this layer moves bytes and keeps time.

pub mod client;
pub mod connection;
pub mod link;
pub mod mailbox;
pub mod pending;
pub mod server;
pub mod session;
pub mod throttle;
pub mod wake;
mod wire;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::core::channel::{self, Limits};
use crate::core::handshake::NodeId;
use crate::core::record::RekeyPolicy;
use crate::error::{Error, Result};

pub use client::{connect, ClientConfig, Credentials};
pub use connection::{Channel, Connection};
pub use link::{Link, ReconnectPolicy};
pub use server::{Server, ServerConfig, ServerKeySource};
pub use session::SessionConfig;

/// Lock `m`, going on past a poisoned lock: every lock in this layer guards state that a panic
/// cannot leave half-changed (each critical section is a handful of field updates), and one
/// panicking task must not take every other user of the connection or server down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`lock`] for reading an `RwLock`.
pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// [`lock`] for writing an `RwLock`.
pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Settings shared by both ends of a link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub node_id: NodeId,
    /// The largest message this side accepts; announced to the peer in the handshake.
    pub max_message_size: u64,
    /// Bytes `send` may queue ahead of the socket before it waits.
    pub send_buffer: usize,
    /// Bytes of received messages held for the application before reading pauses.
    pub recv_buffer: usize,
    pub close_timeout: Duration,
    pub rekey: RekeyPolicy,
    /// Send a PING after this much silence from the peer (None: no keepalive).
    pub ping_interval: Option<Duration>,
    /// End the connection (`peer unresponsive`) after this much silence, PONGs included.
    pub ping_timeout: Duration,
    /// Close (code 1000, "idle timeout") after this long without application messages.
    pub idle_timeout: Option<Duration>,
    /// Channels the peer may have open at once (0: it may open none).
    pub max_channels: u32,
    /// Each channel's initial window (what it may hold unread before the sender waits).
    pub channel_window: u32,
    /// How far channels' windows may grow beyond their initial size, all together.
    pub channel_buffer: u64,
    /// The largest a channel's window grows (toward the path's bandwidth-delay product).
    pub max_channel_window: u64,
}

pub const DEFAULT_MAX_MESSAGE: u64 = 16 << 20;
const _: () = assert!(DEFAULT_MAX_MESSAGE == 16 << 20); // the channels' default too

impl Default for LinkConfig {
    fn default() -> Self {
        let channels = channel::Config::default();
        LinkConfig {
            node_id: NodeId::random(),
            max_message_size: DEFAULT_MAX_MESSAGE,
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            close_timeout: Duration::from_secs(5),
            rekey: RekeyPolicy::default(),
            ping_interval: Some(Duration::from_secs(15)),
            ping_timeout: Duration::from_secs(45),
            idle_timeout: None,
            max_channels: channels.limits.max_channels,
            channel_window: channels.limits.channel_window,
            channel_buffer: channels.channel_buffer,
            max_channel_window: channels.max_channel_window,
        }
    }
}

impl LinkConfig {
    /// What this side announces in the handshake.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message: self.max_message_size,
            window: self.recv_buffer.min(u32::MAX as usize) as u32,
            channel_window: self.channel_window,
            max_channels: self.max_channels,
        }
    }

    /// The channels' settings.
    pub fn channels(&self) -> channel::Config {
        channel::Config {
            limits: self.limits(),
            channel_buffer: self.channel_buffer,
            max_channel_window: self.max_channel_window,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.channels().validate()?;
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as u64 {
            return Err(Error::config(
                "max_message_size must be between 1 byte and 4 GiB",
            ));
        }
        if self.send_buffer < 1024 || self.send_buffer > u32::MAX as usize >> 3 {
            return Err(Error::config(
                "send_buffer must be between 1 KiB and 512 MiB",
            ));
        }
        if self.recv_buffer < 1024 {
            return Err(Error::config("recv_buffer must be at least 1 KiB"));
        }
        if self
            .ping_interval
            .is_some_and(|i| i.is_zero() || i >= self.ping_timeout)
        {
            return Err(Error::config(
                "ping_interval must be positive and below ping_timeout",
            ));
        }
        match self.rekey.validate() {
            Err(Error::Config(m)) => Err(Error::config(format!("rekey {m}"))),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
