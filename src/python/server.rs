//! `NativeServer`: a listening server handing out authenticated connections.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use zeroize::Zeroizing;

use super::buffers::secret_bytes;
use super::connection::NativeConnection;
use super::link::NativeLink;
use super::options::LinkOptions;
use super::runtime::future_into_py;
use super::wait::{block_on, parse_timeout};
use crate::core::handshake::Identity;
use crate::core::kdf::KdfParams;
use crate::error::Error;
use crate::net::server::Accepted;
use crate::net::server::{PeerLookup, ServerSecrets};
use crate::net::{Server, ServerKeySource};

#[pyclass(frozen, module = "argonlink._argonlink")]
pub struct NativeServer {
    inner: Server,
}

fn key_source(
    password: Option<&Bound<'_, PyAny>>,
    password_hash: Option<String>,
    kdf: (u32, u32, u32),
) -> PyResult<ServerKeySource> {
    match (password, password_hash) {
        (Some(pw), None) => {
            let pw = secret_bytes(pw)?;
            if pw.is_empty() {
                return Err(PyErr::from(Error::config("the password must not be empty")));
            }
            let params = KdfParams::new(kdf.0, kdf.1, kdf.2)?;
            Ok(ServerKeySource::Password(pw, params))
        }
        (None, Some(phc)) => ServerKeySource::from_phc(Zeroizing::new(phc)).map_err(PyErr::from),
        _ => Err(PyErr::from(Error::config(
            "give exactly one of password or password_hash",
        ))),
    }
}

/// One peer's identity and password (or PHC string), as the Python layer passes them.
type PeerSpec<'py> = (String, Option<Bound<'py, PyAny>>, Option<String>);

/// The shared password (if any), the peers' passwords, each checked now, and the lookup.
fn secrets(
    password: Option<&Bound<'_, PyAny>>,
    password_hash: Option<String>,
    peers: Vec<PeerSpec<'_>>,
    peer_lookup: Option<Py<PyAny>>,
    kdf: (u32, u32, u32),
) -> PyResult<ServerSecrets> {
    let shared = match (password, &password_hash) {
        (None, None) if !peers.is_empty() || peer_lookup.is_some() => None,
        _ => Some(key_source(password, password_hash, kdf)?),
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(peers.len());
    for (name, pw, hash) in peers {
        let identity = Identity::new(&name)?;
        if identity.is_anonymous() || !seen.insert(identity.clone()) {
            return Err(Error::config(format!(
                "peer identities must be non-empty and distinct ({name:?})"
            ))
            .into());
        }
        out.push((identity, key_source(pw.as_ref(), hash, kdf)?));
    }
    Ok(ServerSecrets {
        shared,
        peers: out,
        lookup: peer_lookup.map(|f| python_lookup(f, kdf)),
    })
}

/// The application's lookup, as the Python layer wraps it: called with the identity, it
/// returns None or `(password, password_hash)`. It runs on a blocking thread, under the GIL
/// only while it runs. What it raises is reported by its type alone: its text might hold a
/// secret.
fn python_lookup(lookup: Py<PyAny>, kdf: (u32, u32, u32)) -> PeerLookup {
    Arc::new(move |identity: &Identity| {
        Python::attach(|py| {
            let answer = lookup.call1(py, (identity.as_str(),)).map_err(|e| {
                let kind = e
                    .get_type(py)
                    .name()
                    .map_or("an exception".into(), |n| n.to_string());
                Error::config(format!("the peers lookup raised {kind}"))
            })?;
            if answer.is_none(py) {
                return Ok(None);
            }
            let (pw, hash): (Option<Bound<'_, PyAny>>, Option<String>) =
                answer.extract(py).map_err(|_| {
                    Error::config("the peers lookup must return None or (password, hash)")
                })?;
            key_source(pw.as_ref(), hash, kdf)
                .map(Some)
                .map_err(|e| Error::config(format!("the peers lookup's answer: {e}")))
        })
    })
}

/// A named peer's identity (None: the shared password).
fn peer_identity(identity: Option<&str>) -> PyResult<Option<Identity>> {
    match identity.map(Identity::new).transpose()? {
        Some(id) if id.is_anonymous() => {
            Err(Error::config("a peer identity must not be empty").into())
        }
        other => Ok(other),
    }
}

/// Awaitable: bind, derive the keys off the event loop, and start accepting.
#[pyfunction]
#[pyo3(signature = (host, port, options, kdf, password=None, password_hash=None, peers=Vec::new(), peer_lookup=None))]
#[allow(clippy::too_many_arguments)] // the binding's flat form of ServerSecrets
pub fn bind<'py>(
    py: Python<'py>,
    host: String,
    port: u16,
    options: &LinkOptions,
    kdf: (u32, u32, u32),
    password: Option<&Bound<'py, PyAny>>,
    password_hash: Option<String>,
    peers: Vec<PeerSpec<'py>>,
    peer_lookup: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let source = secrets(password, password_hash, peers, peer_lookup, kdf)?;
    let config = options.server_config();
    future_into_py(py, async move {
        let inner = Server::bind(&host, port, source, config).await?;
        Ok(NativeServer { inner })
    })
}

#[pyfunction]
#[pyo3(signature = (host, port, options, kdf, password=None, password_hash=None, peers=Vec::new(), peer_lookup=None))]
#[allow(clippy::too_many_arguments)] // the binding's flat form of ServerSecrets
pub fn bind_blocking<'py>(
    py: Python<'py>,
    host: String,
    port: u16,
    options: &LinkOptions,
    kdf: (u32, u32, u32),
    password: Option<&Bound<'py, PyAny>>,
    password_hash: Option<String>,
    peers: Vec<PeerSpec<'py>>,
    peer_lookup: Option<Py<PyAny>>,
) -> PyResult<NativeServer> {
    let source = secrets(password, password_hash, peers, peer_lookup, kdf)?;
    let config = options.server_config();
    let inner = block_on(py, None, "bind", async move {
        Server::bind(&host, port, source, config).await
    })?;
    Ok(NativeServer { inner })
}

fn to_py_accepted(py: Python<'_>, accepted: Accepted) -> PyResult<Py<PyAny>> {
    Ok(match accepted {
        Accepted::Connection(conn) => NativeConnection::create(py, conn)?.into_any(),
        Accepted::Session(link) => NativeLink::create(py, link)?.into_any(),
    })
}

#[pymethods]
impl NativeServer {
    #[getter]
    fn address(&self) -> (String, u16) {
        let a = self.inner.local_addr();
        (a.ip().to_string(), a.port())
    }

    /// The next connection (NativeConnection) or exactly-once session (NativeLink), if any.
    fn try_accept(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let accepted = self.inner.try_accept()?;
        accepted.map(|a| to_py_accepted(py, a)).transpose()
    }

    /// Awaitable that completes when `try_accept` has something to say. Takes nothing.
    fn acceptable<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = self.inner.clone();
        future_into_py(py, async move {
            server.acceptable().await;
            Ok(())
        })
    }

    #[pyo3(signature = (timeout=None))]
    fn accept_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let server = self.inner.clone();
        let accepted = block_on(py, timeout, "accept", async move { server.accept().await })?;
        to_py_accepted(py, accepted)
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = self.inner.clone();
        future_into_py(py, async move {
            server.close().await;
            Ok(())
        })
    }

    fn close_blocking(&self, py: Python<'_>) -> PyResult<()> {
        let server = self.inner.clone();
        block_on(py, None, "close", async move {
            server.close().await;
            Ok(())
        })
    }

    /// Awaitable: install a new password (or PHC string), shared or for `identity`; returns
    /// the new key epoch.
    #[pyo3(signature = (kdf, grace, password=None, password_hash=None, identity=None))]
    fn set_password<'py>(
        &self,
        py: Python<'py>,
        kdf: (u32, u32, u32),
        grace: f64,
        password: Option<&Bound<'py, PyAny>>,
        password_hash: Option<String>,
        identity: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = key_source(password, password_hash, kdf)?;
        let grace = parse_timeout(Some(grace))?.unwrap_or_default();
        let identity = peer_identity(identity)?;
        let server = self.inner.clone();
        future_into_py(py, async move {
            server
                .set_password(source, grace, identity)
                .await
                .map_err(PyErr::from)
        })
    }

    #[pyo3(signature = (kdf, grace, password=None, password_hash=None, identity=None))]
    fn set_password_blocking(
        &self,
        py: Python<'_>,
        kdf: (u32, u32, u32),
        grace: f64,
        password: Option<&Bound<'_, PyAny>>,
        password_hash: Option<String>,
        identity: Option<&str>,
    ) -> PyResult<u32> {
        let source = key_source(password, password_hash, kdf)?;
        let grace = parse_timeout(Some(grace))?.unwrap_or_default();
        let identity = peer_identity(identity)?;
        let server = self.inner.clone();
        block_on(py, None, "set_password", async move {
            server.set_password(source, grace, identity).await
        })
    }

    /// Refuse `identity` from now on and end its connections and sessions; returns how many.
    /// Takes no lock the event loop waits on, so it does not block.
    fn revoke(&self, identity: &str) -> PyResult<usize> {
        let identity = peer_identity(Some(identity))?.expect("given");
        Ok(self.inner.revoke(&identity))
    }

    /// The key epoch new clients of the shared password authenticate under (1 at start, +1
    /// per change; 0 without a shared password).
    #[getter]
    fn key_epoch(&self) -> u32 {
        self.inner.key_epoch()
    }

    /// The key epoch new clients of `identity` authenticate under (0: it is not accepted).
    fn key_epoch_of(&self, identity: &str) -> PyResult<u32> {
        Ok(self.inner.key_epoch_of(&Identity::new(identity)?))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("handshakes_ok", s.handshakes_ok.load(Relaxed))?;
        d.set_item("handshakes_failed", s.handshakes_failed.load(Relaxed))?;
        d.set_item("auth_failures", s.auth_failures.load(Relaxed))?;
        d.set_item("handshakes_evicted", s.handshakes_evicted.load(Relaxed))?;
        d.set_item("rejected_busy", s.rejected_busy.load(Relaxed))?;
        d.set_item("key_derivations", s.key_derivations.load(Relaxed))?;
        d.set_item("password_changes", s.password_changes.load(Relaxed))?;
        d.set_item("unknown_identities", s.unknown_identities.load(Relaxed))?;
        d.set_item("revocations", s.revocations.load(Relaxed))?;
        d.set_item("throttled", s.throttled.load(Relaxed))?;
        d.set_item("throttle_refusals", s.throttle_refusals.load(Relaxed))?;
        d.set_item("key_epoch", self.inner.key_epoch())?;
        d.set_item("live_connections", self.inner.live_connections())?;
        d.set_item("pending_handshakes", self.inner.pending_handshakes())?;
        d.set_item("sessions", self.inner.sessions())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("<NativeServer {}>", self.inner.local_addr())
    }
}
