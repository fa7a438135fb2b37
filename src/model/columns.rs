//! The loss's columns over a batch (`LossBuffers`): it gathers the
//! columns (the queries' labels, extra negatives, or every item) and their
//! logQ bias into buffers kept across steps, runs the chosen loss over them
//! and leaves the queries' and columns' gradients.

use super::batch::Batch;
use super::dropout::dropout_backward;
use super::embedding::{self, TouchedRows};
use super::loss::{in_batch_softmax, ColumnLayout, LossGrads, LossInputs, LossKind, Softmax};
use super::step::{Model, StepOptions};
use super::tower::Queries;

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
            kind: step.loss.for_columns(ColumnLayout {
                label_columns: self.label_column_count,
                columns: cols,
                items: model.spec.vocab_size - 1,
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
            kind: LossKind::Softmax(Softmax),
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
