//! `seqrec serve`: the HTTP service (axum routes on hyper, on tokio; the
//! connections and their limits in `conn`).
//!
//! Routes: `POST /v1/recommend`, `POST /v1/recommend/batch`,
//! `GET /v1/items/{id}`, `GET /v1/model`, `GET /healthz`,
//! `GET /openapi.json`, and with `--admin` `POST /v1/admin/reload`.
//! Every error is JSON, `{"error": {"code", "message"}}`, and nothing a
//! client sends can panic the service. Scoring runs on rayon's pool, off the
//! async runtime, optionally through the micro-batcher (`batcher`). The
//! model is swapped on SIGHUP (and with `--watch` when its file changes)
//! without dropping a request; a file that does not load is refused and the
//! model in place keeps serving. SIGINT/SIGTERM stop accepting connections,
//! close those without a request in progress and let requests in flight
//! finish. Batches are bounded in work (`max_batch_items`) and, with single
//! requests, in how many are scored or wait at once: overload is shed with
//! 503 and `Retry-After`, not queued without bound.

pub mod api;
pub mod batcher;
pub mod conn;
pub mod model;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tracing::level_filters::LevelFilter;
use tracing::{debug, error, info, warn};

use api::{json_response, ApiError};
use batcher::{on_pool, ScoreError, ScoreRequest, Scorer};
use model::{file_stamp, Loaded, ModelError, ModelSlot};

use crate::retrieval::approx::IndexChoice;
use crate::retrieval::Scored;
use crate::text::quoted;

/// The OpenAPI 3 description of the service, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Why the service could not start or stopped, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: the token file (token_file) is refused: {why}")]
    Token { path: String, why: String },
    /// Admin routes open to anyone who reaches the port: refused.
    #[error("admin: the admin routes need a bearer token: give token_file")]
    AdminWithoutToken,
    /// A setting out of range, named by its `ServeConfig` field.
    #[error("{key}: {message}")]
    Setting { key: &'static str, message: String },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot handle {signal}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The task loading the first model did not finish.
    #[error("loading the model failed")]
    LoadTask(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot start the scorer threads")]
    Scorer(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the address listened on")]
    LocalAddr(#[source] std::io::Error),
    #[error("the server task failed")]
    ServerTask(#[source] tokio::task::JoinError),
    #[error("the server failed")]
    Server(#[source] std::io::Error),
    /// A reload that did not happen; `reason` is the whole chain of causes,
    /// since this message is what the log and `POST /v1/admin/reload` show.
    #[error("{why}: reload of {path} refused: {reason}; still serving generation {serving}")]
    ReloadRefused {
        why: String,
        path: String,
        reason: String,
        serving: u64,
    },
}

type Result<T, E = ServeError> = std::result::Result<T, E>;

/// An error and its causes on one line, `outer: inner: ...`.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// File descriptors kept for what is not a connection: the listener, the
/// model file and its index, logs, the runtime's own.
const SPARE_FILES: u64 = 64;

/// Each connection is a file descriptor, and the usual soft limit (1024)
/// is below what `--max-connections` may ask: the soft limit is raised
/// toward the hard one, and a cap that still cannot be reached is said
/// (past it, connections would wait in the kernel's queue, unrefused).
fn make_room_for_connections(max_connections: usize) -> Option<String> {
    #[cfg(unix)]
    {
        let wanted = max_connections as u64 + SPARE_FILES;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write the struct given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        // rlim_t is u64 on Linux, not on every unix.
        #[allow(clippy::unnecessary_cast)]
        let (soft, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
        if soft >= wanted {
            return None;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted.min(hard) as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        let now = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            wanted.min(hard)
        } else {
            soft
        };
        if now < wanted {
            return Some(format!(
                "--max-connections {max_connections} needs {wanted} open files, but this process \
                 may open only {now} (ulimit -n); about {} connections can be served at once. \
                 Raise the limit (ulimit -n {wanted}) or lower --max-connections",
                now.saturating_sub(SPARE_FILES)
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
    None
}

/// The most connections `--max-connections` may allow (each is a file
/// descriptor; the wait for all to close counts them in a `u32`).
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// Everything `seqrec serve` is told, defined once: each field is its flag
/// (`--max-history`; a duration's flag names its unit, `--body-timeout-s`),
/// its default is declared here and `Default` is the command line with
/// nothing but a model given, and `validate` checks the ranges. The
/// command line flattens it as it is.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// A model file written by `seqrec train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Address to listen on; port 0 picks a free port (the ready line on stderr names it).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    /// Largest request body; larger ones get 413.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request body; slower ones get 408.
    #[arg(long = "body-timeout-s", default_value = "30", value_name = "S", value_parser = seconds)]
    pub body_timeout: Duration,
    /// Most item ids (or titles) in one history.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_history: usize,
    /// Most requests in one `/v1/recommend/batch` call.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_batch: usize,
    /// Most items one `/v1/recommend/batch` call may ask for in all (the sum of its requests' k); more gets 400 batch_too_much_work.
    // 1000 requests at k 100: an answer of about 6.6 MB.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_batch_items: usize,
    /// Batch requests scored at once; one more gets 503 with Retry-After instead of waiting.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_concurrent_batches: usize,
    /// Single requests waiting for a scorer thread; one more gets 503 with Retry-After.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_queued: usize,
    /// Connections open at once; one more is answered 503 with Retry-After and closed.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a request's header may take to arrive whole, from its first byte (for a new connection, from its accept); slower ones get 408 and are closed.
    #[arg(long = "header-timeout-s", default_value = "10", value_name = "S", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Seconds a keep-alive connection may stay silent between requests (or leave an answer unread) before it is closed.
    #[arg(long = "idle-timeout-s", default_value = "60", value_name = "S", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Micro-batcher: how long a single request may wait for others to be scored with it, in microseconds, counted from its arrival (0: off, each request scored alone).
    #[arg(long = "batch-window-us", default_value = "20", value_name = "US", value_parser = microseconds)]
    pub batch_window: Duration,
    /// Micro-batcher: the most single requests scored in one call.
    #[arg(long, default_value_t = 64, value_name = "N")]
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
    #[arg(long, default_value_t = 0, hide_default_value = true, value_name = "N")]
    pub io_threads: usize,
    /// Threads that score single requests [default: one per two cores, at least one]; batch requests use every core.
    #[arg(long, default_value_t = 0, hide_default_value = true, value_name = "N")]
    pub score_threads: usize,
    /// Seconds that requests in flight may take to finish after SIGINT/SIGTERM.
    #[arg(long = "shutdown-grace-s", default_value = "30", value_name = "S", value_parser = whole_seconds)]
    pub shutdown_grace: Duration,
    /// Top-K: exact (score every item), approx (the HNSW graph, cached beside the model file as MODEL.index) or auto (approx above 100,000 items).
    #[arg(long, value_enum, default_value_t = IndexChoice::Auto)]
    pub index: IndexChoice,
    /// Approximate index: candidates its walk keeps (ef) [default: 40]. Longer finds more of the exact top-K and answers slower; the graph and its cache stay the same.
    #[arg(long, value_name = "N")]
    pub search_list: Option<crate::retrieval::approx::SearchList>,
    /// Log level on stderr: error, warn, info, debug, trace or off.
    #[arg(long, default_value = "info", value_name = "LEVEL", value_parser = log_level)]
    pub log_level: LevelFilter,
}

/// A number of seconds (a fraction allowed) as a duration; what is no
/// duration (negative, not finite) is refused here, ranges by `validate`.
fn seconds(text: &str) -> std::result::Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| "expected a number of seconds above 0 (at most a day)".to_string())
}

fn whole_seconds(text: &str) -> std::result::Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| "expected a whole number of seconds".to_string())
}

fn microseconds(text: &str) -> std::result::Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_micros)
        .map_err(|_| "expected a whole number of microseconds".to_string())
}

fn log_level(text: &str) -> std::result::Result<LevelFilter, String> {
    text.parse()
        .map_err(|_| "expected error, warn, info, debug, trace or off".to_string())
}

impl ServeConfig {
    /// Says which setting is out of range, by its field, before anything
    /// starts (`run` calls it; the command line names the flag).
    pub fn validate(&self) -> Result<()> {
        let setting = |key: &'static str, message: String| ServeError::Setting { key, message };
        for (key, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_history", self.max_history),
            ("max_batch", self.max_batch),
            ("batch_max", self.batch_max),
            ("max_batch_items", self.max_batch_items),
            ("max_concurrent_batches", self.max_concurrent_batches),
            ("max_queued", self.max_queued),
            ("max_connections", self.max_connections),
        ] {
            if v == 0 {
                return Err(setting(key, "expected at least 1".into()));
            }
        }
        if self.max_connections > MAX_CONNECTIONS {
            return Err(setting(
                "max_connections",
                format!(
                    "expected at most {MAX_CONNECTIONS}, found {}",
                    self.max_connections
                ),
            ));
        }
        for (key, d) in [
            ("body_timeout", self.body_timeout),
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(86_400) {
                return Err(setting(
                    key,
                    format!(
                        "expected a number of seconds above 0 (at most a day), found {}",
                        d.as_secs_f64()
                    ),
                ));
            }
        }
        if self.batch_window > Duration::from_secs(1) {
            return Err(setting(
                "batch_window",
                format!(
                    "expected at most 1000000 µs (one second), found {}",
                    self.batch_window.as_micros()
                ),
            ));
        }
        for (key, threads) in [
            ("io_threads", self.io_threads),
            ("score_threads", self.score_threads),
        ] {
            // 0 is each one's default here, not one per core.
            if threads > crate::workers::MAX_THREADS {
                return Err(setting(
                    key,
                    format!(
                        "expected 0 (the default) to {}, found {threads}",
                        crate::workers::MAX_THREADS
                    ),
                ));
            }
        }
        if self.admin && self.token_file.is_none() {
            return Err(ServeError::AdminWithoutToken);
        }
        Ok(())
    }
}

impl Default for ServeConfig {
    /// The command line's values with nothing but the model file given.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let command = ServeConfig::augment_args(clap::Command::new("serve"));
        let matches = command
            .try_get_matches_from(["serve", "seqrec-model.safetensors"])
            .expect("every flag has a default");
        ServeConfig::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// What every handler shares.
pub struct AppState {
    pub models: Arc<ModelSlot>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_history: usize,
    pub max_batch: usize,
    pub max_batch_items: usize,
    pub max_concurrent_batches: usize,
    /// One permit per batch request being scored.
    pub batch_slots: Arc<tokio::sync::Semaphore>,
    pub scorer: Scorer,
    pub allow_user_lookup: bool,
    /// The SHA-256 of the bearer token, when one is asked for.
    pub token: Option<[u8; 32]>,
}

type Shared = Arc<AppState>;

impl AppState {
    fn batch_slots_total(&self) -> usize {
        self.max_concurrent_batches
    }

    /// The top `k` for one history, on the scoring pool.
    async fn score(&self, req: ScoreRequest) -> Result<Vec<Scored>, ApiError> {
        let found = self
            .scorer
            .submit(req)
            .await
            .unwrap_or(Err(ScoreError::Dropped));
        found.map_err(|e| match e {
            ScoreError::Overloaded(queued) => ApiError::overloaded(format!(
                "{queued} requests are already waiting to be scored, the most this server queues; try again shortly"
            )),
            e => {
                error!("{e}");
                ApiError::internal(e.to_string())
            }
        })
    }
}

/// The router with every route, for `run` and for tests in-process.
pub fn router(state: Shared, admin: bool) -> Router {
    let mut r = Router::new()
        .route("/v1/recommend", post(recommend))
        .route("/v1/recommend/batch", post(recommend_batch))
        .route("/v1/items/{id}", get(item))
        .route("/v1/model", get(model_info))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi));
    if admin {
        r = r.route("/v1/admin/reload", post(admin_reload));
    }
    let r = r
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let r = if state.token.is_some() {
        r.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
    } else {
        r
    };
    r.with_state(state)
}

/// The SHA-256 of a token: tokens are compared by digest, so the time a
/// comparison takes says nothing about how much of a guess was right.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Reads the bearer token: a regular file of at most 4 KiB, trimmed, not
/// empty. A token read from a FIFO or a device could block or never end.
pub fn read_token(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let bad = |why: String| ServeError::Token {
        path: path.display().to_string(),
        why,
    };
    // Checked before opening: opening a FIFO would wait for a writer.
    let before = std::fs::metadata(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    if !before.is_file() {
        return Err(bad("expected a regular file".into()));
    }
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(bad("expected a regular file".into()));
    }
    const MAX: u64 = 4096;
    let mut bytes = Vec::new();
    file.take(MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX {
        return Err(bad(format!("expected a token of at most {MAX} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("expected UTF-8 text".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("the file is empty: expected a token".into()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "expected one token on one line (no spaces or control characters)".into(),
        ));
    }
    Ok(token.to_string())
}

/// Every route but `/healthz` asks for `Authorization: Bearer TOKEN`.
async fn require_token(
    State(app): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(want) = app.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let refused = match given {
        None => {
            "this server asks for a bearer token: send the header \"Authorization: Bearer TOKEN\""
        }
        Some(token) => {
            let got = token_digest(token);
            // Every byte compared, whatever the first difference.
            if got.iter().zip(&want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 {
                return next.run(req).await;
            }
            "the bearer token is not this server's"
        }
    };
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", refused).into_response();
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Reads a request body: 413 past `limit` bytes (at once when
/// Content-Length says so), 408 when it takes longer than `timeout`, 400
/// when it is cut off.
async fn read_body(mut body: Body, limit: usize, timeout: Duration) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let collect = async {
        let mut out = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| {
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    let c_text = c.to_string();
                    if !why.ends_with(&c_text) {
                        why = format!("{why}: {c_text}");
                    }
                    cause = c.source();
                }
                ApiError::bad(
                    "body_unreadable",
                    format!(
                        "the request body could not be read ({why}) after {} bytes",
                        out.len()
                    ),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, collect)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            ))
        })
}

fn finish(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            error!(code = e.code, "{}", e.message);
        } else {
            debug!(code = e.code, "{}", e.message);
        }
        e.into_response()
    })
}

async fn recommend(State(app): State<Shared>, body: Body) -> Response {
    finish(recommend_one(&app, body).await)
}

async fn recommend_one(app: &AppState, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, app.max_body_bytes, app.body_timeout).await?;
    let q = api::parse_query(api::parse_json(&body)?, "", app.max_history)?;
    api::check_lookup(&q, "", app.allow_user_lookup)?;
    let model = app.models.get();
    let r = api::resolve(&q, &model.rec, "")?;
    let found = app
        .score(ScoreRequest {
            model: model.clone(),
            history: r.history,
            k: q.k,
            exclude_seen: q.exclude_seen,
            parity: q.parity,
        })
        .await?;
    let mut out = Vec::with_capacity(256 + 96 * found.len());
    out.push(b'{');
    api::write_answer(&mut out, &model.rec, &found, r.skipped.as_deref());
    out.extend_from_slice(b",\"model\":");
    out.extend_from_slice(model.summary_json.as_bytes());
    out.push(b'}');
    Ok(json_response(StatusCode::OK, out))
}

async fn recommend_batch(State(app): State<Shared>, body: Body) -> Response {
    finish(recommend_many(&app, body).await)
}

async fn recommend_many(app: &AppState, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, app.max_body_bytes, app.body_timeout).await?;
    let queries = api::parse_batch(api::parse_json(&body)?, app.max_batch, app.max_history)?;
    let items: usize = queries.iter().map(|q| q.k).sum();
    if items > app.max_batch_items {
        return Err(ApiError::bad(
            "batch_too_much_work",
            format!(
                "requests: the batch asks for {items} items in all (the sum of its k), more than the limit of {}; send fewer requests or smaller k",
                app.max_batch_items
            ),
        ));
    }
    for (i, q) in queries.iter().enumerate() {
        api::check_lookup(q, &format!("requests[{i}]."), app.allow_user_lookup).map_err(
            |mut e| {
                e.index = Some(i);
                e
            },
        )?;
    }
    let model = app.models.get();
    let mut resolved = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let r = api::resolve(q, &model.rec, &format!("requests[{i}].")).map_err(|mut e| {
            e.index = Some(i);
            e
        })?;
        resolved.push(r);
    }
    let histories: Vec<Vec<u32>> = resolved
        .iter_mut()
        .map(|r| std::mem::take(&mut r.history))
        .collect();
    let settings: Vec<(usize, bool, bool)> = queries
        .iter()
        .map(|q| (q.k, q.exclude_seen, q.parity))
        .collect();
    // Held until the answer is written out (the body holds it): scoring
    // and the answer's bytes are what a batch costs in memory.
    let slot = app.batch_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::overloaded(format!(
            "{} batch requests are being scored, the most this server scores at once; try again shortly",
            app.batch_slots_total()
        ))
    })?;
    let m = model.clone();
    let found = on_pool(move || score_grouped(&m, &histories, &settings))
        .await
        .map_err(|e| {
            error!("{e}");
            ApiError::internal(e.to_string())
        })?;
    let mut out = Vec::with_capacity(64 + found.iter().map(|f| 96 * f.len() + 16).sum::<usize>());
    out.extend_from_slice(b"{\"results\":[");
    for (i, (f, r)) in found.iter().zip(&resolved).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        api::write_answer(&mut out, &model.rec, f, r.skipped.as_deref());
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    out.extend_from_slice(model.summary_json.as_bytes());
    out.push(b'}');
    let answer = json_response(StatusCode::OK, Vec::new());
    Ok(answer.map(|_| Body::new(conn::SlicedAnswer::new(out, slot))))
}

/// Scores many histories with one `recommend` call per distinct
/// (exclude_seen, parity), each at the largest `k` asked, then cuts each
/// answer to its own `k`.
pub fn score_grouped(
    model: &Loaded,
    histories: &[Vec<u32>],
    settings: &[(usize, bool, bool)],
) -> Vec<Vec<Scored>> {
    let mut out: Vec<Vec<Scored>> = vec![Vec::new(); histories.len()];
    for ex in [false, true] {
        for parity in [false, true] {
            let idx: Vec<usize> = (0..histories.len())
                .filter(|&i| settings[i].1 == ex && settings[i].2 == parity)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let k = idx.iter().map(|&i| settings[i].0).max().unwrap_or(1);
            let hs: Vec<&[u32]> = idx.iter().map(|&i| histories[i].as_slice()).collect();
            let found = model.rec.recommend(&hs, k, ex, parity);
            for (&i, mut f) in idx.iter().zip(found) {
                f.truncate(settings[i].0);
                out[i] = f;
            }
        }
    }
    out
}

async fn item(State(app): State<Shared>, id: Result<Path<String>, PathRejection>) -> Response {
    let r = (|| {
        let Path(id) = id.map_err(|e| ApiError::bad("invalid_path", e.body_text()))?;
        let model = app.models.get();
        let rec = &model.rec;
        let index = match rec.item_id(&id) {
            Ok(i) => Some(i),
            // A number inside the vocabulary that is no item (padding, gaps).
            Err(_) if rec.catalog.keys.is_none() => id
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&i| (i as usize) < rec.spec.vocab_size),
            Err(_) => None,
        };
        let Some(index) = index else {
            let mut e = ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_item",
                format!("item {} is not in the model's catalogue", quoted(&id)),
            );
            e.set_unknown(&[Value::from(id)]);
            return Err(e);
        };
        let body = json!({
            "id": rec.catalog.key(index),
            "index": index,
            "title": rec.catalog.title(index),
            "is_item": rec.is_item(index),
            "model": {"generation": model.generation},
        });
        Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
    })();
    finish(r)
}

async fn model_info(State(app): State<Shared>) -> Response {
    let model = app.models.get();
    json_response(StatusCode::OK, model.info.to_string().into_bytes())
}

async fn healthz(State(app): State<Shared>) -> Response {
    let model = app.models.get();
    let body = json!({"status": "ok", "generation": model.generation});
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, OPENAPI.as_bytes().to_vec())
}

async fn admin_reload(State(app): State<Shared>) -> Response {
    match reload(app.models.clone(), "POST /v1/admin/reload").await {
        Ok(m) => json_response(
            StatusCode::OK,
            format!("{{\"reloaded\":true,\"model\":{}}}", m.summary_json).into_bytes(),
        ),
        Err(e) => {
            // The answer names the file, not the server's folders.
            let full = app.models.path().display().to_string();
            let name = model::shown_name(&full);
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                e.to_string().replace(&full, &name),
            )
            .into_response()
        }
    }
}

/// The routes and their methods, for 404 and 405 messages.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/recommend"),
    ("POST", "/v1/recommend/batch"),
    ("GET", "/v1/items/{id}"),
    ("GET", "/v1/model"),
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
];

async fn not_found(method: Method, uri: Uri) -> Response {
    let routes: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}; the routes are {}",
            quoted(method.as_str()),
            quoted(uri.path()),
            routes.join(", ")
        ),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, p)| {
            *p == path || (p.ends_with("{id}") && path.starts_with(p.trim_end_matches("{id}")))
        })
        .map(|(m, _)| *m)
        .collect();
    let allowed = if allowed.is_empty() {
        "POST".to_string()
    } else {
        allowed.join(", ")
    };
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}: use {allowed}",
            quoted(method.as_str()),
            quoted(path)
        ),
    )
    .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&allowed) {
        r.headers_mut().insert(axum::http::header::ALLOW, v);
    }
    r
}

/// Reloads the model file off the runtime and logs what happened; the
/// error's message is the one logged.
async fn reload(models: Arc<ModelSlot>, why: &str) -> Result<Arc<Loaded>> {
    let path = models.path().display().to_string();
    let m = models.clone();
    let result = match tokio::task::spawn_blocking(move || m.reload()).await {
        Ok(Ok(loaded)) => Ok(loaded),
        Ok(Err(e)) => Err(with_causes(&e)),
        Err(e) => Err(format!("the reload task failed: {e}")),
    };
    match result {
        Ok(loaded) => {
            info!(
                "{why}: reloaded {path}: now serving generation {} ({})",
                loaded.generation, loaded.summary_json
            );
            Ok(loaded)
        }
        Err(reason) => {
            let e = ServeError::ReloadRefused {
                why: why.to_string(),
                path,
                reason,
                serving: models.get().generation,
            };
            error!("{e}");
            Err(e)
        }
    }
}

fn init_logging(level: LevelFilter) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Scorer threads when `--score-threads` is not given: one per two cores,
/// leaving the rest to the async runtime; but at least two (no more than the
/// cores) when the model served at start walks the approximate graph. A walk
/// waits on memory at every hop, so a second walker keeps a core busy
/// meanwhile: on 2 cores at 10^6 items, 1.4-1.7x the requests a second of one
/// (docs/retrieval.md). A reload keeps the threads the start chose.
fn default_score_threads(cores: usize, walks_graph: bool) -> usize {
    let half = (cores / 2).max(1);
    if walks_graph {
        half.max(2).min(cores.max(1))
    } else {
        half
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub fn run(cfg: ServeConfig) -> Result<()> {
    cfg.validate()?;
    let token = cfg.token_file.as_deref().map(read_token).transpose()?;
    // A client that closes its connection must not kill the process: writes
    // to a closed socket fail with EPIPE instead of raising SIGPIPE.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    init_logging(cfg.log_level);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.io_threads > 0 {
        rt.worker_threads(cfg.io_threads);
    }
    let rt = rt
        .enable_all()
        .thread_name("seqrec-io")
        .build()
        .map_err(ServeError::Runtime)?;
    let result = rt.block_on(serve(cfg, token));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(cfg: ServeConfig, token: Option<String>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a SIGHUP right after the ready line must not kill us.
    let handle = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| ServeError::Signal {
            signal: name,
            source,
        })
    };
    let mut sigint = handle(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = handle(SignalKind::terminate(), "SIGTERM")?;
    let mut sighup = handle(SignalKind::hangup(), "SIGHUP")?;

    let (path, index) = (cfg.model.clone(), cfg.index);
    let graph = crate::retrieval::approx::ApproxSettings::searching(cfg.search_list);
    let models = Arc::new(
        tokio::task::spawn_blocking(move || ModelSlot::load(path, index, graph))
            .await
            .map_err(ServeError::LoadTask)??,
    );

    let score_threads = if cfg.score_threads > 0 {
        cfg.score_threads
    } else {
        default_score_threads(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            models.get().rec.approx_index().is_some(),
        )
    };
    let scorer = Scorer::start(
        score_threads,
        cfg.batch_window,
        cfg.batch_max,
        cfg.max_queued,
    )
    .map_err(ServeError::Scorer)?;
    let stats = scorer.stats.clone();
    let state = Arc::new(AppState {
        models: models.clone(),
        max_body_bytes: cfg.max_body_bytes,
        body_timeout: cfg.body_timeout,
        max_history: cfg.max_history,
        max_batch: cfg.max_batch,
        max_batch_items: cfg.max_batch_items,
        max_concurrent_batches: cfg.max_concurrent_batches,
        batch_slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_batches)),
        scorer,
        allow_user_lookup: cfg.allow_user_lookup,
        token: token.as_deref().map(token_digest),
    });
    let app = router(state, cfg.admin);

    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.addr.clone(),
            source,
        })?;
    let local: SocketAddr = listener.local_addr().map_err(ServeError::LocalAddr)?;

    {
        let models = models.clone();
        tokio::spawn(async move {
            while sighup.recv().await.is_some() {
                let _ = reload(models.clone(), "SIGHUP").await;
            }
        });
    }
    if cfg.watch {
        let models = models.clone();
        tokio::spawn(async move {
            let path = models.path().to_path_buf();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let now = file_stamp(&path);
                // Compared with the file as last read, so a SIGHUP reload
                // is not repeated and a refused file is not retried.
                if now.is_some() && now != models.last_stamp() {
                    let _ = reload(models.clone(), "model file changed").await;
                }
            }
        });
    }

    let m = models.get();
    let batching = if cfg.batch_window.is_zero() {
        "off".to_string()
    } else {
        format!(
            "window {} us, up to {}",
            cfg.batch_window.as_micros(),
            cfg.batch_max
        )
    };
    info!(
        "listening on http://{local} (model {}, generation {}: {}; {score_threads} scorer thread(s), micro-batcher {batching}{}{}{})",
        cfg.model.display(),
        m.generation,
        m.summary_json,
        if cfg.watch { "; watching the file" } else { "" },
        if cfg.admin { "; admin routes on" } else { "" },
        match (token.is_some(), cfg.allow_user_lookup) {
            (true, true) => "; bearer token asked; user look-ups on",
            (true, false) => "; bearer token asked",
            (false, true) => "; user look-ups on",
            (false, false) => "",
        },
    );
    drop(m);

    let max_conns = cfg.max_connections.clamp(1, MAX_CONNECTIONS);
    if let Some(w) = make_room_for_connections(max_conns) {
        warn!("{w}");
    }
    let open = Arc::new(tokio::sync::Semaphore::new(max_conns));
    let limits = conn::Limits {
        max_connections: max_conns,
        header_timeout: cfg.header_timeout,
        idle_timeout: cfg.idle_timeout,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let accepting = tokio::spawn(conn::accept(listener, app, limits, stop_rx, open.clone()));
    let which = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    };
    let _ = stop_tx.send(true);
    accepting.await.map_err(ServeError::ServerTask)?;
    info!(
        "{which}: shutting down: {} connection(s) open; those without a request in progress are closed, the requests in flight finish",
        max_conns - open.available_permits()
    );
    // Every connection's task holds a permit: all back means all closed.
    let grace = cfg.shutdown_grace;
    match tokio::time::timeout(grace, open.acquire_many(max_conns as u32)).await {
        Ok(_) => {
            let (calls, requests) = (
                stats.calls.load(std::sync::atomic::Ordering::Relaxed),
                stats.requests.load(std::sync::atomic::Ordering::Relaxed),
            );
            info!(
                "stopped; scored {requests} single request(s) in {calls} call(s), {:.2} per call",
                requests as f64 / calls.max(1) as f64
            );
        }
        Err(_) => warn!(
            "requests still open {} s after the signal: closing them",
            grace.as_secs()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn scorer_threads_are_half_the_cores_and_two_for_a_graph_where_there_are_two() {
        use super::default_score_threads as threads;
        let cases = [
            (1, false, 1),
            (1, true, 1),
            (2, false, 1),
            (2, true, 2),
            (3, true, 2),
            (4, false, 2),
            (4, true, 2),
            (16, false, 8),
            (16, true, 8),
        ];
        for (cores, graph, want) in cases {
            assert_eq!(threads(cores, graph), want, "{cores} cores, graph {graph}");
        }
    }

    #[test]
    fn the_openapi_document_is_json_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for (method, path) in super::ROUTES {
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(op.is_object(), "{method} {path} is not documented");
        }
    }

    #[test]
    fn a_config_out_of_range_is_refused_by_its_field_before_anything_starts() {
        use super::{ServeConfig, ServeError};
        use std::time::Duration;
        assert!(ServeConfig::default().validate().is_ok());
        let key = |cfg: ServeConfig| match cfg.validate() {
            Err(ServeError::Setting { key, message }) => format!("{key}: {message}"),
            other => format!("{other:?}"),
        };
        let base = ServeConfig::default;
        let cases = [
            (
                ServeConfig {
                    max_history: 0,
                    ..base()
                },
                "max_history: expected at least 1",
            ),
            (
                ServeConfig {
                    max_connections: usize::MAX,
                    ..base()
                },
                "max_connections: expected at most",
            ),
            (
                ServeConfig {
                    body_timeout: Duration::ZERO,
                    ..base()
                },
                "body_timeout: expected a number of seconds above 0",
            ),
            (
                ServeConfig {
                    idle_timeout: Duration::from_secs(86_401),
                    ..base()
                },
                "idle_timeout: expected",
            ),
            (
                ServeConfig {
                    batch_window: Duration::from_secs(2),
                    ..base()
                },
                "batch_window: expected at most 1000000",
            ),
            (
                ServeConfig {
                    score_threads: 1_000_000,
                    ..base()
                },
                "score_threads: expected 0 (the default) to 1024, found 1000000",
            ),
            (
                ServeConfig {
                    io_threads: 5_000,
                    ..base()
                },
                "io_threads: expected 0",
            ),
        ];
        for (cfg, expected) in cases {
            let got = key(cfg);
            assert!(got.starts_with(expected), "{got}");
        }
        let open_admin = ServeConfig {
            admin: true,
            ..base()
        };
        assert!(matches!(
            open_admin.validate(),
            Err(ServeError::AdminWithoutToken)
        ));
    }
}
