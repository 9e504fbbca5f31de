//! Dynamic batching: concurrent computes on one model merged into one backend run.
//!
//! A GPU runs one batch of 64 images in little more time than one image, so throughput under
//! load comes from merging. Each batched model gets a [`Batcher`]: computes queue on it, and
//! its worker threads take turns collecting a batch (until `max_batch` items or until the
//! oldest waiting compute has waited `max_queue_delay`), concatenate the inputs along the
//! first dimension, run the graph once, and hand each caller back its own rows.
//!
//! A batch is sent at once when no other batch of the model is running: at low load a
//! compute never waits for company that is not coming. While a batch runs, the next collector
//! waits up to `max_queue_delay` for more, and computes accumulate meanwhile, so batches grow
//! with load by themselves.
//!
//! With `pad`, a batch is padded with zero rows up to the next power of two (capped at
//! `max_batch`), and each of those sizes is run once when the batcher starts. A GPU backend
//! picks kernels and plans memory per input shape, which costs far more than a run; padding
//! keeps the shapes to a handful that are all ready before the first request.
//!
//! Only computes with the same shape beyond the batch dimension merge (a text model's
//! sentences of different lengths run separately). A failed run fails each of its callers
//! with the same error, and no caller ever receives rows computed from another's input
//! unless they were part of the same run.

use super::{ErrorKind, Graph, NnError, Tensor};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one model is batched, resolved from its card's `[batching]` and the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPolicy {
    /// Most items (sum of the callers' first dimensions) in one run.
    pub max_batch: usize,
    /// Longest the oldest compute in a batch waits for others to join it.
    pub max_queue_delay: Duration,
    /// Batches of this model that run at once (and worker threads that run them).
    pub workers: usize,
    /// Pad each batch to a power of two (or `max_batch`), and warm those sizes at start.
    pub pad: bool,
}

impl BatchPolicy {
    /// The size a batch of `items` runs at: `items` itself, or with `pad` the next power of
    /// two, capped at `max_batch` (a single compute larger than that runs as it is).
    pub fn padded(&self, items: usize) -> usize {
        if !self.pad || items >= self.max_batch {
            return items;
        }
        items.next_power_of_two().min(self.max_batch)
    }

    /// Every size [`padded`](Self::padded) can return for batches up to `max_batch`.
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = (0..usize::BITS)
            .map(|b| 1usize << b)
            .take_while(|&n| n < self.max_batch)
            .collect();
        sizes.push(self.max_batch);
        sizes
    }
}

/// What a caller learns about the run its compute was part of, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct BatchRun {
    /// From queueing to the start of the run.
    pub queued: Duration,
    /// The backend run itself.
    pub ran: Duration,
    /// Items in the whole run.
    pub items: u32,
    /// True for exactly one caller per run, so per-run metrics are counted once.
    pub leader: bool,
}

/// The reply to one queued compute: its own output rows, or the run's error.
type Reply = Result<(Vec<Tensor>, BatchRun), NnError>;

/// One queued compute.
struct Pending {
    inputs: Vec<Tensor>,
    items: u32,
    queued_at: Instant,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

impl Pending {
    /// Computes merge only when every input agrees beyond the first dimension.
    fn same_shape(&self, other: &Pending) -> bool {
        self.inputs
            .iter()
            .zip(&other.inputs)
            .all(|(a, b)| a.dims[1..] == b.dims[1..])
    }
}

/// The queue the workers share: new computes, and those a collector had to set aside
/// (another shape, or no room left) that start the next batch.
struct Queue {
    incoming: Receiver<Pending>,
    held: VecDeque<Pending>,
}

/// Batches of one model being run right now, to tell whether waiting for more is worth it.
type Running = std::sync::atomic::AtomicUsize;

/// The batching front of one loaded model. Dropping it stops its workers once they have
/// answered everything queued.
pub struct Batcher {
    submit: Sender<Pending>,
    policy: BatchPolicy,
}

impl Batcher {
    /// Start `policy.workers` threads running batches of `graph`, named after `model`. With
    /// `pad`, first run every padded size once, from `probe` (zeros of one item).
    pub fn start(
        model: &str,
        graph: Arc<dyn Graph>,
        policy: BatchPolicy,
        probe: &[Tensor],
    ) -> Result<Self, NnError> {
        let t = Instant::now();
        let (submit, incoming) = std::sync::mpsc::channel();
        let queue = Arc::new(Mutex::new(Queue {
            incoming,
            held: VecDeque::new(),
        }));
        let running = Arc::new(Running::new(0));
        // Each worker warms the padded sizes from its own thread before it serves: a GPU
        // backend may keep per-thread state (CUDA handles) that is created on first use. One
        // at a time, since warming takes every session.
        let warming = Arc::new(Mutex::new(()));
        let (warmed, warm_results) = std::sync::mpsc::channel::<Result<(), NnError>>();
        let workers = policy.workers.max(1);
        for i in 0..workers {
            let (queue, graph, name, running) =
                (queue.clone(), graph.clone(), model.to_string(), running.clone());
            let (warming, warmed) = (warming.clone(), warmed.clone());
            let probe = probe.to_vec();
            std::thread::Builder::new()
                .name(format!("scoria-batch-{model}-{i}"))
                .spawn(move || {
                    let result = {
                        let _one_at_a_time = warming.lock().unwrap_or_else(|p| p.into_inner());
                        warm(&name, graph.as_ref(), policy, &probe)
                    };
                    let ok = result.is_ok();
                    let _ = warmed.send(result);
                    if ok {
                        worker(&name, &queue, &running, graph.as_ref(), policy);
                    }
                })
                .map_err(|e| {
                    NnError::new(
                        ErrorKind::RuntimeError,
                        format!("cannot start a batch worker: {e}"),
                    )
                })?;
        }
        drop(warmed);
        for result in warm_results.iter().take(workers) {
            result?;
        }
        if policy.pad {
            tracing::info!(model, sizes = ?policy.sizes(), workers, ms = t.elapsed().as_millis() as u64, "batch sizes warmed");
        }
        Ok(Self { submit, policy })
    }

    /// The policy this batcher runs with.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Queue one compute (inputs validated, in the card's order) and wait for its rows.
    pub async fn compute(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, BatchRun), NnError> {
        let items = items(&inputs);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            inputs,
            items,
            queued_at: Instant::now(),
            reply,
        };
        self.submit
            .send(pending)
            .map_err(|_| NnError::new(ErrorKind::RuntimeError, "the batch workers are gone"))?;
        answer
            .await
            .map_err(|_| NnError::new(ErrorKind::RuntimeError, "the batch worker stopped"))?
    }
}

/// Items in one compute: the first input's first dimension.
pub fn items(inputs: &[Tensor]) -> u32 {
    inputs.first().and_then(|t| t.dims.first().copied()).unwrap_or(1)
}

/// Run every padded size once (nothing without `pad`).
fn warm(model: &str, graph: &dyn Graph, policy: BatchPolicy, probe: &[Tensor]) -> Result<(), NnError> {
    if !policy.pad {
        return Ok(());
    }
    for size in policy.sizes() {
        let inputs: Vec<Tensor> = probe.iter().map(|t| pad(t.clone(), 1, size)).collect();
        graph.warm(&inputs).map_err(|e| {
            NnError::new(
                e.kind,
                format!("model `{model}`: warming batch size {size}: {}", e.message),
            )
        })?;
    }
    Ok(())
}

/// One worker: collect a batch (holding the queue, so collectors take turns), then run it.
fn worker(model: &str, queue: &Mutex<Queue>, running: &Running, graph: &dyn Graph, policy: BatchPolicy) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut buffers = Buffers::default();
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            match collect(&mut q, policy, || running.load(SeqCst) > 0) {
                Some(b) => b,
                None => return,
            }
        };
        running.fetch_add(1, SeqCst);
        run(model, graph, batch, policy, &mut buffers);
        running.fetch_sub(1, SeqCst);
    }
}

/// The next batch: the oldest waiting compute, then others of its shape until the batch is
/// full or, while another batch is `busy` running, the oldest has waited `max_queue_delay`
/// (with nothing running, only what is already queued joins). `None` once the batcher is
/// dropped and nothing is left.
fn collect(q: &mut Queue, policy: BatchPolicy, busy: impl Fn() -> bool) -> Option<Vec<Pending>> {
    let first = match q.held.pop_front() {
        Some(p) => p,
        None => q.incoming.recv().ok()?,
    };
    let mut items = first.items as usize;
    let mut batch = vec![first];
    let fits = |p: &Pending, items: usize, batch: &[Pending]| {
        batch[0].same_shape(p) && items + p.items as usize <= policy.max_batch
    };
    // Set-aside computes first, in arrival order; they are older than anything incoming.
    let mut i = 0;
    while i < q.held.len() && items < policy.max_batch {
        if fits(&q.held[i], items, &batch) {
            if let Some(p) = q.held.remove(i) {
                items += p.items as usize;
                batch.push(p);
            }
        } else {
            i += 1;
        }
    }
    let deadline = batch[0].queued_at + policy.max_queue_delay;
    while items < policy.max_batch {
        let wait = match busy() {
            true => deadline.saturating_duration_since(Instant::now()),
            false => Duration::ZERO,
        };
        let next = match q.incoming.recv_timeout(wait) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        };
        if fits(&next, items, &batch) {
            items += next.items as usize;
            batch.push(next);
        } else {
            q.held.push_back(next);
            if !batch[0].same_shape(&q.held[q.held.len() - 1]) {
                continue;
            }
            // Same shape but no room: the batch is as full as it gets.
            break;
        }
    }
    Some(batch)
}

/// Run one batch and answer each of its callers.
fn run(model: &str, graph: &dyn Graph, batch: Vec<Pending>, policy: BatchPolicy, buffers: &mut Buffers) {
    let started = Instant::now();
    let total: u32 = batch.iter().map(|p| p.items).sum();
    let size = policy.padded(total as usize);
    let (inputs, callers) = merge(batch, size, buffers);
    let merged = started.elapsed();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| graph.run(&inputs)))
        .unwrap_or_else(|_| Err(NnError::new(ErrorKind::RuntimeError, "the backend panicked")));
    buffers.keep(inputs);
    let ran = started.elapsed();
    tracing::debug!(model, items = total, size, ?merged, ?ran, "batch run");
    let counts: Vec<u32> = callers.iter().map(|c| c.items).collect();
    let split = result.and_then(|outputs| split(model, outputs, &counts, size as u32));
    let n = callers.len();
    match split {
        Ok(per_caller) => {
            for (i, (caller, rows)) in callers.into_iter().zip(per_caller).enumerate() {
                let run = caller.run(started, ran, total, i == 0);
                let _ = caller.reply.send(Ok((rows, run)));
            }
        }
        Err(e) => {
            let message = if n > 1 {
                format!(
                    "model `{model}`: the batch of {n} computes ({total} items) this one ran in failed: {}",
                    e.message
                )
            } else {
                e.message
            };
            for caller in callers {
                let _ = caller.reply.send(Err(NnError::new(e.kind, message.clone())));
            }
        }
    }
}

/// A caller waiting for its rows once its inputs have gone into the batch.
struct Caller {
    items: u32,
    queued_at: Instant,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

impl Caller {
    fn run(&self, started: Instant, ran: Duration, items: u32, leader: bool) -> BatchRun {
        BatchRun {
            queued: started.saturating_duration_since(self.queued_at),
            ran,
            items,
            leader,
        }
    }
}

/// A batch worker's merged input buffers, one per model input, kept from one batch to the next.
///
/// A batch of 128 photos for ResNet-152 is 77 MB. Allocated afresh, the kernel maps and zeroes
/// every page of it as the merge first writes it, then unmaps it after the run: batches of
/// 70–80 photos took 82–166 ms to merge on the 2-core machine, against 14–17 ms into buffers
/// that were already there. The price is one largest batch per input and worker kept allocated.
#[derive(Default)]
struct Buffers(Vec<Vec<u8>>);

impl Buffers {
    /// An empty buffer for input `i`, with the capacity of the largest kept so far.
    fn take(&mut self, i: usize) -> Vec<u8> {
        let mut b = self.0.get_mut(i).map(std::mem::take).unwrap_or_default();
        b.clear();
        b
    }

    /// Keep each input's buffer after a run, unless the one already kept is larger.
    fn keep(&mut self, inputs: Vec<Tensor>) {
        for (i, t) in inputs.into_iter().enumerate() {
            if i >= self.0.len() {
                self.0.resize_with(i + 1, Vec::new);
            }
            if t.data.capacity() > self.0[i].capacity() {
                self.0[i] = t.data;
            }
        }
    }
}

/// Concatenate each input along the first dimension, in caller order, into tensors of `size`
/// rows (zero rows after the callers' when padded), in `buffers`' memory.
///
/// Buffers are filled by slice copies, which stay memcpy-fast even in a barely optimised
/// (dev) build, where element-wise loops over a 77 MB batch cost hundreds of ms.
fn merge(mut batch: Vec<Pending>, size: usize, buffers: &mut Buffers) -> (Vec<Tensor>, Vec<Caller>) {
    let total: usize = batch.iter().map(|p| p.items as usize).sum();
    if batch.len() == 1
        && size == total
        && let Some(p) = batch.pop()
    {
        let caller = Caller {
            items: p.items,
            queued_at: p.queued_at,
            reply: p.reply,
        };
        return (p.inputs, vec![caller]);
    }
    let mut merged: Vec<Tensor> = batch[0]
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let row = t.data.len() / t.dims[0].max(1) as usize;
            let mut dims = t.dims.clone();
            dims[0] = size as u32;
            let mut data = buffers.take(i);
            data.reserve(row * size);
            Tensor {
                dims,
                dtype: t.dtype,
                data,
            }
        })
        .collect();
    let mut callers = Vec::with_capacity(batch.len());
    for p in batch {
        for (m, t) in merged.iter_mut().zip(&p.inputs) {
            m.data.extend_from_slice(&t.data);
        }
        callers.push(Caller {
            items: p.items,
            queued_at: p.queued_at,
            reply: p.reply,
        });
    }
    // Padding rows: zeros, whatever the buffer held before.
    for m in &mut merged {
        m.data.resize(m.data.len() / total.max(1) * size, 0);
    }
    (merged, callers)
}

/// `t` (whose first dimension is `items`) with zero rows added up to `size`.
fn pad(t: Tensor, items: usize, size: usize) -> Tensor {
    if size <= items || items == 0 {
        return t;
    }
    let mut data = vec![0; t.data.len() / items * size];
    data[..t.data.len()].copy_from_slice(&t.data);
    let mut dims = t.dims;
    dims[0] = size as u32;
    Tensor {
        dims,
        dtype: t.dtype,
        data,
    }
}

/// Cut every output's first dimension (`total` rows, padding included) back into the
/// callers' shares, in caller order; padding rows are dropped.
fn split(model: &str, outputs: Vec<Tensor>, counts: &[u32], total: u32) -> Result<Vec<Vec<Tensor>>, NnError> {
    if let [n] = counts
        && *n == total
    {
        return Ok(vec![outputs]);
    }
    let mut per_caller: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for (o, out) in outputs.iter().enumerate() {
        if out.dims.first() != Some(&total) || out.data.len() % total as usize != 0 {
            return Err(NnError::new(
                ErrorKind::RuntimeError,
                format!(
                    "model `{model}`: output {o} has shape {:?} for a batch of {total}, so its first dimension is \
                     not the batch; set `[batching] enabled = false` in its model.toml",
                    out.dims
                ),
            ));
        }
        let row = out.data.len() / total as usize;
        let mut at = 0;
        for (share, &n) in per_caller.iter_mut().zip(counts) {
            let mut dims = out.dims.clone();
            dims[0] = n;
            let len = row * n as usize;
            share.push(Tensor {
                dims,
                dtype: out.dtype,
                data: out.data[at..at + len].to_vec(),
            });
            at += len;
        }
    }
    Ok(per_caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::DType;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Doubles its input and records each run's batch size; fails on a negative value.
    struct Double {
        runs: Mutex<Vec<u32>>,
        running: AtomicUsize,
    }

    impl Graph for Double {
        fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
            self.running.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            self.running.fetch_sub(1, Ordering::SeqCst);
            let t = &inputs[0];
            self.runs.lock().unwrap().push(t.dims[0]);
            let values = t.to_vec::<f32>();
            if values.iter().any(|v| *v < 0.0) {
                return Err(NnError::new(ErrorKind::InvalidArgument, "negative input"));
            }
            let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
            Ok(vec![Tensor::from_slice(t.dims.clone(), &doubled)])
        }
    }

    fn rows(values: &[f32]) -> Tensor {
        Tensor::from_slice(vec![values.len() as u32 / 2, 2], values)
    }

    fn batcher(max_batch: usize, delay_ms: u64) -> (Arc<Double>, Batcher) {
        padded_batcher(max_batch, delay_ms, false)
    }

    /// One worker; with `pad`, warmed from a probe of one [1, 2] row.
    fn padded_batcher(max_batch: usize, delay_ms: u64, pad: bool) -> (Arc<Double>, Batcher) {
        let g = Arc::new(Double {
            runs: Mutex::new(vec![]),
            running: AtomicUsize::new(0),
        });
        let policy = BatchPolicy {
            max_batch,
            max_queue_delay: Duration::from_millis(delay_ms),
            workers: 1,
            pad,
        };
        let b = Batcher::start("double", g.clone(), policy, &[rows(&[0.0, 0.0])]).unwrap();
        (g, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_computes_merge_and_get_their_own_rows() {
        let (g, b) = batcher(8, 50);
        let b = Arc::new(b);
        let calls = (0..6).map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let v = i as f32;
                let (out, run) = b.compute(vec![rows(&[v, v + 0.5])]).await.unwrap();
                assert_eq!(out[0].to_vec::<f32>(), vec![2.0 * v, 2.0 * v + 1.0]);
                assert_eq!(out[0].dims, vec![1, 2]);
                run
            })
        });
        let runs = futures::future::join_all(calls).await;
        let leaders = runs.iter().filter(|r| r.as_ref().unwrap().leader).count();
        let sizes = g.runs.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<u32>(), 6);
        assert!(sizes.iter().any(|&s| s > 1), "nothing merged: {sizes:?}");
        assert_eq!(leaders, sizes.len(), "one leader per run");
        assert_eq!(DType::F32.size(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_run_fails_each_caller_and_the_batcher_goes_on() {
        let (_, b) = batcher(8, 50);
        let b = Arc::new(b);
        // Keep the worker busy so that the next two queue up and merge.
        let blocker = tokio::spawn({
            let b = b.clone();
            async move { b.compute(vec![rows(&[0.0, 0.0])]).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let good = tokio::spawn({
            let b = b.clone();
            async move { b.compute(vec![rows(&[1.0, 2.0])]).await }
        });
        let bad = tokio::spawn({
            let b = b.clone();
            async move { b.compute(vec![rows(&[-1.0, 2.0])]).await }
        });
        let (good, bad) = (good.await.unwrap(), bad.await.unwrap());
        assert!(blocker.await.unwrap().is_ok());
        for r in [&good, &bad] {
            let e = r.as_ref().expect_err("the merged run failed");
            assert!(e.message.contains("negative input"), "{e}");
        }
        let (out, _) = b.compute(vec![rows(&[3.0, 4.0])]).await.unwrap();
        assert_eq!(out[0].to_vec::<f32>(), vec![6.0, 8.0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn max_batch_and_shapes_bound_a_run() {
        let (g, b) = batcher(3, 50);
        let b = Arc::new(b);
        let calls = (0..5).map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                // Two shapes: [n, 2] and [n, 4] never merge.
                let t = if i % 2 == 0 {
                    rows(&[1.0, 1.0])
                } else {
                    Tensor::from_slice(vec![1, 4], &[1.0f32; 4])
                };
                let (out, _) = b.compute(vec![t.clone()]).await.unwrap();
                assert_eq!(out[0].dims, t.dims);
            })
        });
        futures::future::join_all(calls).await;
        let sizes = g.runs.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<u32>(), 5);
        assert!(sizes.iter().all(|&s| s <= 3), "{sizes:?}");
    }

    #[test]
    fn padding_rounds_up_to_powers_of_two_and_is_cut_off_again() {
        let policy = BatchPolicy {
            max_batch: 12,
            max_queue_delay: Duration::ZERO,
            workers: 1,
            pad: true,
        };
        assert_eq!(policy.sizes(), vec![1, 2, 4, 8, 12]);
        let padded: Vec<usize> = [1, 3, 5, 9, 12, 20].iter().map(|&n| policy.padded(n)).collect();
        assert_eq!(padded, vec![1, 4, 8, 12, 12, 20]);
        let t = pad(rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 3, 4);
        assert_eq!(t.dims, vec![4, 2]);
        assert_eq!(t.to_vec::<f32>()[6..], [0.0, 0.0]);
        let shares = split("m", vec![t], &[1, 2], 4).unwrap();
        assert_eq!(shares[0][0].to_vec::<f32>(), vec![1.0, 2.0]);
        assert_eq!(shares[1][0].to_vec::<f32>(), vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(shares[1][0].dims, vec![2, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn padded_batches_run_at_warmed_sizes_only() {
        let (g, b) = padded_batcher(8, 50, true);
        let b = Arc::new(b);
        assert_eq!(*g.runs.lock().unwrap(), vec![1, 2, 4, 8], "each size warmed once");
        let calls = (0..7).map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let v = i as f32;
                let (out, _) = b.compute(vec![rows(&[v, v])]).await.unwrap();
                assert_eq!(out[0].to_vec::<f32>(), vec![2.0 * v, 2.0 * v]);
            })
        });
        futures::future::join_all(calls).await;
        let runs = g.runs.lock().unwrap()[4..].to_vec();
        assert!(runs.iter().all(|n| [1, 2, 4, 8].contains(n)), "{runs:?}");
    }

    #[test]
    fn an_output_without_the_batch_dimension_is_refused() {
        let out = vec![Tensor::from_slice(vec![2], &[1.0f32, 2.0])];
        let e = split("m", out, &[1, 2], 3).unwrap_err();
        assert!(e.message.contains("enabled = false"), "{e}");
    }

    fn pending(values: &[f32]) -> Pending {
        let inputs = vec![rows(values)];
        Pending {
            items: items(&inputs),
            inputs,
            queued_at: Instant::now(),
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    #[test]
    fn merge_reuses_its_buffer_and_pads_it_with_zeros() {
        let mut buffers = Buffers::default();
        let (full, _) = merge(
            vec![pending(&[1.0, 2.0, 3.0, 4.0]), pending(&[5.0, 6.0, 7.0, 8.0])],
            4,
            &mut buffers,
        );
        assert_eq!(full[0].to_vec::<f32>(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let memory = full[0].data.as_ptr();
        buffers.keep(full);
        // A smaller batch padded to the same size lands in the same memory, and the rows the
        // first batch left there are zeros now.
        let (padded, _) = merge(
            vec![pending(&[9.0, 10.0]), pending(&[11.0, 12.0])],
            4,
            &mut buffers,
        );
        assert_eq!(padded[0].dims, [4, 2]);
        assert_eq!(
            padded[0].to_vec::<f32>(),
            [9.0, 10.0, 11.0, 12.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(padded[0].data.as_ptr(), memory, "the kept buffer was not reused");
    }
}
