//! The HTTP front door: where a request enters, is routed, limited and handed to a function.
//!
//! Order of work for a request, cheapest first, all before any guest code runs:
//! open endpoints (`/healthz`, `/readyz`, `/metrics`) -> route lookup (404) -> API key
//! (401/403) -> readiness (503) -> declared body size (413) -> concurrency slot (503 with
//! `Retry-After`) -> read the body up to the limit (413) -> fresh instance of the function.

use crate::admin::AdminToken;
use crate::admission::{Admission, Rejected};
use crate::auth::{ApiKeys, Decision};
use crate::deployment::Deployments;
use crate::manifest::Manifest;
use crate::metrics::{FunctionGauges, Metrics};
use crate::response::{Body, BoxError, error, json, respond};
use crate::runtime::{MemoryLimitExceeded, RequestState};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime_wasi_http::handler::{ExpirationError, InstantiationError, TrapOrPanicError};

/// Server settings that do not come from the manifest.
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_size: u64,
    /// Requests of one function running at once.
    pub max_concurrent: usize,
    /// Requests of one function waiting for a slot; more get 503.
    pub max_queued: usize,
    /// How long a queued request may wait for a slot.
    pub queue_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// `None`: function routes are open.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// `None`: the admin API is off.
    pub admin_token: Option<Arc<AdminToken>>,
}

/// Shared server state. Functions appear once they are compiled and their models loaded;
/// until then `/readyz` says 503 and function routes answer 503.
pub struct AppState {
    manifest: Manifest,
    config: ServerConfig,
    /// The versions being served; empty until start-up is done.
    deployments: Arc<Deployments>,
    admission: HashMap<String, Admission>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(manifest: Manifest, config: ServerConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let admission = manifest
            .components
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    Admission::new(config.max_concurrent, config.max_queued),
                )
            })
            .collect();
        Arc::new(Self {
            deployments: Arc::new(Deployments::new(manifest.clone(), metrics.clone())),
            manifest,
            config,
            admission,
            metrics,
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        })
    }

    /// The versions being served, for the admin API and the file watcher.
    pub fn deployments(&self) -> &Arc<Deployments> {
        &self.deployments
    }

    /// Whether SIGTERM has started the drain.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Ready: everything loaded, and not draining.
    pub fn is_ready(&self) -> bool {
        self.deployments.is_ready() && !self.draining.load(Ordering::Acquire)
    }

    /// `(route, component)` pairs, most specific first, for logs.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.manifest
            .triggers
            .iter()
            .map(|t| (t.route.as_pattern(), t.component.clone()))
            .collect()
    }
}

/// Serve until `shutdown` resolves, then drain: become not ready, stop accepting (new
/// connections are refused), let requests in flight finish for up to the drain timeout.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving what we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(state, req, peer).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    state.draining.store(true, Ordering::Release);
    drop(listener);
    tracing::info!(timeout_s = state.config.drain_timeout.as_secs(), "draining");
    match tokio::time::timeout(state.config.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing the remaining connections"),
    }
    Ok(())
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (mut resp, component) = dispatch(&state, req, peer).await;
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let elapsed = start.elapsed();
    server_timing(&mut resp, "total", elapsed);
    if let Some(c) = component {
        state.metrics.request(c, resp.status().as_u16(), elapsed);
    }
    // Never the body, never the headers (they may carry keys).
    tracing::info!(
        request_id = id,
        %method,
        path = %path,
        component = component.unwrap_or("-"),
        status = resp.status().as_u16(),
        ms = (elapsed.as_secs_f64() * 1e5).round() / 100.0,
        "request"
    );
    resp
}

async fn dispatch(
    state: &AppState,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Response<Body>, Option<&str>) {
    let path = req.uri().path();
    match path {
        "/healthz" => return (json(StatusCode::OK, r#"{"status":"ok"}"#.into()), None),
        "/readyz" => {
            let resp = if state.is_ready() {
                json(StatusCode::OK, r#"{"status":"ready"}"#.into())
            } else if state.draining.load(Ordering::Acquire) {
                error(StatusCode::SERVICE_UNAVAILABLE, "draining", "shutting down")
            } else {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "functions or models are still loading",
                )
            };
            return (resp, None);
        }
        "/metrics" => {
            let gauges: Vec<FunctionGauges> = state
                .admission
                .iter()
                .map(|(f, a)| FunctionGauges {
                    function: f.clone(),
                    in_use: a.in_use(),
                    queued: a.queued(),
                })
                .collect();
            let text = state.metrics.render(state.is_ready(), &gauges);
            return (
                respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
                None,
            );
        }
        _ => {}
    }
    if path.starts_with("/admin/")
        && let Some(token) = &state.config.admin_token
    {
        return (crate::admin::handle(&state.deployments, token, req).await, None);
    }
    let Some(trigger) = state.manifest.route(path) else {
        let routes: Vec<String> = state
            .manifest
            .triggers
            .iter()
            .map(|t| t.route.as_pattern())
            .collect();
        let msg = format!("no function serves {path}; routes: {}", routes.join(", "));
        return (error(StatusCode::NOT_FOUND, "not_found", &msg), None);
    };
    let component = trigger.component.as_str();
    let done = |r: Response<Body>| (r, Some(component));

    if let Some(keys) = &state.config.api_keys {
        let unauthorized = |code: &str, msg: &str| {
            let mut r = error(StatusCode::UNAUTHORIZED, code, msg);
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        };
        match keys.check(req.headers(), component) {
            Decision::Allowed => {}
            Decision::Missing => {
                return done(unauthorized(
                    "missing_api_key",
                    "send an API key as `Authorization: Bearer <key>` or `x-api-key: <key>`",
                ));
            }
            Decision::Invalid => return done(unauthorized("invalid_api_key", "the API key is not valid")),
            Decision::Forbidden => {
                let msg = format!("the API key is not allowed to call `{component}`");
                return done(error(StatusCode::FORBIDDEN, "forbidden", &msg));
            }
        }
    }

    let Some(function) = state.deployments.function(component) else {
        return done(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the function is still loading; retry shortly",
        ));
    };

    let limit = state.config.max_body_size;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the request body is over the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return done(too_large());
    }

    // Held until the function has answered, so bodies in memory are bounded too.
    let waited = Instant::now();
    let _slot = match state.admission.get(component) {
        Some(a) => match a.admit(state.config.queue_timeout).await {
            Ok(slot) => Some(slot),
            Err(why) => {
                let msg = match why {
                    Rejected::QueueFull => {
                        format!("`{component}` is at its concurrency limit and its queue is full")
                    }
                    Rejected::QueueTimeout => {
                        format!("`{component}` stayed at its concurrency limit; gave up waiting")
                    }
                };
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", &msg);
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return done(r);
            }
        },
        None => None,
    };

    let queued = waited.elapsed();
    let reading = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limit as usize).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return done(too_large()),
        Err(e) => {
            let msg = format!("the request body could not be read: {e}");
            return done(error(StatusCode::BAD_REQUEST, "body_unreadable", &msg));
        }
    };

    let body_read = reading.elapsed();
    let guest_req = match guest_request(parts, body, state, &trigger.route.as_pattern(), peer) {
        Ok(r) => r,
        Err(e) => return done(error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())),
    };
    let request = Arc::new(RequestState::default());
    let mut resp = match function.handler.handle(request.clone(), guest_req).await {
        Ok(r) => r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
        Err(e) => guest_failure(component, &e, &request),
    };
    // Where the host's time went; the rest of `total` is the guest's own work and the hand-offs
    // between it and the host.
    let steps = [
        ("queue", Some(queued)),
        ("body", Some(body_read)),
        ("instance", request.instance()),
        ("inference", Some(request.inference.get())),
    ];
    for (step, took) in steps {
        if let Some(took) = took {
            server_timing(&mut resp, step, took);
        }
    }
    done(resp)
}

/// Append `step;dur=<ms>` to the response's `Server-Timing`.
fn server_timing(resp: &mut Response<Body>, step: &str, took: Duration) {
    let value = format!("{step};dur={:.3}", took.as_secs_f64() * 1e3);
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append("server-timing", v);
    }
}

/// Rebuild the request for the guest: absolute URI (wasi-http wants scheme and authority) and
/// Spin's informational headers, so Spin components see what they would under `spin up`.
fn guest_request(
    mut parts: http::request::Parts,
    body: Bytes,
    state: &AppState,
    route: &str,
    peer: SocketAddr,
) -> anyhow::Result<Request<wasmtime_wasi_http::WasiBody>> {
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.listen.to_string());
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = http::Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(pq.as_str())
        .build()?;
    let base = route.trim_end_matches("/...");
    let path_info = parts.uri.path().strip_prefix(base).unwrap_or("").to_string();
    for (k, v) in [
        ("spin-full-url", parts.uri.to_string()),
        ("spin-path-info", path_info),
        ("spin-matched-route", route.to_string()),
        ("spin-raw-component-route", route.to_string()),
        ("spin-component-route", base.to_string()),
        ("spin-base-path", "/".to_string()),
        ("spin-client-addr", peer.to_string()),
    ] {
        parts.headers.insert(k, HeaderValue::from_str(&v)?);
    }
    let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
    Ok(Request::from_parts(parts, body))
}

/// Map a failed invocation to a status: 504 for the deadline, 503 when no instance could be
/// made (pool exhausted), 500 for a trap. The host keeps serving in every case.
fn guest_failure(component: &str, e: &wasmtime::Error, request: &RequestState) -> Response<Body> {
    if request.timed_out() || e.downcast_ref::<ExpirationError>().is_some() {
        tracing::warn!(component, "request timed out");
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the function did not answer within the request timeout",
        );
    }
    if let Some(inst) = e.downcast_ref::<InstantiationError<Arc<RequestState>>>() {
        tracing::error!(component, error = %format!("{:#}", inst.error), "instantiation failed");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "instance_unavailable",
            "no instance could be created; retry shortly",
        );
    }
    if let Some(m) = request
        .memory_exceeded()
        .or_else(|| e.downcast_ref::<MemoryLimitExceeded>())
    {
        tracing::warn!(component, "memory limit exceeded");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "memory_limit_exceeded",
            &m.to_string(),
        );
    }
    let detail = format!("{e:#}");
    tracing::error!(component, error = %detail, "function failed");
    // The handler hands back traps as a lost worker; their cause is in the log.
    let reason = if e.downcast_ref::<TrapOrPanicError>().is_some() {
        "the function trapped (the host log has the trap)".to_string()
    } else {
        e.downcast_ref::<wasmtime::Trap>()
            .map(|t| t.to_string())
            .unwrap_or_else(|| e.root_cause().to_string())
    };
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "function_failed",
        &format!("function `{component}` failed: {reason}"),
    )
}
