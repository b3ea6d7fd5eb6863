//! Start-up, background loading and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use embeddings_metrics::{MemoryGauge, PipelineMetrics};
use embeddings_pipeline::{EmbeddingPipeline, LoadError, PipelineConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::app::{AppState, Limits, Loaded, router};
use crate::auth::ApiKeys;
use crate::cli::{Args, LogFormat};
use crate::cpu::CpuPlan;
use crate::listen::{self, ConnectionLimits};
use crate::process::ProcessStats;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours to bind.
    #[error(
        "cannot listen on {addr}: {source}; pick another --bind address or stop the process using it"
    )]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("the HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
    /// The metric families could not be built (a bug).
    #[error("could not set up metrics: {0}")]
    Metrics(#[from] embeddings_metrics::MetricsError),
    /// The API keys could not be read, or one is too short.
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The alert rules file could not be read or is invalid.
    #[error(
        "cannot use the alert rules {path}: {reason}; fix the file or drop --alert-rules for the recommended rules"
    )]
    AlertRules {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The pipeline failed to load and `--exit-on-load-failure` was given.
    #[error("the pipeline failed to load: {0}")]
    Load(LoadError),
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already set (tests); keep that one.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// How often the housekeeping task ticks the server's heartbeat and
/// samples the process's resident memory.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Reads the configuration (so health uses its `[health]` policy while the
/// models load), then builds the pipeline.
fn load(
    state: &AppState,
    models_dir: std::path::PathBuf,
    config: Option<&std::path::Path>,
    metrics: Arc<PipelineMetrics>,
) -> Loaded {
    let mut builder = EmbeddingPipeline::builder()
        .models_dir(models_dir)
        .metrics(metrics);
    if let Some(path) = config {
        let parsed = PipelineConfig::from_file(path).and_then(|c| {
            let policy = c
                .health
                .build()
                .map_err(|e| LoadError::Config(format!("[health]: {e}")))?;
            Ok((c, policy))
        });
        match parsed {
            Ok((c, policy)) => {
                let _ = state.policy.set(policy);
                let _ = state.device.set(c.device);
                builder = builder.config(c);
            }
            Err(e) => return Loaded::Failed(e),
        }
    }
    match builder.build() {
        Ok(pipeline) => Loaded::Ready(Arc::new(pipeline)),
        Err(e) => Loaded::Failed(e),
    }
}

/// Ticks the server's heartbeat and samples the process's resident memory
/// into the recorder, on its own schedule rather than on scrapes, so health
/// and the JSON snapshot read a current figure whether or not anything
/// scrapes `/metrics`.
async fn housekeeping(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(HOUSEKEEPING);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        state.tick();
        let rss = tokio::task::spawn_blocking(|| ProcessStats::read().resident_memory_bytes)
            .await
            .ok()
            .flatten();
        state.metrics.set_memory_gauge(MemoryGauge::ProcessRss, rss);
    }
}

/// Runs the server until SIGTERM / SIGINT.
///
/// Binds first and prints `listening on ADDR` to standard output, then loads
/// the pipeline on a blocking thread while already answering probes. On a
/// signal it stops accepting connections, lets in-flight requests finish for
/// up to `--shutdown-grace-secs`, and returns. `cpu` is the thread plan
/// the caller has applied ([`CpuPlan::apply`]) before starting the runtime;
/// it is shown on `/info` and `/metrics`.
///
/// # Errors
/// [`ServeError`] when the address cannot be bound or the server fails.
pub async fn run(args: Args, cpu: CpuPlan) -> Result<(), ServeError> {
    init_logging(args.log_format);
    crate::redact::show_paths(args.show_paths);
    let metrics = Arc::new(PipelineMetrics::new());
    let mut state = AppState::new(Limits::from_args(&args), Arc::clone(&metrics))?;
    state.auth = ApiKeys::load(&args.api_keys, args.api_key_file.as_deref())?;
    state.protect_observability = args.protect_observability;
    tracing::info!(
        threads = cpu.threads,
        source = ?cpu.source,
        quota_cores = ?cpu.quota_cores,
        affinity_cpus = ?cpu.affinity_cpus,
        "compute threads"
    );
    state.cpu = Some(cpu);
    state.memory_limit = crate::memory_limit::read(&args.cgroup_root);
    tracing::info!(limit_bytes = ?state.memory_limit, "memory limit");
    state.tei_slot = args.tei_slot;
    state.quality = crate::quality::Quality::new(
        (args.canary_interval_secs > 0).then(|| Duration::from_secs(args.canary_interval_secs)),
    );
    if let Some(path) = &args.alert_rules {
        let rules = |reason: String| ServeError::AlertRules {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| rules(e.to_string()))?;
        let config = embeddings_health::AlertConfig::from_toml_str(&text)
            .map_err(|e| rules(e.to_string()))?;
        state.alerts = crate::alerts::Alerts::new(config);
    }
    if state.auth.is_none() && !args.bind.ip().is_loopback() {
        tracing::warn!(addr = %args.bind, "listening beyond loopback without an API key: anyone who reaches this port can embed (set --api-key)");
    }
    let state = Arc::new(state);

    let listener = TcpListener::bind(args.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.bind,
            source,
        })?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    tracing::info!(%addr, models_dir = %args.models_dir.display(), "listening; loading the pipeline");

    let loader = Arc::clone(&state);
    let models_dir = args.models_dir.clone();
    let config = args.config.clone();
    let load_failed = Arc::new(Notify::new());
    let failed = Arc::clone(&load_failed);
    let running = state.loader_started();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let started = std::time::Instant::now();
        // A panic while loading is a bug, but must not leave the server
        // reporting "loading" forever: it becomes a load failure.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load(&loader, models_dir, config.as_deref(), metrics)
        }))
        .unwrap_or_else(|panic| {
            Loaded::Failed(LoadError::Internal(embeddings_pipeline::panic_message(
                panic.as_ref(),
            )))
        });
        match &loaded {
            Loaded::Ready(_) => {
                let _ = loader.loaded_at.set(chrono::Utc::now());
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "pipeline ready");
            }
            Loaded::Failed(e) => {
                tracing::error!(error = %e, "the pipeline failed to load; embedding requests will get 503");
            }
        }
        let is_failure = matches!(loaded, Loaded::Failed(_));
        let _ = loader.pipeline.set(loaded);
        if is_failure {
            failed.notify_one();
        }
    });
    tokio::spawn(housekeeping(Arc::clone(&state)));
    tokio::spawn(crate::quality::run_canary(Arc::clone(&state)));
    tokio::spawn(crate::alerts::run(
        Arc::clone(&state),
        Duration::from_secs(args.alert_interval_secs),
    ));

    let state_for_exit = Arc::clone(&state);
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let limits = ConnectionLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
    };
    let exit_on_failure = async {
        if args.exit_on_load_failure {
            load_failed.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let app = router(Arc::clone(&state));
    tokio::select! {
        () = listen::serve(listener, app, Arc::clone(&state), limits, shutdown_signal(), grace) => {}
        () = exit_on_failure => {
            if let Some(Loaded::Failed(e)) = state_for_exit.pipeline.get() {
                return Err(ServeError::Load(e.clone()));
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}
