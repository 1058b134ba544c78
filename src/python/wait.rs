//! Blocking waits for the sync API: the GIL is released, Ctrl-C is checked every 100 ms, and
//! an optional timeout raises `argonlink.Timeout`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::errors::Timeout;
use crate::error::CloseInfo;
use crate::error::{Error, Result};
use crate::net::mailbox::Wakeup;

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

/// Wakes a thread that polls a future itself.
struct ThreadWaker {
    thread: std::thread::Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        self.thread.unpark();
    }
}

/// Run `fut` to completion while this thread waits with the GIL released.
///
/// The thread polls `fut` itself (within the runtime's context) and parks between polls,
/// rather than calling the runtime's `block_on`: no tokio timer of its own, and no poll once
/// the runtime is shutting down (a daemon thread still waiting at interpreter exit then gets an
/// error instead of panicking inside tokio).
pub fn block_on<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    what: &str,
    fut: impl Future<Output = Result<T>> + Send,
) -> PyResult<T> {
    let deadline = parse_timeout(timeout)?.map(|t| Instant::now() + t);
    let mut fut = Box::pin(fut);
    let waker = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        woken: AtomicBool::new(true),
    });
    let task_waker = Waker::from(waker.clone());
    loop {
        let slice_end = Instant::now() + SIGNAL_CHECK;
        let until = deadline.map_or(slice_end, |d| d.min(slice_end));
        let step = py.detach(|| loop {
            if waker.woken.swap(false, SeqCst) {
                let Some(_running) = super::runtime::poll_guard() else {
                    return Some(Err(Error::Closed(CloseInfo::abnormal(
                        "the interpreter is exiting",
                    ))));
                };
                let _context = super::runtime::handle().enter();
                if let Poll::Ready(result) =
                    fut.as_mut().poll(&mut Context::from_waker(&task_waker))
                {
                    return Some(result);
                }
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            if !waker.woken.load(SeqCst) {
                std::thread::park_timeout(until - now);
            }
        });
        match step {
            Some(result) => return result.map_err(PyErr::from),
            None => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Timeout::new_err(format!("{what} timed out")));
                }
                py.check_signals()?;
            }
        }
    }
}

/// Before parking, a waiting thread spins this long: an answer that comes within a loopback
/// round trip then costs no sleep and wake-up (on a quiet virtual machine a halted CPU takes
/// tens of microseconds to wake). A busy spin, not `yield_now`: with other work runnable on
/// the core (even at a lower priority), a yield hands it the core until the next scheduler
/// tick, and round trips went from 20 us to 4 ms (measured: 45k/s quiet either way; 250/s
/// yielding against 11k/s spinning beside two background jobs).
const SPIN: Duration = Duration::from_micros(50);

/// Tokens for blocking waits; the top bit keeps them apart from the asyncio doorbell's tokens
/// (counted from 1 in Python), which may wait on the same channel.
static TOKENS: AtomicU64 = AtomicU64::new(1 << 63);

/// Take the next item, waiting while there is none: the GIL is released, Ctrl-C is checked
/// every 100 ms, and `timeout` raises `argonlink.Timeout`.
///
/// The thread parks and the channel's one-shot wake-up (`arm`) unparks it: no tokio future,
/// timer or `block_on` in between, which for a small request/response is a measurable part of
/// the round trip.
pub fn take_blocking<T>(
    py: Python<'_>,
    timeout: Option<f64>,
    what: &str,
    mut take: impl FnMut() -> Result<Option<T>>,
    arm: impl Fn(u64, Wakeup) -> bool,
    disarm: impl Fn(u64),
) -> PyResult<T> {
    let deadline = parse_timeout(timeout)?.map(|t| Instant::now() + t);
    let token = TOKENS.fetch_add(1, Relaxed);
    let woken = Arc::new(AtomicBool::new(false));
    let wakeup: Wakeup = {
        let (woken, thread) = (woken.clone(), std::thread::current());
        Arc::new(move || {
            woken.store(true, SeqCst);
            thread.unpark();
        })
    };
    loop {
        if let Some(item) = take()? {
            return Ok(item);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Timeout::new_err(format!("{what} timed out")));
        }
        let until = deadline.map_or(now + SIGNAL_CHECK, |d| d.min(now + SIGNAL_CHECK));
        woken.store(false, SeqCst);
        if !arm(token, wakeup.clone()) {
            py.detach(|| {
                let spin_until = Instant::now() + SPIN;
                while !woken.load(SeqCst) && Instant::now() < spin_until {
                    std::hint::spin_loop();
                }
                while !woken.load(SeqCst) {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    std::thread::park_timeout(until - now);
                }
            });
            if !woken.load(SeqCst) {
                disarm(token);
            }
        }
        py.check_signals()?;
    }
}
