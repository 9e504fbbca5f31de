//! `static-files`: the files of a read-only `files` mount, over HTTP GET. Scoria's demo page is
//! served this way, as a component routed in `spin.toml` like any function, so that it runs the
//! same under `scoria up` and `spin up` and the host has no special code for it.
//!
//! The file is the request's path below its route (Spin's `spin-path-info`), under
//! `SCORIA_STATIC_ROOT` (default `/www`); an empty path is `index.html`. Only GET and HEAD
//! are answered; a missing file is a JSON 404 like every other Scoria error. Answers carry
//! `Cache-Control: no-cache`, so a swapped page is seen on the next load.

use bytes::Bytes;
use http_body_util::Full;
use scoria_guest::error::ApiError;
use scoria_guest::{mount, request};
use spin_sdk::http::{HeaderValue, Method, Request, Response, StatusCode};

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response<Full<Bytes>> {
    match serve(&req) {
        Ok(r) => r,
        Err(e) => {
            let body = Full::new(Bytes::from(e.to_json()));
            let mut r = Response::new(body);
            *r.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
    }
}

fn serve(req: &Request) -> Result<Response<Full<Bytes>>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            "static files answer GET and HEAD",
        ));
    }
    let info = req
        .headers()
        .get("spin-path-info")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| req.uri().path());
    let Some(file) = file_name(info) else {
        return Err(not_found(info));
    };
    let root = request::env_or("SCORIA_STATIC_ROOT", "/www".to_string())?;
    let body = mount::read(&format!("{}/{file}", root.trim_end_matches('/'))).map_err(|_| not_found(info))?;
    let length = HeaderValue::from(body.len());
    let body = if req.method() == Method::HEAD {
        Vec::new()
    } else {
        body
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let headers = r.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type(file)));
    headers.insert("content-length", length);
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(r)
}

/// The file a path below the route names: `index.html` for none; `None` for a path that
/// climbs out (`..`) or names a hidden file.
fn file_name(info: &str) -> Option<&str> {
    let rel = info.trim_start_matches('/');
    if rel.is_empty() {
        return Some("index.html");
    }
    let safe = rel.split('/').all(|s| !s.is_empty() && !s.starts_with('.'));
    safe.then_some(rel)
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no file at `{path}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_files_and_never_climb_out() {
        assert_eq!(file_name(""), Some("index.html"));
        assert_eq!(file_name("/"), Some("index.html"));
        assert_eq!(file_name("/app.js"), Some("app.js"));
        assert_eq!(file_name("/img/logo.svg"), Some("img/logo.svg"));
        for bad in ["/../secret", "/a/../../b", "/.env", "/a//b"] {
            assert_eq!(file_name(bad), None, "{bad}");
        }
    }
}
