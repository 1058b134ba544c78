//! Blocking waits for the sync API: the GIL is released, Ctrl-C is checked every 100 ms, and
//! an optional timeout raises `argonlink.Timeout`.

use std::future::Future;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::errors::{self, Timeout};
use crate::error::Result;

const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Longer durations are treated as this long (a century): "practically forever", without the
/// overflow a literal 1e30 seconds would cause.
const FOREVER_SECS: f64 = 100.0 * 365.25 * 86_400.0;

pub fn parse_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t >= 0.0 && !t.is_nan() => {
            Ok(Some(Duration::from_secs_f64(t.min(FOREVER_SECS))))
        }
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, got {t}"
        ))),
    }
}

/// Run `fut` to completion on the runtime while this thread waits with the GIL released.
pub fn block_on<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    what: &str,
    fut: impl Future<Output = Result<T>> + Send,
) -> PyResult<T> {
    let deadline = parse_timeout(timeout)?.map(|t| Instant::now() + t);
    let mut fut = Box::pin(fut);
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
            None => SIGNAL_CHECK,
        };
        let step = py.detach(|| {
            super::runtime::handle().block_on(async { tokio::time::timeout(slice, &mut fut).await })
        });
        match step {
            Ok(result) => return result.map_err(errors::to_py),
            Err(_elapsed) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Timeout::new_err(format!("{what} timed out")));
                }
                py.check_signals()?;
            }
        }
    }
}
