//! The wasmtime side: one engine, components compiled once, and a fresh instance per request.
//!
//! Each function is compiled into a pre-instantiated component (`InstancePre`, pooling
//! allocator) that exports either `wasi:http/handler@0.3.0` (spin-sdk 7, WASIp3) or
//! `wasi:http/incoming-handler@0.2.x`. Requests go through wasmtime-wasi-http's
//! `ProxyHandler`, configured so that every instance serves exactly one request: serverless
//! isolation, with no state leaking from one request to the next. A manifest may opt a
//! component out (`instance_reuse`), as `wasmtime serve` can: its instances then serve up to
//! that many requests, one at a time, so that what a guest builds for one request (a parsed
//! model card, a tokenizer) serves the next.
//!
//! What a guest can reach is decided here, from its manifest entry: environment variables,
//! Spin variables, read-only directory mounts, outbound HTTP hosts and the models it may load.

use crate::budget::{MemoryBudget, Reservation};
use crate::cache::CompileCache;
use crate::manifest::{Component as ComponentSpec, FileMount};
use crate::metrics::Metrics;
use crate::nn::ModelRegistry;
use crate::nn::wit::{InferenceTiming, NnCtx, NnView};
use crate::outbound::{AllowedHost, default_port};
use crate::variables::{ComponentVariables, Values};
use anyhow::Context as _;
use sha2::Digest as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// How often the epoch advances; a running guest yields to the executor at this period, which
/// is what lets a request deadline fire even while a guest spins.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each pooled linear memory that stay mapped between instances and are zeroed with
/// `memset` instead of being handed back to the kernel. A scoring request touches a few MiB
/// (the photo, its decoded pixels, the tensor), and faulting those pages in afresh for every
/// request cost about 0.7 ms of CPU per EfficientNet request. The price is resident memory:
/// at most this much per instance slot that has ever been used (`--max-concurrency` times
/// the number of functions).
const KEEP_RESIDENT: usize = 8 << 20;

/// Bytes of each pooled table kept mapped between instances and zeroed with `memset`. A table
/// handed back with `madvise` faults on its first write in the next instance (the lazy
/// initialisation of its function references), and each such fault flushes the TLB of every
/// CPU the process runs on. Keeping 1 MiB (a whole table slot) resident took `hello-p2` from
/// about 3,900 to 4,200 requests/s at concurrency 1 and from 8,150 to 10,200 at
/// concurrency 8 (`./dev bench peers`' hello, three alternating rounds). Only slots that were
/// ever used hold pages.
const TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// Limits applied to every instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget for one request, from instantiation to the last body byte.
    pub request_timeout: Duration,
    /// Largest linear memory a guest may grow to.
    pub max_memory: usize,
    /// Instances that may exist at once across all functions.
    pub max_instances: u32,
    /// What all guests' memories together may hold (with the bodies the server buffers).
    pub budget: Arc<MemoryBudget>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_memory: 1 << 30,
            max_instances: 256,
            budget: MemoryBudget::new(usize::MAX),
        }
    }
}

/// The engine and linker shared by all functions.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<StoreData>>,
    limits: Limits,
    cache: Option<CompileCache>,
    /// The application variables' values, which components' templates are rendered with.
    variables: Values,
    _epoch: EpochTicker,
}

impl Runtime {
    /// Build the engine (pooling allocator, component-model async, epoch interruption) and a
    /// linker with WASI p2 and p3, wasi-http p2 and p3, wasi-nn and Spin's variables.
    /// `variables` are the values from [`crate::manifest::Manifest::resolve_variables`].
    pub fn new(limits: Limits, cache: Option<CompileCache>, variables: Values) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * 8)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 4)
            .max_memory_size(limits.max_memory)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            // Zeroed stacks are also released to the OS when an instance ends, so a guest that
            // overflowed its stack leaves no resident pages behind in the pool.
            .async_stack_zeroing(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .enable_incremental_compilation(Arc::new(crate::cache::FunctionCache::default()))?;
        // `SCORIA_PERFMAP=1` writes /tmp/perf-<pid>.map, so that `perf` names the guest's
        // functions (build the function unstripped to get Rust names rather than indices).
        if std::env::var_os("SCORIA_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::nn::wit::add_to_linker(&mut linker, |d: &mut StoreData| NnView {
            ctx: &mut d.nn,
            table: &mut d.table,
        })?;
        crate::variables::wit::add_to_linker(&mut linker, |d: &mut StoreData| &d.variables)?;

        let _epoch = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
            cache,
            variables,
            _epoch,
        })
    }

    /// Read, compile (or load from the compile cache) and validate a component's `source`.
    /// `models` is the registry narrowed to what the manifest grants.
    pub fn compile(
        &self,
        spec: &ComponentSpec,
        models: ModelRegistry,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Function> {
        let bytes = std::fs::read(&spec.source).with_context(|| {
            format!(
                "component `{}`: cannot read {}; build it first (`./dev setup` or the component's build command)",
                spec.id,
                spec.source.display()
            )
        })?;
        self.compile_bytes(spec, &bytes, models, metrics)
            .with_context(|| format!("component `{}` from {}", spec.id, spec.source.display()))
    }

    /// Compile and validate component bytes for `spec`'s grants: it must export an HTTP
    /// handler and import only what the host provides. Used at start-up and for hot swaps.
    pub fn compile_bytes(
        &self,
        spec: &ComponentSpec,
        bytes: &[u8],
        models: ModelRegistry,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Function> {
        let compiled = match &self.cache {
            Some(cache) => cache.compile(&self.engine, bytes),
            None => {
                crate::cache::compile_uncached(&self.engine, bytes).map(|component| crate::cache::Compiled {
                    component,
                    digest: hex::encode(sha2::Sha256::digest(bytes)),
                    cached: false,
                })
            }
        }
        .context("not a valid WebAssembly component")?;
        let pre = self
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(anyhow::Error::from)
            .context("it imports something the host does not provide")?;
        let pre = match wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone()) {
            Ok(p3) => ProxyPre::P3(p3),
            Err(_) => ProxyPre::P2(
                wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre)
                    .map_err(anyhow::Error::from)
                    .context("it exports neither wasi:http/handler@0.3 nor wasi:http/incoming-handler@0.2")?,
            ),
        };
        let grants = Arc::new(Grants {
            environment: spec
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            variables: Arc::new(ComponentVariables::render(&spec.variables, &self.variables)),
            files: spec.files.clone(),
            // Checked when the manifest loaded and when its variables were resolved; an entry
            // that does not parse (never the case when serving) allows nothing.
            outbound: spec
                .allowed_outbound_hosts
                .iter()
                .filter_map(|h| AllowedHost::parse(&self.variables.fill(h)).ok())
                .collect(),
            models,
            metrics,
        });
        for f in &grants.files {
            anyhow::ensure!(
                f.source.is_dir(),
                "component `{}`: `files` source {} is not a directory",
                spec.id,
                f.source.display()
            );
        }
        let state = FunctionState {
            pre,
            grants,
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            reuse: spec.instance_reuse as usize,
        };
        Ok(Function {
            id: spec.id.clone(),
            handler: ProxyHandler::new(state),
            digest: compiled.digest,
            loaded_at: std::time::SystemTime::now(),
            cached: compiled.cached,
        })
    }
}

/// A compiled function, ready to serve; cheap to clone.
#[derive(Clone)]
pub struct Function {
    pub id: String,
    pub handler: ProxyHandler<FunctionState>,
    /// sha256 of the component bytes, hex.
    pub digest: String,
    /// When this version was compiled or loaded.
    pub loaded_at: std::time::SystemTime,
    /// Whether it came from the compile cache.
    pub cached: bool,
}

/// What a component's manifest entry grants its instances.
struct Grants {
    environment: Vec<(String, String)>,
    variables: Arc<ComponentVariables>,
    files: Vec<FileMount>,
    outbound: Arc<[AllowedHost]>,
    models: ModelRegistry,
    metrics: Arc<Metrics>,
}

/// Per-request store contents.
pub struct StoreData {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundPolicy,
    table: ResourceTable,
    nn: NnCtx,
    variables: Arc<ComponentVariables>,
    limits: GuestLimits,
    request: RequestSlot,
    /// How long making this instance took, reported to its request in `Server-Timing`.
    made_in: Duration,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn http_view(d: &mut StoreData) -> WasiHttpCtxView<'_> {
    d.http()
}

/// `HandlerState` for one function: how to make a store and instance for a request.
pub struct FunctionState {
    pre: ProxyPre<StoreData>,
    grants: Arc<Grants>,
    engine: Engine,
    limits: Limits,
    /// Requests one instance may serve (`instance_reuse`).
    reuse: usize,
}

impl FunctionState {
    fn new_store(&self) -> wasmtime::Result<Store<StoreData>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&self.grants.environment)
            .inherit_stdout()
            .inherit_stderr()
            // Mounts are small, local, read-only files (model cards, labels, vocabularies) read
            // on every request. Without this each file operation is a `spawn_blocking` round
            // trip to another thread: /classify made 40 context switches per request instead
            // of 13, and served 10% fewer requests per second at c=4.
            .allow_blocking_current_thread(true);
        for f in &self.grants.files {
            wasi.preopened_dir(&f.source, &f.destination, FsPerms::ReadOnly)
                .map_err(|e| wasmtime::format_err!("mounting {}: {e}", f.source.display()))?;
        }
        let request = RequestSlot::default();
        let data = StoreData {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundPolicy {
                allowed: self.grants.outbound.clone(),
            },
            table: ResourceTable::new(),
            nn: NnCtx::new(self.grants.models.clone(), self.grants.metrics.clone()),
            variables: self.grants.variables.clone(),
            limits: GuestLimits {
                max_memory: self.limits.max_memory,
                reserved: self.limits.budget.reservation(),
                request: request.clone(),
            },
            request,
            made_in: Duration::ZERO,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limits);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }
}

impl HandlerState for FunctionState {
    type StoreData = StoreData;
    type WorkerExpiration = Deadline;
    type WorkerState = Requests;

    async fn instantiate(&self) -> wasmtime::Result<Instance<StoreData, Deadline, Requests>> {
        let started = Instant::now();
        let mut store = self.new_store()?;
        let proxy = self.pre.instantiate_async(&mut store).await?;
        store.data_mut().made_in = started.elapsed();
        let slot = store.data().request.clone();
        Ok(Instance {
            store,
            proxy,
            view: http_view,
            expiration: Deadline::new(self.limits.request_timeout, slot),
            state: Requests {
                timeout: self.limits.request_timeout,
                max: self.reuse,
            },
        })
    }
}

/// What the server and the instance serving a request share: the instance's and the
/// inference's times for `Server-Timing`, and whether the deadline ended it.
#[derive(Debug, Default)]
pub struct RequestState {
    pub inference: Arc<InferenceTiming>,
    instance: OnceLock<Duration>,
    timed_out: AtomicBool,
    memory_exceeded: OnceLock<MemoryLimitExceeded>,
}

impl RequestState {
    /// How long making the request's instance took: zero for a reused one; `None` if the
    /// request never started.
    pub fn instance(&self) -> Option<Duration> {
        self.instance.get().copied()
    }

    /// Whether the request was stopped by its deadline (the client gets 504).
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// Set when the guest hit its memory limit, before the trap unwinds the instance (the
    /// handler reports traps without their cause, so the cause travels here).
    pub fn memory_exceeded(&self) -> Option<&MemoryLimitExceeded> {
        self.memory_exceeded.get()
    }
}

/// Where an instance learns which request it serves; shared with its [`Deadline`].
type RequestSlot = Arc<Mutex<Option<Arc<RequestState>>>>;

/// Which requests an instance accepts. Serverless isolation by default: exactly one, after
/// which it is dropped. With `instance_reuse = n`, up to n, never two at once, so that a
/// guest written for one request at a time (every spin-sdk function) stays correct.
pub struct Requests {
    timeout: Duration,
    /// Requests this instance may serve in all.
    max: usize,
}

impl WorkerState for Requests {
    type StoreData = StoreData;
    type RequestData = Arc<RequestState>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max {
            ShouldAccept::Never
        } else if concurrent > 0 {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: wasmtime::StoreContextMut<'_, StoreData>,
        request: Arc<RequestState>,
        _task: wasmtime::component::GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.data_mut().nn.set_timing(request.inference.clone());
        // Only the instance's first request paid for making it.
        let _ = request
            .instance
            .set(std::mem::take(&mut store.data_mut().made_in));
        if let Ok(mut slot) = store.data().request.lock() {
            *slot = Some(request);
        }
        Box::pin(tokio::time::sleep(self.timeout))
    }

    fn drop(&self, _store: Store<StoreData>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "instance ended with an error");
        }
    }
}

/// Expires an instance whose request has run past the timeout, polled from outside the
/// store's event loop so that it fires even while a guest computes.
pub struct Deadline {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    request: RequestSlot,
}

impl Deadline {
    fn new(timeout: Duration, request: RequestSlot) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            request,
        }
    }
}

impl WorkerExpiration for Deadline {
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>, state: WorkerStatus, start: Instant) -> Poll<()> {
        // An idle instance waits a second for another request (if it may serve more) and is
        // then dropped, so an idle function holds no instances.
        let budget = match state {
            WorkerStatus::Idle => Duration::from_secs(1),
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.timeout,
        };
        let at = tokio::time::Instant::from_std(start + budget);
        if self.sleep.deadline() != at {
            self.sleep.as_mut().reset(at);
        }
        let expired = self.sleep.as_mut().poll(cx);
        // The handler reports this as a lost worker; flag it so the client gets a 504.
        if expired.is_ready()
            && state != WorkerStatus::Idle
            && let Ok(slot) = self.request.lock()
            && let Some(r) = slot.as_ref()
        {
            r.timed_out.store(true, Ordering::Release);
        }
        expired
    }
}

/// Caps a guest's linear memory, per instance and against the host-wide budget. Growing past
/// either traps with [`MemoryLimitExceeded`], so the server can tell the client why (rather
/// than the guest seeing a failed `memory.grow`).
struct GuestLimits {
    max_memory: usize,
    /// The instance's memories, held against the budget until the instance is dropped.
    reserved: Reservation,
    request: RequestSlot,
}

/// The trap raised when a guest's memory may not grow.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MemoryLimitExceeded {
    /// Past `--max-guest-memory-mib`: the request itself asks too much (500).
    #[error("the function tried to use more than its memory limit of {} MiB", .limit >> 20)]
    Instance { limit: usize },
    /// Past `--memory-budget-mib`: other requests hold the memory now (503, retry).
    #[error(
        "the host's memory budget of {} MiB is taken by other requests (--memory-budget-mib); retry shortly",
        .budget >> 20
    )]
    Budget { budget: usize },
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.reserved.bytes() + desired.saturating_sub(current);
        let exceeded = if desired > self.max_memory {
            MemoryLimitExceeded::Instance {
                limit: self.max_memory,
            }
        } else if !self.reserved.resize(total) {
            MemoryLimitExceeded::Budget {
                budget: self.reserved.budget().limit(),
            }
        } else {
            return Ok(true);
        };
        if let Ok(slot) = self.request.lock()
            && let Some(r) = slot.as_ref()
        {
            let _ = r.memory_exceeded.set(exceeded.clone());
        }
        Err(exceeded.into())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Outbound HTTP is denied unless the manifest's `allowed_outbound_hosts` lists the target.
struct OutboundPolicy {
    allowed: Arc<[AllowedHost]>,
}

impl OutboundPolicy {
    fn permits(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri.host().unwrap_or("");
        let Some(port) = uri.port_u16().or_else(|| default_port(scheme)) else {
            return false;
        };
        self.allowed.iter().any(|a| a.allows(scheme, host, port))
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let _ = fut;
        if !self.permits(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outbound request denied by allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Advances the engine's epoch on a background thread for as long as the runtime lives.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("scoria-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
