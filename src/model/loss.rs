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

use rayon::prelude::*;

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
