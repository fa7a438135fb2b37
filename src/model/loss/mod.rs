//! The losses over a `rows x cols` score matrix (queries against candidate
//! columns), forward and backward fused, in row tiles so the logits never
//! exist whole: each tile's logits are made, turned into gradients in place
//! by the loss, one row at a time, and consumed by the two backward
//! products while still in cache.
//!
//! A loss is one implementation of `RowLoss` in a file of its own: what it
//! fixes from the step's columns (`for_columns`) and one row of logits to
//! its loss and gradient (`row`). `softmax` (the reference's), `gbce` and
//! `bce` are here. A new loss is a file implementing `RowLoss`, an arm of
//! `LossKind` and of `with_loss!` below, and a value of the `loss` setting
//! (`train::config`) that names it.
//!
//! `model::columns::LossBuffers::loss` runs the chosen loss over a batch.

pub mod bce;
pub mod gbce;
pub mod softmax;

use rayon::prelude::*;

use crate::kernels::{add_assign, matmul, Mat, Output};
pub use bce::Bce;
pub use gbce::{gbce_beta, gbce_prior_offset, Gbce};
pub use softmax::Softmax;

/// Rows per tile. Measured on the train_step benchmark (batch 4096, 2
/// threads): 32 rows 13.95 ms per loss, 64 13.65, 128 12.94, 256 12.24, 512
/// 13.54; 256 rows of 4,096 logits (4 MiB) sit in the shared L3 cache.
pub const TILE_ROWS: usize = 256;

/// What a loss knows of a step's columns.
#[derive(Debug, Clone, Copy)]
pub struct ColumnLayout {
    /// Columns that are the queries' labels, before the extra negatives
    /// (0 with a full softmax, whose columns are every item).
    pub label_columns: usize,
    /// All columns.
    pub columns: usize,
    /// Items in the catalogue (the vocabulary without padding).
    pub items: usize,
}

/// One row's view of the columns, for `RowLoss::row`.
#[derive(Debug, Clone, Copy)]
pub struct RowColumns<'a> {
    /// The row's positive column.
    pub positive: usize,
    /// The item id of every column: a column other than the positive that
    /// holds the row's own label gets no probability (accidental hits).
    pub column_ids: Option<&'a [u32]>,
    /// Added to every logit of a column (logQ correction).
    pub column_bias: Option<&'a [f32]>,
    /// Columns that count for nothing in this row (besides the positive).
    pub excluded: &'a [u32],
    /// With `scale` non-zero the row is left holding `scale` times the
    /// gradient of its loss with respect to its logits.
    pub scale: f32,
}

/// A loss over one row of logits at a time.
pub trait RowLoss: Copy + Send + Sync {
    /// The loss for a step with these columns (what depends on how many
    /// negatives there are, say).
    fn for_columns(self, columns: ColumnLayout) -> Self;

    /// Row `s` of logits in (one per column), its loss out; with
    /// `row.scale` non-zero, `s` is left holding `row.scale · ∂loss/∂s`.
    fn row(&self, s: &mut [f32], row: &RowColumns) -> f64;
}

/// The losses, dispatched once per row with a `match` (no trait objects).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossKind {
    Softmax(Softmax),
    Gbce(Gbce),
    Bce(Bce),
}

impl Default for LossKind {
    fn default() -> LossKind {
        LossKind::Softmax(Softmax)
    }
}

/// Runs `$body` with `$loss` bound to the implementation `$kind` holds.
macro_rules! with_loss {
    ($kind:expr, $loss:ident => $body:expr) => {
        match $kind {
            LossKind::Softmax($loss) => $body,
            LossKind::Gbce($loss) => $body,
            LossKind::Bce($loss) => $body,
        }
    };
}

impl LossKind {
    pub fn for_columns(self, columns: ColumnLayout) -> LossKind {
        match self {
            LossKind::Softmax(l) => LossKind::Softmax(l.for_columns(columns)),
            LossKind::Gbce(l) => LossKind::Gbce(l.for_columns(columns)),
            LossKind::Bce(l) => LossKind::Bce(l.for_columns(columns)),
        }
    }

    fn row(&self, s: &mut [f32], row: &RowColumns) -> f64 {
        with_loss!(self, loss => loss.row(s, row))
    }
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
                loss += inp.kind.row(
                    row,
                    &RowColumns {
                        positive: pos,
                        column_ids: inp.column_ids,
                        column_bias: inp.column_bias,
                        excluded,
                        scale: row_scale,
                    },
                );
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
