//! `cargo bench --bench train_step`: milliseconds per training step at batch
//! 4096 on synthetic ML-1M-shaped data, split by phase, against the floor set
//! by this machine's measured `gemm` throughput.
//!
//! Environment: SEQREC_BENCH_THREADS (default: all cores), SEQREC_BENCH_STEPS
//! (default 30).

mod common;

use std::time::Instant;

use seqrec::data::synth::{generate, SynthConfig};
use seqrec::data::table::{GenericFormat, ReadOptions};
use seqrec::data::{source, Sequences};
use seqrec::kernels::{matmul, Mat, Output};
use seqrec::model::{
    fill_batch, Batch, Grads, Model, ModelOptions, Params, StepOptions, Workspace,
};
use seqrec::train::optimizer::OptimizerState;
use seqrec::train::TrainConfig;

use common::{env, median};

/// Seconds for one product `a · b` into a fresh output, best of several runs.
fn time_gemm(a: Mat, b: Mat, threads: usize) -> f64 {
    let mut c = vec![0.0f32; a.rows() * b.cols()];
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        matmul(&mut c, a, b, Output::Overwrite, threads);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    best
}

fn main() {
    // 0: one thread per core, as `seqrec train --threads 0`.
    let (pool, threads) =
        seqrec::workers::pool("SEQREC_BENCH_THREADS", env("SEQREC_BENCH_THREADS", 0))
            .expect("thread pool");
    let steps = env("SEQREC_BENCH_STEPS", 30);
    let dir = tempfile::tempdir().expect("temp dir");
    generate(&SynthConfig::default(), dir.path(), false).expect("synthetic data");
    let ds = source::read_path(
        dir.path(),
        &GenericFormat::default(),
        &ReadOptions::default(),
    )
    .expect("read");
    let seqs = Sequences::build(&ds.interactions, 3).expect("sequences");
    let (train, _) = seqs.split_last();
    let cfg = TrainConfig::default();
    let model_cfg = ModelOptions::default().spec(ds.catalog.vocab_size());
    let (b, d, l, v) = (
        cfg.batch_size,
        model_cfg.dim,
        model_cfg.context_len,
        model_cfg.vocab_size,
    );

    pool.install(|| {
        let mut params = Params::init(&model_cfg, 1);
        let mut opt =
            OptimizerState::new(cfg.optimizer(), &model_cfg);
        let mut grads = Grads::zeros(&model_cfg);
        let mut ws = Workspace::default();
        let mut batch = Batch::default();
        let mut step_s = Vec::new();
        let mut opt_s = Vec::new();
        // Seconds in forward, loss and backward, summed over the timed steps.
        let mut phases = [0.0f64; 3];
        let chunks: Vec<&[u32]> = train.label_pos.chunks(b).filter(|c| c.len() == b).collect();
        for i in 0..steps + 3 {
            fill_batch(&model_cfg, &seqs, chunks[i % chunks.len()], &mut batch);
            let t0 = Instant::now();
            let model = Model { spec: &model_cfg, params: &params, threads };
            // `loss_and_grads` is these three calls; timed one by one here
            // so the step itself carries no clocks.
            let step = StepOptions::default();
            model.forward(&mut ws, &batch, &step);
            let tf = Instant::now();
            model.loss(&mut ws, &batch, &step);
            let tl = Instant::now();
            model.backward(&mut ws, &mut grads, &step);
            let t1 = Instant::now();
            opt.apply(&mut params, &grads, cfg.learning_rate, model_cfg.dim);
            let t2 = Instant::now();
            if i >= 3 {
                step_s.push((t2 - t0).as_secs_f64());
                opt_s.push((t2 - t1).as_secs_f64());
                for (p, dt) in phases.iter_mut().zip([tf - t0, tl - tf, t1 - tl]) {
                    *p += dt.as_secs_f64();
                }
            }
        }
        let per = |x: f64| 1e3 * x / steps as f64;
        let step_ms = 1e3 * median(step_s);
        println!("train step, batch {b}, dim {d}, context {l}, vocabulary {v}, {threads} thread(s), {steps} steps");
        println!("  step (median)      {step_ms:8.2} ms");
        println!("  GRU forward        {:8.2} ms  (input projection + 10 GRU steps)", per(phases[0]));
        println!("  loss               {:8.2} ms  (fused in-batch softmax, forward + backward)", per(phases[1]));
        println!("  GRU backward       {:8.2} ms  (GRU + projection backward)", per(phases[2]));
        println!("  optimiser          {:8.2} ms  (AdamW, dense over both tables)", 1e3 * median(opt_s));

        // What the fast exp and the CPU-feature dispatch buy, on one logits
        // tile's worth of values per call.
        // Logits minus their row maximum: [-87, 0], where exp is a normal float.
        let xs: Vec<f32> = (0..1 << 20).map(|i| -((i % 8700) as f32) * 0.01).collect();
        let mut buf = xs.clone();
        let time_exp = |f: &mut dyn FnMut(&mut [f32])| {
            let mut best = f64::INFINITY;
            let mut buf = xs.clone();
            for _ in 0..20 {
                buf.copy_from_slice(&xs);
                let t = Instant::now();
                f(&mut buf);
                best = best.min(t.elapsed().as_secs_f64());
            }
            std::hint::black_box(&buf);
            1e9 * best / xs.len() as f64
        };
        let std_ns = time_exp(&mut |b| b.iter_mut().for_each(|x| *x = x.exp()));
        let baseline_ns = time_exp(&mut |b| b.iter_mut().for_each(|x| *x = seqrec::kernels::fast_exp(*x)));
        let dispatched_ns = time_exp(&mut |b| seqrec::kernels::exp_in_place(b));
        buf.copy_from_slice(&xs);
        seqrec::kernels::exp_in_place(&mut buf);
        let max_rel = xs
            .iter()
            .zip(&buf)
            .map(|(&x, &y)| ((y as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        println!("exp over 1M values, one thread:");
        println!("  std f32::exp            {std_ns:6.2} ns/value");
        println!("  polynomial, baseline    {baseline_ns:6.2} ns/value  (x86-64 SSE2 build)");
        println!(
            "  polynomial, dispatched  {dispatched_ns:6.2} ns/value  (AVX2+FMA at run time: {}; max relative error {max_rel:.1e})",
            seqrec::kernels::has_avx2_fma()
        );

        // The floor: the step's matrix products at this machine's measured
        // gemm speed for the same shapes.
        // Operands of those shapes (the values do not matter for timing):
        // queries/candidates and GRU states `b x d`, scores `b x b`, kernels
        // `d x 3d`, the inputs of all steps `b·l x d`, the table `v x d`.
        let (q, c, s) = (vec![0.5f32; b * d], vec![0.25f32; b * d], vec![0.5f32; b * b]);
        let (u, x, emb) = (vec![0.25f32; d * 3 * d], vec![0.5f32; b * l * d], vec![0.5f32; v * d]);
        // Scores q·cᵀ, then dq = ds·c and dc = dsᵀ·q.
        let loss_products = time_gemm(Mat::new(&q, b, d), Mat::new(&c, b, d).t(), threads)
            + time_gemm(Mat::new(&s, b, b), Mat::new(&c, b, d), threads)
            + time_gemm(Mat::new(&s, b, b).t(), Mat::new(&q, b, d), threads);
        let gru_step = time_gemm(Mat::new(&q, b, d), Mat::new(&u, d, 3 * d), threads);
        let gru_products = l as f64 * 3.0 * gru_step;
        let input_products = 3.0 * time_gemm(Mat::new(&x, b * l, d), Mat::new(&u, d, 3 * d), threads);
        let projection = 3.0 * time_gemm(Mat::new(&emb, v, d), Mat::new(&u, d, 3 * d), threads);
        let flops = 2.0 * (b * b * d) as f64;
        println!("gemm on this machine ({threads} thread(s)):");
        println!("  {b}x{b}x{d} logits    {:8.2} ms  ({:.1} GFLOP/s)", 1e3 * loss_products / 3.0, 3.0 * flops / loss_products / 1e9);
        println!(
            "  {b}x{}x{d} GRU step   {:8.3} ms  ({:.1} GFLOP/s)",
            3 * d,
            1e3 * gru_step,
            2.0 * (b * 3 * d * d) as f64 / gru_step / 1e9
        );
        let issue_floor = loss_products + gru_products + input_products;
        let our_floor = loss_products + gru_products + projection;
        println!("floor (products only, at measured gemm speed):");
        println!(
            "  loss 3 products + GRU recurrent 3x{l} + per-token input 3     {:8.2} ms  step / floor = {:.2}",
            1e3 * issue_floor,
            step_ms / (1e3 * issue_floor)
        );
        println!(
            "  same with the input projection per vocabulary row (as here) {:8.2} ms  step / floor = {:.2}",
            1e3 * our_floor,
            step_ms / (1e3 * our_floor)
        );
    });
}
