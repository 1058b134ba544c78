//! `NativeConnection` (one authenticated link) and the client's `connect`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::buffers::{secret_bytes, to_bytes, to_pybytes};
use super::errors::{self, closed};
use super::wait::block_on;
use crate::error::CloseCode;
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
        let msg = to_bytes(data)?;
        self.inner.try_send(msg).map_err(errors::to_py)
    }

    /// Awaitable: queue `data`, waiting for room in the send buffer.
    fn send<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let msg = to_bytes(data)?;
        let conn = self.inner.clone();
        super::runtime::future_into_py(
            py,
            async move { conn.send(msg).await.map_err(errors::to_py) },
        )
    }

    #[pyo3(signature = (data, timeout=None))]
    fn send_blocking(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let msg = to_bytes(data)?;
        if let Some(m) = self.try_send_or_keep(msg)? {
            let conn = self.inner.clone();
            block_on(py, timeout, "send", async move { conn.send(m).await })?;
        }
        Ok(())
    }

    /// The next received message, or None if none is queued. Raises ConnectionClosed* once the
    /// connection has ended and every message that arrived before the end was taken.
    fn try_recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.inner.try_recv().map_err(errors::to_py)? {
            Some(m) => Ok(Some(to_pybytes(py, &m)?)),
            None => Ok(None),
        }
    }

    /// Awaitable that completes when `try_recv` has something to say. Takes nothing.
    fn readable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.inner.clone();
        super::runtime::future_into_py(py, async move {
            conn.readable().await;
            Ok(())
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn recv_blocking<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(m) = self.inner.try_recv().map_err(errors::to_py)? {
            return to_pybytes(py, &m);
        }
        let conn = self.inner.clone();
        let m = block_on(py, timeout, "recv", async move { conn.recv().await })?;
        to_pybytes(py, &m)
    }

    /// Awaitable: closing handshake, bounded by the close timeout.
    #[pyo3(signature = (code=1000, reason=""))]
    fn close<'py>(&self, py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let (conn, reason) = (self.inner.clone(), reason.to_owned());
        super::runtime::future_into_py(py, async move {
            conn.close(CloseCode(code), &reason).await;
            Ok(())
        })
    }

    #[pyo3(signature = (code=1000, reason=""))]
    fn close_blocking(&self, py: Python<'_>, code: u16, reason: &str) -> PyResult<()> {
        let (conn, reason) = (self.inner.clone(), reason.to_owned());
        block_on(py, None, "close", async move {
            conn.close(CloseCode(code), &reason).await;
            Ok(())
        })
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
    fn session_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.session_id())
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

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
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

impl NativeConnection {
    /// Fast path of the blocking send: returns the message back if it must wait.
    fn try_send_or_keep(&self, msg: bytes::Bytes) -> PyResult<Option<bytes::Bytes>> {
        let keep = msg.clone(); // a refcount bump, not a copy
        match self.inner.try_send(msg).map_err(errors::to_py)? {
            true => Ok(None),
            false => Ok(Some(keep)),
        }
    }
}

/// The client's password and its cache of derived keys (one Argon2 run per server key).
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
