//! Command-line flags; each can also be set with an `EMBEDDINGS_*` environment
//! variable (the flag wins when both are given).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use embeddings_types::{ModelId, OutputKind};

/// Parses a slot name that produces one dense vector.
fn dense_slot(name: &str) -> Result<ModelId, String> {
    let slot: ModelId = name.parse().map_err(|e| format!("{e}"))?;
    if slot.output_kind() == OutputKind::Dense {
        Ok(slot)
    } else {
        Err(format!(
            "slot `{slot}` does not produce one dense vector; name a dense slot such as `semantic`"
        ))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// The embeddings HTTP service: embed, `/metrics`, `/health`, probes.
#[derive(Debug, Clone, Parser)]
#[command(name = "embeddings-server", version, about)]
pub struct Args {
    /// Address and port to listen on (port 0 picks a free one; the chosen
    /// address is logged and printed as `listening on ADDR`).
    #[arg(long, env = "EMBEDDINGS_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Pipeline configuration file (TOML): slot bindings, batching, cache, fusion.
    #[arg(long, env = "EMBEDDINGS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory holding the model folders (`cargo xtask fetch-models` fills `models/`).
    #[arg(long, env = "EMBEDDINGS_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// Log format.
    #[arg(
        long,
        env = "EMBEDDINGS_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,

    /// Largest accepted request body, bytes (larger: 413).
    #[arg(long, env = "EMBEDDINGS_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most inputs in one request (more: 422).
    #[arg(long, env = "EMBEDDINGS_MAX_INPUTS", default_value_t = 256)]
    pub max_inputs: usize,

    /// Most characters in one input (more: 422).
    #[arg(long, env = "EMBEDDINGS_MAX_INPUT_CHARS", default_value_t = 16_384)]
    pub max_input_chars: usize,

    /// Seconds a request may take in total, reading the body included (then
    /// 408 or 504); 1 to 3600.
    #[arg(
        long,
        env = "EMBEDDINGS_REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub request_timeout_secs: u64,

    /// Embedding requests handled at once (reading, queued or computing);
    /// more are answered 429 at once, with `Retry-After`.
    #[arg(
        long,
        env = "EMBEDDINGS_MAX_CONCURRENT_REQUESTS",
        default_value_t = 512,
        value_parser = clap::value_parser!(u64).range(1..=100_000)
    )]
    pub max_concurrent_requests: u64,

    /// Seconds the request body may take to arrive (then 408), within the
    /// request timeout; 1 to 3600.
    #[arg(
        long,
        env = "EMBEDDINGS_BODY_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub body_timeout_secs: u64,

    /// Seconds to let in-flight requests finish after SIGTERM / SIGINT; 0 to 3600.
    #[arg(
        long,
        env = "EMBEDDINGS_SHUTDOWN_GRACE_SECS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub shutdown_grace_secs: u64,

    /// Most connections open at once; more are closed as soon as accepted
    /// (counted in `embeddings_http_connections_refused_total`).
    #[arg(
        long,
        env = "EMBEDDINGS_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub max_connections: u64,

    /// Seconds a client has to send a request's headers, and the longest a
    /// keep-alive connection may stay idle (hyper ties the two); 1 to 3600.
    /// The default, 65, outlasts the usual load-balancer idle timeout (60 s),
    /// so a balancer never reuses a connection the server has just closed.
    #[arg(
        long,
        env = "EMBEDDINGS_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 65,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_read_timeout_secs: u64,

    /// An API key clients must send as `Authorization: Bearer KEY` on the
    /// embedding routes; repeat the flag (or separate with commas in
    /// `EMBEDDINGS_API_KEY`) for several. At least 16 characters. No key:
    /// the server is open to whoever reaches its port.
    #[arg(
        long = "api-key",
        env = "EMBEDDINGS_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// A file of API keys, one per line (`#` comments and blank lines
    /// skipped), in addition to `--api-key`.
    #[arg(long, env = "EMBEDDINGS_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Also require the key on `/metrics`, `/health` and `/info` (the
    /// probes `/livez`, `/readyz`, `/startupz` always stay open).
    #[arg(long, env = "EMBEDDINGS_PROTECT_OBSERVABILITY")]
    pub protect_observability: bool,

    /// Compute threads (the pool candle and the tokenizer run on); 1 to
    /// 1024. Default: the cgroup CPU quota in whole cores when it is below
    /// the CPUs the process may run on, else those CPUs (see `cpu.rs`).
    #[arg(
        long,
        env = "EMBEDDINGS_THREADS",
        value_parser = clap::value_parser!(u64).range(1..=1024)
    )]
    pub threads: Option<u64>,

    /// Where the cgroup filesystem is mounted (the CPU quota and throttling
    /// counters are read there).
    #[arg(long, env = "EMBEDDINGS_CGROUP_ROOT", default_value = crate::cpu::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,

    /// The slot TEI's `POST /embed` (and `POST /`) serves: a dense slot
    /// name (`GET /v1/models` lists them).
    #[arg(long, env = "EMBEDDINGS_TEI_SLOT", default_value = "semantic", value_parser = dense_slot)]
    pub tei_slot: ModelId,

    /// Alert rules for the in-process engine (TOML: `[[rules]]` with
    /// `name`, `metric`, `threshold`, `for_seconds`, `hysteresis`,
    /// `severity`); default: `embeddings-health`'s recommended rules.
    #[arg(long, env = "EMBEDDINGS_ALERT_RULES")]
    pub alert_rules: Option<PathBuf>,

    /// Seconds between evaluations of the alert rules; 1 to 3600.
    #[arg(
        long,
        env = "EMBEDDINGS_ALERT_INTERVAL_SECS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub alert_interval_secs: u64,

    /// Seconds between runs of the quality canary (the shipped probe
    /// sentences re-embedded through every slot and compared with their
    /// start-up and reference vectors; `GET /quality`); 0 turns it off.
    /// It runs once as soon as the pipeline is loaded, then only while no
    /// request is admitted.
    #[arg(
        long,
        env = "EMBEDDINGS_CANARY_INTERVAL_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(0..=86_400)
    )]
    pub canary_interval_secs: u64,

    /// Show full filesystem paths in error bodies, `/health`, `/info` and
    /// the probes (for debugging); by default they name `…/parent/file`, and
    /// only the log has the full path.
    #[arg(long, env = "EMBEDDINGS_SHOW_PATHS")]
    pub show_paths: bool,

    /// Exit with a non-zero status when the pipeline fails to load (for
    /// supervisors that restart on exit), instead of serving 503 with the
    /// reason on `/health`, `/readyz` and `/startupz`.
    #[arg(long, env = "EMBEDDINGS_EXIT_ON_LOAD_FAILURE")]
    pub exit_on_load_failure: bool,
}
