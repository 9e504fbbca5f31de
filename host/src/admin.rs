//! The admin API for hot swaps, off unless `--admin-token-file` is given.
//!
//! - `GET  /admin/functions`: id, digest, loaded at, previous digest, for every function;
//! - `PUT  /admin/functions/<id>`: new component bytes (`application/wasm`); compiled and
//!   validated off the request path, then swapped in atomically;
//! - `POST /admin/functions/<id>/rollback`: back to the previous version;
//! - the same for models under `/admin/models/<name>`: `PUT` takes the new weights (ONNX
//!   bytes, same card), loaded beside the serving version and then swapped in.
//!
//! Every call needs `Authorization: Bearer <token>`, compared in constant time. Uploads are
//! bounded by `--admin-max-upload-mib`: a declared size over it gets 413 before any byte is
//! read. Refusals are short and never repeat the upload.

use crate::auth::bearer_token;
use crate::deployment::{Deployments, SwapError};
use crate::nn::LoadedModel;
use crate::response::{Body, declared_length, error, json};
use crate::runtime::Function;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The default of `--admin-max-upload-mib` (ResNet-152 in f32 is 240 MB).
pub const DEFAULT_MAX_UPLOAD_MIB: usize = 1024;

/// Longest refusal message sent back or logged: a compiler's or loader's error can quote
/// its input, and the input is the client's upload.
const MAX_MESSAGE: usize = 400;

/// The admin API's settings.
pub struct AdminConfig {
    pub token: AdminToken,
    /// Largest component or model accepted by `PUT`, in bytes.
    pub max_upload: usize,
}

/// The admin bearer token (its digest; the token itself is not kept).
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Read the token from the first line of `file`.
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{}: cannot read the admin token: {e}", file.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        anyhow::ensure!(
            token.len() >= 16,
            "{}: the admin token must be at least 16 characters; generate one with `openssl rand -hex 24`",
            file.display()
        );
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    fn accepts(&self, headers: &http::HeaderMap) -> bool {
        let Some(presented) = bearer_token(headers) else {
            return false;
        };
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&d).into()
    }
}

/// Serve one admin request.
pub async fn handle(state: &Deployments, config: &AdminConfig, req: Request<Incoming>) -> Response<Body> {
    if !config.token.accepts(req.headers()) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <admin token>`",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["functions"]) => list(state),
        (Method::PUT, ["functions", id]) => {
            let id = id.to_string();
            let bytes = match read_body(req, config.max_upload, "component").await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match state.deploy(&id, bytes).await {
                Ok((new, old)) => {
                    tracing::info!(component = %id, digest = %new.digest, previous = ?old.as_ref().map(|o| &o.digest), "function swapped");
                    swapped(&id, &new, old.as_ref())
                }
                Err(e) => swap_error(&id, e),
            }
        }
        (Method::GET, ["models"]) => list_models(state),
        (Method::PUT, ["models", name]) => {
            let name = name.to_string();
            let bytes = match read_body(req, config.max_upload, "model").await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match state.deploy_model(&name, bytes).await {
                Ok((new, old)) => {
                    tracing::info!(model = %name, digest = %new.digest, previous = %old.digest, "model swapped");
                    model_swapped(&new, Some(&old))
                }
                Err(e) => swap_error(&name, e),
            }
        }
        (Method::POST, ["models", name, "rollback"]) => match state.rollback_model(name) {
            Ok((now, before)) => {
                tracing::info!(model = %name, digest = %now.digest, "model rolled back");
                model_swapped(&now, Some(&before))
            }
            Err(e) => swap_error(name, e),
        },
        (Method::POST, ["functions", id, "rollback"]) => match state.rollback(id) {
            Ok((now, before)) => {
                tracing::info!(component = %id, digest = %now.digest, "function rolled back");
                swapped(id, &now, Some(&before))
            }
            Err(e) => swap_error(id, e),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin routes: GET /admin/functions, PUT /admin/functions/<id>, POST /admin/functions/<id>/rollback, \
             and the same under /admin/models/<name>",
        ),
    }
}

/// The whole body of an upload, or the 413 answer for one over `limit` (at once when its
/// declared size is over, without reading it).
async fn read_body(req: Request<Incoming>, limit: usize, what: &str) -> Result<bytes::Bytes, Response<Body>> {
    let too_large = || {
        let msg = format!("the {what} is over the upload limit of {limit} bytes (--admin-max-upload-mib)");
        error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &msg)
    };
    if declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => {
            let msg = format!("cannot read the {what}: {e}");
            Err(error(StatusCode::BAD_REQUEST, "body_unreadable", &msg))
        }
    }
}

fn list(state: &Deployments) -> Response<Body> {
    let functions: Vec<serde_json::Value> = state
        .deployed()
        .iter()
        .map(|(id, current, previous)| {
            serde_json::json!({
                "id": id,
                "digest": current.digest,
                "loaded_at": unix_seconds(current),
                "previous_digest": previous.as_ref().map(|p| &p.digest),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "functions": functions }).to_string(),
    )
}

fn list_models(state: &Deployments) -> Response<Body> {
    let models: Vec<serde_json::Value> = state
        .models()
        .iter()
        .map(|(current, previous)| model_json(current, previous.as_deref()))
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "models": models }).to_string(),
    )
}

fn model_swapped(now: &LoadedModel, before: Option<&LoadedModel>) -> Response<Body> {
    json(StatusCode::OK, model_json(now, before).to_string())
}

fn model_json(now: &LoadedModel, before: Option<&LoadedModel>) -> serde_json::Value {
    serde_json::json!({
        "name": now.entry.card.name,
        "backend": now.backend,
        "device": now.device,
        "digest": now.digest,
        "loaded_at": seconds(now.loaded_at),
        "previous_digest": before.map(|b| &b.digest),
    })
}

fn swapped(id: &str, now: &Function, before: Option<&Function>) -> Response<Body> {
    let body = serde_json::json!({
        "id": id,
        "digest": now.digest,
        "loaded_at": unix_seconds(now),
        "previous_digest": before.map(|b| &b.digest),
    });
    json(StatusCode::OK, body.to_string())
}

fn swap_error(id: &str, e: SwapError) -> Response<Body> {
    let (status, code) = match &e {
        SwapError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        SwapError::UnknownComponent => (StatusCode::NOT_FOUND, "unknown_component"),
        SwapError::UnknownModel => (StatusCode::NOT_FOUND, "unknown_model"),
        SwapError::NoPrevious => (StatusCode::CONFLICT, "no_previous_version"),
        SwapError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component"),
        SwapError::InvalidModel(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_model"),
    };
    let why = shortened(&e.to_string());
    tracing::warn!(component = %id, error = %why, "swap refused; the current version keeps serving");
    error(status, code, &format!("`{id}`: {why}"))
}

/// `text` cut to [`MAX_MESSAGE`] bytes on a character boundary, marked when cut.
fn shortened(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

fn unix_seconds(f: &Function) -> u64 {
    seconds(f.loaded_at)
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = shortened(&long);
        assert!(cut.len() < MAX_MESSAGE + 40, "{}", cut.len());
        assert!(cut.ends_with("(2000 bytes in all)"), "{cut}");
        assert_eq!(shortened("short"), "short");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let token = AdminToken::load(&file).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let mut h = http::HeaderMap::new();
            let v = format!("{scheme} 0123456789abcdef0123");
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            assert!(token.accepts(&h), "{scheme}");
        }
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Basic 0123456789abcdef0123".parse().unwrap(),
        );
        assert!(!token.accepts(&h));
    }
}
