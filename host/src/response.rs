//! The responses the host writes itself (probes, metrics, errors, the admin API), in one
//! body type and one error format shared with the functions; and the declared length of a
//! request body, which decides a 413 before any byte of it is read.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// The error type of a response body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the server writes.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A JSON response with the given status.
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "application/json", body)
}

/// A complete response with a body of the given content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The error body shared with the functions: `{"error": {"code": "...", "message": "..."}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    json(status, body.to_string())
}

/// A request's declared body length (`Content-Length`), if it has a valid one: a body over
/// the limit gets its 413 from this alone, before any byte of it is read.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
