//! `cargo bench --bench scale`: one training step (batch 4096 x 10) at
//! growing catalogues, dense and lazy AdamW side by side, split by phase.
//! The batch, threads and dimension stay the same; only the vocabulary
//! grows, so any growth in a column is per-catalogue work left in the step.
//!
//! Items are drawn from a power law over the catalogue (popular items
//! recur, as in real logs), so a batch touches a realistic share of ids.
//!
//! Environment: SEQREC_BENCH_THREADS (default: all cores), SEQREC_BENCH_STEPS
//! (default 20), SEQREC_SCALE_VOCABS (default 3953,62967,1000000),
//! SEQREC_SCALE_OPTIMIZERS (default adamw,lazy-adamw),
//! SEQREC_SCALE_PROJECTION (auto, distinct or tokens: where the GRU's input
//! projection is done, `InputProjection`; default auto).

mod common;

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqrec::data::Sequences;
use seqrec::model::{
    fill_batch, Batch, Grads, GruTower, InputProjection, Model, ModelOptions, ModelSpec, Params,
    StepOptions, Workspace,
};
use seqrec::train::optimizer::{
    AdamWConfig, AnyOptimizer, OptimizerKind as Optimizer, OptimizerState,
};

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

/// One configuration's model, optimiser and buffers.
struct Setup {
    spec: ModelSpec,
    how: Optimizer,
    seqs: Sequences,
    labels: Vec<u32>,
    params: Params,
    opt: OptimizerState,
    grads: Grads,
    ws: Workspace,
    batch: Batch,
    /// Milliseconds of each phase and of the step, one entry per step.
    phase_ms: [Vec<f64>; 4],
    step_ms: Vec<f64>,
    touched: usize,
}

impl Setup {
    fn new(vocab: usize, how: Optimizer, projection: InputProjection) -> Setup {
        let spec = ModelOptions::default().spec(vocab);
        let (seqs, labels) = sequences(vocab, 4, 7);
        let params = Params::init(&spec, 1);
        let mut opt = OptimizerState::new(AnyOptimizer::new(how, AdamWConfig::default()), &spec);
        // The moments start as untouched zero pages: a long run faults each
        // page in once, but lazy AdamW would pay those faults inside the
        // timed steps here (dense pays them all in the first, untimed one).
        // Touch them first, so both are measured in their steady state.
        for t in opt.buffers_mut() {
            for x in t.iter_mut() {
                *x = std::hint::black_box(0.0);
            }
        }
        let grads = Grads::zeros(&spec);
        let ws = Workspace::with_tower(GruTower::with_projection(projection).into());
        Setup {
            spec,
            how,
            seqs,
            labels,
            params,
            opt,
            grads,
            ws,
            batch: Batch::default(),
            phase_ms: Default::default(),
            step_ms: Vec::new(),
            touched: 0,
        }
    }

    /// Step `i` (batches in turn); recorded when `record`.
    fn step(&mut self, i: usize, threads: usize, record: bool) {
        let chunks = self.labels.len() / BATCH;
        let batch_labels = &self.labels[(i % chunks) * BATCH..(i % chunks + 1) * BATCH];
        fill_batch(&self.spec, &self.seqs, batch_labels, &mut self.batch);
        let model = Model {
            spec: &self.spec,
            params: &self.params,
            threads,
        };
        let (ws, grads, batch) = (&mut self.ws, &mut self.grads, &self.batch);
        let step = StepOptions::default();
        let t0 = Instant::now();
        model.forward(ws, batch, &step);
        let t1 = Instant::now();
        model.loss(ws, batch, &step);
        let t2 = Instant::now();
        model.backward(ws, grads, &step);
        let t3 = Instant::now();
        self.opt
            .apply(&mut self.params, grads, 0.001, self.spec.dim);
        let t4 = Instant::now();
        if record {
            for (p, (a, b)) in
                self.phase_ms
                    .iter_mut()
                    .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                p.push((b - a).as_secs_f64() * 1e3);
            }
            self.step_ms.push((t4 - t0).as_secs_f64() * 1e3);
            self.touched = grads.query_embedding.ids.len();
        }
    }
}

fn main() {
    // 0: one thread per core, as `seqrec train --threads 0`.
    let (pool, threads) =
        seqrec::workers::pool("SEQREC_BENCH_THREADS", env("SEQREC_BENCH_THREADS", 0))
            .expect("thread pool");
    let steps = env("SEQREC_BENCH_STEPS", 20);
    let vocabs: Vec<usize> = std::env::var("SEQREC_SCALE_VOCABS")
        .unwrap_or_else(|_| "3953,62967,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let optimizers: Vec<Optimizer> = std::env::var("SEQREC_SCALE_OPTIMIZERS")
        .unwrap_or_else(|_| "adamw,lazy-adamw".into())
        .split(',')
        .filter_map(|o| match o.trim() {
            "adamw" => Some(Optimizer::AdamW),
            "lazy-adamw" => Some(Optimizer::LazyAdamW),
            _ => None,
        })
        .collect();
    let projection = match std::env::var("SEQREC_SCALE_PROJECTION").as_deref() {
        Ok("distinct") => InputProjection::DistinctRows,
        Ok("tokens") => InputProjection::Tokens,
        _ => InputProjection::Auto,
    };
    println!(
        "train step at growing catalogues: batch {BATCH} x 10, dim 32, {threads} thread(s), {steps} steps (medians, ms), input projection {projection:?}"
    );
    println!("configurations take turns step by step, so a slow spell of the machine");
    println!("falls on all of them; \"vs first\" is the median of per-round ratios");
    println!("to the first vocabulary's step with the same optimiser");
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
    let mut setups: Vec<Setup> = vocabs
        .iter()
        .flat_map(|&v| optimizers.iter().map(move |&how| (v, how)))
        .map(|(v, how)| Setup::new(v, how, projection))
        .collect();
    pool.install(|| {
        for i in 0..steps + 2 {
            for s in &mut setups {
                s.step(i, threads, i >= 2);
            }
        }
    });
    for s in &setups {
        let first = setups.iter().find(|f| f.how == s.how).expect("itself");
        let ratios: Vec<f64> = s
            .step_ms
            .iter()
            .zip(&first.step_ms)
            .map(|(a, b)| a / b)
            .collect();
        println!(
            "{:>10} {:>11} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>8.2}x",
            s.spec.vocab_size,
            match s.how {
                Optimizer::AdamW => "adamw",
                Optimizer::LazyAdamW => "lazy-adamw",
            },
            s.touched,
            median(s.phase_ms[0].clone()),
            median(s.phase_ms[1].clone()),
            median(s.phase_ms[2].clone()),
            median(s.phase_ms[3].clone()),
            median(s.step_ms.clone()),
            median(ratios)
        );
    }
}
