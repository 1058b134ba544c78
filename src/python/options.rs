//! Settings from Python, checked once and turned into the I/O layer's config structs.
//! `None` means "the library default"; the defaults live in Rust, in one place.

use std::time::Duration;

use pyo3::prelude::*;

use super::wait::parse_timeout;
use crate::core::handshake::{NodeId, NODE_ID_LEN};
use crate::core::kdf::{KdfBounds, KdfParams};
use crate::core::record::RekeyPolicy;
use crate::error::Error;
use crate::net::{ClientConfig, LinkConfig, ServerConfig, SessionConfig};

/// Everything about a link that is not a secret. Built by the Python layer.
#[pyclass(frozen, module = "argonlink._argonlink")]
#[derive(Clone, Debug)]
pub struct LinkOptions {
    pub link: LinkConfig,
    pub open_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_pending_handshakes: usize,
    pub max_pending_per_source: Option<usize>,
    pub max_sessions: usize,
    pub accept_backlog: usize,
    pub max_connections: Option<usize>,
    pub kdf_bounds: KdfBounds,
    /// Client: ask for an acknowledged, exactly-once session.
    pub exactly_once: bool,
    pub session: SessionConfig,
    pub session_linger: Duration,
}

fn seconds(v: Option<f64>, default: Duration, name: &str) -> PyResult<Duration> {
    let positive = || {
        PyErr::from(Error::config(format!(
            "{name} must be a positive number of seconds"
        )))
    };
    match parse_timeout(v).map_err(|_| positive())? {
        Some(d) if d.is_zero() => Err(positive()),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

#[pymethods]
impl LinkOptions {
    #[new]
    #[pyo3(signature = (*, node_id=None, max_message_size=None, send_buffer=None,
        recv_buffer=None, close_timeout=None, open_timeout=None, handshake_timeout=None,
        max_pending_handshakes=None, max_pending_per_source=None, max_sessions=None,
        accept_backlog=None, rekey_bytes=None, rekey_frames=None,
        rekey_interval=None, kdf_floor=None, kdf_cap=None, ping_interval=None, ping_timeout=None,
        idle_timeout=None, max_connections=None, exactly_once=false, max_unacked=None,
        session_linger=None))]
    // Long: one line per setting (its default, its check), the one place Python's keyword
    // arguments meet the Rust config structs.
    #[allow(clippy::too_many_arguments)]
    fn new(
        node_id: Option<[u8; NODE_ID_LEN]>,
        max_message_size: Option<u64>,
        send_buffer: Option<usize>,
        recv_buffer: Option<usize>,
        close_timeout: Option<f64>,
        open_timeout: Option<f64>,
        handshake_timeout: Option<f64>,
        max_pending_handshakes: Option<usize>,
        max_pending_per_source: Option<usize>,
        max_sessions: Option<usize>,
        accept_backlog: Option<usize>,
        rekey_bytes: Option<u64>,
        rekey_frames: Option<u64>,
        rekey_interval: Option<f64>,
        kdf_floor: Option<(u32, u32, u32)>,
        kdf_cap: Option<(u32, u32, u32)>,
        ping_interval: Option<f64>,
        ping_timeout: Option<f64>,
        idle_timeout: Option<f64>,
        max_connections: Option<usize>,
        exactly_once: bool,
        max_unacked: Option<usize>,
        session_linger: Option<f64>,
    ) -> PyResult<Self> {
        let (ld, cd, sd) = (
            LinkConfig::default(),
            ClientConfig::default(),
            ServerConfig::default(),
        );
        let rd = RekeyPolicy::default();
        let kdf = |t: Option<(u32, u32, u32)>, d: KdfParams| match t {
            Some((m, t, p)) => KdfParams::new(m, t, p).map_err(PyErr::from),
            None => Ok(d),
        };
        let bounds_default = KdfBounds::default();
        let link = LinkConfig {
            node_id: node_id.map(NodeId).unwrap_or(ld.node_id),
            max_message_size: max_message_size.unwrap_or(ld.max_message_size),
            send_buffer: send_buffer.unwrap_or(ld.send_buffer),
            recv_buffer: recv_buffer.unwrap_or(ld.recv_buffer),
            close_timeout: seconds(close_timeout, ld.close_timeout, "close_timeout")?,
            rekey: RekeyPolicy {
                bytes: rekey_bytes.unwrap_or(rd.bytes),
                frames: rekey_frames.unwrap_or(rd.frames),
                interval: seconds(rekey_interval, rd.interval, "rekey_interval")?,
            },
            // 0 turns keepalive off.
            ping_interval: match ping_interval {
                Some(0.0) => None,
                v => Some(seconds(
                    v,
                    ld.ping_interval.unwrap_or_default(),
                    "ping_interval",
                )?),
            },
            ping_timeout: match (ping_timeout, ping_interval) {
                (None, Some(i)) if i > 0.0 => {
                    seconds(Some(3.0 * i), ld.ping_timeout, "ping_timeout")?
                }
                (t, _) => seconds(t, ld.ping_timeout, "ping_timeout")?,
            },
            idle_timeout: idle_timeout
                .map(|v| seconds(Some(v), Duration::ZERO, "idle_timeout"))
                .transpose()?,
        };
        link.validate()?;
        let opts = LinkOptions {
            link,
            open_timeout: seconds(open_timeout, cd.open_timeout, "open_timeout")?,
            handshake_timeout: seconds(
                handshake_timeout,
                sd.handshake_timeout,
                "handshake_timeout",
            )?,
            max_pending_handshakes: max_pending_handshakes.unwrap_or(sd.max_pending_handshakes),
            max_pending_per_source,
            max_sessions: max_sessions.unwrap_or(sd.max_sessions),
            accept_backlog: accept_backlog.unwrap_or(sd.accept_backlog),
            max_connections,
            kdf_bounds: KdfBounds {
                floor: kdf(kdf_floor, bounds_default.floor)?,
                cap: kdf(kdf_cap, bounds_default.cap)?,
            },
            exactly_once,
            session: SessionConfig {
                max_unacked: max_unacked.unwrap_or(sd.session.max_unacked),
            },
            session_linger: seconds(session_linger, sd.session_linger, "session_linger")?,
        };
        if opts.session.max_unacked < 1024 || opts.session.max_unacked > u32::MAX as usize >> 3 {
            return Err(PyErr::from(Error::config(
                "max_unacked must be between 1 KiB and 512 MiB",
            )));
        }
        if opts.max_pending_handshakes == 0
            || opts.max_pending_per_source == Some(0)
            || opts.max_sessions == 0
            || opts.accept_backlog == 0
            || opts.max_connections == Some(0)
        {
            return Err(PyErr::from(Error::config(
                "max_pending_handshakes, max_pending_per_source, max_sessions, accept_backlog and \
                 max_connections must be positive",
            )));
        }
        Ok(opts)
    }

    /// This side's node id (16 bytes).
    #[getter]
    fn node_id(&self) -> [u8; NODE_ID_LEN] {
        self.link.node_id.0
    }

    #[getter]
    fn exactly_once(&self) -> bool {
        self.exactly_once
    }

    #[getter]
    fn max_message_size(&self) -> u64 {
        self.link.max_message_size
    }

    fn __repr__(&self) -> String {
        format!(
            "LinkOptions(node_id={}, max_message_size={}, open_timeout={:?}, handshake_timeout={:?})",
            self.link.node_id, self.link.max_message_size, self.open_timeout, self.handshake_timeout
        )
    }
}

impl LinkOptions {
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            link: self.link.clone(),
            open_timeout: self.open_timeout,
            kdf_bounds: self.kdf_bounds,
        }
    }

    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            link: self.link.clone(),
            handshake_timeout: self.handshake_timeout,
            max_pending_handshakes: self.max_pending_handshakes,
            max_pending_per_source: self.max_pending_per_source,
            accept_backlog: self.accept_backlog,
            max_connections: self.max_connections,
            session: self.session.clone(),
            session_linger: self.session_linger,
            max_sessions: self.max_sessions,
        }
    }

    /// The client's session, if it asked for exactly-once delivery.
    pub fn session_config(&self) -> Option<SessionConfig> {
        self.exactly_once.then(|| self.session.clone())
    }
}
