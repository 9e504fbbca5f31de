//! `scoria up --watch`: swap a component in when its `source` file changes on disk, and a
//! model when its `model.toml` or weights file does, for the edit, build (or re-export),
//! see-the-result loop.
//!
//! Files are polled (no platform watcher to go wrong in containers or on network filesystems).
//! A change is acted on only once the file's size and modification time have held still for
//! one more poll, so a build that writes the file in several steps is not loaded half-written.

use crate::deployment::Deployments;
use crate::models::ModelEntry;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often files are checked.
pub const POLL: Duration = Duration::from_millis(100);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Settled-change detection over polls.
#[derive(Default)]
struct Settle {
    seen: HashMap<PathBuf, Stamp>,
    settling: HashMap<PathBuf, Stamp>,
}

impl Settle {
    /// Remember the current state of `path` without reporting it.
    fn baseline(&mut self, path: &Path) {
        self.seen.insert(path.to_path_buf(), stamp(path));
    }

    /// True once `path` has changed and then held still for one poll.
    fn changed(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        if !self.seen.contains_key(path) {
            self.seen.insert(path.to_path_buf(), now);
            return false;
        }
        if self.seen.get(path) == Some(&now) {
            self.settling.remove(path);
            return false;
        }
        if self.settling.get(path) != Some(&now) {
            self.settling.insert(path.to_path_buf(), now);
            return false;
        }
        self.settling.remove(path);
        self.seen.insert(path.to_path_buf(), now);
        true
    }
}

/// Watch component `sources` (component id, file) and every loaded model's folder until
/// `draining` says the server drains.
pub async fn watch(state: Arc<Deployments>, sources: Vec<(String, PathBuf)>, draining: impl Fn() -> bool) {
    let mut settle = Settle::default();
    for (_, path) in &sources {
        settle.baseline(path);
    }
    for (m, _) in state.models() {
        settle.baseline(&m.entry.dir.join("model.toml"));
        settle.baseline(&m.entry.weights_path());
    }
    tracing::info!(
        components = sources.len(),
        models = state.models().len(),
        "watching for changes"
    );
    while !draining() {
        tokio::time::sleep(POLL).await;
        for (id, path) in &sources {
            if settle.changed(path) {
                reload_component(&state, id, path).await;
            }
        }
        for (m, _) in state.models() {
            // Check both files every poll, so each keeps its own settling state.
            let card = settle.changed(&m.entry.dir.join("model.toml"));
            let weights = settle.changed(&m.entry.weights_path());
            if card || weights {
                reload_model(&state, &m.entry.card.name, &m.entry.dir, &m.digest).await;
            }
        }
    }
}

async fn reload_component(state: &Deployments, id: &str, path: &Path) {
    let Ok(bytes) = tokio::fs::read(path).await else {
        return;
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    if state.function(id).is_some_and(|f| f.digest == digest) {
        return;
    }
    match state.deploy(id, bytes.into()).await {
        Ok((new, _)) => tracing::info!(component = %id, digest = %&new.digest[..12], "reloaded from disk"),
        Err(e) => {
            tracing::warn!(component = %id, error = %e, "change not loaded; the previous version keeps serving")
        }
    }
}

/// Reload a model from its folder: the card must parse and the weights match its sha256
/// (a half-copied file does not), and the new version loads beside the serving one.
async fn reload_model(state: &Deployments, name: &str, dir: &Path, serving: &str) {
    let loaded = ModelEntry::load(dir).and_then(|e| e.read_checked().map(|bytes| (e, bytes)));
    let (entry, bytes) = match loaded {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(model = %name, error = %e, "change not loaded; the previous version keeps serving");
            return;
        }
    };
    if entry.card.sha256.eq_ignore_ascii_case(serving) {
        return;
    }
    match state.deploy_model_entry(entry, bytes.into()).await {
        Ok((new, _)) => {
            tracing::info!(model = %name, digest = %&new.digest[..12], "model reloaded from disk")
        }
        Err(e) => {
            tracing::warn!(model = %name, error = %e, "change not loaded; the previous version keeps serving")
        }
    }
}
