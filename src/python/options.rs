//! Settings from Python, checked once and turned into the I/O layer's config structs.
//! `None` means "the library default". The defaults and the checks live in Rust, in one place:
//! the Python package reads the defaults from [`defaults`] and has its policy objects checked by
//! [`check_kdf`], [`check_rekey`], [`check_reconnect`] and [`check_throttle`], the same code the
//! I/O layer runs.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::wait::parse_timeout;
use crate::core::handshake::{NodeId, NODE_ID_LEN};
use crate::core::kdf::{KdfBounds, KdfParams};
use crate::core::record::RekeyPolicy;
use crate::error::Error;
use crate::net::throttle::ThrottlePolicy;
use crate::net::{ClientConfig, LinkConfig, ReconnectPolicy, ServerConfig, SessionConfig};

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
    pub throttle: Option<ThrottlePolicy>,
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
        session_linger=None, throttle=None, throttle_off=false, max_channels=None,
        channel_window=None, channel_buffer=None, max_channel_window=None))]
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
        throttle: Option<ThrottleTuple>,
        throttle_off: bool,
        max_channels: Option<u32>,
        channel_window: Option<u32>,
        channel_buffer: Option<u64>,
        max_channel_window: Option<u64>,
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
            max_channels: max_channels.unwrap_or(ld.max_channels),
            channel_window: channel_window.unwrap_or(ld.channel_window),
            channel_buffer: channel_buffer.unwrap_or(ld.channel_buffer),
            max_channel_window: max_channel_window.unwrap_or(ld.max_channel_window),
        };
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
            throttle: match (throttle, throttle_off) {
                (_, true) => None,
                (Some(t), false) => Some(throttle_policy(t)?),
                (None, false) => sd.throttle,
            },
        };
        // The same checks the I/O layer runs when a server binds or a client dials.
        opts.server_config().validate()?;
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
            throttle: self.throttle,
        }
    }

    /// The client's session, if it asked for exactly-once delivery.
    pub fn session_config(&self) -> Option<SessionConfig> {
        self.exactly_once.then(|| self.session.clone())
    }
}

/// `(initial_delay, max_delay, multiplier, jitter, max_attempts)` from Python's ReconnectPolicy.
pub(super) type PolicyTuple = (f64, f64, f64, f64, Option<u32>);

/// A policy's duration field from Python: zero or more seconds (the policy's own check says
/// what else it must be).
fn policy_seconds(v: f64, what: &str) -> PyResult<Duration> {
    parse_timeout(Some(v))
        .map(|d| d.unwrap_or_default())
        .map_err(|_| {
            PyErr::from(Error::config(format!(
                "{what} must be zero or more seconds, got {v}"
            )))
        })
}

/// A redial policy from Python, checked by [`ReconnectPolicy::validate`].
pub(super) fn reconnect_policy(t: Option<PolicyTuple>) -> PyResult<Option<ReconnectPolicy>> {
    let Some((initial, max, multiplier, jitter, max_attempts)) = t else {
        return Ok(None);
    };
    let secs = |v: f64, name: &str| policy_seconds(v, name);
    let p = ReconnectPolicy {
        initial_delay: secs(initial, "initial_delay")?,
        max_delay: secs(max, "max_delay")?,
        multiplier,
        jitter,
        max_attempts,
    };
    p.validate()?;
    Ok(Some(p))
}

/// `(free_failures, initial_delay, max_delay, forget_after, global_failures_per_minute)` from
/// Python's ThrottlePolicy.
pub(super) type ThrottleTuple = (u32, f64, f64, f64, u32);

/// A throttle policy from Python, checked by [`ThrottlePolicy::validate`].
fn throttle_policy(t: ThrottleTuple) -> PyResult<ThrottlePolicy> {
    let (free_failures, initial, max, forget, global_failures_per_minute) = t;
    let secs = |v: f64, name: &str| policy_seconds(v, &format!("throttle: {name}"));
    let p = ThrottlePolicy {
        free_failures,
        initial_delay: secs(initial, "initial_delay")?,
        max_delay: secs(max, "max_delay")?,
        forget_after: secs(forget, "forget_after")?,
        global_failures_per_minute,
    };
    p.validate()?;
    Ok(p)
}

/// Check a throttle policy as a server will.
#[pyfunction]
pub(super) fn check_throttle(policy: ThrottleTuple) -> PyResult<()> {
    throttle_policy(policy).map(drop)
}

/// Check Argon2 costs as the key derivation will (Argon2's own limits included).
#[pyfunction]
pub(super) fn check_kdf(m_cost: u32, t_cost: u32, p_cost: u32) -> PyResult<()> {
    KdfParams::new(m_cost, t_cost, p_cost)?;
    Ok(())
}

/// Check a rekey policy as a connection will.
#[pyfunction]
pub(super) fn check_rekey(bytes: u64, frames: u64, interval: f64) -> PyResult<()> {
    let interval = match parse_timeout(Some(interval)) {
        Ok(Some(d)) => d,
        _ => {
            return Err(PyErr::from(Error::config(format!(
                "interval must be a positive number of seconds, got {interval}"
            ))))
        }
    };
    RekeyPolicy {
        bytes,
        frames,
        interval,
    }
    .validate()?;
    Ok(())
}

/// Check a redial policy as a client will.
#[pyfunction]
pub(super) fn check_reconnect(policy: PolicyTuple) -> PyResult<()> {
    reconnect_policy(Some(policy)).map(drop)
}

/// Every library default, by the name of its Python keyword (seconds as floats; None: no
/// limit, or derived from another setting as documented). Argon2 costs are
/// `(m_cost, t_cost, p_cost)`; `kdf` is the server's, `kdf_floor` / `kdf_cap` the client's.
#[pyfunction]
pub(super) fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let (link, client, server) = (
        LinkConfig::default(),
        ClientConfig::default(),
        ServerConfig::default(),
    );
    let (bounds, reconnect) = (KdfBounds::default(), ReconnectPolicy::default());
    let costs = |p: KdfParams| (p.m_cost, p.t_cost, p.p_cost);
    let secs = |d: Duration| d.as_secs_f64();
    let d = PyDict::new(py);
    d.set_item("max_message_size", link.max_message_size)?;
    d.set_item("send_buffer", link.send_buffer)?;
    d.set_item("recv_buffer", link.recv_buffer)?;
    d.set_item("close_timeout", secs(link.close_timeout))?;
    d.set_item("rekey_bytes", link.rekey.bytes)?;
    d.set_item("rekey_frames", link.rekey.frames)?;
    d.set_item("rekey_interval", secs(link.rekey.interval))?;
    d.set_item("ping_interval", link.ping_interval.map_or(0.0, secs))?;
    d.set_item("ping_timeout", secs(link.ping_timeout))?;
    d.set_item("idle_timeout", link.idle_timeout.map(secs))?;
    d.set_item("open_timeout", secs(client.open_timeout))?;
    d.set_item("kdf", costs(KdfParams::default()))?;
    d.set_item("kdf_floor", costs(bounds.floor))?;
    d.set_item("kdf_cap", costs(bounds.cap))?;
    d.set_item("kdf_rfc9106", costs(KdfParams::RFC9106))?;
    let throttle = ThrottlePolicy::default();
    d.set_item("throttle_free_failures", throttle.free_failures)?;
    d.set_item("throttle_initial_delay", secs(throttle.initial_delay))?;
    d.set_item("throttle_max_delay", secs(throttle.max_delay))?;
    d.set_item("throttle_forget_after", secs(throttle.forget_after))?;
    d.set_item(
        "throttle_global_failures_per_minute",
        throttle.global_failures_per_minute,
    )?;
    d.set_item("kdf_owasp", costs(KdfParams::OWASP))?;
    d.set_item("handshake_timeout", secs(server.handshake_timeout))?;
    d.set_item("max_pending_handshakes", server.max_pending_handshakes)?;
    d.set_item("max_pending_per_source", server.max_pending_per_source)?;
    d.set_item("max_sessions", server.max_sessions)?;
    d.set_item("accept_backlog", server.accept_backlog)?;
    d.set_item("max_connections", server.max_connections)?;
    d.set_item("max_unacked", server.session.max_unacked)?;
    d.set_item("session_linger", secs(server.session_linger))?;
    d.set_item("reconnect_initial_delay", secs(reconnect.initial_delay))?;
    d.set_item("reconnect_max_delay", secs(reconnect.max_delay))?;
    d.set_item("reconnect_multiplier", reconnect.multiplier)?;
    d.set_item("reconnect_jitter", reconnect.jitter)?;
    d.set_item("reconnect_max_attempts", reconnect.max_attempts)?;
    Ok(d)
}
