//! The losses over a `rows x cols` score matrix (queries against candidate
//! columns), forward and backward fused, in row tiles so the logits never
//! exist whole: each tile's logits are made, turned into gradients in place,
//! and consumed by the two backward products while still in cache.
//!
//! - Softmax cross-entropy: the reference's in-batch softmax (Keras
//!   `CategoricalCrossentropy(from_logits)` against the identity, row `i`'s
//!   positive is column `i`), or any positive column per row (sequence
//!   training, full softmax).
//! - gBCE (gSASRec, Petrov & Macdonald 2023): binary cross-entropy with the
//!   positive's term raised to the power `beta`, which calibrates a model
//!   trained on sampled negatives: `−β·log σ(s⁺ + o) − Σ⁻ log(1 − σ(s⁻ + o))`.
//!   The fixed logit offset `o = ln(β / negatives)` (`gbce_prior_offset`)
//!   puts the zero scores of a new model at the best score-independent
//!   answer, where the positive's pull and the negatives' push cancel.
//!   Without it a new model starts far from that point (every negative at
//!   σ(0) = 1/2, a loss of about `negatives · ln 2`), and its first hundreds
//!   of steps drive every score down together: on MovieLens-100K, SASRec
//!   then ranked below the most-popular baseline (HR@10 0.071, seed 1)
//!   and reached 0.141 with the offset. A constant added to every logit
//!   changes no ranking, so scores are served without it.
//!
//! `LossBuffers::loss` runs them over a batch: it gathers the loss columns (the
//! queries' labels, extra negatives, or every item) and their logQ bias
//! into the workspace's `LossBuffers`, and leaves the queries' gradient.

use rayon::prelude::*;

use super::batch::Batch;
use super::dropout::dropout_backward;
use super::embedding::{self, TouchedRows};
use super::step::{Model, StepOptions};
use super::tower::Queries;
use crate::kernels::{add_assign, dispatch, fast_exp, matmul, Mat, Output};

/// Rows per tile. Measured on the train_step benchmark (batch 4096, 2
/// threads): 32 rows 13.95 ms per loss, 64 13.65, 128 12.94, 256 12.24, 512
/// 13.54; 256 rows of 4,096 logits (4 MiB) sit in the shared L3 cache.
pub const TILE_ROWS: usize = 256;

/// Which loss a row's scores go through.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossKind {
    #[default]
    Softmax,
    /// gBCE with its positive-term exponent `beta` (1 is plain BCE). A
    /// row's negatives are the columns from `first_negative` on: the label
    /// columns before it are other rows' positives, which would make
    /// popular items negatives in proportion to their popularity (gBCE's
    /// calibration assumes uniformly sampled negatives).
    /// `logit_offset` is added to every logit (`gbce_prior_offset`).
    Gbce {
        beta: f32,
        first_negative: usize,
        logit_offset: f32,
    },
}

/// gBCE's exponent on the positive's term when each row's negatives are
/// `negatives` of the catalogue's `items`: `β = α(t(1 − 1/α) + 1/α)` with
/// the sampling rate `α = negatives / (items − 1)` and the calibration `t`
/// (0: plain BCE, β = 1; 1: β = α).
pub fn gbce_beta(t: f32, negatives: usize, items: usize) -> f32 {
    let alpha = (negatives as f64 / (items.max(2) - 1) as f64).clamp(1e-9, 1.0);
    let t = t as f64;
    (alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)) as f32
}

/// gBCE's logit offset for a row of `negatives` negatives: `ln(β /
/// negatives)`, the score `o` at which one positive and the negatives, all
/// scored `o`, have a loss gradient of zero (`β·(1 − σ(o)) = negatives·σ(o)`
/// gives `σ(o) / (1 − σ(o)) = β / negatives`).
pub fn gbce_prior_offset(beta: f32, negatives: usize) -> f32 {
    (beta as f64 / negatives.max(1) as f64).ln() as f32
}

pub struct LossInputs<'a> {
    /// Query embeddings, `rows x d`.
    pub q: &'a [f32],
    /// Candidate embeddings, `cols x d`; row `i`'s positive is column `i`
    /// unless `positives` says otherwise.
    pub c: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub d: usize,
    /// The item id of every column: when given, a column other than the
    /// positive that holds the row's own label gets no probability
    /// (accidental-hit removal).
    pub column_ids: Option<&'a [u32]>,
    /// Added to every logit of a column (e.g. `-log Q` for logQ correction).
    pub column_bias: Option<&'a [f32]>,
    /// Row `i`'s positive column, when not `i`.
    pub positives: Option<&'a [u32]>,
    /// Columns that get no probability in row `i` (besides its positive):
    /// `columns[offsets[i]..offsets[i + 1]]`, as `(offsets, columns)`.
    pub excluded: Option<(&'a [u32], &'a [u32])>,
    pub kind: LossKind,
}

/// Where the gradients go: `dq` (`rows x d`) and `dc` (`cols x d`) are
/// overwritten with `scale` times the gradient of the summed row losses.
pub struct LossGrads<'a> {
    pub dq: &'a mut [f32],
    pub dc: &'a mut [f32],
    pub scale: f32,
}

const LANES: usize = 8;

#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    m
}

#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

dispatch! {
    /// One row of logits in, its loss out. With `scale` non-zero the row is
    /// left holding `scale · (softmax − onehot(pos))`, the logits' gradient.
    fn softmax_row(
        s: &mut [f32],
        pos: usize,
        column_ids: Option<&[u32]>,
        column_bias: Option<&[f32]>,
        excluded: &[u32],
        scale: f32,
    ) -> f64 {
        if let Some(bias) = column_bias {
            for (x, &b) in s.iter_mut().zip(bias) {
                *x += b;
            }
        }
        let positive = s[pos];
        if let Some(ids) = column_ids {
            let label = ids[pos];
            for (x, &id) in s.iter_mut().zip(ids) {
                *x = if id == label { f32::NEG_INFINITY } else { *x };
            }
        }
        for &j in excluded {
            s[j as usize] = f32::NEG_INFINITY;
        }
        s[pos] = positive;
        let max = lane_max(s);
        for x in s.iter_mut() {
            *x = fast_exp(*x - max);
        }
        // fast_exp clamps, so a masked logit would keep a tiny mass.
        if let Some(ids) = column_ids {
            let label = ids[pos];
            for (x, &id) in s.iter_mut().zip(ids) {
                *x = if id == label { 0.0 } else { *x };
            }
        }
        for &j in excluded {
            s[j as usize] = 0.0;
        }
        s[pos] = fast_exp(positive - max);
        let sum = lane_sum(s);
        if scale != 0.0 {
            let inv = scale / sum;
            for x in s.iter_mut() {
                *x *= inv;
            }
            s[pos] -= scale;
        }
        max as f64 + (sum as f64).ln() - positive as f64
    }
}

dispatch! {
    /// gBCE over one row of logits: every column from `first_negative` on
    /// but the positive (and, with `column_ids`, but those holding the row's
    /// own label) is a negative; the others count for nothing.
    /// With `scale` non-zero the row is left holding the logits' gradient
    /// times `scale`: `−β·σ(−s⁺)` at the positive, `σ(s⁻)` at a negative.
    fn gbce_row(
        s: &mut [f32],
        pos: usize,
        column_ids: Option<&[u32]>,
        column_bias: Option<&[f32]>,
        beta: f32,
        first_negative: usize,
        logit_offset: f32,
        excluded: &[u32],
        scale: f32,
    ) -> f64 {
        if let Some(bias) = column_bias {
            for (x, &b) in s.iter_mut().zip(bias) {
                *x += b;
            }
        }
        // The offset is added where a logit is used: the columns before
        // `first_negative` never are.
        let positive = s[pos] + logit_offset;
        // An excluded column is no negative: marked NaN, skipped below.
        for &j in excluded {
            if j as usize != pos {
                s[j as usize] = f32::NAN;
            }
        }
        let label = column_ids.map(|ids| ids[pos]);
        // softplus(x) = max(x, 0) + ln(1 + e^−|x|), and σ(x) from the same e.
        let mut loss = 0.0f64;
        for (j, x) in s.iter_mut().enumerate() {
            if j == pos
                || j < first_negative
                || x.is_nan()
                || (label.is_some() && column_ids.map(|ids| ids[j]) == label)
            {
                // The positive is handled below; an accidental hit is no
                // negative.
                *x = 0.0;
                continue;
            }
            let z = *x + logit_offset;
            let e = fast_exp(-z.abs());
            loss += (z.max(0.0) + (1.0 + e).ln()) as f64;
            let inv = 1.0 / (1.0 + e);
            *x = scale * if z >= 0.0 { inv } else { e * inv };
        }
        let e = fast_exp(-positive.abs());
        let softplus_pos = positive.max(0.0) + (1.0 + e).ln();
        let inv = 1.0 / (1.0 + e);
        let sig_pos = if positive >= 0.0 { inv } else { e * inv };
        // −β·log σ(s⁺) = β·softplus(−s⁺) = β·(softplus(s⁺) − s⁺).
        loss += beta as f64 * (softplus_pos - positive) as f64;
        s[pos] = -scale * beta * (1.0 - sig_pos);
        loss
    }
}

/// Sum over rows of the row's loss (softmax: `logsumexp(row) − row[pos]`);
/// fills `grads` when given.
pub fn in_batch_softmax(inp: &LossInputs, grads: Option<LossGrads>, threads: usize) -> f64 {
    in_batch_softmax_tiled(inp, grads, threads, TILE_ROWS)
}

/// `in_batch_softmax` with a chosen tile height (tests use small tiles to
/// cover the multi-tile path on small inputs).
pub fn in_batch_softmax_tiled(
    inp: &LossInputs,
    grads: Option<LossGrads>,
    threads: usize,
    tile_rows: usize,
) -> f64 {
    let tile_rows = tile_rows.max(1);
    let (rows, cols, d) = (inp.rows, inp.cols, inp.d);
    assert!(
        inp.positives.is_some() || cols >= rows,
        "in-batch softmax: {cols} candidates for {rows} queries"
    );
    assert!(inp
        .positives
        .is_none_or(|p| p.len() >= rows && p.iter().all(|&j| (j as usize) < cols)));
    assert!(inp.excluded.is_none_or(|(offsets, columns)| {
        offsets.len() > rows
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets[rows] as usize <= columns.len()
            && columns.iter().all(|&j| (j as usize) < cols)
    }));
    assert!(inp.q.len() >= rows * d && inp.c.len() >= cols * d);
    if rows == 0 {
        if let Some(g) = grads {
            g.dc[..cols * d].fill(0.0);
        }
        return 0.0;
    }
    let parts = threads.max(1).min(rows.div_ceil(tile_rows));
    let rows_per_part = rows.div_ceil(parts);
    let run_part = |part: usize, mut dq: Option<&mut [f32]>, scale: f32| {
        let r0 = part * rows_per_part;
        let r1 = (r0 + rows_per_part).min(rows);
        let mut tile = vec![0.0f32; tile_rows.min(rows) * cols];
        let mut dc_local = if dq.is_some() {
            vec![0.0f32; cols * d]
        } else {
            Vec::new()
        };
        let mut loss = 0.0f64;
        let mut t0 = r0;
        while t0 < r1 {
            let t1 = (t0 + tile_rows).min(r1);
            let n = t1 - t0;
            let q_tile = &inp.q[t0 * d..t1 * d];
            let s = &mut tile[..n * cols];
            // Scores s (n x cols) = q_tile (n x d) · cᵀ (d x cols).
            matmul(
                s,
                Mat::new(q_tile, n, d),
                Mat::new(inp.c, cols, d).t(),
                Output::Overwrite,
                1,
            );
            let row_scale = if dq.is_some() { scale } else { 0.0 };
            for (i, row) in s.chunks_exact_mut(cols).enumerate() {
                let pos = inp.positives.map_or(t0 + i, |p| p[t0 + i] as usize);
                let excluded = inp.excluded.map_or(&[][..], |(offsets, cols)| {
                    &cols[offsets[t0 + i] as usize..offsets[t0 + i + 1] as usize]
                });
                loss += match inp.kind {
                    LossKind::Softmax => softmax_row(
                        row,
                        pos,
                        inp.column_ids,
                        inp.column_bias,
                        excluded,
                        row_scale,
                    ),
                    LossKind::Gbce {
                        beta,
                        first_negative,
                        logit_offset,
                    } => gbce_row(
                        row,
                        pos,
                        inp.column_ids,
                        inp.column_bias,
                        beta,
                        first_negative,
                        logit_offset,
                        excluded,
                        row_scale,
                    ),
                };
            }
            if let Some(dq) = dq.as_deref_mut() {
                let dq_tile = &mut dq[(t0 - r0) * d..(t1 - r0) * d];
                // dq (n x d) = ds (n x cols) · c (cols x d).
                matmul(
                    dq_tile,
                    Mat::new(s, n, cols),
                    Mat::new(inp.c, cols, d),
                    Output::Overwrite,
                    1,
                );
                // dc (cols x d) += dsᵀ (cols x n) · q_tile (n x d).
                matmul(
                    &mut dc_local,
                    Mat::new(s, n, cols).t(),
                    Mat::new(q_tile, n, d),
                    Output::Accumulate,
                    1,
                );
            }
            t0 = t1;
        }
        (loss, dc_local)
    };
    match grads {
        None => (0..parts)
            .into_par_iter()
            .map(|p| run_part(p, None, 0.0).0)
            .sum(),
        Some(g) => {
            let scale = g.scale;
            let results: Vec<(f64, Vec<f32>)> = g.dq[..rows * d]
                .par_chunks_mut(rows_per_part * d)
                .enumerate()
                .map(|(p, dq)| run_part(p, Some(dq), scale))
                .collect();
            let dc = &mut g.dc[..cols * d];
            dc.fill(0.0);
            let mut loss = 0.0;
            for (l, part_dc) in &results {
                loss += l;
                add_assign(dc, part_dc);
            }
            loss
        }
    }
}

/// The loss's buffers in a `Workspace`, reused across steps. `N` queries,
/// `C` loss columns (the labels, then the extra negatives), `K` distinct.
#[derive(Default)]
pub struct LossBuffers {
    /// Sequence training: the distinct labels, which are the in-batch
    /// columns.
    label_columns: TouchedRows,
    /// Each query's positive column, when it is not the query's own row;
    /// the number of label columns (before the extra negatives).
    positives: Vec<u32>,
    label_column_count: usize,
    /// With `exclude_history`: each query's excluded columns, CSR.
    excluded_offsets: Vec<u32>,
    excluded_columns: Vec<u32>,
    /// `C` column ids and their logit bias; the `K` distinct ones.
    pub(super) column_ids: Vec<u32>,
    column_bias: Vec<f32>,
    pub(super) columns: TouchedRows,
    /// `N x D`: the queries' gradient.
    pub(super) d_queries: Vec<f32>,
    /// `C x D` candidate vectors and their gradient.
    candidates: Vec<f32>,
    pub(super) d_candidates: Vec<f32>,
}

/// The logQ correction as a per-column logit bias: `-log Q(id)` of the
/// column's sampler (the first `in_batch` columns are the batch's labels,
/// the rest extra negatives); 0 where that sampler has no correction.
pub fn logq_column_bias(
    column_ids: &[u32],
    in_batch: usize,
    in_batch_log_q: Option<&[f32]>,
    negatives_log_q: Option<&[f32]>,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.extend(column_ids.iter().enumerate().map(|(j, &id)| {
        let log_q = if j < in_batch {
            in_batch_log_q
        } else {
            negatives_log_q
        };
        log_q.map_or(0.0, |q| -q[id as usize])
    }));
}

impl LossBuffers {
    /// Gathers the loss columns and their logQ bias; returns whether there
    /// is a bias. The columns are the queries' labels (the batch's, one per
    /// row, as the reference; in sequence training each distinct label
    /// once), then the extra negatives; or with `full_softmax` every item.
    fn gather_columns(
        &mut self,
        model: &Model,
        queries: &Queries,
        batch: &Batch,
        step: &StepOptions,
    ) -> bool {
        let (d, v) = (model.spec.dim, model.spec.vocab_size);
        self.column_ids.clear();
        self.positives.clear();
        let sequence = batch.is_sequence();
        let labels: &[u32] = if sequence {
            &queries.labels
        } else {
            &batch.labels
        };
        let in_batch = if step.full_softmax {
            self.column_ids.extend(1..v as u32);
            self.positives.extend(labels.iter().map(|&id| id - 1));
            0
        } else if sequence {
            self.label_columns.clear(v);
            for &id in labels {
                let slot = self.label_columns.insert(id);
                self.positives.push(slot);
            }
            self.column_ids.extend_from_slice(&self.label_columns.ids);
            self.column_ids.extend_from_slice(step.negatives);
            self.label_columns.len()
        } else {
            self.column_ids.extend_from_slice(labels);
            self.column_ids.extend_from_slice(step.negatives);
            labels.len()
        };
        self.label_column_count = in_batch;
        self.candidates.resize(self.column_ids.len() * d, 0.0);
        embedding::gather_rows(
            candidate_table(model),
            d,
            &self.column_ids,
            &mut self.candidates,
        );
        let with_bias =
            !step.full_softmax && (step.in_batch_log_q.is_some() || step.negatives_log_q.is_some());
        if with_bias {
            logq_column_bias(
                &self.column_ids,
                in_batch,
                step.in_batch_log_q,
                step.negatives_log_q,
                &mut self.column_bias,
            );
        }
        with_bias
    }

    /// The fused loss over `queries`, forward and backward: returns the
    /// mean over queries and leaves its gradient in `d_queries` (`N x D`,
    /// output dropout undone through `output_mask`) and `d_candidates`
    /// (`C x D`).
    pub(super) fn loss(
        &mut self,
        model: &Model,
        queries: &Queries,
        output_mask: &[f32],
        batch: &Batch,
        step: &StepOptions,
    ) -> f64 {
        let d = model.spec.dim;
        let n = queries.vectors.len() / d;
        let with_bias = self.gather_columns(model, queries, batch, step);
        let cols = self.column_ids.len();
        self.d_queries.resize(n * d, 0.0);
        self.d_candidates.resize(cols * d, 0.0);
        // Distinct label columns leave accidental hits only among the extra
        // negatives, and a full softmax none.
        let remove_hits = step.remove_accidental_hits && !step.full_softmax;
        if step.exclude_history {
            self.history_columns(model, queries, batch, step.full_softmax);
        }
        let inputs = LossInputs {
            q: &queries.vectors,
            c: &self.candidates,
            rows: n,
            cols,
            d,
            excluded: step.exclude_history.then_some((
                self.excluded_offsets.as_slice(),
                self.excluded_columns.as_slice(),
            )),
            column_ids: remove_hits.then_some(self.column_ids.as_slice()),
            column_bias: with_bias.then_some(self.column_bias.as_slice()),
            positives: (!self.positives.is_empty()).then_some(self.positives.as_slice()),
            // gBCE's negatives: the extra ones, or with a full softmax every
            // other item.
            kind: step.gbce_t.map_or(LossKind::Softmax, |t| {
                let first_negative = self.label_column_count;
                let negatives = cols - first_negative - usize::from(first_negative == 0);
                let beta = gbce_beta(t, negatives, model.spec.vocab_size - 1);
                LossKind::Gbce {
                    beta,
                    first_negative,
                    logit_offset: gbce_prior_offset(beta, negatives),
                }
            }),
        };
        // The mean over queries, or over the mean number a batch has, so
        // each query weighs the same in batches of unlike sizes.
        let scale = 1.0 / step.mean_queries.unwrap_or(n.max(1) as f32);
        let grads = LossGrads {
            dq: &mut self.d_queries,
            dc: &mut self.d_candidates,
            scale,
        };
        let loss_sum = in_batch_softmax(&inputs, Some(grads), model.threads);
        if step.dropout_output > 0.0 {
            dropout_backward(&mut self.d_queries, output_mask);
        }
        loss_sum * scale as f64
    }

    /// For each query, the columns of the items its window holds up to its
    /// step (padding and items without a column left out), into
    /// `excluded_*`.
    fn history_columns(
        &mut self,
        model: &Model,
        queries: &Queries,
        batch: &Batch,
        full_softmax: bool,
    ) {
        let l = model.spec.context_len;
        let n = queries.vectors.len() / model.spec.dim.max(1);
        self.excluded_offsets.clear();
        self.excluded_columns.clear();
        self.excluded_offsets.push(0);
        assert!(
            full_softmax || batch.is_sequence(),
            "excluding the history needs distinct columns"
        );
        for q in 0..n {
            // The GRU's window queries have no slot: the row's last step.
            let (row, t) = match queries.steps.get(q) {
                Some(&slot) => (slot as usize / l, slot as usize % l),
                None => (q, l - 1),
            };
            for &id in &batch.contexts[row * l..=row * l + t] {
                let column = match id {
                    0 => None,
                    _ if full_softmax => Some(id - 1),
                    _ => self.label_columns.slot(id),
                };
                self.excluded_columns.extend(column);
            }
            self.excluded_offsets
                .push(self.excluded_columns.len() as u32);
        }
    }

    /// The in-batch softmax loss of `queries` (one per row, at its newest
    /// step) summed over the batch's rows, without gradients.
    pub(super) fn loss_sum(&mut self, model: &Model, queries: &Queries, batch: &Batch) -> f64 {
        self.gather_columns(model, queries, batch, &StepOptions::default());
        let inputs = LossInputs {
            q: &queries.vectors,
            c: &self.candidates,
            rows: batch.size,
            cols: batch.size,
            d: model.spec.dim,
            column_ids: None,
            column_bias: None,
            positives: None,
            excluded: None,
            kind: LossKind::Softmax,
        };
        in_batch_softmax(&inputs, None, model.threads)
    }
}

/// The table candidates are scored against.
fn candidate_table<'a>(model: &Model<'a>) -> &'a [f32] {
    if model.spec.shared_embeddings {
        &model.params.query_embedding
    } else {
        &model.params.candidate_embedding
    }
}
