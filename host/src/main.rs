//! The `scoria` command line: `up` serves a manifest, `models` inspects the model repository.

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use scoria::admin::{AdminConfig, AdminToken};
use scoria::auth::ApiKeys;
use scoria::budget::MemoryBudget;
use scoria::cache::CompileCache;
use scoria::loader::{BackendChoice, Batching, ModelLoader};
use scoria::manifest::Manifest;
use scoria::metrics::Metrics;
use scoria::models::{Device, Repository};
use scoria::runtime::Limits;
use scoria::server::{AppState, ServerConfig};
use scoria::variables::Provider;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "scoria",
    version,
    about = "Serve ML scoring functions as WebAssembly components"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SCORIA_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route of a spin.toml manifest.
    Up(UpArgs),
    /// Compile every component of a manifest into the compile cache, so that a restart or a
    /// new pod (with the cache baked into its image) starts without compiling.
    Compile {
        /// The application manifest.
        #[arg(long, short = 'f', default_value = "spin.toml")]
        manifest: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Build an embedding index (a model that scores a question against every entry of a
    /// list, such as an FAQ) from a `.jsonl` or `.tsv` list. `scoria up` rebuilds an index
    /// whose list or embedding model has changed; this command does it ahead of time.
    Index {
        /// The index's name: its folder in the model repository, and the name the function
        /// loads.
        name: String,
        /// The list to index; written into `<models>/<name>/index.toml`. Without it, the
        /// manifest's `[component.<id>.tool.scoria.indexes.<name>]` is used, else the
        /// folder's existing `index.toml`.
        #[arg(long)]
        list: Option<PathBuf>,
        /// The embedding model (a folder in the model repository).
        #[arg(long, default_value = "all-minilm-l6-v2")]
        embedding_model: String,
        /// The list's licence, recorded in the index's card.
        #[arg(long)]
        licence: Option<String>,
        /// The model repository (default: `models/` beside spin.toml).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// The manifest whose folder holds `models/`.
        #[arg(long, short = 'f', default_value = "spin.toml")]
        manifest: PathBuf,
    },
    /// Inspect the model repository.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
        /// The model repository (default: `models/` beside spin.toml).
        #[arg(long, global = true)]
        models_dir: Option<PathBuf>,
        /// The manifest whose folder holds `models/`.
        #[arg(long, short = 'f', global = true, default_value = "spin.toml")]
        manifest: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List every model with its version, format, weights and file status.
    List,
    /// Verify every model file against the sha256 in its model.toml.
    Check,
}

#[derive(clap::Args)]
struct UpArgs {
    /// The application manifest.
    #[arg(long, short = 'f', default_value = "spin.toml")]
    manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "SCORIA_LISTEN")]
    listen: SocketAddr,
    /// Also serve the Open Inference Protocol over gRPC (`inference.GRPCInferenceService`,
    /// for `tritonclient.grpc` and KServe's clients) on this address. Off unless given.
    #[arg(long, env = "SCORIA_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// The model repository (default: `models/` beside the manifest).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Largest request body, in bytes; larger requests get 413 before the body is read.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_body_size: u64,
    /// Seconds a request may run, guest and inference included, before it gets 504.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Largest linear memory a guest instance may grow to, in MiB; past it the request gets 500.
    #[arg(long, default_value_t = 1024)]
    max_guest_memory_mib: usize,
    /// Requests of one function running at once.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Requests of one function waiting for a slot; beyond it, 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Seconds in-flight requests get to finish after SIGTERM before the process exits.
    #[arg(long, default_value_t = 25)]
    drain_timeout: u64,
    /// Seconds a connection may stay open with no request, from its opening or its last
    /// answer (keep-alive); then it is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Seconds a request's headers have to arrive, from their first byte; then the connection
    /// is closed.
    #[arg(long, default_value_t = 10.0)]
    header_read_timeout: f64,
    /// Seconds a request's body has to arrive once its headers are in; past it, 408.
    #[arg(long, default_value_t = 15.0)]
    body_timeout: f64,
    /// Client connections served at once (lowered to fit the open-files limit). Past it, 32
    /// more are read for /healthz, /readyz and /metrics only, and the rest are closed at once.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// MiB that request bodies and guest memories may hold at once, host-wide; work that does
    /// not fit gets 503 with Retry-After. Default: half the container's memory limit, or half
    /// the machine's memory.
    #[arg(long)]
    memory_budget_mib: Option<usize>,
    /// Largest component or model the admin API accepts, in MiB; a larger declared upload
    /// gets 413 before it is read.
    #[arg(long, default_value_t = scoria::admin::DEFAULT_MAX_UPLOAD_MIB)]
    admin_max_upload_mib: usize,
    /// Inference backend: `tract` (pure Rust, CPU), `onnxruntime`, or `auto`: ONNX Runtime
    /// with CUDA on a GPU device, otherwise the faster of the two per model, measured at load.
    /// A model's `backend` in model.toml wins.
    #[arg(long, value_enum, default_value = "tract", env = "SCORIA_BACKEND")]
    backend: BackendChoice,
    /// `gpu` runs ONNX Runtime models on CUDA (one GPU per process).
    #[arg(long, value_enum, default_value = "cpu", env = "SCORIA_DEVICE")]
    device: Device,
    /// Dynamic batching of concurrent computes on one model: `auto` follows each model.toml's
    /// `[batching] enabled`, else on for models on a GPU and off on CPU; `on` and `off` apply
    /// to every model (`on` only where the batch dimension is dynamic).
    #[arg(long, value_enum, default_value = "auto", env = "SCORIA_BATCHING")]
    batching: Batching,
    /// File of API keys, one per line, optionally limited to some functions (see docs/operations.md).
    /// Without it, function routes are open.
    #[arg(long, env = "SCORIA_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// Swap a component in when its `source` file changes (after a build), and a model when
    /// its `model.toml` or weights change.
    #[arg(long)]
    watch: bool,
    /// File holding the admin API's bearer token. Without it the admin API is off.
    #[arg(long, env = "SCORIA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(clap::Args)]
struct CacheArgs {
    /// Where compiled components are cached (default: `.cache/compiled` beside the manifest).
    #[arg(long, env = "SCORIA_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component at start-up, ignoring and not writing the cache.
    #[arg(long)]
    no_compile_cache: bool,
}

impl CacheArgs {
    fn cache(&self, manifest: &Path) -> Option<CompileCache> {
        if self.no_compile_cache {
            return None;
        }
        let dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| manifest_dir(manifest).join(".cache/compiled"));
        Some(CompileCache::new(dir))
    }
}

/// `scoria` started by `spin up` as the `trigger-scoria` plugin: the arguments are the
/// trigger options (`up`'s flags), and the application comes from `SPIN_LOCKED_URL`.
#[derive(Parser)]
#[command(
    name = "trigger-scoria",
    version,
    about = "Scoria as Spin's trigger for `[[trigger.scoria]]`"
)]
struct PluginCli {
    #[command(flatten)]
    up: UpArgs,
    /// Log format: `text` on a terminal, `json` for log collectors.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

/// Under `RUST_BACKTRACE=1`, common on developers' machines, std also captures a backtrace
/// for every library error: wasmtime builds an error each time a request's store is dropped
/// (about a hundredth of a tensor request's CPU in `perf`), and a mistyped manifest path
/// printed forty lines of stack. Panics still print theirs; `RUST_LIB_BACKTRACE=1` brings
/// error backtraces back.
///
/// # Safety
/// It sets an environment variable, so no other thread may be running.
unsafe fn quiet_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the caller guarantees that this process has a single thread.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: nothing has started a thread yet.
    unsafe {
        scoria::nn::onnxruntime::disable_telemetry_by_default();
        quiet_error_backtraces();
    }
    let first = std::env::args_os().nth(1);
    let is_flag = first
        .as_ref()
        .is_none_or(|a| a.to_string_lossy().starts_with('-'));
    // `spin up --help` asks each trigger plugin for its options this way, without an app
    // (so without `SPIN_LOCKED_URL`).
    if std::env::args_os().any(|a| a == "--help-args-only") {
        PluginCli::command().print_help()?;
        return Ok(());
    }
    if let (Ok(url), true) = (std::env::var("SPIN_LOCKED_URL"), is_flag) {
        return plugin(&url);
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Up(args) => {
            let manifest = Manifest::load(&args.manifest)?;
            up(args, manifest)
        }
        Command::Compile {
            manifest: file,
            cache,
        } => {
            let manifest = Manifest::load(&file)?;
            let cache = cache
                .cache(&file)
                .context("the compile cache is disabled; drop --no-compile-cache")?;
            for f in scoria::app::precompile(&manifest, cache)? {
                let how = if f.cached { "already cached" } else { "compiled" };
                println!("{:<24} {}  {how}", f.id, &f.digest[..16]);
            }
            Ok(())
        }
        Command::Index {
            name,
            list,
            embedding_model,
            licence,
            models_dir,
            manifest,
        } => {
            let repo = Repository::new(models_dir.unwrap_or_else(|| default_models_dir(&manifest)));
            let dir = repo.dir.join(&name);
            // Without --list, the manifest's declaration (if any) says what to build.
            let declared = match (&list, manifest.is_file()) {
                (None, true) => Manifest::load(&manifest)?
                    .components
                    .into_values()
                    .find_map(|c| c.indexes.get(&name).cloned()),
                _ => None,
            };
            if let Some(decl) = declared {
                scoria::loader::declare_index(&repo, &name, &decl)?;
            } else if let Some(list) = list {
                anyhow::ensure!(list.is_file(), "--list {}: no such file", list.display());
                let decl = scoria::manifest::IndexDecl {
                    list,
                    embedding_model,
                    licence,
                };
                scoria::loader::declare_index(&repo, &name, &decl)?;
            }
            let n = ModelLoader::tract_only().build_index(&repo, &name, None)?;
            println!(
                "{}: {n} entries indexed; grant `{name}` to the function in spin.toml",
                dir.display()
            );
            Ok(())
        }
        Command::Models {
            command,
            models_dir,
            manifest,
        } => {
            let repo = Repository::new(models_dir.unwrap_or_else(|| default_models_dir(&manifest)));
            match command {
                ModelsCommand::List => models_list(&repo, &manifest_dir(&manifest)),
                ModelsCommand::Check => models_check(&repo),
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    // Colour only for a person at a terminal; log collectors want plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn manifest_dir(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn default_models_dir(manifest: &Path) -> PathBuf {
    manifest_dir(manifest).join("models")
}

/// Options of Spin's own triggers that `spin up` passes on to a trigger plugin as they are,
/// each with why `trigger-scoria` does not take it. Named in a clear refusal rather than left
/// to clap's "unexpected argument", since the user typed a valid `spin up` option.
const SPIN_TRIGGER_OPTIONS: [(&[&str], &str); 5] = [
    (
        &["--runtime-config-file"],
        "Spin's runtime configuration (variable providers, key-value and SQLite stores, outbound \
         TLS) is not read; set variables with SPIN_VARIABLE_<NAME> or a .env file",
    ),
    (
        &["--state-dir", "--key-value", "--sqlite"],
        "Scoria offers components no key-value or SQLite store, so there is no state to place",
    ),
    (
        &["-L", "--log-dir", "--truncate-logs", "--follow", "-q", "--quiet"],
        "component output goes to the plugin's own stdout and stderr; it is not written to \
         per-component files or filtered",
    ),
    (
        &["--cache", "--disable-cache"],
        "Scoria keeps its own compile cache: use --cache-dir or --no-compile-cache",
    ),
    (
        &["--disable-pooling", "--debug-info"],
        "Scoria always runs guests in wasmtime's pooling allocator, without debug info",
    ),
];

/// The first of Spin's trigger options in `args` that the plugin refuses, with the reason.
fn refused_spin_option(args: &[String]) -> Option<(String, &'static str)> {
    args.iter().find_map(|arg| {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        SPIN_TRIGGER_OPTIONS
            .iter()
            .find(|(flags, _)| flags.contains(&flag))
            .map(|(_, why)| (flag.to_string(), *why))
    })
}

/// Plugin mode (see [`PluginCli`]).
fn plugin(locked_url: &str) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((flag, why)) = refused_spin_option(&args) {
        anyhow::bail!(
            "`spin up {flag}` is an option of Spin's own triggers that trigger-scoria does not take: \
             {why}. Remove it; `spin up --help` lists the plugin's options"
        );
    }
    let cli = PluginCli::parse_from(std::env::args_os());
    init_logging(cli.log_format);
    let manifest = scoria::locked::load(locked_url)?;
    let mut up_args = cli.up;
    // Models, the compile cache and indexes resolve beside the spin.toml the app came from.
    up_args.manifest = manifest.file.clone();
    tracing::info!(locked = %locked_url, manifest = %manifest.file.display(), "running as Spin's trigger-scoria plugin");
    up(up_args, manifest)
}

/// File descriptors kept free of connections: models, compiled code, mounts, logs.
const SPARE_FDS: u64 = 256;

/// `requested` connections, or fewer if the open-files limit cannot hold them. The soft limit
/// is first raised to the hard one, as servers commonly do, since a shell's default (1024) is
/// far below what a pod allows.
fn connection_cap(requested: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return requested;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let fits = usize::try_from(soft.saturating_sub(SPARE_FDS + 32))
        .unwrap_or(usize::MAX)
        .max(16);
    if fits < requested {
        tracing::warn!(
            requested,
            allowed = fits,
            open_files_limit = soft,
            "--max-connections lowered to fit the open-files limit"
        );
    }
    requested.min(fits)
}

fn up(args: UpArgs, manifest: Manifest) -> anyhow::Result<()> {
    // Spin's environment provider: `SPIN_VARIABLE_*`, then `.env` in the directory started in.
    let variables = manifest.resolve_variables(&Provider::from_environment(Path::new("."))?)?;
    let loader = Arc::new(ModelLoader::new(
        args.backend,
        args.device,
        args.batching,
        &manifest_dir(&args.manifest),
    ));
    let repo = Repository::new(
        args.models_dir
            .clone()
            .unwrap_or_else(|| default_models_dir(&args.manifest)),
    );
    let api_keys = match &args.api_keys_file {
        Some(f) => Some(Arc::new(ApiKeys::load(f)?)),
        None => None,
    };
    let request_timeout = Duration::from_secs(args.request_timeout);
    let budget = MemoryBudget::new(
        args.memory_budget_mib
            .map(|m| m << 20)
            .unwrap_or_else(scoria::budget::default_limit),
    );
    let seconds = |flag: &str, s: f64| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--{flag} must be a number of seconds, not {s}"))
    };
    let limits = Limits {
        budget: budget.clone(),
        request_timeout,
        max_memory: args.max_guest_memory_mib << 20,
        max_instances: u32::try_from(args.max_concurrency * manifest.components.len())
            .unwrap_or(u32::MAX)
            .max(16),
    };
    let config = ServerConfig {
        listen: args.listen,
        max_body_size: args.max_body_size,
        max_concurrent: args.max_concurrency,
        max_queued: args.max_queue,
        queue_timeout: request_timeout,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        idle_timeout: seconds("idle-timeout", args.idle_timeout)?,
        header_timeout: seconds("header-read-timeout", args.header_read_timeout)?,
        body_timeout: seconds("body-timeout", args.body_timeout)?,
        max_connections: connection_cap(args.max_connections),
        budget,
        api_keys,
        admin: match &args.admin_token_file {
            Some(f) => Some(Arc::new(AdminConfig {
                token: AdminToken::load(f)?,
                max_upload: args.admin_max_upload_mib << 20,
            })),
            None => None,
        },
    };
    let cache = args.cache.cache(&args.manifest);
    let watch = args.watch;
    let grpc_listen = args.grpc_listen;
    let grpc_max_message = usize::try_from(args.max_body_size).unwrap_or(usize::MAX);
    let drain = Duration::from_secs(args.drain_timeout);
    let sources: Vec<(String, PathBuf)> = manifest
        .components
        .values()
        .map(|c| (c.id.clone(), c.source.clone()))
        .collect();
    let metrics = Arc::new(Metrics::default());
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let grpc_listener = match grpc_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--grpc-listen)"))?,
            ),
            None => None,
        };
        let state = AppState::new(manifest.clone(), config, metrics.clone());
        tracing::info!(address = %listener.local_addr()?, app = %manifest.name, "listening");
        if let Some(l) = grpc_listener {
            tracing::info!(address = %l.local_addr()?, "listening for the inference protocol over gRPC");
            tokio::spawn(scoria::grpc::serve(
                l,
                state.clone(),
                grpc_max_message,
                drain,
                shutdown_signal(),
            ));
        }
        let mut server = tokio::spawn(scoria::server::serve(listener, state.clone(), shutdown_signal()));

        let mut loading = tokio::task::spawn_blocking(move || {
            scoria::app::prepare(&manifest, &repo, loader, limits, variables, cache, &metrics)
        });
        tokio::select! {
            loaded = &mut loading => {
                let prepared = loaded.context("start-up panicked")??;
                for (route, component) in &state.routes() {
                    tracing::info!(%route, %component, "serving");
                }
                state.deployments().set_ready(prepared);
                tracing::info!("ready");
                if watch {
                    let server = state.clone();
                    tokio::spawn(scoria::watch::watch(
                        state.deployments().clone(),
                        sources,
                        move || server.is_draining(),
                    ));
                }
                (&mut server).await.context("server task panicked")?
            }
            // A SIGTERM during start-up ends the server; there is nothing to drain.
            stopped = &mut server => stopped.context("server task panicked")?,
        }
    });
    // Don't wait for a start-up still compiling on the blocking pool.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

fn models_list(repo: &Repository, project: &Path) -> anyhow::Result<()> {
    println!(
        "{:<22} {:<12} {:<6} {:<11} {:>9}  {:<8} {:<29} LICENCE",
        "NAME", "VERSION", "FORMAT", "WEIGHTS", "SIZE", "FILE", "BACKEND"
    );
    let choices = scoria::choice::all(project);
    for entry in repo.all()? {
        match entry {
            Ok(m) => {
                let c = &m.card;
                let (size, status) = match std::fs::metadata(m.weights_path()) {
                    Ok(md) => (format!("{:.1} MB", md.len() as f64 / 1e6), "present"),
                    Err(_) => ("-".into(), "MISSING"),
                };
                // A card's pin wins; else what `up --backend auto` measured last; else the flag.
                let backend = match (&c.backend, choices.get(&c.name)) {
                    (Some(b), _) => format!("{b} (model.toml)"),
                    (None, Some(choice)) if choice.digest == c.sha256.to_ascii_lowercase() => {
                        format!("{} (auto, measured)", choice.backend)
                    }
                    // A graph tract cannot build runs on ONNX Runtime under `auto`.
                    _ => match std::fs::read(m.weights_path())
                        .ok()
                        .and_then(|b| scoria::nn::tract::cannot_run(&b))
                    {
                        Some(why) => format!("onnxruntime (auto: tract lacks {why})"),
                        None => "--backend".into(),
                    },
                };
                let backend = match c.device {
                    Some(device) => format!("{backend}, {device} (model.toml)"),
                    None => backend,
                };
                println!(
                    "{:<22} {:<12} {:<6} {:<11} {:>9}  {:<8} {:<29} {}",
                    c.name,
                    c.version,
                    format!("{:?}", c.format).to_lowercase(),
                    c.weights,
                    size,
                    status,
                    backend,
                    c.licence
                );
            }
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}

fn models_check(repo: &Repository) -> anyhow::Result<()> {
    let mut failed = 0;
    for entry in repo.all()? {
        match entry.and_then(|m| m.check().map(|()| m)) {
            Ok(m) => println!("ok      {}", m.card.name),
            Err(e) => {
                failed += 1;
                println!("FAILED  {e}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} model(s) failed the check");
    Ok(())
}
