//! The pyo3 binding: `argonlink._argonlink`, private to the Python package, which wraps it.
//!
//! Every operation comes in up to three shapes the Python layer combines:
//! `try_*` (never waits: the fast path), an awaitable (asyncio), and `*_blocking` (GIL released,
//! Ctrl-C honoured). Waiting and taking are separate, so a cancelled coroutine loses nothing.

mod buffers;
mod channel;
mod connection;
mod doorbell;
mod endpoint;
mod errors;
mod link;
mod options;
mod runtime;
mod server;
mod wait;

use pyo3::prelude::*;

use crate::core::kdf::{hash_password as phc_hash, KdfParams};

/// Make a PHC string for a server that should not hold the plaintext password.
#[pyfunction]
#[pyo3(signature = (password, m_cost, t_cost, p_cost))]
fn hash_password(
    py: Python<'_>,
    password: &Bound<'_, PyAny>,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
) -> PyResult<String> {
    let password = buffers::secret_bytes(password)?;
    let params = KdfParams::new(m_cost, t_cost, p_cost)?;
    py.detach(move || phc_hash(&password, params))
        .map_err(PyErr::from)
}

#[pymodule]
fn _argonlink(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust `log` records go to Python's `logging` (logger names start with "argonlink"). No
    // caching: levels changed later must take effect, and argonlink logs only rare events.
    if let Ok(logger) = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Nothing) {
        let _ = logger.install();
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(hash_password, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::shutdown, m)?)?;
    m.add_class::<options::LinkOptions>()?;
    m.add_function(wrap_pyfunction!(options::defaults, m)?)?;
    m.add_function(wrap_pyfunction!(options::check_kdf, m)?)?;
    m.add_function(wrap_pyfunction!(options::check_rekey, m)?)?;
    m.add_function(wrap_pyfunction!(options::check_reconnect, m)?)?;
    m.add_function(wrap_pyfunction!(options::check_throttle, m)?)?;
    m.add_class::<endpoint::NativeEndpoint>()?;
    m.add_class::<connection::NativeConnection>()?;
    m.add_class::<channel::NativeChannel>()?;
    m.add_class::<connection::NativeCredentials>()?;
    m.add_class::<server::NativeServer>()?;
    m.add_class::<link::NativeLink>()?;
    m.add_class::<doorbell::Doorbell>()?;
    m.add_function(wrap_pyfunction!(link::open_link, m)?)?;
    m.add_function(wrap_pyfunction!(link::open_link_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(server::bind, m)?)?;
    m.add_function(wrap_pyfunction!(server::bind_blocking, m)?)?;
    Ok(())
}
