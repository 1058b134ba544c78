//! What a connection and a client link have in common for Python: they carry messages the same
//! way, so each binding method is written once here and both classes delegate to it.

use std::future::Future;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::buffers::{to_bytes, to_pybytes};
use super::doorbell::{self, Doorbell};
use super::errors;
use super::runtime::future_into_py;
use super::wait::{block_on, take_blocking};
use crate::core::message::Message;
use crate::error::{CloseCode, Result};
use crate::net::mailbox::Wakeup;
use crate::net::{Connection, Link};

/// A message channel as the binding uses it; every future is `Send + 'static`.
pub trait Channel: Clone + Send + Sync + 'static {
    fn try_send(&self, msg: Bytes) -> Result<bool>;
    fn send(self, msg: Bytes) -> impl Future<Output = Result<()>> + Send;
    fn try_recv(&self) -> Result<Option<Message>>;
    fn readable(self) -> impl Future<Output = ()> + Send;
    fn arm(&self, key: u64, wakeup: Wakeup) -> bool;
    fn disarm(&self, key: u64);
    fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> Result<bool>;
    fn disarm_writable(&self, key: u64);
    fn close(self, code: CloseCode, reason: String) -> impl Future<Output = ()> + Send;
    /// Connection: written to the socket; exactly-once session: acknowledged by the peer.
    fn flush(self) -> impl Future<Output = Result<()>> + Send;
}

impl Channel for Connection {
    fn try_send(&self, msg: Bytes) -> Result<bool> {
        Connection::try_send(self, msg)
    }
    async fn send(self, msg: Bytes) -> Result<()> {
        Connection::send(&self, msg).await
    }
    fn try_recv(&self) -> Result<Option<Message>> {
        Connection::try_recv(self)
    }
    async fn readable(self) {
        Connection::readable(&self).await
    }
    fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        Connection::arm(self, key, wakeup)
    }
    fn disarm(&self, key: u64) {
        Connection::disarm(self, key)
    }
    fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> Result<bool> {
        Ok(Connection::arm_writable(self, key, len, wakeup))
    }
    fn disarm_writable(&self, key: u64) {
        Connection::disarm_writable(self, key)
    }
    async fn close(self, code: CloseCode, reason: String) {
        Connection::close(&self, code, &reason).await;
    }
    async fn flush(self) -> Result<()> {
        self.flushed().await;
        Ok(())
    }
}

impl Channel for Link {
    fn try_send(&self, msg: Bytes) -> Result<bool> {
        Link::try_send(self, msg)
    }
    async fn send(self, msg: Bytes) -> Result<()> {
        Link::send(&self, msg).await
    }
    fn try_recv(&self) -> Result<Option<Message>> {
        Link::try_recv(self)
    }
    async fn readable(self) {
        Link::readable(&self).await
    }
    fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        Link::arm(self, key, wakeup)
    }
    fn disarm(&self, key: u64) {
        Link::disarm(self, key)
    }
    fn arm_writable(&self, key: u64, len: usize, wakeup: Wakeup) -> Result<bool> {
        Link::arm_writable(self, key, len, wakeup)
    }
    fn disarm_writable(&self, key: u64) {
        Link::disarm_writable(self, key)
    }
    async fn close(self, code: CloseCode, reason: String) {
        Link::close(&self, code, &reason).await;
    }
    async fn flush(self) -> Result<()> {
        Link::flush(&self).await
    }
}

pub fn try_send<C: Channel>(ch: &C, data: &Bound<'_, PyAny>) -> PyResult<bool> {
    ch.try_send(to_bytes(data)?).map_err(errors::to_py)
}

pub fn send<'py, C: Channel>(
    py: Python<'py>,
    ch: &C,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let send = ch.clone().send(to_bytes(data)?);
    future_into_py(py, async move { send.await.map_err(errors::to_py) })
}

pub fn send_blocking<C: Channel>(
    py: Python<'_>,
    ch: &C,
    data: &Bound<'_, PyAny>,
    timeout: Option<f64>,
) -> PyResult<()> {
    let msg = to_bytes(data)?;
    // The fast path first: queued without releasing the GIL or waiting.
    if ch.try_send(msg.clone()).map_err(errors::to_py)? {
        return Ok(());
    }
    block_on(py, timeout, "send", ch.clone().send(msg))
}

pub fn try_recv<'py, C: Channel>(py: Python<'py>, ch: &C) -> PyResult<Option<Bound<'py, PyBytes>>> {
    match ch.try_recv().map_err(errors::to_py)? {
        Some(m) => Ok(Some(to_pybytes(py, &m)?)),
        None => Ok(None),
    }
}

pub fn readable<'py, C: Channel>(py: Python<'py>, ch: &C) -> PyResult<Bound<'py, PyAny>> {
    let readable = ch.clone().readable();
    future_into_py(py, async move {
        readable.await;
        Ok(())
    })
}

/// Ring `bell` with `token` once `try_recv` may have something to say; true (and nothing
/// registered) if it has already.
pub fn arm<C: Channel>(ch: &C, bell: &Doorbell, token: u64) -> bool {
    ch.arm(token, doorbell::wakeup(bell, token))
}

pub fn disarm<C: Channel>(ch: &C, token: u64) {
    ch.disarm(token);
}

/// Ring `bell` with `token` once `try_send` of `len` bytes may succeed; true (and nothing
/// registered) if it may already.
pub fn arm_writable<C: Channel>(ch: &C, bell: &Doorbell, token: u64, len: usize) -> PyResult<bool> {
    ch.arm_writable(token, len, doorbell::wakeup(bell, token))
        .map_err(errors::to_py)
}

pub fn disarm_writable<C: Channel>(ch: &C, token: u64) {
    ch.disarm_writable(token);
}

pub fn recv_blocking<'py, C: Channel>(
    py: Python<'py>,
    ch: &C,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyBytes>> {
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

/// A close code the application asked for: only codes that may travel (PROTOCOL.md §4.3).
fn app_close_code(code: u16) -> PyResult<CloseCode> {
    let code = CloseCode(code);
    if !code.travels() {
        return Err(errors::to_py(crate::error::Error::config(format!(
            "close code {code} is reserved; use 1000, 1001, or 3000-3999 / 4100-4999"
        ))));
    }
    Ok(code)
}

pub fn close<'py, C: Channel>(
    py: Python<'py>,
    ch: &C,
    code: u16,
    reason: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let close = ch.clone().close(app_close_code(code)?, reason.to_owned());
    future_into_py(py, async move {
        close.await;
        Ok(())
    })
}

pub fn close_blocking<C: Channel>(py: Python<'_>, ch: &C, code: u16, reason: &str) -> PyResult<()> {
    let close = ch.clone().close(app_close_code(code)?, reason.to_owned());
    block_on(py, None, "close", async move {
        close.await;
        Ok(())
    })
}

pub fn flush<'py, C: Channel>(py: Python<'py>, ch: &C) -> PyResult<Bound<'py, PyAny>> {
    let flush = ch.clone().flush();
    future_into_py(py, async move { flush.await.map_err(errors::to_py) })
}

pub fn flush_blocking<C: Channel>(py: Python<'_>, ch: &C, timeout: Option<f64>) -> PyResult<()> {
    block_on(py, timeout, "flush", ch.clone().flush())
}
