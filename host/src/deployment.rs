//! The versions being served: each function's and each model's current version and the one
//! before it, and the compiling and validating of new ones.
//!
//! None of this is HTTP. The admin API, the file watcher (`--watch`) and start-up all come
//! here, so that a swap behaves the same whoever asks for it: the new version is built off
//! the async executor beside the serving one, swapped in one step, and on any error the old
//! version keeps serving.

use crate::app::Prepared;
use crate::loader::ModelLoader;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::models::ModelEntry;
use crate::nn::{LoadedModel, ModelRegistry, ModelSwapError};
use crate::runtime::{Function, Runtime};
use crate::versions::Versions;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// What a hot swap builds with, set once start-up is done.
struct SwapContext {
    runtime: Arc<Runtime>,
    models: ModelRegistry,
    loader: Arc<ModelLoader>,
}

/// Why a swap was refused; the old version keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("the host is still starting")]
    NotReady,
    #[error("no such component in the manifest")]
    UnknownComponent,
    #[error("no such model is loaded")]
    UnknownModel,
    #[error("there is no previous version to roll back to")]
    NoPrevious,
    #[error("the component was refused: {0}")]
    Invalid(String),
    #[error("the model was refused: {0}")]
    InvalidModel(String),
}

impl From<ModelSwapError> for SwapError {
    fn from(e: ModelSwapError) -> Self {
        match e {
            ModelSwapError::Unknown(_) => SwapError::UnknownModel,
            ModelSwapError::NoPrevious(_) => SwapError::NoPrevious,
        }
    }
}

/// Every function's and model's serving versions. Functions appear once start-up has
/// compiled them and loaded their models.
pub struct Deployments {
    manifest: Manifest,
    metrics: Arc<Metrics>,
    functions: RwLock<HashMap<String, Versions<Function>>>,
    context: OnceLock<SwapContext>,
}

impl Deployments {
    pub fn new(manifest: Manifest, metrics: Arc<Metrics>) -> Self {
        Self {
            manifest,
            metrics,
            functions: RwLock::new(HashMap::new()),
            context: OnceLock::new(),
        }
    }

    /// Serve what start-up prepared.
    pub fn set_ready(&self, prepared: Prepared) {
        if let Ok(mut f) = self.functions.write() {
            *f = prepared
                .functions
                .into_iter()
                .map(|(id, current)| (id, Versions::new(current)))
                .collect();
        }
        let _ = self.context.set(SwapContext {
            runtime: prepared.runtime,
            models: prepared.models,
            loader: prepared.loader,
        });
    }

    /// Every loaded model, once start-up is done: what the inference protocol serves. A swap
    /// of a model is seen here as by the functions, since they share its slot.
    pub fn registry(&self) -> Option<&ModelRegistry> {
        self.context.get().map(|c| &c.models)
    }

    /// Whether start-up is done.
    pub fn is_ready(&self) -> bool {
        self.context.get().is_some()
    }

    /// The version of `component` that new requests get. A request keeps the clone it took,
    /// so a swap never changes the code under a request in flight.
    pub fn function(&self, component: &str) -> Option<Function> {
        self.functions
            .read()
            .ok()?
            .get(component)
            .map(|v| v.current().clone())
    }

    /// Compile new bytes for `component` off the async executor, then swap them in atomically;
    /// the old version becomes the rollback target. On any error the old version keeps serving.
    pub async fn deploy(
        &self,
        component: &str,
        bytes: Bytes,
    ) -> Result<(Function, Option<Function>), SwapError> {
        let ctx = self.context.get().ok_or(SwapError::NotReady)?;
        // Anything else would be parsed as WebAssembly text, and the parser's error quotes it.
        if !bytes.starts_with(b"\0asm") {
            return Err(SwapError::Invalid(
                "not a WebAssembly binary (it does not start with `\\0asm`); upload the built .wasm file"
                    .into(),
            ));
        }
        let spec = self
            .manifest
            .components
            .get(component)
            .ok_or(SwapError::UnknownComponent)?
            .clone();
        let (runtime, models, metrics) = (
            ctx.runtime.clone(),
            ctx.models.subset(&spec.models),
            self.metrics.clone(),
        );
        let new = tokio::task::spawn_blocking(move || runtime.compile_bytes(&spec, &bytes, models, metrics))
            .await
            .map_err(|e| SwapError::Invalid(format!("compilation panicked: {e}")))?
            .map_err(|e| SwapError::Invalid(format!("{e:#}")))?;
        let mut all = self.functions.write().map_err(|_| SwapError::NotReady)?;
        let v = all.get_mut(component).ok_or(SwapError::UnknownComponent)?;
        let replaced = v.replace(new.clone());
        Ok((new, Some(replaced.old)))
    }

    /// Swap `component` back to its previous version (which becomes the rollback target).
    pub fn rollback(&self, component: &str) -> Result<(Function, Function), SwapError> {
        let mut all = self.functions.write().map_err(|_| SwapError::NotReady)?;
        let v = all.get_mut(component).ok_or(SwapError::UnknownComponent)?;
        v.roll_back().ok_or(SwapError::NoPrevious)
    }

    /// Load `bytes` as a new version of the model `name` (same card: tensor names, types and
    /// shapes) beside the serving one, off the async executor, then swap it in. Computes
    /// already running finish on the old graph; on any error the old version keeps serving.
    pub async fn deploy_model(
        &self,
        name: &str,
        bytes: Bytes,
    ) -> Result<(Arc<LoadedModel>, Arc<LoadedModel>), SwapError> {
        let ctx = self.context.get().ok_or(SwapError::NotReady)?;
        let entry = ctx.models.get(name).ok_or(SwapError::UnknownModel)?.entry.clone();
        self.deploy_model_entry(entry, bytes).await
    }

    /// As [`deploy_model`](Self::deploy_model), with a new card too (a reload from disk).
    pub async fn deploy_model_entry(
        &self,
        entry: ModelEntry,
        bytes: Bytes,
    ) -> Result<(Arc<LoadedModel>, Arc<LoadedModel>), SwapError> {
        let ctx = self.context.get().ok_or(SwapError::NotReady)?;
        let loader = ctx.loader.clone();
        let new = tokio::task::spawn_blocking(move || loader.load_model_bytes(entry, &bytes))
            .await
            .map_err(|e| SwapError::InvalidModel(format!("loading panicked: {e}")))?
            .map_err(|e| SwapError::InvalidModel(format!("{e:#}")))?;
        let swapped = ctx.models.swap(new)?;
        if let Some(displaced) = swapped.displaced {
            // Its last handle, unless a compute still holds it: its teardown blocks.
            let _ = tokio::task::spawn_blocking(move || drop(displaced)).await;
        }
        Ok((swapped.new, swapped.old))
    }

    /// Swap model `name` back to its previous version (which becomes the rollback target).
    pub fn rollback_model(&self, name: &str) -> Result<(Arc<LoadedModel>, Arc<LoadedModel>), SwapError> {
        let ctx = self.context.get().ok_or(SwapError::NotReady)?;
        Ok(ctx.models.rollback(name)?)
    }

    /// `(current, previous)` for every loaded model, sorted by name.
    pub fn models(&self) -> Vec<(Arc<LoadedModel>, Option<Arc<LoadedModel>>)> {
        self.context
            .get()
            .map(|ctx| ctx.models.versions())
            .unwrap_or_default()
    }

    /// `(id, current, previous)` for every function, sorted by id.
    pub fn deployed(&self) -> Vec<(String, Function, Option<Function>)> {
        let Ok(all) = self.functions.read() else {
            return Vec::new();
        };
        let mut v: Vec<_> = all
            .iter()
            .map(|(id, v)| (id.clone(), v.current().clone(), v.previous().cloned()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
