//! The threads that run inference: one per CPU core, shared by all models.
//!
//! A fixed set of threads rather than tokio's blocking pool: a CPU backend gains nothing from
//! more computes than cores, and each thread that ever allocates activation buffers keeps its
//! own allocator arena, so an elastic pool makes RSS creep under load. Extra computes wait in
//! the queue; that wait is the queue delay in the metrics.
//!
//! A job wakes the thread that went idle last. At low load one thread, on one core, then runs
//! every compute with the model's working set still in that core's caches. The pool this
//! replaces handed jobs round-robin (threads queued on a shared channel); on EfficientNet-Lite0
//! that cost up to 0.35 ms of a 11 ms request here.
//!
//! Dropping the pool waits for its threads to end, as dropping a batcher does: a GPU session
//! without CUDA graphs still runs here, and ONNX Runtime's CUDA state on a thread must be torn
//! down before the process exits (see `batch::Batcher`'s `Drop`). The computes still queued
//! then belong to requests that are gone (every request holds the pool), so the threads skip
//! them, as they skip every compute whose caller left, rather than delay the exit.

use super::{ErrorKind, NnError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// Inference threads and the computes waiting for one.
pub struct InferencePool {
    shared: Arc<Mutex<State>>,
    /// Joined on drop.
    workers: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Parked threads, the most recently idle last. A thread is here only while parked.
    idle: Vec<Thread>,
    /// Set when the pool is dropped: threads finish the queued jobs and exit.
    closed: bool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Jobs run outside the lock and catch their own panics, so poison means nothing here.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl InferencePool {
    /// Start `threads` inference threads.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Mutex::new(State::default()));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("scoria-infer-{i}"))
                .spawn(move || work(&shared));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => tracing::error!(error = %e, "cannot start an inference thread"),
            }
        }
        Self { shared, workers }
    }

    /// Run `f` on an inference thread; returns how long it waited for one, and its result
    /// (`Err` if it panicked, so a backend bug fails one request, not the thread). If the
    /// returned future is dropped before a thread takes the job, `f` never runs.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(Duration, T), NnError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = Instant::now();
        let job: Job = Box::new(move || {
            // Its request is gone (a 504, a client that left, the end of the drain): a run
            // now would only delay the computes queued behind it.
            if tx.is_closed() {
                tracing::debug!("compute dropped unrun: its request is gone");
                return;
            }
            let queued = submitted.elapsed();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send((queued, result));
        });
        let wake = {
            let mut state = lock(&self.shared);
            state.jobs.push_back(job);
            state.idle.pop()
        };
        if let Some(thread) = wake {
            thread.unpark();
        }
        match rx.await {
            Ok((queued, Ok(v))) => Ok((queued, v)),
            Ok((_, Err(_))) => Err(NnError::new(ErrorKind::RuntimeError, "the backend panicked")),
            Err(_) => Err(NnError::new(
                ErrorKind::RuntimeError,
                "the inference thread stopped",
            )),
        }
    }
}

impl Drop for InferencePool {
    /// Close the pool, then wait for each thread to end.
    fn drop(&mut self) {
        let idle = {
            let mut state = lock(&self.shared);
            state.closed = true;
            std::mem::take(&mut state.idle)
        };
        for thread in idle {
            thread.unpark();
        }
        super::join_threads(&mut self.workers, "an inference thread");
    }
}

/// One inference thread: run queued jobs; with none, park until a job or the pool's end.
fn work(shared: &Mutex<State>) {
    let me = std::thread::current();
    let mut state = lock(shared);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = lock(shared);
            continue;
        }
        if state.closed {
            return;
        }
        state.idle.push(me.clone());
        drop(state);
        std::thread::park();
        state = lock(shared);
        // Woken by a job (which took this thread off the list) or spuriously (which did not).
        state.idle.retain(|t| t.id() != me.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// Wait until every thread is parked, as between two requests at low load.
    async fn all_idle(pool: &InferencePool, threads: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&pool.shared).idle.len() < threads {
            assert!(Instant::now() < deadline, "the threads did not all park");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn at_low_load_one_thread_runs_every_job() {
        let pool = InferencePool::new(4);
        let mut names = Vec::new();
        for _ in 0..12 {
            all_idle(&pool, 4).await;
            names.push(pool.run(thread_name).await.unwrap().1);
        }
        assert!(names[0].starts_with("scoria-infer-"), "{names:?}");
        assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_jobs_use_every_thread_and_all_complete() {
        let pool = Arc::new(InferencePool::new(3));
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let runs = (0..3).map(|_| {
            let (pool, barrier) = (pool.clone(), barrier.clone());
            // Each job waits for the other two, so they can only finish on three threads.
            tokio::spawn(async move {
                pool.run(move || {
                    barrier.wait();
                    thread_name()
                })
                .await
            })
        });
        let mut names: Vec<String> = futures::future::join_all(runs)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap().1)
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dropping_the_pool_waits_for_its_threads_to_end() {
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pool = Arc::new(InferencePool::new(3));
        let barrier = Arc::new(std::sync::Barrier::new(3));
        // As above, three jobs that can only finish on three threads: each thread keeps state.
        let runs = (0..3).map(|_| {
            let (pool, barrier, ended) = (pool.clone(), barrier.clone(), ended.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    crate::nn::thread_state::keep(&ended);
                    barrier.wait();
                })
                .await
            })
        });
        for run in futures::future::join_all(runs).await {
            run.unwrap().unwrap();
        }
        let pool = Arc::into_inner(pool).expect("the jobs are done with the pool");
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 0);
        drop(pool);
        assert_eq!(
            ended.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "every thread's state is gone"
        );
    }

    #[tokio::test]
    async fn a_compute_whose_caller_left_is_not_run() {
        let pool = InferencePool::new(1);
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let (started, wait_started) = tokio::sync::oneshot::channel();
        let blocker = pool.run(move || {
            let _ = started.send(());
            let _ = wait_release.recv();
        });
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let left = pool.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        let after = async {
            wait_started.await.unwrap();
            // Queue the second job (one poll), then leave: as a request cut off by its deadline.
            let mut left = Box::pin(left);
            assert!(futures::poll!(left.as_mut()).is_pending());
            drop(left);
            release.send(()).unwrap();
        };
        let (blocked, ()) = tokio::join!(blocker, after);
        blocked.unwrap();
        // FIFO with one thread: once this runs, the abandoned job has had its turn.
        pool.run(|| ()).await.unwrap();
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the abandoned compute ran"
        );
    }

    #[tokio::test]
    async fn dropping_the_pool_drops_queued_jobs_unrun() {
        let pool = InferencePool::new(1);
        let (started, wait_started) = tokio::sync::oneshot::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let second_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ran = second_ran.clone();
        // Both queued with one poll each, as requests do; the first runs until released.
        let mut running = Box::pin(pool.run(move || {
            let _ = started.send(());
            let _ = wait_release.recv();
        }));
        assert!(futures::poll!(running.as_mut()).is_pending());
        let mut queued = Box::pin(pool.run(move || ran.store(true, std::sync::atomic::Ordering::SeqCst)));
        assert!(futures::poll!(queued.as_mut()).is_pending());
        wait_started.await.unwrap();
        // The end of the drain: the requests are gone, then the pool.
        drop((running, queued));
        // Let the running job end only once the drop has closed the pool.
        let shared = pool.shared.clone();
        let releaser = std::thread::spawn(move || {
            while !lock(&shared).closed {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = release.send(());
        });
        drop(pool);
        releaser.join().unwrap();
        assert!(
            !second_ran.load(std::sync::atomic::Ordering::SeqCst),
            "a queued job ran after the pool was dropped"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = InferencePool::new(1);
        let err = pool.run(|| panic!("backend bug")).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(pool.run(|| 7).await.unwrap().1, 7);
    }
}
