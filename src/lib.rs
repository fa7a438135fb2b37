//! seqrec: a sequential recommender (the Keras-RS GRU4Rec example, rebuilt in Rust).
//!
//! Data flows one way, and each module imports only those above it in this
//! list: `kernels`, `files`, `progress`, `text`, `workers` and `settings`
//! (bottom: numeric building blocks, atomic writes, progress bars, input
//! quoted in messages, thread pools, settings defined once)
//! -> `data` (files -> sequences -> examples) -> `model` (spec, windows and
//! batches, the query tower, the loss) -> `train` (a run from a
//! dataset to a trained model) -> `checkpoint` (the model file) ->
//! `retrieval` (top-K; the `Recommender`) -> `eval` -> `export` (vectors
//! as Parquet) -> `serve` -> `cli`.

pub mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod files;
pub mod kernels;
pub mod model;
pub mod progress;
pub mod retrieval;
pub mod serve;
pub mod settings;
pub mod text;
pub mod train;
pub mod workers;
