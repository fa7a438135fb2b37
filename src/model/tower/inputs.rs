//! What a tower reads of a batch: the rows of the query embedding its
//! windows hold, each gathered once (`InputRows`), and the windows
//! rewritten to those rows (`WindowRows`). Only these rows go through the
//! tower's input: the work follows the batch, not the catalogue.

use crate::kernels;
use crate::model::batch::Batch;
use crate::model::dropout::{dropout_forward, dropout_mask_rows};
use crate::model::embedding::{gather_rows, TouchedRows};
use crate::model::step::{Model, StepOptions};

/// The rows a tower reads: the batch's windows rewritten to the `U`
/// distinct rows they hold (`InputRows`).
#[derive(Clone, Copy)]
pub struct WindowRows<'a> {
    /// `B x L`: each window step's row in `rows` (row 0 is padding).
    pub windows: &'a [u32],
    /// `U x D`: the rows, input dropout applied.
    pub rows: &'a [f32],
    /// `U`.
    pub distinct: usize,
}

/// The rows of the input table a batch's windows read: the `U` distinct
/// ids (slot 0 is always padding, so a window's padding reads as 0 after
/// the rewrite), the windows rewritten to their slots (`B x L`), and the
/// rows themselves (`U x D`, input dropout applied) with the dropout mask.
#[derive(Default)]
pub struct InputRows {
    pub ids: TouchedRows,
    windows: Vec<u32>,
    renumbered_slots: Vec<u32>,
    rows: Vec<f32>,
    pub mask: Vec<f32>,
}

impl InputRows {
    /// Gathers the rows the batch's windows read from the query table
    /// (input dropout applied when `step` asks) and rewrites the windows
    /// to them.
    pub fn gather(&mut self, model: &Model, batch: &Batch, step: &StepOptions) {
        let (v, d) = (model.spec.vocab_size, model.spec.dim);
        self.ids.clear(v);
        self.ids.insert(0);
        self.windows.clear();
        for (i, &id) in batch.contexts.iter().enumerate() {
            if let Some(&ahead) = batch.contexts.get(i + kernels::PREFETCH_AHEAD) {
                self.ids.prefetch(ahead);
            }
            let slot = self.ids.insert(id);
            self.windows.push(slot);
        }
        let u = self.ids.len();
        // Where the batch reads much of the table, rows in id order let the
        // gather and the lazy optimiser stream it (at 62,967 ids the lazy
        // update took 1.7 ms instead of 2.3-2.9; at 10^6 ids, where rows
        // are far apart, it measured the same either way).
        if 8 * u >= v {
            self.ids.sort(&mut self.windows, &mut self.renumbered_slots);
        }
        self.rows.resize(u * d, 0.0);
        gather_rows(
            &model.params.query_embedding,
            d,
            &self.ids.ids,
            &mut self.rows,
        );
        if step.dropout_input > 0.0 {
            dropout_mask_rows(
                &mut self.mask,
                &self.ids.ids,
                d,
                step.dropout_input,
                step.dropout_seed,
            );
            dropout_forward(&mut self.rows, &self.mask);
        }
    }

    /// What the tower reads of the last `gather`.
    pub fn view(&self) -> WindowRows<'_> {
        WindowRows {
            windows: &self.windows,
            rows: &self.rows,
            distinct: self.ids.len(),
        }
    }
}
