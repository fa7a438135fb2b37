//! The HTTP target: mutated requests, raw bytes on a TCP connection, to a
//! `seqrec serve` process. The server is another process, so the harness's
//! allocation ceiling does not see it: its resident memory is read from
//! /proc after every input instead, and it must stay alive and keep
//! answering /healthz.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `seqrec serve` child on an ephemeral port, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(model: &Path, token_file: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_seqrec"))
            .arg("serve")
            .arg(model)
            .args(["--addr", "127.0.0.1:0", "--allow-user-lookup", "--admin"])
            .arg("--token-file")
            .arg(token_file)
            .args(["--header-timeout-s", "1", "--idle-timeout-s", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Server { child, port }
    }

    /// Resident memory of the server, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `bytes`, half-closes, and reads what comes back within 5 s.
    pub fn exchange(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        // The server may answer and close before taking all of a bad request.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        match s.take(16 << 20).read_to_end(&mut out) {
            Ok(_) => Ok(out),
            // A reset after a complete answer is the server refusing the rest.
            Err(e) if !out.is_empty() => {
                let _ = e;
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of each response in `raw` (several when pipelined), and
/// whether every body said to be JSON parses.
pub fn statuses(raw: &[u8]) -> Result<Vec<u16>, String> {
    let mut rest = raw;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| {
                format!(
                    "a response without a full head: {:?}",
                    String::from_utf8_lossy(rest)
                )
            })?;
        let head = std::str::from_utf8(&rest[..end]).map_err(|e| e.to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let mut length = 0usize;
        let mut json = false;
        for l in lines {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = value.trim().parse().map_err(|_| "bad content-length")?
                }
                "content-type" => json = value.contains("json"),
                "transfer-encoding" => return Err("a chunked answer; not expected".into()),
                _ => {}
            }
        }
        let body_start = end + 4;
        let body = rest
            .get(body_start..body_start + length)
            .ok_or("a body shorter than its content-length")?;
        if json && status != 204 {
            serde_json::from_slice::<serde_json::Value>(body)
                .map_err(|e| format!("a JSON answer that does not parse: {e}"))?;
        }
        out.push(status);
        rest = &rest[body_start + length..];
    }
    Ok(out)
}

/// Well-formed requests of every route, the seeds.
pub fn seeds(token: &str) -> Vec<Vec<u8>> {
    let auth = format!("Authorization: Bearer {token}\r\n");
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes();
    vec![
        post("/v1/recommend", r#"{"history":[1,2,3],"k":5}"#),
        post(
            "/v1/recommend",
            r#"{"history":["1","2"],"k":3,"exclude_seen":true}"#,
        ),
        post("/v1/recommend", r#"{"user":"1","k":2,"exclude_seen":true}"#),
        post(
            "/v1/recommend/batch",
            r#"{"requests":[{"history":[1,2],"k":2},{"user":"2","k":3}]}"#,
        ),
        get("/v1/items/1"),
        get("/v1/model"),
        get("/healthz"),
        get("/openapi.json"),
        post("/v1/admin/reload", ""),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/model HTTP/1.1\r\nHost: x\r\n\r\n"
            .to_vec(),
        // Refused, each its own way: a key given twice (400), a transfer
        // coding besides chunked (501), HTTP/2 (505).
        post(
            "/v1/recommend/batch",
            r#"{"requests":[{"history":[1],"k":2,"k":3}],"requests":[]}"#,
        ),
        format!(
            "POST /v1/recommend HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        )
        .into_bytes(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec(),
    ]
}

/// The statuses the server may answer besides 2xx and 4xx: shed load, a
/// transfer coding it does not decode, an HTTP version it does not speak.
pub const SERVER_REFUSALS: &[u16] = &[501, 503, 505];

pub const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b", chunked",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"HTTP/2.0",
    b"\"history\":[1],\"history\":",
    b",\"k\":1,\"k\":2",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"\"k\":",
    b"\"history\":[",
    b"\"user\":",
    b"\"requests\":[",
    b"HTTP/1.0",
    b"/v1/recommend",
    b"%00",
    b"Authorization: Bearer ",
];
