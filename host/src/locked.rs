//! Spin's locked application (`spin.lock` JSON), for running as the `trigger-scoria` plugin.
//!
//! `spin up` resolves `spin.toml` into a locked app, writes it to its working directory and
//! starts the plugin for trigger type `scoria` with `SPIN_LOCKED_URL` pointing at it. The
//! locked app carries what Spin resolved: component sources, environment, file mounts (copied
//! into Spin's working directory, or mounted directly with `--direct-mounts`), outbound hosts,
//! the application variables and each component's variable templates (`config`), and the
//! triggers. Spin does not carry `[component.<id>.tool.*]` tables over, so the model
//! grants and FAQ indexes (`tool.scoria`) are read from the manifest the app came from
//! (`metadata.origin`).

use crate::manifest::{
    Component, FileMount, Manifest, ManifestError, OUTBOUND_FIX, Route, Trigger, TriggerKind,
    check_outbound_hosts, shadowed_route_error,
};
use crate::variables::{Template, Variable};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct LockedApp {
    spin_lock_version: u32,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    variables: BTreeMap<String, LockedVariable>,
    triggers: Vec<LockedTrigger>,
    components: Vec<LockedComponent>,
}

/// `variables.<name>`: Spin has already checked the declaration; no default means required.
#[derive(Deserialize)]
struct LockedVariable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize)]
struct LockedTrigger {
    trigger_type: String,
    trigger_config: serde_json::Value,
}

#[derive(Deserialize)]
struct LockedComponent {
    id: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    source: ContentRef,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<ContentPath>,
    /// `[component.<id>.variables]`, as templates.
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ContentRef {
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
struct ContentPath {
    #[serde(default)]
    source: Option<String>,
    path: PathBuf,
}

/// Read the locked app at `url` (a `file:` URL, as Spin passes it) as a [`Manifest`], with the
/// `tool.scoria` grants of the manifest it came from.
pub fn load(url: &str) -> Result<Manifest, ManifestError> {
    let file = file_path(url).map_err(|message| invalid(Path::new(url), "SPIN_LOCKED_URL", message))?;
    let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// Parse a locked app's JSON; `file` is named in errors.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let app: LockedApp = serde_json::from_str(text).map_err(|e| ManifestError::Syntax {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    if app.spin_lock_version > 1 {
        return Err(invalid(
            file,
            "spin_lock_version",
            format!(
                "version {} is newer than this plugin understands (1)",
                app.spin_lock_version
            ),
        ));
    }
    // The manifest the app was loaded from, for `tool.scoria`.
    let origin = match app.metadata.get("origin").and_then(|v| v.as_str()) {
        Some(url) if url.starts_with("oci:") => {
            return Err(invalid(
                file,
                "metadata.origin",
                format!(
                    "`{url}` is an app from an OCI registry, and a registry's app does not carry \
                     the model grants (`[component.<id>.tool.scoria]`) Scoria needs"
                ),
            ));
        }
        Some(url) => {
            let path = file_path(url).map_err(|m| invalid(file, "metadata.origin", m))?;
            Some(Manifest::load(&path)?)
        }
        None => None,
    };

    let variables: BTreeMap<String, Variable> = app
        .variables
        .into_iter()
        .map(|(name, v)| {
            crate::variables::validate_name(&name)
                .map_err(|e| invalid(file, &format!("variables.{name}"), e.to_string()))?;
            let var = Variable {
                default: v.default,
                secret: v.secret,
            };
            Ok((name, var))
        })
        .collect::<Result<_, ManifestError>>()?;

    let mut components = BTreeMap::new();
    for (i, c) in app.components.into_iter().enumerate() {
        let key = |k: &str| format!("components[{i}].{k}");
        let source = c
            .source
            .source
            .as_deref()
            .ok_or_else(|| {
                invalid(
                    file,
                    &key("source"),
                    "only `source` URLs are supported, not inline bytes".into(),
                )
            })
            .and_then(|u| file_path(u).map_err(|m| invalid(file, &key("source.source"), m)))?;
        let mut files = Vec::new();
        for (j, f) in c.files.into_iter().enumerate() {
            let src = f
                .source
                .as_deref()
                .ok_or_else(|| {
                    invalid(
                        file,
                        &key(&format!("files[{j}]")),
                        "a mount without `source`".into(),
                    )
                })
                .and_then(|u| {
                    file_path(u).map_err(|m| invalid(file, &key(&format!("files[{j}].source")), m))
                })?;
            files.push(FileMount {
                source: src,
                destination: f.path.to_string_lossy().into_owned(),
            });
        }
        let allowed_outbound_hosts: Vec<String> = c
            .metadata
            .get("allowed_outbound_hosts")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        check_outbound_hosts(&allowed_outbound_hosts, &variables).map_err(|message| {
            ManifestError::Invalid {
                file: file.to_path_buf(),
                key: key("metadata.allowed_outbound_hosts"),
                message,
                fix: OUTBOUND_FIX.into(),
            }
        })?;
        let mut templates = BTreeMap::new();
        for (name, raw) in c.config {
            let ckey = key(&format!("config.{name}"));
            crate::variables::validate_name(&name).map_err(|e| invalid(file, &ckey, e.to_string()))?;
            let template =
                Template::parse(&raw, &variables).map_err(|e| invalid(file, &ckey, e.to_string()))?;
            templates.insert(name, template);
        }
        let granted = origin.as_ref().and_then(|m| m.components.get(&c.id));
        components.insert(
            c.id.clone(),
            Component {
                id: c.id,
                source,
                files,
                environment: c.env,
                variables: templates,
                allowed_outbound_hosts,
                build_command: None,
                models: granted.map(|g| g.models.clone()).unwrap_or_default(),
                indexes: granted.map(|g| g.indexes.clone()).unwrap_or_default(),
                instance_reuse: granted.map_or(1, |g| g.instance_reuse),
                public: granted.is_some_and(|g| g.public),
                inference: granted.and_then(|g| g.inference.clone()),
            },
        );
    }

    let mut triggers = Vec::new();
    for (i, t) in app.triggers.into_iter().enumerate() {
        let kind = match t.trigger_type.as_str() {
            "scoria" => TriggerKind::Scoria,
            // Spin serves its own http triggers; this plugin only sees them in a mixed app.
            _ => continue,
        };
        let key = |k: &str| format!("triggers[{i}].trigger_config.{k}");
        let text = |k: &str| {
            t.trigger_config
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| invalid(file, &key(k), format!("`{k}` is missing")))
        };
        let component = text("component")?;
        if !components.contains_key(&component) {
            return Err(invalid(
                file,
                &key("component"),
                format!("no component `{component}`"),
            ));
        }
        let route = Route::parse(&text("route")?).map_err(|m| invalid(file, &key("route"), m))?;
        if let Some(endpoint) = route.shadowed_endpoint() {
            let (message, fix) = shadowed_route_error(&route, endpoint);
            return Err(ManifestError::Invalid {
                file: file.to_path_buf(),
                key: key("route"),
                message,
                fix,
            });
        }
        triggers.push(Trigger {
            kind,
            route,
            component,
        });
    }
    if triggers.is_empty() {
        return Err(invalid(file, "triggers", "no `scoria` triggers".into()));
    }
    triggers.sort_by_key(|t| std::cmp::Reverse(t.route.specificity()));
    let name = app
        .metadata
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("spin-app")
        .to_string();
    Ok(Manifest {
        file: origin.map(|m| m.file).unwrap_or_else(|| file.to_path_buf()),
        name,
        variables,
        triggers,
        components,
    })
}

/// The path of a `file:` URL.
fn file_path(url: &str) -> Result<PathBuf, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if parsed.scheme() != "file" {
        return Err(format!(
            "`{url}` is not a file: URL; only local apps are supported"
        ));
    }
    parsed
        .to_file_path()
        .map_err(|()| format!("`{url}` does not name a local path"))
}

fn invalid(file: &Path, key: &str, message: String) -> ManifestError {
    ManifestError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message,
        fix: "run through `spin up` with a Spin 3 that writes version-1 locked apps, from a local spin.toml"
            .into(),
    }
}
