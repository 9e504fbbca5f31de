//! Start-up: read the manifest, load every model it names once, compile every function, then
//! report ready. The listener is already up while this runs, so `/healthz` answers at once and
//! `/readyz` turns 200 only when everything is in place.

use crate::cache::CompileCache;
use crate::index;
use crate::manifest::{IndexDecl, Manifest};
use crate::metrics::Metrics;
use crate::models::{ModelEntry, Repository};
use crate::nn::tract::TractBackend;
use crate::nn::{Backend, LoadedModel, ModelRegistry};
use crate::runtime::{Function, Limits, Runtime};
use anyhow::Context as _;
use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Load the models `manifest` names from `repo`, verifying each file's sha256 first.
///
/// Embedding indexes (folders with an `index.toml`) are loaded last: one whose list or
/// embedding model changed since it was built is rebuilt first, with the embedding model.
pub fn load_models(manifest: &Manifest, repo: &Repository) -> anyhow::Result<ModelRegistry> {
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
        registry.insert(load_model(repo, &name)?);
    }
    for name in indexes {
        let dir = repo.dir.join(&name);
        if !index::is_current(repo, &dir)? {
            build_index(repo, &name, Some(&registry))?;
        }
        registry.insert(load_model(repo, &name)?);
    }
    Ok(registry)
}

/// Make `<repo>/<name>/index.toml` say what the manifest declares, creating the folder if
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
        "# Written from the manifest's `tool.scoria.indexes.{name}`; do not edit.\n{}",
        toml::to_string(&spec)?
    );
    let file = dir.join(index::SPEC_FILE);
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// Check one model's files and load it with tract.
pub fn load_model(repo: &Repository, name: &str) -> anyhow::Result<LoadedModel> {
    let entry = repo.get(name)?;
    entry.check()?;
    let bytes = std::fs::read(entry.weights_path())
        .with_context(|| format!("reading {}", entry.weights_path().display()))?;
    load_model_bytes(entry, &bytes)
}

/// Load `bytes` as the weights of the model `entry` describes (its card's tensors), with
/// tract. Used at start-up and for hot swaps, which load beside the serving version.
pub fn load_model_bytes(entry: ModelEntry, bytes: &[u8]) -> anyhow::Result<LoadedModel> {
    let backend = TractBackend;
    let t = Instant::now();
    let name = entry.card.name.clone();
    let graph = backend
        .load_bytes(&entry, bytes)
        .with_context(|| format!("loading model `{name}` with {}", backend.name()))?;
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    tracing::info!(model = %name, backend = backend.name(), digest = %&digest[..12], ms = t.elapsed().as_millis() as u64, "model loaded");
    Ok(LoadedModel {
        entry,
        backend: backend.name(),
        graph,
        digest,
        loaded_at: std::time::SystemTime::now(),
    })
}

/// (Re)build the index `name` from its `index.toml`, loading its embedding model unless
/// `loaded` already has it. Returns the number of entries.
pub fn build_index(repo: &Repository, name: &str, loaded: Option<&ModelRegistry>) -> anyhow::Result<usize> {
    let dir = repo.dir.join(name);
    let spec = index::IndexSpec::load(&dir)?
        .with_context(|| format!("{} has no {}", dir.display(), index::SPEC_FILE))?;
    let t = Instant::now();
    let embedder = match loaded.and_then(|r| r.get(&spec.embedding_model)) {
        Some(m) => m,
        None => Arc::new(load_model(repo, &spec.embedding_model)?),
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

/// Compile every component, each with only the models its manifest entry lists.
pub fn compile_functions(
    manifest: &Manifest,
    runtime: &Runtime,
    models: &ModelRegistry,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<HashMap<String, Function>> {
    let mut functions = HashMap::new();
    for (id, spec) in &manifest.components {
        for m in &spec.models {
            anyhow::ensure!(
                models.get(m).is_some(),
                "component `{id}`: model `{m}` is not loaded"
            );
        }
        let t = Instant::now();
        let f = runtime.compile(spec, models.subset(&spec.models), metrics.clone())?;
        tracing::info!(
            component = %id,
            digest = %&f.digest[..12],
            from_cache = f.cached,
            ms = t.elapsed().as_millis() as u64,
            "component ready"
        );
        functions.insert(id.clone(), f);
    }
    Ok(functions)
}

/// What `scoria up` serves with: the runtime, the loaded models and the compiled functions.
pub struct Prepared {
    pub runtime: Arc<Runtime>,
    pub models: ModelRegistry,
    pub functions: HashMap<String, Function>,
}

/// Everything `scoria up` needs before it can serve.
pub fn prepare(
    manifest: &Manifest,
    repo: &Repository,
    limits: Limits,
    cache: Option<CompileCache>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Prepared> {
    let models = load_models(manifest, repo)?;
    let runtime = Runtime::new(limits, cache)?;
    let functions = compile_functions(manifest, &runtime, &models, metrics)?;
    Ok(Prepared {
        runtime: Arc::new(runtime),
        models,
        functions,
    })
}

/// `scoria compile`: compile every component of `manifest` into `cache`, for container
/// images and pods that should start without running Cranelift.
pub fn precompile(manifest: &Manifest, cache: CompileCache) -> anyhow::Result<Vec<Function>> {
    let runtime = Runtime::new(Limits::default(), Some(cache))?;
    let metrics = Arc::new(Metrics::default());
    // No models are loaded here: compiling only checks imports, not what a guest may load.
    let models = ModelRegistry::default();
    manifest
        .components
        .values()
        .map(|spec| runtime.compile(spec, models.clone(), metrics.clone()))
        .collect()
}
