//! The one error type of the crate. The Python binding maps each variant to one exception class.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a connection ended, as carried by a CLOSE frame (or decided locally when none arrived).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// Orderly close requested by the application.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The peer (usually a server) is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A message over the receiver's announced limit.
    pub const MESSAGE_TOO_LARGE: CloseCode = CloseCode(1009);
    /// The server has no room for another connection.
    pub const BUSY: CloseCode = CloseCode(1013);
    /// The connection ended without a CLOSE frame (truncation, integrity failure, I/O error).
    /// Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// The keys of this session reached their hard usage limit.
    pub const KEY_EXHAUSTED: CloseCode = CloseCode(4001);
    /// The server's password changed; reconnect and authenticate again.
    pub const REAUTHENTICATE: CloseCode = CloseCode(4002);
    /// An acknowledged session could not be resumed: the server no longer has it (it expired,
    /// or the server restarted), so messages it had not delivered may be lost.
    pub const SESSION_LOST: CloseCode = CloseCode(4003);
}

impl CloseCode {
    /// Codes a CLOSE frame may carry (PROTOCOL.md §4.3): the protocol's own, and the ranges
    /// left to applications. 1006 and everything else never travel: a peer that sends one
    /// would have us report a close that did not happen.
    pub fn travels(self) -> bool {
        matches!(
            self.0,
            1000 | 1001 | 1002 | 1009 | 1013 | 4001..=4003 | 3000..=3999 | 4100..=4999
        )
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The end state of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: CloseCode,
    pub reason: String,
    /// True when both sides ended with CLOSE frames (or our CLOSE was answered by EOF after it).
    pub clean: bool,
}

impl CloseInfo {
    pub fn clean(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseInfo {
            code,
            reason: reason.into(),
            clean: true,
        }
    }

    pub fn abnormal(reason: impl Into<String>) -> Self {
        CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: reason.into(),
            clean: false,
        }
    }

    pub fn error(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseInfo {
            code,
            reason: reason.into(),
            clean: false,
        }
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "code {}", self.code)
        } else {
            write!(f, "code {}: {}", self.code, self.reason)
        }
    }
}

/// Every failure the core and the I/O layer can report. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The handshake failed because one side does not know the shared password
    /// (or the peer is not speaking to us at all, which looks the same by design).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The peer sent something that is not valid argonlink, or an unsupported version.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame failed AEAD authentication: it was altered, replayed, reordered or dropped.
    #[error("integrity failure: a frame failed authentication (altered, replayed, reordered or dropped in transit)")]
    Integrity,
    /// A message over the limit the receiver announced (or that we accept).
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: u64, limit: u64 },
    /// A named deadline passed.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The connection is closed; the info says how.
    #[error("connection closed ({0})")]
    Closed(CloseInfo),
    /// A bad setting given by the application.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The keys of a session reached their hard usage limit.
    #[error("key usage limit reached; the connection must be re-established")]
    KeyExhausted,
    /// Nothing arrived from the peer for this long, PINGs included.
    #[error("peer unresponsive: nothing received for {:.1} s", .0.as_secs_f64())]
    Unresponsive(std::time::Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// A copy (I/O errors keep their kind and text), for errors that several waiters report.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Authentication(m) => Error::Authentication(m.clone()),
            Error::Protocol(m) => Error::Protocol(m.clone()),
            Error::Integrity => Error::Integrity,
            Error::MessageTooLarge { size, limit } => Error::MessageTooLarge {
                size: *size,
                limit: *limit,
            },
            Error::Timeout(w) => Error::Timeout(w),
            Error::Closed(info) => Error::Closed(info.clone()),
            Error::Config(m) => Error::Config(m.clone()),
            Error::KeyExhausted => Error::KeyExhausted,
            Error::Unresponsive(d) => Error::Unresponsive(*d),
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// The CLOSE code that tells the peer about this error, when we can still send one: the
    /// peer broke the protocol over a channel that is intact. None after an integrity failure
    /// (the stream is no longer trusted: nothing more is sent), for I/O errors and timeouts.
    pub fn close_code_to_send(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol(_) => Some(CloseCode::PROTOCOL_ERROR),
            Error::MessageTooLarge { .. } => Some(CloseCode::MESSAGE_TOO_LARGE),
            Error::KeyExhausted => Some(CloseCode::KEY_EXHAUSTED),
            _ => None,
        }
    }

    /// How a connection that died of this error is described to the application.
    pub fn to_close_info(&self) -> CloseInfo {
        match self {
            Error::Closed(info) => info.clone(),
            Error::Protocol(_) => CloseInfo::error(CloseCode::PROTOCOL_ERROR, self.to_string()),
            Error::MessageTooLarge { .. } => {
                CloseInfo::error(CloseCode::MESSAGE_TOO_LARGE, self.to_string())
            }
            Error::KeyExhausted => CloseInfo::error(CloseCode::KEY_EXHAUSTED, self.to_string()),
            Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => CloseInfo::abnormal(
                "connection truncated: the peer's stream ended without a CLOSE frame",
            ),
            _ => CloseInfo::abnormal(self.to_string()),
        }
    }
}
