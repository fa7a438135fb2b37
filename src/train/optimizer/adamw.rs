//! Keras 3 `AdamW`, fused into one pass over each tensor: decoupled weight
//! decay (`p -= lr·wd·p`), then the Adam moments and the bias-corrected step.
//! Its state per tensor is the two moments, `adam_m` and `adam_v`.
//!
//! Two ways to treat the embedding tables, whose gradient is the rows a
//! step touched (`SparseRows`), each an `Optimizer`:
//! - dense (`AdamW`, the reference): every row is updated every
//!   step, an untouched row with a zero gradient (its moments decay, its
//!   weights decay and keep moving by their momentum) — exactly Keras;
//! - lazy (`LazyAdamW`, the "LazyAdam" of large embedding
//!   tables): only touched rows change. For a touched row `r` at step `t`,
//!   with `α_t = lr_t·√(1−β₂ᵗ)/(1−β₁ᵗ)`:
//!   `p_r ← p_r − lr_t·wd·p_r`, `m_r ← m_r + (g_r − m_r)(1−β₁)`,
//!   `v_r ← v_r + (g_r² − v_r)(1−β₂)`, `p_r ← p_r − α_t·m_r/(√v_r + ε)`;
//!   an untouched row keeps `p`, `m` and `v`. The GRU's tensors are dense
//!   and always updated as Keras does. The step count `t` is global, so a
//!   row seen rarely gets the bias correction of the whole run.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Optimizer;
#[cfg(test)]
use super::OptimizerKind;
use crate::kernels::{self, dispatch};
use crate::model::SparseRows;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub learning_rate: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl AdamWConfig {
    /// `keras.optimizers.AdamW(learning_rate=0.005)` with Keras' defaults.
    pub const REFERENCE: AdamWConfig = AdamWConfig {
        learning_rate: 0.005,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
        weight_decay: 0.004,
    };
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig::REFERENCE
    }
}

/// AdamW over the tensors; `LAZY` says how a table steps: every row,
/// every step (`AdamW`, Keras') or only the rows a step touched
/// (`LazyAdamW`). One implementation, two optimisers.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWOver<const LAZY: bool> {
    pub cfg: AdamWConfig,
    update: Update,
}

/// Keras AdamW: every row of every table, every step.
pub type AdamW = AdamWOver<false>;

/// AdamW on the rows a step touched only (dense tensors as `AdamW`).
pub type LazyAdamW = AdamWOver<true>;

/// The state AdamW keeps per tensor: its two moments.
const MOMENTS: &[&str] = &["adam_m", "adam_v"];

dispatch! {
    fn update_tensor(
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        decay: f32,
        alpha: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    ) {
        for i in 0..param.len().min(grad.len()).min(m.len()).min(v.len()) {
            let g = grad[i];
            let p = param[i] - param[i] * decay;
            let mi = m[i] + (g - m[i]) * (1.0 - beta_1);
            let vi = v[i] + (g * g - v[i]) * (1.0 - beta_2);
            m[i] = mi;
            v[i] = vi;
            param[i] = p - alpha * mi / (vi.sqrt() + epsilon);
        }
    }
}

impl<const LAZY: bool> AdamWOver<LAZY> {
    pub fn new(cfg: AdamWConfig) -> AdamWOver<LAZY> {
        AdamWOver {
            cfg,
            update: Update::at(cfg, 0.0, 1),
        }
    }
}

impl<const LAZY: bool> Optimizer for AdamWOver<LAZY> {
    fn state_names(&self) -> &'static [&'static str] {
        MOMENTS
    }

    fn begin_step(&mut self, lr: f32, step: u64) {
        self.update = Update::at(self.cfg, lr, step);
    }

    fn dense_step(&self, p: &mut [f32], g: &[f32], state: &mut [Vec<f32>]) {
        if let [m, v] = state {
            self.update.dense(p, g, m, v);
        }
    }

    fn table_step(&self, p: &mut [f32], rows: &SparseRows, state: &mut [Vec<f32>], dim: usize) {
        if let [m, v] = state {
            self.update.table(p, rows, m, v, dim, LAZY);
        }
    }

    fn changes_only_touched_rows(&self) -> bool {
        LAZY
    }
}

/// One step's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Update {
    decay: f32,
    alpha: f32,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
}

/// Elements per parallel task: large tensors are split so every core
/// shares them.
const CHUNK: usize = 1 << 15;

impl Update {
    /// Step `step` (1-based) at learning rate `lr`: the bias correction
    /// folded into one factor, `α_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`.
    fn at(c: AdamWConfig, lr: f32, step: u64) -> Update {
        let t = step as f64;
        let alpha = (lr as f64 * (1.0 - (c.beta_2 as f64).powf(t)).sqrt()
            / (1.0 - (c.beta_1 as f64).powf(t))) as f32;
        Update {
            decay: lr * c.weight_decay,
            alpha,
            beta_1: c.beta_1,
            beta_2: c.beta_2,
            epsilon: c.epsilon,
        }
    }

    fn run(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        update_tensor(
            p,
            g,
            m,
            v,
            self.decay,
            self.alpha,
            self.beta_1,
            self.beta_2,
            self.epsilon,
        );
    }

    /// Untouched rows under dense AdamW: a zero gradient, in pieces of a
    /// static zero buffer (no allocation per step).
    fn untouched(&self, p: &mut [f32], m: &mut [f32], v: &mut [f32], span: std::ops::Range<usize>) {
        static ZEROS: [f32; 4096] = [0.0; 4096];
        let mut start = span.start;
        while start < span.end {
            let end = span.end.min(start + ZEROS.len());
            let piece = start..end;
            self.run(
                &mut p[piece.clone()],
                &ZEROS[..end - start],
                &mut m[piece.clone()],
                &mut v[piece],
            );
            start = end;
        }
    }

    fn dense(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| self.run(p, g, m, v));
    }

    /// A `vocab x dim` table whose gradient is `grad`'s rows: every row
    /// (untouched ones with a zero gradient), or with `lazy` only the
    /// touched rows.
    fn table(
        &self,
        p: &mut [f32],
        grad: &SparseRows,
        m: &mut [f32],
        v: &mut [f32],
        dim: usize,
        lazy: bool,
    ) {
        if dim == 0 || (lazy && grad.ids.is_empty()) {
            return;
        }
        if lazy {
            return self.touched_rows(p, grad, m, v, dim);
        }
        // (id, slot in `grad.values`) by id. Packed in one u64 so the sort
        // compares integers; ids that arrive sorted skip it.
        let mut order: Vec<u64> = grad
            .ids
            .iter()
            .enumerate()
            .map(|(k, &id)| (id as u64) << 32 | k as u64)
            .collect();
        if !order.is_sorted() {
            order.sort_unstable();
        }
        self.every_row(p, grad, m, v, dim, &order);
    }

    /// Dense: in parallel over blocks of rows; each block finds its touched
    /// rows in `order` and runs of untouched rows go in one call with a
    /// zero gradient.
    fn every_row(
        &self,
        p: &mut [f32],
        grad: &SparseRows,
        m: &mut [f32],
        v: &mut [f32],
        dim: usize,
        order: &[u64],
    ) {
        let rows_per_block = (CHUNK / dim).max(1);
        p.par_chunks_mut(rows_per_block * dim)
            .zip(m.par_chunks_mut(rows_per_block * dim))
            .zip(v.par_chunks_mut(rows_per_block * dim))
            .enumerate()
            .for_each(|(block, ((p, m), v))| {
                let first = (block * rows_per_block) as u64;
                let rows = p.len() / dim;
                let start = order.partition_point(|&e| e >> 32 < first);
                let end = order.partition_point(|&e| e >> 32 < first + rows as u64);
                let mut next = 0usize;
                for &e in &order[start..end] {
                    let (r, k) = ((e >> 32) as usize - first as usize, e as u32 as usize);
                    if r > next {
                        self.untouched(p, m, v, next * dim..r * dim);
                    }
                    let span = r * dim..(r + 1) * dim;
                    let g = &grad.values[k * dim..(k + 1) * dim];
                    self.run(&mut p[span.clone()], g, &mut m[span.clone()], &mut v[span]);
                    next = r + 1;
                }
                if rows > next {
                    self.untouched(p, m, v, next * dim..rows * dim);
                }
            });
    }

    /// Lazy: the touched rows only, in parallel over spans of the table.
    /// One counting pass puts each row in the span of ids it falls in (no
    /// sort), so the spans are split off disjointly and the work follows
    /// the rows touched, not the table size.
    fn touched_rows(
        &self,
        p: &mut [f32],
        grad: &SparseRows,
        m: &mut [f32],
        v: &mut [f32],
        dim: usize,
    ) {
        const SPANS: usize = 256;
        let vocab = p.len() / dim;
        // Ids per span: a power of two, so a row's span is `id >> shift`.
        let shift = (vocab.div_ceil(SPANS).next_power_of_two()).trailing_zeros();
        let span_rows = 1usize << shift;
        let mut start = [0u32; SPANS + 1];
        for &id in &grad.ids {
            start[(id >> shift) as usize + 1] += 1;
        }
        for s in 0..SPANS {
            start[s + 1] += start[s];
        }
        // Slots in `grad.values`, grouped by span (in slot order within one).
        let mut slots = vec![0u32; grad.ids.len()];
        let mut next = start;
        for (k, &id) in grad.ids.iter().enumerate() {
            let at = &mut next[(id >> shift) as usize];
            slots[*at as usize] = k as u32;
            *at += 1;
        }
        let mut spans = Vec::with_capacity(SPANS);
        let (mut p, mut m, mut v) = (p, m, v);
        for s in 0..SPANS {
            let len = (span_rows * dim).min(p.len());
            let (p_span, p_rest) = std::mem::take(&mut p).split_at_mut(len);
            let (m_span, m_rest) = std::mem::take(&mut m).split_at_mut(len);
            let (v_span, v_rest) = std::mem::take(&mut v).split_at_mut(len);
            (p, m, v) = (p_rest, m_rest, v_rest);
            let mine = &slots[start[s] as usize..start[s + 1] as usize];
            if !mine.is_empty() {
                spans.push((s * span_rows, mine, p_span, m_span, v_span));
            }
        }
        spans.into_par_iter().for_each(|(first, mine, p, m, v)| {
            let row = |k: u32| {
                let r = grad.ids[k as usize] as usize - first;
                r * dim..(r + 1) * dim
            };
            for (i, &k) in mine.iter().enumerate() {
                // The rows are scattered over a table larger than the cache:
                // start loading a later row's state while this one runs.
                if let Some(&ahead) = mine.get(i + kernels::PREFETCH_AHEAD) {
                    kernels::prefetch(&p[row(ahead)]);
                    kernels::prefetch(&m[row(ahead)]);
                    kernels::prefetch(&v[row(ahead)]);
                }
                let g = &grad.values[k as usize * dim..(k as usize + 1) * dim];
                self.run(&mut p[row(k)], g, &mut m[row(k)], &mut v[row(k)]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AnyOptimizer, OptimizerState};
    use super::*;
    use crate::model::{Grads, Params};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Both optimisers against a straightforward f64 implementation of
    /// the formulas in the module header, over steps that touch different
    /// rows (some rows never, some every step).
    #[test]
    fn dense_and_lazy_adamw_match_a_plain_implementation() {
        // 7 ids: one per span of the lazy update; 1500: several per span.
        for vocab in [7, 1500] {
            dense_and_lazy_adamw_match_a_plain_implementation_at(vocab);
        }
    }

    fn dense_and_lazy_adamw_match_a_plain_implementation_at(vocab: usize) {
        let spec = crate::model::ModelOptions {
            embedding_dim: 3,
            context_len: 1,
            ..Default::default()
        }
        .spec(vocab);
        let d = spec.dim;
        let last = vocab as u32 - 1;
        let c = AdamWConfig::default();
        for how in [OptimizerKind::AdamW, OptimizerKind::LazyAdamW] {
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let mut params = Params::init(&spec, 1);
            let mut opt = OptimizerState::new(AnyOptimizer::new(how, c), &spec);
            let tensors: Vec<Vec<f64>> = params
                .tensors()
                .map(|t| t.iter().map(|&x| x as f64).collect())
                .collect();
            let last_tensor = tensors.len() - 1;
            let mut want = tensors.clone();
            let mut m: Vec<Vec<f64>> = tensors.iter().map(|t| vec![0.0f64; t.len()]).collect();
            let mut s = m.clone();
            for step in 1..=4 {
                // Row 0 every step, the last row never, the others at
                // random; ids out of order.
                let mut ids: Vec<u32> = vec![0];
                ids.extend((1..last).filter(|_| rng.random_bool(0.5)));
                ids.reverse();
                let mut rows = |ids: &[u32]| SparseRows {
                    ids: ids.to_vec(),
                    values: (0..ids.len() * d)
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect(),
                };
                let mut grads = Grads::zeros(&spec);
                grads.query_embedding = rows(&ids);
                grads.candidate_embedding = rows(&ids[..ids.len() / 2 + 1]);
                for t in &mut grads.tower {
                    for g in t.iter_mut() {
                        *g = rng.random_range(-1.0..1.0);
                    }
                }
                let lr = 0.01 * step as f32;
                opt.apply(&mut params, &grads, lr, d);

                let dense = grads.to_dense(&spec);
                let (lr, b1, b2, eps, wd) = (
                    lr as f64,
                    c.beta_1 as f64,
                    c.beta_2 as f64,
                    c.epsilon as f64,
                    c.weight_decay as f64,
                );
                let alpha = lr * (1.0 - b2.powi(step)).sqrt() / (1.0 - b1.powi(step));
                for (i, g) in dense.tensors().enumerate() {
                    let table = i == 0 || i == last_tensor;
                    let mut is_touched = vec![false; vocab];
                    let rows = if i == 0 {
                        &grads.query_embedding
                    } else {
                        &grads.candidate_embedding
                    };
                    for &id in &rows.ids {
                        is_touched[id as usize] = true;
                    }
                    let touched = |j: usize| is_touched[j / d];
                    for j in 0..g.len() {
                        if how == OptimizerKind::LazyAdamW && table && !touched(j) {
                            continue;
                        }
                        let g = g[j] as f64;
                        want[i][j] -= lr * wd * want[i][j];
                        m[i][j] = b1 * m[i][j] + (1.0 - b1) * g;
                        s[i][j] = b2 * s[i][j] + (1.0 - b2) * g * g;
                        want[i][j] -= alpha * m[i][j] / (s[i][j].sqrt() + eps);
                    }
                }
            }
            for (i, (got, want)) in params.tensors().zip(&want).enumerate() {
                for (a, w) in got.iter().zip(want) {
                    assert!(
                        (*a as f64 - w).abs() < 1e-6,
                        "{how:?} tensor {i}: {a} vs {w}"
                    );
                }
            }
            if how == OptimizerKind::LazyAdamW {
                // The last row was never touched: exactly as initialised.
                let init = Params::init(&spec, 1);
                let never = last as usize * d..;
                assert_eq!(
                    params.query_embedding[never.clone()],
                    init.query_embedding[never.clone()]
                );
                let m = opt.buffer("query_embedding", 0).unwrap();
                assert!(m[never].iter().all(|&x| x == 0.0));
            }
        }
    }
}
