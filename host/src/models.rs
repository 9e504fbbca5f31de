//! The model repository: `models/<name>/model.toml` cards and the files they name.
//!
//! A card is the single description of a model that the host (to load and validate tensors)
//! and the functions (to preprocess) both read. Files are checked against their sha256 before
//! they are loaded, so a half-downloaded or swapped weight file never serves.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A card or model file that is missing, malformed or does not match its digest.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Card { file: PathBuf, message: String },
    #[error(
        "{file}: sha256 is {actual}, but model.toml says {expected}; rebuild it with `./dev setup` or update `sha256` if the new file is intended"
    )]
    Digest {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "model `{name}` is not in {dir}: no {dir}/{name}/model.toml; fix: add the model folder or correct the name in spin.toml"
    )]
    NotFound { name: String, dir: PathBuf },
}

/// The serialisation format of the weights; decides which backends can load them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Onnx,
}

/// Element type of a tensor, named as in `model.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F16,
    F32,
    F64,
    Bf16,
    U8,
    I32,
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F16 | DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

/// Which backend runs a model (`--backend`, or a card's `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// ONNX Runtime with CUDA on a GPU device; otherwise the faster of the two, measured at load.
    Auto,
    Tract,
    #[value(name = "onnxruntime")]
    OnnxRuntime,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "tract" => Ok(Self::Tract),
            "onnxruntime" => Ok(Self::OnnxRuntime),
            other => Err(format!(
                "backend `{other}` is not one of auto, tract, onnxruntime"
            )),
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Tract => "tract",
            Self::OnnxRuntime => "onnxruntime",
        })
    }
}

/// Where a model runs: `gpu` is ONNX Runtime's CUDA execution provider. The host's
/// `--device` sets it for every model; a card's `device` sets it for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Gpu,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        })
    }
}

/// One input or output of a graph. A negative dimension is dynamic (any size).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub dtype: DType,
}

/// `model.toml`: what the model is, where its bytes are, and how to feed it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    pub format: Format,
    /// Weights file, relative to the card's folder.
    pub file: PathBuf,
    pub sha256: String,
    /// `pretrained`, or `random` for cost-only stand-ins; shown in `scoria models list`.
    #[serde(default = "pretrained")]
    pub weights: String,
    #[serde(default)]
    pub description: Option<String>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Function-side preprocessing; validated by the function that reads it.
    #[serde(default)]
    pub preprocess: Option<toml::Table>,
    /// Label file (one label per line), relative to the card's folder.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    #[serde(default)]
    pub labels_sha256: Option<String>,
    /// Where the weights come from, and the script that produces them.
    pub source: String,
    pub licence: String,
    /// Most compiled plans kept for this model, one per set of dynamic sizes (tract). Each
    /// holds its own packed copy of the weights (about 45 MB for MiniLM), so this bounds
    /// memory; the least recently used plan is dropped first. Default 16.
    #[serde(default)]
    pub max_plans: Option<usize>,
    /// Optional: `tract` or `onnxruntime` (or `auto`) for this model, whatever `--backend`
    /// says; checked when the card is read, like every other key.
    #[serde(default)]
    pub backend: Option<BackendChoice>,
    /// Optional: `gpu` runs this model on ONNX Runtime with CUDA even on a `--device cpu`
    /// host (it falls back to the CPU, with a warning, where CUDA is unavailable); `cpu`
    /// keeps it off the GPU on a `--device gpu` host (a model too small to gain from it).
    #[serde(default)]
    pub device: Option<Device>,
    /// Optional ONNX Runtime session settings for this model.
    #[serde(default)]
    pub onnxruntime: OrtOptions,
    /// Optional dynamic batching settings for this model.
    #[serde(default)]
    pub batching: BatchOptions,
}

/// `[batching]` in `model.toml`: whether and how concurrent computes on this model merge
/// into one backend run. Defaults depend on the device (see [`crate::nn::batch`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOptions {
    /// Default: on when the model runs on a GPU, off on CPU (where one compute per core
    /// already keeps the cores busy and merging only adds queueing).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Most items in one run (default 128 on GPU, 16 on CPU).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Longest the oldest compute in a batch waits for others, in ms (default 2).
    #[serde(default)]
    pub max_queue_delay_ms: Option<f64>,
    /// Batches of this model that run at once (default 2: one runs while the next gathers;
    /// on a GPU with CUDA graphs, one per session).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Pad batches with zero rows to a power of two (or `max_batch`) and run each such size
    /// once at load (default: on GPU, where every new shape costs a kernel search).
    #[serde(default)]
    pub pad: Option<bool>,
}

/// `[onnxruntime]` in `model.toml`: how this model's ONNX Runtime sessions are built.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrtOptions {
    /// Threads one compute may use (default 1: concurrency comes from several sessions; 0:
    /// ONNX Runtime's own default, every physical core). See `./dev bench threads`.
    #[serde(default)]
    pub intra_threads: Option<usize>,
    /// Graph optimisation: `disable`, `basic`, `extended` or `all` (default).
    #[serde(default)]
    pub optimization: Option<String>,
    /// CPU only: one more session on this many threads (0: every physical core), which a
    /// compute takes when it starts while no other ONNX Runtime compute runs in the host.
    /// Halves a large model's latency at low load; under load, computes use the others.
    #[serde(default)]
    pub solo_intra_threads: Option<usize>,
    /// Sessions, i.e. computes of this model that run at once (default: one per core on
    /// CPU; 4 on GPU, where each session holds its own copy of the weights in GPU memory).
    #[serde(default)]
    pub sessions: Option<usize>,
    /// CUDA only: how cuDNN picks convolution kernels, `heuristic` (default), `exhaustive`
    /// (benchmarks every kernel for each new input shape: the fastest kernels, but seconds
    /// per new batch size, which dynamic batching produces many of) or `default`.
    #[serde(default)]
    pub cuda_conv_algo_search: Option<String>,
    /// CUDA only: run convolutions in NHWC layout (faster on tensor cores for fp16 models).
    #[serde(default)]
    pub cuda_prefer_nhwc: Option<bool>,
    /// CUDA only (default on): capture each warmed input shape as a CUDA graph and replay it,
    /// instead of launching every kernel from the CPU (a batch-1 ResNet-152 is hundreds of
    /// launches). Each session then stays on one worker thread of its own (ONNX Runtime keeps
    /// captured graphs per thread), with its inputs and outputs at fixed places in GPU memory.
    /// Shapes that were not warmed at load run as usual. A model that ONNX Runtime cannot
    /// capture (a node off the GPU) runs without graphs unless this is set to `true`.
    #[serde(default)]
    pub cuda_graph: Option<bool>,
}

fn pretrained() -> String {
    "pretrained".into()
}

/// A card together with the folder it was read from.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub card: ModelCard,
    pub dir: PathBuf,
}

impl ModelEntry {
    /// Read `<dir>/model.toml`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let file = dir.join("model.toml");
        let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Read {
            file: file.clone(),
            source,
        })?;
        let card: ModelCard = toml::from_str(&text).map_err(|e| ModelError::Card {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if card.name != folder {
            return Err(ModelError::Card {
                file,
                message: format!(
                    "`name = \"{}\"` differs from its folder `{folder}`; fix: make them equal",
                    card.name
                ),
            });
        }
        if card.inputs.is_empty() || card.outputs.is_empty() {
            return Err(ModelError::Card {
                file,
                message: "`inputs` and `outputs` must each list at least one tensor".into(),
            });
        }
        Ok(ModelEntry {
            card,
            dir: dir.to_path_buf(),
        })
    }

    /// The weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.card.file)
    }

    /// Every file the card names, with its expected digest.
    pub fn files(&self) -> Vec<(PathBuf, Option<&str>)> {
        let mut v = vec![(self.weights_path(), Some(self.card.sha256.as_str()))];
        if let Some(l) = &self.card.labels {
            v.push((self.dir.join(l), self.card.labels_sha256.as_deref()));
        }
        v
    }

    /// Verify every file's sha256 against the card.
    pub fn check(&self) -> Result<(), ModelError> {
        for (file, expected) in self.files() {
            let actual = sha256_file(&file)?;
            matches(file, expected, actual)?;
        }
        Ok(())
    }

    /// The weights, read once and verified against the card's sha256 (as the other files
    /// are), for loading: a half-copied or swapped file never reaches a backend.
    pub fn read_checked(&self) -> Result<Vec<u8>, ModelError> {
        let mut files = self.files().into_iter();
        let (weights, expected) = files.next().expect("files() starts with the weights");
        let bytes = std::fs::read(&weights).map_err(|source| ModelError::Read {
            file: weights.clone(),
            source,
        })?;
        matches(weights, expected, hex::encode(Sha256::digest(&bytes)))?;
        for (file, expected) in files {
            let actual = sha256_file(&file)?;
            matches(file, expected, actual)?;
        }
        Ok(bytes)
    }
}

/// `actual` agrees with the card's `expected` digest, if it gives one.
fn matches(file: PathBuf, expected: Option<&str>, actual: String) -> Result<(), ModelError> {
    match expected {
        Some(expected) if !actual.eq_ignore_ascii_case(expected) => Err(ModelError::Digest {
            file,
            expected: expected.to_string(),
            actual,
        }),
        _ => Ok(()),
    }
}

/// The folder of model folders.
#[derive(Debug, Clone)]
pub struct Repository {
    pub dir: PathBuf,
}

impl Repository {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Result<ModelEntry, ModelError> {
        let dir = self.dir.join(name);
        if !dir.join("model.toml").is_file() {
            return Err(ModelError::NotFound {
                name: name.into(),
                dir: self.dir.clone(),
            });
        }
        ModelEntry::load(&dir)
    }

    /// Every folder holding a `model.toml`, sorted by name; unreadable cards are returned as errors.
    pub fn all(&self) -> Result<Vec<Result<ModelEntry, ModelError>>, ModelError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| ModelError::Read {
            file: self.dir.clone(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("model.toml").is_file())
            .collect();
        dirs.sort();
        Ok(dirs.iter().map(|d| ModelEntry::load(d)).collect())
    }
}

/// Hex sha256 of a file, streamed so large weights don't need to fit in memory twice.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|source| ModelError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| ModelError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_model(root: &Path, name: &str, card_extra: &str, weights: &[u8]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.onnx"), weights).unwrap();
        let digest = hex::encode(Sha256::digest(weights));
        std::fs::write(
            dir.join("model.toml"),
            format!(
                r#"name = "{name}"
version = "1"
format = "onnx"
file = "m.onnx"
sha256 = "{digest}"
source = "test"
licence = "Apache-2.0"
inputs = [{{ name = "input", shape = [-1, 3, 4, 4], dtype = "f32" }}]
outputs = [{{ name = "logits", shape = [-1, 10], dtype = "f32" }}]
{card_extra}
"#
            ),
        )
        .unwrap();
        dir
    }

    #[test]
    fn good_card_loads_and_checks() {
        let t = tempfile::tempdir().unwrap();
        write_model(
            t.path(),
            "tiny",
            "[preprocess]\nresize = 8\ncrop = 4\n",
            b"weights",
        );
        let repo = Repository::new(t.path());
        let m = repo.get("tiny").unwrap();
        assert_eq!(m.card.inputs[0].shape, vec![-1, 3, 4, 4]);
        assert_eq!(m.card.weights, "pretrained");
        assert!(m.card.preprocess.is_some());
        m.check().unwrap();
        assert_eq!(repo.all().unwrap().len(), 1);
    }

    #[test]
    fn a_changed_file_fails_the_check() {
        let t = tempfile::tempdir().unwrap();
        let dir = write_model(t.path(), "tiny", "", b"weights");
        std::fs::write(dir.join("m.onnx"), b"other").unwrap();
        let e = Repository::new(t.path())
            .get("tiny")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(matches!(e, ModelError::Digest { .. }), "{e}");
        assert!(e.to_string().contains("m.onnx"));
    }

    #[test]
    fn bad_cards_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        write_model(t.path(), "typo", "licnce = \"x\"", b"w");
        let e = Repository::new(t.path()).get("typo").unwrap_err().to_string();
        assert!(e.contains("typo/model.toml") && e.contains("licnce"), "{e}");
        let e = Repository::new(t.path()).get("missing").unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("fix"), "{e}");
    }

    #[test]
    fn a_cards_backend_is_typed_when_the_card_is_read() {
        let t = tempfile::tempdir().unwrap();
        write_model(t.path(), "pinned", "backend = \"onnxruntime\"", b"w");
        let repo = Repository::new(t.path());
        assert_eq!(
            repo.get("pinned").unwrap().card.backend,
            Some(BackendChoice::OnnxRuntime)
        );
        write_model(t.path(), "typo", "backend = \"onnx\"", b"w");
        let e = repo.get("typo").unwrap_err().to_string();
        assert!(
            e.contains("typo/model.toml") && e.contains("onnx") && e.contains("onnxruntime"),
            "{e}"
        );
    }
}
