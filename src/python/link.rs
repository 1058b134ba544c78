//! `NativeLink`: the client side, one server, reconnecting if asked.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::channel;
use super::connection::{NativeConnection, NativeCredentials};
use super::doorbell::Doorbell;
use super::errors;
use super::options::LinkOptions;
use super::runtime::future_into_py;
use super::wait::{block_on, parse_timeout};
use crate::error::Error;
use crate::net::{Link, ReconnectPolicy};

#[pyclass(frozen, module = "argonlink._argonlink")]
pub struct NativeLink {
    pub(crate) inner: Link,
}

/// `(initial_delay, max_delay, multiplier, jitter, max_attempts)` from Python's ReconnectPolicy.
type PolicyTuple = (f64, f64, f64, f64, Option<u32>);

fn policy(t: Option<PolicyTuple>) -> PyResult<Option<ReconnectPolicy>> {
    let Some((initial, max, multiplier, jitter, max_attempts)) = t else {
        return Ok(None);
    };
    let secs = |v: f64, name: &str| {
        parse_timeout(Some(v))
            .map(|d| d.unwrap_or_default())
            .map_err(|_| errors::to_py(Error::config(format!("reconnect {name} must be >= 0"))))
    };
    let p = ReconnectPolicy {
        initial_delay: secs(initial, "initial_delay")?,
        max_delay: secs(max, "max_delay")?,
        multiplier,
        jitter,
        max_attempts,
    };
    p.validate().map_err(errors::to_py)?;
    Ok(Some(p))
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
        policy(reconnect)?,
    );
    let session = options.session_config();
    future_into_py(py, async move {
        let inner = Link::open(&host, port, creds, config, policy, session)
            .await
            .map_err(errors::to_py)?;
        Ok(NativeLink { inner })
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
) -> PyResult<NativeLink> {
    let (creds, config, policy) = (
        credentials.inner.clone(),
        options.client_config(),
        policy(reconnect)?,
    );
    let session = options.session_config();
    let inner = block_on(py, None, "connect", async move {
        Link::open(&host, port, creds, config, policy, session).await
    })?;
    Ok(NativeLink { inner })
}

#[pymethods]
impl NativeLink {
    fn try_send(&self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        channel::try_send(&self.inner, data)
    }

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

    fn try_recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        channel::try_recv(py, &self.inner)
    }

    /// See `NativeConnection.arm`.
    fn arm(&self, bell: &Doorbell, token: u64) -> bool {
        channel::arm(&self.inner, bell, token)
    }

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

    #[pyo3(signature = (code=1000, reason=""))]
    fn close<'py>(&self, py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        channel::close(py, &self.inner, code, reason)
    }

    #[pyo3(signature = (code=1000, reason=""))]
    fn close_blocking(&self, py: Python<'_>, code: u16, reason: &str) -> PyResult<()> {
        channel::close_blocking(py, &self.inner, code, reason)
    }

    /// Awaitable: the current connection, once (re)connected.
    fn wait_connected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let link = self.inner.clone();
        future_into_py(py, async move {
            let inner = link.connected().await.map_err(errors::to_py)?;
            Ok(NativeConnection { inner })
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn wait_connected_blocking(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<NativeConnection> {
        let link = self.inner.clone();
        let inner = block_on(py, timeout, "waiting for the connection", async move {
            link.connected().await
        })?;
        Ok(NativeConnection { inner })
    }

    /// The current connection, or the last one once the link has ended (None before any).
    #[getter]
    fn connection(&self) -> Option<NativeConnection> {
        let conn = self.inner.current().or_else(|| self.inner.latest());
        conn.map(|inner| NativeConnection { inner })
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

    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        channel::flush(py, &self.inner)
    }

    #[pyo3(signature = (timeout=None))]
    fn flush_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        channel::flush_blocking(py, &self.inner, timeout)
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

    /// End at once: no flush, no reconnect; the current connection is aborted.
    fn abort(&self) {
        self.inner.abort();
    }

    /// True once the link has ended for good.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.ended().is_some()
    }

    /// The exception `recv` raises after the end (None while the link lives).
    #[getter]
    fn close_exception(&self) -> Option<PyErr> {
        self.inner.ended().map(errors::to_py)
    }

    /// The current (or last) connection's counters, plus reconnects.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = match self.connection() {
            Some(c) => c.stats(py)?,
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
