//! `GET /catalog`: what the host serves, for people and tools alike. Each function with its
//! routes, the models it may use and the digest of the version serving now; each model with
//! its version, weights, licence, backend and device; and whether the host is ready. The demo
//! page draws its list from here; a dashboard or a client choosing a route can too.
//!
//! It sits behind the API keys as the functions do (any valid key), since it names what they
//! can call; the admin API is where versions are changed.

use crate::deployment::Deployments;
use crate::manifest::Manifest;
use serde::Serialize;
use std::time::UNIX_EPOCH;

/// The path the host answers it on.
pub const PATH: &str = "/catalog";

#[derive(Serialize)]
struct Catalog<'a> {
    ready: bool,
    functions: Vec<FunctionEntry<'a>>,
    models: Vec<ModelEntry>,
}

#[derive(Serialize)]
struct FunctionEntry<'a> {
    id: &'a str,
    routes: Vec<String>,
    models: &'a [String],
    /// sha256 of the component serving now; `None` until it is compiled.
    digest: Option<String>,
}

#[derive(Serialize)]
struct ModelEntry {
    name: String,
    version: String,
    weights: String,
    licence: String,
    backend: &'static str,
    device: String,
    digest: String,
    loaded_at: u64,
}

/// The catalog as JSON.
pub fn render(manifest: &Manifest, deployments: &Deployments, ready: bool) -> String {
    let deployed = deployments.deployed();
    let functions = manifest
        .components
        .values()
        .map(|c| FunctionEntry {
            id: &c.id,
            routes: manifest
                .triggers
                .iter()
                .filter(|t| t.component == c.id)
                .map(|t| t.route.as_pattern())
                .collect(),
            models: &c.models,
            digest: deployed
                .iter()
                .find(|(id, _, _)| *id == c.id)
                .map(|(_, f, _)| f.digest.clone()),
        })
        .collect();
    let mut models: Vec<ModelEntry> = deployments
        .models()
        .into_iter()
        .map(|(m, _)| {
            let card = &m.entry.card;
            ModelEntry {
                name: card.name.clone(),
                version: card.version.clone(),
                weights: card.weights.clone(),
                licence: card.licence.clone(),
                backend: m.backend,
                device: m.device.to_string(),
                digest: m.digest.clone(),
                loaded_at: m
                    .loaded_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            }
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let catalog = Catalog {
        ready,
        functions,
        models,
    };
    serde_json::to_string(&catalog).unwrap_or_else(|_| "{}".into())
}
