//! `scoria up --watch`: swap a component in when its `source` file changes on disk, for the
//! edit, `cargo build` (or `spin build`), see-the-result loop.
//!
//! Files are polled (no platform watcher to go wrong in containers or on network filesystems).
//! A change is acted on only once the file's size and modification time have held still for
//! one more poll, so a build that writes the file in several steps is not loaded half-written.

use crate::server::AppState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often sources are checked.
pub const POLL: Duration = Duration::from_millis(300);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// Watch `sources` (component id, file) until the server drains.
pub async fn watch_components(state: Arc<AppState>, sources: Vec<(String, PathBuf)>) {
    let mut seen: HashMap<String, Stamp> = sources.iter().map(|(id, p)| (id.clone(), stamp(p))).collect();
    let mut settling: HashMap<String, Stamp> = HashMap::new();
    tracing::info!(files = sources.len(), "watching component sources");
    while !state.is_draining() {
        tokio::time::sleep(POLL).await;
        for (id, path) in &sources {
            let now = stamp(path);
            if seen.get(id) == Some(&now) {
                settling.remove(id);
                continue;
            }
            // Changed: wait for one more poll with the same stamp before loading.
            if settling.get(id) != Some(&now) {
                settling.insert(id.clone(), now);
                continue;
            }
            settling.remove(id);
            seen.insert(id.clone(), now);
            let Ok(bytes) = tokio::fs::read(path).await else {
                continue;
            };
            let digest = hex::encode(Sha256::digest(&bytes));
            if state.function(id).is_some_and(|f| f.digest == digest) {
                continue;
            }
            match state.deploy(id, bytes.into()).await {
                Ok((new, _)) => {
                    tracing::info!(component = %id, digest = %&new.digest[..12], "reloaded from disk")
                }
                Err(e) => {
                    tracing::warn!(component = %id, error = %e, "change not loaded; the previous version keeps serving")
                }
            }
        }
    }
}
