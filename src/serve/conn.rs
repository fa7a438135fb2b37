//! Connections: the accept loop, run by hand on hyper instead of through
//! `axum::serve`, so that every connection is bounded.
//!
//! - At most `max_connections` are open at once. One over the cap is not
//!   left waiting in the kernel's queue (its client could not tell a slow
//!   server from a full one): it is answered 503 `too_many_connections`
//!   with `Retry-After` and closed.
//! - A request's header must arrive whole within `header_timeout`, counted
//!   from its first byte, or for a new connection from its accept (so a
//!   connection that says nothing is closed too). A header cut short gets
//!   408 `header_timeout`; a silent new connection is just closed.
//! - Between requests a keep-alive connection may stay silent for
//!   `idle_timeout`, then it is closed; a client that reads nothing of an
//!   answer for `idle_timeout` is dropped as well.
//! - On shutdown a connection with no request in the router is closed at
//!   once (a header sent in part holds nothing up); one with a request in
//!   the router finishes its answer, then closes.
//! - hyper answers a request it cannot parse (bad request line, bad
//!   `Content-Length`, too many headers) with an empty body before any
//!   router sees it; `TimedIo` puts a JSON body in that answer, so every
//!   error the service sends is JSON. A request line of another major
//!   version (`GET / HTTP/2.0`) is answered 505 instead of hyper's 400.
//! - A connection that opens with the HTTP/2 preface (`PRI * HTTP/2.0`),
//!   which hyper would close without a word, is answered 505 with a JSON
//!   body by `TimedIo` itself, and closed.
//! - A request with a transfer coding other than `chunked` alone (`gzip,
//!   chunked`: hyper decodes the chunks and would hand the router gzip
//!   bytes as if plain) is answered 501 before any body is read, and the
//!   connection closed. One whose last coding is not `chunked` is hyper's
//!   400: its body's length cannot be known.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{debug, warn};

use super::api::ApiError;
use crate::text::quoted;

/// What bounds a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Connections over the cap that are being answered 503 at once; past
/// this many more are closed without a word, so a flood of them costs
/// nothing but the accept.
const REFUSING: usize = 64;

/// How much of a request's header is kept to say what was wrong with it.
const HEAD_KEPT: usize = 16 * 1024;

/// How an HTTP/2 connection preface begins: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
/// hyper takes the bytes before the last for the start of a request line
/// and waits; `TimedIo` keeps from it the read that completes them.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2";

/// What a connection refused by `TimedIo` itself may still send, read and
/// dropped so that closing does not reset the connection before the client
/// has read the answer: at most this many bytes, for at most `DRAIN_TIME`.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// What a connection's task and its reader share.
#[derive(Default)]
struct ConnState {
    /// Requests in the router whose answer is not yet written whole.
    busy: AtomicUsize,
    /// Answers written whole: the reader starts the idle wait after each.
    finished: AtomicU64,
    /// Bytes of a request header have arrived, or the connection is new,
    /// and no complete header yet: nothing to finish on shutdown.
    in_head: AtomicBool,
    /// The reader, when it waited while a request was in the router: woken
    /// when the answer is written, so that the idle deadline starts then.
    reader: std::sync::Mutex<Option<std::task::Waker>>,
}

/// A request in the router, from the call until its answer's body is
/// dropped (written, or the connection gone).
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::AcqRel);
        state.in_head.store(false, Ordering::Release);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        let waker = match self.0.reader.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// An answer's body, holding its request's `Busy` until written.
struct Tracked {
    body: Body,
    _busy: Busy,
}

/// A finished answer given to hyper a slice at a time, holding `held` (a
/// batch's scoring slot) until the last slice is taken. hyper asks for the
/// next slice only when it has written most of the one before, so the slot
/// is freed when the answer has left, not when it was made: a client that
/// reads slowly keeps its batch's place.
pub(crate) struct SlicedAnswer<T> {
    bytes: Bytes,
    at: usize,
    held: Option<T>,
}

impl<T> SlicedAnswer<T> {
    const SLICE: usize = 64 << 10;

    pub fn new(bytes: Vec<u8>, held: T) -> Self {
        SlicedAnswer {
            bytes: Bytes::from(bytes),
            at: 0,
            held: Some(held),
        }
    }
}

impl<T: Unpin> HttpBody for SlicedAnswer<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.at >= this.bytes.len() {
            this.held = None;
            return Poll::Ready(None);
        }
        let end = (this.at + Self::SLICE).min(this.bytes.len());
        let slice = this.bytes.slice(this.at..end);
        this.at = end;
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.bytes.len() - self.at) as u64)
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Which deadline the reader is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Between requests, no byte of the next one yet: `idle_timeout`.
    Idle,
    /// A header under way (or a new connection): `header_timeout`.
    Head,
}

/// The socket as hyper sees it, with the header and idle deadlines, a
/// deadline on writes that make no progress, and JSON bodies for hyper's
/// own error answers.
struct TimedIo {
    tcp: TcpStream,
    state: Arc<ConnState>,
    limits: Limits,
    wait: Wait,
    seen_finished: u64,
    deadline: Pin<Box<Sleep>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// The start of the header being read.
    head: Vec<u8>,
    /// The answer written instead of hyper's, and how much of it is sent.
    replacement: Option<(Vec<u8>, usize)>,
    /// Refusing the connection without hyper (an HTTP/2 preface).
    refusing: Option<Refusing>,
}

/// Where `TimedIo` is in refusing a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusing {
    /// Sending the answer (in `replacement`).
    Answer,
    /// Shutting the write side.
    Shutdown,
    /// Reading what the client sent, `drained` bytes so far.
    Drain { drained: usize },
}

impl TimedIo {
    fn new(tcp: TcpStream, state: Arc<ConnState>, limits: Limits) -> TimedIo {
        state.in_head.store(true, Ordering::Release);
        TimedIo {
            tcp,
            state,
            limits,
            wait: Wait::Head,
            seen_finished: 0,
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            write_deadline: None,
            head: Vec::new(),
            replacement: None,
            refusing: None,
        }
    }

    /// Refuses the connection: the answer in `replacement` is sent, the
    /// write side shut and what the client sends read for a while, then
    /// hyper is given the end of the stream (it has no request to answer).
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            match self.refusing {
                None => return Poll::Ready(Ok(())),
                Some(Refusing::Answer) => match self.poll_replacement(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.refusing = Some(Refusing::Shutdown),
                    Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                },
                Some(Refusing::Shutdown) => match Pin::new(&mut self.tcp).poll_shutdown(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => self.refusing = Some(Refusing::Drain { drained: 0 }),
                    Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                },
                Some(Refusing::Drain { drained }) => {
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.tcp).poll_read(cx, &mut sink) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !sink.filled().is_empty() => {
                            let drained = drained + sink.filled().len();
                            if drained >= DRAIN_BYTES {
                                return Poll::Ready(Ok(()));
                            }
                            self.refusing = Some(Refusing::Drain { drained });
                        }
                        // The client's end, or an error: done.
                        Poll::Ready(_) => return Poll::Ready(Ok(())),
                    }
                }
            }
        }
    }

    fn timed_out(&mut self) -> io::Error {
        let what = match self.wait {
            Wait::Head => {
                // Best effort: a client that sent part of a header may read
                // this; one that sent nothing gets the close alone.
                if !self.head.is_empty() {
                    let _ = self
                        .tcp
                        .try_write(&header_timeout_answer(self.limits.header_timeout));
                }
                "no complete request header within the header timeout"
            }
            Wait::Idle => "idle past the idle timeout",
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// Sends what is left of the replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent >= bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// A write that has made no progress for `idle_timeout` fails.
    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let idle = self.limits.idle_timeout;
        let d = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        ready!(d.as_mut().poll(cx));
        self.write_deadline = None;
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of the answer within the idle timeout",
        ))
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return this.poll_refuse(cx);
        }
        // A request's body has its own timeout (408 `body_timeout`).
        if this.state.busy.load(Ordering::Acquire) > 0 {
            let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
            if r.is_pending() {
                if let Ok(mut w) = this.state.reader.lock() {
                    *w = Some(cx.waker().clone());
                }
                // The answer may have been written meanwhile.
                if this.state.busy.load(Ordering::Acquire) == 0 {
                    cx.waker().wake_by_ref();
                }
            }
            return r;
        }
        let finished = this.state.finished.load(Ordering::Acquire);
        if finished != this.seen_finished {
            this.seen_finished = finished;
            this.wait = Wait::Idle;
            this.head.clear();
            let at = Instant::now() + this.limits.idle_timeout;
            this.deadline.as_mut().reset(at);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    if this.wait == Wait::Idle {
                        this.wait = Wait::Head;
                        this.state.in_head.store(true, Ordering::Release);
                        let at = Instant::now() + this.limits.header_timeout;
                        this.deadline.as_mut().reset(at);
                    }
                    let room = HEAD_KEPT.saturating_sub(this.head.len());
                    this.head.extend_from_slice(&got[..got.len().min(room)]);
                    if this.head.starts_with(H2_PREFACE_START) {
                        // hyper has seen at most "PRI * HTTP/", which it
                        // takes for the start of a request: it gets none
                        // of this read, and the end of the stream once the
                        // answer is sent.
                        buf.set_filled(before);
                        this.replacement = Some((http2_answer(), 0));
                        this.refusing = Some(Refusing::Answer);
                        this.deadline.as_mut().reset(Instant::now() + DRAIN_TIME);
                        return this.poll_refuse(cx);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(this.timed_out()));
                }
                Poll::Pending
            }
            err => err,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacement.is_none()
            && this.state.busy.load(Ordering::Acquire) == 0
            && is_hyper_error_answer(data)
        {
            this.replacement = Some(parse_error_answer(data, &this.head));
        }
        if this
            .replacement
            .as_ref()
            .is_some_and(|(b, sent)| *sent < b.len())
        {
            if let Poll::Ready(e) = this.poll_write_deadline(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(this.poll_replacement(cx))?;
            this.write_deadline = None;
            return Poll::Ready(Ok(data.len()));
        }
        match Pin::new(&mut this.tcp).poll_write(cx, data) {
            Poll::Pending => match this.poll_write_deadline(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                this.write_deadline = None;
                done
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Whether hyper is writing its own answer to a request it could not
/// parse: a 4xx head with an empty body. The router never answers so (every
/// answer of the service has a JSON body), so nothing else is taken for it.
fn is_hyper_error_answer(data: &[u8]) -> bool {
    if !data.starts_with(b"HTTP/1.1 4") {
        return false;
    }
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    end + 4 == data.len()
        && head.contains("\r\ncontent-length: 0")
        && !head.contains("\r\ncontent-type:")
}

/// A whole HTTP/1.1 answer with a JSON error body; the connection closes.
fn json_answer(status: u16, reason: &str, code: &str, message: &str, extra: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn header_timeout_answer(timeout: Duration) -> Vec<u8> {
    json_answer(
        408,
        "Request Timeout",
        "header_timeout",
        &format!(
            "the request header did not arrive whole within {} s",
            timeout.as_secs_f64()
        ),
        "",
    )
}

/// The JSON answer put in place of hyper's empty one: hyper's status, and
/// what was wrong, found by parsing the header again.
fn parse_error_answer(hyper_answer: &[u8], head: &[u8]) -> (Vec<u8>, usize) {
    let status: u16 = std::str::from_utf8(&hyper_answer[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let (reason, code, message) = match status {
        431 => (
            "Request Header Fields Too Large",
            "header_too_large",
            "the request header is too large or has too many fields (at most 100)".to_string(),
        ),
        414 => (
            "URI Too Long",
            "uri_too_long",
            "the request's path is too long".to_string(),
        ),
        _ => {
            if let Some(line) = other_http_version(head) {
                return (
                    json_answer(
                        505,
                        "HTTP Version Not Supported",
                        "http_version_not_supported",
                        &format!(
                            "the request line {} is not HTTP/1.1: this server speaks HTTP/1.1 only",
                            quoted(&line)
                        ),
                        "",
                    ),
                    0,
                );
            }
            ("Bad Request", "malformed_request", describe_bad_head(head))
        }
    };
    (json_answer(status, reason, code, &message, ""), 0)
}

/// The request line, when it names an HTTP version of another major
/// version than 1 (`GET / HTTP/2.0`, `GET / HTTP/3`).
fn other_http_version(head: &[u8]) -> Option<String> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let line = line.trim_end_matches('\r');
    let version = line.split(' ').nth(2)?;
    let major = version.strip_prefix("HTTP/")?.bytes().next()?;
    (major.is_ascii_digit() && major != b'1').then(|| line.to_string())
}

/// The answer to a connection that opens with the HTTP/2 preface.
fn http2_answer() -> Vec<u8> {
    json_answer(
        505,
        "HTTP Version Not Supported",
        "http_version_not_supported",
        "the connection began with the HTTP/2 preface (\"PRI * HTTP/2.0\"): this server speaks HTTP/1.1 only; send HTTP/1.1 requests (no HTTP/2 with prior knowledge)",
        "",
    )
}

/// Refuses a request whose body has a transfer coding other than `chunked`
/// alone: hyper reads `gzip, chunked` as chunked and would hand on gzip
/// bytes as if plain; no coding but chunked is decoded here. (One whose
/// last coding is not chunked never gets here: hyper answers 400.)
pub(crate) fn check_transfer_coding(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let values: Vec<&[u8]> = headers
        .get_all(axum::http::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let mut codings = values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty());
    let plain = match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(only), None) => only.eq_ignore_ascii_case(b"chunked"),
        _ => false,
    };
    if plain {
        return Ok(());
    }
    let sent = values.join(&b", "[..]);
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "transfer_coding_not_implemented",
        format!(
            "Transfer-Encoding: {}: this server decodes no transfer coding but chunked alone; send the body as it is, with Content-Length or Transfer-Encoding: chunked",
            quoted(&String::from_utf8_lossy(&sent))
        ),
    ))
}

/// What is wrong with a request header hyper refused, as far as one can
/// tell from its first `HEAD_KEPT` bytes.
fn describe_bad_head(head: &[u8]) -> String {
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut fields);
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let first_line = String::from_utf8_lossy(&head[..line_end]);
    let first_line = quoted(first_line.trim_end_matches('\r'));
    match req.parse(head) {
        Err(e) => {
            let place = match e {
                httparse::Error::Token | httparse::Error::Version => {
                    format!("its request line {first_line} (expected METHOD /path HTTP/1.1)")
                }
                httparse::Error::HeaderName => "a header's name".to_string(),
                httparse::Error::HeaderValue => "a header's value".to_string(),
                httparse::Error::NewLine => "a line ending".to_string(),
                httparse::Error::TooManyHeaders => "its header count (at most 100)".to_string(),
                httparse::Error::Status => first_line.clone(),
            };
            format!("the request is not valid HTTP/1.1: {e} in {place}")
        }
        Ok(_) => {
            let lengths: Vec<&[u8]> = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| h.value)
                .collect();
            let chunked = req
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
            if let Some(bad) = lengths.iter().find(|v| {
                let v = String::from_utf8_lossy(v);
                v.trim().is_empty() || !v.trim().bytes().all(|b| b.is_ascii_digit())
            }) {
                format!(
                    "Content-Length: expected a number of bytes, found {}",
                    quoted(&String::from_utf8_lossy(bad))
                )
            } else if lengths.windows(2).any(|w| w[0] != w[1]) {
                "Content-Length: given more than once, with different values".to_string()
            } else if chunked && req.version == Some(0) {
                "Transfer-Encoding: not allowed in HTTP/1.0; send Content-Length".to_string()
            } else if chunked && !lengths.is_empty() {
                "give Content-Length or Transfer-Encoding, not both".to_string()
            } else if chunked {
                "Transfer-Encoding: expected chunked as the last encoding".to_string()
            } else {
                format!("the request {first_line} is not valid HTTP/1.1")
            }
        }
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = stop.wait_for(|s| *s).await.is_ok();
}

/// Serves one connection until it closes, or until shutdown closes it.
async fn serve_conn(tcp: TcpStream, app: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let state = Arc::new(ConnState::default());
    let io = TimedIo::new(tcp, state.clone(), limits);
    let for_requests = state.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = Busy::new(for_requests.clone());
        let mut app = app.clone();
        async move {
            let answer = match check_transfer_coding(req.headers()) {
                Ok(()) => app.call(req).await?,
                Err(e) => {
                    // The body is left unread: the connection closes after.
                    let mut r = e.into_response();
                    r.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    r
                }
            };
            Ok::<_, std::convert::Infallible>(answer.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Our own deadlines, in `TimedIo`; hyper's would count idle time
        // as header time.
        .header_read_timeout(None)
        // A client may shut down its side once its request is sent (as
        // `nc -N` does); without this hyper sometimes dropped the answer.
        .half_close(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!("connection closed: {e}");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
    }
    let in_head = state.in_head.load(Ordering::Acquire);
    if state.busy.load(Ordering::Acquire) > 0 || !in_head {
        // A request in the router, or an answer being flushed: hyper closes
        // after it (at once when idle).
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
    // Else dropped: a header sent in part, or nothing, is not waited for.
}

/// Answers a connection over the cap 503 and closes it.
fn refuse(tcp: TcpStream, refusing: &Arc<Semaphore>, cap: usize) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut tcp = tcp;
        let answer = json_answer(
            503,
            "Service Unavailable",
            "too_many_connections",
            &format!("the server has its limit of {cap} connections open; try again shortly"),
            "retry-after: 1\r\n",
        );
        // A new socket's send buffer is empty: this does not block.
        let _ = tcp.try_write(&answer);
        let _ = tcp.shutdown().await;
        // Closing with unread bytes would reset the connection, and the
        // client could lose the answer: read what it sent, briefly.
        let drain = async {
            let mut buf = [0u8; 4096];
            let mut total = 0;
            while total < 64 * 1024 {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        drop(permit);
    });
}

/// Accepts connections until `stop` turns true; each takes a permit of
/// `open` while it lives.
pub async fn accept(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    open: Arc<Semaphore>,
) {
    let refusing = Arc::new(Semaphore::new(REFUSING));
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    use io::ErrorKind::*;
                    if !matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
                        // Out of file descriptors, most likely: wait for
                        // some to close rather than spin.
                        warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let (app, stop) = (app.clone(), stop.clone());
                tokio::spawn(async move {
                    serve_conn(tcp, app, limits, stop).await;
                    drop(permit);
                });
            }
            Err(_) => refuse(tcp, &refusing, limits.max_connections),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_bodied_4xx_head_is_taken_for_hyper_s_answer() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 01:00:00 GMT\r\n\r\n";
        assert!(is_hyper_error_answer(hyper_400));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(!is_hyper_error_answer(ours));
        let with_body = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert!(!is_hyper_error_answer(with_body));
        assert!(!is_hyper_error_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn a_refused_header_is_described_where_it_is_wrong() {
        let m = describe_bad_head(b"POST /v1/recommend HTTP/1.1\r\nContent-Length: ten\r\n\r\n");
        assert!(m.contains("Content-Length") && m.contains("\"ten\""), "{m}");
        let m = describe_bad_head(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n");
        assert!(m.contains("request line"), "{m}");
        assert!(!m.chars().any(|c| c.is_control()), "{m}");
        let m =
            describe_bad_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert!(m.contains("different values"), "{m}");
        let (answer, _) =
            parse_error_answer(b"HTTP/1.1 431 Request Header Fields Too Large\r\n", b"");
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        let body: serde_json::Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "header_too_large");
        let m = describe_bad_head(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(m.contains("not allowed in HTTP/1.0"), "{m}");
    }

    #[test]
    fn only_chunked_alone_passes_as_a_transfer_coding() {
        use axum::http::{header::TRANSFER_ENCODING, HeaderMap, HeaderValue};
        let check = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            check_transfer_coding(&h)
        };
        for ok in [
            &[][..],
            &["chunked"],
            &["Chunked"],
            &[" chunked "],
            &[", chunked,"],
        ] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
        for refused in [
            &["gzip, chunked"][..],
            &["gzip", "chunked"],
            &["chunked, chunked"],
            &["deflate,chunked"],
            &["chunked;ext=1"],
        ] {
            let e = check(refused).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (501, "transfer_coding_not_implemented")
            );
            assert!(
                e.message.starts_with("Transfer-Encoding: \""),
                "{}",
                e.message
            );
        }
        let e = check(&["gzip", "chunked"]).unwrap_err();
        assert!(e.message.contains("\"gzip, chunked\""), "{}", e.message);
        let mut h = HeaderMap::new();
        let long = format!("{}chunked", "x-\u{9b}[2J, ".repeat(2000));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_str(&long).unwrap());
        let e = check_transfer_coding(&h).unwrap_err();
        assert!(e.message.len() < 400, "{}", e.message);
        assert!(!e.message.chars().any(|c| c.is_control()), "{}", e.message);
    }

    #[test]
    fn another_http_version_is_answered_505() {
        for line in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/3\r\n",
            b"PRI * HTTP/2.0\r\n",
        ] {
            let (answer, _) = parse_error_answer(b"HTTP/1.1 400 Bad Request\r\n", line);
            let text = String::from_utf8(answer).unwrap();
            assert!(
                text.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
                "{text}"
            );
            assert!(text.contains("\"http_version_not_supported\""), "{text}");
        }
        for line in [
            &b"GET / HTTP/1.2\r\n"[..],
            b"GET / HTTX/2\r\n",
            b"GET /\r\n",
            b"",
        ] {
            let (answer, _) = parse_error_answer(b"HTTP/1.1 400 Bad Request\r\n", line);
            assert!(answer.starts_with(b"HTTP/1.1 400 "), "{line:?}");
        }
        let text = String::from_utf8(http2_answer()).unwrap();
        assert!(text.starts_with("HTTP/1.1 505 "), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
    }
}
