//! Waking an asyncio event loop without a future per wait.
//!
//! `readable()` as an asyncio future costs a tokio task, a Python future, and a tokio thread that
//! takes the GIL to complete it through `call_soon_threadsafe`: that hand-off dominated small
//! message latency. Instead, an event loop owns one `Doorbell`: a socket pair whose reading end
//! the loop watches (`loop.add_reader`). A waiting receiver *arms* its channel with the bell and
//! a token; when a message (or the end) arrives, the connection's reading task puts the token on
//! the bell's ready list and writes one byte, without the GIL, and only if the loop was not
//! already told. The loop's callback takes the ready tokens and wakes just those waiters.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use crate::net::lock;
use crate::net::mailbox::Wakeup;

/// The wake-up that rings `bell` with `token`.
pub fn wakeup(bell: &Doorbell, token: u64) -> Wakeup {
    let bell = bell.bell.clone();
    Arc::new(move || bell.ring(token))
}

#[cfg(unix)]
type Sock = std::os::unix::net::UnixStream;
#[cfg(not(unix))]
type Sock = std::net::TcpStream;

#[cfg(unix)]
fn socket_pair() -> std::io::Result<(Sock, Sock)> {
    Sock::pair()
}

#[cfg(not(unix))]
fn socket_pair() -> std::io::Result<(Sock, Sock)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tx = Sock::connect(listener.local_addr()?)?;
    let (rx, _) = listener.accept()?;
    Ok((rx, tx))
}

struct Bell {
    rx: Sock,
    tx: Sock,
    ready: Mutex<Vec<u64>>,
    /// A byte was written and the loop has not drained it yet.
    pending: AtomicBool,
}

impl Bell {
    fn ring(&self, token: u64) {
        lock(&self.ready).push(token);
        if !self.pending.swap(true, SeqCst) {
            // Non-blocking: a full socket already holds a wake-up.
            let _ = (&self.tx).write(&[1]);
        }
    }
}

/// One per event loop: see the module documentation.
#[pyclass(frozen, module = "argonlink._argonlink")]
pub struct Doorbell {
    bell: Arc<Bell>,
}

#[pymethods]
impl Doorbell {
    #[new]
    fn new() -> PyResult<Self> {
        let (rx, tx) = socket_pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Doorbell {
            bell: Arc::new(Bell {
                rx,
                tx,
                ready: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
            }),
        })
    }

    /// The file descriptor the event loop watches for reading.
    fn fileno(&self) -> i64 {
        #[cfg(unix)]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.bell.rx) as i64;
        #[cfg(windows)]
        let fd = std::os::windows::io::AsRawSocket::as_raw_socket(&self.bell.rx) as i64;
        fd
    }

    /// Empty the socket and return the tokens rung since the last call.
    fn drain(&self) -> Vec<u64> {
        let mut buf = [0u8; 64];
        while matches!((&self.bell.rx).read(&mut buf), Ok(n) if n > 0) {}
        // Cleared before the list is taken: a ring after this point writes a new byte.
        self.bell.pending.store(false, SeqCst);
        std::mem::take(&mut *lock(&self.bell.ready))
    }
}
