//! Optimisers as one interface. An `Optimizer` says how one tensor steps:
//! a dense tower tensor (`dense_step`) and an embedding table whose
//! gradient is the rows a step touched (`table_step`), each with the
//! per-tensor state buffers it keeps (`state_names`: AdamW's two moments).
//! `OptimizerState` holds the chosen optimiser, the step count and every
//! tensor's buffers, and walks the parameter registry (the spec's
//! `Params::tensor_defs`, `Params::tensors`, `Grads::tensors`, one order)
//! once for all of them; the model file stores each buffer by name
//! (`adam_m.query_embedding`) without knowing which optimiser ran.
//!
//! A new optimiser is one file here implementing `Optimizer`, an arm of
//! `AnyOptimizer` (static dispatch, no allocation per step) and a value of
//! the `optimizer` setting (`OptimizerKind`).

pub mod adamw;

use serde::{Deserialize, Serialize};

use crate::model::{Gradient, Grads, ModelSpec, Params, SparseRows};

pub use adamw::{AdamW, AdamWConfig, LazyAdamW};

/// The `optimizer` setting: which `Optimizer` trains (see `adamw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum OptimizerKind {
    /// Keras AdamW: every row, every step (the reference).
    #[default]
    #[value(name = "adamw")]
    #[serde(rename = "adamw")]
    AdamW,
    /// Only the rows a step touched: moments and weight decay included.
    #[value(name = "lazy-adamw")]
    #[serde(rename = "lazy-adamw")]
    LazyAdamW,
}

/// How one tensor takes a step. `begin_step` fixes the step's constants;
/// the steps then run for every tensor, in parallel, so they take `&self`.
pub trait Optimizer: Sync {
    /// The state it keeps per tensor, each a buffer of the tensor's size,
    /// by the name the model file gives it (`{name}.{tensor}`).
    fn state_names(&self) -> &'static [&'static str];
    /// Step `step` (1-based) at learning rate `lr`.
    fn begin_step(&mut self, lr: f32, step: u64);
    /// A dense tensor `p`, its gradient `g` and its state buffers.
    fn dense_step(&self, p: &mut [f32], g: &[f32], state: &mut [Vec<f32>]);
    /// A `vocab x dim` table `p` whose gradient is `rows`, and its state.
    fn table_step(&self, p: &mut [f32], rows: &SparseRows, state: &mut [Vec<f32>], dim: usize);
    /// Whether `table_step` changes only the rows in its gradient (so a
    /// copy of the table needs only those rows copied again).
    fn changes_only_touched_rows(&self) -> bool;
}

/// The optimisers there are, dispatched once per tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyOptimizer {
    AdamW(AdamW),
    LazyAdamW(LazyAdamW),
}

impl AnyOptimizer {
    /// The optimiser the `optimizer` setting names, with AdamW's settings.
    pub fn new(kind: OptimizerKind, cfg: AdamWConfig) -> AnyOptimizer {
        match kind {
            OptimizerKind::AdamW => AnyOptimizer::AdamW(AdamW::new(cfg)),
            OptimizerKind::LazyAdamW => AnyOptimizer::LazyAdamW(LazyAdamW::new(cfg)),
        }
    }

    fn get(&self) -> &dyn Optimizer {
        match self {
            AnyOptimizer::AdamW(o) => o,
            AnyOptimizer::LazyAdamW(o) => o,
        }
    }

    fn get_mut(&mut self) -> &mut dyn Optimizer {
        match self {
            AnyOptimizer::AdamW(o) => o,
            AnyOptimizer::LazyAdamW(o) => o,
        }
    }
}

/// An optimiser, its step count and its state for every tensor of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    pub optimizer: AnyOptimizer,
    /// Steps taken (the bias correction's `t`).
    pub step: u64,
    /// The model's tensors' names, in the registry's order
    /// (`Params::tensor_defs`).
    tensors: Vec<&'static str>,
    /// `buffers[t][b]`: tensor `t` (`tensors`' order), buffer `b`
    /// (`state_names` order).
    buffers: Vec<Vec<Vec<f32>>>,
}

impl OptimizerState {
    /// A fresh state: every buffer zero, of its tensor's size.
    pub fn new(optimizer: AnyOptimizer, spec: &ModelSpec) -> OptimizerState {
        let names = optimizer.get().state_names().len();
        let defs = Params::tensor_defs(spec);
        OptimizerState {
            optimizer,
            step: 0,
            tensors: defs.iter().map(|t| t.name).collect(),
            buffers: defs
                .iter()
                .map(|t| vec![vec![0.0; t.size()]; names])
                .collect(),
        }
    }

    /// One step at learning rate `lr`: every dense tensor and every table,
    /// in parallel, each as its kind says.
    pub fn apply(&mut self, params: &mut Params, grads: &Grads, lr: f32, dim: usize) {
        self.step += 1;
        self.optimizer.get_mut().begin_step(lr, self.step);
        let optimizer = self.optimizer.get();
        assert!(
            params.tower.len() + 2 == self.buffers.len() && grads.tower.len() == params.tower.len(),
            "the parameters and gradients of the optimiser's model"
        );
        let mut dense = Vec::with_capacity(self.buffers.len());
        let mut tables = Vec::with_capacity(2);
        let tensors = params.tensors_mut().zip(grads.tensors());
        for ((p, g), state) in tensors.zip(self.buffers.iter_mut()) {
            match g {
                Gradient::Dense(g) => dense.push((p, g, state)),
                Gradient::Rows(rows) => tables.push((p, rows, state)),
            }
        }
        use rayon::prelude::*;
        rayon::join(
            || {
                dense
                    .into_par_iter()
                    .for_each(|(p, g, state)| optimizer.dense_step(p, g, state))
            },
            || {
                tables
                    .into_par_iter()
                    .for_each(|(p, rows, state)| optimizer.table_step(p, rows, state, dim))
            },
        );
    }

    /// Whether a step changed only the table rows in its gradient.
    pub fn changes_only_touched_rows(&self) -> bool {
        self.optimizer.get().changes_only_touched_rows()
    }

    /// Every state buffer the model has, by its name in the model file
    /// (`adam_m.query_embedding`), with its tensor's index in the
    /// registry (`Params::tensor_defs`, whose shape it has), in a fixed
    /// order.
    pub fn named_buffers(&self) -> Vec<(String, usize, &[f32])> {
        let mut out = Vec::new();
        for (b, name) in self.optimizer.get().state_names().iter().enumerate() {
            for (t, tensor) in self.tensors.iter().enumerate() {
                if let Some(buffer) = self.buffers.get(t).and_then(|s| s.get(b)) {
                    if !buffer.is_empty() {
                        out.push((format!("{name}.{tensor}"), t, buffer.as_slice()));
                    }
                }
            }
        }
        out
    }

    /// The names `named_buffers` would give a model of `spec`, with each
    /// buffer's shape: what a model file must hold to resume.
    pub fn buffer_shapes(&self, spec: &ModelSpec) -> Vec<(String, Vec<usize>)> {
        let defs = Params::tensor_defs(spec);
        let mut out = Vec::new();
        for name in self.optimizer.get().state_names() {
            for tensor in &defs {
                if tensor.size() > 0 {
                    out.push((format!("{name}.{}", tensor.name), tensor.shape.clone()));
                }
            }
        }
        out
    }

    /// Sets the buffer named as `named_buffers` names it; false when no
    /// tensor and buffer have that name.
    pub fn set_buffer(&mut self, name: &str, values: Vec<f32>) -> bool {
        let names = self.optimizer.get().state_names();
        let Some((buffer, tensor)) = name.split_once('.') else {
            return false;
        };
        let (Some(b), Some(t)) = (
            names.iter().position(|n| *n == buffer),
            self.tensors.iter().position(|n| *n == tensor),
        ) else {
            return false;
        };
        match self.buffers.get_mut(t).and_then(|s| s.get_mut(b)) {
            Some(slot) => {
                *slot = values;
                true
            }
            None => false,
        }
    }

    /// Goes on with `optimizer` (a resumed run's settings): the buffers
    /// are kept when it keeps the same state, else start from zero.
    pub fn switch_to(&mut self, optimizer: AnyOptimizer, spec: &ModelSpec) {
        if optimizer.get().state_names() == self.optimizer.get().state_names() {
            self.optimizer = optimizer;
        } else {
            let step = self.step;
            *self = OptimizerState::new(optimizer, spec);
            self.step = step;
        }
    }

    /// Every buffer, writable (a benchmark touches their pages first).
    pub fn buffers_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        self.buffers.iter_mut().flatten()
    }

    /// Buffer `b` of tensor `name` (for tests and tools).
    pub fn buffer(&self, tensor: &str, b: usize) -> Option<&[f32]> {
        let t = self.tensors.iter().position(|n| *n == tensor)?;
        Some(self.buffers.get(t)?.get(b)?.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelOptions;

    #[test]
    fn the_state_is_named_by_buffer_and_tensor_and_survives_a_switch() {
        let spec = ModelOptions {
            embedding_dim: 4,
            ..ModelOptions::default()
        }
        .spec(9);
        let cfg = AdamWConfig::default();
        let mut state = OptimizerState::new(AnyOptimizer::new(OptimizerKind::AdamW, cfg), &spec);
        let names: Vec<String> = state
            .named_buffers()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        // A GRU model: six tensors (no SASRec weights), two moments each.
        assert_eq!(names.len(), 12, "{names:?}");
        assert_eq!(names[0], "adam_m.query_embedding");
        assert_eq!(names[6], "adam_v.query_embedding");
        assert!(!names.iter().any(|n| n.ends_with("sasrec_weights")));
        let shapes: Vec<String> = state
            .buffer_shapes(&spec)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(shapes, names, "what a file must hold is what is written");
        assert!(state.set_buffer("adam_v.gru_kernel", vec![0.5; 4 * 12]));
        assert!(!state.set_buffer("adam_v.no_such_tensor", vec![]));
        assert!(!state.set_buffer("momentum.gru_kernel", vec![]));
        state.step = 7;
        // Lazy AdamW keeps AdamW's moments: the buffers go on.
        state.switch_to(AnyOptimizer::new(OptimizerKind::LazyAdamW, cfg), &spec);
        assert_eq!(state.step, 7);
        assert_eq!(state.buffer("gru_kernel", 1).unwrap()[0], 0.5);
        assert!(matches!(state.optimizer, AnyOptimizer::LazyAdamW(_)));
    }
}
