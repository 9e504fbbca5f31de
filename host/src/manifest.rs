//! The application manifest: a Spin `spin.toml` (manifest version 2), parsed once into typed
//! structs.
//!
//! Scoria reads the parts of Spin's format that decide what runs and what it may touch
//! (`[[trigger.scoria]]` and `[[trigger.http]]` routes, `[variables]`, `[component.<id>]` with
//! `source`, `files`, `environment`, `variables`, `allowed_outbound_hosts`, `build`) plus its own settings under
//! `[component.<id>.tool.scoria]`, which Spin ignores. Every error names the file, the key and
//! the fix, because a manifest mistake is the first thing a new user hits.

use crate::variables::{Provider, Template, Values, Variable, VariablesError};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// A manifest that could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the manifest: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has keys of the wrong type; toml's message names the key and line.
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    /// The TOML is well-formed but a value is wrong.
    #[error("{file}: `{key}`: {message}; fix: {fix}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
        fix: String,
    },
}

/// Which trigger type declared a route. Both are served the same way; `scoria` components may
/// also be served by Spin through the `trigger-scoria` plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    Scoria,
    Http,
}

/// A route pattern in Spin's syntax: `/classify` matches exactly, `/api/...` matches the prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    Exact(String),
    Prefix(String),
}

impl Route {
    pub(crate) fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("route `{raw}` must start with `/`"));
        }
        if let Some(prefix) = raw.strip_suffix("/...") {
            return Ok(Route::Prefix(prefix.to_string()));
        }
        if raw.contains("...") || raw.contains(':') {
            return Err(format!("route `{raw}` uses a pattern Scoria does not support"));
        }
        Ok(Route::Exact(raw.trim_end_matches('/').to_string()).normalise())
    }

    fn normalise(self) -> Self {
        match self {
            Route::Exact(p) if p.is_empty() => Route::Exact("/".into()),
            r => r,
        }
    }

    /// Whether `path` (without query) is served by this route.
    pub fn matches(&self, path: &str) -> bool {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        match self {
            Route::Exact(p) => path == p,
            Route::Prefix(p) => {
                path == p
                    || (path.starts_with(p.as_str()) && path[p.len()..].starts_with('/'))
                    || p.is_empty()
            }
        }
    }

    /// The route as written in the manifest.
    pub fn as_pattern(&self) -> String {
        match self {
            Route::Exact(p) => p.clone(),
            Route::Prefix(p) => format!("{p}/..."),
        }
    }

    /// The host's own endpoint this route would take over, if any. The host answers those
    /// paths before routing, so such a route would never be reached.
    pub(crate) fn shadowed_endpoint(&self) -> Option<&'static str> {
        let path = match self {
            Route::Exact(p) | Route::Prefix(p) => p.as_str(),
        };
        HOST_ENDPOINTS
            .iter()
            .copied()
            .find(|e| path == *e || path.strip_prefix(e).is_some_and(|rest| rest.starts_with('/')))
    }

    /// Exact routes win over prefixes, and longer prefixes over shorter ones.
    pub(crate) fn specificity(&self) -> (u8, usize) {
        match self {
            Route::Exact(p) => (1, p.len()),
            Route::Prefix(p) => (0, p.len()),
        }
    }
}

/// Paths the host serves itself, ahead of every manifest route (probes, metrics, the catalog,
/// the admin API, the inference protocol).
pub const HOST_ENDPOINTS: [&str; 6] = ["/healthz", "/readyz", "/metrics", "/catalog", "/admin", "/v2"];

/// The error message and fix for a route that would be hidden behind a host endpoint.
pub(crate) fn shadowed_route_error(route: &Route, endpoint: &str) -> (String, String) {
    (
        format!(
            "route `{}` is served by the host itself (`{endpoint}`), so this component would never be reached",
            route.as_pattern()
        ),
        format!("choose a route outside {}", HOST_ENDPOINTS.join(", ")),
    )
}

/// Environment variables by which the bundled functions name the model whose card they read
/// from `/models/<name>/`. Each must name a granted model with that folder mounted.
pub const MODEL_VARIABLES: [&str; 2] = ["SCORIA_MODEL", "SCORIA_FAQ_INDEX"];

/// One route to one component.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub route: Route,
    pub component: String,
}

/// A directory made visible to a guest, read-only.
#[derive(Debug, Clone, PartialEq)]
pub struct FileMount {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path inside the guest.
    pub destination: String,
}

/// `[component.<id>]`: one function and everything it is granted.
#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    /// The `.wasm` file, resolved against the manifest's folder.
    pub source: PathBuf,
    pub files: Vec<FileMount>,
    pub environment: BTreeMap<String, String>,
    /// `[component.<id>.variables]`: what the guest reads through `spin:variables`, as templates
    /// over the app's `[variables]`.
    pub variables: BTreeMap<String, Template>,
    /// As written; an entry may hold `{{ variable }}` templates, resolved when the app starts.
    pub allowed_outbound_hosts: Vec<String>,
    /// `[component.<id>.build] command`, run by `spin build`.
    pub build_command: Option<String>,
    /// Models this component may `load-by-name` (`[component.<id>.tool.scoria] models`).
    pub models: Vec<String>,
    /// Embedding indexes built from text lists (`[component.<id>.tool.scoria.indexes.<name>]`),
    /// by index name; each is also one of `models`.
    pub indexes: BTreeMap<String, IndexDecl>,
    /// Requests one instance may serve, one after another (`[component.<id>.tool.scoria]
    /// instance_reuse`); 1, the default, is a fresh instance for every request.
    pub instance_reuse: u32,
    /// Served without an API key even when `--api-keys-file` is given (`[component.<id>.tool.
    /// scoria] public = true`): for pages and assets a browser loads before it has a key.
    pub public: bool,
    /// The function as a model of the inference protocol
    /// (`[component.<id>.tool.scoria.inference]`), if it is one.
    pub inference: Option<InferenceDecl>,
}

/// How a function is called as a model of the inference protocol: each element of one `BYTES`
/// input is one request body to it, and its JSON answers become typed output tensors. The
/// function itself knows nothing of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceDecl {
    /// The `BYTES` input's name.
    pub input: String,
    /// The `Content-Type` each element is sent with.
    pub content_type: String,
    pub outputs: Vec<InferenceOutput>,
}

/// One output tensor of a function called as a model: `field` of every item of the answer's
/// `list`, one row per element (shorter rows padded: `""`, NaN, -1).
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceOutput {
    pub name: String,
    /// `BYTES`, `FP32` or `INT64`.
    pub datatype: String,
    pub list: String,
    pub field: String,
}

/// An index the manifest asks for: the list it is built from and the model that embeds it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDecl {
    /// The list file, resolved against the manifest's folder.
    pub list: PathBuf,
    pub embedding_model: String,
    pub licence: Option<String>,
}

/// The whole application.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub name: String,
    /// `[variables]`: the application variables components' templates refer to.
    pub variables: BTreeMap<String, Variable>,
    /// Triggers, most specific route first, so the first match is the right one.
    pub triggers: Vec<Trigger>,
    pub components: BTreeMap<String, Component>,
}

impl Manifest {
    /// Read and validate `spin.toml`.
    pub fn load(file: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Validate manifest text; `file` is used for error messages and to resolve relative paths.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ManifestError> {
        let raw: raw::Manifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |key: String, message: String, fix: &str| ManifestError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
            fix: fix.to_string(),
        };
        if raw.spin_manifest_version != 2 {
            return Err(invalid(
                "spin_manifest_version".into(),
                format!("version {} is not supported", raw.spin_manifest_version),
                "set `spin_manifest_version = 2`",
            ));
        }
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };

        let variables =
            declared_variables(raw.variables).map_err(|(key, message, fix)| invalid(key, message, fix))?;
        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let key = |k: &str| format!("component.{id}.{k}");
            if !valid_id(&id) {
                return Err(invalid(
                    format!("component.{id}"),
                    "component ids may hold only lowercase letters, digits and `-`".into(),
                    "rename the component, for example `image-classify`",
                ));
            }
            let source = match c.source {
                raw::Source::Path(p) => base.join(p),
                raw::Source::Other(_) => {
                    return Err(invalid(
                        key("source"),
                        "only a local file path is supported".into(),
                        "build the component locally and set `source = \"path/to/component.wasm\"`",
                    ));
                }
            };
            let mut files = Vec::new();
            for (i, f) in c.files.into_iter().enumerate() {
                let (src, dst) = match f {
                    raw::File::Path(p) => (p.clone(), format!("/{}", p.trim_start_matches("./"))),
                    raw::File::Mapped { source, destination } => (source, destination),
                };
                if src.contains(['*', '?', '[']) {
                    return Err(invalid(
                        format!("{}[{i}]", key("files")),
                        format!("glob pattern `{src}` is not supported"),
                        "mount a directory with `{ source = \"dir\", destination = \"/dir\" }`",
                    ));
                }
                if !dst.starts_with('/') {
                    return Err(invalid(
                        format!("{}[{i}].destination", key("files")),
                        format!("`{dst}` is not an absolute guest path"),
                        "start the destination with `/`",
                    ));
                }
                files.push(FileMount {
                    source: base.join(src),
                    destination: dst,
                });
            }
            check_outbound_hosts(&c.allowed_outbound_hosts, &variables)
                .map_err(|message| invalid(key("allowed_outbound_hosts"), message, OUTBOUND_FIX))?;
            let mut templates = BTreeMap::new();
            for (name, raw) in c.variables {
                let vkey = format!("component.{id}.variables.{name}");
                crate::variables::validate_name(&name).map_err(|e| {
                    invalid(
                        vkey.clone(),
                        e.to_string(),
                        "rename the key, for example `api_url`",
                    )
                })?;
                let template = Template::parse(&raw, &variables).map_err(|e| {
                    invalid(
                        vkey,
                        e.to_string(),
                        "declare the variable in `[variables]`, or correct the name",
                    )
                })?;
                templates.insert(name, template);
            }
            let scoria = c.tool.scoria.unwrap_or_default();
            let models = scoria.models;
            let instance_reuse = scoria.instance_reuse.unwrap_or(1);
            if instance_reuse == 0 {
                return Err(invalid(
                    format!("component.{id}.tool.scoria.instance_reuse"),
                    "0 would let an instance serve no request".into(),
                    "set it to 1 (a fresh instance per request, the default) or more",
                ));
            }
            let mut indexes = BTreeMap::new();
            for (name, ix) in scoria.indexes {
                let ikey = format!("component.{id}.tool.scoria.indexes.{name}");
                for (what, needed) in [("the index", &name), ("its embedding model", &ix.embedding_model)] {
                    if !models.contains(needed) {
                        return Err(invalid(
                            ikey.clone(),
                            format!("{what} `{needed}` is not in this component's `models`"),
                            &format!("add \"{needed}\" to `[component.{id}.tool.scoria] models`"),
                        ));
                    }
                }
                indexes.insert(
                    name,
                    IndexDecl {
                        list: base.join(ix.list),
                        embedding_model: ix.embedding_model,
                        licence: ix.licence,
                    },
                );
            }
            check_model_names(&id, &c.environment, &files, &models, &indexes)
                .map_err(|(key, message, fix)| invalid(key, message, &fix))?;
            components.insert(
                id.clone(),
                Component {
                    id: id.clone(),
                    source,
                    files,
                    environment: c.environment,
                    variables: templates,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    build_command: c.build.map(|b| b.command),
                    models,
                    indexes,
                    instance_reuse,
                    public: scoria.public,
                    inference: inference_decl(&id, scoria.inference)
                        .map_err(|(key, message, fix)| invalid(key, message, fix))?,
                },
            );
        }

        let mut triggers = Vec::new();
        let mut seen = HashSet::new();
        for (kind, list, table) in [
            (TriggerKind::Scoria, raw.trigger.scoria, "trigger.scoria"),
            (TriggerKind::Http, raw.trigger.http, "trigger.http"),
        ] {
            for (i, t) in list.into_iter().enumerate() {
                let key = format!("{table}[{i}]");
                let route = Route::parse(&t.route)
                    .map_err(|m| invalid(format!("{key}.route"), m, "use `/name` or `/prefix/...`"))?;
                if !components.contains_key(&t.component) {
                    return Err(invalid(
                        format!("{key}.component"),
                        format!("no `[component.{}]` is defined", t.component),
                        "add the component table or correct the id",
                    ));
                }
                if let Some(endpoint) = route.shadowed_endpoint() {
                    let (message, fix) = shadowed_route_error(&route, endpoint);
                    return Err(invalid(format!("{key}.route"), message, &fix));
                }
                if !seen.insert(route.clone()) {
                    return Err(invalid(
                        format!("{key}.route"),
                        format!("route `{}` is declared twice", t.route),
                        "give each trigger its own route",
                    ));
                }
                triggers.push(Trigger {
                    kind,
                    route,
                    component: t.component,
                });
            }
        }
        if triggers.is_empty() {
            return Err(invalid(
                "trigger.scoria".into(),
                "the manifest declares no routes".into(),
                "add `[[trigger.scoria]]` with `route` and `component`",
            ));
        }
        triggers.sort_by_key(|t| std::cmp::Reverse(t.route.specificity()));
        Ok(Manifest {
            file: file.to_path_buf(),
            name: raw.application.name,
            variables,
            triggers,
            components,
        })
    }

    /// The component serving `path`, if any, with the trigger that matched.
    pub fn route(&self, path: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.route.matches(path))
    }

    /// The application variables' values from `provider`, and every `allowed_outbound_hosts`
    /// template resolved and checked with them. `scoria up` and the plugin call this before
    /// serving, so a required variable without a value stops the start, as under Spin.
    pub fn resolve_variables(&self, provider: &Provider) -> Result<Values, ManifestError> {
        let invalid = |key: String, message: String, fix: &str| ManifestError::Invalid {
            file: self.file.clone(),
            key,
            message,
            fix: fix.to_string(),
        };
        let values = provider.resolve(&self.variables).map_err(|e| {
            invalid(
                "variables".into(),
                e.to_string(),
                "give the variable a value (or a `default` in the manifest) and start again",
            )
        })?;
        for c in self.components.values() {
            for entry in c
                .allowed_outbound_hosts
                .iter()
                .filter(|e| Template::is_template(e))
            {
                let resolved = values.fill(entry);
                crate::outbound::AllowedHost::parse(&resolved).map_err(|message| {
                    invalid(
                        format!("component.{}.allowed_outbound_hosts", c.id),
                        format!("`{entry}` resolves to `{resolved}`: {message}"),
                        "set the variable to a host Spin accepts there",
                    )
                })?;
            }
        }
        Ok(values)
    }

    /// Every model named by any component, each once.
    pub fn models(&self) -> Vec<String> {
        let mut all: Vec<String> = self.components.values().flat_map(|c| c.models.clone()).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// A component names its model in up to three places: the variable that tells the function
/// which model to use, the `files` mount it reads the card from, and the `models` grant.
/// They must agree, or the first request fails; this says which key to change instead.
fn check_model_names(
    id: &str,
    environment: &BTreeMap<String, String>,
    files: &[FileMount],
    models: &[String],
    indexes: &BTreeMap<String, IndexDecl>,
) -> Result<(), (String, String, String)> {
    let mut read_cards: Vec<(String, &str)> = Vec::new();
    for var in MODEL_VARIABLES {
        if let Some(model) = environment.get(var) {
            let key = format!("component.{id}.environment.{var}");
            if !models.contains(model) {
                return Err((
                    key,
                    format!("`{model}` is not in this component's `models`"),
                    format!("add \"{model}\" to `[component.{id}.tool.scoria] models`, or correct the name"),
                ));
            }
            read_cards.push((key, model));
        }
    }
    // An index's card names its embedding model, whose tokenizer and card the function reads.
    for (name, ix) in indexes {
        if environment.values().any(|v| v == name) {
            read_cards.push((
                format!("component.{id}.tool.scoria.indexes.{name}.embedding_model"),
                &ix.embedding_model,
            ));
        }
    }
    for (key, model) in read_cards {
        let destination = format!("/models/{model}");
        match files.iter().find(|f| f.destination == destination) {
            None => {
                return Err((
                    format!("component.{id}.files"),
                    format!(
                        "no mount has destination `{destination}`, where the function reads `{model}`'s card (named by `{key}`)"
                    ),
                    format!(
                        "add `{{ source = \"models/{model}\", destination = \"{destination}\" }}` to `files`"
                    ),
                ));
            }
            Some(f)
                if f.source
                    .file_name()
                    .is_some_and(|n| n != std::ffi::OsStr::new(model)) =>
            {
                return Err((
                    format!("component.{id}.files"),
                    format!(
                        "`{destination}` mounts `{}`, another model's folder",
                        f.source.display()
                    ),
                    format!("mount `models/{model}` there"),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// How to write an `allowed_outbound_hosts` entry, for the manifest's and the locked app's errors.
pub(crate) const OUTBOUND_FIX: &str = "write entries as Spin does: `https://example.com`, `https://*.example.com`, \
     `http://localhost:8080`, `*://*:*`, or `https://{{ host }}` with `host` in `[variables]`";

/// Check `allowed_outbound_hosts` as written: an entry without a template must parse now; one
/// with a template must name declared variables (it is parsed once they have values).
pub(crate) fn check_outbound_hosts(
    entries: &[String],
    variables: &BTreeMap<String, Variable>,
) -> Result<(), String> {
    for entry in entries {
        if Template::is_template(entry) {
            Template::parse(entry, variables).map_err(|e| e.to_string())?;
        } else {
            crate::outbound::AllowedHost::parse(entry)?;
        }
    }
    Ok(())
}

/// `[component.<id>.tool.scoria.inference]` checked: output types the answers can fill, and
/// names that do not repeat.
fn inference_decl(
    id: &str,
    raw: Option<raw::Inference>,
) -> Result<Option<InferenceDecl>, (String, String, &'static str)> {
    let Some(raw) = raw else { return Ok(None) };
    let key = format!("component.{id}.tool.scoria.inference");
    let mut seen = HashSet::new();
    for (i, o) in raw.outputs.iter().enumerate() {
        if !["BYTES", "FP32", "INT64"].contains(&o.datatype.as_str()) {
            return Err((
                format!("{key}.outputs[{i}].datatype"),
                format!("`{}` is not a type an answer's field can fill", o.datatype),
                "use BYTES (strings), FP32 or INT64",
            ));
        }
        if !seen.insert(o.name.as_str()) || o.name == raw.input {
            return Err((
                format!("{key}.outputs[{i}].name"),
                format!("`{}` is used twice", o.name),
                "give every input and output its own name",
            ));
        }
    }
    Ok(Some(InferenceDecl {
        input: raw.input,
        content_type: raw.content_type,
        outputs: raw
            .outputs
            .into_iter()
            .map(|o| InferenceOutput {
                name: o.name,
                datatype: o.datatype,
                list: o.list,
                field: o.field,
            })
            .collect(),
    }))
}

/// `[variables]` checked as Spin's loader does: valid names, and each variable either
/// `required` or with a `default`.
fn declared_variables(
    raw: BTreeMap<String, raw::Variable>,
) -> Result<BTreeMap<String, Variable>, (String, String, &'static str)> {
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        let key = format!("variables.{name}");
        crate::variables::validate_name(&name)
            .map_err(|e: VariablesError| (key.clone(), e.to_string(), "rename it, for example `api_url`"))?;
        if v.required == v.default.is_some() {
            return Err((
                key,
                "a variable must be `required` or have a `default`, not both or neither".into(),
                "write `{ default = \"...\" }` or `{ required = true }`",
            ));
        }
        out.insert(
            name,
            Variable {
                default: v.default,
                secret: v.secret,
            },
        );
    }
    Ok(out)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The serde view of the file, kept private so the rest of the host sees only validated types.
mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Manifest {
        pub spin_manifest_version: u32,
        pub application: Application,
        #[serde(default)]
        pub variables: BTreeMap<String, Variable>,
        #[serde(default)]
        pub trigger: Triggers,
        #[serde(default)]
        pub component: BTreeMap<String, Component>,
    }

    #[derive(Deserialize)]
    pub struct Application {
        pub name: String,
        // version, authors, description and Spin's own settings are informational here.
    }

    #[derive(Deserialize, Default)]
    pub struct Triggers {
        #[serde(default)]
        pub scoria: Vec<Trigger>,
        #[serde(default)]
        pub http: Vec<Trigger>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Trigger {
        pub route: String,
        pub component: String,
        #[serde(default)]
        #[allow(dead_code)] // accepted for Spin compatibility, unused by Scoria
        pub executor: Option<toml::Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Component {
        pub source: Source,
        #[serde(default)]
        #[allow(dead_code)] // accepted for Spin compatibility, unused by Scoria
        pub description: Option<String>,
        #[serde(default)]
        pub files: Vec<File>,
        #[serde(default)]
        #[allow(dead_code)] // accepted for Spin compatibility, unused by Scoria
        pub exclude_files: Vec<String>,
        #[serde(default)]
        pub environment: BTreeMap<String, String>,
        #[serde(default)]
        pub variables: BTreeMap<String, String>,
        #[serde(default)]
        pub allowed_outbound_hosts: Vec<String>,
        #[serde(default)]
        pub build: Option<Build>,
        #[serde(default)]
        pub tool: Tools,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Variable {
        #[serde(default)]
        pub default: Option<String>,
        #[serde(default)]
        pub required: bool,
        #[serde(default)]
        pub secret: bool,
        #[serde(default)]
        #[allow(dead_code)] // informational
        pub description: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Source {
        Path(String),
        Other(#[allow(dead_code)] toml::Table),
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum File {
        Path(String),
        Mapped { source: String, destination: String },
    }

    #[derive(Deserialize)]
    pub struct Build {
        pub command: String,
        // `workdir` and `watch` are for `spin build` / `spin watch`.
    }

    #[derive(Deserialize, Default)]
    pub struct Tools {
        #[serde(default)]
        pub scoria: Option<Scoria>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Scoria {
        #[serde(default)]
        pub models: Vec<String>,
        #[serde(default)]
        pub indexes: BTreeMap<String, Index>,
        #[serde(default)]
        pub instance_reuse: Option<u32>,
        #[serde(default)]
        pub public: bool,
        #[serde(default)]
        pub inference: Option<Inference>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Inference {
        pub input: String,
        pub content_type: String,
        pub outputs: Vec<InferenceOutput>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct InferenceOutput {
        pub name: String,
        pub datatype: String,
        pub list: String,
        pub field: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Index {
        pub list: String,
        pub embedding_model: String,
        #[serde(default)]
        pub licence: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
spin_manifest_version = 2

[application]
name = "scoria-demo"
version = "0.1.0"

[[trigger.scoria]]
route = "/classify"
component = "image-classify"

[[trigger.http]]
route = "/static/..."
component = "hello"

[component.image-classify]
source = "functions/target/wasm32-wasip2/release/image_classify.wasm"
files = [{ source = "models/efficientnet-lite0", destination = "/models/efficientnet-lite0" }]
environment = { SCORIA_MODEL = "efficientnet-lite0" }
[component.image-classify.build]
command = "cargo build --release"
[component.image-classify.tool.scoria]
models = ["efficientnet-lite0"]

[component.hello]
source = "hello.wasm"
allowed_outbound_hosts = ["https://example.com"]
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/app/spin.toml"), text)
    }

    #[test]
    fn parses_the_demo_manifest() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "scoria-demo");
        let c = &m.components["image-classify"];
        assert_eq!(
            c.source,
            Path::new("/app/functions/target/wasm32-wasip2/release/image_classify.wasm")
        );
        assert_eq!(c.models, vec!["efficientnet-lite0"]);
        assert_eq!(c.environment["SCORIA_MODEL"], "efficientnet-lite0");
        assert_eq!(
            c.files,
            vec![FileMount {
                source: "/app/models/efficientnet-lite0".into(),
                destination: "/models/efficientnet-lite0".into()
            }]
        );
        assert_eq!(c.build_command.as_deref(), Some("cargo build --release"));
        assert!(m.components["hello"].models.is_empty());
        assert_eq!(m.models(), vec!["efficientnet-lite0"]);
    }

    #[test]
    fn indexes_are_declared_with_their_list_and_must_be_granted() {
        let faq = r#"
[component.hello.tool.scoria]
models = ["minilm", "faq"]
[component.hello.tool.scoria.indexes.faq]
list = "faq/list.jsonl"
embedding_model = "minilm"
"#;
        let m = parse(&format!("{GOOD}{faq}")).unwrap();
        assert_eq!(
            m.components["hello"].indexes["faq"],
            IndexDecl {
                list: "/app/faq/list.jsonl".into(),
                embedding_model: "minilm".into(),
                licence: None,
            }
        );
        let e = err(&format!(
            "{GOOD}{}",
            faq.replace("[\"minilm\", \"faq\"]", "[\"minilm\"]")
        ));
        assert!(e.contains("component.hello.tool.scoria.indexes.faq"), "{e}");
        assert!(e.contains("add \"faq\" to"), "{e}");
    }

    #[test]
    fn routes_match_exactly_or_by_prefix() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.route("/classify").unwrap().component, "image-classify");
        assert_eq!(m.route("/classify/").unwrap().component, "image-classify");
        assert!(m.route("/classify/x").is_none());
        assert!(m.route("/classifyx").is_none());
        assert_eq!(m.route("/static").unwrap().kind, TriggerKind::Http);
        assert_eq!(m.route("/static/a/b").unwrap().component, "hello");
        assert!(m.route("/staticx").is_none());
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_component_names_the_key_and_fix() {
        let e = err(&GOOD.replace("component = \"hello\"", "component = \"helo\""));
        assert!(e.contains("/app/spin.toml"), "{e}");
        assert!(e.contains("trigger.http[0].component"), "{e}");
        assert!(e.contains("[component.helo]"), "{e}");
        assert!(e.contains("fix:"), "{e}");
    }

    #[test]
    fn variables_are_declared_templated_and_resolved_as_spin_does() {
        let app = GOOD
            .replace(
                "[[trigger.scoria]]",
                "[variables]\napi_host = { default = \"api.example.com\" }\ntoken = { required = true, secret = true }\n\n[[trigger.scoria]]",
            )
            .replace(
                "allowed_outbound_hosts = [\"https://example.com\"]",
                "allowed_outbound_hosts = [\"https://{{ api_host }}\"]\nvariables = { url = \"https://{{ api_host }}/v1\", key = \"{{ token }}\" }",
            );
        let m = parse(&app).unwrap();
        assert_eq!(m.variables["token"].default, None);
        assert!(m.variables["token"].secret);
        let hello = &m.components["hello"];
        assert_eq!(hello.variables["url"].as_str(), "https://{{ api_host }}/v1");
        let env = Provider::from_pairs;
        // A required variable without a value stops the start, naming how to set it.
        let e = m.resolve_variables(&env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("`variables`") && e.contains("SPIN_VARIABLE_TOKEN=..."),
            "{e}"
        );
        let values = m
            .resolve_variables(&env(&[("SPIN_VARIABLE_TOKEN", "t")]))
            .unwrap();
        assert_eq!(
            hello.variables["url"].render(&values).unwrap(),
            "https://api.example.com/v1"
        );
        // A value that makes an outbound entry malformed is refused before serving.
        let e = m
            .resolve_variables(&env(&[
                ("SPIN_VARIABLE_TOKEN", "t"),
                ("SPIN_VARIABLE_API_HOST", "a/b"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("component.hello.allowed_outbound_hosts") && e.contains("https://a/b"),
            "{e}"
        );

        for (from, to, key) in [
            ("{{ token }}", "{{ nope }}", "component.hello.variables.key"),
            ("key = ", "Key = ", "component.hello.variables.Key"),
            (
                "token = { required = true, secret = true }",
                "token = { required = true, default = \"x\" }",
                "variables.token",
            ),
            (
                "token = { required = true, secret = true }",
                "token = { secret = true }",
                "variables.token",
            ),
            ("token = {", "Token = {", "variables.Token"),
        ] {
            let e = err(&app.replace(from, to));
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let e = err(&GOOD.replace("spin_manifest_version = 2", "spin_manifest_version = 1"));
        assert!(e.contains("spin_manifest_version"), "{e}");
        let e = err(&GOOD.replace("route = \"/classify\"", "route = \"classify\""));
        assert!(e.contains("trigger.scoria[0].route"), "{e}");
        let e = err(&GOOD.replace("route = \"/static/...\"", "route = \"/classify\""));
        assert!(e.contains("declared twice"), "{e}");
        let e = err(&GOOD.replace("\"https://example.com\"", "\"example.com\""));
        assert!(e.contains("component.hello.allowed_outbound_hosts"), "{e}");
        // A template over an undeclared variable: refused, naming the entry.
        let e = err(&GOOD.replace("\"https://example.com\"", "\"https://{{ api_host }}\""));
        assert!(
            e.contains("component.hello.allowed_outbound_hosts") && e.contains("{{ api_host }}"),
            "{e}"
        );
        // Spin's subdomain wildcards and port ranges are read.
        parse(&GOOD.replace(
            "\"https://example.com\"",
            "\"https://*.example.com\", \"http://localhost:8000..8080\"",
        ))
        .expect("Spin's wildcards and port ranges are read");
        let e = err(&GOOD.replace(
            "source = \"hello.wasm\"",
            "source = { url = \"https://x\", digest = \"y\" }",
        ));
        assert!(e.contains("component.hello.source"), "{e}");
        let e = err(&GOOD.replace(
            "destination = \"/models/efficientnet-lite0\"",
            "destination = \"models\"",
        ));
        assert!(e.contains("files[0].destination"), "{e}");
        let e = err(&GOOD.replace(
            "models = [\"efficientnet-lite0\"]",
            "models = [\"efficientnet-lite0\"]\ninstance_reuse = 0",
        ));
        assert!(
            e.contains("component.image-classify.tool.scoria.instance_reuse"),
            "{e}"
        );
        assert!(e.contains("fix: set it to 1"), "{e}");
    }

    #[test]
    fn instances_serve_one_request_unless_the_manifest_says_more() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.components["image-classify"].instance_reuse, 1);
        let m = parse(&GOOD.replace(
            "models = [\"efficientnet-lite0\"]",
            "models = [\"efficientnet-lite0\"]\ninstance_reuse = 16",
        ))
        .unwrap();
        assert_eq!(m.components["image-classify"].instance_reuse, 16);
    }

    #[test]
    fn syntax_and_unknown_keys_name_the_file_and_key() {
        let e = err("spin_manifest_version = 2\n[application\n");
        assert!(e.starts_with("/app/spin.toml"), "{e}");
        let e = err(&GOOD.replace("[component.hello]\n", "[component.hello]\nsorce = \"x\"\n"));
        assert!(e.contains("sorce"), "{e}");
        let e = err(&GOOD.replace("models = [", "modles = ["));
        assert!(e.contains("modles"), "{e}");
    }

    #[test]
    fn a_manifest_without_routes_is_refused() {
        let e = err("spin_manifest_version = 2\n[application]\nname = \"x\"\n");
        assert!(e.contains("no routes"), "{e}");
    }

    #[test]
    fn routes_the_host_serves_itself_are_refused() {
        for route in [
            "/healthz",
            "/readyz/",
            "/metrics",
            "/admin",
            "/admin/...",
            "/admin/x",
        ] {
            let e = err(&GOOD.replace("route = \"/classify\"", &format!("route = \"{route}\"")));
            assert!(
                e.contains("trigger.scoria[0].route") && e.contains("served by the host itself"),
                "{route}: {e}"
            );
        }
        // Paths that only begin with the same letters, and a catch-all, are the user's.
        for route in ["/healthzone", "/administration", "/..."] {
            parse(&GOOD.replace("route = \"/classify\"", &format!("route = \"{route}\""))).unwrap();
        }
    }

    #[test]
    fn the_model_a_function_is_told_to_use_must_be_granted_and_mounted() {
        let e = err(&GOOD.replace(
            "SCORIA_MODEL = \"efficientnet-lite0\"",
            "SCORIA_MODEL = \"efficientnet-lite2\"",
        ));
        assert!(
            e.contains("component.image-classify.environment.SCORIA_MODEL")
                && e.contains(
                    "add \"efficientnet-lite2\" to `[component.image-classify.tool.scoria] models`"
                ),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "destination = \"/models/efficientnet-lite0\"",
            "destination = \"/models/elsewhere\"",
        ));
        assert!(
            e.contains("component.image-classify.files")
                && e.contains("no mount has destination `/models/efficientnet-lite0`")
                && e.contains("destination = \"/models/efficientnet-lite0\""),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "source = \"models/efficientnet-lite0\"",
            "source = \"models/resnet152\"",
        ));
        assert!(e.contains("another model's folder"), "{e}");
    }

    #[test]
    fn a_served_index_needs_its_embedding_model_mounted() {
        let faq = r#"
[[trigger.scoria]]
route = "/faq"
component = "faq"
[component.faq]
source = "faq.wasm"
files = [{ source = "models/faq-js", destination = "/models/faq-js" }]
environment = { SCORIA_FAQ_INDEX = "faq-js" }
[component.faq.tool.scoria]
models = ["minilm", "faq-js"]
[component.faq.tool.scoria.indexes.faq-js]
list = "faq/list.jsonl"
embedding_model = "minilm"
"#;
        let e = err(&format!("{GOOD}{faq}"));
        assert!(
            e.contains("no mount has destination `/models/minilm`")
                && e.contains("indexes.faq-js.embedding_model"),
            "{e}"
        );
        let mounted = faq.replace(
            "destination = \"/models/faq-js\" }",
            "destination = \"/models/faq-js\" }, { source = \"models/minilm\", destination = \"/models/minilm\" }",
        );
        parse(&format!("{GOOD}{mounted}")).unwrap();
    }

    #[test]
    fn every_committed_manifest_passes_the_checks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let files = [
            "spin.toml",
            "spin-resnet152.toml",
            "spin-resnet152-fp16.toml",
            "spin-nullnet.toml",
            "tests/fixtures/faults.toml",
            "deploy/k8s/base/spin.toml",
            "deploy/k8s/overlays/gpu/spin.toml",
        ];
        for f in files {
            Manifest::load(&root.join(f)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
