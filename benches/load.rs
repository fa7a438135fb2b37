//! Bounded load test of `seqrec serve`, loopback only; stops by itself.
//!
//! Makes a synthetic MovieLens-1M-shaped dataset, trains one epoch, then for
//! each micro-batcher setting starts the server on a free port and sends a
//! fixed number of single-history requests (10 items, k = 10) over
//! keep-alive connections from N client threads (raw TcpStream, hand-written
//! HTTP/1.1): first all valid, then with 10% malformed requests mixed in.
//! Checks every request got its answer (200, or 400 for the malformed
//! ones) and prints throughput and latency percentiles.
//!
//! ```sh
//! cargo bench --bench load                                  # 100,000 requests x 2 phases x windows 0 (off) and 20 us
//! cargo bench --bench load -- --requests 20000 --connections 16 --windows 0,100,500,1000
//! cargo bench --bench load -- --model path/to/model.safetensors
//! cargo bench --bench load -- --items 1000000 --requests 20000   # a 10^6-item catalogue (approximate top-K)
//! cargo bench --bench load -- --slow-connections 200 --rounds 4  # the valid phase with and without 200 slow clients, alternated
//! ```
//!
//! With `--slow-connections N` the valid phase runs `--rounds` times (3 by
//! default) without and with N slow connections held open beside the
//! clients, alternating, since a shared machine drifts between runs more
//! than the difference looked for. Each slow connection sends half a
//! request header, then one more byte a second; when the server closes it
//! (its header timeout) it is opened again at once, so N are held open all
//! along. The table then gives each round and the medians of the two.
//!
//! With `--items N` the synthetic catalogue has N items (20,000 users,
//! 2,000,000 ratings); the server then runs with its default `--index auto`,
//! which at more than 100,000 items builds the approximate graph on the
//! first start (cached beside the model for the next ones).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BIN: &str = env!("CARGO_BIN_EXE_seqrec");

struct Options {
    requests: usize,
    connections: usize,
    windows: Vec<u64>,
    model: Option<PathBuf>,
    items: Option<usize>,
    extra: Vec<String>,
    slow: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        requests: 100_000,
        connections: 8,
        windows: vec![0, 20],
        model: None,
        items: None,
        extra: Vec::new(),
        slow: 0,
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--requests" => o.requests = value.parse().expect("--requests N"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--windows" => {
                o.windows = value
                    .split(',')
                    .map(|w| w.trim().parse().expect("--windows US,US,..."))
                    .collect()
            }
            "--model" => o.model = Some(PathBuf::from(value)),
            "--items" => o.items = Some(value.parse().expect("--items N")),
            "--slow-connections" => o.slow = value.parse().expect("--slow-connections N"),
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            // Passed on to `seqrec serve` (e.g. --server-arg --batch-max=32).
            "--server-arg" => o.extra.push(value),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(o.connections > 0 && o.requests >= o.connections && o.rounds > 0);
    o
}

fn seqrec(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().expect("run seqrec");
    assert!(
        out.status.success(),
        "seqrec {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(model: &Path, window_us: u64, extra: &[String]) -> Server {
        let window = window_us.to_string();
        let mut child = Command::new(BIN)
            .args(["serve", model.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .args(["--batch-window-us", &window])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start seqrec serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("the server stopped before it was ready")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, port, log }
    }

    /// Stops the server with SIGTERM; returns its last log line.
    fn stop(mut self) -> String {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "the server exited with {status}");
                std::thread::sleep(Duration::from_millis(50));
                return self.log.lock().unwrap().last().cloned().unwrap_or_default();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_request(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request and the status it must get.
struct Prepared {
    bytes: Vec<u8>,
    expect: u16,
}

fn prepare(items: &[u32], n: usize, malformed_every: usize, seed: u64) -> Vec<Prepared> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            if malformed_every > 0 && i % malformed_every == malformed_every - 1 {
                let body = match rng.random_range(0..5) {
                    0 => "{\"history\": [1, 2,".to_string(),
                    1 => "{\"history\": [999999999], \"k\": 10}".to_string(),
                    2 => "{\"history\": [1], \"k\": 0}".to_string(),
                    3 => "{\"history\": \"1,2,3\"}".to_string(),
                    _ => "{\"history\": []}".to_string(),
                };
                return Prepared {
                    bytes: http_request(&body),
                    expect: 400,
                };
            }
            let ids: Vec<String> = (0..10)
                .map(|_| items[rng.random_range(0..items.len())].to_string())
                .collect();
            let body = format!(
                "{{\"history\": [{}], \"k\": 10, \"exclude_seen\": true}}",
                ids.join(",")
            );
            Prepared {
                bytes: http_request(&body),
                expect: 200,
            }
        })
        .collect()
}

/// Reads one response: its status and body length.
fn read_response(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<(u16, usize)> {
    line.clear();
    r.read_line(line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(line)? == 0 {
            return Err(std::io::Error::other("connection closed in the headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    if status == 200 && !body.starts_with(b"{\"items\":[{") {
        return Err(std::io::Error::other("a 200 without items"));
    }
    Ok((status, len))
}

struct PhaseResult {
    ok: usize,
    rejected: usize,
    wrong: usize,
    failed: usize,
    seconds: f64,
    latencies_us: Vec<u32>,
}

fn run_phase(port: u16, per_thread: Vec<Vec<Prepared>>) -> PhaseResult {
    let threads = per_thread.len();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|reqs| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                stream.set_nodelay(true).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::with_capacity(64 * 1024, stream);
                let mut line = String::new();
                let mut lat = Vec::with_capacity(reqs.len());
                let (mut ok, mut rejected, mut wrong, mut failed) = (0, 0, 0, 0);
                barrier.wait();
                for (i, req) in reqs.iter().enumerate() {
                    let t = Instant::now();
                    let res = w
                        .write_all(&req.bytes)
                        .and_then(|_| read_response(&mut r, &mut line));
                    match res {
                        Ok((status, _)) => {
                            lat.push(t.elapsed().as_micros() as u32);
                            match (status, req.expect) {
                                (200, 200) => ok += 1,
                                (s, 400) if (400..500).contains(&s) => rejected += 1,
                                _ => wrong += 1,
                            }
                        }
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed += reqs.len() - i;
                            break;
                        }
                    }
                }
                (ok, rejected, wrong, failed, lat)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut res = PhaseResult {
        ok: 0,
        rejected: 0,
        wrong: 0,
        failed: 0,
        seconds: 0.0,
        latencies_us: Vec::new(),
    };
    for h in handles {
        let (ok, rejected, wrong, failed, lat) = h.join().expect("client thread");
        res.ok += ok;
        res.rejected += rejected;
        res.wrong += wrong;
        res.failed += failed;
        res.latencies_us.extend(lat);
    }
    res.seconds = start.elapsed().as_secs_f64();
    res.latencies_us.sort_unstable();
    res
}

/// `n` connections that each send half a request header, then a byte a
/// second, reopened when the server closes them; held until `stop`.
struct SlowClients {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl SlowClients {
    fn start(port: u16, n: usize) -> SlowClients {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let open = move || -> Option<TcpStream> {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .ok()?;
            Some(s)
        };
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
            let mut reopened = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for c in conns.iter_mut() {
                    let alive = c.as_mut().is_some_and(|s| s.write_all(b"a").is_ok());
                    if !alive {
                        *c = open();
                        reopened += 1;
                    }
                }
                // A byte a second, checking for the stop ten times as often.
                for _ in 0..10 {
                    if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            reopened
        });
        SlowClients {
            stop,
            thread: Some(thread),
        }
    }

    /// Closes them all; how many times one was reopened.
    fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let model = match &o.model {
        Some(m) => m.clone(),
        None => {
            let data = dir.path().join("data");
            let model = dir.path().join("model.safetensors");
            let t = Instant::now();
            match o.items {
                Some(items) => seqrec(&[
                    "synth",
                    data.to_str().unwrap(),
                    "--quiet",
                    "--items",
                    &items.to_string(),
                    "--users",
                    "20000",
                    "--ratings",
                    "2000000",
                ]),
                None => seqrec(&["synth", data.to_str().unwrap(), "--quiet"]),
            }
            seqrec(&[
                "--quiet",
                "train",
                data.to_str().unwrap(),
                "--out",
                model.to_str().unwrap(),
                "--epochs",
                "1",
            ]);
            eprintln!(
                "made a synthetic model ({} items, 1 epoch) in {:.1} s",
                o.items
                    .map_or("ML-1M-shaped".to_string(), |n| n.to_string()),
                t.elapsed().as_secs_f64()
            );
            model
        }
    };
    let saved = seqrec::checkpoint::load_for_inference(&model)
        .expect("load the model")
        .artifact;
    let items: Vec<u32> = (0..saved.catalog.is_item.len() as u32)
        .filter(|&i| saved.catalog.is_item[i as usize])
        .collect();
    let keyed = saved.catalog.keys.is_some();
    drop(saved);
    assert!(
        !keyed,
        "the load test sends numeric ids: use a MovieLens-style model"
    );

    println!(
        "seqrec serve load test: {} requests per phase, {} keep-alive connections, single histories of 10 items, k = 10, {} cores",
        o.requests,
        o.connections,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "{:>10}  {:>14}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}  {:>6}",
        "window_us", "phase", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "200", "4xx"
    );
    let mut all_good = true;
    for &window in &o.windows {
        let server = Server::start(&model, window, &o.extra);
        // Warm up: connections, caches, the allocator.
        let warm = prepare(&items, 2000, 0, 99);
        let _ = run_phase(server.port, vec![warm]);
        if o.slow > 0 {
            let label = format!("{} slow", o.slow);
            let mut figures: [(Vec<f64>, Vec<f64>); 2] = Default::default();
            for round in 0..o.rounds {
                for (with_slow, name) in [(false, "no slow"), (true, label.as_str())] {
                    let slow = with_slow.then(|| SlowClients::start(server.port, o.slow));
                    if slow.is_some() {
                        // Let them all connect and start their headers.
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    let per = o.requests / o.connections;
                    let reqs: Vec<Vec<Prepared>> = (0..o.connections)
                        .map(|t| prepare(&items, per, 0, (round * 100 + t) as u64 + 1))
                        .collect();
                    let res = run_phase(server.port, reqs);
                    let reopened = slow.map_or(0, SlowClients::stop);
                    let rate = (per * o.connections) as f64 / res.seconds;
                    let p99 = percentile(&res.latencies_us, 0.99);
                    figures[with_slow as usize].0.push(rate);
                    figures[with_slow as usize].1.push(p99);
                    println!(
                        "{:>10}  {:>14}  {:>9.0}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>6}  {:>6}{}",
                        window,
                        format!("{name} r{}", round + 1),
                        rate,
                        percentile(&res.latencies_us, 0.50),
                        percentile(&res.latencies_us, 0.90),
                        p99,
                        percentile(&res.latencies_us, 1.0),
                        res.ok,
                        res.rejected,
                        if with_slow {
                            format!("  (slow ones reopened {reopened} times)")
                        } else {
                            String::new()
                        },
                    );
                    if res.failed > 0 || res.wrong > 0 || res.ok != per * o.connections {
                        println!(
                            "    ERROR: {} failed (dropped), {} with the wrong status",
                            res.failed, res.wrong
                        );
                        all_good = false;
                    }
                }
            }
            let [(mut r0, mut p0), (mut r1, mut p1)] = figures;
            let (range_r0, range_r1) = (
                (
                    r0.iter().cloned().fold(f64::MAX, f64::min),
                    r0.iter().cloned().fold(0.0, f64::max),
                ),
                (
                    r1.iter().cloned().fold(f64::MAX, f64::min),
                    r1.iter().cloned().fold(0.0, f64::max),
                ),
            );
            let (m_r0, m_r1, m_p0, m_p1) = (
                median(&mut r0),
                median(&mut r1),
                median(&mut p0),
                median(&mut p1),
            );
            println!(
                "{:>10}  medians: no slow {:.0} req/s (range {:.0}-{:.0}), p99 {:.3} ms; {label} {:.0} req/s (range {:.0}-{:.0}), p99 {:.3} ms; throughput {:+.1}%, p99 {:+.1}%",
                window,
                m_r0, range_r0.0, range_r0.1, m_p0,
                m_r1, range_r1.0, range_r1.1, m_p1,
                100.0 * (m_r1 / m_r0 - 1.0),
                100.0 * (m_p1 / m_p0 - 1.0),
            );
            server.stop();
            continue;
        }
        for (phase, malformed_every) in [("valid", 0usize), ("10% malformed", 10)] {
            let per = o.requests / o.connections;
            let reqs: Vec<Vec<Prepared>> = (0..o.connections)
                .map(|t| prepare(&items, per, malformed_every, t as u64 + 1))
                .collect();
            let expected_ok: usize = reqs.iter().flatten().filter(|r| r.expect == 200).count();
            let expected_bad: usize = reqs.iter().flatten().filter(|r| r.expect == 400).count();
            let res = run_phase(server.port, reqs);
            let sent = per * o.connections;
            println!(
                "{:>10}  {:>14}  {:>9.0}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>6}  {:>6}",
                window,
                phase,
                sent as f64 / res.seconds,
                percentile(&res.latencies_us, 0.50),
                percentile(&res.latencies_us, 0.90),
                percentile(&res.latencies_us, 0.99),
                percentile(&res.latencies_us, 1.0),
                res.ok,
                res.rejected,
            );
            let good = res.failed == 0
                && res.wrong == 0
                && res.ok == expected_ok
                && res.rejected == expected_bad;
            if !good {
                println!(
                    "    ERROR: {} failed (dropped), {} with the wrong status, {} / {} answered 200, {} / {} rejected",
                    res.failed, res.wrong, res.ok, expected_ok, res.rejected, expected_bad
                );
                all_good = false;
            }
        }
        let last = server.stop();
        if let Some(stats) = last.split("stopped; ").nth(1) {
            println!("{:>10}  server: {stats}", "");
        }
    }
    assert!(
        all_good,
        "some requests were dropped or got the wrong status"
    );
    println!("every request answered, every malformed one rejected with 4xx");
}
