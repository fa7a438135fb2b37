//! `seqrec serve MODEL`: the HTTP service (see `crate::serve` and docs/serve.md).

use crate::retrieval::approx::{IndexChoice, SearchList};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use tracing::level_filters::LevelFilter;

use crate::serve::{self, ServeConfig, ServeError};

/// The service's defaults live in one place, `ServeConfig::default()`.
fn defaults() -> ServeConfig {
    ServeConfig::default()
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model file written by `seqrec train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Address to listen on; port 0 picks a free port (the ready line on stderr names it).
    #[arg(long, default_value_t = defaults().addr, value_name = "HOST:PORT")]
    pub addr: String,
    /// Largest request body; larger ones get 413.
    #[arg(long, default_value_t = defaults().max_body_bytes, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request body; slower ones get 408.
    #[arg(long, default_value_t = defaults().body_timeout.as_secs_f64(), value_name = "S")]
    pub body_timeout_s: f64,
    /// Most item ids (or titles) in one history.
    #[arg(long, default_value_t = defaults().max_history, value_name = "N")]
    pub max_history: usize,
    /// Most requests in one `/v1/recommend/batch` call.
    #[arg(long, default_value_t = defaults().max_batch, value_name = "N")]
    pub max_batch: usize,
    /// Most items one `/v1/recommend/batch` call may ask for in all (the sum of its requests' k); more gets 400 batch_too_much_work.
    #[arg(long, default_value_t = defaults().max_batch_items, value_name = "N")]
    pub max_batch_items: usize,
    /// Batch requests scored at once; one more gets 503 with Retry-After instead of waiting.
    #[arg(long, default_value_t = defaults().max_concurrent_batches, value_name = "N")]
    pub max_concurrent_batches: usize,
    /// Single requests waiting for a scorer thread; one more gets 503 with Retry-After.
    #[arg(long, default_value_t = defaults().max_queued, value_name = "N")]
    pub max_queued: usize,
    /// Connections open at once; one more is answered 503 with Retry-After and closed.
    #[arg(long, default_value_t = defaults().max_connections, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a request's header may take to arrive whole, from its first byte (for a new connection, from its accept); slower ones get 408 and are closed.
    #[arg(long, default_value_t = defaults().header_timeout.as_secs_f64(), value_name = "S")]
    pub header_timeout_s: f64,
    /// Seconds a keep-alive connection may stay silent between requests (or leave an answer unread) before it is closed.
    #[arg(long, default_value_t = defaults().idle_timeout.as_secs_f64(), value_name = "S")]
    pub idle_timeout_s: f64,
    /// Micro-batcher: how long a single request may wait for others to be scored with it, in microseconds, counted from its arrival (0: off, each request scored alone).
    #[arg(long, default_value_t = defaults().batch_window.as_micros() as u64, value_name = "US")]
    pub batch_window_us: u64,
    /// Micro-batcher: the most single requests scored in one call.
    #[arg(long, default_value_t = defaults().batch_max, value_name = "N")]
    pub batch_max: usize,
    /// Reload the model when its file's modification time changes (checked every second); SIGHUP always reloads.
    #[arg(long)]
    pub watch: bool,
    /// Serve POST /v1/admin/reload; needs --token-file.
    #[arg(long)]
    pub admin: bool,
    /// Answer requests naming a user of the training data (`"user"`) from the histories stored in the model file; off, only histories sent by the client are scored.
    #[arg(long)]
    pub allow_user_lookup: bool,
    /// A file holding a bearer token (read once at start, trimmed): every route but /healthz then asks for `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    // clap would show `[default: 0]` beside the text saying what 0 does:
    // two defaults for one flag. The text names the one that applies.
    /// Threads of the async runtime that handle connections [default: one per core].
    #[arg(long, default_value_t = defaults().io_threads, hide_default_value = true, value_name = "N")]
    pub io_threads: usize,
    /// Threads that score single requests [default: one per two cores, at least one]; batch requests use every core.
    #[arg(long, default_value_t = defaults().score_threads, hide_default_value = true, value_name = "N")]
    pub score_threads: usize,
    /// Seconds that requests in flight may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = defaults().shutdown_grace.as_secs(), value_name = "S")]
    pub shutdown_grace_s: u64,
    /// Top-K: exact (score every item), approx (the HNSW graph, cached beside the model file as MODEL.index) or auto (approx above 100,000 items).
    #[arg(long, value_enum, default_value_t = defaults().index)]
    pub index: IndexChoice,
    /// Approximate index: candidates its walk keeps (ef) [default: 40]. Longer finds more of the exact top-K and answers slower; the graph and its cache stay the same.
    #[arg(long, value_name = "N")]
    pub search_list: Option<SearchList>,
    /// Log level on stderr: error, warn, info, debug, trace or off.
    #[arg(long, default_value_t = defaults().log_level.to_string().to_lowercase(), value_name = "LEVEL")]
    pub log_level: String,
}

pub fn serve(args: ServeArgs, _quiet: bool) -> Result<()> {
    let log_level: LevelFilter = match args.log_level.parse() {
        Ok(l) => l,
        Err(_) => bail!(
            "--log-level: expected error, warn, info, debug, trace or off, found {:?}",
            args.log_level
        ),
    };
    // Seconds out of range (or not finite) become a duration the library's
    // check refuses, never a panic in `Duration::from_secs_f64`.
    let seconds = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO);
    serve::run(ServeConfig {
        model: args.model,
        addr: args.addr,
        max_body_bytes: args.max_body_bytes,
        body_timeout: seconds(args.body_timeout_s),
        max_history: args.max_history,
        max_batch: args.max_batch,
        max_batch_items: args.max_batch_items,
        max_concurrent_batches: args.max_concurrent_batches,
        max_queued: args.max_queued,
        max_connections: args.max_connections,
        header_timeout: seconds(args.header_timeout_s),
        idle_timeout: seconds(args.idle_timeout_s),
        batch_window: Duration::from_micros(args.batch_window_us),
        batch_max: args.batch_max,
        watch: args.watch,
        admin: args.admin,
        allow_user_lookup: args.allow_user_lookup,
        token_file: args.token_file,
        io_threads: args.io_threads,
        score_threads: args.score_threads,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_s),
        log_level,
        index: args.index,
        search_list: args.search_list,
    })
    .map_err(|e| match e {
        // Say which flag chose the address.
        ServeError::Listen { addr, source } => {
            anyhow::Error::new(source).context(format!("cannot listen on {addr} (--addr)"))
        }
        // The library names `ServeConfig`'s fields; here, the flags.
        ServeError::Setting { key, message } => {
            anyhow::anyhow!("{}: {message}", serve_flag(key))
        }
        ServeError::AdminWithoutToken => {
            anyhow::anyhow!("--admin: the admin routes need a bearer token: give --token-file FILE")
        }
        ServeError::Token { path, why } => {
            anyhow::anyhow!("{path}: the token file (--token-file) is refused: {why}")
        }
        e => e.into(),
    })
}

/// The flag that sets a `ServeConfig` field: durations take their unit in
/// the flag's name (`body_timeout` is `--body-timeout-s`).
fn serve_flag(key: &str) -> String {
    match key {
        "body_timeout" | "header_timeout" | "idle_timeout" | "shutdown_grace" => {
            format!("{}-s", super::flag(key))
        }
        "batch_window" => "--batch-window-us".into(),
        key => super::flag(key),
    }
}
