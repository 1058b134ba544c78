//! `NativeLink`: the client side, one server, reconnecting if asked.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::connection::{self, NativeConnection, NativeCredentials};
use super::endpoint::{Chan, NativeEndpoint};
use super::options::{reconnect_policy, LinkOptions, PolicyTuple};
use super::runtime::future_into_py;
use super::wait::block_on;
use crate::net::Link;

/// A client's link to one server (reconnecting if asked), or a server's end of an
/// exactly-once session: the message methods of `NativeEndpoint`, and the link's own.
#[pyclass(extends = NativeEndpoint, frozen, module = "argonlink._argonlink")]
pub struct NativeLink {
    pub(crate) inner: Link,
}

impl NativeLink {
    /// The Python object for `link` (its base carries the messages).
    pub(crate) fn create(py: Python<'_>, link: Link) -> PyResult<Py<NativeLink>> {
        let base = NativeEndpoint {
            chan: Chan::Link(link.clone()),
        };
        Py::new(
            py,
            PyClassInitializer::from(base).add_subclass(NativeLink { inner: link }),
        )
    }
}

/// Awaitable: dial (and keep dialing, with a policy) until the first connection is up.
#[pyfunction]
#[pyo3(signature = (host, port, credentials, options, reconnect=None))]
pub fn open_link<'py>(
    py: Python<'py>,
    host: String,
    port: u16,
    credentials: &NativeCredentials,
    options: &LinkOptions,
    reconnect: Option<PolicyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let (creds, config, policy) = (
        credentials.inner.clone(),
        options.client_config(),
        reconnect_policy(reconnect)?,
    );
    let session = options.session_config();
    future_into_py(py, async move {
        let link = Link::open(&host, port, creds, config, policy, session).await?;
        Python::attach(|py| NativeLink::create(py, link))
    })
}

#[pyfunction]
#[pyo3(signature = (host, port, credentials, options, reconnect=None))]
pub fn open_link_blocking(
    py: Python<'_>,
    host: String,
    port: u16,
    credentials: &NativeCredentials,
    options: &LinkOptions,
    reconnect: Option<PolicyTuple>,
) -> PyResult<Py<NativeLink>> {
    let (creds, config, policy) = (
        credentials.inner.clone(),
        options.client_config(),
        reconnect_policy(reconnect)?,
    );
    let session = options.session_config();
    let link = block_on(py, None, "connect", async move {
        Link::open(&host, port, creds, config, policy, session).await
    })?;
    NativeLink::create(py, link)
}

#[pymethods]
impl NativeLink {
    /// Awaitable: the current connection, once (re)connected.
    fn wait_connected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let link = self.inner.clone();
        future_into_py(py, async move {
            let conn = link.connected().await?;
            Python::attach(|py| NativeConnection::create(py, conn))
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn wait_connected_blocking(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<Py<NativeConnection>> {
        let link = self.inner.clone();
        let conn = block_on(py, timeout, "waiting for the connection", async move {
            link.connected().await
        })?;
        NativeConnection::create(py, conn)
    }

    /// The current connection, or the last one once the link has ended (None before any).
    #[getter]
    fn connection(&self, py: Python<'_>) -> PyResult<Option<Py<NativeConnection>>> {
        let conn = self.inner.current().or_else(|| self.inner.latest());
        conn.map(|c| NativeConnection::create(py, c)).transpose()
    }

    #[getter]
    fn connected(&self) -> bool {
        self.inner.is_connected()
    }

    #[getter]
    fn reconnects(&self) -> u64 {
        self.inner.reconnects()
    }

    #[getter]
    fn key_derivations(&self) -> u64 {
        self.inner.credentials().map_or(0, |c| c.derivations())
    }

    /// True for an exactly-once session.
    #[getter]
    fn exactly_once(&self) -> bool {
        self.inner.is_session()
    }

    /// Messages sent and not yet acknowledged (exactly-once sessions; 0 otherwise).
    #[getter]
    fn unacknowledged(&self) -> usize {
        self.inner.unacknowledged()
    }

    /// The current (or last) connection's counters, plus reconnects.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = match self.inner.current().or_else(|| self.inner.latest()) {
            Some(c) => connection::stats(py, &c)?,
            None => PyDict::new(py),
        };
        d.set_item("reconnects", self.inner.reconnects())?;
        d.set_item("unacknowledged", self.inner.unacknowledged())?;
        d.set_item("duplicates_dropped", self.inner.duplicates_dropped())?;
        Ok(d)
    }

    /// Use these credentials for every later handshake.
    fn set_credentials(&self, credentials: &NativeCredentials) {
        self.inner.set_credentials(Arc::clone(&credentials.inner));
    }
}
