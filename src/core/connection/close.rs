//! The closing handshake (PROTOCOL.md 4.4): who closed first, the echo rule, and what may
//! still be sent.

use crate::core::frame::{truncate_utf8, MAX_CLOSE_REASON};
use crate::error::{CloseCode, CloseInfo, Error};

/// Our CLOSE (once queued) and how the connection ended (once it has).
#[derive(Default, Debug)]
pub struct CloseState {
    sent: Option<(CloseCode, String)>,
    outcome: Option<CloseInfo>,
}

impl CloseState {
    /// Begin closing with our CLOSE: the frame's reason (truncated to what travels), or None
    /// when we had already closed or the connection is over.
    pub fn start(&mut self, code: CloseCode, reason: &str) -> Option<String> {
        if self.is_closing() {
            return None;
        }
        let reason = truncate_utf8(reason, MAX_CLOSE_REASON).to_owned();
        self.sent = Some((code, reason.clone()));
        Some(reason)
    }

    /// The peer's CLOSE arrived: the outcome is clean and names whoever closed first. Returns
    /// the echo to send when the peer closed first (M-rule: a CLOSE is answered by a CLOSE
    /// with the same code).
    pub fn peer_closed(&mut self, code: u16, reason: String) -> Option<(u16, String)> {
        let info = match &self.sent {
            Some((ours, our_reason)) => CloseInfo::clean(*ours, our_reason.clone()),
            None => CloseInfo::clean(CloseCode(code), reason.clone()),
        };
        self.outcome.get_or_insert(info);
        if self.sent.is_some() {
            return None;
        }
        self.sent = Some((CloseCode(code), reason.clone()));
        Some((code, reason))
    }

    /// The connection failed with `err`: record the outcome (first one wins) and return the
    /// CLOSE to send, when the error has a code that travels and we had not sent one.
    pub fn fail(&mut self, err: &Error) -> Option<(u16, String)> {
        let info = err.to_close_info();
        let reason = truncate_utf8(&info.reason, MAX_CLOSE_REASON).to_owned();
        self.outcome.get_or_insert(info);
        let code = err.close_code_to_send()?;
        if self.sent.is_some() {
            return None;
        }
        self.sent = Some((code, reason.clone()));
        Some((code.0, reason))
    }

    /// Record how the connection ended, unless it already had; returns the outcome.
    pub fn finish(&mut self, info: CloseInfo) -> &CloseInfo {
        self.outcome.get_or_insert(info)
    }

    pub fn outcome(&self) -> Option<&CloseInfo> {
        self.outcome.as_ref()
    }

    /// True once our CLOSE was queued or the connection ended.
    pub fn is_closing(&self) -> bool {
        self.sent.is_some() || self.outcome.is_some()
    }

    /// Why nothing more may be sent, if that is so.
    pub fn closing_error(&self) -> Option<Error> {
        match (&self.outcome, &self.sent) {
            (Some(info), _) => Some(Error::Closed(info.clone())),
            (None, Some((code, reason))) => {
                Some(Error::Closed(CloseInfo::clean(*code, reason.clone())))
            }
            (None, None) => None,
        }
    }
}
