//! A small mutation fuzzer that runs on stable Rust inside `cargo test`.
//!
//! Written here rather than taken from a crate because the job needs four
//! things together: stable Rust (cargo-fuzz needs nightly), byte-level
//! mutations of real seed files (proptest generates values, not mutants of
//! a corpus), a wall-clock budget CI can bound, and an allocation ceiling
//! that turns "allocated without bound" into a failure (bolero's stable
//! engine has none of the last three).
//!
//! Each input runs under `catch_unwind` (a panic is a failure), under a
//! watchdog (an input running longer than `HANG_SECONDS` is a hang), and
//! under the counting allocator below (one allocation over
//! `MAX_ALLOCATION` or a live heap over `MAX_LIVE` is unbounded
//! allocation). A failing input is written to `target/fuzz-failures/` so
//! that it can be replayed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Larger than any honest allocation of these targets on their small
/// inputs (the largest catalogue a file may declare is 10^7 ids, a 240 MB
/// title table), far below what would take the machine down.
pub const MAX_ALLOCATION: usize = 1 << 30;
pub const MAX_LIVE: usize = 3 << 30;
pub const HANG_SECONDS: u64 = 20;

pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Set while a target runs, so the harness's own allocations do not count.
static ARMED: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Relaxed) {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
            if layout.size() > MAX_ALLOCATION || live > MAX_LIVE {
                ARMED.store(false, Relaxed);
                fail_now(&format!(
                    "unbounded allocation: {} bytes asked, {live} bytes live",
                    layout.size()
                ));
            }
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Relaxed) {
            // Saturating in one atomic step: a load then a subtraction let
            // two threads freeing at once (memory allocated before the
            // harness armed) wrap the count below zero, which read as
            // 2^64 bytes live and stopped a run that allocated 8 bytes.
            let _ = LIVE.fetch_update(Relaxed, Relaxed, |live| {
                Some(live.saturating_sub(layout.size()))
            });
        }
        System.dealloc(ptr, layout)
    }
}

/// The input being run, for the failure report.
static CURRENT: Mutex<Option<(String, Vec<u8>)>> = Mutex::new(None);

fn failure_path(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{target}-{}.bin", std::process::id()))
}

/// Saves the current input and stops the whole process: a hang or an
/// unbounded allocation cannot be unwound from.
fn fail_now(why: &str) -> ! {
    use std::io::Write;
    ARMED.store(false, Relaxed);
    // Straight to stderr: cargo test's capture of eprintln! dies with the
    // process.
    let mut stderr = std::io::stderr();
    if let Ok(Some((target, input))) = CURRENT.try_lock().map(|c| c.clone()) {
        let path = failure_path(&target);
        let _ = std::fs::write(&path, &input);
        let _ = writeln!(
            stderr,
            "fuzz {target}: {why}; input saved to {}",
            path.display()
        );
    } else {
        let _ = writeln!(stderr, "fuzz: {why}");
    }
    std::process::abort();
}

/// Seconds each target runs: `SEQREC_FUZZ_SECONDS` (default 5, so that CI
/// stays brief; a long run is the same test with a larger value).
pub fn budget() -> Duration {
    let s = std::env::var("SEQREC_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(5.0);
    Duration::from_secs_f64(s)
}

/// Byte strings a mutation may insert: separators, numbers at the edges of
/// their types, quotes, escape codes, a byte-order mark.
const TOKENS: &[&[u8]] = &[
    b"::",
    b",",
    b"\t",
    b"|",
    b"\"",
    b"\n",
    b"\r\n",
    b"0",
    b"-1",
    b"9999999999999999999999",
    b"10000000",
    b"4294967295",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1e309",
    b"NaN",
    b"inf",
    b"\xef\xbb\xbf",
    b"\x1b[2J",
    b"\xff\xfe",
    b"\0",
    b"{\"",
    b"\":",
    b"[",
    b"]",
    b"}",
];

fn mutate(rng: &mut ChaCha8Rng, seeds: &[Vec<u8>], dict: &[&[u8]], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seeds[rng.random_range(0..seeds.len())]);
    for _ in 0..rng.random_range(1..=8) {
        let len = out.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..=len)
        };
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] = rng.random();
            }
            2 if at < len => {
                let end = (at + rng.random_range(1..=64)).min(len);
                out.drain(at..end);
            }
            3 if at < len => {
                let end = (at + rng.random_range(1..=256)).min(len);
                let chunk = out[at..end].to_vec();
                let times = rng.random_range(1..=4);
                for _ in 0..times {
                    out.splice(at..at, chunk.iter().copied());
                }
            }
            4 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            5 if !dict.is_empty() => {
                let t = dict[rng.random_range(0..dict.len())];
                out.splice(at..at, t.iter().copied());
            }
            6 => out.truncate(at),
            7 => {
                // A piece of another seed: crosses formats and headers.
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let b = (a + rng.random_range(1..=512)).min(other.len());
                    out.splice(at..at, other[a..b].iter().copied());
                }
            }
            _ => {
                // Replace a run of digits with an edge value.
                if let Some(i) = (at..len).find(|&i| out[i].is_ascii_digit()) {
                    let end = (i..len).find(|&j| !out[j].is_ascii_digit()).unwrap_or(len);
                    let t = TOKENS[rng.random_range(7..17)];
                    out.splice(i..end, t.iter().copied());
                }
            }
        }
    }
    // Inputs stay small: the targets' bounds on big inputs have tests of
    // their own; here it is the shape of the bytes that varies.
    out.truncate(1 << 20);
}

pub struct Report {
    pub inputs: u64,
    pub errors: u64,
    pub seconds: f64,
    pub peak_live_mib: f64,
}

/// Runs `target` on the seeds, then on mutants of them, for `budget()`.
/// `target` returns whether the input was accepted (`Ok`) or refused with
/// an error (`Err`); both are fine, a panic is not. Panics fail the test
/// (after the budget, with the inputs saved); hangs and unbounded
/// allocations abort the process at once.
pub fn fuzz<T, E>(
    name: &str,
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
    mut target: impl FnMut(&[u8]) -> Result<T, E>,
) -> Report {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    // One target at a time: the allocation counts are the process's, and
    // cargo test runs tests in parallel.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = std::env::var("SEQREC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let budget = budget();
    let started = Instant::now();
    let input_started = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (input_started, done) = (input_started.clone(), done.clone());
        let origin = started;
        std::thread::spawn(move || {
            while !done.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let at = input_started.load(Relaxed);
                let now = origin.elapsed().as_millis() as u64;
                if at != u64::MAX && now.saturating_sub(at) > HANG_SECONDS * 1000 {
                    fail_now(&format!("an input ran over {HANG_SECONDS} s"));
                }
            }
        })
    };
    PEAK.store(0, Relaxed);
    let (mut inputs, mut errors, mut panics) = (0u64, 0u64, Vec::new());
    let mut input = Vec::new();
    let mut i = 0;
    while i < seeds.len() || started.elapsed() < budget {
        if i < seeds.len() {
            input.clone_from(&seeds[i]);
        } else {
            mutate(&mut rng, seeds, dict, &mut input);
        }
        i += 1;
        *CURRENT.lock().unwrap() = Some((name.to_string(), input.clone()));
        input_started.store(started.elapsed().as_millis() as u64, Relaxed);
        LIVE.store(0, Relaxed);
        ARMED.store(true, Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input).is_ok()));
        ARMED.store(false, Relaxed);
        input_started.store(u64::MAX, Relaxed);
        inputs += 1;
        match outcome {
            Ok(true) => {}
            Ok(false) => errors += 1,
            Err(_) => {
                let path = failure_path(&format!("{name}-panic{}", panics.len()));
                let _ = std::fs::write(&path, &input);
                panics.push(path);
            }
        }
    }
    done.store(true, Relaxed);
    let _ = watchdog.join();
    let report = Report {
        inputs,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        peak_live_mib: PEAK.load(Relaxed) as f64 / (1 << 20) as f64,
    };
    let line = format!(
        "fuzz {name}: {} inputs in {:.1} s ({} refused with an error), {} panics, \
         no hang over {HANG_SECONDS} s, peak heap of one input {:.1} MiB",
        report.inputs,
        report.seconds,
        report.errors,
        panics.len(),
        report.peak_live_mib
    );
    eprintln!("{line}");
    // cargo test hides a passing test's output; CI prints these files.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-reports");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{line}\n"));
    assert!(
        panics.is_empty(),
        "{name}: inputs that panicked: {panics:?}"
    );
    report
}
