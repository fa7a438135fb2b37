//! `cargo bench --bench retrieval`: top-10 retrieval throughput for a batch
//! of 4,096 queries against an ML-1M-sized catalogue (3,953 candidates,
//! dimension 32), against the floor set by this machine's measured `gemm`
//! speed for the same scores.
//!
//! Environment: SEQREC_BENCH_THREADS (default: all cores).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqrec::data::{Catalog, UserHistories};
use seqrec::kernels::{matmul, Mat, Output};
use seqrec::model::{ModelOptions, Params};
use seqrec::retrieval::recommender::Recommender;
use seqrec::retrieval::{for_each_scored_row, top_k, Candidates};

fn main() {
    let threads: usize = std::env::var("SEQREC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let (queries, n, d, k) = (4096, 3953, 32, 10);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let q: Vec<f32> = (0..queries * d)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let c: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let allowed: Vec<bool> = (0..n).map(|i| i > 0 && i % 16 != 5).collect();
    let cands = Candidates {
        embeddings: &c,
        dim: d,
        allowed: Some(&allowed),
    };
    pool.install(|| {
        let mut best = f64::INFINITY;
        let mut checksum = 0u64;
        for _ in 0..10 {
            let t = Instant::now();
            let found = top_k(&q, cands, k, |_| &[]);
            best = best.min(t.elapsed().as_secs_f64());
            checksum += found.iter().map(|f| f[0].id as u64).sum::<u64>();
        }
        let mut blocked = f64::INFINITY;
        for _ in 0..10 {
            let t = Instant::now();
            for_each_scored_row(&q, cands, |_, row| {
                std::hint::black_box(row);
            });
            blocked = blocked.min(t.elapsed().as_secs_f64());
        }
        let mut scores = vec![0.0f32; queries * n];
        let mut floor = f64::INFINITY;
        for _ in 0..10 {
            let t = Instant::now();
            matmul(&mut scores, Mat::new(&q, queries, d), Mat::new(&c, n, d).t(), Output::Overwrite, threads);
            floor = floor.min(t.elapsed().as_secs_f64());
        }
        std::hint::black_box((&scores, checksum));
        let flops = 2.0 * (n * d) as f64;
        println!("top-{k} retrieval, {queries} queries x {n} candidates x dim {d}, {threads} thread(s)");
        println!("  seqrec          {:10.0} queries/s  ({:.2} ms per batch, best of 10)", queries as f64 / best, best * 1e3);
        println!(
            "  gemm floor      {:10.0} queries/s  ({:.2} ms: the scores alone, {:.0} kFLOP per query, {:.0} GFLOP/s)",
            queries as f64 / floor,
            floor * 1e3,
            flops / 1e3,
            flops * queries as f64 / floor / 1e9
        );
        println!("  scores only     {:10.0} queries/s  ({:.2} ms: blocked products, no selection)", queries as f64 / blocked, blocked * 1e3);
        println!("  time / floor    {:10.2}", best / floor);

        // The reference's `model.predict` also runs the query tower: the
        // same here, GRU encoding of 10-item histories plus retrieval.
        let spec = ModelOptions { embedding_dim: d, ..ModelOptions::default() }.spec(n);
        let catalog = Catalog { titles: vec![String::new(); n], is_item: allowed.clone(), keys: None };
        let rec = Recommender::from_parts(spec, Params::init(&spec, 1), catalog, UserHistories::default());
        let histories: Vec<Vec<u32>> = (0..queries).map(|_| (0..10).map(|_| rng.random_range(1..n as u32)).collect()).collect();
        let refs: Vec<&[u32]> = histories.iter().map(|h| h.as_slice()).collect();
        let mut with_encoding = f64::INFINITY;
        for _ in 0..10 {
            let t = Instant::now();
            std::hint::black_box(rec.recommend(&refs, k, false, false));
            with_encoding = with_encoding.min(t.elapsed().as_secs_f64());
        }
        println!(
            "  with the GRU    {:10.0} queries/s  ({:.2} ms: encoding 10-item histories, then top-{k})",
            queries as f64 / with_encoding,
            with_encoding * 1e3
        );
    });
}
