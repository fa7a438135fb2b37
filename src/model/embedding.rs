//! Embedding tables: row gather and its backward, a scatter-add; and the
//! GRU's input projection done once per vocabulary row instead of once per
//! (example, step): `P = E·W + b_in`, then each step gathers `P[id]`. For a
//! catalogue smaller than a batch's `batch x steps` tokens (ML-1M: 3,953 rows
//! against 40,960 tokens) this is ten times fewer flops, and it is exact.

use crate::kernels::{add_column_sums, matmul, Mat, Output};

/// `out[i] = table[ids[i]]`, rows of `cols`.
pub fn gather_rows(table: &[f32], cols: usize, ids: &[u32], out: &mut [f32]) {
    for (row, &id) in out.chunks_exact_mut(cols).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * cols..(id + 1) * cols]);
    }
}

/// The backward of `gather_rows`: `grad[ids[i]] += src[i]`.
pub fn scatter_add_rows(grad: &mut [f32], cols: usize, ids: &[u32], src: &[f32]) {
    for (row, &id) in src.chunks_exact(cols).zip(ids) {
        let id = id as usize;
        for (g, &s) in grad[id * cols..(id + 1) * cols].iter_mut().zip(row) {
            *g += s;
        }
    }
}

/// `p (vocab x 3d) = emb (vocab x d) · w (d x 3d) + b_in`.
pub fn project_table(
    emb: &[f32],
    w: &[f32],
    b_in: &[f32],
    d: usize,
    p: &mut [f32],
    threads: usize,
) {
    let vocab = emb.len() / d;
    let cols = w.len() / d;
    matmul(
        p,
        Mat::new(emb, vocab, d),
        Mat::new(w, d, cols),
        Output::Overwrite,
        threads,
    );
    for row in p.chunks_exact_mut(cols) {
        for (x, &b) in row.iter_mut().zip(b_in) {
            *x += b;
        }
    }
}

/// The backward of `project_table`: adds `embᵀ·dp` to `dw`, `dp·wᵀ` to
/// `demb` and the column sums of `dp` to `db_in`.
#[allow(clippy::too_many_arguments)]
pub fn project_table_backward(
    emb: &[f32],
    w: &[f32],
    dp: &[f32],
    d: usize,
    demb: &mut [f32],
    dw: &mut [f32],
    db_in: &mut [f32],
    threads: usize,
) {
    let vocab = emb.len() / d;
    let cols = w.len() / d;
    add_column_sums(db_in, dp, cols);
    // dw (d x cols) += embᵀ (d x vocab) · dp (vocab x cols).
    matmul(
        dw,
        Mat::new(emb, vocab, d).t(),
        Mat::new(dp, vocab, cols),
        Output::Accumulate,
        threads,
    );
    // demb (vocab x d) += dp (vocab x cols) · wᵀ (cols x d).
    matmul(
        demb,
        Mat::new(dp, vocab, cols),
        Mat::new(w, d, cols).t(),
        Output::Accumulate,
        threads,
    );
}
