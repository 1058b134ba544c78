//! Exactly-once delivery across connections: what both ends of a session run, whichever side
//! dialed. The client names the session in its key confirmation; the server keeps its end for
//! `linger` after a drop; each side keeps every message it sent until the other acknowledges it
//! ([`sender`]), resends the rest on the next connection, and drops what it had delivered before
//! ([`Session::receive`]).
//!
//! A [`Link`](super::Link) carries a session over its successive connections (the client's
//! dialed, the server's attached when its client resumes); this module is the session's part.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;

use crate::core::frame::{SessionRequest, SESSION_ID_LEN};
use crate::core::reliable::{Delivered, Numbering};
use crate::error::{CloseCode, CloseInfo, Result};
use crate::net::connection::Connection;

pub mod sender;

use sender::ReliableSender;

/// Acknowledged delivery across connections.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Bytes of sent messages kept until the peer acknowledges them; `send` waits beyond.
    pub max_unacked: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_unacked: 16 << 20,
        }
    }
}

impl SessionConfig {
    /// The window is announced in a u32 and counted in the record layer's units.
    pub fn validate(&self) -> Result<()> {
        if self.max_unacked < 1024 || self.max_unacked > u32::MAX as usize >> 3 {
            return Err(crate::error::Error::config(
                "max_unacked must be between 1 KiB and 512 MiB",
            ));
        }
        Ok(())
    }
}

/// One end of an acknowledged session.
pub(crate) struct Session {
    sender: Arc<ReliableSender>,
    /// Set after the first connection; a later request asks to resume.
    established: AtomicBool,
    /// Resent messages dropped because they were delivered before.
    duplicates: AtomicU64,
}

impl Session {
    pub fn new(id: [u8; SESSION_ID_LEN], config: &SessionConfig) -> Self {
        Session {
            sender: ReliableSender::new(id, config.max_unacked),
            established: AtomicBool::new(false),
            duplicates: AtomicU64::new(0),
        }
    }

    /// The client's request for this session on a new connection.
    pub fn request(&self, window: u32, delivered: &Delivered) -> SessionRequest {
        SessionRequest {
            window,
            session_id: self.sender.session_id(),
            resume: self.established.load(Relaxed),
            next_expected: delivered.next_expected(),
        }
    }

    /// The peer's window, known before the application can send (the server's end).
    pub fn limit_window(&self, peer_window: u32) -> Result<()> {
        self.sender.limit_window(peer_window)
    }

    /// Carry on over `conn`: resend from `peer_next_expected`, and take its ACKs. On an error
    /// the connection is failed and the session cannot go on.
    pub fn take_over(
        &self,
        conn: &Connection,
        peer_next_expected: u64,
        peer_window: u32,
    ) -> Result<()> {
        let attached = self
            .sender
            .limit_window(peer_window)
            .and_then(|()| self.sender.attach(conn.clone(), peer_next_expected));
        if let Err(e) = attached {
            conn.fail(&e);
            return Err(e);
        }
        self.established.store(true, Relaxed);
        // Only now: an ACK applied before `attach` could move the sender past where this
        // connection starts (the connection held the ACKs that came early).
        let sender = Arc::downgrade(&self.sender);
        let acks = conn.attach_acks(Box::new(move |n| match sender.upgrade() {
            Some(s) => s.acknowledged(n),
            None => Ok(()),
        }));
        if let Err(e) = acks {
            conn.abort(&e.to_string()); // the next connection resumes
        }
        Ok(())
    }

    /// A message read from `from` (numbered by `numbering`): true if it is new, and then the
    /// ACK for it is sent on `newest` (the connection the peer sends on). False: delivered
    /// before (a resend after a reconnect), dropped. An error (a number out of order) aborts
    /// `from`.
    pub fn receive(
        &self,
        delivered: &mut Delivered,
        numbering: &mut Numbering,
        from: &Connection,
        newest: Option<Connection>,
    ) -> Result<bool> {
        let seq = numbering.assign();
        let fresh = match delivered.accept(seq) {
            Ok(fresh) => fresh,
            Err(e) => {
                from.abort(&e.to_string());
                return Err(e);
            }
        };
        if fresh {
            newest
                .unwrap_or_else(|| from.clone())
                .ack(delivered.next_expected());
        } else {
            self.duplicates.fetch_add(1, Relaxed);
        }
        Ok(fresh)
    }

    /// A connection that ended so ends the session: either side closed it (a password change
    /// only asks for a new handshake, unless we asked to close).
    pub fn ended_by(outcome: &CloseInfo, close_requested: bool) -> bool {
        outcome.clean && (outcome.code != CloseCode::REAUTHENTICATE || close_requested)
    }

    pub fn try_send(&self, msg: Bytes) -> Result<bool> {
        self.sender.try_send(msg)
    }

    pub async fn send(&self, msg: Bytes) -> Result<()> {
        self.sender.send(msg).await
    }

    /// Resolves once every message sent so far was acknowledged.
    pub async fn flushed(&self) {
        self.sender.flushed().await
    }

    pub fn can_resume_at(&self, peer_next_expected: u64) -> bool {
        self.sender.can_resume_at(peer_next_expected)
    }

    pub fn unacknowledged(&self) -> usize {
        self.sender.unacknowledged()
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Relaxed)
    }

    /// The session is over: nothing more is sent, waiting senders fail.
    pub fn end(&self) {
        self.sender.end();
    }
}
