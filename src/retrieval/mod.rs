//! Brute-force top-K retrieval over the whole candidate table: blocked
//! matrix products, then a per-row selection that never sorts the row.
//!
//! Ties are broken by id: of two candidates with the same score the smaller
//! id ranks first. Ids that are not allowed (padding, ids that are no item)
//! and per-query exclusions are never returned.

pub mod recommender;

use rayon::prelude::*;

use crate::model::kernels::{dispatch, matmul, Layout};

/// Queries scored per block: 128 rows of 3,953 scores is 2 MiB.
const BLOCK_ROWS: usize = 128;

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

    /// Ids never to return, to knock out of every row.
    fn disallowed(&self) -> Vec<u32> {
        match self.allowed {
            Some(a) => (0..self.count())
                .filter(|&i| !a.get(i).copied().unwrap_or(false))
                .map(|i| i as u32)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Scores every query against every candidate, `BLOCK_ROWS` queries at a
/// time, in parallel, and hands each row of scores to `visit(query, row)`.
/// Rows of disallowed ids are already `-inf`.
pub fn for_each_scored_row<F>(queries: &[f32], cands: Candidates, visit: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let d = cands.dim;
    let n = cands.count();
    let disallowed = cands.disallowed();
    queries
        .par_chunks(BLOCK_ROWS * d)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; BLOCK_ROWS * n],
            |scores, (block, q)| {
                let rows = q.len() / d;
                let s = &mut scores[..rows * n];
                matmul(
                    s,
                    q,
                    Layout::Normal,
                    cands.embeddings,
                    Layout::Transposed,
                    rows,
                    n,
                    d,
                    false,
                    1,
                );
                for (r, row) in s.chunks_exact_mut(n).enumerate() {
                    for &id in &disallowed {
                        row[id as usize] = f32::NEG_INFINITY;
                    }
                    visit(block * BLOCK_ROWS + r, row);
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

dispatch! {
    /// Whether any value of `xs` exceeds `threshold` (vectorised, so most
    /// chunks of a row are rejected in a few instructions).
    fn any_above(xs: &[f32], threshold: f32) -> bool {
        let mut hit = false;
        for &x in xs {
            hit |= x > threshold;
        }
        hit
    }
}

/// The `k` best entries of `row` (score descending, id ascending on ties),
/// skipping `-inf` (excluded) entries.
pub fn select_top_k(row: &[f32], k: usize, out: &mut Vec<Scored>) {
    out.clear();
    if k == 0 {
        return;
    }
    const CHUNK: usize = 64;
    let mut threshold = f32::NEG_INFINITY;
    for (c, chunk) in row.chunks(CHUNK).enumerate() {
        if !any_above(chunk, threshold) {
            continue;
        }
        for (j, &s) in chunk.iter().enumerate() {
            if s <= threshold {
                continue;
            }
            let id = (c * CHUNK + j) as u32;
            // Insert after every entry scoring >= s: equal scores keep the
            // smaller id (seen first) ahead.
            let pos = out.partition_point(|e| e.score >= s);
            if pos < k {
                if out.len() == k {
                    out.pop();
                }
                out.insert(pos, Scored { id, score: s });
                if out.len() == k {
                    threshold = out[k - 1].score;
                }
            }
        }
    }
}

/// The 1-based rank of `label` in `row` under the pessimistic tie rule: the
/// label ranks after every other candidate with a score >= its own. `None`
/// when the label itself is excluded (`-inf`).
pub fn rank_of(row: &[f32], label: u32) -> Option<usize> {
    let s = *row.get(label as usize)?;
    if s == f32::NEG_INFINITY {
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
    for_each_scored_row(queries, cands, |q, row| {
        for &id in exclude(q) {
            if let Some(x) = row.get_mut(id as usize) {
                *x = f32::NEG_INFINITY;
            }
        }
        let mut out = Vec::with_capacity(k + 1);
        select_top_k(row, k, &mut out);
        if let Ok(mut slot) = results[q].lock() {
            *slot = out;
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_default())
        .collect()
}
