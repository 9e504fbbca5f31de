//! Client connections: how many the host serves, and how long one may sit idle or take to
//! send its headers.
//!
//! Every open connection costs a file descriptor and some memory whether or not it ever sends
//! a request, and a client needs no key to open one. So connections are capped
//! ([`Connections`]), and each runs against a [`Clock`]: idle since it opened or since its
//! last answer (`--idle-timeout`), then sending a request's headers from their first byte
//! (`--header-read-timeout`); a connection past either deadline is closed. Bodies have their
//! own deadline, set where they are read (the server).
//!
//! Past the cap, a reserve of [`PROBE_CONNECTIONS`] connections is still read, for the open
//! endpoints only, so that Kubernetes' probes keep answering. When the reserve is full a new
//! connection takes the place of its oldest, which is closed: a probe sends its request as
//! soon as it connects, so a flood of idle connections cannot keep it out for long.

use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Connections past the cap still read, for the open endpoints only.
pub const PROBE_CONNECTIONS: usize = 32;

/// Idle and header time of a connection in the probe reserve.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The count of open connections, within the cap and in the probe reserve.
pub struct Connections {
    max: usize,
    served: AtomicUsize,
    probes: AtomicUsize,
    /// The reserve's connection tasks, oldest first (some may have ended).
    probe_tasks: Mutex<VecDeque<AbortHandle>>,
    metrics: Arc<Metrics>,
}

impl Connections {
    /// At most `max` connections served, and the probe reserve.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            max,
            served: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            probe_tasks: Mutex::new(VecDeque::new()),
            metrics,
        })
    }

    /// A place for a new connection: within the cap, else in the probe reserve, closing the
    /// reserve's oldest connection if it is full.
    pub fn admit(self: &Arc<Self>) -> Place {
        let within = self
            .served
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !within {
            if self.probes.load(Ordering::Acquire) >= PROBE_CONNECTIONS {
                self.close_oldest_probe();
            }
            self.probes.fetch_add(1, Ordering::AcqRel);
        }
        Place {
            connections: self.clone(),
            probe_only: !within,
        }
    }

    /// Record the task serving a connection of the probe reserve, so it can be closed.
    pub fn track_probe(&self, task: AbortHandle) {
        if let Ok(mut tasks) = self.probe_tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push_back(task);
        }
    }

    /// Connections open now, the reserve's included.
    pub fn open(&self) -> usize {
        self.served.load(Ordering::Acquire) + self.probes.load(Ordering::Acquire)
    }

    /// Close the reserve's oldest open connection; its place is given back as its task drops.
    fn close_oldest_probe(&self) {
        let Ok(mut tasks) = self.probe_tasks.lock() else {
            return;
        };
        while let Some(task) = tasks.pop_front() {
            if !task.is_finished() {
                task.abort();
                self.metrics.connection_shed();
                return;
            }
        }
    }
}

/// A connection's place, given back when dropped.
pub struct Place {
    connections: Arc<Connections>,
    probe_only: bool,
}

impl Place {
    /// Whether the connection is in the probe reserve: only the open endpoints answer on it.
    pub fn probe_only(&self) -> bool {
        self.probe_only
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let count = if self.probe_only {
            &self.connections.probes
        } else {
            &self.connections.served
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a connection is between requests, and since when.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Opened or answered, no byte of the next request yet.
    Idle(Instant),
    /// The next request's first byte came at this instant; its headers are not all in.
    Headers(Instant),
    /// The request's headers are in; the server bounds the rest.
    Busy,
}

/// A connection's deadlines: `idle` while nothing arrives, `headers` from a request's first
/// byte to the end of its headers.
pub struct Clock {
    idle: Duration,
    headers: Duration,
    phase: Mutex<Phase>,
    /// Whether `phase` is `Idle`, kept beside it so that a read, which only matters to an
    /// idle connection, does not take the lock on every chunk of a body.
    idle_now: AtomicBool,
    changed: Notify,
}

impl Clock {
    /// A clock for a connection that opens now.
    pub fn new(idle: Duration, headers: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle,
            headers,
            phase: Mutex::new(Phase::Idle(Instant::now())),
            idle_now: AtomicBool::new(true),
            changed: Notify::new(),
        })
    }

    fn set(&self, next: impl FnOnce(Phase) -> Option<Phase>) {
        if let Ok(mut phase) = self.phase.lock()
            && let Some(p) = next(*phase)
        {
            *phase = p;
            self.idle_now
                .store(matches!(p, Phase::Idle(_)), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn bytes_arrived(&self) {
        if self.idle_now.load(Ordering::Acquire) {
            self.set(|p| matches!(p, Phase::Idle(_)).then(|| Phase::Headers(Instant::now())));
        }
    }

    /// The request's headers are in (the server has it).
    pub fn request_started(&self) {
        self.set(|_| Some(Phase::Busy));
    }

    /// The request is answered; the connection is idle again.
    pub fn request_answered(&self) {
        self.set(|_| Some(Phase::Idle(Instant::now())));
    }

    /// Resolves when the connection has been idle, or sending headers, for too long.
    pub async fn expired(&self) {
        loop {
            let phase = self.phase.lock().map(|p| *p).unwrap_or(Phase::Busy);
            let deadline = match phase {
                Phase::Idle(since) => Some(since + self.idle),
                Phase::Headers(since) => Some(since + self.headers),
                Phase::Busy => None,
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            if self.phase.lock().map(|p| *p == phase).unwrap_or(false) {
                                return;
                            }
                        }
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A connection's stream, which tells its [`Clock`] when bytes arrive.
pub struct Watched<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, clock: Arc<Clock>) -> Self {
        Self { inner, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let clock = Clock::new(Duration::from_secs(10), Duration::from_secs(2));
        let started = Instant::now();
        clock.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_byte_starts_the_header_deadline_and_a_request_stops_it() {
        let clock = Clock::new(Duration::from_secs(10), Duration::from_secs(2));
        let watcher = {
            let clock = clock.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                clock.expired().await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        clock.bytes_arrived();
        clock.request_started();
        // Busy for longer than both timeouts: no deadline runs.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watcher.is_finished());
        clock.request_answered();
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Half-sent headers: 2 s from their first byte.
        clock.bytes_arrived();
        assert_eq!(watcher.await.unwrap(), Duration::from_secs(36));
    }

    #[test]
    fn the_reserve_closes_its_oldest_connection_for_a_new_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Connections::new(1, Arc::new(Metrics::default()));
            let first = c.admit();
            assert!(!first.probe_only());
            let mut tasks = Vec::new();
            let mut places = Vec::new();
            for _ in 0..PROBE_CONNECTIONS {
                let place = c.admit();
                assert!(place.probe_only());
                let task = tokio::spawn(async move {
                    let _place = place;
                    std::future::pending::<()>().await
                });
                c.track_probe(task.abort_handle());
                tasks.push(task);
            }
            assert_eq!(c.open(), 1 + PROBE_CONNECTIONS);
            places.push(c.admit());
            tokio::task::yield_now().await;
            assert!(tasks[0].is_finished(), "the oldest was not closed");
            assert!(!tasks[1].is_finished());
            assert_eq!(c.open(), 1 + PROBE_CONNECTIONS);
            drop(places);
            drop(first);
            assert_eq!(c.open(), PROBE_CONNECTIONS - 1);
        });
    }
}
