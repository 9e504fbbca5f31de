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
//! keeps the shapes to a handful that are all ready before the first request. A batch that
//! gathered just past one of those sizes leaves its newest computes for the next batch rather
//! than run mostly padding (see `trim`).
//!
//! A batch reaches the backend as its callers' inputs, still apart ([`BatchInputs`]), so that
//! a backend with input buffers of its own copies each caller's rows there once.
//!
//! Only computes with the same shape beyond the batch dimension merge (a text model's
//! sentences of different lengths run separately). A failed run fails each of its callers
//! with the same error, and no caller ever receives rows computed from another's input
//! unless they were part of the same run.

use super::{ErrorKind, Graph, NnError, Tensor};
use crate::metrics::InferenceRun;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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

/// The reply to one queued compute: its own output rows, or the run's error.
type Reply = Result<(Vec<Tensor>, InferenceRun), NnError>;

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

/// The batching front of one loaded model. Dropping it stops its workers once the queue is
/// empty, and waits for their threads to end. Nobody waits for what is still queued then (every
/// compute holds its model), so those computes are dropped unrun, as abandoned ones always are.
pub struct Batcher {
    /// `None` only while dropping: the workers stop when it closes.
    submit: Option<Sender<Pending>>,
    policy: BatchPolicy,
    workers: Vec<JoinHandle<()>>,
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
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (queue, graph, name, running) =
                (queue.clone(), graph.clone(), model.to_string(), running.clone());
            let (warming, warmed) = (warming.clone(), warmed.clone());
            let probe = probe.to_vec();
            let handle = std::thread::Builder::new()
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
            handles.push(handle);
        }
        drop(warmed);
        // Built before the warm-up's verdict, so that a failed one also joins the workers.
        let batcher = Self {
            submit: Some(submit),
            policy,
            workers: handles,
        };
        for result in warm_results.iter().take(workers) {
            result?;
        }
        if policy.pad {
            tracing::info!(model, sizes = ?policy.sizes(), workers, ms = t.elapsed().as_millis() as u64, "batch sizes warmed");
        }
        Ok(batcher)
    }

    /// The policy this batcher runs with.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Queue one compute (inputs validated, in the card's order) and wait for its rows.
    pub async fn compute(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, InferenceRun), NnError> {
        let items = items(&inputs);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            inputs,
            items,
            queued_at: Instant::now(),
            reply,
        };
        self.submit
            .as_ref()
            .and_then(|s| s.send(pending).ok())
            .ok_or_else(|| NnError::new(ErrorKind::RuntimeError, "the batch workers are gone"))?;
        answer
            .await
            .map_err(|_| NnError::new(ErrorKind::RuntimeError, "the batch worker stopped"))?
    }
}

impl Drop for Batcher {
    /// Close the queue, then wait for each worker thread to end. A GPU backend keeps state
    /// per thread (ONNX Runtime's CUDA streams and captured graphs), destroyed as the thread
    /// exits. A thread still exiting when the process does destroys it after the CUDA driver
    /// has shut down: on an H100, every SIGTERM logged CUDA failures, and after a hot swap
    /// ONNX Runtime aborted the process. Joining here puts that teardown before `main` returns.
    fn drop(&mut self) {
        drop(self.submit.take());
        super::join_threads(&mut self.workers, "a batch worker");
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
        let mut batch = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            match collect(&mut q, policy, || running.load(SeqCst) > 0) {
                Some(b) => b,
                None => return,
            }
        };
        // Computes whose requests are gone (a 504, a client that left, the end of the drain)
        // would only take rows, and time, from the others.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            tracing::debug!(model, "batch dropped unrun: its requests are gone");
            continue;
        }
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
    trim(&mut batch, &mut q.held, policy);
    Some(batch)
}

/// With `pad`, a batch just past a padded size would run mostly padding: 33 photos run as 64
/// cost nearly what 64 do. When fewer items would wait than padding rows would be added, the
/// newest computes are set aside (ahead of everything else held) down to the size below, and
/// start the next batch, on the next free worker. Triton's preferred batch sizes do the same.
fn trim(batch: &mut Vec<Pending>, held: &mut VecDeque<Pending>, policy: BatchPolicy) {
    let mut items: usize = batch.iter().map(|p| p.items as usize).sum();
    let up = policy.padded(items);
    let Some(down) = policy.sizes().into_iter().filter(|&s| s <= items).max() else {
        return;
    };
    if up == items || items - down >= up - items {
        return;
    }
    while items > down && batch.len() > 1 {
        let Some(p) = batch.pop() else { break };
        items -= p.items as usize;
        held.push_front(p);
    }
}

/// Run one batch and answer each of its callers.
fn run(model: &str, graph: &dyn Graph, batch: Vec<Pending>, policy: BatchPolicy, buffers: &mut Buffers) {
    let started = Instant::now();
    let total: u32 = batch.iter().map(|p| p.items).sum();
    let size = policy.padded(total as usize);
    let (inputs, callers) = take_apart(batch, size);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| graph.run_batch(&inputs, buffers)))
        .unwrap_or_else(|_| Err(NnError::new(ErrorKind::RuntimeError, "the backend panicked")));
    let ran = started.elapsed();
    let merged = inputs.copied.get();
    tracing::debug!(model, items = total, size, ?merged, ?ran, "batch run");
    // The callers' inputs are no longer needed: free them before answering.
    drop(inputs);
    let counts: Vec<u32> = callers.iter().map(|c| c.items).collect();
    let split = result.and_then(|outputs| split(model, outputs, &counts, size as u32));
    let n = callers.len();
    match split {
        Ok(per_caller) => {
            for (i, (caller, rows)) in callers.into_iter().zip(per_caller).enumerate() {
                let run = caller.run(started, ran, (total, size as u32), i == 0);
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
    fn run(&self, started: Instant, ran: Duration, (items, rows): (u32, u32), leader: bool) -> InferenceRun {
        InferenceRun {
            queued: started.saturating_duration_since(self.queued_at),
            ran,
            items,
            rows,
            leader,
        }
    }
}

/// Split a collected batch into its inputs (to run at `size` rows) and its callers.
fn take_apart(batch: Vec<Pending>, size: usize) -> (BatchInputs, Vec<Caller>) {
    let mut parts = Vec::with_capacity(batch.len());
    let mut callers = Vec::with_capacity(batch.len());
    for p in batch {
        parts.push(p.inputs);
        callers.push(Caller {
            items: p.items,
            queued_at: p.queued_at,
            reply: p.reply,
        });
    }
    (BatchInputs::new(parts, size), callers)
}

/// One batch's inputs as its callers sent them, each input to be concatenated along the first
/// dimension in caller order and padded with zero rows up to `size` rows.
///
/// They stay apart until the backend runs them, so that a backend with input buffers of its
/// own (ONNX Runtime's bound sessions: pinned memory that the GPU copies from) writes each
/// caller's rows straight there with [`write`](Self::write). Merging into a buffer first and
/// copying that again cost 9 ms of a 45 ms batch of 64 photos on an H200 machine.
/// [`merged`](Self::merged) concatenates into a worker's [`Buffers`] for every other backend.
pub struct BatchInputs {
    parts: Vec<Vec<Tensor>>,
    size: usize,
    /// Time spent concatenating, wherever it happened (logged with each run).
    copied: Cell<Duration>,
}

impl BatchInputs {
    /// The callers' inputs (`parts`, in caller order, each in the card's input order), to run
    /// at `size` rows.
    pub fn new(parts: Vec<Vec<Tensor>>, size: usize) -> Self {
        Self {
            parts,
            size,
            copied: Cell::new(Duration::ZERO),
        }
    }

    /// How many inputs the model takes (each caller gives one of each).
    pub fn inputs(&self) -> usize {
        self.parts.first().map_or(0, Vec::len)
    }

    /// Input `i`'s shape in the batch: `size` rows of the callers' row shape.
    pub fn dims(&self, i: usize) -> Option<Vec<u32>> {
        let first = self.parts.first()?.get(i)?;
        let mut dims = first.dims.clone();
        *dims.first_mut()? = self.size as u32;
        Some(dims)
    }

    /// Items from all callers together (the rows before padding).
    fn items(&self) -> usize {
        self.parts.iter().map(|p| items(p) as usize).sum()
    }

    /// Input `i`'s bytes from each caller, in caller order.
    fn rows(&self, i: usize) -> impl Iterator<Item = &[u8]> {
        self.parts
            .iter()
            .filter_map(move |p| p.get(i))
            .map(|t| t.data.as_slice())
    }

    /// Write input `i` of the batch into `dst`, which must be exactly its size: each caller's
    /// rows in turn, then zeros for the padding rows.
    pub fn write(&self, i: usize, dst: &mut [u8]) -> Result<(), NnError> {
        let t = Instant::now();
        let bytes: usize = self.rows(i).map(<[u8]>::len).sum();
        let items = self.items();
        let want = bytes.checked_div(items).map(|row| row * self.size);
        if want != Some(dst.len()) {
            return Err(NnError::new(
                ErrorKind::RuntimeError,
                format!(
                    "batch input {i}: {bytes} bytes in {items} rows do not fill {} rows of a {}-byte buffer",
                    self.size,
                    dst.len()
                ),
            ));
        }
        let (rows, padding) = dst.split_at_mut(bytes);
        let mut at = 0;
        for part in self.rows(i) {
            rows[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        padding.fill(0);
        self.copied.set(self.copied.get() + t.elapsed());
        Ok(())
    }

    /// Call `run` with the batch as tensors: the one caller's own inputs when they are the
    /// whole batch, else concatenated into `buffers`.
    pub fn merged<R>(&self, buffers: &mut Buffers, run: impl FnOnce(&[Tensor]) -> R) -> R {
        if let [only] = self.parts.as_slice()
            && items(only) as usize == self.size
        {
            return run(only);
        }
        let t = Instant::now();
        let merged = self.merge(buffers);
        self.copied.set(self.copied.get() + t.elapsed());
        let result = run(&merged);
        buffers.keep(merged);
        result
    }

    /// Concatenate each input into `buffers`' memory.
    ///
    /// Buffers are filled by slice copies, which stay memcpy-fast even in a barely optimised
    /// (dev) build, where element-wise loops over a 77 MB batch cost hundreds of ms.
    fn merge(&self, buffers: &mut Buffers) -> Vec<Tensor> {
        let Some(first) = self.parts.first() else {
            return Vec::new();
        };
        let total = self.items().max(1);
        first
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut dims = t.dims.clone();
                dims[0] = self.size as u32;
                let mut data = buffers.take(i);
                data.reserve(t.data.len() / t.dims[0].max(1) as usize * self.size);
                for part in self.rows(i) {
                    data.extend_from_slice(part);
                }
                // Padding rows: zeros, whatever the buffer held before.
                data.resize(data.len() / total * self.size, 0);
                Tensor {
                    dims,
                    dtype: t.dtype,
                    data,
                }
            })
            .collect()
    }
}

/// A batch worker's merged input buffers, one per model input, kept from one batch to the next.
///
/// A batch of 128 photos for ResNet-152 is 77 MB. Allocated afresh, the kernel maps and zeroes
/// every page of it as the merge first writes it, then unmaps it after the run: batches of
/// 70–80 photos took 82–166 ms to merge on the 2-core machine, against 14–17 ms into buffers
/// that were already there. The price is one largest batch per input and worker kept allocated.
#[derive(Default)]
pub struct Buffers(Vec<Vec<u8>>);

impl Buffers {
    /// Bytes kept for the next batch.
    pub fn kept(&self) -> usize {
        self.0.iter().map(Vec::capacity).sum()
    }

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

    /// Echoes its input; its first run waits for the gate. Records each run's first value.
    struct Gate {
        gate: Mutex<std::sync::mpsc::Receiver<()>>,
        seen: Mutex<Vec<f32>>,
    }

    impl Graph for Gate {
        fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
            if self.seen.lock().unwrap().is_empty() {
                let _ = self.gate.lock().unwrap().recv();
            }
            self.seen.lock().unwrap().push(inputs[0].to_vec::<f32>()[0]);
            Ok(inputs.to_vec())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compute_whose_caller_left_is_not_run() {
        let (open, gate) = std::sync::mpsc::channel();
        let g = Arc::new(Gate {
            gate: Mutex::new(gate),
            seen: Mutex::new(vec![]),
        });
        let policy = BatchPolicy {
            max_batch: 1,
            max_queue_delay: Duration::ZERO,
            workers: 1,
            pad: false,
        };
        let b = Arc::new(Batcher::start("gate", g.clone(), policy, &[rows(&[0.0, 0.0])]).unwrap());
        // One poll queues a compute.
        let mut first = Box::pin(b.compute(vec![rows(&[1.0, 1.0])]));
        assert!(futures::poll!(first.as_mut()).is_pending());
        // Queued behind the first (which waits at the gate), then abandoned, as a request cut
        // off by its deadline.
        let mut left = Box::pin(b.compute(vec![rows(&[2.0, 2.0])]));
        assert!(futures::poll!(left.as_mut()).is_pending());
        drop(left);
        open.send(()).unwrap();
        first.await.unwrap();
        b.compute(vec![rows(&[3.0, 3.0])]).await.unwrap();
        assert_eq!(
            *g.seen.lock().unwrap(),
            vec![1.0, 3.0],
            "the abandoned compute ran"
        );
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
        let (full, _) = take_apart(
            vec![pending(&[1.0, 2.0, 3.0, 4.0]), pending(&[5.0, 6.0, 7.0, 8.0])],
            4,
        );
        let memory = full.merged(&mut buffers, |t| {
            assert_eq!(t[0].to_vec::<f32>(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
            t[0].data.as_ptr() as usize
        });
        // A smaller batch padded to the same size lands in the same memory, and the rows the
        // first batch left there are zeros now.
        let (padded, _) = take_apart(vec![pending(&[9.0, 10.0]), pending(&[11.0, 12.0])], 4);
        let again = padded.merged(&mut buffers, |t| {
            assert_eq!(t[0].dims, [4, 2]);
            assert_eq!(t[0].to_vec::<f32>(), [9.0, 10.0, 11.0, 12.0, 0.0, 0.0, 0.0, 0.0]);
            t[0].data.as_ptr() as usize
        });
        assert_eq!(again, memory, "the kept buffer was not reused");
    }

    #[test]
    fn dropping_a_batcher_waits_for_its_threads_to_end() {
        let ended = Arc::new(AtomicUsize::new(0));
        let graph: Arc<dyn Graph> = Arc::new(crate::nn::thread_state::PerThread(ended.clone()));
        let weak = Arc::downgrade(&graph);
        let policy = BatchPolicy {
            max_batch: 2,
            max_queue_delay: Duration::from_millis(1),
            workers: 3,
            pad: true,
        };
        // Padding warms every size on every worker, so each thread has its state.
        let b = Batcher::start("per-thread", graph, policy, &[rows(&[0.0, 0.0])]).unwrap();
        assert_eq!(ended.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(
            ended.load(Ordering::SeqCst),
            3,
            "every worker's thread state is gone"
        );
        assert!(weak.upgrade().is_none(), "the graph is gone");
    }

    #[test]
    fn a_batch_writes_into_a_backends_buffer_as_it_merges() {
        let (batch, _) = take_apart(vec![pending(&[1.0, 2.0]), pending(&[3.0, 4.0, 5.0, 6.0])], 4);
        assert_eq!((batch.inputs(), batch.dims(0)), (1, Some(vec![4, 2])));
        // A buffer with stale bytes in it, as a staging buffer has after a previous run.
        let mut dst = vec![0xffu8; 4 * 2 * 4];
        batch.write(0, &mut dst).unwrap();
        let merged = batch.merged(&mut Buffers::default(), |t| t[0].data.clone());
        assert_eq!(dst, merged);
        let values: Vec<f32> = bytemuck::cast_slice::<u8, f32>(&dst).to_vec();
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
        let e = batch.write(0, &mut [0u8; 12]).unwrap_err();
        assert!(e.message.contains("do not fill"), "{e}");
    }

    #[test]
    fn a_batch_just_past_a_padded_size_leaves_its_newest_for_the_next() {
        let policy = BatchPolicy {
            max_batch: 64,
            max_queue_delay: Duration::ZERO,
            workers: 2,
            pad: true,
        };
        let collected = |n: usize| {
            let mut batch: Vec<Pending> = (0..n).map(|i| pending(&[i as f32, 0.0])).collect();
            let mut held = VecDeque::from([pending(&[-1.0, 0.0])]);
            trim(&mut batch, &mut held, policy);
            let first = |p: &Pending| p.inputs[0].to_vec::<f32>()[0];
            (batch.len(), held.iter().map(first).collect::<Vec<_>>())
        };
        // 33 would run as 64: 32 run now, the 33rd waits, ahead of what was already held.
        assert_eq!(collected(33), (32, vec![32.0, -1.0]));
        assert_eq!(collected(35), (32, vec![32.0, 33.0, 34.0, -1.0]));
        // 60 runs as 64: setting 28 aside would cost more than 4 rows of padding.
        assert_eq!(collected(60), (60, vec![-1.0]));
        assert_eq!(collected(48), (48, vec![-1.0]));
        assert_eq!(collected(3), (3, vec![-1.0]));
        assert_eq!(collected(5), (4, vec![4.0, -1.0]));
        // Without padding nothing is set aside.
        let mut batch: Vec<Pending> = (0..33).map(|i| pending(&[i as f32, 0.0])).collect();
        trim(
            &mut batch,
            &mut VecDeque::new(),
            BatchPolicy { pad: false, ..policy },
        );
        assert_eq!(batch.len(), 33);
    }
}
