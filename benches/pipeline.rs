//! `cargo bench --bench pipeline`: seconds to read a dataset, build the
//! per-user sequences and the reference's examples, and cut every training
//! batch (batch 4096), with the peak memory of doing so.
//!
//! Two sizes, both synthetic (`seqrec::data::synth`, MovieLens-1M `.dat`
//! format): the MovieLens-1M shape (1,000,209 ratings; goal: read + build
//! under 0.3 s) and a MovieLens-25M-sized set (25,000,000 ratings, 162,541
//! users, 59,047 items). The data is generated first, by this process; each
//! measurement then runs in a child process (this binary re-executed with
//! `--pipeline-child`), so that its peak RSS (VmHWM) counts reading, building
//! and batching only, not the generator.
//!
//! Environment: SEQREC_BENCH_THREADS (rayon threads; default all cores),
//! SEQREC_BENCH_REPEATS (runs of the ML-1M case, default 5),
//! SEQREC_BENCH_LARGE=0 (skip the 25M case).

mod common;

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use seqrec::data::synth::{generate, SynthConfig};
use seqrec::data::table::{GenericFormat, ReadOptions};
use seqrec::data::{source, Sequences};
use seqrec::model::{fill_batch, Batch, ModelOptions};

use common::{env, median};

const CHILD_FLAG: &str = "--pipeline-child";
const BATCH_SIZE: usize = 4096;
const GOAL_S: f64 = 0.3;

/// Peak resident memory of this process so far, in MiB (VmHWM, Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"))
}

/// Seconds of each phase of one run.
#[derive(Clone, Copy, Default)]
struct Phases {
    read: f64,
    sequences: f64,
    split: f64,
    batches: f64,
}

impl Phases {
    fn build(&self) -> f64 {
        self.read + self.sequences + self.split
    }
    fn total(&self) -> f64 {
        self.build() + self.batches
    }
}

struct RunInfo {
    lines_read: usize,
    ratings_kept: usize,
    users: usize,
    vocab: usize,
    train_examples: usize,
    test_examples: usize,
    batches: usize,
    checksum: u64,
    rss_after_read: Option<f64>,
    rss_after_build: Option<f64>,
}

/// Reads `dir`, builds the sequences and examples, and cuts every training
/// batch into one reused `Batch`, as `seqrec train` does.
fn run_once(dir: &Path) -> (Phases, RunInfo) {
    let mut ph = Phases::default();

    let t = Instant::now();
    let ds = source::read_path(dir, &GenericFormat::default(), &ReadOptions::default())
        .expect("read the synthetic data");
    ph.read = t.elapsed().as_secs_f64();
    let rss_after_read = peak_rss_mib();

    let t = Instant::now();
    let seqs = Sequences::build(&ds.interactions, 3).expect("build sequences");
    ph.sequences = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (train, test) = seqs.split_last();
    ph.split = t.elapsed().as_secs_f64();
    let rss_after_build = peak_rss_mib();

    let spec = ModelOptions::default().spec(ds.catalog.vocab_size());
    let t = Instant::now();
    let mut batch = Batch::default();
    let mut checksum = 0u64;
    let mut batches = 0usize;
    for chunk in train.label_pos.chunks(BATCH_SIZE) {
        fill_batch(&spec, &seqs, chunk, &mut batch);
        black_box(&batch);
        // Use every batch, so that none can be optimised away.
        checksum = checksum.wrapping_add(batch.labels[batch.size - 1] as u64);
        checksum = checksum.wrapping_add(batch.contexts[0] as u64);
        batches += 1;
    }
    ph.batches = t.elapsed().as_secs_f64();

    let info = RunInfo {
        lines_read: ds.interactions.lines_read,
        ratings_kept: ds.interactions.len(),
        users: seqs.len(),
        vocab: ds.catalog.vocab_size(),
        train_examples: train.len(),
        test_examples: test.len(),
        batches,
        checksum: black_box(checksum),
        rss_after_read,
        rss_after_build,
    };
    (ph, info)
}

/// Picks one phase's (or a sum of phases') seconds out of a run.
type PhaseFn = fn(&Phases) -> f64;

/// The child: `repeats` runs on `dir`, then the phase times and peak RSS
/// (and the read + build time against `goal_s`, if any).
fn child(label: &str, dir: &Path, repeats: usize, goal_s: Option<f64>) {
    let threads = env(
        "SEQREC_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon thread pool");
    let rss_start = peak_rss_mib();

    let mut runs = Vec::with_capacity(repeats);
    let mut first_info = None;
    for _ in 0..repeats.max(1) {
        let (ph, info) = run_once(dir);
        runs.push(ph);
        if first_info.is_none() {
            first_info = Some(info);
        }
    }
    let info = first_info.expect("at least one run");
    let peak = peak_rss_mib();

    println!("== {label}: {threads} threads, {} run(s)", runs.len());
    println!(
        "   {} ratings kept, {} users with a sequence, vocabulary {}, {} train / {} test examples, {} train batches of {BATCH_SIZE} (checksum {})",
        info.ratings_kept,
        info.users,
        info.vocab,
        info.train_examples,
        info.test_examples,
        info.batches,
        info.checksum
    );
    let col = |f: PhaseFn| -> (f64, f64) {
        let v: Vec<f64> = runs.iter().map(f).collect();
        (v.iter().copied().fold(f64::INFINITY, f64::min), median(v))
    };
    let rows: [(&str, PhaseFn); 6] = [
        ("read (ratings.dat + movies.dat)", |p| p.read),
        ("sequences (group, sort by time)", |p| p.sequences),
        ("examples (split_last)", |p| p.split),
        ("read + build", Phases::build),
        ("all train batches (fill_batch)", |p| p.batches),
        ("read + build + all batches", Phases::total),
    ];
    if runs.len() > 1 {
        println!("   {:<34} {:>9} {:>9}", "phase", "best s", "median s");
        for (name, f) in rows {
            let (best, med) = col(f);
            println!("   {name:<34} {best:>9.3} {med:>9.3}");
        }
    } else {
        println!("   {:<34} {:>9}", "phase", "s");
        for (name, f) in rows {
            println!("   {name:<34} {:>9.3}", f(&runs[0]));
        }
    }
    let (best_build, med_build) = col(Phases::build);
    if let Some(goal) = goal_s {
        println!(
            "   read + build vs goal {goal} s: best {best_build:.3} s, median {med_build:.3} s ({})",
            if med_build < goal { "under" } else { "OVER" }
        );
    }
    let bytes = std::fs::metadata(dir.join("ratings.dat")).map_or(0, |m| m.len()) as f64;
    let read_s = col(|p| p.read).1;
    println!(
        "   reading: {:.1} M lines/s, {:.0} MiB/s of ratings.dat",
        info.lines_read as f64 / read_s / 1e6,
        bytes / read_s / (1024.0 * 1024.0)
    );
    let ns_per_example = 1e9 * col(|p| p.batches).1 / info.train_examples.max(1) as f64;
    println!("   batch cutting: {ns_per_example:.1} ns per example");
    println!(
        "   peak RSS (VmHWM): at start {}, after the first read {}, after the first build {}, at the end {}",
        mib(rss_start),
        mib(info.rss_after_read),
        mib(info.rss_after_build),
        mib(peak)
    );
}

/// Generates `cfg` into a new temporary folder and measures it in a child.
fn case(label: &str, cfg: &SynthConfig, repeats: usize, goal_s: Option<f64>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let t = Instant::now();
    generate(cfg, dir.path(), false).expect("generate synthetic data");
    let gen_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(dir.path().join("ratings.dat")).map_or(0, |m| m.len());
    println!(
        "-- {label}: generated {} lines of ratings.dat ({:.0} MiB) in {gen_s:.2} s",
        cfg.ratings,
        bytes as f64 / (1024.0 * 1024.0)
    );
    let exe = std::env::current_exe().expect("path of this benchmark");
    let status = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(label)
        .arg(dir.path())
        .arg(repeats.to_string())
        .arg(goal_s.map_or_else(|| "none".to_string(), |g| g.to_string()))
        .status()
        .expect("start the measuring child process");
    if !status.success() {
        eprintln!("pipeline: the child process for {label} failed ({status})");
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        let label = &args[i + 1];
        let dir = Path::new(&args[i + 2]);
        let repeats: usize = args[i + 3].parse().expect("repeat count");
        let goal_s: Option<f64> = args[i + 4].parse().ok();
        child(label, dir, repeats, goal_s);
        return;
    }

    let repeats = env("SEQREC_BENCH_REPEATS", 5).max(1);
    case(
        "ML-1M shape (1,000,209 ratings)",
        &SynthConfig::default(),
        repeats,
        Some(GOAL_S),
    );
    if env("SEQREC_BENCH_LARGE", 1) != 0 {
        let big = SynthConfig {
            ratings: 25_000_000,
            users: 162_541,
            items: 59_047,
            ..Default::default()
        };
        case("ML-25M size (25,000,000 ratings)", &big, 1, None);
    } else {
        println!("-- ML-25M size: skipped (SEQREC_BENCH_LARGE=0)");
    }
}
