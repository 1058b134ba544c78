//! argonlink: secure server-to-server links.
//!
//! Layers, each knowing only the ones below it:
//! - [`core`]: the protocol, free of I/O and of Python (key derivation, handshake, frames, sessions);
//! - [`net`]: tokio sockets and the tasks that drive a connection;
//! - `python` (feature `python`): the thin pyo3 binding that maturin builds into `argonlink._argonlink`.

pub mod core;
pub mod error;
pub mod net;

#[cfg(feature = "python")]
mod python;

pub use error::{CloseCode, CloseInfo, Error, Result};
