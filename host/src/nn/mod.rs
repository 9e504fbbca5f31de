//! Inference in the host: the backend-neutral core that `wasi:nn` calls into.
//!
//! - [`Backend`] turns a model card into a [`Graph`]; [`tract`] is the CPU backend, and
//!   others (ONNX Runtime) implement the same trait.
//! - [`ModelRegistry`] holds every model loaded at start-up, shared by all requests.
//! - [`pool`] runs computes on the inference threads, off the async runtime.
//! - [`wit`] is the `wasi:nn@0.2.0-rc-2024-10-28` implementation that guests see.
//!
//! Tensors are validated against the card here, once, so that backends only ever see inputs
//! of the declared names, types and shapes.

pub mod batch;
pub mod onnx_ml;
pub mod onnxruntime;
pub mod pool;
#[cfg(test)]
mod thread_state;
pub mod tract;
mod trees;
pub mod wit;

use crate::models::{DType, ModelEntry, TensorSpec};
use crate::versions::{Replaced, Versions};
use std::collections::HashMap;
use std::sync::Arc;

pub use pool::InferencePool;

/// Wait for each of `threads` to end (the calling thread excepted, which only guards against
/// a deadlock), logging a panic as `what`. Threads that run inference join on drop: a GPU
/// backend keeps CUDA state per thread and destroys it as the thread exits, which must happen
/// before the process exits (see `batch::Batcher`'s `Drop`).
fn join_threads(threads: &mut Vec<std::thread::JoinHandle<()>>, what: &str) {
    let me = std::thread::current().id();
    for handle in threads.drain(..) {
        if handle.thread().id() != me && handle.join().is_err() {
            tracing::warn!("{what} panicked");
        }
    }
}

/// wasi-nn's error codes, which guests branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    InvalidEncoding,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
    Security,
}

/// An inference failure with its wasi-nn code and a message for the guest and the logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct NnError {
    pub kind: ErrorKind,
    pub message: String,
}

impl NnError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A dense tensor as it crosses the wasi-nn boundary: little-endian bytes, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<u32>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

// wasi-nn tensors are little-endian bytes; the typed views below copy them as they are.
#[cfg(target_endian = "big")]
compile_error!("scoria assumes a little-endian host");

/// Element types a [`Tensor`] can be read as or built from.
pub trait Element: bytemuck::Pod {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DType = DType::$d; })* };
}
element!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, u8 => U8);

/// `$body` with the type `$t` bound to the [`Element`] type of `$dtype`, or `$fallback` for
/// a dtype that has none (f16, bf16): the one place that maps dtypes to Rust types, for every
/// backend's conversions.
macro_rules! with_element {
    ($dtype:expr, $t:ident => $body:expr, $other:pat => $fallback:expr) => {
        match $dtype {
            $crate::models::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::models::DType::F64 => {
                type $t = f64;
                $body
            }
            $crate::models::DType::I32 => {
                type $t = i32;
                $body
            }
            $crate::models::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::models::DType::U8 => {
                type $t = u8;
                $body
            }
            $other => $fallback,
        }
    };
}
pub(crate) use with_element;

impl Tensor {
    /// A tensor of `values` (row-major) with shape `dims`.
    pub fn from_slice<T: Element>(dims: Vec<u32>, values: &[T]) -> Self {
        Self {
            dims,
            dtype: T::DTYPE,
            data: bytemuck::cast_slice(values).to_vec(),
        }
    }

    /// The elements as `T`, copied at memcpy speed (the bytes need not be aligned).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        debug_assert_eq!(self.dtype, T::DTYPE);
        bytemuck::pod_collect_to_vec(&self.data)
    }
}

/// A loaded model that can run many inferences at once (`&self`, `Send + Sync`).
pub trait Graph: Send + Sync {
    /// Run once. Inputs are already validated against the card, in the card's input order.
    /// They are borrowed, so that a batch worker can reuse its merged input buffers.
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError>;

    /// Run one batch of callers' inputs (see [`batch::BatchInputs`]). By default they are
    /// concatenated into the worker's `buffers` and [`run`](Self::run); a backend with input
    /// buffers of its own writes them straight there instead.
    fn run_batch(
        &self,
        batch: &batch::BatchInputs,
        buffers: &mut batch::Buffers,
    ) -> Result<Vec<Tensor>, NnError> {
        batch.merged(buffers, |inputs| self.run(inputs))
    }

    /// Run once with `inputs` so that the first request of this shape does not pay for
    /// kernel selection and allocation; a backend with several sessions warms each.
    fn warm(&self, inputs: &[Tensor]) -> Result<(), NnError> {
        self.run(inputs).map(drop)
    }

    /// `Some(n)` when each of the graph's n sessions must stay on one thread (ONNX Runtime's
    /// captured CUDA graphs): the model then runs on worker threads of its own, one per
    /// session, which warm it there (a [`batch::Batcher`], of one item per run unless
    /// batching is on); `warm` then warms the calling thread's session alone.
    fn worker_sessions(&self) -> Option<usize> {
        None
    }
}

/// Something that can load models; one per inference engine.
pub trait Backend: Send + Sync {
    /// Short name for logs and `scoria models list`.
    fn name(&self) -> &'static str;
    /// Load weights (read and verified by the caller, or uploaded for a hot swap) as the
    /// model `entry`'s card describes.
    fn load_bytes(&self, entry: &ModelEntry, bytes: &[u8]) -> Result<Arc<dyn Graph>, NnError>;
}

/// A model ready to serve: its card, the backend that loaded it, and the graph.
pub struct LoadedModel {
    pub entry: ModelEntry,
    pub backend: &'static str,
    /// Where the graph runs (the GPU only with ONNX Runtime's CUDA provider).
    pub device: crate::models::Device,
    pub graph: Arc<dyn Graph>,
    /// sha256 of the weights this graph was loaded from, to tell versions apart.
    pub digest: String,
    pub loaded_at: std::time::SystemTime,
    /// Set when concurrent computes on this model are merged into batches.
    pub batcher: Option<batch::Batcher>,
}

impl LoadedModel {
    /// Check inputs against the card and run; outputs come back named as the card says.
    /// Runs on the calling thread and never batches (tools, baselines, index builds).
    pub fn compute(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, NnError> {
        let inputs = self.prepare(inputs)?;
        Ok(self.name_outputs(self.graph.run(&inputs)?))
    }

    /// Validate `inputs` against the card, then run them as every request does: merged into a
    /// batch when this model batches, else on the shared inference threads. Guests' `compute`
    /// and the inference protocol both come through here, so they get the same checks and
    /// batching; a request that fails the checks never reaches the backend.
    pub async fn run(
        self: &Arc<Self>,
        pool: &InferencePool,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<(Vec<(String, Tensor)>, crate::metrics::InferenceRun), NnError> {
        let start = std::time::Instant::now();
        let inputs = self.prepare(inputs)?;
        let (outputs, run) = match &self.batcher {
            Some(batcher) => batcher.compute(inputs).await?,
            None => {
                let items = batch::items(&inputs);
                let job = self.clone();
                let (queued, outputs) = pool.run(move || job.graph.run(&inputs)).await?;
                let run = crate::metrics::InferenceRun {
                    queued,
                    ran: start.elapsed().saturating_sub(queued),
                    items,
                    rows: items,
                    leader: true,
                };
                (outputs?, run)
            }
        };
        Ok((self.name_outputs(outputs), run))
    }

    /// Validate named inputs against the card and put them in the card's order.
    pub fn prepare(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, NnError> {
        let specs = &self.entry.card.inputs;
        let mut ordered: Vec<Option<Tensor>> = vec![None; specs.len()];
        for (name, t) in inputs {
            let Some(i) = specs.iter().position(|s| s.name == name) else {
                let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(NnError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "model `{}` has no input `{name}`; its inputs are {known:?}",
                        self.entry.card.name
                    ),
                ));
            };
            validate(&specs[i], &t)?;
            ordered[i] = Some(t);
        }
        ordered
            .into_iter()
            .zip(specs)
            .map(|(t, s)| {
                t.ok_or_else(|| {
                    NnError::new(
                        ErrorKind::InvalidArgument,
                        format!("input `{}` is missing", s.name),
                    )
                })
            })
            .collect()
    }

    /// Outputs in the card's order, named as the card says.
    pub fn name_outputs(&self, outputs: Vec<Tensor>) -> Vec<(String, Tensor)> {
        self.entry
            .card
            .outputs
            .iter()
            .map(|s| s.name.clone())
            .zip(outputs)
            .collect()
    }
}

/// Dtype, rank, fixed dimensions and byte length must all agree with the card.
fn validate(spec: &TensorSpec, t: &Tensor) -> Result<(), NnError> {
    let bad = |m: String| {
        Err(NnError::new(
            ErrorKind::InvalidArgument,
            format!("input `{}`: {m}", spec.name),
        ))
    };
    if t.dtype != spec.dtype {
        return bad(format!(
            "type is {:?}, the model expects {:?}",
            t.dtype, spec.dtype
        ));
    }
    let fits = t.dims.len() == spec.shape.len()
        && t.dims
            .iter()
            .zip(&spec.shape)
            .all(|(&d, &s)| d > 0 && (s < 0 || i64::from(d) == s));
    if !fits {
        return bad(format!(
            "shape is {:?}, the model expects {:?} (-1 = any)",
            t.dims, spec.shape
        ));
    }
    let elems = t
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
    match elems.and_then(|n| n.checked_mul(t.dtype.size())) {
        Some(n) if n == t.data.len() => Ok(()),
        Some(n) => bad(format!("holds {} bytes, its shape needs {n}", t.data.len())),
        None => Err(NnError::new(
            ErrorKind::TooLarge,
            format!("input `{}` is too large", spec.name),
        )),
    }
}

/// Why a model swap or rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelSwapError {
    #[error("no model `{0}` is loaded")]
    Unknown(String),
    #[error("model `{0}` has no previous version")]
    NoPrevious(String),
}

/// What [`ModelRegistry::swap`] did.
pub struct Swapped {
    /// The version new computes now get.
    pub new: Arc<LoadedModel>,
    /// The version it replaced, now the rollback target.
    pub old: Arc<LoadedModel>,
    /// The rollback target until now, handed back rather than dropped under the slot's lock:
    /// dropping a model's last handle stops and joins its batch workers, which on a GPU tear
    /// down CUDA state (tens of milliseconds), so the caller drops it where blocking is fine.
    pub displaced: Option<Arc<LoadedModel>>,
}

/// Every model the host loaded at start-up, by name, and the threads that run them.
///
/// Each model sits in a slot shared by every component's [`subset`](Self::subset), so a swap
/// is seen by all of them at once. A compute holds the `Arc` it started with, so a swap never
/// changes the graph under a request in flight.
#[derive(Clone)]
pub struct ModelRegistry {
    slots: HashMap<String, Arc<std::sync::RwLock<Versions<Arc<LoadedModel>>>>>,
    pool: Arc<InferencePool>,
}

impl Default for ModelRegistry {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self {
            slots: HashMap::new(),
            pool: Arc::new(InferencePool::new(cores)),
        }
    }
}

impl ModelRegistry {
    /// The inference threads shared by every model.
    pub fn pool(&self) -> &InferencePool {
        &self.pool
    }

    pub fn insert(&mut self, model: LoadedModel) {
        let name = model.entry.card.name.clone();
        let versions = Versions::new(Arc::new(model));
        self.slots
            .insert(name, Arc::new(std::sync::RwLock::new(versions)));
    }

    /// The version of `name` that new computes get.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        let slot = self.slots.get(name)?;
        let v = slot.read().unwrap_or_else(|p| p.into_inner());
        Some(v.current().clone())
    }

    /// The subset a component may use: exactly the models its manifest entry lists.
    pub fn subset(&self, names: &[String]) -> ModelRegistry {
        ModelRegistry {
            slots: names
                .iter()
                .filter_map(|n| self.slots.get(n).map(|m| (n.clone(), m.clone())))
                .collect(),
            pool: self.pool.clone(),
        }
    }

    /// Make `model` the version of its name that new computes get; the old one becomes the
    /// rollback target.
    pub fn swap(&self, model: LoadedModel) -> Result<Swapped, ModelSwapError> {
        let name = model.entry.card.name.clone();
        let slot = self.slots.get(&name).ok_or(ModelSwapError::Unknown(name))?;
        let mut v = slot.write().unwrap_or_else(|p| p.into_inner());
        let new = Arc::new(model);
        let Replaced { old, displaced } = v.replace(new.clone());
        Ok(Swapped { new, old, displaced })
    }

    /// Back to the previous version of `name`, which becomes the rollback target. Returns
    /// (now, before).
    pub fn rollback(&self, name: &str) -> Result<(Arc<LoadedModel>, Arc<LoadedModel>), ModelSwapError> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| ModelSwapError::Unknown(name.into()))?;
        let mut v = slot.write().unwrap_or_else(|p| p.into_inner());
        v.roll_back()
            .ok_or_else(|| ModelSwapError::NoPrevious(name.into()))
    }

    /// `(current, previous)` for every model, sorted by name.
    pub fn versions(&self) -> Vec<(Arc<LoadedModel>, Option<Arc<LoadedModel>>)> {
        let mut all: Vec<_> = self
            .slots
            .values()
            .map(|slot| {
                let v = slot.read().unwrap_or_else(|p| p.into_inner());
                (v.current().clone(), v.previous().cloned())
            })
            .collect();
        all.sort_by(|a, b| a.0.entry.card.name.cmp(&b.0.entry.card.name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TensorSpec {
        TensorSpec {
            name: "input".into(),
            shape: vec![-1, 3],
            dtype: DType::F32,
        }
    }

    fn tensor(dims: Vec<u32>, dtype: DType, bytes: usize) -> Tensor {
        Tensor {
            dims,
            dtype,
            data: vec![0; bytes],
        }
    }

    /// Answers its inputs.
    struct Echo;

    impl Graph for Echo {
        fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
            Ok(inputs.to_vec())
        }
    }

    #[test]
    fn a_swap_hands_back_the_version_it_displaces() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nullnet");
        let entry = crate::models::ModelEntry::load(&dir).unwrap();
        let version = |digest: &str| LoadedModel {
            entry: entry.clone(),
            backend: "echo",
            device: crate::models::Device::Cpu,
            graph: Arc::new(Echo),
            digest: digest.into(),
            loaded_at: std::time::SystemTime::now(),
            batcher: None,
        };
        let name = entry.card.name.clone();
        let mut registry = ModelRegistry::default();
        registry.insert(version("a"));
        let first = registry.swap(version("b")).unwrap();
        assert_eq!((first.new.digest.as_str(), first.old.digest.as_str()), ("b", "a"));
        assert!(first.displaced.is_none(), "nothing was the rollback target yet");
        drop(first);
        let second = registry.swap(version("c")).unwrap();
        let displaced = second.displaced.expect("a is no longer kept");
        assert_eq!(displaced.digest, "a");
        // Handed back as the last handle, so the caller's drop is the one that tears it down.
        assert_eq!(Arc::strong_count(&displaced), 1);
        let versions = registry.versions();
        let (now, before) = versions.iter().find(|(v, _)| v.entry.card.name == name).unwrap();
        assert_eq!(now.digest, "c");
        assert_eq!(before.as_ref().map(|b| b.digest.as_str()), Some("b"));
    }

    #[test]
    fn validation_accepts_dynamic_batch() {
        validate(&spec(), &tensor(vec![2, 3], DType::F32, 24)).unwrap();
    }

    #[test]
    fn validation_refuses_wrong_type_shape_and_length() {
        for t in [
            tensor(vec![2, 3], DType::U8, 6),
            tensor(vec![2, 4], DType::F32, 32),
            tensor(vec![6], DType::F32, 24),
            tensor(vec![0, 3], DType::F32, 0),
            tensor(vec![2, 3], DType::F32, 20),
        ] {
            let e = validate(&spec(), &t).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{t:?}");
        }
        let any3 = TensorSpec {
            shape: vec![-1, -1, -1],
            ..spec()
        };
        let e = validate(&any3, &tensor(vec![u32::MAX; 3], DType::F32, 4)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
    }
}
