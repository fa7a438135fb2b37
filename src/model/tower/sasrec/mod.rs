//! SASRec's query tower (Kang & McAuley 2018, in the pre-LayerNorm form of
//! the PyTorch SASRec / gSASRec implementations): causal multi-head
//! self-attention blocks over a batch of item sequences, forward and
//! backward, llm.c-style: plain `f32` slices, matrix products through
//! `kernels::matmul`, row-parallel loops through rayon, every buffer kept in
//! a `SasRecCache` that is reused across calls.
//!
//! Written by hand because the rest of the engine is: the model's maths is
//! a set of forward/backward functions over flat buffers (see `gru::cell`), and no
//! crate gives forward and backward passes over `f32` slices with this
//! padding mask (either side of a row), deterministic dropout and
//! results independent of the thread count.
//!
//! Shapes: `B` rows (`batch`), `L` steps, `D` = `dim`, `H` heads of
//! `D / H`; `N = B·L` tokens. Token (row `b`, step `t`) is row `b·L + t` of
//! every `N x ·` buffer. `input` is `N x D` (item embeddings gathered by the
//! caller), `mask` is `N` (1 real item, 0 padding), the output `N x D`.
//!
//! The maths, with `m` the mask and `drop` inverted dropout:
//!   x = drop((input·√D + pos[t]) ⊙ m)
//!   per block:  a = LN1(x);  [q k v] = a·W_qkv + b_qkv
//!               per head, query step t attends to the real key steps
//!               u ≤ t: softmax(q_t·k_u / √(D/H)) · v_u (a padding query,
//!               or one with no visible key, gives zeros);
//!               x = x + drop(attn·W_out + b_out)
//!               f = LN2(x);  g = act(f·W1 + b1)·W2 + b2  (hidden size D)
//!               x = (x + drop(g)) ⊙ m
//!   output = LN_final(x) ⊙ m
//! LayerNorm: `(x − mean)/√(var + 1e-8)·gain + bias` (the biased variance,
//! eps 1e-8 as in the PyTorch SASRec). GELU is the tanh approximation.
//!
//! Weight layout (one flat vector, see `layout`): `pos_embedding` `L x D`,
//! then per block `ln1.gain` `D`, `ln1.bias` `D`, `attn.w_qkv` `D x 3D`
//! (columns: q, k, v; head `h` is columns `h·D/H..(h+1)·D/H` of each),
//! `attn.b_qkv` `3D`, `attn.w_out` `D x D`, `attn.b_out` `D`, `ln2.gain`
//! `D`, `ln2.bias` `D`, `ffn.w1` `D x D`, `ffn.b1` `D`, `ffn.w2` `D x D`,
//! `ffn.b2` `D`, then `final_ln.gain` `D`, `final_ln.bias` `D`. Matrices are
//! row-major `in x out` (`y = x·W`).
//!
//! Determinism: projections are matmuls over all `N` tokens (their weight
//! gradients too, one product each); attention runs per row in parallel,
//! each row with single-threaded matmuls; bias, gain and position gradients
//! are column sums in token order. The result is the same whatever the
//! thread count, and the dropout masks come from `crate::model::dropout::dropout_mask`
//! (counter-based), seeded per place and block from the call's `seed`.

mod layers;
mod layout;
mod passes;
#[cfg(test)]
pub(crate) mod tests;

pub use layout::*;
pub use passes::*;

use rand_chacha::ChaCha8Rng;

use super::{query_steps, InputRows, Queries, Tower, WindowRows};
use crate::kernels;
use crate::model::batch::Batch;
use crate::model::params::{Grads, TensorDef};
use crate::model::spec::{ModelSpec, Padding, TowerSpec};
use crate::model::step::{Model, StepOptions};

/// Seeds the tower's dropout masks, apart from the input and output
/// dropout's.
const DROPOUT_SEED: u64 = 0x5A5E_C0DE_0000_0001;

/// The SASRec tower's buffers, reused across batches.
#[derive(Default)]
pub struct SasRecTower {
    cache: SasRecCache,
    /// The window columns the tower ran over (`B x steps` tokens): those
    /// some window has an item in, so padding costs nothing and a step
    /// keeps its position-table row.
    columns: std::ops::Range<usize>,
    /// `B·steps x D`: each token's input row; `B·steps`: the padding mask.
    input: Vec<f32>,
    mask: Vec<f32>,
    /// `B·steps x D`: the gradients of the output and the input.
    d_output: Vec<f32>,
    d_input: Vec<f32>,
}

impl SasRecTower {
    /// The window columns of the last forward (tests check the trim).
    #[cfg(test)]
    pub(crate) fn columns(&self) -> std::ops::Range<usize> {
        self.columns.clone()
    }

    /// The tower's input: each token's row of `input.rows` over the
    /// columns some window has an item in, and the padding mask.
    fn gather_tokens(&mut self, spec: &ModelSpec, batch: &Batch, input: WindowRows) -> SasRecShape {
        let (d, l) = (spec.dim, spec.context_len);
        let steps = batch
            .lengths
            .iter()
            .max()
            .map_or(1, |&n| n as usize)
            .clamp(1, l);
        let first = match spec.padding {
            Padding::Left => l - steps,
            Padding::Right => 0,
        };
        self.columns = first..first + steps;
        let shape = shape(spec, batch.size, first, steps);
        self.input.resize(batch.size * steps * d, 0.0);
        self.mask.clear();
        for row in 0..batch.size {
            let window = row * l + first..row * l + first + steps;
            for (t, &slot) in input.windows[window.clone()].iter().enumerate() {
                let token = (row * steps + t) * d;
                self.input[token..token + d]
                    .copy_from_slice(&input.rows[slot as usize * d..(slot as usize + 1) * d]);
            }
            self.mask.extend(
                batch.contexts[window]
                    .iter()
                    .map(|&id| if id == 0 { 0.0 } else { 1.0 }),
            );
        }
        shape
    }
}

/// The tower's shape over `steps` window columns from `first`.
fn shape(spec: &ModelSpec, batch: usize, first: usize, steps: usize) -> SasRecShape {
    let TowerSpec::SasRec {
        blocks,
        heads,
        activation,
    } = spec.tower
    else {
        panic!("a SASRec tower under a {:?} spec", spec.tower.kind());
    };
    SasRecShape {
        batch,
        steps,
        positions: spec.context_len,
        first_position: first,
        dim: spec.dim,
        heads,
        blocks,
        activation,
    }
}

/// The token of the trimmed tower input (`row · steps + t − first`, for
/// the window columns `columns = first..first + steps`) holding window
/// step `slot = row · L + t`.
fn tower_token(slot: u32, l: usize, columns: &std::ops::Range<usize>) -> usize {
    let (row, t) = (slot as usize / l, slot as usize % l);
    debug_assert!(columns.contains(&t), "a query at a trimmed-off step");
    row * columns.len() + t - columns.start
}

/// The tower's one tensor's name in the model file: every weight, laid
/// out as `layout` says.
const TENSOR_NAME: &str = "sasrec_weights";

/// The tower's weights in `tower` (`Params::tower` of a SASRec model).
pub fn weights(tower: &[Vec<f32>]) -> &[f32] {
    match tower {
        [weights] => weights,
        _ => panic!("SASRec has 1 tensor, not {}", tower.len()),
    }
}

/// The tower's weights in `tower`, writable (`Grads::tower`, or
/// `Params::tower` being initialised).
pub fn weights_mut(tower: &mut [Vec<f32>]) -> &mut Vec<f32> {
    let len = tower.len();
    match tower {
        [weights] => weights,
        _ => panic!("SASRec has 1 tensor, not {len}"),
    }
}

impl Tower for SasRecTower {
    /// Smaller than the GRU's: a chunk's cost grows with its longest
    /// window, and the longest chunk must not hold up the rest.
    const INFERENCE_ROWS: usize = 32;
    const COST_FOLLOWS_LONGEST_WINDOW: bool = true;
    const ALWAYS_MASKS_PADDING: bool = true;

    fn tensors(spec: &ModelSpec) -> Vec<TensorDef> {
        let TowerSpec::SasRec { blocks, .. } = spec.tower else {
            panic!("SASRec tensors for a {:?} spec", spec.tower.kind());
        };
        let size = weight_count(spec.context_len, spec.dim, blocks);
        vec![TensorDef::new(TENSOR_NAME, vec![size])]
    }

    fn init_tensors(spec: &ModelSpec, rng: &mut ChaCha8Rng, tensors: &mut [Vec<f32>]) {
        let TowerSpec::SasRec { blocks, .. } = spec.tower else {
            panic!("SASRec tensors for a {:?} spec", spec.tower.kind());
        };
        *weights_mut(tensors) = init_weights(spec.context_len, spec.dim, blocks, rng);
    }

    /// Every token's input row, the tower, then the output at each
    /// query's step.
    fn forward(
        &mut self,
        model: &Model,
        batch: &Batch,
        input: WindowRows,
        step: &StepOptions,
        queries: &mut Queries,
    ) {
        let (d, l) = (model.spec.dim, model.spec.context_len);
        let shape = self.gather_tokens(model.spec, batch, input);
        forward(
            shape,
            weights(&model.params.tower),
            &self.input,
            &self.mask,
            step.tower_dropout,
            step.dropout_seed ^ DROPOUT_SEED,
            model.threads,
            &mut self.cache,
        );
        query_steps(model.spec, batch, &mut queries.steps, &mut queries.labels);
        let out = self.cache.output();
        queries.vectors.clear();
        for &slot in &queries.steps {
            let t = tower_token(slot, l, &self.columns);
            queries.vectors.extend_from_slice(&out[t * d..(t + 1) * d]);
        }
    }

    /// The queries' gradients at their steps, through the tower, each
    /// token's input gradient summed into its row.
    fn backward(
        &mut self,
        model: &Model,
        input: WindowRows,
        queries: &Queries,
        d_queries: &[f32],
        step: &StepOptions,
        grads: &mut Grads,
    ) {
        let (d, l) = (model.spec.dim, model.spec.context_len);
        let columns = self.columns.clone();
        let (rows, steps) = (input.windows.len() / l, columns.len());
        let tokens = rows * steps;
        self.d_output.clear();
        self.d_output.resize(tokens * d, 0.0);
        for (&slot, g) in queries.steps.iter().zip(d_queries.chunks_exact(d)) {
            let t = tower_token(slot, l, &columns);
            self.d_output[t * d..(t + 1) * d].copy_from_slice(g);
        }
        self.d_input.resize(tokens * d, 0.0);
        backward(
            shape(model.spec, rows, columns.start, steps),
            weights(&model.params.tower),
            &self.d_output,
            &self.mask,
            step.tower_dropout,
            step.dropout_seed ^ DROPOUT_SEED,
            model.threads,
            &mut self.cache,
            weights_mut(&mut grads.tower),
            &mut self.d_input,
        );
        let query = &mut grads.query_embedding;
        query.values.clear();
        query.values.resize(input.distinct * d, 0.0);
        // In token order, so the sums do not depend on the thread count.
        let mut d_tokens = self.d_input.chunks_exact(d);
        for row in 0..rows {
            for &slot in &input.windows[row * l + columns.start..row * l + columns.end] {
                let slot = slot as usize;
                let g = d_tokens.next().expect("one gradient row per token");
                kernels::add_assign(&mut query.values[slot * d..(slot + 1) * d], g);
            }
        }
    }

    /// Window batches run `forward_at`: the last block at the query steps
    /// only. Sequence batches run the training forward.
    fn infer(
        &mut self,
        model: &Model,
        _tables: &[f32],
        batch: &Batch,
        inputs: &mut InputRows,
        queries: &mut Queries,
    ) {
        let step = StepOptions::default();
        inputs.gather(model, batch, &step);
        if batch.is_sequence() {
            self.forward(model, batch, inputs.view(), &step, queries);
            return;
        }
        let l = model.spec.context_len;
        let shape = self.gather_tokens(model.spec, batch, inputs.view());
        query_steps(model.spec, batch, &mut queries.steps, &mut queries.labels);
        let at: Vec<usize> = queries
            .steps
            .iter()
            .enumerate()
            .map(|(row, &slot)| tower_token(slot, l, &self.columns) - row * shape.steps)
            .collect();
        forward_at(
            shape,
            weights(&model.params.tower),
            &self.input,
            &self.mask,
            &at,
            model.threads,
            &mut self.cache,
            &mut queries.vectors,
        );
    }
}
