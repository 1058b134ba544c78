//! `NativeChannel` (one channel of a connection), and the connection's methods that open and
//! accept channels.

use pyo3::prelude::*;

use super::doorbell::{self, Doorbell};
use super::endpoint::{Chan, NativeEndpoint};
use super::runtime::future_into_py;
use super::wait::{block_on, take_blocking};
use crate::net::{Channel, Connection};

/// One channel: the message methods of `NativeEndpoint`, and its id, name, half-close and
/// reset.
#[pyclass(extends = NativeEndpoint, frozen, module = "argonlink._argonlink")]
pub struct NativeChannel {
    inner: Channel,
}

impl NativeChannel {
    pub(crate) fn create(py: Python<'_>, ch: Channel) -> PyResult<Py<NativeChannel>> {
        let base = NativeEndpoint {
            chan: Chan::Channel(ch.clone()),
        };
        Py::new(
            py,
            PyClassInitializer::from(base).add_subclass(NativeChannel { inner: ch }),
        )
    }
}

#[pymethods]
impl NativeChannel {
    #[getter]
    fn id(&self) -> u32 {
        self.inner.id()
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Half-close: no more messages from us; we still receive.
    fn finish(&self) -> PyResult<()> {
        Ok(self.inner.finish()?)
    }

    #[pyo3(signature = (code=0, reason=""))]
    fn reset(&self, code: u16, reason: &str) -> PyResult<()> {
        Ok(self.inner.reset(code, reason)?)
    }

    /// Awaitable: finish, then wait (at most the close timeout) for the peer to finish.
    #[pyo3(signature = (code=0, reason=""))]
    fn close<'py>(&self, py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let _ = (code, reason); // the connection's signature; a channel's close has no code
        let ch = self.inner.clone();
        future_into_py(py, async move { Ok(ch.close().await?) })
    }

    #[pyo3(signature = (code=0, reason=""))]
    fn close_blocking(&self, py: Python<'_>, code: u16, reason: &str) -> PyResult<()> {
        let _ = (code, reason);
        let ch = self.inner.clone();
        block_on(py, None, "close", async move { ch.close().await })
    }

    /// Messages received and not yet taken.
    #[getter]
    fn queued(&self) -> usize {
        self.inner.queued()
    }

    fn __repr__(&self) -> String {
        format!(
            "<NativeChannel id={} name={:?}>",
            self.inner.id(),
            self.inner.name()
        )
    }
}

fn created(py: Python<'_>, ch: Option<Channel>) -> PyResult<Option<Py<NativeChannel>>> {
    ch.map(|c| NativeChannel::create(py, c)).transpose()
}

// What `NativeConnection`'s channel methods do (its one `#[pymethods]` block calls these).

pub(crate) fn try_open(
    py: Python<'_>,
    conn: &Connection,
    name: &str,
) -> PyResult<Option<Py<NativeChannel>>> {
    let ch = conn.try_open_channel(name)?;
    created(py, ch)
}

pub(crate) fn open<'py>(
    py: Python<'py>,
    conn: &Connection,
    name: String,
) -> PyResult<Bound<'py, PyAny>> {
    let conn = conn.clone();
    future_into_py(py, async move {
        let ch = conn.open_channel(&name).await?;
        Python::attach(|py| NativeChannel::create(py, ch))
    })
}

pub(crate) fn open_blocking(
    py: Python<'_>,
    conn: &Connection,
    name: String,
    timeout: Option<f64>,
) -> PyResult<Py<NativeChannel>> {
    let conn = conn.clone();
    let ch = block_on(py, timeout, "open_channel", async move {
        conn.open_channel(&name).await
    })?;
    NativeChannel::create(py, ch)
}

pub(crate) fn try_accept(
    py: Python<'_>,
    conn: &Connection,
    queue: &str,
) -> PyResult<Option<Py<NativeChannel>>> {
    let ch = conn.try_accept_channel(queue)?;
    created(py, ch)
}

pub(crate) fn arm_accept(
    conn: &Connection,
    queue: &str,
    bell: &Doorbell,
    token: u64,
) -> PyResult<bool> {
    Ok(conn.arm_accept(queue, token, doorbell::wakeup(bell, token))?)
}

pub(crate) fn acceptable<'py>(
    py: Python<'py>,
    conn: &Connection,
    queue: String,
) -> PyResult<Bound<'py, PyAny>> {
    let conn = conn.clone();
    future_into_py(py, async move {
        conn.acceptable(&queue).await?;
        Ok(())
    })
}

pub(crate) fn accept_blocking(
    py: Python<'_>,
    conn: &Connection,
    queue: &str,
    timeout: Option<f64>,
) -> PyResult<Py<NativeChannel>> {
    let ch = take_blocking(
        py,
        timeout,
        "accept_channel",
        || conn.try_accept_channel(queue),
        |token, wakeup| conn.arm_accept(queue, token, wakeup).unwrap_or(true),
        |token| conn.disarm_accept(queue, token),
    )?;
    NativeChannel::create(py, ch)
}
