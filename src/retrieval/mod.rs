//! Brute-force top-K retrieval over the whole candidate table: blocked
//! matrix products, then a per-row selection that never sorts the row.
//!
//! Ties are broken by id: of two candidates with the same score the smaller
//! id ranks first. Ids that are not allowed (padding, ids that are no item)
//! and per-query exclusions are never returned.

pub mod approx;
mod pages;
pub mod recommender;

use rayon::prelude::*;

use crate::kernels::{dispatch, matmul, Mat, Output};

/// Queries scored per block: 128 rows of 3,953 scores is 2 MiB.
const BLOCK_ROWS: usize = 128;
/// At most this many scores per block (64 MiB): at 10^6 items a block is
/// 16 queries, not 128 (512 MiB per thread).
const BLOCK_SCORES: usize = 16 << 20;

/// The candidate side of retrieval.
#[derive(Clone, Copy)]
pub struct Candidates<'a> {
    /// `count x dim` embeddings, row `id` for item `id`.
    pub embeddings: &'a [f32],
    pub dim: usize,
    /// Ids that may be returned; `None` allows every row (the reference's
    /// BruteForceRetrieval, padding included).
    pub allowed: Option<&'a [bool]>,
}

impl Candidates<'_> {
    pub fn count(&self) -> usize {
        self.embeddings.len() / self.dim
    }

    /// Whether `id` may be returned.
    pub fn allows(&self, id: u32) -> bool {
        self.allowed
            .is_none_or(|a| a.get(id as usize).copied().unwrap_or(false))
    }

    /// Ids never to return, to knock out of every row.
    fn disallowed(&self) -> Vec<u32> {
        match self.allowed {
            Some(_) => (0..self.count() as u32)
                .filter(|&i| !self.allows(i))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Scores every query against every candidate, a block of queries at a
/// time, in parallel, and hands each row of scores to `visit(query, row)`.
/// Rows of disallowed ids are already `-inf`.
pub fn for_each_scored_row<F>(queries: &[f32], cands: Candidates, visit: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let d = cands.dim;
    let n = cands.count();
    let disallowed = cands.disallowed();
    // A block's scores, sized to the queries so that one query (the
    // service's common case) does not allocate and zero a whole block.
    let per_block = (BLOCK_SCORES / n.max(1)).clamp(1, BLOCK_ROWS);
    let block_rows = (queries.len() / d.max(1)).clamp(1, per_block);
    queries.par_chunks(per_block * d).enumerate().for_each_init(
        || vec![0.0f32; block_rows * n],
        |scores, (block, q)| {
            let rows = q.len() / d;
            let s = &mut scores[..rows * n];
            // s (rows x n) = q (rows x d) · candidatesᵀ (d x n).
            matmul(
                s,
                Mat::new(q, rows, d),
                Mat::new(cands.embeddings, n, d).t(),
                Output::Overwrite,
                1,
            );
            for (r, row) in s.chunks_exact_mut(n).enumerate() {
                for &id in &disallowed {
                    row[id as usize] = f32::NEG_INFINITY;
                }
                visit(block * per_block + r, row);
            }
        },
    );
}

/// One retrieved item.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scored {
    pub id: u32,
    pub score: f32,
}

/// Columns of the first pass of `select_top_k`.
const STRIPE: usize = 64;
/// Values per group in its second pass.
const GROUP: usize = 16;

dispatch! {
    /// `out[j]` = the largest of `row[j]`, `row[j + STRIPE]`, ...: element-wise
    /// maxima of contiguous slices, so it runs at vector speed.
    fn stripe_maxima(row: &[f32], out: &mut [f32; STRIPE]) {
        out.fill(f32::NEG_INFINITY);
        for slice in row.chunks(STRIPE) {
            for (m, &x) in out.iter_mut().zip(slice) {
                *m = if x > *m { x } else { *m };
            }
        }
    }
}

dispatch! {
    /// Appends to `out` the index of every `GROUP`-wide group of `row` that
    /// holds a value >= `bound`.
    fn groups_reaching(row: &[f32], bound: f32, out: &mut Vec<u32>) {
        out.clear();
        let groups = row.chunks_exact(GROUP);
        let tail = groups.remainder();
        let full = row.len() / GROUP;
        for (g, chunk) in groups.enumerate() {
            // A fixed-size array compiles to one vector compare.
            let chunk: &[f32; GROUP] = chunk.try_into().unwrap_or(&[f32::NEG_INFINITY; GROUP]);
            let mut hit = false;
            for &x in chunk {
                hit |= x >= bound;
            }
            if hit {
                out.push(g as u32);
            }
        }
        if tail.iter().any(|&x| x >= bound) {
            out.push(full as u32);
        }
    }
}

/// The k-th largest value of `xs` (`k <= xs.len()`): an insertion list for
/// small k (a few compares per value), a selection otherwise.
fn kth_largest(xs: &[f32], k: usize) -> f32 {
    if k <= 32 {
        let mut top = [f32::NEG_INFINITY; 32];
        for &x in xs {
            if x > top[k - 1] {
                let mut i = k - 1;
                while i > 0 && top[i - 1] < x {
                    top[i] = top[i - 1];
                    i -= 1;
                }
                top[i] = x;
            }
        }
        top[k - 1]
    } else {
        let mut v = xs.to_vec();
        let (_, kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        *kth
    }
}

/// Reusable buffers of `select_top_k`.
pub struct SelectScratch {
    maxima: [f32; STRIPE],
    groups: Vec<u32>,
}

impl Default for SelectScratch {
    fn default() -> Self {
        SelectScratch {
            maxima: [f32::NEG_INFINITY; STRIPE],
            groups: Vec::new(),
        }
    }
}

/// The `k` best entries of `row` (score descending, id ascending on ties),
/// skipping `-inf` (excluded) entries.
///
/// Two vectorised passes, no sort of the row: the k-th largest of the
/// stripe maxima is a lower bound on the k-th largest score (those maxima
/// are k distinct entries), and only the groups reaching it are looked into.
pub fn select_top_k(row: &[f32], k: usize, out: &mut Vec<Scored>, scratch: &mut SelectScratch) {
    out.clear();
    if k == 0 {
        return;
    }
    stripe_maxima(row, &mut scratch.maxima);
    let columns = row.len().min(STRIPE);
    let mut bound = f32::NEG_INFINITY;
    if columns > k {
        bound = kth_largest(&scratch.maxima[..columns], k);
    }
    groups_reaching(row, bound, &mut scratch.groups);
    for &g in &scratch.groups {
        let start = g as usize * GROUP;
        for (j, &score) in row[start..(start + GROUP).min(row.len())]
            .iter()
            .enumerate()
        {
            if score >= bound && score > f32::NEG_INFINITY {
                out.push(Scored {
                    id: (start + j) as u32,
                    score,
                });
            }
        }
    }
    out.sort_unstable_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.id.cmp(&b.id))
    });
    out.truncate(k);
}

/// The 1-based rank of `label` in `row` under the pessimistic tie rule: the
/// label ranks after every other candidate with a score >= its own. `None`
/// when the label itself is excluded (`-inf`).
pub fn rank_of(row: &[f32], label: u32) -> Option<usize> {
    let s = *row.get(label as usize)?;
    if s == f32::NEG_INFINITY || s.is_nan() {
        return None;
    }
    let at_least = row.iter().filter(|&&x| x >= s).count();
    Some(at_least)
}

/// Top-`k` for every query; `exclude(q)` lists ids to leave out for query `q`.
pub fn top_k<'e, E>(queries: &[f32], cands: Candidates, k: usize, exclude: E) -> Vec<Vec<Scored>>
where
    E: Fn(usize) -> &'e [u32] + Sync,
{
    let n_queries = queries.len() / cands.dim.max(1);
    let results: Vec<std::sync::Mutex<Vec<Scored>>> =
        (0..n_queries).map(|_| Default::default()).collect();
    thread_local! {
        static SCRATCH: std::cell::RefCell<SelectScratch> = Default::default();
    }
    for_each_scored_row(queries, cands, |q, row| {
        for &id in exclude(q) {
            if let Some(x) = row.get_mut(id as usize) {
                *x = f32::NEG_INFINITY;
            }
        }
        let mut out = Vec::with_capacity(4 * k);
        SCRATCH.with(|s| select_top_k(row, k, &mut out, &mut s.borrow_mut()));
        if let Ok(mut slot) = results[q].lock() {
            *slot = out;
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_default())
        .collect()
}
