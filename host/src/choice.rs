//! Recorded `--backend auto` choices: which backend ran a model faster on this machine.
//!
//! `auto` on CPU times both backends on the same input at load. The outcome is written to
//! `.cache/backend-choices.toml` beside the manifest, keyed by model, so that the next start
//! loads only the chosen backend (no second load, no measurement) and `scoria models list`
//! can say which backend serves each model. A record counts only for the same weights (sha256)
//! and the same number of CPUs; anything else is measured again.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One model's measured choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// sha256 of the weights that were timed.
    pub digest: String,
    /// CPUs of the machine that timed them.
    pub cpus: usize,
    pub backend: String,
    pub tract_ms: f64,
    pub onnxruntime_ms: f64,
}

impl Choice {
    /// For the log and `scoria models list`.
    pub fn summary(&self) -> String {
        format!(
            "auto: tract {:.2} ms, onnxruntime {:.2} ms per run",
            self.tract_ms, self.onnxruntime_ms
        )
    }
}

/// The record file of a project.
pub fn file(project: &Path) -> PathBuf {
    project.join(".cache/backend-choices.toml")
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn read(file: &Path) -> BTreeMap<String, Choice> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default()
}

/// The recorded choice for `model`, if it was measured for these weights on a machine like
/// this one.
pub fn recorded(project: &Path, model: &str, digest: &str) -> Option<Choice> {
    read(&file(project))
        .remove(model)
        .filter(|c| c.digest == digest && c.cpus == cpus())
}

/// Every recorded choice, by model, whatever it was measured on (for `scoria models list`).
pub fn all(project: &Path) -> BTreeMap<String, Choice> {
    read(&file(project))
}

/// Record a measurement. Failing to write only costs a measurement at the next start.
pub fn record(project: &Path, model: &str, digest: &str, backend: &str, tract_ms: f64, onnxruntime_ms: f64) {
    let file = file(project);
    let mut all = read(&file);
    all.insert(
        model.to_string(),
        Choice {
            digest: digest.to_string(),
            cpus: cpus(),
            backend: backend.to_string(),
            tract_ms,
            onnxruntime_ms,
        },
    );
    let written = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&file, toml::to_string(&all).unwrap_or_default()));
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot record the backend choice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_counts_for_the_same_weights_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded(dir.path(), "m", "aa").is_none());
        record(dir.path(), "m", "aa", "onnxruntime", 50.0, 11.0);
        record(dir.path(), "n", "bb", "tract", 5.0, 7.0);
        let c = recorded(dir.path(), "m", "aa").unwrap();
        assert_eq!((c.backend.as_str(), c.tract_ms), ("onnxruntime", 50.0));
        assert!(recorded(dir.path(), "m", "other weights").is_none());
        assert_eq!(all(dir.path())["n"].backend, "tract");
    }
}
