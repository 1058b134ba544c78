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
    /// The server revoked the identity this connection authenticated as: do not come back.
    pub const REVOKED: CloseCode = CloseCode(4004);
}

impl CloseCode {
    /// Codes a CLOSE frame may carry (PROTOCOL.md §4.3): the protocol's own, and the ranges
    /// left to applications. 1006 and everything else never travel: a peer that sends one
    /// would have us report a close that did not happen.
    pub fn travels(self) -> bool {
        matches!(
            self.0,
            1000 | 1001 | 1002 | 1009 | 1013 | 4001..=4004 | 3000..=3999 | 4100..=4999
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

/// How a peer broke the protocol: each is a protocol error (told to the peer with CLOSE 1002
/// where the channel is still intact, M19). The texts name what was wrong, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerMisbehaved {
    // ---- the handshake (§3) ----
    #[error("not an argonlink client (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {version} / suite {suite}")]
    UnsupportedVersion { version: u16, suite: u16 },
    #[error("the hello's identity has a byte outside printable ASCII")]
    BadIdentity,
    #[error("the server's CPace share is not a valid ristretto255 element")]
    BadShare,
    #[error("server speaks protocol version {version} / suite {suite}; this client speaks {our_version} / {our_suite}")]
    ServerVersion {
        version: u16,
        suite: u16,
        our_version: u16,
        our_suite: u16,
    },
    #[error("server asks for Argon2 costs {offered}, above this client's cap {cap}")]
    KdfAboveCap {
        offered: crate::core::kdf::KdfParams,
        cap: crate::core::kdf::KdfParams,
    },
    #[error("server offers Argon2 costs {offered}, below this client's floor {floor}")]
    KdfBelowFloor {
        offered: crate::core::kdf::KdfParams,
        floor: crate::core::kdf::KdfParams,
    },
    #[error("{what} of {len} bytes, expected {expected}")]
    MessageLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("handshake reply payload of the wrong size")]
    ReplyPayloadSize,
    #[error("handshake payload of the wrong size")]
    PayloadSize,
    #[error("unknown admission status {0}")]
    UnknownAdmission(u8),
    #[error("refusing to connect to this node itself (the server has our node id)")]
    DialedItself,
    #[error("refusing a connection from this node itself (reflected)")]
    Reflected,
    #[error("the server sent data before message 1")]
    DataBeforeMessage1,
    #[error("the server closed the connection before the handshake (busy, or not argonlink)")]
    ClosedBeforeHandshake,
    #[error("connection closed before key confirmation")]
    ClosedBeforeConfirmation,
    #[error("the first frame must be {0}")]
    FirstFrameMustBe(&'static str),
    #[error("CONFIRM is only valid as the client's first frame")]
    ConfirmNotFirst,
    #[error("RESUME answers a session request, and only one")]
    UnaskedResume,
    // ---- frames (§4) ----
    #[error("frame length {0} is below the minimum")]
    FrameTooShort(usize),
    #[error("frame shorter than its tag")]
    ShorterThanTag,
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    #[error("{what} frame body must be {expected} bytes, got {len}")]
    FrameBody {
        what: &'static str,
        expected: usize,
        len: usize,
    },
    #[error("CONFIRM frame body must be 0 or {n} bytes, got {0}", n = crate::core::frame::SESSION_REQUEST_LEN)]
    ConfirmBody(usize),
    #[error("DATA frame without flags")]
    DataWithoutFlags,
    #[error("unknown DATA flags 0x{0:02x}")]
    UnknownDataFlags(u8),
    #[error("DATA frame too short for its length field")]
    DataLengthFieldMissing,
    #[error("CLOSE frame of invalid length")]
    CloseLength,
    #[error("CLOSE with reserved code {0}")]
    ReservedCloseCode(u16),
    #[error("CLOSE reason is not UTF-8")]
    CloseReasonNotUtf8,
    #[error("unknown session request flags 0x{0:02x}")]
    UnknownSessionFlags(u8),
    #[error("unknown RESUME status {0}")]
    UnknownResumeStatus(u8),
    #[error("session window {0} is below the minimum of {min} bytes", min = crate::core::frame::MIN_WINDOW)]
    WindowTooSmall(u32),
    // ---- messages and their fragments (§4.2) ----
    #[error("a first fragment must carry a full frame of the message")]
    ShortFirstFragment,
    #[error("a message that fits one frame must travel in one frame")]
    NeedlessFragments,
    #[error("message fragments exceed the announced length")]
    FragmentsExceedLength,
    #[error("a fragment before the last must carry a full frame of the message")]
    ShortFragment,
    #[error("message ended before its announced length")]
    MessageEndedEarly,
    #[error("DATA frame flags do not fit the reassembly state")]
    FragmentOutOfPlace,
    // ---- channels (§4.7) ----
    #[error("{0} may not name channel 0 (the default channel)")]
    ChannelZero(&'static str),
    #[error("channel {0} has the other side's parity: a side opens only its own ids")]
    ChannelParity(u32),
    #[error("channel {id} opened after channel {last}: ids go up by two, without gaps")]
    ChannelIdNotIncreasing { id: u32, last: u32 },
    #[error("the peer opened more than the {0} channels it was allowed")]
    TooManyChannels(u32),
    #[error("{what} for channel {id}, which was never opened")]
    UnknownChannel { what: &'static str, id: u32 },
    #[error("{what} for channel {id} after the peer's CLOSE or RESET of it")]
    AfterChannelEnd { what: &'static str, id: u32 },
    #[error("channel {channel}: data beyond the window granted ({granted} credit units)")]
    WindowOverrun { channel: u32, granted: u64 },
    #[error("channel {channel}: BLOCKED asks for credit {needed}, beyond any message")]
    BlockedOutOfRange { channel: u32, needed: u64 },
    #[error("channel name or reset reason is not UTF-8, or too long")]
    ChannelText,
    #[error("announced windows too small: default channel {window}, channels {channel_window}")]
    LimitsTooSmall { window: u32, channel_window: u32 },
    #[error("RESET with reserved code {0}")]
    ReservedResetCode(u16),
    // ---- after the handshake (§4.4, §4.5) ----
    #[error("ACK outside an acknowledged session")]
    AckOutsideSession,
    #[error("unexpected CONFIRM")]
    UnexpectedConfirm,
    #[error("unexpected RESUME")]
    UnexpectedResume,
    #[error("expected RESUME")]
    ExpectedResume,
    // ---- exactly-once sessions (§4.5) ----
    #[error("acknowledgement of message {next_expected}, only {sent} were sent")]
    AckBeyondSent { next_expected: u64, sent: u64 },
    #[error("the peer resumes at message {next_expected}, but messages {base} to {next} are the ones not yet acknowledged")]
    ResumeOutsideUnacked {
        next_expected: u64,
        base: u64,
        next: u64,
    },
    #[error("message {seq} arrived before message {expected}")]
    MessageAhead { seq: u64, expected: u64 },
    #[error("the peer's session window changed")]
    WindowChanged,
    #[error("the client resumes at message {0}, which this session never sent or the client had acknowledged")]
    ResumeUnknownPoint(u64),
    #[error("the server created a new session instead of resuming ours")]
    NotResumed,
    #[error("the server resumed a session we did not have")]
    ResumedUnknown,
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
    Protocol(#[from] PeerMisbehaved),
    /// This library was driven out of order (a bug of ours or of the caller, not the peer's).
    #[error("API misuse: {0}")]
    Misuse(&'static str),
    /// The Noise library refused to set up or write a handshake message of ours (its words):
    /// never the peer's doing.
    #[error("noise: {0}")]
    Noise(String),
    /// A frame failed AEAD authentication: it was altered, replayed, reordered or dropped.
    #[error("integrity failure: a frame failed authentication (altered, replayed, reordered or dropped in transit)")]
    Integrity,
    /// A message over the limit the receiver announced (or that we accept).
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: u64, limit: u64 },
    /// The channel was reset, by the peer (`by_peer`) or by this side; code and reason say why.
    #[error("channel reset by {} (code {code}{})", if *.by_peer { "the peer" } else { "this side" }, if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    ChannelReset {
        code: u16,
        reason: String,
        by_peer: bool,
    },
    /// The peer finished the channel (half-close) and every message it sent was taken.
    #[error("the peer finished the channel")]
    ChannelFinished,
    /// This side closed the channel for sending (half-close): nothing more may be sent on it.
    #[error("the channel is closed for sending")]
    ChannelClosed,
    /// The peer allows this many channels open at once, and that many are.
    #[error("the peer allows at most {0} open channels, and that many are open")]
    ChannelLimit(u32),
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
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// A copy (I/O errors keep their kind and text), for errors that several waiters report.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Authentication(m) => Error::Authentication(m.clone()),
            Error::Protocol(m) => Error::Protocol(m.clone()),
            Error::Misuse(m) => Error::Misuse(m),
            Error::Noise(m) => Error::Noise(m.clone()),
            Error::Integrity => Error::Integrity,
            Error::MessageTooLarge { size, limit } => Error::MessageTooLarge {
                size: *size,
                limit: *limit,
            },
            Error::ChannelReset {
                code,
                reason,
                by_peer,
            } => Error::ChannelReset {
                code: *code,
                reason: reason.clone(),
                by_peer: *by_peer,
            },
            Error::ChannelClosed => Error::ChannelClosed,
            Error::ChannelFinished => Error::ChannelFinished,
            Error::ChannelLimit(n) => Error::ChannelLimit(*n),
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
