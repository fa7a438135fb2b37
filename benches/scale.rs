//! `cargo bench --bench scale`: one training step (batch 4096 x 10) at
//! growing catalogues, dense and lazy AdamW side by side, split by phase.
//! The batch, threads and dimension stay the same; only the vocabulary
//! grows, so any growth in a column is per-catalogue work left in the step.
//!
//! Items are drawn from a power law over the catalogue (popular items
//! recur, as in real logs), so a batch touches a realistic share of ids.
//!
//! Environment: SEQREC_BENCH_THREADS (default: all cores), SEQREC_BENCH_STEPS
//! (default 20), SEQREC_SCALE_VOCABS (default 3953,62967,1000000).

mod common;

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqrec::data::Sequences;
use seqrec::model::{
    fill_batch, Batch, Grads, Model, ModelOptions, ModelSpec, Params, StepOptions, Workspace,
};
use seqrec::train::adamw::{AdamW, AdamWConfig, Optimizer};
use seqrec::train::session::thread_pool;

use common::{env, median};

const BATCH: usize = 4096;

/// `batches x 4096` sequences of 11 items (10 of context, one label), ids
/// drawn as `1 + (V-1)·u³`, a steep power law like item popularity.
fn sequences(vocab: usize, batches: usize, seed: u64) -> (Sequences, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seqs = Sequences::default();
    seqs.offsets.push(0);
    let mut labels = Vec::new();
    for user in 0..batches * BATCH {
        for _ in 0..11 {
            let u: f64 = rng.random();
            seqs.items.push(1 + ((vocab - 1) as f64 * u * u * u) as u32);
        }
        labels.push(seqs.items.len() as u32 - 1);
        seqs.offsets.push(seqs.items.len() as u32);
        seqs.users.push(user as u32);
    }
    (seqs, labels)
}

/// Milliseconds per step of each phase (medians), and the distinct ids a
/// batch touched.
struct Timing {
    phases: [f64; 4],
    step: f64,
    touched: usize,
}

fn time_steps(spec: &ModelSpec, how: Optimizer, steps: usize, threads: usize) -> Timing {
    let (seqs, labels) = sequences(spec.vocab_size, 4, 7);
    let mut params = Params::init(spec, 1);
    let mut opt = AdamW::new(AdamWConfig::default(), spec);
    // The moments start as untouched zero pages: a long run faults each
    // page in once, but lazy AdamW would pay those faults inside the timed
    // steps here (dense pays them all in the first, untimed one). Touch
    // them first, so both are measured in their steady state.
    for t in opt.m.tensors_mut().into_iter().chain(opt.v.tensors_mut()) {
        for x in t.iter_mut() {
            *x = std::hint::black_box(0.0);
        }
    }
    let mut grads = Grads::zeros(spec);
    let mut ws = Workspace::default();
    let mut batch = Batch::default();
    let mut phase_ms: [Vec<f64>; 4] = Default::default();
    let mut step_ms = Vec::new();
    let mut touched = 0;
    let chunks: Vec<&[u32]> = labels.chunks(BATCH).collect();
    for i in 0..steps + 2 {
        fill_batch(spec, &seqs, chunks[i % chunks.len()], &mut batch);
        let model = Model {
            spec,
            params: &params,
            threads,
        };
        let step = StepOptions::default();
        let t0 = Instant::now();
        model.forward(&mut ws, &batch, &step);
        let t1 = Instant::now();
        model.loss(&mut ws, &batch, &step);
        let t2 = Instant::now();
        model.backward(&mut ws, &mut grads, &step);
        let t3 = Instant::now();
        opt.apply(&mut params, &grads, 0.001, how);
        let t4 = Instant::now();
        if i >= 2 {
            for (p, (a, b)) in phase_ms
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                p.push((b - a).as_secs_f64() * 1e3);
            }
            step_ms.push((t4 - t0).as_secs_f64() * 1e3);
            touched = grads.query_embedding.ids.len();
        }
    }
    Timing {
        phases: phase_ms.map(median),
        step: median(step_ms),
        touched,
    }
}

fn main() {
    // 0: one thread per core, as `seqrec train --threads 0`.
    let (pool, threads) = thread_pool(env("SEQREC_BENCH_THREADS", 0)).expect("thread pool");
    let steps = env("SEQREC_BENCH_STEPS", 20);
    let vocabs: Vec<usize> = std::env::var("SEQREC_SCALE_VOCABS")
        .unwrap_or_else(|_| "3953,62967,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    println!(
        "train step at growing catalogues: batch {BATCH} x 10, dim 32, {threads} thread(s), {steps} steps (medians, ms)"
    );
    println!(
        "{:>10} {:>11} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "vocab",
        "optimizer",
        "rows",
        "forward",
        "loss",
        "backward",
        "optimiser",
        "step",
        "vs first"
    );
    let mut first: [Option<f64>; 2] = [None, None];
    pool.install(|| {
        for &vocab in &vocabs {
            let spec = ModelOptions::default().spec(vocab);
            for (k, how) in [Optimizer::AdamW, Optimizer::LazyAdamW]
                .into_iter()
                .enumerate()
            {
                let t = time_steps(&spec, how, steps, threads);
                let base = *first[k].get_or_insert(t.step);
                println!(
                    "{:>10} {:>11} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>8.2}x",
                    vocab,
                    match how {
                        Optimizer::AdamW => "adamw",
                        Optimizer::LazyAdamW => "lazy-adamw",
                    },
                    t.touched,
                    t.phases[0],
                    t.phases[1],
                    t.phases[2],
                    t.phases[3],
                    t.step,
                    t.step / base
                );
            }
        }
    });
}
