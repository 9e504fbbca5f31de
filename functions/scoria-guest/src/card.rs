//! The run-time view of a model card (`models/<name>/model.toml`) from inside a function.
//!
//! The host owns the full schema and validates it at start-up; a function reads only what it
//! needs (tensor names, preprocessing, labels) from the model folder its manifest entry mounts,
//! so that a model with other preprocessing needs no new function code.

use crate::error::ApiError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Where a function finds the cards of the models it may use: `/models/<name>/model.toml`.
pub const MODELS_ROOT: &str = "/models";

/// A tensor's name, as the graph knows it.
#[derive(Debug, Clone, Deserialize)]
pub struct TensorName {
    pub name: String,
}

/// The card fields common to all functions; `P` is the function's own `[preprocess]` type.
#[derive(Debug, Clone, Deserialize)]
pub struct Card<P> {
    pub name: String,
    pub inputs: Vec<TensorName>,
    pub outputs: Vec<TensorName>,
    pub preprocess: P,
    #[serde(default)]
    pub labels: Option<String>,
    /// `pretrained`, or `random` for cost-only stand-ins; answers carry it so nobody mistakes
    /// a random model's output for a prediction.
    #[serde(default = "pretrained")]
    pub weights: String,
}

fn pretrained() -> String {
    "pretrained".into()
}

impl<P: DeserializeOwned> Card<P> {
    /// Read `/models/<model>/model.toml`.
    pub fn load(model: &str) -> Result<Self, ApiError> {
        let path = format!("{MODELS_ROOT}/{model}/model.toml");
        let text = crate::mount::read_to_string(&path).map_err(|e| {
            ApiError::internal(
                "model_card_unreadable",
                format!("cannot read {path}: {e}; mount the model folder in this component's `files`"),
            )
        })?;
        toml::from_str(&text).map_err(|e| ApiError::internal("model_card_invalid", format!("{path}: {e}")))
    }

    /// The labels file, one label per line, if the card names one (empty if not).
    pub fn load_labels(&self) -> Result<Labels, ApiError> {
        let Some(file) = &self.labels else {
            return Ok(Labels::default());
        };
        let path = format!("{MODELS_ROOT}/{}/{file}", self.name);
        let text = crate::mount::read_to_string(&path)
            .map_err(|e| ApiError::internal("labels_unreadable", format!("cannot read {path}: {e}")))?;
        Ok(Labels { text })
    }
}

/// A labels file kept as read. An answer names five of ImageNet's thousand classes, and
/// splitting the whole file into owned lines was a tenth of a tensor request's time in the
/// guest; a lookup finds its line with `memchr`, which uses WebAssembly SIMD.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    text: String,
}

impl Labels {
    /// Line `index` (from 0), without its line ending, as `str::lines` would give it.
    pub fn get(&self, index: usize) -> Option<&str> {
        let bytes = self.text.as_bytes();
        let start = match index {
            0 => 0,
            i => memchr::memchr_iter(b'\n', bytes).nth(i - 1)? + 1,
        };
        if start >= bytes.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |e| start + e);
        let line = &self.text[start..end];
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_str_lines() {
        for text in [
            "",
            "a",
            "a\n",
            "a\nb",
            "a\r\nb\r\n",
            "\n\nc\n",
            "tench\ngoldfish\n\nshark",
        ] {
            let labels = Labels { text: text.into() };
            let lines: Vec<&str> = text.lines().collect();
            for i in 0..lines.len() + 2 {
                assert_eq!(labels.get(i), lines.get(i).copied(), "{text:?} line {i}");
            }
        }
    }
}
