//! Softmax cross-entropy over a row of logits: the reference's in-batch
//! softmax (Keras `CategoricalCrossentropy(from_logits)` against the
//! identity, row `i`'s positive is column `i`), or any positive column per
//! row (sequence training, full softmax).

use super::{ColumnLayout, RowColumns, RowLoss};
use crate::kernels::{dispatch, fast_exp};

/// Softmax cross-entropy: `logsumexp(row) − row[positive]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Softmax;

impl RowLoss for Softmax {
    fn for_columns(self, _columns: ColumnLayout) -> Softmax {
        self
    }

    fn row(&self, s: &mut [f32], row: &RowColumns) -> f64 {
        softmax_row(
            s,
            row.positive,
            row.column_ids,
            row.column_bias,
            row.excluded,
            row.scale,
        )
    }
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
