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
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ApiError::internal(
                "model_card_unreadable",
                format!("cannot read {path}: {e}; mount the model folder in this component's `files`"),
            )
        })?;
        toml::from_str(&text).map_err(|e| ApiError::internal("model_card_invalid", format!("{path}: {e}")))
    }

    /// The labels file, one label per line, if the card names one.
    pub fn load_labels(&self) -> Result<Vec<String>, ApiError> {
        let Some(file) = &self.labels else {
            return Ok(Vec::new());
        };
        let path = format!("{MODELS_ROOT}/{}/{file}", self.name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ApiError::internal("labels_unreadable", format!("cannot read {path}: {e}")))?;
        Ok(text.lines().map(str::to_owned).collect())
    }
}
