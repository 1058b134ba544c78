//! Wake-ups for waiters that are not tokio futures (an event loop woken through a file
//! descriptor, a blocked thread), and the one list type that holds them.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;

/// A one-shot wake-up: called once, from any thread, when the waited-for state may have come
/// (readable; room to send). A list calls it with no lock held, but a connection may call it
/// under its own locks: it must be cheap, must not block, and must not call back into the
/// connection (ring a bell, unpark a thread).
pub type Wakeup = Arc<dyn Fn() + Send + Sync>;

/// One-shot wake-ups registered under keys: rung all at once (each is then gone), or
/// forgotten one by one when their waiter gives up.
///
/// A waiter arms, then looks at the state it waits for; a waker changes that state, then
/// wakes. Either the waiter sees the change or the waker sees the registration: both sides
/// have a SeqCst fence between their write and their read (so waking an empty list is one
/// atomic load, without the lock).
#[derive(Default)]
pub struct WakeList {
    list: Mutex<Vec<(u64, Wakeup)>>,
    len: AtomicUsize,
}

impl WakeList {
    pub fn arm(&self, key: u64, wakeup: Wakeup) {
        let mut list = lock(&self.list);
        list.push((key, wakeup));
        self.len.store(list.len(), Ordering::Relaxed);
        drop(list);
        fence(Ordering::SeqCst);
    }

    pub fn disarm(&self, key: u64) {
        let mut list = lock(&self.list);
        list.retain(|(k, _)| *k != key);
        self.len.store(list.len(), Ordering::Relaxed);
    }

    /// Take every registered wake-up, to call once the caller's own locks are released.
    pub fn take(&self) -> Vec<(u64, Wakeup)> {
        fence(Ordering::SeqCst);
        if self.len.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut list = lock(&self.list);
        self.len.store(0, Ordering::Relaxed);
        std::mem::take(&mut *list)
    }

    /// Ring every registered wake-up, and forget them.
    pub fn wake_all(&self) {
        for (_, wakeup) in self.take() {
            wakeup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn rung_once_and_forgotten_one_by_one() {
        let rung = Arc::new(AtomicUsize::new(0));
        let counter = |r: &Arc<AtomicUsize>| -> Wakeup {
            let r = r.clone();
            Arc::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        };
        let list = WakeList::default();
        list.arm(1, counter(&rung));
        list.arm(2, counter(&rung));
        list.disarm(1);
        list.wake_all();
        assert_eq!(rung.load(Ordering::SeqCst), 1, "only the one still armed");
        list.wake_all();
        assert_eq!(rung.load(Ordering::SeqCst), 1, "one-shot");
    }
}
