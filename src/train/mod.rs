//! Training: the loop over epochs and batches, the optimiser, checkpoints.

pub mod adamw;
