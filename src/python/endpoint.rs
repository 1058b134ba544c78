//! `NativeEndpoint`: what a connection, a link (a client's, or a server's end of an
//! exactly-once session) and a channel have in common for Python. They carry messages the same
//! way, so the methods are written once, on this base class; `NativeConnection`, `NativeLink`
//! and `NativeChannel` extend it with what only they have.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::buffers::{to_bytes, to_pybytes};
use super::doorbell::{self, Doorbell};
use super::errors::closed;
use super::runtime::future_into_py;
use super::wait::{block_on, take_blocking};
use crate::core::message::Message;
use crate::error::{CloseCode, Error, Result};
use crate::net::mailbox::Wakeup;
use crate::net::{Channel, Connection, Link};

/// What a `NativeEndpoint` carries messages on.
#[derive(Clone)]
pub enum Chan {
    Connection(Connection),
    Link(Link),
    Channel(Channel),
}

impl Chan {
    fn try_send(&self, msg: Bytes) -> Result<bool> {
        match self {
            Chan::Connection(c) => c.try_send(msg),
            Chan::Link(l) => l.try_send(msg),
            Chan::Channel(c) => c.try_send(msg),
        }
    }

    async fn send(self, msg: Bytes) -> Result<()> {
        match self {
            Chan::Connection(c) => c.send(msg).await,
            Chan::Link(l) => l.send(msg).await,
            Chan::Channel(c) => c.send(msg).await,
        }
    }

    fn try_recv(&self) -> Result<Option<Message>> {
        match self {
            Chan::Connection(c) => c.try_recv(),
            Chan::Link(l) => l.try_recv(),
            Chan::Channel(c) => c.try_recv(),
        }
    }

    fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        match self {
            Chan::Connection(c) => c.arm(key, wakeup),
            Chan::Link(l) => l.arm(key, wakeup),
            Chan::Channel(c) => c.arm(key, wakeup),
        }
    }

    fn disarm(&self, key: u64) {
        match self {
            Chan::Connection(c) => c.disarm(key),
            Chan::Link(l) => l.disarm(key),
            Chan::Channel(c) => c.disarm(key),
        }
    }

    async fn close(self, code: CloseCode, reason: String) {
        match self {
            Chan::Connection(c) => {
                c.close(code, &reason).await;
            }
            Chan::Link(l) => {
                l.close(code, &reason).await;
            }
            Chan::Channel(c) => {
                let _ = c.close().await;
            }
        }
    }

    /// Connection: written to the socket; exactly-once session: acknowledged by the peer.
    async fn flush(self) -> Result<()> {
        match self {
            Chan::Connection(c) => {
                c.flushed().await;
                Ok(())
            }
            Chan::Link(l) => l.flush().await,
            Chan::Channel(c) => {
                c.flushed().await;
                Ok(())
            }
        }
    }

    /// How it ended, as the exception `recv` raises (None while it lives).
    fn ended(&self) -> Option<PyErr> {
        match self {
            Chan::Connection(c) => c.outcome().map(|info| closed(&info)),
            Chan::Link(l) => l.ended().map(PyErr::from),
            Chan::Channel(c) => c.ended().map(PyErr::from),
        }
    }
}

/// A close code the application asked for: only codes that may travel (PROTOCOL.md §4.3).
fn app_close_code(code: u16) -> PyResult<CloseCode> {
    let code = CloseCode(code);
    if !code.travels() {
        return Err(Error::config(format!(
            "close code {code} is reserved; use 1000, 1001, or 3000-3999 / 4100-4999"
        ))
        .into());
    }
    Ok(code)
}

#[pyclass(subclass, frozen, module = "argonlink._argonlink")]
pub struct NativeEndpoint {
    pub(crate) chan: Chan,
}

#[pymethods]
impl NativeEndpoint {
    /// Queue `data` if the send buffer has room; False (nothing queued) otherwise.
    fn try_send(&self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.chan.try_send(to_bytes(data)?)?)
    }

    /// Awaitable: queue `data`, waiting for room in the send buffer.
    fn send<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let send = self.chan.clone().send(to_bytes(data)?);
        future_into_py(py, async move { Ok(send.await?) })
    }

    #[pyo3(signature = (data, timeout=None))]
    fn send_blocking(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let msg = to_bytes(data)?;
        // The fast path first: queued without releasing the GIL or waiting.
        if self.chan.try_send(msg.clone())? {
            return Ok(());
        }
        block_on(py, timeout, "send", self.chan.clone().send(msg))
    }

    /// The next received message, or None if none is queued. Raises ConnectionClosed* once the
    /// channel has ended and every message that arrived before the end was taken.
    fn try_recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.chan.try_recv()? {
            Some(m) => Ok(Some(to_pybytes(py, &m)?)),
            None => Ok(None),
        }
    }

    /// Ring `bell` with `token` once `try_recv` may have something to say (once); True, and
    /// nothing registered, if it has already.
    fn arm(&self, bell: &Doorbell, token: u64) -> bool {
        self.chan.arm(token, doorbell::wakeup(bell, token))
    }

    /// Forget the `arm` under `token` (the waiter gave up).
    fn disarm(&self, token: u64) {
        self.chan.disarm(token);
    }

    /// Ring `bell` with `token` once `try_send` of `size` bytes may succeed (once); True, and
    /// nothing registered, if it may already.
    fn arm_writable(&self, bell: &Doorbell, token: u64, size: usize) -> PyResult<bool> {
        let wakeup = doorbell::wakeup(bell, token);
        Ok(match &self.chan {
            Chan::Connection(c) => c.arm_writable(token, size, wakeup),
            Chan::Link(l) => l.arm_writable(token, size, wakeup)?,
            Chan::Channel(c) => c.arm_writable(token, size, wakeup),
        })
    }

    fn disarm_writable(&self, token: u64) {
        match &self.chan {
            Chan::Connection(c) => c.disarm_writable(token),
            Chan::Link(l) => l.disarm_writable(token),
            Chan::Channel(c) => c.disarm_writable(token),
        }
    }

    /// Awaitable that completes when `try_recv` has something to say. Takes nothing.
    fn readable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let chan = self.chan.clone();
        future_into_py(py, async move {
            match chan {
                Chan::Connection(c) => c.readable().await,
                Chan::Link(l) => l.readable().await,
                Chan::Channel(c) => c.readable().await,
            }
            Ok(())
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn recv_blocking<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ch = &self.chan;
        let m = take_blocking(
            py,
            timeout,
            "recv",
            || ch.try_recv(),
            |token, wakeup| ch.arm(token, wakeup),
            |token| ch.disarm(token),
        )?;
        to_pybytes(py, &m)
    }

    /// Awaitable: closing handshake, bounded by the close timeout.
    #[pyo3(signature = (code=1000, reason=""))]
    fn close<'py>(&self, py: Python<'py>, code: u16, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let close = self
            .chan
            .clone()
            .close(app_close_code(code)?, reason.to_owned());
        future_into_py(py, async move {
            close.await;
            Ok(())
        })
    }

    #[pyo3(signature = (code=1000, reason=""))]
    fn close_blocking(&self, py: Python<'_>, code: u16, reason: &str) -> PyResult<()> {
        let close = self
            .chan
            .clone()
            .close(app_close_code(code)?, reason.to_owned());
        block_on(py, None, "close", async move {
            close.await;
            Ok(())
        })
    }

    /// End at once without a closing handshake (the peer sees an abnormal close); a link
    /// does not reconnect; a channel is reset (code 0).
    fn abort(&self) {
        match &self.chan {
            Chan::Connection(c) => c.abort("aborted by the application"),
            Chan::Link(l) => l.abort(),
            Chan::Channel(c) => {
                let _ = c.reset(
                    crate::core::channel::CANCELLED,
                    "aborted by the application",
                );
            }
        }
    }

    /// True once the channel has ended (not merely closing).
    #[getter]
    fn closed(&self) -> bool {
        match &self.chan {
            Chan::Connection(c) => c.outcome().is_some(),
            Chan::Link(l) => l.ended().is_some(),
            Chan::Channel(c) => c.ended().is_some(),
        }
    }

    /// The exception `recv` raises after the end (None while open).
    #[getter]
    fn close_exception(&self) -> Option<PyErr> {
        self.chan.ended()
    }

    /// Awaitable: a connection waits until everything queued was written to the socket; an
    /// exactly-once session, until the peer acknowledged it.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let flush = self.chan.clone().flush();
        future_into_py(py, async move { Ok(flush.await?) })
    }

    #[pyo3(signature = (timeout=None))]
    fn flush_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        block_on(py, timeout, "flush", self.chan.clone().flush())
    }
}
