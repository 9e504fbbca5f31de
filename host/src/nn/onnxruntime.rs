//! The ONNX Runtime backend, through the `ort` crate with the shared library loaded at run
//! time (`load-dynamic`): the CPU execution provider everywhere, CUDA for a model on the GPU
//! (`--device gpu`, or the card's `device = "gpu"`).
//!
//! The library comes from the PyPI wheel `onnxruntime` (`./dev setup` extracts it into
//! `.cache/onnxruntime/`); `ORT_DYLIB_PATH` overrides where it is looked for. When it is
//! missing, [`OnnxRuntime::open`] says so and how to fix it, and the host keeps serving
//! with tract.
//!
//! `ort` runs a session through `&mut`, so each model holds a small pool of sessions (one per
//! inference thread unless its card's `[onnxruntime] sessions` says otherwise): concurrent
//! computes on one model overlap instead of queueing on a lock.
//!
//! On a GPU (unless the card sets `[onnxruntime] cuda_graph = false`), each session instead
//! belongs to the first thread that warms it (a batch worker of its own, see
//! [`Graph::worker_sessions`]), and the shapes it was warmed with replay as captured CUDA
//! graphs (the `capture` module).

mod capture;

use super::batch::{BatchInputs, Buffers};
use super::{Backend, Element, ErrorKind, Graph, NnError, Tensor, with_element};
use crate::models::{DType, Format, ModelEntry};
use ort::ep::cuda::ConvAlgorithmSearch;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{NoSelectedOutputs, RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, Tensor as OrtTensor, TensorRef};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::thread::ThreadId;

pub use crate::models::Device;

/// ONNX Runtime, once its shared library is loaded, building sessions for one device.
#[derive(Debug, Clone)]
pub struct OnnxRuntime {
    env: Arc<ort::environment::Environment>,
    device: Device,
}

/// The library's location: `ORT_DYLIB_PATH`, else `<project>/.cache/onnxruntime/`.
pub fn library_path(project: &Path) -> PathBuf {
    library_path_from(std::env::var_os("ORT_DYLIB_PATH"), project)
}

/// ONNX Runtime's own switch for its telemetry. Official builds from 1.29 on upload usage
/// events to Microsoft on Linux too, keep a device id under `~/.cache/Microsoft` and a session
/// file in the temporary folder, unless this is `1` before the library initialises.
pub const TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

/// Turn ONNX Runtime's telemetry off for this process unless the operator chose: a scoring
/// host should not phone home (or try to, every 40 s, from a pod with no egress) by default.
/// An explicit `ORT_DISABLE_TELEMETRY` is left as it is; `0` opts in.
///
/// # Safety
/// It sets an environment variable, so no other thread may be running: call it first thing
/// in `main`.
pub unsafe fn disable_telemetry_by_default() {
    if std::env::var_os(TELEMETRY_VAR).is_none_or(|v| v.is_empty()) {
        // SAFETY: the caller guarantees that this process has a single thread.
        unsafe { std::env::set_var(TELEMETRY_VAR, "1") };
    }
}

/// Whether the operator opted in to ONNX Runtime's telemetry (`ORT_DISABLE_TELEMETRY=0`).
/// Otherwise the environment is also built with the API switch off, which covers a library
/// too old to know the variable.
fn telemetry_wanted() -> bool {
    std::env::var_os(TELEMETRY_VAR).is_some_and(|v| v == "0")
}

/// An empty `ORT_DYLIB_PATH` (`ORT_DYLIB_PATH= scoria up`, or a blank value in a pod spec)
/// counts as unset: read as a path it named no file, and every model fell back to tract.
fn library_path_from(var: Option<std::ffi::OsString>, project: &Path) -> PathBuf {
    match var {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => project.join(".cache/onnxruntime/libonnxruntime.so"),
    }
}

impl OnnxRuntime {
    /// Load the shared library at `lib` (once per process) and make an environment.
    pub fn open(lib: &Path, device: Device) -> Result<Self, NnError> {
        static ENV: OnceLock<Result<Arc<ort::environment::Environment>, String>> = OnceLock::new();
        let env = ENV
            .get_or_init(|| {
                if !lib.is_file() {
                    return Err(format!(
                        "the ONNX Runtime library is missing: no {}; fix: run `./dev setup` (it extracts it from the \
                         PyPI wheel `onnxruntime`) or set ORT_DYLIB_PATH to a libonnxruntime.so",
                        lib.display()
                    ));
                }
                let telemetry = telemetry_wanted();
                tracing::info!(
                    library = %lib.display(),
                    telemetry = if telemetry { "on (ORT_DISABLE_TELEMETRY=0)" } else { "off" },
                    "loading ONNX Runtime"
                );
                ort::init_from(lib)
                    .map_err(|e| format!("cannot load the ONNX Runtime library {}: {e}", lib.display()))?
                    .with_name("scoria")
                    .with_telemetry(telemetry)
                    .build()
                    .map(Arc::new)
                    .map_err(|e| format!("ONNX Runtime did not start: {e}"))
            })
            .clone()
            .map_err(|m| NnError::new(ErrorKind::NotFound, m))?;
        Ok(Self { env, device })
    }

    /// Sessions per model when a card does not say: on a GPU each holds the weights in GPU
    /// memory and a few keep it busy; on CPU, one per core, each running on one thread.
    fn default_sessions(&self) -> usize {
        match self.device {
            Device::Gpu => 4,
            Device::Cpu => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }
    }

    /// The same runtime building sessions for `device`.
    pub fn on(&self, device: Device) -> Self {
        Self {
            env: self.env.clone(),
            device,
        }
    }
}

/// GPU work in this process, against CUDA graph captures: a capture fails if another thread
/// allocates GPU memory or synchronises meanwhile (and that thread's call fails too), which a
/// model loading beside served ones (a hot swap) would otherwise risk. Runs on the GPU share
/// it; a capture, at load only, takes it alone while it lasts.
static GPU_CAPTURE: RwLock<()> = RwLock::new(());

/// One session, and with CUDA graphs the thread it belongs to and what it captured.
struct Slot {
    session: Session,
    /// With CUDA graphs: the thread that warmed it, the only one that replays its graphs.
    owner: Option<ThreadId>,
    /// Shapes warmed with bound buffers, one graph each.
    captured: Vec<capture::Captured>,
}

impl Slot {
    fn new(session: Session) -> Self {
        Self {
            session,
            owner: None,
            captured: Vec::new(),
        }
    }
}

/// The sessions not running right now, and which threads own one (idle or running).
struct Pool {
    idle: Vec<Slot>,
    /// With bound sessions: the threads that own one, each at most once.
    owners: Vec<ThreadId>,
}

struct OrtGraph {
    /// A compute takes an idle session and gives it back.
    pool: Mutex<Pool>,
    /// Sessions in all (idle or running).
    sessions: usize,
    /// Sessions belong to the threads that warm them, and warmed shapes run through bound
    /// buffers (the `capture` module); on the GPU (`cuda_graph`), captured as CUDA graphs.
    bound: bool,
    /// Whether the sessions run on the GPU (and so hold [`GPU_CAPTURE`] shared while they run).
    gpu: bool,
    /// With `[onnxruntime] solo_intra_threads` on CPU: a session on more threads, for a
    /// compute that starts while no other ONNX Runtime compute runs in the process.
    solo: Option<Mutex<Session>>,
    returned: Condvar,
    inputs: Vec<String>,
    outputs: Vec<(String, DType)>,
}

impl Backend for OnnxRuntime {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn load_bytes(&self, entry: &ModelEntry, bytes: &[u8]) -> Result<Arc<dyn Graph>, NnError> {
        // CUDA graphs by default on a GPU: measured on an H200, they took ResNet-152's batch-1
        // latency from 2.2x native to 0.9x, and batched throughput up 2x (README).
        let asked = entry.card.onnxruntime.cuda_graph;
        if self.device != Device::Gpu || asked == Some(false) {
            return Ok(Arc::new(self.graph(entry, bytes, false)?));
        }
        match self.graph(entry, bytes, true) {
            // ONNX Runtime refuses graphs for a model with nodes off the GPU; by default, such a
            // model runs without them.
            Err(e) if e.kind == ErrorKind::RuntimeError && asked.is_none() => {
                tracing::warn!(model = %entry.card.name, why = %e.message, "no CUDA graphs for this model; it runs without them");
                Ok(Arc::new(self.graph(entry, bytes, false)?))
            }
            Err(e) if e.kind == ErrorKind::RuntimeError => Err(NnError::new(
                e.kind,
                format!(
                    "{} (with [onnxruntime] cuda_graph = true in {}; fix: set it to false)",
                    e.message,
                    entry.dir.join("model.toml").display()
                ),
            )),
            other => Ok(Arc::new(other?)),
        }
    }
}

impl OnnxRuntime {
    /// The sessions for one model; `bound`: each belongs to a thread and runs warmed shapes
    /// through bound buffers, captured as CUDA graphs on the GPU.
    fn graph(&self, entry: &ModelEntry, bytes: &[u8], bound: bool) -> Result<OrtGraph, NnError> {
        let card = &entry.card;
        if card.format != Format::Onnx {
            return Err(NnError::new(
                ErrorKind::InvalidEncoding,
                format!("ONNX Runtime cannot load {:?}", card.format),
            ));
        }
        let fail = |e: String| NnError::new(ErrorKind::RuntimeError, format!("{}: {e}", card.name));
        let opts = &card.onnxruntime;
        let level = choose(
            entry,
            "optimization",
            opts.optimization.as_deref().unwrap_or("all"),
            &[
                ("disable", GraphOptimizationLevel::Disable),
                ("basic", GraphOptimizationLevel::Level1),
                ("extended", GraphOptimizationLevel::Level2),
                ("all", GraphOptimizationLevel::All),
            ],
        )?;
        // 0 leaves it to ONNX Runtime: one thread per physical core.
        let intra = opts.intra_threads.unwrap_or(1);
        let search = choose(
            entry,
            "cuda_conv_algo_search",
            opts.cuda_conv_algo_search.as_deref().unwrap_or("heuristic"),
            &[
                ("heuristic", ConvAlgorithmSearch::Heuristic),
                ("exhaustive", ConvAlgorithmSearch::Exhaustive),
                ("default", ConvAlgorithmSearch::Default),
            ],
        )?;
        let cuda = ort::ep::CUDA::default()
            .with_conv_algorithm_search(search)
            .with_prefer_nhwc(opts.cuda_prefer_nhwc.unwrap_or(false))
            .with_cuda_graph(bound && self.device == Device::Gpu);
        let build = |threads: usize| -> Result<Session, NnError> {
            let mut builder = Session::builder(&self.env)
                .and_then(|b| b.with_optimization_level(level).map_err(Into::into))
                .and_then(|b| match threads {
                    0 => Ok(b),
                    n => b.with_intra_threads(n).map_err(Into::into),
                })
                .map_err(|e: ort::Error| fail(e.to_string()))?;
            if self.device == Device::Gpu {
                builder = builder
                    .with_execution_providers([cuda.clone().build().error_on_failure()])
                    .map_err(|e| {
                        // Its own kind, so that a card's request for the GPU can fall back.
                        NnError::new(
                            ErrorKind::UnsupportedOperation,
                            format!("{}: the CUDA execution provider is not available: {e}", card.name),
                        )
                    })?;
            }
            let session = builder
                .commit_from_memory(bytes)
                .map_err(|e| fail(e.to_string()))?;
            // The card is the contract: the graph must have the tensors it names.
            let has = |names: Vec<&str>, want: &str| names.contains(&want);
            for spec in &card.inputs {
                if !has(session.inputs().iter().map(|i| i.name()).collect(), &spec.name) {
                    return Err(fail(format!(
                        "the graph has no input `{}` named in model.toml",
                        spec.name
                    )));
                }
            }
            for spec in &card.outputs {
                if !has(session.outputs().iter().map(|o| o.name()).collect(), &spec.name) {
                    return Err(fail(format!(
                        "the graph has no output `{}` named in model.toml",
                        spec.name
                    )));
                }
            }
            Ok(session)
        };
        let mut idle = Vec::new();
        for _ in 0..opts.sessions.unwrap_or_else(|| self.default_sessions()).max(1) {
            idle.push(Slot::new(build(intra)?));
        }
        let solo = match opts.solo_intra_threads {
            Some(threads) if self.device == Device::Cpu => Some(Mutex::new(build(threads)?)),
            _ => None,
        };
        Ok(OrtGraph {
            sessions: idle.len(),
            pool: Mutex::new(Pool {
                idle,
                owners: Vec::new(),
            }),
            bound,
            gpu: self.device == Device::Gpu,
            solo,
            returned: Condvar::new(),
            inputs: card.inputs.iter().map(|i| i.name.clone()).collect(),
            outputs: card.outputs.iter().map(|o| (o.name.clone(), o.dtype)).collect(),
        })
    }
}

impl OrtGraph {
    /// `inputs` named as the graph's inputs, as ONNX Runtime values.
    fn values<'t>(&self, inputs: &'t [Tensor]) -> Result<Vec<(String, SessionInputValue<'t>)>, NnError> {
        inputs
            .iter()
            .zip(&self.inputs)
            .map(|(t, name)| Ok((name.clone(), to_ort(t)?)))
            .collect()
    }
}

/// The value of the card's `[onnxruntime] key` among `options`, or an error naming the file,
/// the key and the choices.
fn choose<T: Clone>(entry: &ModelEntry, key: &str, value: &str, options: &[(&str, T)]) -> Result<T, NnError> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            NnError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{}: [onnxruntime] {key} = \"{value}\" is not one of {}",
                    entry.dir.join("model.toml").display(),
                    names.join(", ")
                ),
            )
        })
}

/// ONNX Runtime computes running in this process, across models: a compute may spread over
/// every core only while it runs alone.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One compute counted in [`RUNNING`] while it lives; `alone` if none ran when it started.
struct Running {
    alone: bool,
}

impl Running {
    fn start() -> Self {
        Self {
            alone: RUNNING.fetch_add(1, Ordering::SeqCst) == 0,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

impl OrtGraph {
    /// Take an idle session for the calling thread, waiting for one if need be. With bound
    /// sessions: the thread's own; else one no thread owns yet, which becomes the thread's;
    /// else, once every session has an owner, any idle one (it then runs unbound).
    fn take(&self) -> Slot {
        let me = std::thread::current().id();
        let mut pool = self.lock_pool();
        loop {
            let Pool { idle, owners } = &mut *pool;
            let pick = if !self.bound {
                idle.len().checked_sub(1)
            } else if owners.contains(&me) {
                idle.iter().position(|s| s.owner == Some(me))
            } else if let Some(i) = idle.iter().position(|s| s.owner.is_none()) {
                idle[i].owner = Some(me);
                owners.push(me);
                Some(i)
            } else if owners.len() == self.sessions {
                idle.len().checked_sub(1)
            } else {
                None
            };
            if let Some(i) = pick {
                return idle.swap_remove(i);
            }
            pool = self.returned.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn give_back(&self, slot: Slot) {
        self.lock_pool().idle.push(slot);
        // Bound sessions wait for a particular one, so every waiter looks.
        match self.bound {
            true => self.returned.notify_all(),
            false => self.returned.notify_one(),
        }
    }

    /// Whether warmed shapes are captured as CUDA graphs (bound sessions on the GPU).
    fn graphs(&self) -> bool {
        self.bound && self.gpu
    }

    /// Held while this graph's sessions run, if they run on the GPU: no capture meanwhile.
    fn shared(&self) -> Option<RwLockReadGuard<'static, ()>> {
        self.gpu
            .then(|| GPU_CAPTURE.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// One run on `slot`: replayed if its thread captured these shapes, else as usual.
    fn run_on(&self, slot: &mut Slot, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
        let _shared = self.shared();
        if !self.bound {
            return run(&mut slot.session, self.values(inputs)?, &self.outputs, None);
        }
        let mine = slot.owner == Some(std::thread::current().id());
        if mine && let Some(c) = slot.captured.iter_mut().find(|c| c.fits(inputs)) {
            return c.run(&mut slot.session, inputs);
        }
        let options = self
            .graphs()
            .then(capture::uncaptured)
            .transpose()
            .map_err(|e| NnError::new(ErrorKind::RuntimeError, format!("onnxruntime: {e}")))?;
        run(
            &mut slot.session,
            self.values(inputs)?,
            &self.outputs,
            options.as_ref(),
        )
    }

    /// Warm the calling thread's own session with `inputs`, and bind (and capture) their
    /// shapes on it.
    fn warm_bound(&self, inputs: &[Tensor]) -> Result<(), NnError> {
        let mut slot = self.take();
        let result = (|| {
            if slot.owner != Some(std::thread::current().id()) {
                return Err(NnError::new(
                    ErrorKind::RuntimeError,
                    format!(
                        "onnxruntime: more threads warm this model than it has sessions ({}); with cuda_graph, give it \
                         one session per worker",
                        self.sessions
                    ),
                ));
            }
            if slot.captured.iter().any(|c| c.fits(inputs)) {
                return Ok(());
            }
            let example = self.run_on(&mut slot, inputs)?;
            let graph = self.graphs().then_some(slot.captured.len() as u32 + 1);
            let names = (self.inputs.as_slice(), self.outputs.as_slice());
            let _alone = self
                .graphs()
                .then(|| GPU_CAPTURE.write().unwrap_or_else(|p| p.into_inner()));
            let captured =
                capture::Captured::record(&mut slot.session, names, inputs, &example, self.gpu, graph)
                    .map_err(|e| match self.graphs() {
                        true => NnError::new(
                            e.kind,
                            format!(
                                "{} (fix: [onnxruntime] cuda_graph = false in model.toml)",
                                e.message
                            ),
                        ),
                        false => e,
                    })?;
            slot.captured.push(captured);
            Ok(())
        })();
        self.give_back(slot);
        result
    }
}

impl Graph for OrtGraph {
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, NnError> {
        let running = Running::start();
        if running.alone
            && let Some(solo) = &self.solo
            && let Ok(mut session) = solo.try_lock()
        {
            return run(&mut session, self.values(inputs)?, &self.outputs, None);
        }
        let mut slot = self.take();
        let result = self.run_on(&mut slot, inputs);
        self.give_back(slot);
        result
    }

    fn warm(&self, inputs: &[Tensor]) -> Result<(), NnError> {
        if self.bound {
            return self.warm_bound(inputs);
        }
        // Each session picks its kernels per shape, so each is run; the idle ones are taken
        // all at once (at load they all are) so that no session is warmed twice.
        let mut sessions = std::mem::take(&mut self.lock_pool().idle);
        let mut solo = self
            .solo
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
        let mut result = Ok(());
        let all = sessions
            .iter_mut()
            .map(|s| &mut s.session)
            .chain(solo.as_deref_mut());
        let _shared = self.shared();
        for session in all {
            // On failure, stop warming but still give every session back below.
            result = self
                .values(inputs)
                .and_then(|values| run(session, values, &self.outputs, None).map(drop));
            if result.is_err() {
                break;
            }
        }
        self.lock_pool().idle.extend(sessions);
        self.returned.notify_all();
        result
    }

    fn run_batch(&self, batch: &BatchInputs, buffers: &mut Buffers) -> Result<Vec<Tensor>, NnError> {
        if !self.bound {
            return batch.merged(buffers, |inputs| self.run(inputs));
        }
        let mut slot = self.take();
        let mine = slot.owner == Some(std::thread::current().id());
        let result = match slot.captured.iter_mut().find(|c| mine && c.fits_batch(batch)) {
            // The callers' rows go straight into the staging buffers, not merged first.
            Some(c) => {
                let _shared = self.shared();
                c.run_with(&mut slot.session, |i, dst| batch.write(i, dst))
            }
            None => batch.merged(buffers, |inputs| self.run_on(&mut slot, inputs)),
        };
        self.give_back(slot);
        result
    }

    fn worker_sessions(&self) -> Option<usize> {
        self.bound.then_some(self.sessions)
    }
}

fn run(
    session: &mut Session,
    inputs: Vec<(String, SessionInputValue<'_>)>,
    outputs: &[(String, DType)],
    options: Option<&RunOptions<NoSelectedOutputs>>,
) -> Result<Vec<Tensor>, NnError> {
    let err = |e: ort::Error| NnError::new(ErrorKind::RuntimeError, format!("onnxruntime: {e}"));
    let out = match options {
        Some(o) => session.run_with_options(inputs, o),
        None => session.run(inputs),
    }
    .map_err(err)?;
    outputs
        .iter()
        .map(|(name, dtype)| {
            let v = out.get(name.as_str()).ok_or_else(|| {
                NnError::new(
                    ErrorKind::RuntimeError,
                    format!("onnxruntime: no output `{name}`"),
                )
            })?;
            from_ort(v, *dtype).map_err(err)
        })
        .collect()
}

fn to_ort(t: &Tensor) -> Result<SessionInputValue<'_>, NnError> {
    fn value<T: Element + ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
        t: &Tensor,
    ) -> Result<SessionInputValue<'_>, NnError> {
        let shape: Vec<i64> = t.dims.iter().map(|&d| i64::from(d)).collect();
        let bad = |e: ort::Error| NnError::new(ErrorKind::InvalidArgument, format!("onnxruntime: {e}"));
        // Lend the bytes where they are aligned for T (large allocations are): a batch of 128
        // images is 77 MB, and a copy of it costs a fifth of the GPU's time for the run.
        match bytemuck::try_cast_slice::<u8, T>(&t.data) {
            Ok(values) => TensorRef::from_array_view((shape, values))
                .map(Into::into)
                .map_err(bad),
            Err(_) => OrtTensor::from_array((shape, t.to_vec::<T>()))
                .map(Into::into)
                .map_err(bad),
        }
    }
    with_element!(t.dtype, T => value::<T>(t), other => Err(NnError::new(
        ErrorKind::UnsupportedOperation,
        format!("onnxruntime backend: {other:?} tensors"),
    )))
}

fn from_ort(v: &DynValue, dtype: DType) -> Result<Tensor, ort::Error> {
    fn tensor<T: Element + ort::value::PrimitiveTensorElementType>(
        v: &DynValue,
    ) -> Result<Tensor, ort::Error> {
        let (shape, data) = v.try_extract_tensor::<T>()?;
        Ok(Tensor::from_slice(
            shape.iter().map(|&d| d as u32).collect(),
            data,
        ))
    }
    with_element!(dtype, T => tensor::<T>(v), other => Err(ort::Error::new(format!("{other:?} outputs are not supported"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nullnet's card and weights (`./dev setup` builds them), with `sessions` sessions.
    fn nullnet(sessions: usize) -> (ModelEntry, Vec<u8>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nullnet");
        let mut entry = ModelEntry::load(&dir).expect("models/nullnet/model.toml");
        entry.card.onnxruntime.sessions = Some(sessions);
        let bytes = std::fs::read(dir.join("nullnet.onnx")).expect("run ./dev setup to build nullnet.onnx");
        (entry, bytes)
    }

    fn runtime() -> OnnxRuntime {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        OnnxRuntime::open(&library_path(&project), Device::Cpu).expect("run ./dev setup for ONNX Runtime")
    }

    /// `n` images of noise from `seed`, as the function would send them.
    fn images(n: u32, seed: u32) -> Vec<Tensor> {
        let values: Vec<f32> = (0..n * 3 * 224 * 224)
            .map(|i| ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        vec![Tensor::from_slice(vec![n, 3, 224, 224], &values)]
    }

    /// The bound path that CUDA graphs replay through (buffers bound once, inputs copied in,
    /// outputs copied out), exercised on the CPU: each thread warms and then owns its session,
    /// its warmed shapes run bound, and every answer equals an unbound session's.
    #[test]
    fn bound_sessions_answer_as_unbound_ones_do() {
        let ort = runtime();
        let (entry, bytes) = nullnet(2);
        let plain = ort.graph(&entry, &bytes, false).expect("nullnet loads");
        let graph = Arc::new(ort.graph(&entry, &bytes, true).expect("nullnet loads bound"));
        assert_eq!(graph.worker_sessions(), Some(2));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let graph = graph.clone();
                std::thread::spawn(move || {
                    graph.warm(&images(1, 0))?;
                    graph.warm(&images(4, 0))?;
                    let mut answers = (0..6)
                        .map(|i| {
                            let input = images([1, 4, 2][i % 3], w * 100 + i as u32);
                            graph.run(&input).map(|out| (input, out))
                        })
                        .collect::<Result<Vec<_>, NnError>>()?;
                    // A batch of 1 + 2 images padded to 4 goes straight into the staging
                    // buffers of the bound shape 4, never through the worker's buffers.
                    let batch = BatchInputs::new(vec![images(1, w), images(2, w + 1)], 4);
                    let mut buffers = Buffers::default();
                    let out = graph.run_batch(&batch, &mut buffers)?;
                    assert_eq!(buffers.kept(), 0, "the batch was merged first");
                    let merged = batch.merged(&mut buffers, |t| t.to_vec());
                    answers.push((merged, out));
                    Ok::<_, NnError>(answers)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for w in workers {
            answers.extend(w.join().expect("worker thread").expect("bound runs"));
        }
        let pool = graph.pool.lock().unwrap();
        assert_eq!(pool.idle.len(), 2);
        assert_eq!(pool.owners.len(), 2);
        for slot in pool.idle.iter() {
            assert!(slot.owner.is_some(), "each warming thread owns a session");
            assert_eq!(slot.captured.len(), 2, "shapes 1 and 4 bound on each session");
        }
        drop(pool);
        // A third thread finds every session owned: it runs unbound, on either.
        let third = {
            let graph = graph.clone();
            std::thread::spawn(move || {
                let warm = graph.warm(&images(1, 0));
                (warm, graph.run(&images(4, 7)))
            })
            .join()
            .expect("third thread")
        };
        let message = third.0.expect_err("a third thread cannot warm").message;
        assert!(message.contains("one session per worker"), "{message}");
        answers.push((images(4, 7), third.1.expect("unbound run")));
        for (input, out) in answers {
            let want = plain.run(&input).expect("unbound run");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].dims, want[0].dims);
            assert_eq!(
                out[0].to_vec::<f32>(),
                want[0].to_vec::<f32>(),
                "same scores as unbound"
            );
        }
    }

    #[test]
    fn an_empty_ort_dylib_path_counts_as_unset() {
        let project = Path::new("/srv/scoria");
        let cached = project.join(".cache/onnxruntime/libonnxruntime.so");
        assert_eq!(library_path_from(None, project), cached);
        assert_eq!(library_path_from(Some("".into()), project), cached);
        assert_eq!(
            library_path_from(Some("/opt/ort/libonnxruntime.so".into()), project),
            PathBuf::from("/opt/ort/libonnxruntime.so")
        );
    }
}
