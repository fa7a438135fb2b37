//! The query towers: the networks that turn a batch of item windows into
//! query vectors. `Model::forward` (`super::workspace`) gathers the rows
//! the windows read (`InputRows`) and `Model::loss` scores the queries; a
//! tower runs in between, over a workspace of its own,
//! through the `Tower` trait. `AnyTower` holds one tower and dispatches to
//! it with one `match` per call (static dispatch, no trait objects).
//!
//! What a new tower implements, in a folder of its own here:
//! - a type `T: Tower + Default` holding its buffers: `forward` (a batch of
//!   windows to `N x D` queries), `backward` (the queries' gradients back to
//!   its tensors and the input rows), `infer` (the query at each row's
//!   newest step), its tensors (`tensors`: each one's name, the model
//!   file's and the optimiser state's, and shape; `init_tensors`: their
//!   initial values), and the constants that describe its cost. It finds
//!   its tensors in `Params::tower` and writes their gradients to
//!   `Grads::tower`, in the order `tensors` declares (a view with named
//!   fields keeps the indices in one place: `gru::GruTensors`);
//! - then one arm in each match over the towers, all exhaustive (the
//!   compiler lists any left out): in `spec`, a `QueryTower` name (the
//!   `--tower` flag and the model file's `tower` field) and a `TowerSpec`
//!   variant with its hyper-parameters (`TowerSpec::{kind, from_flat,
//!   flat}`); here, an `AnyTower` variant (`AnyTower::{kind, for_spec}`,
//!   `for_each_tower!`) and its type in `with_tower!`. The step, the loss,
//!   the encoder, the parameters, the optimiser, the model file and
//!   training dispatch through these and need no change.
//!
//! Shapes: `B` rows in a batch, `L` = `spec.context_len`, `D` = `spec.dim`,
//! `U` distinct rows the batch's windows read, `N` queries.

pub mod gru;
mod inputs;
pub mod sasrec;

use rand_chacha::ChaCha8Rng;

use super::batch::Batch;
use super::params::{Grads, Params, TensorDef};
use super::spec::{ModelSpec, QueryTower, TowerSpec};
use super::step::{Model, StepOptions};
pub use gru::{GruTower, InputProjection};
pub use inputs::{InputRows, WindowRows};
pub use sasrec::SasRecTower;

/// What a tower's forward leaves for the loss.
#[derive(Default)]
pub struct Queries {
    /// `N x D` query vectors: `N` is `B`, or in sequence training the
    /// number of labelled steps.
    pub vectors: Vec<f32>,
    /// The window step of each query (`row · L + t`); empty where each row
    /// has one query, at the last step of its window (the GRU).
    pub steps: Vec<u32>,
    /// Sequence training: each query's label.
    pub labels: Vec<u32>,
}

/// A query tower over a workspace of its own (the implementing type's
/// fields, reused across batches). `model` bundles the spec, the
/// parameters and the thread count.
pub trait Tower: Default {
    /// Rows per inference chunk (`QueryEncoder`).
    const INFERENCE_ROWS: usize;
    /// Whether a batch costs as much as its longest window times its rows:
    /// then inference and validation run rows of like length together, and
    /// sequence training buckets its batches by length.
    const COST_FOLLOWS_LONGEST_WINDOW: bool;
    /// Whether padding steps are masked whatever `spec.mask_padding` says.
    const ALWAYS_MASKS_PADDING: bool;

    /// The tower's tensors, in the order `Params::tower` and
    /// `Grads::tower` hold them: each one's name (the model file's, and
    /// its optimiser state's: `adam_m.{name}`) and shape. Names are unique
    /// across towers and never change, or older model files stop loading.
    fn tensors(spec: &ModelSpec) -> Vec<TensorDef>;

    /// Draws the tower's tensors (`tensors`, zero) from `rng`, which has
    /// just drawn the query embedding (the candidate embedding is drawn
    /// after).
    fn init_tensors(spec: &ModelSpec, rng: &mut ChaCha8Rng, tensors: &mut [Vec<f32>]);

    /// What inference computes once from the fixed parameters and hands
    /// to every `infer`; empty where nothing is worth computing ahead.
    fn inference_tables(_spec: &ModelSpec, _params: &Params) -> Vec<f32> {
        Vec::new()
    }

    /// Runs the tower over the batch's windows (`input`): leaves the
    /// queries (before output dropout) and their steps in `queries`, and
    /// what `backward` needs in `self`.
    fn forward(
        &mut self,
        model: &Model,
        batch: &Batch,
        input: WindowRows,
        step: &StepOptions,
        queries: &mut Queries,
    );

    /// Back-propagates `d_queries` (`N x D`, after the last `forward` over
    /// `input`): writes the tower's tensors' gradients into `grads.tower`
    /// (overwritten) and the input rows' gradient into
    /// `grads.query_embedding.values` (`U x D`).
    fn backward(
        &mut self,
        model: &Model,
        input: WindowRows,
        queries: &Queries,
        d_queries: &[f32],
        step: &StepOptions,
        grads: &mut Grads,
    );

    /// Inference over windows cut by `ModelSpec::cut_window`: each row's
    /// query at its newest step (a sequence batch's at every labelled
    /// step), bit for bit the training forward's without dropout, into
    /// `queries`. `tables` is `inference_tables`' or empty; `inputs` is
    /// scratch for gathering the windows' rows.
    fn infer(
        &mut self,
        model: &Model,
        tables: &[f32],
        batch: &Batch,
        inputs: &mut InputRows,
        queries: &mut Queries,
    );
}

/// One tower of each kind, and its buffers.
pub enum AnyTower {
    Gru(GruTower),
    /// Boxed: its cache is five times the GRU's buffers' size.
    SasRec(Box<SasRecTower>),
}

/// `$body` with `$tower` bound to the tower `$any` holds.
macro_rules! for_each_tower {
    ($any:expr, $tower:ident => $body:expr) => {
        match $any {
            AnyTower::Gru($tower) => $body,
            AnyTower::SasRec($tower) => $body,
        }
    };
}

/// `$body` with the type `$T` the tower `$spec` names.
macro_rules! with_tower {
    ($spec:expr, $T:ident => $body:expr) => {
        match $spec {
            TowerSpec::Gru => {
                type $T = GruTower;
                $body
            }
            TowerSpec::SasRec { .. } => {
                type $T = SasRecTower;
                $body
            }
        }
    };
}

impl Default for AnyTower {
    fn default() -> Self {
        AnyTower::Gru(GruTower::default())
    }
}

impl From<GruTower> for AnyTower {
    fn from(tower: GruTower) -> Self {
        AnyTower::Gru(tower)
    }
}

impl AnyTower {
    fn kind(&self) -> QueryTower {
        match self {
            AnyTower::Gru(_) => QueryTower::Gru,
            AnyTower::SasRec(_) => QueryTower::Sasrec,
        }
    }

    /// The tower `spec` names: this one, or a fresh one in its place
    /// where it is of another kind.
    pub fn for_spec(&mut self, spec: &TowerSpec) -> &mut AnyTower {
        if self.kind() != spec.kind() {
            *self = match spec {
                TowerSpec::Gru => AnyTower::Gru(GruTower::default()),
                TowerSpec::SasRec { .. } => AnyTower::SasRec(Box::default()),
            };
        }
        self
    }

    pub fn forward(
        &mut self,
        model: &Model,
        batch: &Batch,
        input: WindowRows,
        step: &StepOptions,
        queries: &mut Queries,
    ) {
        for_each_tower!(self, t => t.forward(model, batch, input, step, queries))
    }

    pub fn backward(
        &mut self,
        model: &Model,
        input: WindowRows,
        queries: &Queries,
        d_queries: &[f32],
        step: &StepOptions,
        grads: &mut Grads,
    ) {
        for_each_tower!(self, t => t.backward(model, input, queries, d_queries, step, grads))
    }

    pub fn infer(
        &mut self,
        model: &Model,
        tables: &[f32],
        batch: &Batch,
        inputs: &mut InputRows,
        queries: &mut Queries,
    ) {
        for_each_tower!(self, t => t.infer(model, tables, batch, inputs, queries))
    }

    /// The SASRec tower, where this is one (tests look inside).
    #[cfg(test)]
    pub(crate) fn as_sasrec(&self) -> Option<&SasRecTower> {
        match self {
            AnyTower::SasRec(t) => Some(t.as_ref()),
            _ => None,
        }
    }
}

/// What a spec's tower is, asked of the tower's type.
impl TowerSpec {
    pub fn inference_rows(&self) -> usize {
        with_tower!(self, T => T::INFERENCE_ROWS)
    }

    pub fn cost_follows_longest_window(&self) -> bool {
        with_tower!(self, T => T::COST_FOLLOWS_LONGEST_WINDOW)
    }

    pub fn always_masks_padding(&self) -> bool {
        with_tower!(self, T => T::ALWAYS_MASKS_PADDING)
    }

    pub fn tensors(&self, spec: &ModelSpec) -> Vec<TensorDef> {
        with_tower!(self, T => T::tensors(spec))
    }

    pub fn init_tensors(&self, spec: &ModelSpec, rng: &mut ChaCha8Rng, tensors: &mut [Vec<f32>]) {
        with_tower!(self, T => T::init_tensors(spec, rng, tensors))
    }

    pub fn inference_tables(&self, spec: &ModelSpec, params: &Params) -> Vec<f32> {
        with_tower!(self, T => T::inference_tables(spec, params))
    }
}

/// The steps a tower's output is read at (`row · L + t`) and their labels:
/// each labelled step in sequence training, otherwise each row's newest
/// item (the last step with left padding, the last real one with right).
pub(crate) fn query_steps(
    spec: &ModelSpec,
    batch: &Batch,
    slots: &mut Vec<u32>,
    labels: &mut Vec<u32>,
) {
    let l = spec.context_len;
    slots.clear();
    labels.clear();
    if batch.is_sequence() {
        for (i, &label) in batch.targets.iter().enumerate() {
            if label != 0 {
                slots.push(i as u32);
                labels.push(label);
            }
        }
        return;
    }
    for row in 0..batch.size {
        slots.push((row * l + spec.newest_step(batch.lengths[row] as usize)) as u32);
    }
    labels.extend_from_slice(&batch.labels);
}
