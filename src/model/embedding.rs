//! Embedding tables: row gather and its backward, a scatter-add; the set of
//! rows a batch touches (`TouchedRows`) and a gradient held as those rows
//! only (`SparseRows`), so a step's work follows the batch, not the
//! catalogue; and the GRU's input projection done once per distinct row
//! instead of once per (example, step): `P = E·W + b_in`, then each step
//! gathers `P[row]`. A batch of 4096 x 10 tokens touches at most 40,960
//! rows, however large the catalogue.

use rayon::prelude::*;

use crate::kernels::{self, add_assign, add_column_sums, matmul, prefetch_row_ahead, Mat, Output};

/// The distinct ids a batch touches, in first-seen order, and each one's
/// slot in that order. `slot_of` is as long as the vocabulary but is only
/// ever written at touched ids, and reset there: no per-step pass over it.
#[derive(Debug, Default, Clone)]
pub struct TouchedRows {
    /// Distinct ids; `ids[k]` is slot `k`.
    pub ids: Vec<u32>,
    /// `u32::MAX` where untouched.
    slot_of: Vec<u32>,
}

impl TouchedRows {
    /// Forgets the last batch's ids (resetting only their entries).
    pub fn clear(&mut self, vocab: usize) {
        if self.slot_of.len() != vocab {
            self.slot_of.clear();
            self.slot_of.resize(vocab, u32::MAX);
        } else {
            for &id in &self.ids {
                self.slot_of[id as usize] = u32::MAX;
            }
        }
        self.ids.clear();
    }

    /// Starts loading `id`'s entry: a batch's ids are scattered over a
    /// table as long as the catalogue, so a loop of `insert`s calls this a
    /// few ids ahead.
    pub fn prefetch(&self, id: u32) {
        if let Some(entry) = self.slot_of.get(id as usize..id as usize + 1) {
            kernels::prefetch(entry);
        }
    }

    /// The slot of `id`, adding it when new.
    pub fn insert(&mut self, id: u32) -> u32 {
        let slot = &mut self.slot_of[id as usize];
        if *slot == u32::MAX {
            *slot = self.ids.len() as u32;
            self.ids.push(id);
        }
        *slot
    }

    /// Renumbers the slots in id order, so that later passes over the
    /// rows (gathering them, the lazy optimiser's update) walk the table
    /// forwards, and rewrites `slots` (slot numbers from before) to match.
    /// Slot 0 stays id 0's when id 0 is in.
    pub fn sort(&mut self, slots: &mut [u32], renumber: &mut Vec<u32>) {
        self.ids.sort_unstable();
        renumber.clear();
        renumber.resize(self.ids.len(), 0);
        for (k, &id) in self.ids.iter().enumerate() {
            let slot = &mut self.slot_of[id as usize];
            renumber[*slot as usize] = k as u32;
            *slot = k as u32;
        }
        for s in slots.iter_mut() {
            *s = renumber[*s as usize];
        }
    }

    /// The slot of `id`, if touched.
    pub fn slot(&self, id: u32) -> Option<u32> {
        self.slot_of
            .get(id as usize)
            .copied()
            .filter(|&s| s != u32::MAX)
    }

    /// The backward of a gather over touched rows: `values[slot(ids[i])] +=
    /// src[i]` (rows of `cols`), adding new ids as slots with a zero row.
    /// `values` holds one row per slot; duplicates sum in `ids` order.
    pub fn scatter_add(&mut self, values: &mut Vec<f32>, cols: usize, ids: &[u32], src: &[f32]) {
        for (&id, row) in ids.iter().zip(src.chunks_exact(cols)) {
            let slot = self.insert(id) as usize;
            if slot * cols == values.len() {
                values.resize((slot + 1) * cols, 0.0);
            }
            for (v, &x) in values[slot * cols..(slot + 1) * cols].iter_mut().zip(row) {
                *v += x;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A gradient of a `vocab x cols` table that is zero outside `ids`:
/// `values` holds row `ids[k]`'s gradient at rows `k` (`ids.len() x cols`),
/// each id once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SparseRows {
    pub ids: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseRows {
    /// The dense gradient (tests and the dense optimiser).
    pub fn add_to_dense(&self, dense: &mut [f32], cols: usize) {
        scatter_add_rows(dense, cols, &self.ids, &self.values);
    }
}

/// `out[i] = table[ids[i]]`, rows of `cols`; in parallel over blocks of
/// rows (a batch gathers up to 40,960 scattered rows).
pub fn gather_rows(table: &[f32], cols: usize, ids: &[u32], out: &mut [f32]) {
    const ROWS: usize = 1024;
    if cols == 0 {
        return;
    }
    out.par_chunks_mut(ROWS * cols)
        .zip(ids.par_chunks(ROWS))
        .for_each(|(out, ids)| gather_rows_serial(table, cols, ids, out));
}

/// `gather_rows` on the calling thread.
pub fn gather_rows_serial(table: &[f32], cols: usize, ids: &[u32], out: &mut [f32]) {
    if cols == 0 {
        return;
    }
    for (i, (row, &id)) in out.chunks_exact_mut(cols).zip(ids).enumerate() {
        prefetch_row_ahead(table, cols, ids, i);
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
    p.par_chunks_mut(1024 * cols).for_each(|rows| {
        for row in rows.chunks_exact_mut(cols) {
            add_assign(row, b_in);
        }
    });
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
    // dw (d x cols) += embᵀ (d x vocab) · dp (vocab x cols), and db_in:
    // sums over rows, which one product cannot split between threads, so
    // each block of rows gives its partial sums and they are added in
    // block order (the same bytes whatever the thread count).
    const ROWS: usize = 1024;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = emb
        .par_chunks(ROWS * d)
        .zip(dp.par_chunks(ROWS * cols))
        .map(|(emb, dp)| {
            let rows = emb.len() / d;
            let mut dw = vec![0.0; d * cols];
            matmul(
                &mut dw,
                Mat::new(emb, rows, d).t(),
                Mat::new(dp, rows, cols),
                Output::Overwrite,
                1,
            );
            let mut db = vec![0.0; cols];
            add_column_sums(&mut db, dp, cols);
            (dw, db)
        })
        .collect();
    for (w_part, b_part) in &partials {
        add_assign(dw, w_part);
        add_assign(db_in, b_part);
    }
    // demb (vocab x d) += dp (vocab x cols) · wᵀ (cols x d).
    matmul(
        demb,
        Mat::new(dp, vocab, cols),
        Mat::new(w, d, cols).t(),
        Output::Accumulate,
        threads,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_touched_rows_keeps_every_slot_on_its_id() {
        let mut rows = TouchedRows::default();
        rows.clear(50);
        let ids = [0, 42, 7, 42, 19, 3, 7, 0, 31];
        let mut slots: Vec<u32> = ids.iter().map(|&id| rows.insert(id)).collect();
        assert_eq!(rows.ids, [0, 42, 7, 19, 3, 31]);
        rows.sort(&mut slots, &mut Vec::new());
        assert_eq!(rows.ids, [0, 3, 7, 19, 31, 42]);
        for (&id, &slot) in ids.iter().zip(&slots) {
            assert_eq!(rows.ids[slot as usize], id);
            assert_eq!(rows.slot(id), Some(slot));
        }
        // Forgetting them resets every entry, as after inserts alone.
        rows.clear(50);
        assert!(ids.iter().all(|&id| rows.slot(id).is_none()));
        assert_eq!(rows.insert(42), 0);
    }
}
