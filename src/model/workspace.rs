//! One training step's maths over a batch, llm.c-style: `Model::forward`
//! (the input rows, then the query tower), `Model::loss` (`super::loss`,
//! fused forward and backward), `Model::backward` (the tower, then the
//! embedding tables), each over plain `f32` buffers held in a `Workspace`:
//! the input rows' and the loss's here, the tower's in the tower.

use super::batch::Batch;
use super::columns::LossBuffers;
use super::dropout::{dropout_backward, dropout_forward, dropout_mask};
use super::encoder::QueryEncoder;
use super::params::Grads;
use super::spec::ModelSpec;
use super::step::{Model, StepOptions};
use super::tower::{AnyTower, InputRows, Queries};

/// Buffers of one batch's forward and backward pass, reused across steps:
/// the embedding's and the loss's here, the tower's in `tower`.
#[derive(Default)]
pub struct Workspace {
    /// The distinct rows the batch's windows read, and the windows
    /// rewritten to them.
    pub(super) inputs: InputRows,
    /// The tower's output, the loss's input (output dropout applied).
    pub queries: Queries,
    /// `N x D` output-dropout mask.
    pub(super) output_mask: Vec<f32>,
    pub(super) loss: LossBuffers,
    /// The tower of the last pass and its own buffers.
    pub tower: AnyTower,
}

impl Workspace {
    /// A workspace whose tower starts as `tower` (where a bench or a test
    /// picks how the GRU projects its input); a spec of another tower
    /// replaces it.
    pub fn with_tower(tower: AnyTower) -> Workspace {
        Workspace {
            tower,
            ..Workspace::default()
        }
    }

    /// The number of queries (losses) of the last forward.
    pub fn queries_taken(&self, spec: &ModelSpec) -> usize {
        self.queries.vectors.len() / spec.dim.max(1)
    }
}

impl Model<'_> {
    /// The query tower: gathers the `U` distinct rows the batch's windows
    /// read (input dropout applied to them when `step` asks), runs the
    /// tower over windows rewritten to those rows, and leaves `N x D`
    /// queries in `ws.queries`, output dropout applied.
    pub fn forward(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) {
        ws.inputs.gather(self, batch, step);
        ws.tower.for_spec(&self.spec.tower).forward(
            self,
            batch,
            ws.inputs.view(),
            step,
            &mut ws.queries,
        );
        if step.dropout_output > 0.0 {
            dropout_mask(
                &mut ws.output_mask,
                ws.queries.vectors.len(),
                step.dropout_output,
                step.dropout_seed ^ 0x5EED_0F0D_D0D0_5EED,
            );
            dropout_forward(&mut ws.queries.vectors, &ws.output_mask);
        }
    }

    /// The query tower alone, without dropout: writes each row's query at
    /// its newest step (`B x D`; a sequence batch's at every labelled step)
    /// into `out`.
    pub fn encode(&self, ws: &mut Workspace, batch: &Batch, out: &mut Vec<f32>) {
        ws.tower.for_spec(&self.spec.tower).infer(
            self,
            &[],
            batch,
            &mut ws.inputs,
            &mut ws.queries,
        );
        out.clone_from(&ws.queries.vectors);
    }

    /// The fused loss over `ws.queries`, forward and backward: returns the
    /// mean over queries and leaves its gradient in the workspace, output
    /// dropout undone.
    pub fn loss(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) -> f64 {
        ws.loss
            .loss(self, &ws.queries, &ws.output_mask, batch, step)
    }

    /// The in-batch softmax loss summed over the batch's rows (one query
    /// per row, at its newest step), without gradients (the reference's
    /// val_loss, times the batch size).
    pub fn loss_sum(&self, ws: &mut Workspace, batch: &Batch) -> f64 {
        if self.spec.tower.cost_follows_longest_window() {
            // The encoder runs rows of like length together, over few
            // padding columns; a row's query does not depend on the rows
            // beside it, so these are the forward's queries, bit for bit.
            ws.queries.vectors = QueryEncoder::queries_by_length(self, batch);
        } else {
            self.forward(ws, batch, &StepOptions::default());
        }
        ws.loss.loss_sum(self, &ws.queries, batch)
    }

    /// Back-propagates the loss's gradients through the candidate gather,
    /// the tower and the input rows into `grads`: the tower's tensors
    /// overwritten, each embedding table's gradient as the rows touched.
    pub fn backward(&self, ws: &mut Workspace, grads: &mut Grads, step: &StepOptions) {
        let spec = self.spec;
        let d = spec.dim;
        // Candidate table: one row per distinct column, duplicates summed in
        // column order.
        let loss = &mut ws.loss;
        loss.columns.clear(spec.vocab_size);
        let cand = &mut grads.candidate_embedding;
        cand.values.clear();
        loss.columns
            .scatter_add(&mut cand.values, d, &loss.column_ids, &loss.d_candidates);
        cand.ids.clone_from(&loss.columns.ids);
        // The tower leaves the gradient of the `U` input rows in
        // `grads.query_embedding.values`.
        ws.tower.backward(
            self,
            ws.inputs.view(),
            &ws.queries,
            &ws.loss.d_queries,
            step,
            grads,
        );
        let query = &mut grads.query_embedding;
        let cand = &mut grads.candidate_embedding;
        if step.dropout_input > 0.0 {
            dropout_backward(&mut query.values, &ws.inputs.mask);
        }
        if spec.shared_embeddings {
            // One table: the candidate rows' gradient joins the query rows'.
            ws.inputs
                .ids
                .scatter_add(&mut query.values, d, &cand.ids, &cand.values);
            cand.ids.clear();
            cand.values.clear();
        }
        query.ids.clone_from(&ws.inputs.ids.ids);
    }

    /// One training step's maths: forward, loss, backward. Writes the
    /// gradient of every parameter into `grads` and returns the mean loss.
    /// `StepOptions::default()` is the reference's step.
    pub fn loss_and_grads(
        &self,
        ws: &mut Workspace,
        batch: &Batch,
        grads: &mut Grads,
        step: &StepOptions,
    ) -> f64 {
        self.forward(ws, batch, step);
        let loss = self.loss(ws, batch, step);
        self.backward(ws, grads, step);
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::Params;
    use crate::model::spec::{ModelOptions, Padding, QueryTower};

    /// Sequence training's queries are causal in both towers: changing the
    /// item at step t + 1 leaves every query at steps up to t bit-identical
    /// (and changes a later one).
    #[test]
    fn sequence_queries_never_see_a_later_item() {
        let (vocab, l) = (30, 7);
        for tower in [QueryTower::Gru, QueryTower::Sasrec] {
            let spec = ModelOptions {
                embedding_dim: 8,
                context_len: l,
                padding: Padding::Left,
                mask_padding: true,
                tower,
                heads: 2,
                ..ModelOptions::default()
            }
            .spec(vocab);
            let params = Params::init(&spec, 9);
            let model = Model {
                spec: &spec,
                params: &params,
                threads: 2,
            };
            // Two padding steps, then five items; a target at every real step.
            let contexts: Vec<u32> = vec![0, 0, 3, 14, 15, 9, 26];
            let batch_of = |contexts: Vec<u32>| Batch {
                size: 1,
                targets: contexts
                    .iter()
                    .map(|&c| if c == 0 { 0 } else { 1 })
                    .collect(),
                contexts,
                labels: vec![1],
                lengths: vec![5],
            };
            let queries = |contexts: Vec<u32>| {
                let mut ws = Workspace::default();
                model.forward(&mut ws, &batch_of(contexts), &StepOptions::default());
                ws.queries
                    .vectors
                    .chunks(8)
                    .map(|q| q.to_vec())
                    .collect::<Vec<_>>()
            };
            let base = queries(contexts.clone());
            assert_eq!(base.len(), 5);
            for t in 2..l - 1 {
                let mut changed = contexts.clone();
                changed[t + 1] = 1 + (changed[t + 1] % 28);
                let after = queries(changed);
                // Query k is at step k + 2.
                for k in 0..5 {
                    if k + 2 <= t {
                        assert_eq!(
                            after[k],
                            base[k],
                            "{tower:?}: step {} saw step {}",
                            k + 2,
                            t + 1
                        );
                    } else {
                        assert_ne!(
                            after[k],
                            base[k],
                            "{tower:?}: step {} ignores step {}",
                            k + 2,
                            t + 1
                        );
                    }
                }
            }
        }
    }
}
