//! Test support: per-thread state whose teardown takes a while, as ONNX Runtime's CUDA
//! streams and captured graphs do. Tests that own threads (the batch workers, the inference
//! pool) use it to check that dropping them waits for every thread to end.

use super::{Graph, NnError, Tensor};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Kept by a thread until it exits; its drop sleeps, then counts one teardown finished.
struct ThreadState(Arc<AtomicUsize>);

impl Drop for ThreadState {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static THREAD_STATE: std::cell::RefCell<Option<ThreadState>> = const { std::cell::RefCell::new(None) };
}

/// Give the calling thread its [`ThreadState`] (once), counting into `ended` when it goes.
pub fn keep(ended: &Arc<AtomicUsize>) {
    THREAD_STATE.with(|s| {
        s.borrow_mut().get_or_insert_with(|| ThreadState(ended.clone()));
    });
}

/// A graph that echoes its inputs and leaves a [`ThreadState`] on each thread that runs it.
pub struct PerThread(pub Arc<AtomicUsize>);

impl Graph for PerThread {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
        keep(&self.0);
        Ok(inputs.to_vec())
    }
}
