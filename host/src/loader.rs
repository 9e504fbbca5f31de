//! Loading models: which backend and device each model runs on, its batching, and the
//! embedding indexes built from text lists.
//!
//! A [`ModelLoader`] is made once from the flags (`--backend`, `--device`, `--batching`) and
//! handed to whoever loads models: start-up, hot swaps and `scoria index`. Each model's card
//! can override the flags for that model alone.

use crate::index;
use crate::manifest::{IndexDecl, Manifest};
pub use crate::models::BackendChoice;
use crate::models::{Device, ModelEntry, Repository};
use crate::nn::batch::{BatchPolicy, Batcher};
use crate::nn::onnxruntime::{OnnxRuntime, library_path};
use crate::nn::tract::TractBackend;
use crate::nn::{Backend, ErrorKind, Graph, LoadedModel, ModelRegistry, Tensor};
use anyhow::Context as _;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// `scoria up --batching`: whether models are batched, whatever their cards say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Batching {
    /// Each card's `[batching] enabled`, else on for models on a GPU and off on CPU.
    #[default]
    Auto,
    /// Every model whose batch dimension is dynamic.
    On,
    Off,
}

/// The backends a [`ModelLoader`] chooses from, and how.
struct Backends {
    choice: BackendChoice,
    /// `--device`: where models run unless their card says otherwise.
    device: Device,
    batching: Batching,
    /// Where `auto` records its choices (see [`crate::choice`]), and where ONNX Runtime's
    /// library is looked up.
    project: PathBuf,
    /// ONNX Runtime on `device`, or why it is not available; opened at start-up when the
    /// flags ask for it, else when the first card does.
    onnxruntime: OnceLock<Result<OnnxRuntime, String>>,
}

impl Backends {
    /// ONNX Runtime, opened on first use; the reason it is unavailable is logged once.
    fn onnxruntime(&self) -> &Result<OnnxRuntime, String> {
        self.onnxruntime.get_or_init(|| {
            let opened = OnnxRuntime::open(&library_path(&self.project), self.device).map_err(|e| e.message);
            if let Err(why) = &opened {
                tracing::warn!(%why, "ONNX Runtime is unavailable; models load with tract");
            }
            opened
        })
    }
}

/// Loads models on the backends the flags and each card choose. Made once at start-up and
/// shared (it holds ONNX Runtime's library once opened).
pub struct ModelLoader {
    /// `None`: every model loads with tract, whatever its card says (`scoria index`, tests).
    backends: Option<Backends>,
}

impl ModelLoader {
    /// Load models with `choice` unless a card names a backend, on `device` unless a card
    /// names one, batched as `batching` says, with ONNX Runtime's library looked up beside
    /// `project` (see [`crate::nn::onnxruntime::library_path`]), where `auto` also records its
    /// choices.
    pub fn new(choice: BackendChoice, device: Device, batching: Batching, project: &Path) -> Self {
        let backends = Backends {
            choice,
            device,
            batching,
            project: project.to_path_buf(),
            onnxruntime: OnceLock::new(),
        };
        // When the flags ask for ONNX Runtime, say at start-up whether it is there.
        if choice != BackendChoice::Tract || device == Device::Gpu {
            let _ = backends.onnxruntime();
        }
        Self {
            backends: Some(backends),
        }
    }

    /// Every model on tract, cards' backends and devices ignored.
    pub fn tract_only() -> Self {
        Self { backends: None }
    }

    /// Load the models `manifest` names from `repo`, verifying each file's sha256 first.
    ///
    /// Embedding indexes (folders with an `index.toml`) are loaded last: one whose list or
    /// embedding model changed since it was built is rebuilt first, with the embedding model.
    pub fn load_models(&self, manifest: &Manifest, repo: &Repository) -> anyhow::Result<ModelRegistry> {
        for c in manifest.components.values() {
            for (name, decl) in &c.indexes {
                declare_index(repo, name, decl)?;
            }
        }
        let mut registry = ModelRegistry::default();
        let (indexes, plain): (Vec<String>, Vec<String>) = manifest
            .models()
            .into_iter()
            .partition(|name| repo.dir.join(name).join(index::SPEC_FILE).is_file());
        for name in plain {
            registry.insert(self.load_model(repo, &name)?);
        }
        for name in indexes {
            let dir = repo.dir.join(&name);
            if !index::is_current(repo, &dir)? {
                self.build_index(repo, &name, Some(&registry))?;
            }
            registry.insert(self.load_model(repo, &name)?);
        }
        Ok(registry)
    }

    /// Check one model's files and load it on the backend its card and the flags choose.
    pub fn load_model(&self, repo: &Repository, name: &str) -> anyhow::Result<LoadedModel> {
        let entry = repo.get(name)?;
        let bytes = entry.read_checked()?;
        // Verified: the weights' digest is the card's.
        let digest = entry.card.sha256.to_ascii_lowercase();
        self.load_graph(entry, &bytes, digest)
    }

    /// Load `bytes` as the weights of the model `entry` describes (its card's tensors), with the
    /// configured backend. Used at start-up and for hot swaps, which load beside the serving
    /// version.
    pub fn load_model_bytes(&self, entry: ModelEntry, bytes: &[u8]) -> anyhow::Result<LoadedModel> {
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        self.load_graph(entry, bytes, digest)
    }

    /// Load weights whose sha256 is `digest` on the backend [`pick_backend`](Self::pick_backend) chooses.
    fn load_graph(&self, entry: ModelEntry, bytes: &[u8], digest: String) -> anyhow::Result<LoadedModel> {
        let t = Instant::now();
        let name = entry.card.name.clone();
        let Picked {
            backend,
            graph,
            why,
            device,
        } = self.pick_backend(&entry, bytes, &digest)?;
        let on_gpu = device == Device::Gpu;
        let batching = self.backends.as_ref().map(|b| b.batching).unwrap_or_default();
        let bound_sessions = graph.worker_sessions();
        let policy = worker_policy(
            batch_policy(&entry, on_gpu, batching)?,
            bound_sessions,
            entry.card.batching.workers,
        );
        if let (Some(p), Some(sessions)) = (policy, bound_sessions)
            && p.workers > sessions
        {
            tracing::warn!(model = %name, workers = p.workers, sessions, "[batching] workers beyond the sessions run without CUDA graphs; fix: raise [onnxruntime] sessions");
        }
        let batcher = match policy {
            Some(policy) => Some(Batcher::start(
                &name,
                graph.clone(),
                policy,
                &probe_inputs(&entry),
            )?),
            None => None,
        };
        let batch = batcher.as_ref().map(|b| {
            let p = b.policy();
            format!(
                "max {} items, {:?} delay, {} workers",
                p.max_batch, p.max_queue_delay, p.workers
            )
        });
        tracing::info!(
            model = %name,
            backend,
            %device,
            %why,
            batching = batch.as_deref().unwrap_or("off"),
            digest = %&digest[..12],
            ms = t.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(LoadedModel {
            entry,
            backend,
            device,
            graph,
            digest,
            loaded_at: std::time::SystemTime::now(),
            batcher,
        })
    }

    /// The backend and device for one model, and its graph.
    ///
    /// The card's `backend` and `device` win over the flags. A model on the GPU runs on ONNX
    /// Runtime with CUDA. When a card asks for the GPU on a `--device cpu` host without CUDA,
    /// the model falls back to the CPU with a warning (a developer's machine); when the host
    /// itself runs with `--device gpu`, a missing CUDA stops it (a misconfigured GPU pod).
    fn pick_backend(&self, entry: &ModelEntry, bytes: &[u8], digest: &str) -> anyhow::Result<Picked> {
        let name = &entry.card.name;
        let card_file = || entry.dir.join("model.toml").display().to_string();
        let tract = |why: String| -> anyhow::Result<_> {
            let g = TractBackend
                .load_bytes(entry, bytes)
                .with_context(|| format!("loading model `{name}` with tract"))?;
            Ok(Picked::cpu(TractBackend.name(), g, why))
        };
        let Some(cfg) = &self.backends else {
            return tract("default".into());
        };
        let device = entry.card.device.unwrap_or(cfg.device);
        let pinned = entry.card.backend;
        anyhow::ensure!(
            !(entry.card.device == Some(Device::Gpu) && pinned == Some(BackendChoice::Tract)),
            "{}: `device = \"gpu\"` needs ONNX Runtime, but `backend = \"tract\"` runs on the CPU only; \
         fix: remove one of the two",
            card_file()
        );
        let choice = match pinned {
            Some(b) => b,
            // A model on the GPU runs on CUDA unless pinned to tract.
            None if device == Device::Gpu => BackendChoice::OnnxRuntime,
            None => cfg.choice,
        };
        let ort = match (cfg.onnxruntime(), choice) {
            (_, BackendChoice::Tract) => return tract("chosen".into()),
            // Quietly serving a GPU pod's models on its CPU would hide the misconfiguration.
            (Err(why), _) if device == Device::Gpu && cfg.device == Device::Gpu => {
                anyhow::bail!("model `{name}`: --device gpu needs ONNX Runtime with CUDA: {why}")
            }
            (Err(why), _) => return tract(format!("ONNX Runtime unavailable: {why}")),
            (Ok(ort), _) => ort.on(device),
        };
        if device == Device::Gpu {
            match ort.load_bytes(entry, bytes) {
                Ok(graph) => {
                    return Ok(Picked {
                        backend: ort.name(),
                        graph,
                        why: "chosen".into(),
                        device,
                    });
                }
                // Only the card asked: serve on the CPU rather than not at all.
                Err(e) if e.kind == ErrorKind::UnsupportedOperation && cfg.device == Device::Cpu => {
                    tracing::warn!(
                        model = %name,
                        why = %e.message,
                        "{}: `device = \"gpu\"`, but CUDA is unavailable; the model runs on the CPU",
                        card_file()
                    );
                    let graph = ort
                        .on(Device::Cpu)
                        .load_bytes(entry, bytes)
                        .with_context(|| format!("loading model `{name}` with onnxruntime"))?;
                    return Ok(Picked::cpu(
                        ort.name(),
                        graph,
                        "card asks for the GPU; CUDA unavailable, on the CPU".into(),
                    ));
                }
                Err(e) => return Err(e).with_context(|| format!("loading model `{name}` with onnxruntime")),
            }
        }
        let auto_cpu = choice == BackendChoice::Auto;
        let recorded = auto_cpu
            .then(|| crate::choice::recorded(&cfg.project, name, digest))
            .flatten();
        if let Some(c) = &recorded
            && c.backend == TractBackend.name()
        {
            return tract(format!("{} (recorded)", c.summary()));
        }
        let ort_graph = ort
            .load_bytes(entry, bytes)
            .with_context(|| format!("loading model `{name}` with onnxruntime"))?;
        if let Some(c) = recorded {
            return Ok(Picked::cpu(
                ort.name(),
                ort_graph,
                format!("{} (recorded)", c.summary()),
            ));
        }
        if !auto_cpu {
            return Ok(Picked::cpu(ort.name(), ort_graph, "chosen".into()));
        }
        // auto on CPU: time both on the same input, keep the faster, and record the outcome.
        // A graph tract cannot build (an operator it lacks) is ONNX Runtime's, unmeasured.
        let tract_graph = match TractBackend.load_bytes(entry, bytes) {
            Ok(g) => g,
            Err(e) if e.kind == ErrorKind::UnsupportedOperation => {
                let why = format!("auto: tract cannot run it: {}", e.message);
                return Ok(Picked::cpu(ort.name(), ort_graph, why));
            }
            Err(e) => return Err(e).with_context(|| format!("loading model `{name}` with tract")),
        };
        let probe = probe_inputs(entry);
        let time = |g: &Arc<dyn Graph>| -> anyhow::Result<f64> {
            g.run(&probe)?;
            let t = Instant::now();
            for _ in 0..3 {
                g.run(&probe)?;
            }
            Ok(t.elapsed().as_secs_f64() * 1e3 / 3.0)
        };
        let (ms_tract, ms_ort) = (time(&tract_graph)?, time(&ort_graph)?);
        let why = format!("auto: tract {ms_tract:.2} ms, onnxruntime {ms_ort:.2} ms per run (measured)");
        let picked = if ms_ort < ms_tract {
            Picked::cpu(ort.name(), ort_graph, why)
        } else {
            Picked::cpu(TractBackend.name(), tract_graph, why)
        };
        crate::choice::record(&cfg.project, name, digest, picked.backend, ms_tract, ms_ort);
        Ok(picked)
    }

    /// (Re)build the index `name` from its `index.toml`, loading its embedding model unless
    /// `loaded` already has it. Returns the number of entries.
    pub fn build_index(
        &self,
        repo: &Repository,
        name: &str,
        loaded: Option<&ModelRegistry>,
    ) -> anyhow::Result<usize> {
        let dir = repo.dir.join(name);
        let spec = index::IndexSpec::load(&dir)?
            .with_context(|| format!("{} has no {}", dir.display(), index::SPEC_FILE))?;
        let t = Instant::now();
        let embedder = match loaded.and_then(|r| r.get(&spec.embedding_model)) {
            Some(m) => m,
            None => Arc::new(self.load_model(repo, &spec.embedding_model)?),
        };
        let n = index::build(repo, &dir, &embedder)?;
        tracing::info!(
            index = %name,
            entries = n,
            embedding_model = %spec.embedding_model,
            ms = t.elapsed().as_millis() as u64,
            "index built"
        );
        Ok(n)
    }
}

/// Make `<repo>/<name>/index.toml` say what the manifest (or `scoria index --list`) declares, creating the folder if
/// needed; the digests then decide whether the index must be rebuilt.
pub fn declare_index(repo: &Repository, name: &str, decl: &IndexDecl) -> anyhow::Result<()> {
    let dir = repo.dir.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = index::IndexSpec {
        list: index::relative_to(&decl.list, &dir)?,
        embedding_model: decl.embedding_model.clone(),
        licence: decl.licence.clone().unwrap_or_else(|| "see the list".into()),
    };
    let text = format!(
        "# Written from the manifest's `tool.scoria.indexes.{name}` (or `scoria index --list`); do not edit.\n{}",
        toml::to_string(&spec)?
    );
    let file = dir.join(index::SPEC_FILE);
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// Whether and how `entry` is batched: `--batching`, else its card, else on for a model on
/// a GPU. Only a model whose every input and output has a dynamic first dimension can be;
/// a card that asks for batching on any other model is an error.
pub fn batch_policy(
    entry: &ModelEntry,
    on_gpu: bool,
    batching: Batching,
) -> anyhow::Result<Option<BatchPolicy>> {
    let opts = &entry.card.batching;
    let card = || entry.dir.join("model.toml").display().to_string();
    let wanted = match batching {
        Batching::On => true,
        Batching::Off => false,
        Batching::Auto => opts.enabled.unwrap_or(on_gpu),
    };
    if !wanted {
        return Ok(None);
    }
    let mut tensors = entry.card.inputs.iter().chain(&entry.card.outputs);
    if !tensors.all(|s| s.shape.first() == Some(&-1)) {
        anyhow::ensure!(
            opts.enabled != Some(true) || batching == Batching::On,
            "{}: [batching] enabled = true, but not every input and output has a dynamic first \
             dimension (-1); fix: make the batch dimension -1 or remove `enabled`",
            card()
        );
        tracing::info!(model = %entry.card.name, "not batched: its first dimension is fixed");
        return Ok(None);
    }
    let max_batch = opts.max_batch.unwrap_or(if on_gpu { 128 } else { 16 });
    let delay = opts.max_queue_delay_ms.unwrap_or(2.0);
    anyhow::ensure!(
        max_batch >= 1,
        "{}: [batching] max_batch must be at least 1",
        card()
    );
    anyhow::ensure!(
        delay.is_finite() && (0.0..=1000.0).contains(&delay),
        "{}: [batching] max_queue_delay_ms must be between 0 and 1000",
        card()
    );
    Ok(Some(BatchPolicy {
        max_batch,
        max_queue_delay: Duration::from_secs_f64(delay / 1e3),
        workers: opts.workers.unwrap_or(2).max(1),
        pad: opts.pad.unwrap_or(on_gpu),
    }))
}

/// The batch policy for a graph whose sessions each belong to one thread (`sessions`, see
/// [`Graph::worker_sessions`]): a worker per session, unless the card sets `[batching]
/// workers` (`card_workers`); without batching, workers that run one compute at a time.
pub fn worker_policy(
    policy: Option<BatchPolicy>,
    sessions: Option<usize>,
    card_workers: Option<usize>,
) -> Option<BatchPolicy> {
    let Some(sessions) = sessions else {
        return policy;
    };
    Some(match policy {
        Some(p) => BatchPolicy {
            workers: card_workers.unwrap_or(sessions).max(1),
            ..p
        },
        None => BatchPolicy {
            max_batch: 1,
            max_queue_delay: Duration::ZERO,
            workers: sessions.max(1),
            pad: true,
        },
    })
}

/// What [`ModelLoader::pick_backend`] chose for one model.
struct Picked {
    backend: &'static str,
    graph: Arc<dyn Graph>,
    /// Why, for the log.
    why: String,
    /// Where the graph runs: the GPU only for ONNX Runtime with CUDA.
    device: Device,
}

impl Picked {
    /// A graph on the CPU (tract's, or ONNX Runtime's CPU provider).
    fn cpu(backend: &'static str, graph: Arc<dyn Graph>, why: String) -> Self {
        Self {
            backend,
            graph,
            why,
            device: Device::Cpu,
        }
    }
}

/// Zeros of every input's type and shape, the first dynamic dimension (the batch) at 1 and
/// the others at 16 (a sentence, for a text model).
fn probe_inputs(entry: &ModelEntry) -> Vec<Tensor> {
    entry
        .card
        .inputs
        .iter()
        .map(|spec| {
            let mut first = true;
            let dims: Vec<u32> = spec
                .shape
                .iter()
                .map(|&d| match d {
                    d if d >= 0 => d as u32,
                    _ if std::mem::take(&mut first) => 1,
                    _ => 16,
                })
                .collect();
            let n: usize = dims.iter().map(|&d| d as usize).product();
            Tensor {
                data: vec![0; n * spec.dtype.size()],
                dims,
                dtype: spec.dtype,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batched(workers: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch: 128,
            max_queue_delay: Duration::from_millis(2),
            workers,
            pad: true,
        }
    }

    #[test]
    fn sessions_bound_to_threads_get_a_worker_each() {
        // Sessions shared by any thread: the policy stands as it is.
        assert_eq!(worker_policy(None, None, None), None);
        assert_eq!(worker_policy(Some(batched(2)), None, None), Some(batched(2)));
        // Bound sessions, batched: one worker per session unless the card says.
        assert_eq!(worker_policy(Some(batched(2)), Some(4), None), Some(batched(4)));
        assert_eq!(
            worker_policy(Some(batched(2)), Some(4), Some(3)),
            Some(batched(3))
        );
        // Bound sessions, unbatched: workers that run one compute each, warmed at one item.
        let one = worker_policy(None, Some(4), None).expect("workers for bound sessions");
        assert_eq!((one.max_batch, one.workers, one.pad), (1, 4, true));
        assert_eq!(one.max_queue_delay, Duration::ZERO);
        assert_eq!(one.sizes(), vec![1]);
    }
}
