//! What every pass over a batch is given: the model (`Model`: its spec,
//! parameters and thread count) and a training step's options
//! (`StepOptions`). The passes themselves are `Model`'s methods in
//! `workspace` (forward, loss, backward) and the towers' in `tower`.

use super::loss::LossKind;
use super::params::Params;
use super::spec::ModelSpec;

/// What a training step adds to the reference's loss; `Default` is the
/// reference (plain in-batch softmax, no dropout).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOptions<'a> {
    /// In-batch negatives that carry the row's own label get no probability.
    pub remove_accidental_hits: bool,
    /// log Q(id) of the in-batch sampler (label frequency), subtracted from
    /// each in-batch column's logit (logQ correction).
    pub in_batch_log_q: Option<&'a [f32]>,
    /// Extra negatives shared by every row, scored after the in-batch ones.
    pub negatives: &'a [u32],
    /// log Q(id) of the extra negatives' sampler, subtracted from their logits.
    pub negatives_log_q: Option<&'a [f32]>,
    /// Dropout on the input embedding table's entries (a mask per item row
    /// and dimension, shared within the batch, so the projection stays per
    /// vocabulary row).
    pub dropout_input: f32,
    /// Dropout on the GRU's output (the query embeddings).
    pub dropout_output: f32,
    /// Seeds this step's dropout masks.
    pub dropout_seed: u64,
    /// The loss (`Default`: the reference's softmax cross-entropy).
    pub loss: LossKind,
    /// Dropout inside the SASRec tower (its input, attention and
    /// feed-forward outputs).
    pub tower_dropout: f32,
    /// Score every item of the catalogue, not the batch's labels and extra
    /// negatives (no sampling, so no logQ).
    pub full_softmax: bool,
    /// Divide the summed loss by this instead of the batch's number of
    /// queries (sequence training: the mean number of labelled steps a
    /// batch has), so every query weighs the same.
    pub mean_queries: Option<f32>,
    /// The items a query has read (its window up to its step) get no
    /// probability in its loss, as evaluation excludes seen items. Needs
    /// distinct columns: sequence training or a full softmax.
    pub exclude_history: bool,
}

/// The model's maths over one batch.
pub struct Model<'a> {
    pub spec: &'a ModelSpec,
    pub params: &'a Params,
    pub threads: usize,
}
