//! `cargo bench --bench retrieval`: top-10 retrieval throughput for a batch
//! of 4,096 queries against an ML-1M-sized catalogue (3,953 candidates,
//! dimension 32), against the floor set by this machine's measured `gemm`
//! speed for the same scores.
//!
//! Then big catalogues (synthetic clustered tables, item norms varying as
//! popularity does): exact top-10 against the approximate graph
//! (`retrieval::approx`), with the graph's recall@10 against exact, its
//! build time and memory.
//!
//! Environment: SEQREC_BENCH_THREADS (default: all cores),
//! SEQREC_RETRIEVAL_SIZES (default 100000x32,100000x64,1000000x32,1000000x64;
//! empty for none), SEQREC_RETRIEVAL_EF (search lists, default 32,64,128),
//! SEQREC_RETRIEVAL_M and SEQREC_RETRIEVAL_EFC (the graph's links per node
//! and build list; default `ApproxSettings::default()`),
//! SEQREC_RETRIEVAL_PRECISION (the graphs' vector storage, a list of f16
//! and f32; default f16), SEQREC_RETRIEVAL_MEMORY (where the graphs live, a
//! list of heap and huge-pages; default huge-pages; one graph per precision
//! and memory), SEQREC_RETRIEVAL_ROUNDS (timing rounds, default 3).

mod common;

use std::time::Instant;

use common::{env, median};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use seqrec::data::{Catalog, UserHistories};
use seqrec::kernels::{matmul, Mat, Output};
use seqrec::model::{ModelOptions, Params};
use seqrec::retrieval::approx::{
    approx_top_k, ApproxIndex, ApproxSettings, GraphMemory, GraphPrecision,
};
use seqrec::retrieval::recommender::Recommender;
use seqrec::retrieval::{for_each_scored_row, top_k, Candidates, Scored};

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample(StandardNormal)
}

/// `n x d` candidates around `n / 1000` cluster centres, each scaled by a
/// log-normal factor (popular items have larger norms), and `q` queries
/// near random items (what a trained tower's queries look like).
fn clustered(n: usize, d: usize, q: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let clusters = (n / 1000).max(8);
    let centres: Vec<f32> = (0..clusters * d).map(|_| normal(&mut rng)).collect();
    let norm = 1.0 / (d as f32).sqrt();
    let mut table = vec![0.0; n * d];
    for row in table.chunks_exact_mut(d) {
        let c = rng.random_range(0..clusters);
        let scale = (0.3 * normal(&mut rng)).exp() * norm;
        for (j, x) in row.iter_mut().enumerate() {
            *x = scale * (centres[c * d + j] + 0.6 * normal(&mut rng));
        }
    }
    let mut queries = vec![0.0; q * d];
    for row in queries.chunks_exact_mut(d) {
        let a = rng.random_range(0..n);
        for (j, x) in row.iter_mut().enumerate() {
            *x = 3.0 * table[a * d + j] + 0.3 * norm * normal(&mut rng);
        }
    }
    (table, queries)
}

fn recall(found: &[Vec<Scored>], truth: &[Vec<Scored>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|x| t.iter().any(|y| y.id == x.id)).count())
        .sum();
    hits as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

/// Exact against approximate top-10 at one catalogue size: one graph per
/// precision, then rounds that time exact top-K and each graph at each
/// search list back to back, so a slow spell of the machine falls on both
/// sides of a ratio. Each "x exact" is the median of the per-round ratios.
fn big_catalogue(
    n: usize,
    d: usize,
    efs: &[usize],
    graph_kinds: &[(GraphPrecision, GraphMemory)],
    threads: usize,
) {
    let (k, queries) = (10, 2048);
    let rounds = env("SEQREC_RETRIEVAL_ROUNDS", 3).max(1);
    let (table, q) = clustered(n, d, queries, 3);
    let allowed: Vec<bool> = (0..n).map(|i| i > 0).collect();
    let cands = Candidates {
        embeddings: &table,
        dim: d,
        allowed: Some(&allowed),
    };
    let truth = top_k(&q, cands, k, |_| &[]);
    let defaults = ApproxSettings::default();
    let mut graphs = Vec::new();
    for &(precision, memory) in graph_kinds {
        let settings = ApproxSettings {
            connectivity: env("SEQREC_RETRIEVAL_M", defaults.connectivity),
            expansion_add: env("SEQREC_RETRIEVAL_EFC", defaults.expansion_add),
            precision,
            memory,
            ..defaults
        };
        let t = Instant::now();
        let index = ApproxIndex::build(cands, settings).expect("build");
        println!(
            "{n:>9} x {d:<3} graph {} {} (M {}, ef_add {}): build {:6.1} s, {:5.0} MiB (table {:.0} MiB), {threads} thread(s)",
            precision.name(),
            memory.name(),
            settings.connectivity,
            settings.expansion_add,
            t.elapsed().as_secs_f64(),
            index.memory_bytes() as f64 / 1048576.0,
            (table.len() * 4) as f64 / 1048576.0
        );
        graphs.push(index);
    }
    // Per graph and search list: queries/s and ratio to exact, per round.
    let mut qps = vec![vec![Vec::new(); efs.len()]; graphs.len()];
    let mut ratio = qps.clone();
    let mut recalls = vec![vec![0.0; efs.len()]; graphs.len()];
    let mut exact_qps = Vec::new();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        queries as f64 / t.elapsed().as_secs_f64()
    };
    for _ in 0..rounds {
        let exact = time(&mut || {
            std::hint::black_box(top_k(&q, cands, k, |_| &[]));
        });
        exact_qps.push(exact);
        for (g, index) in graphs.iter_mut().enumerate() {
            for (e, &ef) in efs.iter().enumerate() {
                index.set_expansion_search(ef);
                let mut found = Vec::new();
                let r = time(&mut || found = approx_top_k(index, &q, cands, k, |_| &[]));
                recalls[g][e] = recall(&found, &truth);
                qps[g][e].push(r);
                ratio[g][e].push(r / exact);
            }
        }
    }
    println!(
        "{:>15} exact {:8.0} q/s (median of {rounds} rounds)",
        "",
        median(exact_qps)
    );
    for (g, index) in graphs.iter().enumerate() {
        for (e, &ef) in efs.iter().enumerate() {
            println!(
                "{:>15} {} {:>10} ef {ef:>4}: {:>8.0} q/s  {:>6.1}x exact   recall@10 {:.4}",
                "",
                index.settings().precision.name(),
                index.settings().memory.name(),
                median(qps[g][e].clone()),
                median(ratio[g][e].clone()),
                recalls[g][e]
            );
        }
    }
}

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
        let sizes = std::env::var("SEQREC_RETRIEVAL_SIZES")
            .unwrap_or_else(|_| "100000x32,100000x64,1000000x32,1000000x64".into());
        let efs: Vec<usize> = std::env::var("SEQREC_RETRIEVAL_EF")
            .unwrap_or_else(|_| "32,64,128".into())
            .split(',')
            .filter_map(|e| e.trim().parse().ok())
            .collect();
        let sizes: Vec<(usize, usize)> = sizes
            .split(',')
            .filter_map(|s| {
                let (n, d) = s.trim().split_once('x')?;
                Some((n.parse().ok()?, d.parse().ok()?))
            })
            .collect();
        if !sizes.is_empty() {
            println!();
            println!("big catalogues: exact top-10 (batch of 2048) against the approximate graph (one search per query, in parallel)");
        }
        let precisions: Vec<GraphPrecision> = std::env::var("SEQREC_RETRIEVAL_PRECISION")
            .unwrap_or_else(|_| ApproxSettings::default().precision.name().into())
            .split(',')
            .map(|p| p.trim().parse().expect("SEQREC_RETRIEVAL_PRECISION: f16 or f32"))
            .collect();
        let memories: Vec<GraphMemory> = std::env::var("SEQREC_RETRIEVAL_MEMORY")
            .unwrap_or_else(|_| ApproxSettings::default().memory.name().into())
            .split(',')
            .map(|m| m.trim().parse().expect("SEQREC_RETRIEVAL_MEMORY: heap or huge-pages"))
            .collect();
        let graph_kinds: Vec<(GraphPrecision, GraphMemory)> =
            precisions.iter().flat_map(|&p| memories.iter().map(move |&m| (p, m))).collect();
        for (n, d) in sizes {
            big_catalogue(n, d, &efs, &graph_kinds, threads);
        }
    });
}
