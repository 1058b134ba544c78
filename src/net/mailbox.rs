//! A bounded queue between the connection tasks and the application, with an end state.
//!
//! Unlike a channel, waiting for an item ([`Mailbox::readable`]) is separate from taking it
//! ([`Mailbox::try_pop`]): a caller that is cancelled while waiting never loses an item, which
//! matters when the waiter is a Python coroutine that can be cancelled at any await.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

struct State<T, E> {
    items: VecDeque<(T, usize)>,
    used: usize,
    end: Option<E>,
    /// Costs of items taken by [`Mailbox::try_take`] and not yet handed back as its report.
    unreported: usize,
}

use super::wake::WakeList;
pub use super::wake::Wakeup;

pub struct Mailbox<T, E> {
    state: Mutex<State<T, E>>,
    /// Armed under the state lock (checked and registered at once), rung outside it.
    armed: WakeList,
    readable: Notify,
    writable: Notify,
    /// Total cost the queue holds before `push` waits. One item is always accepted into an empty
    /// queue, so an item costlier than the capacity still gets through.
    capacity: usize,
}

impl<T, E: Clone> Mailbox<T, E> {
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                used: 0,
                end: None,
                unreported: 0,
            }),
            armed: WakeList::default(),
            readable: Notify::new(),
            writable: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T, E>> {
        super::lock(&self.state)
    }

    /// Take the next item; `Ok(None)` when empty, `Err(end)` when empty and ended.
    pub fn try_pop(&self) -> Result<Option<T>, E> {
        let mut st = self.lock();
        match st.items.pop_front() {
            Some((item, cost)) => {
                st.used -= cost;
                drop(st);
                self.writable.notify_waiters();
                Ok(Some(item))
            }
            None => match &st.end {
                Some(e) => Err(e.clone()),
                None => Ok(None),
            },
        }
    }

    /// [`Mailbox::try_pop`], counting what the items taken cost: with each item, the costs to
    /// report now (0 most of the time), once they add up to `step` or the queue is empty.
    /// Counted under the queue's lock, so however many readers take at once, nothing taken
    /// stays unreported once the queue is empty.
    pub fn try_take(&self, step: usize) -> Result<Option<(T, usize)>, E> {
        let mut st = self.lock();
        match st.items.pop_front() {
            Some((item, cost)) => {
                st.used -= cost;
                st.unreported += cost;
                let report = if st.unreported >= step || st.items.is_empty() {
                    std::mem::take(&mut st.unreported)
                } else {
                    0
                };
                drop(st);
                self.writable.notify_waiters();
                Ok(Some((item, report)))
            }
            None => match &st.end {
                Some(e) => Err(e.clone()),
                None => Ok(None),
            },
        }
    }

    /// Register `wakeup` (under `key`) for the next time the mailbox may become readable,
    /// unless it is readable already: then nothing is registered and the answer is true.
    pub fn arm(&self, key: u64, wakeup: Wakeup) -> bool {
        let st = self.lock();
        if !st.items.is_empty() || st.end.is_some() {
            return true;
        }
        self.armed.arm(key, wakeup);
        false
    }

    /// Forget the wake-up registered under `key` (a waiter that gave up).
    pub fn disarm(&self, key: u64) {
        self.armed.disarm(key);
    }

    /// Wake the waiters; `st` is the locked state, released before any wake-up runs.
    fn wake(&self, st: std::sync::MutexGuard<'_, State<T, E>>) {
        let armed = self.armed.take();
        drop(st);
        self.readable.notify_waiters();
        for (_, wakeup) in armed {
            wakeup();
        }
    }

    /// Resolves once `try_pop` would return an item or the end. Cancel-safe.
    pub async fn readable(&self) {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                if !st.items.is_empty() || st.end.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }

    pub async fn pop(&self) -> Result<T, E> {
        loop {
            if let Some(item) = self.try_pop()? {
                return Ok(item);
            }
            self.readable().await;
        }
    }

    /// Queue an item if there is room; gives it back otherwise (or when ended).
    pub fn try_push(&self, item: T, cost: usize) -> Result<(), (T, Option<E>)> {
        let mut st = self.lock();
        if let Some(e) = &st.end {
            return Err((item, Some(e.clone())));
        }
        if st.used > 0 && st.used + cost > self.capacity {
            return Err((item, None));
        }
        st.used += cost;
        st.items.push_back((item, cost));
        self.wake(st);
        Ok(())
    }

    /// Queue an item, waiting for room. Fails only when the mailbox has ended.
    pub async fn push(&self, mut item: T, cost: usize) -> Result<(), E> {
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_push(item, cost) {
                Ok(()) => return Ok(()),
                Err((_, Some(e))) => return Err(e),
                Err((back, None)) => item = back,
            }
            notified.await;
        }
    }

    /// End the mailbox: queued items still drain, then `try_pop` returns `end`. First end wins.
    pub fn end(&self, end: E) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(end);
        }
        self.wake(st);
        self.writable.notify_waiters();
    }

    /// Take out the queued items `pred` picks (returned: the caller disposes of them once no
    /// lock is held).
    pub fn take_where(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut st = self.lock();
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(st.items.len());
        for (item, cost) in st.items.drain(..) {
            if pred(&item) {
                taken.push((item, cost));
            } else {
                kept.push_back((item, cost));
            }
        }
        st.items = kept;
        st.used -= taken.iter().map(|(_, c)| c).sum::<usize>();
        drop(st);
        self.writable.notify_waiters();
        taken.into_iter().map(|(item, _)| item).collect()
    }

    /// End and drop everything still queued (returned to the caller to dispose of).
    pub fn end_and_drain(&self, end: E) -> Vec<T> {
        self.end(end);
        let mut st = self.lock();
        st.used = 0;
        st.items.drain(..).map(|(item, _)| item).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// How it ended, if it has (items may still be queued).
    pub fn ended(&self) -> Option<E> {
        self.lock().end.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn bounded_and_drains_after_end() {
        let mb: Mailbox<u32, &'static str> = Mailbox::new(10);
        mb.try_push(1, 6).unwrap();
        assert!(mb.try_push(2, 6).is_err(), "over capacity");
        mb.try_push(3, 4).unwrap();
        mb.end("closed");
        assert_eq!(mb.try_pop(), Ok(Some(1)));
        assert_eq!(mb.try_pop(), Ok(Some(3)));
        assert_eq!(mb.try_pop(), Err("closed"));
        assert!(mb.try_push(4, 1).is_err());
    }

    #[test]
    fn wakeup_on_push_and_end() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mb: Mailbox<u32, ()> = Mailbox::new(10);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let wakeup: Wakeup = Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!mb.arm(1, wakeup.clone()));
        mb.try_push(1, 1).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(mb.arm(2, wakeup.clone()), "readable: not armed");
        mb.try_push(2, 1).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one-shot");
        assert_eq!(mb.try_pop(), Ok(Some(1)));
        assert_eq!(mb.try_pop(), Ok(Some(2)));
        assert!(!mb.arm(3, wakeup.clone()));
        mb.disarm(3);
        assert!(!mb.arm(4, wakeup));
        mb.end(());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "only the armed key");
    }

    #[tokio::test]
    async fn oversized_item_enters_an_empty_queue() {
        let mb: Mailbox<u32, ()> = Mailbox::new(10);
        mb.try_push(1, 100).unwrap();
        assert_eq!(mb.try_pop(), Ok(Some(1)));
    }

    #[tokio::test]
    async fn push_waits_for_room_and_cancelled_wait_loses_nothing() {
        let mb: Arc<Mailbox<u32, ()>> = Arc::new(Mailbox::new(1));
        mb.try_push(1, 1).unwrap();
        let mb2 = mb.clone();
        let pusher = tokio::spawn(async move { mb2.push(2, 1).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pusher.is_finished());
        // A waiter cancelled before anything arrives takes nothing.
        let empty: Mailbox<u32, ()> = Mailbox::new(1);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), empty.readable())
                .await
                .is_err()
        );
        assert_eq!(mb.pop().await, Ok(1));
        pusher.await.unwrap().unwrap();
        assert_eq!(mb.pop().await, Ok(2));
    }
}
