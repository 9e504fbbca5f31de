//! The Open Inference Protocol v2 (KServe's and Triton's), over REST: what clients written for
//! it (`tritonclient`, KServe's SDK, `curl`) send, and what they expect back.
//!
//! This module knows the protocol: its paths ([`Endpoint`]), its metadata documents, its error
//! form (`{"error": "..."}`) and its tensors ([`codec`]). Serving a request (keys, admission,
//! the body's limits, running the model) is the server's, through the same path as every other
//! request; so this module holds no state and imports nothing of the server.

pub mod codec;
pub mod function;

use crate::nn::LoadedModel;
use http::Method;
use serde_json::{Value, json};

/// A protocol error: its HTTP status and the message of `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OipError {
    pub status: u16,
    pub message: String,
    /// A 503 for a limit reached (a full queue, the memory budget) rather than a host still
    /// starting: gRPC's `RESOURCE_EXHAUSTED` instead of `UNAVAILABLE`.
    pub overloaded: bool,
}

impl OipError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            overloaded: false,
        }
    }

    /// 400: a malformed request, or one the model cannot take.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404: no such model or version.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// The body: `{"error": "..."}`.
    pub fn body(&self) -> String {
        json!({ "error": self.message }).to_string()
    }
}

/// The paths of the protocol, all under `/v2`.
pub const PREFIX: &str = "/v2";

/// One of the protocol's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2`: the server's metadata.
    Server,
    /// `GET /v2/health/live`.
    Live,
    /// `GET /v2/health/ready`.
    Ready,
    /// `POST /v2/repository/index`: the models served (Triton's model repository extension).
    Index,
    /// `GET /v2/models/{name}[/versions/{v}]`.
    Model(ModelRef),
    /// `GET /v2/models/{name}[/versions/{v}]/ready`.
    ModelReady(ModelRef),
    /// `POST /v2/models/{name}[/versions/{v}]/infer`.
    Infer(ModelRef),
}

/// A model named in a path, with the version asked for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub name: String,
    pub version: Option<String>,
}

impl Endpoint {
    /// The endpoint for a request under [`PREFIX`]; an error for a path or method the protocol
    /// does not have there.
    pub fn parse(method: &Method, path: &str) -> Result<Self, OipError> {
        let rest = path.strip_prefix(PREFIX).unwrap_or(path).trim_end_matches('/');
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let (endpoint, allowed) = match parts.as_slice() {
            [] => (Endpoint::Server, Method::GET),
            ["health", "live"] => (Endpoint::Live, Method::GET),
            ["health", "ready"] => (Endpoint::Ready, Method::GET),
            ["repository", "index"] => (Endpoint::Index, Method::POST),
            ["models", name, more @ ..] => {
                let (version, more) = match more {
                    ["versions", v, more @ ..] => (Some(v.to_string()), more),
                    _ => (None, more),
                };
                let model = ModelRef {
                    name: name.to_string(),
                    version,
                };
                match more {
                    [] => (Endpoint::Model(model), Method::GET),
                    ["ready"] => (Endpoint::ModelReady(model), Method::GET),
                    ["infer"] => (Endpoint::Infer(model), Method::POST),
                    _ => {
                        return Err(OipError::not_found(format!(
                            "no endpoint of the inference protocol at {path}"
                        )));
                    }
                }
            }
            _ => {
                return Err(OipError::not_found(format!(
                    "no endpoint of the inference protocol at {path}"
                )));
            }
        };
        // HEAD is GET without the body, as everywhere in HTTP.
        if *method == allowed || (*method == Method::HEAD && allowed == Method::GET) {
            Ok(endpoint)
        } else {
            Err(OipError::new(
                405,
                format!("{path} takes {allowed}, not {method}"),
            ))
        }
    }

    /// The model this endpoint is about, if any.
    pub fn model(&self) -> Option<&ModelRef> {
        match self {
            Endpoint::Model(m) | Endpoint::ModelReady(m) | Endpoint::Infer(m) => Some(m),
            _ => None,
        }
    }
}

/// The version string a model is served under: its card's `version`.
pub fn version(model: &LoadedModel) -> &str {
    &model.entry.card.version
}

/// Whether `asked` (a path's `/versions/{v}`) names the version being served; the error says
/// which one is.
pub fn check_version(model: &LoadedModel, asked: &ModelRef) -> Result<(), OipError> {
    match &asked.version {
        Some(v) if v != version(model) => Err(OipError::not_found(format!(
            "model `{}` has no version `{v}`; it serves version `{}`",
            asked.name,
            version(model)
        ))),
        _ => Ok(()),
    }
}

/// `GET /v2`.
pub fn server_metadata() -> String {
    json!({
        "name": "scoria",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository"],
    })
    .to_string()
}

/// The platform name Triton would give a model run by `backend`.
pub fn platform(backend: &str) -> String {
    match backend {
        "onnxruntime" => "onnxruntime_onnx".into(),
        other => format!("{other}_onnx"),
    }
}

/// A tensor's metadata, fields in the protocol's order.
#[derive(serde::Serialize)]
struct TensorMetadata<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
}

/// A model's metadata, fields in the protocol's order.
#[derive(serde::Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: [&'a str; 1],
    platform: String,
    inputs: Vec<TensorMetadata<'a>>,
    outputs: Vec<TensorMetadata<'a>>,
}

/// `GET /v2/models/{name}`: names, datatypes and shapes from the model's card (`-1`: any size).
pub fn model_metadata(model: &LoadedModel) -> String {
    fn tensors(specs: &[crate::models::TensorSpec]) -> Vec<TensorMetadata<'_>> {
        specs
            .iter()
            .map(|s| TensorMetadata {
                name: &s.name,
                datatype: codec::datatype(s.dtype),
                shape: &s.shape,
            })
            .collect()
    }
    let card = &model.entry.card;
    let metadata = ModelMetadata {
        name: &card.name,
        versions: [&card.version],
        platform: platform(model.backend),
        inputs: tensors(&card.inputs),
        outputs: tensors(&card.outputs),
    };
    serde_json::to_string(&metadata).unwrap_or_default()
}

/// `POST /v2/repository/index`: every model (and function) served, by name and version, ready.
pub fn repository_index(entries: &[(String, String)]) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(name, version)| json!({ "name": name, "version": version, "state": "READY" }))
        .collect();
    Value::Array(entries).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, version: Option<&str>) -> ModelRef {
        ModelRef {
            name: name.into(),
            version: version.map(Into::into),
        }
    }

    #[test]
    fn paths_and_methods_are_the_protocols() {
        let ok = |m: Method, p: &str| Endpoint::parse(&m, p).unwrap();
        assert_eq!(ok(Method::GET, "/v2"), Endpoint::Server);
        assert_eq!(ok(Method::GET, "/v2/"), Endpoint::Server);
        assert_eq!(ok(Method::GET, "/v2/health/live"), Endpoint::Live);
        assert_eq!(ok(Method::HEAD, "/v2/health/ready"), Endpoint::Ready);
        assert_eq!(ok(Method::POST, "/v2/repository/index"), Endpoint::Index);
        assert_eq!(ok(Method::GET, "/v2/models/m"), Endpoint::Model(model("m", None)));
        assert_eq!(
            ok(Method::GET, "/v2/models/m/versions/3/ready"),
            Endpoint::ModelReady(model("m", Some("3")))
        );
        assert_eq!(
            ok(Method::POST, "/v2/models/m/infer"),
            Endpoint::Infer(model("m", None))
        );
        let e = Endpoint::parse(&Method::GET, "/v2/models/m/infer").unwrap_err();
        assert_eq!(e.status, 405);
        let e = Endpoint::parse(&Method::GET, "/v2/nothing").unwrap_err();
        assert_eq!(e.status, 404);
        assert_eq!(e.body(), json!({"error": e.message}).to_string());
    }
}
