//! Per-function concurrency limits with a bounded queue.
//!
//! At most `max_concurrent` requests of a function run at once; up to `max_queued` more wait
//! for a slot. Beyond that a request is refused at once (503 with `Retry-After`), because an
//! unbounded queue only turns overload into unbounded latency for everyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue is full.
    QueueFull,
    /// The request waited in the queue for longer than its deadline.
    QueueTimeout,
}

/// The gate in front of one function.
pub struct Admission {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_queued: usize,
    queued: AtomicUsize,
}

impl Admission {
    pub fn new(max_concurrent: usize, max_queued: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_queued,
            queued: AtomicUsize::new(0),
        }
    }

    /// Wait for a slot, for at most `wait`; the slot is held until the permit is dropped.
    pub async fn admit(&self, wait: Duration) -> Result<OwnedSemaphorePermit, Rejected> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        // Reserve a queue place, or refuse if there is none.
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max_queued).then_some(q + 1)
            });
        if reserved.is_err() {
            return Err(Rejected::QueueFull);
        }
        // The place is given back on drop, so a request dropped while it waits (its client
        // hung up, its deadline fired) does not keep it for good.
        let _place = QueuePlace(&self.queued);
        let result = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        match result {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Rejected::QueueTimeout),
        }
    }

    /// Requests running now.
    pub fn in_use(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// A reserved place in a function's queue, given back when dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_is_bounded_and_slots_are_returned() {
        let a = Arc::new(Admission::new(1, 1));
        let first = a.admit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(a.in_use(), 1);
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.admit(Duration::from_secs(5)).await.map(|_| ()) })
        };
        while a.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.admit(Duration::from_secs(5)).await.unwrap_err(),
            Rejected::QueueFull
        );
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!((a.in_use(), a.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_queued_request_gives_up_at_its_deadline() {
        let a = Admission::new(1, 4);
        let _held = a.admit(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            a.admit(Duration::from_millis(20)).await.unwrap_err(),
            Rejected::QueueTimeout
        );
        assert_eq!(a.queued(), 0);
    }

    #[tokio::test]
    async fn a_request_dropped_while_queued_gives_its_place_back() {
        let a = Admission::new(1, 1);
        let held = a.admit(Duration::from_secs(5)).await.unwrap();
        {
            // Poll the queued admit once, so that it reserves its place, then drop it.
            let mut queued = std::pin::pin!(a.admit(Duration::from_secs(5)));
            assert!(futures_poll_once(queued.as_mut()).await.is_none());
            assert_eq!(a.queued(), 1);
        }
        assert_eq!(a.queued(), 0);
        drop(held);
        let _held = a.admit(Duration::from_secs(5)).await.unwrap();
        // The queue has its one place again.
        let mut next = std::pin::pin!(a.admit(Duration::from_secs(5)));
        assert!(futures_poll_once(next.as_mut()).await.is_none());
        assert_eq!(a.queued(), 1);
    }

    /// Polls `f` once: `Some` with its output if it finished, `None` if it is pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
