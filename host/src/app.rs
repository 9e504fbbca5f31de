//! Start-up: load every model the manifest names once (through [`crate::loader`]), compile
//! every function, then report ready. The listener is already up while this runs, so `/healthz` answers at once and
//! `/readyz` turns 200 only when everything is in place.

use crate::cache::CompileCache;
use crate::loader::ModelLoader;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::models::Repository;
use crate::nn::ModelRegistry;
use crate::runtime::{Function, Limits, Runtime};
use crate::variables::Values;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

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

/// What `scoria up` serves with: the runtime, the loaded models, the loader that loads new
/// versions of them, and the compiled functions.
pub struct Prepared {
    pub runtime: Arc<Runtime>,
    pub models: ModelRegistry,
    pub loader: Arc<ModelLoader>,
    pub functions: HashMap<String, Function>,
}

/// Everything `scoria up` needs before it can serve; `variables` are the app's resolved values.
pub fn prepare(
    manifest: &Manifest,
    repo: &Repository,
    loader: Arc<ModelLoader>,
    limits: Limits,
    variables: Values,
    cache: Option<CompileCache>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Prepared> {
    let models = loader.load_models(manifest, repo)?;
    let runtime = Runtime::new(limits, cache, variables)?;
    let functions = compile_functions(manifest, &runtime, &models, metrics)?;
    Ok(Prepared {
        runtime: Arc::new(runtime),
        models,
        loader,
        functions,
    })
}

/// `scoria compile`: compile every component of `manifest` into `cache`, for container
/// images and pods that should start without running Cranelift.
pub fn precompile(manifest: &Manifest, cache: CompileCache) -> anyhow::Result<Vec<Function>> {
    // Compiling checks imports only; no variable values are needed for that.
    let runtime = Runtime::new(Limits::default(), Some(cache), Values::default())?;
    let metrics = Arc::new(Metrics::default());
    // No models are loaded here: compiling only checks imports, not what a guest may load.
    let models = ModelRegistry::default();
    manifest
        .components
        .values()
        .map(|spec| runtime.compile(spec, models.clone(), metrics.clone()))
        .collect()
}
