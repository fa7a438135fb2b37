//! `seqrec serve` end to end: the real binary on a free loopback port, every
//! route, every kind of bad input, a body cut off mid-way, hot swaps on
//! SIGHUP and `--watch` (a corrupt file refused, a good one taken), and a
//! clean stop on SIGTERM that lets a request in flight finish.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{ok, train_one_epoch};

const BIN: &str = env!("CARGO_BIN_EXE_seqrec");

/// Two tiny models on one small synthetic dataset (dim 8 and dim 16), and
/// one on a generic file whose item ids are strings; made once.
struct Models {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    keyed: PathBuf,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        ok(&[
            "synth",
            data,
            "--users",
            "200",
            "--items",
            "150",
            "--ratings",
            "20000",
            "--quiet",
        ]);
        let a = dir.path().join("a.safetensors");
        let b = dir.path().join("b.safetensors");
        for (out, dim) in [(&a, "8"), (&b, "16")] {
            train_one_epoch(data, out, &["--embedding-dim", dim]);
        }
        // A generic interaction file with string item keys.
        let tsv = dir.path().join("log.tsv");
        let mut text = String::from("user_id\titem_id\ttimestamp\n");
        for u in 0..60 {
            for t in 0..12 {
                text.push_str(&format!("u{u}\tsku-{}\t{}\n", (u * 7 + t * 3) % 40, t));
            }
        }
        std::fs::write(&tsv, text).unwrap();
        let keyed = dir.path().join("keyed.safetensors");
        train_one_epoch(tsv.to_str().unwrap(), &keyed, &["--embedding-dim", "8"]);
        Models {
            _dir: dir,
            a,
            b,
            keyed,
        }
    })
}

/// A running `seqrec serve`, killed when dropped (a failing test too).
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    /// The `Authorization` header line `get` and `post` send, if any.
    auth: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", model.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "the server stopped before it was ready:\n{}",
                    seen.join("\n")
                );
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
                assert_ne!(port, 0, "the ready line must name the port bound");
                seen.push(line);
                break port;
            }
            seen.push(line);
        };
        let log = Arc::new(Mutex::new(seen));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            port,
            log,
            auth: String::new(),
        }
    }

    /// A server started with `--token-file` holding `token`; `get` and
    /// `post` send it.
    fn start_with_token(model: &Path, token: &str, extra: &[&str]) -> (Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        // Surrounding whitespace is trimmed away.
        std::fs::write(&file, format!("  {token}\n")).unwrap();
        let mut args = vec!["--token-file", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut server = Server::start(model, &args);
        server.auth = format!("Authorization: Bearer {token}\r\n");
        (server, dir)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0);
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no log line with {text:?}; the log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit");
    }

    fn get(&self, path: &str) -> (u16, Value) {
        request_with(self.port, "GET", path, b"", &self.auth)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        request_with(
            self.port,
            "POST",
            path,
            body.to_string().as_bytes(),
            &self.auth,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers (lower-case names), body.
type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 response.
fn read_response(r: &mut impl BufRead) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
            if n == "content-length" {
                len = v.parse().unwrap();
            }
            headers.push((n, v));
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, headers, body))
}

fn raw_request(method: &str, path: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// One request on a fresh connection; the body must be JSON.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    request_with(port, method, path, body, "")
}

/// `request` with more header lines (each ending in CRLF).
fn request_with(port: u16, method: &str, path: &str, body: &[u8], headers: &str) -> (u16, Value) {
    let (status, _, v) = request_full(port, method, path, body, headers);
    (status, v)
}

/// `request_with`, also handing back the response's headers.
fn request_full(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra = format!("Connection: close\r\n{headers}");
    s.write_all(&raw_request(method, path, body, &extra))
        .unwrap();
    let (status, headers, body) = read_response(&mut BufReader::new(s)).unwrap();
    let ct = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(ct, Some("application/json"), "{method} {path}");
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, headers, v)
}

fn ids(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {answer}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts two answers recommend the same: scores equal up to float
/// rounding (a history scored in a batch may differ from one scored alone
/// in the last bits), ids equal except between near-tied scores.
fn assert_same(a: &Value, b: &Value) {
    let items = |v: &Value| -> Vec<(String, f64)> {
        v["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {v}"))
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (x, y) = (items(a), items(b));
    assert_eq!(x.len(), y.len(), "{a}\n{b}");
    let close = |p: f64, q: f64| (p - q).abs() <= 1e-5 * p.abs().max(q.abs()).max(1e-3);
    for (i, ((ia, sa), (ib, sb))) in x.iter().zip(&y).enumerate() {
        assert!(close(*sa, *sb), "score {i}: {sa} vs {sb}\n{a}\n{b}");
        let tied = x
            .iter()
            .enumerate()
            .any(|(j, (_, s))| j != i && close(*s, *sa));
        if !tied {
            assert_eq!(ia, ib, "item {i}\n{a}\n{b}");
        }
    }
}

/// Asserts a JSON error with this status and code; returns its message.
fn expect_error(got: (u16, Value), status: u16, code: &str) -> String {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn every_route_answers() {
    let m = models();
    let server = Server::start(&m.a, &["--allow-user-lookup"]);

    let (s, v) = server.get("/healthz");
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));

    // By ids (numbers and strings alike), as `seqrec recommend` answers.
    let (s, one) = server.post(
        "/v1/recommend",
        &json!({"history": [1, "2", 3], "k": 5, "exclude_seen": true}),
    );
    assert_eq!(s, 200, "{one}");
    let got = ids(&one);
    assert_eq!(got.len(), 5);
    for seen in ["1", "2", "3"] {
        assert!(!got.contains(&seen.to_string()));
    }
    assert_eq!(one["model"]["dim"], 8);
    assert_eq!(one["model"]["epochs"], 1);
    assert_eq!(one["model"]["generation"], 1);
    let cli = ok(&[
        "recommend",
        m.a.to_str().unwrap(),
        "--history",
        "1,2,3",
        "--k",
        "5",
        "--exclude-seen",
        "--json",
    ]);
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_same(&one, &cli);

    // By titles, and by a known user.
    let item = &one["items"][0];
    let (s, by_title) = server.post(
        "/v1/recommend",
        &json!({"titles": [item["title"].as_str().unwrap().to_uppercase()], "k": 3}),
    );
    assert_eq!(s, 200, "{by_title}");
    assert_eq!(ids(&by_title).len(), 3);
    let (s, by_user) = server.post("/v1/recommend", &json!({"user": "1", "k": 4}));
    assert_eq!(s, 200, "{by_user}");
    assert_eq!(ids(&by_user).len(), 4);
    let (s, by_user_num) = server.post("/v1/recommend", &json!({"user": 1, "k": 4}));
    assert_eq!(s, 200);
    assert_eq!(by_user["items"], by_user_num["items"]);

    // A batch answers each request as the single route does, in order.
    let singles = [
        json!({"history": [1, 2, 3], "k": 5, "exclude_seen": true}),
        json!({"history": [7], "k": 2}),
        json!({"user": "1", "k": 4}),
        json!({"history": [4, 5], "k": 12, "exclude_seen": true}),
    ];
    let (s, batch) = server.post("/v1/recommend/batch", &json!({ "requests": singles }));
    assert_eq!(s, 200, "{batch}");
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), singles.len());
    for (single, result) in singles.iter().zip(results) {
        let (s, alone) = server.post("/v1/recommend", single);
        assert_eq!(s, 200);
        assert_same(&alone, result);
    }
    assert_eq!(batch["model"]["dim"], 8);

    // Items.
    let (s, it) = server.get("/v1/items/1");
    assert_eq!(s, 200, "{it}");
    assert_eq!(it["id"], "1");
    assert_eq!(it["is_item"], true);
    assert!(!it["title"].as_str().unwrap().is_empty());
    let (s, pad) = server.get("/v1/items/0");
    assert_eq!((s, &pad["is_item"]), (200, &json!(false)));
    expect_error(server.get("/v1/items/nope"), 404, "unknown_item");
    expect_error(server.get("/v1/items/99999999"), 404, "unknown_item");

    // The model: configuration and training figures, no big lists.
    let (s, model) = server.get("/v1/model");
    assert_eq!(s, 200);
    assert_eq!(model["model"]["dim"], 8);
    assert_eq!(model["model"]["padding"], "right");
    assert_eq!(model["model"]["tower"], "gru");
    assert_eq!(model["train"]["epochs"], 1);
    assert_eq!(model["history"].as_array().unwrap().len(), 1);
    assert!(model["history"][0]["val_loss"].as_f64().unwrap() > 0.0);
    assert_eq!(model["generation"], 1);
    assert!(model["users"].as_u64().unwrap() > 0);
    assert!(model.get("titles").is_none() && model.get("user_keys").is_none());

    // The OpenAPI document.
    let (s, doc) = server.get("/openapi.json");
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/recommend"]["post"].is_object());

    // Wrong routes and methods.
    expect_error(server.get("/v2/whatever"), 404, "not_found");
    let msg = expect_error(server.get("/v1/recommend"), 405, "method_not_allowed");
    assert!(msg.contains("POST"), "{msg}");
    expect_error(
        server.post("/healthz", &json!({})),
        405,
        "method_not_allowed",
    );
    // Admin routes are off by default.
    expect_error(
        server.post("/v1/admin/reload", &json!({})),
        404,
        "not_found",
    );
}

#[test]
fn bad_input_gets_a_json_4xx_that_says_what_and_where() {
    let m = models();
    let server = Server::start(
        &m.a,
        &[
            "--max-history",
            "5",
            "--max-batch",
            "3",
            "--max-body-bytes",
            "1000",
            "--allow-user-lookup",
        ],
    );
    let post_raw = |path: &str, body: &[u8]| request(server.port, "POST", path, body);

    let msg = expect_error(
        post_raw("/v1/recommend", b"{\"history\": [1,\n 2,, 3]}"),
        400,
        "malformed_json",
    );
    assert!(msg.contains("line 2, column"), "{msg}");
    let msg = expect_error(
        post_raw("/v1/recommend", b"{\"history\": [1"),
        400,
        "malformed_json",
    );
    assert!(msg.contains("line 1, column 14"), "{msg}");
    expect_error(post_raw("/v1/recommend", b""), 400, "malformed_json");
    expect_error(
        post_raw("/v1/recommend", b"\xff\xfe"),
        400,
        "malformed_json",
    );

    let r = |v: Value| server.post("/v1/recommend", &v);
    let msg = expect_error(r(json!({"history": [1, true]})), 400, "invalid_type");
    assert!(msg.starts_with("history[1]:"), "{msg}");
    let msg = expect_error(r(json!({"history": [1, -2]})), 400, "invalid_type");
    assert!(msg.starts_with("history[1]:"), "{msg}");
    let msg = expect_error(r(json!({"history": "1,2"})), 400, "invalid_type");
    assert!(msg.starts_with("history:"), "{msg}");
    let msg = expect_error(r(json!({"history": [1], "k": "5"})), 400, "invalid_type");
    assert!(msg.starts_with("k:"), "{msg}");
    expect_error(
        r(json!({"history": [1], "exclude_seen": 1})),
        400,
        "invalid_type",
    );
    expect_error(r(json!([1, 2])), 400, "invalid_type");
    expect_error(r(json!({"history": [1], "limit": 5})), 400, "unknown_field");
    expect_error(r(json!({"k": 5})), 400, "missing_field");
    expect_error(
        r(json!({"history": [1], "user": "1"})),
        400,
        "conflicting_fields",
    );
    expect_error(r(json!({"history": []})), 400, "empty_history");
    for k in [json!(0), json!(1001), json!(-1)] {
        let msg = expect_error(r(json!({"history": [1], "k": k})), 400, "k_out_of_range");
        assert!(msg.starts_with("k: expected 1 to 1000"), "{msg}");
    }
    let (s, ok) = r(json!({"history": [1], "k": 1000}));
    assert_eq!(s, 200);
    assert!(!ids(&ok).is_empty());
    let msg = expect_error(
        r(json!({"history": [1, 2, 3, 4, 5, 6]})),
        400,
        "history_too_long",
    );
    assert!(msg.contains("limit of 5"), "{msg}");

    // Unknown ids: listed, or skipped on request.
    let (s, v) = r(json!({"history": [1, 999999, "nope", 2]}));
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "unknown_items");
    assert_eq!(v["error"]["unknown"], json!([999999, "nope"]));
    let (s, v) = r(json!({"history": [1, 999999, "nope", 2], "skip_unknown": true, "k": 3}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["skipped"], json!([999999, "nope"]));
    let (_, plain) = r(json!({"history": [1, 2], "k": 3}));
    assert_same(&v, &plain);
    expect_error(
        r(json!({"history": [999999], "skip_unknown": true})),
        400,
        "empty_history",
    );
    expect_error(
        r(json!({"titles": ["No Such Film (1900)"]})),
        400,
        "unknown_titles",
    );
    expect_error(r(json!({"user": "no-such-user"})), 400, "unknown_user");

    // Batches say which request is wrong.
    let b = |v: Value| server.post("/v1/recommend/batch", &v);
    let (s, v) = b(json!({"requests": [{"history": [1]}, {"history": [1], "k": 0}]}));
    assert_eq!(s, 400);
    assert_eq!(v["error"]["index"], 1);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("requests[1].k:"));
    let (s, v) =
        b(json!({"requests": [{"history": [1]}, {"history": [2]}, {"history": [424242]}]}));
    assert_eq!((s, &v["error"]["code"]), (400, &json!("unknown_items")));
    assert_eq!(v["error"]["index"], 2);
    expect_error(
        b(
            json!({"requests": [{"history": [1]}, {"history": [1]}, {"history": [1]}, {"history": [1]}]}),
        ),
        400,
        "batch_too_large",
    );
    expect_error(b(json!({"requests": []})), 400, "empty_batch");
    expect_error(
        b(json!({"requests": {"history": [1]}})),
        400,
        "invalid_type",
    );
    expect_error(b(json!({"history": [1]})), 400, "unknown_field");

    // Bodies over the limit: 413, whether Content-Length says so or not.
    let big = json!({"history": vec![1000; 400]}).to_string();
    assert!(big.len() > 1000);
    let msg = expect_error(
        post_raw("/v1/recommend", big.as_bytes()),
        413,
        "body_too_large",
    );
    assert!(msg.contains("1000 bytes"), "{msg}");
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 600];
    for _ in 0..2 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    let (status, _, body) = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    // Still serving.
    let (s, _) = server.get("/healthz");
    assert_eq!(s, 200);
}

#[test]
fn a_body_that_never_arrives_gets_408() {
    let m = models();
    let server = Server::start(&m.a, &["--body-timeout-s", "0.5"]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"history\"",
    )
    .unwrap();
    let start = Instant::now();
    let (status, _, body) = read_response(&mut BufReader::new(&s)).unwrap();
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "body_timeout");
    assert!(start.elapsed() < Duration::from_secs(10));
    let (s, _) = server.post("/v1/recommend", &json!({"history": [1]}));
    assert_eq!(s, 200);
}

#[test]
fn a_body_cut_off_or_garbage_does_not_stop_the_server() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    let good = json!({"history": [1, 2], "k": 3}).to_string();

    // Content-Length larger than the body, then the write side closed.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"history\": [1,",
    )
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    match read_response(&mut BufReader::new(&s)) {
        Ok((status, _, body)) => {
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "body_unreadable");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }
    let (st, v) = request(server.port, "POST", "/v1/recommend", good.as_bytes());
    assert_eq!(st, 200, "{v}");

    // The same, but the client vanishes without a word.
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        drop(s);
    }
    // A client that sends a request and leaves before the answer.
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.write_all(&raw_request("POST", "/v1/recommend", good.as_bytes(), ""))
            .unwrap();
        drop(s);
    }
    // Not HTTP at all.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    if !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&rest)
        );
    }

    // Keep-alive: many requests on one connection, bad ones between.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..30 {
        let body: &[u8] = if i % 3 == 1 {
            b"{\"history\": [1,"
        } else {
            good.as_bytes()
        };
        s.write_all(&raw_request("POST", "/v1/recommend", body, ""))
            .unwrap();
        let (status, _, _) = read_response(&mut r).unwrap();
        assert_eq!(status, if i % 3 == 1 { 400 } else { 200 });
    }

    let (st, v) = request(server.port, "POST", "/v1/recommend", good.as_bytes());
    assert_eq!(st, 200, "{v}");
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over.
fn replace_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_for_generation(server: &Server, generation: u64) -> Value {
    let start = Instant::now();
    loop {
        let (s, v) = server.get("/v1/model");
        assert_eq!(s, 200);
        if v["generation"] == generation {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still generation {} after 20 s",
            v["generation"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_swaps_the_model_refusing_a_bad_file_without_dropping_requests() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::copy(&m.a, &path).unwrap();
    let (server, _token) = Server::start_with_token(&path, "sighup-test-token", &["--admin"]);
    let (_, v) = server.get("/v1/model");
    assert_eq!(
        (v["model"]["dim"].as_u64(), v["generation"].as_u64()),
        (Some(8), Some(1))
    );

    // Clients keep asking all along; every request must succeed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = server.port;
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let stop = stop.clone();
            let auth = server.auth.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let body = json!({"history": [1 + c, 2, 3], "k": 5}).to_string();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.write_all(&raw_request(
                        "POST",
                        "/v1/recommend",
                        body.as_bytes(),
                        &auth,
                    ))
                    .unwrap();
                    let (status, _, body) = read_response(&mut r).unwrap();
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    n += 1;
                }
                n
            })
        })
        .collect();

    // A corrupt file: refused, the old model keeps serving.
    replace_atomically(&path, b"this is not a model file");
    server.signal(libc::SIGHUP);
    let line = server.wait_for_log("refused");
    assert!(line.contains("still serving generation 1"), "{line}");
    let (_, v) = server.get("/v1/model");
    assert_eq!(
        (v["model"]["dim"].as_u64(), v["generation"].as_u64()),
        (Some(8), Some(1))
    );
    // A truncated model file too.
    let bytes = std::fs::read(&m.b).unwrap();
    replace_atomically(&path, &bytes[..bytes.len() / 2]);
    let msg = expect_error(
        server.post("/v1/admin/reload", &json!({})),
        500,
        "reload_failed",
    );
    assert!(msg.contains("refused"), "{msg}");
    let (s, v) = server.post("/v1/recommend", &json!({"history": [1], "k": 2}));
    assert_eq!((s, &v["model"]["dim"]), (200, &json!(8)));

    // A good different model: taken.
    replace_atomically(&path, &bytes);
    server.signal(libc::SIGHUP);
    let v = wait_for_generation(&server, 2);
    assert_eq!(v["model"]["dim"], 16);
    let (s, v) = server.post("/v1/recommend", &json!({"history": [1], "k": 2}));
    assert_eq!(
        (s, &v["model"]["dim"], &v["model"]["generation"]),
        (200, &json!(16), &json!(2))
    );

    // And back, through the admin route.
    replace_atomically(&path, &std::fs::read(&m.a).unwrap());
    let (s, v) = server.post("/v1/admin/reload", &json!({}));
    assert_eq!((s, &v["model"]["dim"]), (200, &json!(8)), "{v}");
    assert_eq!(v["model"]["generation"], 3);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let n = c.join().expect("a client saw a failed request");
        assert!(n > 0);
    }
}

#[test]
fn watch_reloads_when_the_file_changes() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::copy(&m.a, &path).unwrap();
    let server = Server::start(&path, &["--watch"]);
    replace_atomically(&path, b"garbage");
    server.wait_for_log("refused");
    let (_, v) = server.get("/v1/model");
    assert_eq!(v["generation"], 1);
    replace_atomically(&path, &std::fs::read(&m.b).unwrap());
    let v = wait_for_generation(&server, 2);
    assert_eq!(v["model"]["dim"], 16);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let m = models();
    let mut server = Server::start(&m.a, &[]);
    let body = json!({"history": [1, 2, 3], "k": 4}).to_string();
    let (head, tail) = body.as_bytes().split_at(10);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!(
            "POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    server.wait_for_log("SIGTERM");
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(tail).unwrap();
    let (status, _, answer) = read_response(&mut BufReader::new(&s)).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(ids(&v).len(), 4);
    let exit = server.wait_exit();
    assert!(exit.success(), "{exit}");
    server.wait_for_log("stopped");
}

#[test]
fn sigint_stops_an_idle_server_cleanly() {
    let m = models();
    let mut server = Server::start(&m.a, &["--batch-window-us", "0"]);
    let (s, _) = server.post("/v1/recommend", &json!({"history": [1], "k": 2}));
    assert_eq!(s, 200);
    // An idle keep-alive connection must not hold the shutdown up.
    let idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    server.signal(libc::SIGINT);
    let exit = server.wait_exit();
    assert!(exit.success(), "{exit}");
    drop(idle);
}

#[test]
fn string_item_keys_and_numbers_both_work() {
    let m = models();
    let server = Server::start(&m.keyed, &["--allow-user-lookup"]);
    let (s, v) = server.post(
        "/v1/recommend",
        &json!({"history": ["sku-1", "sku-4", "sku-7"], "k": 5, "exclude_seen": true}),
    );
    assert_eq!(s, 200, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|i| i.starts_with("sku-")), "{got:?}");
    assert!(!got.contains(&"sku-4".to_string()));
    let (s, it) = server.get("/v1/items/sku-4");
    assert_eq!(
        (s, &it["id"], &it["is_item"]),
        (200, &json!("sku-4"), &json!(true))
    );
    // Internal numbers are not item keys here.
    let (s, v) = server.post("/v1/recommend", &json!({"history": [1]}));
    assert_eq!((s, &v["error"]["unknown"]), (400, &json!([1])));
    let (s, v) = server.post("/v1/recommend", &json!({"user": "u3", "k": 2}));
    assert_eq!(s, 200, "{v}");
    let (_, model) = server.get("/v1/model");
    assert_eq!(model["item_keys"], true);
}

#[test]
fn concurrent_clients_are_all_answered() {
    let m = models();
    let server = Server::start(&m.a, &["--batch-window-us", "200"]);
    let port = server.port;
    let (_, want) = server.post("/v1/recommend", &json!({"history": [5, 6], "k": 7}));
    let want = Arc::new(want);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let want = want.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                for i in 0..200 {
                    // Mixed k and exclude_seen, so batches mix them too.
                    let (k, ex) = if (i + c) % 2 == 0 {
                        (7, false)
                    } else {
                        (3, true)
                    };
                    let body = json!({"history": [5, 6], "k": k, "exclude_seen": ex}).to_string();
                    s.write_all(&raw_request("POST", "/v1/recommend", body.as_bytes(), ""))
                        .unwrap();
                    let (status, _, body) = read_response(&mut r).unwrap();
                    assert_eq!(status, 200);
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    if !ex {
                        assert_same(&v, &want);
                    } else {
                        assert_eq!(ids(&v).len(), 3);
                        assert!(!ids(&v).iter().any(|i| i == "5" || i == "6"));
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn serve_help_shows_one_default_per_flag() {
    let help = ok(&["serve", "--help"]);
    // One block per option: its line and the indented lines under it.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.starts_with("  -") || line.starts_with("      --") {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    assert!(blocks.len() > 10, "{help}");
    for b in &blocks {
        assert!(b.matches("default").count() <= 1, "two defaults:\n{b}");
    }
    let block = |flag: &str| {
        blocks
            .iter()
            .find(|b| b.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in\n{help}"))
            .clone()
    };
    // The default shown is what happens, not the number that stands for it.
    assert!(
        block("--io-threads").contains("[default: one per core]"),
        "{}",
        block("--io-threads")
    );
    assert!(
        block("--score-threads").contains("[default: one per two cores"),
        "{}",
        block("--score-threads")
    );
}

#[test]
fn recommend_input_refuses_a_line_with_history_and_user_as_the_server_does() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "id,history,user\na,5 6 7,\nb,5 6,1\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let out = Command::new(BIN)
        .args(["recommend", m.a.to_str().unwrap(), "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("in.csv:3: give exactly one of \"history\""),
        "{err}"
    );
    assert!(!output.exists());

    let server = Server::start(&m.a, &[]);
    let msg = expect_error(
        server.post("/v1/recommend", &json!({"history": [5, 6], "user": "1"})),
        400,
        "conflicting_fields",
    );
    assert!(msg.starts_with("give exactly one of \"history\""), "{msg}");
}

/// Every string in a JSON value, for checking what an answer shows.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn user_lookups_are_off_unless_asked_for() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    let msg = expect_error(
        server.post("/v1/recommend", &json!({"user": "1", "k": 3})),
        403,
        "user_lookup_off",
    );
    assert!(msg.contains("--allow-user-lookup"), "{msg}");
    let (s, v) = server.post(
        "/v1/recommend/batch",
        &json!({"requests": [{"history": [1]}, {"user": "1", "exclude_seen": true}]}),
    );
    assert_eq!((s, &v["error"]["code"]), (403, &json!("user_lookup_off")));
    assert_eq!(v["error"]["index"], 1);
    // exclude_seen with a history leaves out the items sent, nothing else.
    let (s, v) = server.post(
        "/v1/recommend",
        &json!({"history": [1, 2], "k": 5, "exclude_seen": true}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(!ids(&v).iter().any(|i| i == "1" || i == "2"));

    let on = Server::start(&m.a, &["--allow-user-lookup"]);
    let (s, v) = on.post("/v1/recommend", &json!({"user": "1", "k": 3}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v).len(), 3);
}

#[test]
fn a_token_guards_every_route_but_healthz_and_no_answer_shows_a_directory() {
    let m = models();
    let (server, _dir) = Server::start_with_token(&m.a, "s3cret-Token", &["--admin"]);
    let port = server.port;
    let (s, v) = request(port, "GET", "/healthz", b"");
    assert_eq!((s, &v["status"]), (200, &json!("ok")));
    let body = json!({"history": [1], "k": 2}).to_string();
    for (method, path, body) in [
        ("GET", "/v1/model", &b""[..]),
        ("GET", "/openapi.json", b""),
        ("GET", "/v1/items/1", b""),
        ("POST", "/v1/recommend", body.as_bytes()),
        ("POST", "/v1/admin/reload", b"{}"),
        ("GET", "/no/such/route", b""),
    ] {
        for auth in [
            "",
            "Authorization: Bearer wrong\r\n",
            "Authorization: Bearer s3cret-Toke\r\n",
            "Authorization: s3cret-Token\r\n",
            "Authorization: Basic czNjcmV0LVRva2Vu\r\n",
        ] {
            let (s, headers, v) = request_full(port, method, path, body, auth);
            assert_eq!(s, 401, "{method} {path} with {auth:?}: {v}");
            assert_eq!(v["error"]["code"], "unauthorized");
            assert!(
                headers
                    .iter()
                    .any(|(n, v)| n == "www-authenticate" && v == "Bearer"),
                "{headers:?}"
            );
            // The token is never echoed.
            assert!(!v.to_string().contains("s3cret"), "{v}");
        }
    }
    let (s, v) = server.post("/v1/recommend", &json!({"history": [1], "k": 2}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = request_with(
        port,
        "GET",
        "/healthz",
        b"",
        "Authorization: bearer s3cret-Token\r\n",
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.post("/v1/admin/reload", &json!({}));
    assert_eq!((s, &v["reloaded"]), (200, &json!(true)), "{v}");

    // Neither the model's description nor an answer shows where files lie.
    let (s, info) = server.get("/v1/model");
    assert_eq!(s, 200);
    let (_, answer) = server.post("/v1/recommend", &json!({"history": [1], "k": 2}));
    let mut shown = Vec::new();
    strings(&info, &mut shown);
    strings(&answer, &mut shown);
    let dir = m.a.parent().unwrap().to_str().unwrap();
    for text in &shown {
        assert!(
            !text.starts_with('/') && !text.contains(dir),
            "{text:?} in {info}"
        );
    }
    assert_eq!(info["file"]["name"], "a.safetensors");
}

#[test]
fn admin_routes_without_a_token_and_bad_token_files_are_refused_at_start() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let model = m.a.to_str().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["serve", model, "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let err = run(&["--admin"]);
    assert!(err.contains("--token-file"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n\t").unwrap();
    let err = run(&["--token-file", empty.to_str().unwrap()]);
    assert!(
        err.contains("empty") && err.contains("--token-file"),
        "{err}"
    );
    let missing = dir.path().join("missing");
    let err = run(&["--token-file", missing.to_str().unwrap()]);
    assert!(
        err.contains("missing") && err.contains("cannot open"),
        "{err}"
    );
    let err = run(&["--token-file", dir.path().to_str().unwrap()]);
    assert!(err.contains("regular file"), "{err}");
    // A FIFO is refused before it is opened (opening waits for a writer).
    let fifo = dir.path().join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let err = run(&["--token-file", fifo.to_str().unwrap()]);
    assert!(err.contains("regular file"), "{err}");
}

/// A model trained on a relative path (`../data`) shows only the folder's
/// name; a huge method in a 404/405 is cut in the message.
#[test]
fn no_answer_shows_a_relative_directory_or_a_huge_method() {
    let m = models();
    let root = m.a.parent().unwrap();
    let sub = root.join("sub-for-relative");
    std::fs::create_dir_all(&sub).unwrap();
    let model = root.join("relative.safetensors");
    let out = Command::new(BIN)
        .current_dir(&sub)
        .args(["--quiet", "train", "../data", "--out"])
        .arg(&model)
        .args(["--epochs", "1", "--embedding-dim", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&model, &[]);
    let (s, info) = server.get("/v1/model");
    assert_eq!(s, 200);
    assert_eq!(info["dataset"], "data", "{info}");
    let mut all = Vec::new();
    strings(&info, &mut all);
    assert!(all.iter().all(|s| !s.contains("../")), "{all:?}");

    let method = "A".repeat(200_000);
    let (s, _, v) = request_full(server.port, &method, "/v1/model", b"", "");
    assert!(s == 404 || s == 405, "{s}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.len() < 1000 && msg.contains("200000 characters"),
        "{}",
        &msg[..msg.len().min(300)]
    );
}

/// Reads until the server closes the connection; the bytes it sent, or
/// `None` when it kept the connection open for 20 s.
fn until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The JSON error of a whole response read from a closed connection.
fn json_error_in(raw: &[u8]) -> (u16, Vec<(String, String)>, Value) {
    let (status, headers, body) = read_response(&mut BufReader::new(raw))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(raw)));
    let ct = headers.iter().find(|(n, _)| n == "content-type");
    assert_eq!(
        ct.map(|(_, v)| v.as_str()),
        Some("application/json"),
        "{}",
        String::from_utf8_lossy(raw)
    );
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(raw)));
    assert!(v["error"]["message"].as_str().is_some(), "{v}");
    (status, headers, v)
}

#[test]
fn silent_half_sent_and_idle_connections_are_closed() {
    let m = models();
    let server = Server::start(
        &m.a,
        &["--header-timeout-s", "0.5", "--idle-timeout-s", "0.5"],
    );
    // Says nothing at all: closed without a word.
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let got = until_closed(&mut silent).expect("a silent connection stayed open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Half a header: 408, then closed.
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let got = until_closed(&mut half).expect("a half-sent header held its connection");
    let (status, _, v) = json_error_in(&got);
    assert_eq!(
        (status, &v["error"]["code"]),
        (408, &json!("header_timeout"))
    );
    // Idle after an answer: closed.
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let body = json!({"history": [1], "k": 2}).to_string();
    idle.write_all(&raw_request("POST", "/v1/recommend", body.as_bytes(), ""))
        .unwrap();
    let mut r = BufReader::new(idle.try_clone().unwrap());
    let (status, _, _) = read_response(&mut r).unwrap();
    assert_eq!(status, 200);
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let closed = r.read_to_end(&mut rest);
    assert!(
        closed.is_ok() || closed.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset,
        "an idle keep-alive connection stayed open"
    );
    assert!(rest.is_empty());
    // A body slower than the header timeout is the body timeout's business:
    // a request whose header arrived is not cut by the header deadline.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (head, tail) = body.as_bytes().split_at(5);
    slow.write_all(
        format!(
            "POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    slow.write_all(head).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    slow.write_all(tail).unwrap();
    let (status, _, _) = read_response(&mut BufReader::new(&slow)).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn connections_over_the_cap_get_503_json_with_retry_after() {
    let m = models();
    let server = Server::start(&m.a, &["--max-connections", "2"]);
    let port = server.port;
    // Two connections hold the cap (one idle after a request, so the server
    // has surely taken both).
    let held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut busy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    busy.write_all(&raw_request("GET", "/healthz", b"", ""))
        .unwrap();
    let mut r = BufReader::new(busy.try_clone().unwrap());
    assert_eq!(read_response(&mut r).unwrap().0, 200);

    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    third
        .write_all(&raw_request("GET", "/healthz", b"", ""))
        .unwrap();
    let got = until_closed(&mut third).expect("the connection over the cap stayed open");
    let (status, headers, v) = json_error_in(&got);
    assert_eq!(
        (status, &v["error"]["code"]),
        (503, &json!("too_many_connections"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 connections"),
        "{v}"
    );
    assert!(headers.iter().any(|(n, v)| n == "retry-after" && v == "1"));

    // One closed, a new one is served.
    drop(held);
    let start = Instant::now();
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&raw_request(
            "GET",
            "/healthz",
            b"",
            "Connection: close\r\n",
        ))
        .unwrap();
        let (status, _, _) = read_response(&mut BufReader::new(s)).unwrap();
        if status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_does_not_wait_for_connections_without_a_request() {
    let m = models();
    // A grace far longer than the test waits for the exit.
    let mut server = Server::start(&m.a, &["--shutdown-grace-s", "600"]);
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let (s, _) = server.get("/healthz");
    assert_eq!(s, 200);
    server.signal(libc::SIGTERM);
    let exit = server.wait_exit();
    assert!(exit.success(), "{exit}");
    server.wait_for_log("stopped");
    assert!(until_closed(&mut half).is_some());
    assert!(until_closed(&mut silent).is_some());
}

#[test]
fn a_batch_over_the_work_bound_gets_400_naming_bound_and_value() {
    let m = models();
    let server = Server::start(&m.a, &["--max-batch-items", "50"]);
    let over = json!({"requests": [
        {"history": [1], "k": 20}, {"history": [2], "k": 20}, {"history": [3], "k": 20}
    ]});
    let msg = expect_error(
        server.post("/v1/recommend/batch", &over),
        400,
        "batch_too_much_work",
    );
    assert!(
        msg.contains("60 items") && msg.contains("limit of 50"),
        "{msg}"
    );
    let (s, v) = server.post(
        "/v1/recommend/batch",
        &json!({"requests": [{"history": [1], "k": 25}, {"history": [2], "k": 25}]}),
    );
    assert_eq!(s, 200, "{v}");
}

#[test]
fn batches_over_the_concurrency_bound_are_shed_with_503_and_retry_after() {
    let m = models();
    let server = Server::start(&m.a, &["--max-concurrent-batches", "1"]);
    let port = server.port;
    let requests: Vec<Value> = (0..1000)
        .map(|i| json!({"history": [1 + i % 3, 2, 3], "k": 100, "exclude_seen": true}))
        .collect();
    let body = Arc::new(json!({ "requests": requests }).to_string());
    // Clients keep sending until one of them is shed; each shed answer
    // must say why and when to retry.
    let shed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (body, shed) = (body.clone(), shed.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut ok, start) = (0, Instant::now());
                while shed.load(std::sync::atomic::Ordering::Relaxed) == 0
                    && start.elapsed() < Duration::from_secs(20)
                {
                    s.write_all(&raw_request(
                        "POST",
                        "/v1/recommend/batch",
                        body.as_bytes(),
                        "",
                    ))
                    .unwrap();
                    let (status, headers, answer) = read_response(&mut r).unwrap();
                    let v: Value = serde_json::from_slice(&answer).unwrap();
                    match status {
                        200 => ok += 1,
                        503 => {
                            assert_eq!(v["error"]["code"], "overloaded", "{v}");
                            assert!(headers.iter().any(|(n, v)| n == "retry-after" && v == "1"));
                            shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => panic!("{status}: {v}"),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(
        shed.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "none shed"
    );
    assert!(ok > 0);
}

#[test]
fn errors_before_the_router_are_json_too() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    let port = server.port;
    let send = |raw: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(raw).unwrap();
        until_closed(&mut s).expect("the connection stayed open")
    };
    let (status, _, v) = json_error_in(&send(
        b"GARBAGE\x01 /v1/recommend HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("malformed_request"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request line"),
        "{v}"
    );
    let (status, _, v) = json_error_in(&send(
        b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n{}",
    ));
    assert_eq!(status, 400);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Content-Length") && msg.contains("\"lots\""),
        "{msg}"
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-Field-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let (status, _, v) = json_error_in(&send(many.as_bytes()));
    assert_eq!(
        (status, &v["error"]["code"]),
        (431, &json!("header_too_large"))
    );
    // Still serving.
    assert_eq!(server.get("/healthz").0, 200);
}

/// Many long unknown ids make a short error: the first 20, each cut after
/// 80 characters, and the count of the rest (the whole list echoed made a
/// 900 KB answer). Titles, batches and `skip_unknown` with nothing left
/// are bounded the same way.
#[test]
fn an_error_lists_at_most_20_unknown_ids_each_cut_short() {
    let m = models();
    let server = Server::start(&m.a, &["--max-history", "2000"]);
    let long = "z".repeat(400);
    let ids: Vec<Value> = (0..1500).map(|i| json!(format!("{i}-{long}"))).collect();
    let bodies = [
        ("/v1/recommend", json!({"history": ids}), "unknown_items"),
        ("/v1/recommend", json!({"titles": ids}), "unknown_titles"),
        (
            "/v1/recommend",
            json!({"history": ids, "skip_unknown": true}),
            "empty_history",
        ),
        (
            "/v1/recommend/batch",
            json!({"requests": [{"history": [1]}, {"history": ids}]}),
            "unknown_items",
        ),
    ];
    for (path, body, code) in bodies {
        let sent = body.to_string().len();
        let (s, raw_len, v) = {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(&raw_request(
                "POST",
                path,
                body.to_string().as_bytes(),
                "Connection: close\r\n",
            ))
            .unwrap();
            let (status, _, answer) = read_response(&mut BufReader::new(s)).unwrap();
            let v: Value = serde_json::from_slice(&answer).unwrap();
            (status, answer.len(), v)
        };
        assert!(sent > 600_000, "{sent}");
        assert_eq!((s, &v["error"]["code"]), (400, &json!(code)), "{path}");
        let shown = v["error"]["unknown"].as_array().unwrap();
        assert_eq!(shown.len(), 20, "{path}");
        assert_eq!(v["error"]["unknown_more"], 1480, "{path}");
        for (i, id) in shown.iter().enumerate() {
            let id = id.as_str().unwrap();
            assert!(id.starts_with(&format!("{i}-zzz")), "{id}");
            assert!(id.ends_with('…') && id.chars().count() == 81, "{id}");
        }
        assert!(raw_len < 8_000, "{path}: an answer of {raw_len} bytes");
    }
    // A few short ones are listed whole.
    let (s, v) = server.post("/v1/recommend", &json!({"history": [1, "nope", 999999]}));
    assert_eq!(s, 400);
    assert_eq!(v["error"]["unknown"], json!(["nope", 999999]));
    assert_eq!(v["error"]["unknown_more"], 0);
}

/// A key given twice is refused with 400 naming it, in a request, in a
/// batch's request and in the batch itself; serde_json alone kept the last
/// (`{"history":[1],"history":[2]}` was a request for item 2).
#[test]
fn a_field_given_twice_is_refused_naming_it() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    let cases: &[(&str, &str, &str)] = &[
        (
            "/v1/recommend",
            r#"{"history":[1],"history":[2]}"#,
            "history",
        ),
        (
            "/v1/recommend",
            r#"{"history":[1,2],"k":3,"exclude_seen":true,"k":5}"#,
            "k",
        ),
        (
            "/v1/recommend/batch",
            r#"{"requests":[{"history":[1]},{"history":[2],"k":2,"k":3}]}"#,
            "requests[1].k",
        ),
        (
            "/v1/recommend/batch",
            r#"{"requests":[{"history":[1]}],"requests":[{"history":[2]}]}"#,
            "requests",
        ),
    ];
    for (path, body, field) in cases {
        let msg = expect_error(
            request(server.port, "POST", path, body.as_bytes()),
            400,
            "duplicate_field",
        );
        assert!(
            msg.starts_with(&format!(
                "{field}: given twice in one object (at line 1, column "
            )),
            "{msg}"
        );
    }
    // The same key in two objects is fine.
    let (s, v) = request(
        server.port,
        "POST",
        "/v1/recommend/batch",
        br#"{"requests":[{"history":[1],"k":2},{"history":[2],"k":2}]}"#,
    );
    assert_eq!(s, 200, "{v}");
}

/// A body in a transfer coding other than chunked alone (`gzip, chunked`,
/// which hyper read as chunked, handing gzip bytes on as JSON) gets 501
/// with a JSON error naming the header, before the body is read, and the
/// connection is closed; chunked alone is read as before, and chunked not
/// last is hyper's 400.
#[test]
fn a_transfer_coding_other_than_chunked_gets_501() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    let port = server.port;
    let chunked = |te: &str, body: &[u8]| {
        let mut raw = format!(
            "POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{te}\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        raw.extend_from_slice(body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&raw).unwrap();
        until_closed(&mut s).expect("the connection stayed open")
    };
    // Gzip's magic bytes, not JSON: the body must not be parsed at all.
    let gzip = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
    for te in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\nContent-Length: 10\r\n",
    ] {
        let raw = chunked(te, gzip);
        let (status, headers, v) = json_error_in(&raw);
        assert_eq!(
            (status, &v["error"]["code"]),
            (501, &json!("transfer_coding_not_implemented")),
            "{te:?}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("Transfer-Encoding: \""), "{msg}");
        assert!(
            headers.contains(&("connection".to_string(), "close".to_string())),
            "{headers:?}"
        );
        // One answer, then the close.
        assert_eq!(raw.windows(9).filter(|w| w == b"HTTP/1.1 ").count(), 1);
    }
    let (status, _, v) = json_error_in(&chunked("Transfer-Encoding: gzip, chunked\r\n", gzip));
    assert_eq!(status, 501);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"gzip, chunked\""),
        "{v}"
    );
    // On any route, before the token or the route is looked at.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    let (status, _, _) = json_error_in(&until_closed(&mut s).unwrap());
    assert_eq!(status, 501);
    // Chunked not last: the body's length is unknown, 400 (RFC 9112 6.3).
    let (status, _, v) = json_error_in(&chunked("Transfer-Encoding: chunked, gzip\r\n", b"{}"));
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("malformed_request"))
    );
    // Chunked alone, in any case, is read.
    let good = br#"{"history": [1, 2], "k": 3}"#;
    for te in [
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: Chunked\r\n",
    ] {
        let raw = chunked(&format!("{te}Connection: close\r\n"), good);
        let (status, _, body) = read_response(&mut BufReader::new(&raw[..])).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(server.get("/healthz").0, 200);
}

/// An HTTP/2 client (prior knowledge: the connection preface first), which
/// the server closed without a word, gets 505 with a JSON error saying the
/// server speaks HTTP/1.1, then the close; so does a request line of
/// HTTP/2.0, and the preface after a keep-alive request.
#[test]
fn an_http2_preface_gets_505_json_then_the_close() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    let port = server.port;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // The preface and an empty SETTINGS frame, as h2 clients send them.
    let mut h2 = PREFACE.to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let check = |raw: &[u8]| {
        let (status, headers, v) = json_error_in(raw);
        assert_eq!(
            (status, &v["error"]["code"]),
            (505, &json!("http_version_not_supported")),
            "{v}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("HTTP/1.1 only"), "{msg}");
        assert!(
            headers.contains(&("connection".to_string(), "close".to_string())),
            "{headers:?}"
        );
    };
    for parts in [
        vec![h2.clone()],
        vec![PREFACE.to_vec()],
        vec![b"PRI * HTTP/".to_vec(), h2[11..].to_vec()],
        vec![b"PRI * HTTP/2.0\r\n".to_vec()],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for p in &parts {
            s.write_all(p).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let raw = until_closed(&mut s).expect("the connection stayed open");
        check(&raw);
        let msg = json_error_in(&raw).2["error"]["message"].to_string();
        assert!(msg.contains("HTTP/2 preface"), "{msg}");
    }
    // A request line asking for HTTP/2.0.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let raw = until_closed(&mut s).expect("the connection stayed open");
    check(&raw);
    // After a keep-alive request: the answer, then the 505.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut r).unwrap().0, 200);
    s.write_all(&h2).unwrap();
    let (status, _, _) = read_response(&mut r).unwrap();
    assert_eq!(status, 505);
    assert_eq!(server.get("/healthz").0, 200);
}

/// A client that shuts down its sending side once its request is written
/// (`nc -N`, some proxies) still gets every answer; hyper's default dropped
/// about one in thirty (found by tests/fuzz).
#[test]
fn a_client_that_half_closes_after_its_request_is_answered() {
    let m = models();
    let server = Server::start(&m.a, &[]);
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// Each connection is a file: under `ulimit -n 256` the default cap of 512
/// connections cannot be reached, and the server says so at start; with
/// only the soft limit low it raises it and says nothing.
#[test]
fn a_connection_cap_beyond_the_open_file_limit_is_raised_or_warned_about() {
    let m = models();
    let start = |ulimit: &str| {
        let cmd = format!(
            "{ulimit} && exec timeout 3 '{BIN}' serve '{}' --addr 127.0.0.1:0",
            m.a.display()
        );
        let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let log = start("ulimit -n 256");
    assert!(
        log.contains("--max-connections 512 needs 576 open files")
            && log.contains("may open only 256"),
        "{log}"
    );
    let hard = Command::new("sh")
        .args(["-c", "ulimit -H -n"])
        .output()
        .unwrap();
    let hard: u64 = String::from_utf8_lossy(&hard.stdout)
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    if hard >= 576 {
        let log = start("ulimit -S -n 256");
        assert!(
            log.contains("listening on") && !log.contains("open files"),
            "{log}"
        );
    }
}

/// The flags under which `send_big_batch`'s batch is allowed.
const BIG_BATCH_FLAGS: [&str; 4] = ["--max-batch", "4000", "--max-batch-items", "1000000"];

/// Sends a batch whose answer is about 20 MB (4000 requests at k = 150),
/// reading nothing of it.
fn send_big_batch(port: u16) -> TcpStream {
    let big: Vec<Value> = (0..4000)
        .map(|i| json!({"history": [1 + i % 5, 2, 3], "k": 150}))
        .collect();
    let big = json!({ "requests": big }).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&raw_request(
        "POST",
        "/v1/recommend/batch",
        big.as_bytes(),
        "",
    ))
    .unwrap();
    s
}

/// A batch keeps its scoring slot until its answer has left: while one
/// client leaves a ~20 MB answer unread, the one slot of
/// `--max-concurrent-batches 1` is taken and another batch is shed; once
/// the answer is read, the next batch is scored. (The slot used to be
/// freed when the answer was made, so answers waiting on slow readers
/// piled up in memory without bound.)
#[test]
fn a_batch_holds_its_slot_until_its_answer_is_read() {
    let m = models();
    let mut flags = vec!["--max-concurrent-batches", "1"];
    flags.extend(BIG_BATCH_FLAGS);
    let server = Server::start(&m.a, &flags);
    let slow = send_big_batch(server.port);
    // Time to score it and fill the socket buffers; nothing read yet.
    std::thread::sleep(Duration::from_secs(3));
    let small = json!({"requests": [{"history": [1, 2], "k": 3}]});
    let (s, v) = server.post("/v1/recommend/batch", &small);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("overloaded")),
        "{v}"
    );

    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (status, _, answer) = read_response(&mut BufReader::new(slow)).unwrap();
    assert_eq!(status, 200);
    assert!(answer.len() > 10 << 20, "{} bytes", answer.len());
    let (s, v) = server.post("/v1/recommend/batch", &small);
    assert_eq!(s, 200, "{v}");
}

/// A client that takes a big answer a kilobyte a second leaves the
/// server's writes blocked (the kernel wakes a writer only when a good part
/// of the buffer is free), and the write deadline cuts it off after the
/// idle timeout: its answer does not stay in memory.
#[test]
fn a_client_that_reads_an_answer_too_slowly_is_cut_off() {
    let m = models();
    let mut flags = vec!["--idle-timeout-s", "2", "--log-level", "debug"];
    flags.extend(BIG_BATCH_FLAGS);
    let server = Server::start(&m.a, &flags);
    let mut slow = send_big_batch(server.port);
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(25) {
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    });
    server.wait_for_log("error writing a body to connection");
    drop(reader);
}

/// A FIFO where the model's index cache goes (MODEL.index): the graph is
/// built and served from memory, and the FIFO is neither waited on nor
/// replaced, at start, on a reload by the admin route or SIGHUP, or at
/// shutdown.
#[test]
fn a_fifo_at_the_index_cache_holds_up_neither_start_reload_nor_shutdown() {
    use std::os::unix::fs::FileTypeExt;
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    std::fs::copy(&m.a, &model).unwrap();
    let cache = dir.path().join("model.safetensors.index");
    let c_path = std::ffi::CString::new(cache.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let started = Instant::now();
    let (mut server, _token) = Server::start_with_token(
        &model,
        "fifo-cache-token",
        &["--admin", "--index", "approx", "--shutdown-grace-s", "60"],
    );
    let line = server.wait_for_log("not cached");
    assert!(line.contains("is a FIFO (named pipe)"), "{line}");
    let (_, v) = server.get("/v1/model");
    assert_eq!(v["index"]["kind"], "approx", "{v}");

    let (s, v) = server.post("/v1/admin/reload", &json!({}));
    assert_eq!((s, &v["model"]["generation"]), (200, &json!(2)), "{v}");
    server.signal(libc::SIGHUP);
    wait_for_generation(&server, 3);
    let (s, v) = server.post("/v1/recommend", &json!({"history": [1, 2], "k": 3}));
    assert_eq!((s, ids(&v).len()), (200, 3), "{v}");

    server.signal(libc::SIGTERM);
    let exit = server.wait_exit();
    assert!(exit.success(), "{exit}");
    // Far below the 60 s grace: nothing was left waiting on the FIFO.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(std::fs::metadata(&cache).unwrap().file_type().is_fifo());
}
