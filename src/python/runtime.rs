//! The tokio runtime behind the binding, and its bridge to asyncio.
//!
//! We own the runtime (rather than using pyo3-async-runtimes' global one) so that it can be shut
//! down at interpreter exit: a worker thread that completes an asyncio future while Python is
//! finalizing would try to take the GIL, be terminated by CPython mid-call, and abort the
//! process. `shutdown()` runs from an `atexit` hook, with the GIL released, before that happens.

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::net::{lock, read_lock, write_lock};
use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{self, ContextExt, JoinError, Runtime as GenericRuntime};
use pyo3_async_runtimes::TaskLocals;
use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
static HANDLE: OnceLock<Handle> = OnceLock::new();

/// True once `shutdown` began. Threads that poll a future themselves (blocking calls) hold the
/// read side for one poll: a timer polled after the runtime stopped panics, so `shutdown` waits
/// for the polls in progress and no new one starts.
static STOPPED: RwLock<bool> = RwLock::new(false);

/// Hold while polling on a thread of our own; `None` once the runtime is shutting down.
pub fn poll_guard() -> Option<RwLockReadGuard<'static, bool>> {
    let guard = read_lock(&STOPPED);
    (!*guard).then_some(guard)
}

/// The process-wide runtime (started on first use).
pub fn handle() -> &'static Handle {
    HANDLE.get_or_init(|| {
        let rt = Builder::new_multi_thread()
            .enable_all()
            .thread_name("argonlink")
            .build()
            .expect("cannot start the tokio runtime");
        let handle = rt.handle().clone();
        *lock(&RUNTIME) = Some(rt);
        handle
    })
}

/// Stop every task and worker thread (bounded); later calls into the runtime fail cleanly.
#[pyfunction]
pub fn shutdown(py: Python<'_>) {
    py.detach(|| *write_lock(&STOPPED) = true);
    let rt = lock(&RUNTIME).take();
    if let Some(rt) = rt {
        py.detach(move || rt.shutdown_timeout(Duration::from_secs(2)));
    }
}

/// Wrap a Rust future as an asyncio awaitable, run on our runtime.
pub fn future_into_py<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    generic::future_into_py::<LinkRuntime, _, T>(py, fut)
}

pub struct LinkRuntime;

pub struct LinkJoinError(tokio::task::JoinError);

impl JoinError for LinkJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

tokio::task_local! {
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

impl GenericRuntime for LinkRuntime {
    type JoinError = LinkJoinError;
    type JoinHandle = Pin<Box<dyn Future<Output = Result<(), LinkJoinError>> + Send>>;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = handle().spawn(fut);
        Box::pin(async move { task.await.map_err(LinkJoinError) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        let task = handle().spawn_blocking(f);
        Box::pin(async move { task.await.map_err(LinkJoinError) })
    }
}

impl ContextExt for LinkRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}
