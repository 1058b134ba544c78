//! `NativeConnection` (one authenticated connection) and `NativeCredentials`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::buffers::secret_bytes;
use super::channel::{self, NativeChannel};
use super::doorbell::Doorbell;
use super::endpoint::{Chan, NativeEndpoint};
use crate::core::handshake::Identity;
use crate::net::{Connection, Credentials};

/// One authenticated connection: the message methods of `NativeEndpoint`, and what only a
/// connection has (its addresses, its peer, its handshake).
#[pyclass(extends = NativeEndpoint, frozen, module = "argonlink._argonlink")]
pub struct NativeConnection {
    pub(crate) inner: Connection,
}

impl NativeConnection {
    /// The Python object for `conn` (its base carries the messages).
    pub(crate) fn create(py: Python<'_>, conn: Connection) -> PyResult<Py<NativeConnection>> {
        let base = NativeEndpoint {
            chan: Chan::Connection(conn.clone()),
        };
        Py::new(
            py,
            PyClassInitializer::from(base).add_subclass(NativeConnection { inner: conn }),
        )
    }
}

fn addr_tuple(a: std::net::SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// A connection's counters, as `stats()` reports them.
pub(crate) fn stats<'py>(py: Python<'py>, conn: &Connection) -> PyResult<Bound<'py, PyDict>> {
    let s = conn.stats();
    let d = PyDict::new(py);
    d.set_item("messages_sent", s.messages_sent.load(Relaxed))?;
    d.set_item("messages_received", s.messages_received.load(Relaxed))?;
    d.set_item("bytes_sent", s.bytes_sent.load(Relaxed))?;
    d.set_item("bytes_received", s.bytes_received.load(Relaxed))?;
    d.set_item("rekeys_sent", s.rekeys_sent.load(Relaxed))?;
    d.set_item("rekeys_received", s.rekeys_received.load(Relaxed))?;
    Ok(d)
}

#[pymethods]
impl NativeConnection {
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

    /// The identity the peer authenticated as (None: anonymous, or the peer is a server).
    #[getter]
    fn peer_identity(&self) -> Option<String> {
        identity_or_none(self.inner.peer_identity())
    }

    #[getter]
    fn peer_max_message_size(&self) -> u64 {
        self.inner.peer_max_message()
    }

    /// Channels the peer may have open on this connection (0: it may open none).
    #[getter]
    fn max_channels(&self) -> u32 {
        self.inner.max_channels().0
    }

    /// Channels this side may have open (the peer's limit; 0: none).
    #[getter]
    fn peer_max_channels(&self) -> u32 {
        self.inner.max_channels().1
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

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats(py, &self.inner)
    }

    // ---- channels (see `channel.rs`) ----

    /// A new channel if the peer's limit allows one now; None otherwise.
    fn try_open_channel(&self, py: Python<'_>, name: &str) -> PyResult<Option<Py<NativeChannel>>> {
        channel::try_open(py, &self.inner, name)
    }

    /// Awaitable: a new channel, waiting while the peer's limit of open channels is reached.
    fn open_channel<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        channel::open(py, &self.inner, name)
    }

    #[pyo3(signature = (name, timeout=None))]
    fn open_channel_blocking(
        &self,
        py: Python<'_>,
        name: String,
        timeout: Option<f64>,
    ) -> PyResult<Py<NativeChannel>> {
        channel::open_blocking(py, &self.inner, name, timeout)
    }

    /// The next channel the peer opened onto `queue` ("": the application's; a reserved
    /// name: that name's own queue, see `listen`), or None if none waits. Raises
    /// ConnectionClosed* once the connection ended and every waiting channel was taken.
    #[pyo3(signature = (queue=""))]
    fn try_accept_channel(
        &self,
        py: Python<'_>,
        queue: &str,
    ) -> PyResult<Option<Py<NativeChannel>>> {
        channel::try_accept(py, &self.inner, queue)
    }

    /// Ring `bell` with `token` once `try_accept_channel(queue)` may have something to say
    /// (once); True, and nothing registered, if it has already.
    #[pyo3(signature = (bell, token, queue=""))]
    fn arm_accept(&self, bell: &Doorbell, token: u64, queue: &str) -> PyResult<bool> {
        channel::arm_accept(&self.inner, queue, bell, token)
    }

    #[pyo3(signature = (token, queue=""))]
    fn disarm_accept(&self, token: u64, queue: &str) {
        self.inner.disarm_accept(queue, token);
    }

    /// Awaitable that completes when `try_accept_channel(queue)` has something to say.
    #[pyo3(signature = (queue=""))]
    fn acceptable<'py>(&self, py: Python<'py>, queue: &str) -> PyResult<Bound<'py, PyAny>> {
        channel::acceptable(py, &self.inner, queue.to_owned())
    }

    #[pyo3(signature = (timeout=None, queue=""))]
    fn accept_channel_blocking(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        queue: &str,
    ) -> PyResult<Py<NativeChannel>> {
        channel::accept_blocking(py, &self.inner, queue, timeout)
    }

    /// Give the peer's channels named `name` (a reserved name) a queue of their own, instead
    /// of resetting them.
    fn listen(&self, name: &str) -> PyResult<()> {
        Ok(self.inner.listen(name)?)
    }

    /// Stop listening for `name`: waiting channels of that name are reset, and later ones.
    fn unlisten(&self, name: &str) {
        self.inner.unlisten(name);
    }

    /// Channels open on this connection now.
    #[getter]
    fn open_channels(&self) -> usize {
        self.inner.open_channels()
    }

    fn __repr__(&self) -> String {
        format!(
            "<NativeConnection local={} remote={}>",
            self.inner.local_addr(),
            self.inner.peer_addr()
        )
    }
}

/// The client's identity and password; derived keys are cached process-wide (one Argon2 run
/// per password and server key, however many clients).
#[pyclass(frozen, module = "argonlink._argonlink")]
pub struct NativeCredentials {
    pub(crate) inner: Arc<Credentials>,
}

/// An identity as Python sees it: a str, or None for the anonymous one.
pub(crate) fn identity_or_none(identity: &Identity) -> Option<String> {
    (!identity.is_anonymous()).then(|| identity.as_str().to_owned())
}

#[pymethods]
impl NativeCredentials {
    #[new]
    #[pyo3(signature = (password, identity=None))]
    fn new(password: &Bound<'_, PyAny>, identity: Option<&str>) -> PyResult<Self> {
        let pw = secret_bytes(password)?;
        if pw.is_empty() {
            return Err(crate::Error::config("the password must not be empty").into());
        }
        let identity = identity.map(Identity::new).transpose()?.unwrap_or_default();
        Ok(NativeCredentials {
            inner: Arc::new(Credentials::with_identity(identity, &pw)),
        })
    }

    /// The identity the client names in its hello (None: anonymous).
    #[getter]
    fn identity(&self) -> Option<String> {
        identity_or_none(self.inner.identity())
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
