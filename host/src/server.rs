//! The HTTP front door: where a request enters, is routed, limited and handed to a function.
//!
//! Order of work for a request, cheapest first, all before any guest code runs:
//! open endpoints (`/healthz`, `/readyz`, `/metrics`) -> route lookup (404) -> API key
//! (401/403) -> readiness (503) -> declared body size (413) -> read the body, within its
//! deadline (408), its size limit (413) and the memory budget (503) -> concurrency slot (503
//! with `Retry-After`) -> fresh instance of the function. A slow client so costs a connection
//! and some budget, never a slot that others are waiting for.
//!
//! Connections are bounded by [`crate::connection`]: how many, how long idle, how long to
//! send headers. Every answer that leaves a request body unread closes its connection, so the
//! next request on it cannot be read from the middle of that body.

use crate::admin::AdminConfig;
use crate::admission::{Admission, Rejected};
use crate::auth::{ApiKeys, Decision};
use crate::budget::{MemoryBudget, Reservation};
use crate::connection::{Clock, Connections, PROBE_TIMEOUT, Watched};
use crate::deployment::Deployments;
use crate::manifest::Manifest;
use crate::metrics::{FunctionGauges, HostGauges, Metrics};
use crate::nn::{LoadedModel, Tensor};
use crate::oip::codec::{InferRequest, OutTensor};
use crate::oip::{Endpoint, ModelRef, OipError};
use crate::response::{Body, BoxError, declared_length, error, json, respond};
use crate::runtime::{MemoryLimitExceeded, RequestState};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
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
    /// How long a connection may stay open with no request, from its opening or its last answer.
    pub idle_timeout: Duration,
    /// Time a request's headers have to arrive, from their first byte.
    pub header_timeout: Duration,
    /// Time a request's body has to arrive once its headers are in.
    pub body_timeout: Duration,
    /// Connections served at once; see [`crate::connection`] for what happens past it.
    pub max_connections: usize,
    /// Request bodies are held against it while their request runs, beside guest memories.
    pub budget: Arc<MemoryBudget>,
    /// `None`: function routes are open.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// `None`: the admin API is off.
    pub admin: Option<Arc<AdminConfig>>,
}

/// The endpoints that answer on every connection, without a key.
const OPEN_ENDPOINTS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

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
    /// Open connections, and the cap on them.
    connections: Arc<Connections>,
}

impl AppState {
    pub fn new(manifest: Manifest, config: ServerConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        // One queue per function, and one per model for the inference protocol's requests.
        let admission = manifest
            .components
            .keys()
            .cloned()
            .chain(manifest.models().iter().map(|m| oip_key(m)))
            .chain(
                manifest
                    .components
                    .values()
                    .filter(|c| c.inference.is_some())
                    .map(|c| oip_key(&c.id)),
            )
            .map(|key| (key, Admission::new(config.max_concurrent, config.max_queued)))
            .collect();
        Arc::new(Self {
            deployments: Arc::new(Deployments::new(manifest.clone(), metrics.clone())),
            connections: Connections::new(config.max_connections, metrics.clone()),
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
    let mut served = hyper::server::conn::http1::Builder::new();
    served.keep_alive(true);
    let mut probe_only = hyper::server::conn::http1::Builder::new();
    probe_only.keep_alive(false);
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
        let place = state.connections.admit();
        let _ = stream.set_nodelay(true);
        let probes_only = place.probe_only();
        let (builder, clock) = if probes_only {
            (&probe_only, Clock::new(PROBE_TIMEOUT, PROBE_TIMEOUT))
        } else {
            let c = &state.config;
            (&served, Clock::new(c.idle_timeout, c.header_timeout))
        };
        let served_state = state.clone();
        let served_clock = clock.clone();
        let service = hyper::service::service_fn(move |req| {
            let (state, clock) = (served_state.clone(), served_clock.clone());
            async move {
                clock.request_started();
                let resp = handle(state, req, peer, probes_only).await;
                clock.request_answered();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let io = TokioIo::new(Watched::new(stream, clock.clone()));
        let conn = graceful.watch(builder.serve_connection(io, service));
        let task = tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                },
                () = clock.expired() => tracing::debug!(%peer, "connection closed: idle or headers too slow"),
            }
            drop(place);
        });
        if probes_only {
            state.connections.track_probe(task.abort_handle());
        }
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

async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
    probes_only: bool,
) -> Response<Body> {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let has_body = !req.body().is_end_stream();
    let mut body_read = false;
    let (mut resp, component) = if probes_only && !OPEN_ENDPOINTS.contains(&path.as_str()) {
        let msg = "the host is at its connection limit (--max-connections); retry shortly";
        (overloaded("too_many_connections", msg), None)
    } else {
        dispatch(&state, req, peer, &mut body_read).await
    };
    if has_body && !body_read {
        // The rest of the body is still on the connection: it cannot carry another request.
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
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

/// The answer for a request its API key does not let through (`what` is what it asked for).
fn refusal(decision: Decision, what: &str) -> Option<Response<Body>> {
    let refused = refused_key(decision, what)?;
    let status = refused.status;
    let mut r = refused.scoria();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    Some(r)
}

/// Why an API key decision refuses a request for `what`, in words both error forms carry.
fn refused_key(decision: Decision, what: &str) -> Option<Refused> {
    let (status, code, message) = match decision {
        Decision::Allowed => return None,
        Decision::Missing => (
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send an API key as `Authorization: Bearer <key>` or `x-api-key: <key>`".to_string(),
        ),
        Decision::Invalid => (
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is not valid".to_string(),
        ),
        Decision::Forbidden => (
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the API key is not allowed to call `{what}`"),
        ),
    };
    Some(Refused::new(status, code, message))
}

/// A 503 that tells the client when to come back.
fn overloaded(code: &str, msg: &str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, code, msg);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Answer a request; `body_read` is set once its whole body has been read.
async fn dispatch<'a>(
    state: &'a AppState,
    req: Request<Incoming>,
    peer: SocketAddr,
    body_read: &mut bool,
) -> (Response<Body>, Option<&'a str>) {
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
            let host = HostGauges {
                open_connections: state.connections.open(),
                memory_reserved: state.config.budget.used(),
                memory_budget: state.config.budget.limit(),
            };
            let text = state.metrics.render(state.is_ready(), &host, &gauges);
            return (
                respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
                None,
            );
        }
        _ => {}
    }
    if path == crate::oip::PREFIX || path.starts_with("/v2/") {
        return serve_oip(state, req, body_read).await;
    }
    if path.starts_with("/admin/")
        && let Some(admin) = &state.config.admin
    {
        let resp = crate::admin::handle(&state.deployments, admin, req).await;
        // Uploads are read only by calls that get this far.
        *body_read = resp.status().is_success();
        return (resp, None);
    }
    if path == crate::catalog::PATH {
        if let Some(keys) = &state.config.api_keys
            && let Some(refused) = refusal(keys.check_any(req.headers()), "the catalog")
        {
            return (refused, None);
        }
        let text = crate::catalog::render(&state.manifest, &state.deployments, state.is_ready());
        return (json(StatusCode::OK, text), None);
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

    let public = state.manifest.components.get(component).is_some_and(|c| c.public);
    if let Some(keys) = &state.config.api_keys
        && !public
        && let Some(refused) = refusal(keys.check(req.headers(), component), component)
    {
        return done(refused);
    }

    let Some(function) = state.deployments.function(component) else {
        return done(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the function is still loading; retry shortly",
        ));
    };

    let mut reserved = state.config.budget.reservation();
    let (parts, body, read_in) = match receive(state, req, &mut reserved).await {
        Ok(received) => received,
        Err(refused) => return done(refused.scoria()),
    };
    *body_read = true;
    // Held until the function has answered.
    let (_slot, queued) = match admit(state, component).await {
        Ok(admitted) => admitted,
        Err(refused) => return done(refused.scoria()),
    };

    let guest_req = match guest_request(parts, body, state, &trigger.route.as_pattern(), peer) {
        Ok(r) => r,
        Err(e) => return done(error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())),
    };
    let request = Arc::new(RequestState::default());
    let mut resp = match function.handler.handle(request.clone(), guest_req).await {
        Ok(r) => r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
        Err(e) => guest_failure(component, &e, &request),
    };
    drop(reserved);
    // Where the host's time went; the rest of `total` is the guest's own work and the hand-offs
    // between it and the host.
    let steps = [
        ("queue", Some(queued)),
        ("body", Some(read_in)),
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

/// The inference protocol's work that both its transports share (REST here, gRPC in
/// [`crate::grpc`]): keys, the model, its admission queue, the run and its metrics.
impl AppState {
    /// Whether `headers` carry a key that may use `model` (or, without one, any key at all);
    /// always, without `--api-keys-file`.
    pub(crate) fn oip_authorize(
        &self,
        headers: &http::HeaderMap,
        model: Option<&str>,
    ) -> Result<(), OipError> {
        let Some(keys) = &self.config.api_keys else {
            return Ok(());
        };
        let decision = match model {
            Some(m) => keys.check(headers, m),
            None => keys.check_any(headers),
        };
        match refused_key(decision, model.unwrap_or("the server's metadata")) {
            None => Ok(()),
            Some(refused) => Err(refused.into_oip()),
        }
    }

    /// The loaded models; 503 while the host starts.
    fn oip_registry(&self) -> Result<&crate::nn::ModelRegistry, OipError> {
        self.deployments
            .registry()
            .ok_or_else(|| OipError::new(503, "the server is still loading its models"))
    }

    /// The model a request names, at the version it asks for; 503 while the host starts.
    pub(crate) fn oip_model(&self, m: &ModelRef) -> Result<Arc<LoadedModel>, OipError> {
        let model = self
            .oip_registry()?
            .get(&m.name)
            .ok_or_else(|| OipError::not_found(format!("no model `{}` is served here", m.name)))?;
        crate::oip::check_version(&model, m)?;
        Ok(model)
    }

    /// What a request's model name stands for: a model of the repository, or else a function
    /// the manifest lets be called as one; at the version asked for.
    pub(crate) fn oip_target(&self, m: &ModelRef) -> Result<OipTarget, OipError> {
        if self.oip_registry()?.get(&m.name).is_some() {
            return self.oip_model(m).map(OipTarget::Model);
        }
        let decl = self
            .manifest
            .components
            .get(&m.name)
            .and_then(|c| c.inference.clone())
            .ok_or_else(|| OipError::not_found(format!("no model `{}` is served here", m.name)))?;
        let function = self
            .deployments
            .function(&m.name)
            .ok_or_else(|| OipError::new(503, "the function is still loading"))?;
        let version = function_version(&function);
        if let Some(v) = &m.version
            && *v != version
        {
            return Err(OipError::not_found(format!(
                "function `{}` has no version `{v}`; it serves version `{version}`",
                m.name
            )));
        }
        Ok(OipTarget::Function {
            component: m.name.clone(),
            decl,
            version,
        })
    }

    /// Every model and function served, with its version (empty while the host starts).
    pub(crate) fn oip_index(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .deployments
            .registry()
            .map(|r| {
                r.versions()
                    .into_iter()
                    .map(|(m, _)| (m.entry.card.name.clone(), crate::oip::version(&m).to_string()))
                    .collect()
            })
            .unwrap_or_default();
        for c in self
            .manifest
            .components
            .values()
            .filter(|c| c.inference.is_some())
        {
            if let Some(f) = self.deployments.function(&c.id) {
                all.push((c.id.clone(), function_version(&f)));
            }
        }
        all
    }

    /// Run a parsed request on what `m` names: the model's outputs, or the function's answers
    /// as tensors; with the version that answered.
    pub(crate) async fn oip_infer(
        &self,
        m: &ModelRef,
        request: &mut InferRequest,
    ) -> Result<(String, Vec<(String, OutTensor)>), OipError> {
        match self.oip_target(m)? {
            OipTarget::Model(model) => {
                if let Some((name, _)) = request.bytes_inputs.first() {
                    return Err(OipError::bad_request(format!(
                        "input `{name}`: datatype BYTES is not one any model here takes"
                    )));
                }
                let (outputs, _, _) = self.oip_run(&model, std::mem::take(&mut request.inputs)).await?;
                let outputs = outputs.into_iter().map(|(n, t)| (n, t.into())).collect();
                Ok((crate::oip::version(&model).to_string(), outputs))
            }
            OipTarget::Function {
                component,
                decl,
                version,
            } => {
                let bodies = crate::oip::function::bodies(&component, &decl, request)?;
                let calls = bodies
                    .into_iter()
                    .map(|body| self.call_function(&component, &decl.content_type, body));
                let answers = futures::future::try_join_all(calls).await?;
                let outputs = crate::oip::function::outputs(&component, &decl, &answers)?;
                Ok((version, outputs))
            }
        }
    }

    /// One request to `component` with `body`, as through its route (keys aside: the caller
    /// was let through for it), in a slot of its own queue; its JSON answer.
    async fn call_function(
        &self,
        component: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<serde_json::Value, OipError> {
        let trigger = self
            .manifest
            .triggers
            .iter()
            .find(|t| t.component == component)
            .ok_or_else(|| OipError::not_found(format!("function `{component}` has no route")))?;
        let path = match &trigger.route {
            crate::manifest::Route::Exact(p) => p.clone(),
            crate::manifest::Route::Prefix(p) => format!("{p}/"),
        };
        let function = self
            .deployments
            .function(component)
            .ok_or_else(|| OipError::new(503, "the function is still loading"))?;
        let (_slot, _) = admit(self, component).await.map_err(Refused::into_oip)?;
        let internal = |e: String| OipError::new(500, format!("function `{component}`: {e}"));
        let (parts, ()) = Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::HOST, self.config.listen.to_string())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(())
            .map_err(|e| internal(e.to_string()))?
            .into_parts();
        let guest_req = guest_request(parts, body, self, &trigger.route.as_pattern(), self.config.listen)
            .map_err(|e| internal(e.to_string()))?;
        let request = Arc::new(RequestState::default());
        let resp = match function.handler.handle(request.clone(), guest_req).await {
            Ok(r) => r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
            Err(e) => guest_failure(component, &e, &request),
        };
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| internal(e.to_string()))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| internal(format!("answered {status} without JSON")))?;
        if status.is_success() {
            return Ok(answer);
        }
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("failed")
            .to_string();
        let status = if status.is_client_error() {
            400
        } else {
            status.as_u16()
        };
        Err(OipError {
            status,
            message: format!("function `{component}`: {message}"),
            overloaded: status == 503,
        })
    }

    /// Run `inputs` on `model` in a slot of its admission queue, and count it in the metrics;
    /// the outputs, the wait for the slot and the run's time.
    pub(crate) async fn oip_run(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<(Vec<(String, Tensor)>, Duration, Duration), OipError> {
        let name = &model.entry.card.name;
        let (_slot, queued) = admit(self, &oip_key(name)).await.map_err(Refused::into_oip)?;
        let registry = self.oip_registry()?;
        let started = Instant::now();
        let result = model.run(registry.pool(), inputs).await;
        let ran = started.elapsed();
        match result {
            Ok((outputs, run)) => {
                self.metrics.inference(name, model.backend, &run);
                Ok((outputs, queued, ran))
            }
            Err(e) => {
                let status = match e.kind {
                    crate::nn::ErrorKind::InvalidArgument | crate::nn::ErrorKind::TooLarge => 400,
                    _ => 500,
                };
                Err(OipError::new(status, e.message))
            }
        }
    }

    /// Count and log an inference-protocol request that ran on `model`, as `handle` does for
    /// the REST ones (gRPC requests do not pass through it).
    pub(crate) fn oip_record(&self, model: &str, status: u16, elapsed: Duration) -> Option<&str> {
        let (key, _) = self.admission.get_key_value(&oip_key(model))?;
        self.metrics.request(key, status, elapsed);
        Some(key)
    }
}

/// What a model name of the inference protocol stands for.
pub(crate) enum OipTarget {
    /// A model of the repository, run as it is.
    Model(Arc<LoadedModel>),
    /// A function the manifest lets be called as a model
    /// (`[component.<id>.tool.scoria.inference]`), at the version being served.
    Function {
        component: String,
        decl: crate::manifest::InferenceDecl,
        version: String,
    },
}

/// The version a function answers the inference protocol under: its component's digest, short,
/// so that a hot swap shows as a new version.
fn function_version(f: &crate::runtime::Function) -> String {
    f.digest[..12].to_string()
}

/// The admission and metrics key of a model's inference-protocol requests.
fn oip_key(model: &str) -> String {
    format!("oip:{model}")
}

/// The protocol's error response: `{"error": "..."}` with its status.
fn oip_error(e: OipError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    Refused::new(status, "", e.message).oip()
}

/// A request of the Open Inference Protocol (`/v2/...`): the protocol's endpoints and error
/// form, through the same keys, body limits, admission, batching and metrics as a function.
async fn serve_oip<'a>(
    state: &'a AppState,
    req: Request<Incoming>,
    body_read: &mut bool,
) -> (Response<Body>, Option<&'a str>) {
    let endpoint = match Endpoint::parse(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err(e) => return (oip_error(e), None),
    };
    // Liveness and readiness answer without a key, as /healthz and /readyz do.
    match endpoint {
        Endpoint::Live => return (json(StatusCode::OK, r#"{"live":true}"#.into()), None),
        Endpoint::Ready if state.is_ready() => {
            return (json(StatusCode::OK, r#"{"ready":true}"#.into()), None);
        }
        Endpoint::Ready => {
            let e = OipError::new(503, "the server is not ready");
            return (oip_error(e), None);
        }
        _ => {}
    }
    if let Err(e) = state.oip_authorize(req.headers(), endpoint.model().map(|m| m.name.as_str())) {
        let mut r = oip_error(e);
        if r.status() == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return (r, None);
    }
    let m = match endpoint {
        Endpoint::Server => return (json(StatusCode::OK, crate::oip::server_metadata()), None),
        Endpoint::Index => {
            let index = crate::oip::repository_index(&state.oip_index());
            return (json(StatusCode::OK, index), None);
        }
        Endpoint::Model(m) => {
            let r = state.oip_target(&m).map(|target| {
                let text = match target {
                    OipTarget::Model(model) => crate::oip::model_metadata(&model),
                    OipTarget::Function {
                        component,
                        decl,
                        version,
                    } => crate::oip::function::metadata(&component, &decl, &version),
                };
                json(StatusCode::OK, text)
            });
            return (r.unwrap_or_else(oip_error), None);
        }
        Endpoint::ModelReady(m) => {
            let r = state.oip_target(&m).map(|_| {
                let body = serde_json::json!({ "name": m.name, "ready": true }).to_string();
                json(StatusCode::OK, body)
            });
            return (r.unwrap_or_else(oip_error), None);
        }
        Endpoint::Infer(m) => m,
        Endpoint::Live | Endpoint::Ready => unreachable!("answered above"),
    };
    if let Err(e) = state.oip_target(&m) {
        return (oip_error(e), None);
    }
    let Some((key, _)) = state.admission.get_key_value(&oip_key(&m.name)) else {
        return (
            oip_error(OipError::not_found(format!(
                "no model `{}` is served here",
                m.name
            ))),
            None,
        );
    };
    let done = |r: Response<Body>| (r, Some(key.as_str()));

    let mut reserved = state.config.budget.reservation();
    let (parts, body, read_in) = match receive(state, req, &mut reserved).await {
        Ok(received) => received,
        Err(refused) => return done(refused.oip()),
    };
    *body_read = true;
    let header_length = parts
        .headers
        .get(crate::oip::codec::HEADER_LENGTH)
        .map(|v| v.to_str().unwrap_or("?"));
    let mut request = match crate::oip::codec::parse(&body, header_length) {
        Ok(r) => r,
        Err(e) => return done(oip_error(e)),
    };
    let started = Instant::now();
    let (version, outputs) = match state.oip_infer(&m, &mut request).await {
        Ok(ran) => ran,
        Err(e) => return done(oip_error(e)),
    };
    let inference = started.elapsed();
    let mut resp = match crate::oip::codec::encode(&m.name, &version, &request, outputs) {
        Ok(encoded) => {
            let mut r = Response::new(
                Full::new(encoded.body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(encoded.content_type),
            );
            if let Some(n) = encoded.header_length {
                r.headers_mut()
                    .insert(crate::oip::codec::HEADER_LENGTH, HeaderValue::from(n));
            }
            r
        }
        Err(e) => oip_error(e),
    };
    drop(reserved);
    for (step, took) in [("body", read_in), ("run", inference)] {
        server_timing(&mut resp, step, took);
    }
    done(resp)
}

/// Why a request body was not read.
enum BodyError {
    /// Over `--max-body-size`.
    TooLarge,
    /// The memory budget could not hold it.
    Budget,
    /// The connection failed mid-body.
    Unreadable(String),
}

/// A request refused before its work ran, in words both error forms can carry: Scoria's
/// (`{"error": {"code", "message"}}`) and the inference protocol's (`{"error": "..."}`).
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    fn with_retry(mut r: Response<Body>, status: StatusCode) -> Response<Body> {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }

    fn scoria(self) -> Response<Body> {
        Self::with_retry(error(self.status, self.code, &self.message), self.status)
    }

    fn oip(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.message }).to_string();
        Self::with_retry(json(self.status, body), self.status)
    }

    fn into_oip(self) -> OipError {
        OipError {
            status: self.status.as_u16(),
            message: self.message,
            overloaded: self.status == StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Read a request's body within `--max-body-size`, `--body-timeout` and the memory budget
/// (held in `reserved` until the request is done); its parts, body and how long it took.
async fn receive(
    state: &AppState,
    req: Request<Incoming>,
    reserved: &mut Reservation,
) -> Result<(http::request::Parts, Bytes, Duration), Refused> {
    let limit = state.config.max_body_size;
    let too_large = || {
        Refused::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    let declared = declared_length(req.headers());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // The body first, under its deadline: a client that trickles it in holds no slot.
    let reading = Instant::now();
    let (parts, body) = req.into_parts();
    let read = read_body(body, limit, declared, reserved);
    match tokio::time::timeout(state.config.body_timeout, read).await {
        Ok(Ok(b)) => Ok((parts, b, reading.elapsed())),
        Ok(Err(BodyError::TooLarge)) => Err(too_large()),
        Ok(Err(BodyError::Budget)) => Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_budget_exhausted",
            MemoryLimitExceeded::Budget {
                budget: state.config.budget.limit(),
            }
            .to_string(),
        )),
        Ok(Err(BodyError::Unreadable(e))) => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            format!("the request body could not be read: {e}"),
        )),
        Err(_) => Err(Refused::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s (--body-timeout)",
                state.config.body_timeout.as_secs_f64()
            ),
        )),
    }
}

/// A concurrency slot of `key` (a component, or a model served through the inference
/// protocol), held until the answer, and how long the wait was.
async fn admit(
    state: &AppState,
    key: &str,
) -> Result<(Option<tokio::sync::OwnedSemaphorePermit>, Duration), Refused> {
    let waited = Instant::now();
    let Some(a) = state.admission.get(key) else {
        return Ok((None, waited.elapsed()));
    };
    match a.admit(state.config.queue_timeout).await {
        Ok(slot) => Ok((Some(slot), waited.elapsed())),
        Err(why) => {
            let message = match why {
                Rejected::QueueFull => format!("`{key}` is at its concurrency limit and its queue is full"),
                Rejected::QueueTimeout => format!("`{key}` stayed at its concurrency limit; gave up waiting"),
            };
            Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                message,
            ))
        }
    }
}

/// The whole body, held against `reserved` (all of a declared length at once, else frame by
/// frame). A body that arrives in one frame is passed on without a copy.
async fn read_body(
    mut body: Incoming,
    limit: u64,
    declared: Option<u64>,
    reserved: &mut Reservation,
) -> Result<Bytes, BodyError> {
    if let Some(n) = declared
        && !reserved.resize(usize::try_from(n).unwrap_or(usize::MAX))
    {
        return Err(BodyError::Budget);
    }
    let mut frames: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        if len > reserved.bytes() && !reserved.resize(len) {
            return Err(BodyError::Budget);
        }
        frames.push(data);
    }
    Ok(match frames.len() {
        0 => Bytes::new(),
        1 => frames.swap_remove(0),
        _ => frames.concat().into(),
    })
}

/// The 503 for work the memory budget cannot hold now.
/// The 503 for a request whose body or guest memory does not fit the host's memory budget
/// now, in one wording wherever the budget runs out.
fn budget_exhausted(budget: usize) -> Response<Body> {
    overloaded(
        "memory_budget_exhausted",
        &MemoryLimitExceeded::Budget { budget }.to_string(),
    )
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
        if let Some(&MemoryLimitExceeded::Budget { budget }) = inst.error.downcast_ref() {
            tracing::warn!(component, "memory budget exhausted at instantiation");
            return budget_exhausted(budget);
        }
        tracing::error!(component, error = %format!("{:#}", inst.error), "instantiation failed");
        return overloaded(
            "instance_unavailable",
            "no instance could be created; retry shortly",
        );
    }
    match request
        .memory_exceeded()
        .or_else(|| e.downcast_ref::<MemoryLimitExceeded>())
    {
        Some(&MemoryLimitExceeded::Budget { budget }) => {
            tracing::warn!(component, "memory budget exhausted");
            return budget_exhausted(budget);
        }
        Some(m @ MemoryLimitExceeded::Instance { .. }) => {
            tracing::warn!(component, "memory limit exceeded");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "memory_limit_exceeded",
                &m.to_string(),
            );
        }
        None => {}
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
