//! The two-tower model: its definition (`spec`), parameters, and the maths
//! of one batch. `workspace` runs a training step (`Model::forward`,
//! `loss`, `backward`) over a `Workspace`; the query tower is one of `tower`'s,
//! behind the `Tower` trait; `encoder` runs the same tower code for
//! inference (`QueryEncoder`), so a served query is the training forward's,
//! bit for bit.
//!
//! The submodules import each other one way (no circle): `spec`, `batch`,
//! `dropout`, `embedding`, `loss` (the losses over a row of logits),
//! `params` and `step` (`Model`, `StepOptions`) below the towers;
//! `columns` (a batch's loss columns), `encoder` and `workspace` above
//! them.
//!
//! Shapes: `B` rows in a batch, `L` = `spec.context_len`, `D` = `spec.dim`,
//! `V` = `spec.vocab_size`, `C` = loss columns (`B` labels + extra negatives).

pub mod artifact;
pub mod batch;
pub mod columns;
pub mod dropout;
pub mod embedding;
pub mod encoder;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod loss;
pub mod params;
pub mod spec;
pub mod step;
pub mod tower;
pub mod workspace;

pub use artifact::Artifact;
pub use batch::{fill_batch, fill_sequence_batch, history_before, sequence_row_ends, Batch};
pub use columns::logq_column_bias;
pub use dropout::{dropout_backward, dropout_forward, dropout_mask, dropout_mask_rows};
pub use embedding::{SparseRows, TouchedRows};
pub use encoder::QueryEncoder;
pub use loss::{Bce, Gbce, LossKind, RowLoss, Softmax};
pub use params::{orthogonal, Gradient, Grads, Params, TensorDef};
pub use spec::{Activation, ModelOptions, ModelSpec, Padding, QueryTower, SpecError, TowerSpec};
pub use step::{Model, StepOptions};
pub use tower::{gru, sasrec};
pub use tower::{AnyTower, GruTower, InputProjection, SasRecTower};
pub use workspace::Workspace;
