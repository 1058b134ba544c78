//! The one mapping from [`crate::Error`] to the exception classes of `argonlink.exceptions`.

use pyo3::prelude::*;

use crate::error::{CloseCode, CloseInfo, Error};

pyo3::import_exception!(argonlink.exceptions, AuthenticationError);
pyo3::import_exception!(argonlink.exceptions, ProtocolError);
pyo3::import_exception!(argonlink.exceptions, MessageTooLarge);
pyo3::import_exception!(argonlink.exceptions, Timeout);
pyo3::import_exception!(argonlink.exceptions, ConnectionClosedOK);
pyo3::import_exception!(argonlink.exceptions, ConnectionClosedError);
pyo3::import_exception!(argonlink.exceptions, ConfigError);
pyo3::import_exception!(argonlink.exceptions, ChannelError);
pyo3::import_exception!(argonlink.exceptions, ChannelReset);
pyo3::import_exception!(argonlink.exceptions, ChannelFinished);
pyo3::import_exception!(argonlink.exceptions, ChannelClosed);

pub fn closed(info: &CloseInfo) -> PyErr {
    let args = (info.code.0, info.reason.clone());
    if info.clean && (info.code == CloseCode::NORMAL || info.code == CloseCode::GOING_AWAY) {
        ConnectionClosedOK::new_err(args)
    } else {
        ConnectionClosedError::new_err(args)
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        to_py(err)
    }
}

fn to_py(err: Error) -> PyErr {
    match err {
        Error::Authentication(_) => AuthenticationError::new_err(err.to_string()),
        Error::Protocol(_) => ProtocolError::new_err(err.to_string()),
        Error::MessageTooLarge { .. } => MessageTooLarge::new_err(err.to_string()),
        Error::Timeout(_) => Timeout::new_err(err.to_string()),
        Error::Config(_) => ConfigError::new_err(err.to_string()),
        Error::Misuse(_) | Error::Noise(_) => {
            pyo3::exceptions::PyRuntimeError::new_err(err.to_string())
        }
        Error::Closed(info) => closed(&info),
        Error::Integrity | Error::KeyExhausted | Error::Unresponsive(_) => {
            closed(&err.to_close_info())
        }
        Error::ChannelReset {
            code,
            reason,
            by_peer,
        } => ChannelReset::new_err((code, reason, by_peer)),
        Error::ChannelFinished => ChannelFinished::new_err(err.to_string()),
        Error::ChannelClosed => ChannelClosed::new_err(err.to_string()),
        Error::ChannelLimit(_) => ChannelError::new_err(err.to_string()),
        Error::Io(e) => e.into(),
    }
}
