//! seqrec: a sequential recommender (the Keras-RS GRU4Rec example, rebuilt in Rust).
//!
//! Data flows one way: `data` (files -> sequences -> examples -> batches) ->
//! `train` (the model's parameters) -> a model file -> `retrieval` -> `eval`.

pub mod cli;
pub mod data;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod retrieval;
pub mod serve;
pub mod train;
