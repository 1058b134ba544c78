//! `NativeConnection` (one authenticated link) and the client's `connect`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::buffers::secret_bytes;
use super::channel;
use super::doorbell::Doorbell;
use super::errors::{self, closed};
use crate::net::{Connection, Credentials};

#[pyclass(frozen, module = "argonlink._argonlink")]
pub struct NativeConnection {
    pub(crate) inner: Connection,
}

fn addr_tuple(a: std::net::SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

#[pymethods]
impl NativeConnection {
    /// Queue `data` if the send buffer has room; False (nothing queued) otherwise.
    fn try_send(&self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        channel::try_send(&self.inner, data)
    }

    /// Awaitable: queue `data`, waiting for room in the send buffer.
    fn send<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        channel::send(py, &self.inner, data)
    }

    #[pyo3(signature = (data, timeout=None))]
    fn send_blocking(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        channel::send_blocking(py, &self.inner, data, timeout)
    }

    /// The next received message, or None if none is queued. Raises ConnectionClosed* once the
    /// connection has ended and every message that arrived before the end was taken.
    fn try_recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        channel::try_recv(py, &self.inner)
    }

    /// Ring `bell` with `token` once `try_recv` may have something to say (once); True, and
    /// nothing registered, if it has already.
    fn arm(&self, bell: &Doorbell, token: u64) -> bool {
        channel::arm(&self.inner, bell, token)
    }

    /// Forget the `arm` under `token` (the waiter gave up).
    fn disarm(&self, token: u64) {
        channel::disarm(&self.inner, token);
    }

    /// Ring `bell` with `token` once `try_send` of `size` bytes may succeed (once); True, and
    /// nothing registered, if it may already.
    fn arm_writable(&self, bell: &Doorbell, token: u64, size: usize) -> PyResult<bool> {
        channel::arm_writable(&self.inner, bell, token, size)
    }

    fn disarm_writable(&self, token: u64) {
        channel::disarm_writable(&self.inner, token);
    }

    /// Awaitable that completes when `try_recv` has something to say. Takes nothing.
    fn readable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        channel::readable(py, &self.inner)
    }

    #[pyo3(signature = (timeout=None))]
    fn recv_blocking<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        channel::recv_blocking(py, &self.inner, timeout)
    }

    /// Awaitable: closing handshake, bounded by the close timeout.
    #[pyo3(signature = (code=1000, reason=""))]
    fn close<'py>(&self, py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        channel::close(py, &self.inner, code, reason)
    }

    #[pyo3(signature = (code=1000, reason=""))]
    fn close_blocking(&self, py: Python<'_>, code: u16, reason: &str) -> PyResult<()> {
        channel::close_blocking(py, &self.inner, code, reason)
    }

    /// End at once without a closing handshake (the peer sees an abnormal close).
    fn abort(&self) {
        self.inner.abort("aborted by the application");
    }

    #[getter]
    fn remote_address(&self) -> (String, u16) {
        addr_tuple(self.inner.peer_addr())
    }

    #[getter]
    fn local_address(&self) -> (String, u16) {
        addr_tuple(self.inner.local_addr())
    }

    #[getter]
    fn peer_node_id(&self) -> String {
        self.inner.peer_node_id().to_string()
    }

    #[getter]
    fn peer_max_message_size(&self) -> u64 {
        self.inner.peer_max_message()
    }

    /// The server key epoch this connection authenticated under.
    #[getter]
    fn key_epoch(&self) -> u32 {
        self.inner.key_epoch()
    }

    #[getter]
    fn handshake_hash<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.handshake_hash())
    }

    /// True once the connection has ended (not merely closing).
    #[getter]
    fn closed(&self) -> bool {
        self.inner.outcome().is_some()
    }

    /// The exception `recv` raises after the end (None while open).
    #[getter]
    fn close_exception(&self) -> Option<PyErr> {
        self.inner.outcome().map(|info| closed(&info))
    }

    /// Awaitable: wait until everything queued was written to the socket.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        channel::flush(py, &self.inner)
    }

    #[pyo3(signature = (timeout=None))]
    fn flush_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        channel::flush_blocking(py, &self.inner, timeout)
    }

    pub(crate) fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("messages_sent", s.messages_sent.load(Relaxed))?;
        d.set_item("messages_received", s.messages_received.load(Relaxed))?;
        d.set_item("bytes_sent", s.bytes_sent.load(Relaxed))?;
        d.set_item("bytes_received", s.bytes_received.load(Relaxed))?;
        d.set_item("rekeys_sent", s.rekeys_sent.load(Relaxed))?;
        d.set_item("rekeys_received", s.rekeys_received.load(Relaxed))?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "<NativeConnection local={} remote={}>",
            self.inner.local_addr(),
            self.inner.peer_addr()
        )
    }
}

/// The client's password; derived keys are cached process-wide (one Argon2 run per password
/// and server key, however many clients).
#[pyclass(frozen, module = "argonlink._argonlink")]
pub struct NativeCredentials {
    pub(crate) inner: Arc<Credentials>,
}

#[pymethods]
impl NativeCredentials {
    #[new]
    fn new(password: &Bound<'_, PyAny>) -> PyResult<Self> {
        let pw = secret_bytes(password)?;
        if pw.is_empty() {
            return Err(errors::to_py(crate::Error::config(
                "the password must not be empty",
            )));
        }
        Ok(NativeCredentials {
            inner: Arc::new(Credentials::new(&pw)),
        })
    }

    /// Argon2 derivations run so far by this credential.
    #[getter]
    fn key_derivations(&self) -> u64 {
        self.inner.derivations()
    }

    fn __repr__(&self) -> &'static str {
        "<NativeCredentials (password hidden)>"
    }
}
