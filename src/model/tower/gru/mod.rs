//! The GRU query tower (GRU4Rec-style, the reference's): the item
//! embedding, then a Keras 3 GRU over the window; a query is the state
//! after the row's last step (in sequence training, after every labelled
//! step). `cell` is the GRU's maths, `chunk` one thread's run of rows; here
//! the batch is split into chunks, run in parallel, and the input
//! projection `E·W + b_in` is done once per distinct row or token by token
//! (`InputProjection`).
//!
//! Parameters: four tensors in `Params::tower`, read by name through
//! `GruTensors`: `kernel` (`D x 3D`), `recurrent_kernel` (`D x 3D`),
//! `input_bias` and `recurrent_bias` (`3D`); gates z, r, h.

pub mod cell;
mod chunk;
#[cfg(test)]
mod tests;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use cell::*;
use chunk::{ChunkGrad, ChunkInput, GruChunk};

use super::{query_steps, InputRows, Queries, Tower, WindowRows};
use crate::kernels;
use crate::model::batch::Batch;
use crate::model::embedding;
use crate::model::params::{orthogonal, Grads, Params, TensorDef};
use crate::model::spec::ModelSpec;
use crate::model::step::{Model, StepOptions};

/// The GRU tower's buffers, reused across batches.
#[derive(Default)]
pub struct GruTower {
    /// How the input projection is done (`Auto` unless a test or a bench
    /// picks), and how the last forward did it.
    projection: InputProjection,
    projects_tokens: bool,
    /// `U x 3D`, the input projection of the batch's distinct rows, and
    /// its gradient (`InputProjection::DistinctRows`).
    projected: Vec<f32>,
    d_projected: Vec<f32>,
    /// `B·L x D`: each token's input-row gradient, laid out as `d_tokens`
    /// (`InputProjection::Tokens`).
    d_token_rows: Vec<f32>,
    /// `B·L x 3D`: the gradient of every token's input projection, the
    /// chunks' `d_inputs` one after another; and where each slot's tokens
    /// are in it (`slot_tokens[token_start[s]..token_start[s + 1]]`, in
    /// batch order), to sum them into `d_projected`.
    d_tokens: Vec<f32>,
    token_start: Vec<u32>,
    slot_tokens: Vec<u32>,
    /// One per thread, each a run of the batch's rows.
    chunks: Vec<GruChunk>,
}

impl GruTower {
    /// A tower that projects its inputs as `projection` says.
    pub fn with_projection(projection: InputProjection) -> GruTower {
        GruTower {
            projection,
            ..GruTower::default()
        }
    }
}

/// The GRU's tensors by name: a view of `Params::tower` (`&[f32]`) or
/// `Grads::tower` (`&mut [f32]`), which hold them in this order.
#[derive(Clone, Copy)]
pub struct GruTensors<T> {
    /// Input kernel, `D x 3D`.
    pub kernel: T,
    /// Recurrent kernel, `D x 3D`.
    pub recurrent_kernel: T,
    /// Input bias, `3D`.
    pub input_bias: T,
    /// Recurrent bias, `3D`.
    pub recurrent_bias: T,
}

/// The GRU's tensors' names in the model file, in `GruTensors`' order.
const TENSOR_NAMES: [&str; 4] = [
    "gru_kernel",
    "gru_recurrent_kernel",
    "gru_input_bias",
    "gru_recurrent_bias",
];

impl<'a> GruTensors<&'a [f32]> {
    /// The GRU's tensors in `tower` (`Params::tower` of a GRU model).
    pub fn of(tower: &'a [Vec<f32>]) -> Self {
        match tower {
            [kernel, recurrent_kernel, input_bias, recurrent_bias] => GruTensors {
                kernel,
                recurrent_kernel,
                input_bias,
                recurrent_bias,
            },
            _ => panic!("a GRU has 4 tensors, not {}", tower.len()),
        }
    }
}

impl<'a> GruTensors<&'a mut [f32]> {
    /// The GRU's tensors in `tower`, writable (`Grads::tower`, or
    /// `Params::tower` being initialised).
    pub fn of_mut(tower: &'a mut [Vec<f32>]) -> Self {
        let len = tower.len();
        match tower {
            [kernel, recurrent_kernel, input_bias, recurrent_bias] => GruTensors {
                kernel,
                recurrent_kernel,
                input_bias,
                recurrent_bias,
            },
            _ => panic!("a GRU has 4 tensors, not {len}"),
        }
    }
}

impl Tower for GruTower {
    const INFERENCE_ROWS: usize = 256;
    const COST_FOLLOWS_LONGEST_WINDOW: bool = false;
    const ALWAYS_MASKS_PADDING: bool = false;

    fn tensors(spec: &ModelSpec) -> Vec<TensorDef> {
        let d = spec.dim;
        let shapes = [vec![d, 3 * d], vec![d, 3 * d], vec![3 * d], vec![3 * d]];
        TENSOR_NAMES
            .into_iter()
            .zip(shapes)
            .map(|(name, shape)| TensorDef::new(name, shape))
            .collect()
    }

    /// Keras' initialisers: the input kernel Glorot-uniform, the recurrent
    /// kernel orthogonal, biases zero.
    fn init_tensors(spec: &ModelSpec, rng: &mut ChaCha8Rng, tensors: &mut [Vec<f32>]) {
        let d = spec.dim;
        let t = GruTensors::of_mut(tensors);
        let glorot = (6.0 / (d + 3 * d) as f64).sqrt() as f32;
        for x in t.kernel.iter_mut() {
            *x = rng.random_range(-glorot..glorot);
        }
        t.recurrent_kernel
            .copy_from_slice(&orthogonal(rng, d, 3 * d));
    }

    /// `V x 3D`: `E·W + b_in` for every id.
    fn inference_tables(spec: &ModelSpec, params: &Params) -> Vec<f32> {
        let mut projected = vec![0.0; spec.vocab_size * 3 * spec.dim];
        let gru = GruTensors::of(&params.tower);
        embedding::project_table(
            &params.query_embedding,
            gru.kernel,
            gru.input_bias,
            spec.dim,
            &mut projected,
            1,
        );
        projected
    }

    /// The GRU over the batch's windows, in parallel chunks of rows,
    /// reading the input projection of the `U` rows.
    fn forward(
        &mut self,
        model: &Model,
        batch: &Batch,
        input: WindowRows,
        _step: &StepOptions,
        queries: &mut Queries,
    ) {
        let spec = model.spec;
        let gru = GruTensors::of(&model.params.tower);
        let (d, l, u) = (spec.dim, spec.context_len, input.distinct);
        self.projects_tokens = self.projection.per_token(u, input.windows.len());
        if !self.projects_tokens {
            self.projected.resize(u * 3 * d, 0.0);
            embedding::project_table(
                input.rows,
                gru.kernel,
                gru.input_bias,
                d,
                &mut self.projected,
                model.threads,
            );
        }
        let ranges = row_ranges(batch.size, model.threads);
        self.chunks.resize_with(ranges.len(), GruChunk::default);
        self.chunks.truncate(ranges.len());
        for (c, r) in self.chunks.iter_mut().zip(ranges) {
            c.rows = r;
        }
        let chunk_input = if self.projects_tokens {
            ChunkInput::Rows(input.rows)
        } else {
            ChunkInput::Projected(&self.projected)
        };
        let windows = input.windows;
        self.chunks.par_iter_mut().for_each(|c| {
            let contexts = &windows[c.rows.start * l..c.rows.end * l];
            c.forward(spec, gru, chunk_input, contexts)
        });
        gather_queries(
            spec,
            batch,
            &mut self.chunks,
            &mut queries.vectors,
            &mut queries.steps,
            &mut queries.labels,
        );
    }

    /// The GRU's backward over its chunks, then the input projection's.
    fn backward(
        &mut self,
        model: &Model,
        input: WindowRows,
        queries: &Queries,
        d_queries: &[f32],
        _step: &StepOptions,
        grads: &mut Grads,
    ) {
        let spec = model.spec;
        let gru = GruTensors::of(&model.params.tower);
        let d = spec.dim;
        let (u, l) = (input.distinct, spec.context_len);
        let tokens = input.windows.len();
        self.d_tokens.resize(tokens * 3 * d, 0.0);
        let row_cols = if self.projects_tokens { d } else { 0 };
        self.d_token_rows.resize(tokens * row_cols, 0.0);
        let mut d_inputs = Vec::with_capacity(self.chunks.len());
        let (mut rest, mut rows_rest) = (
            self.d_tokens.as_mut_slice(),
            self.d_token_rows.as_mut_slice(),
        );
        for c in &self.chunks {
            let (mine, others) = rest.split_at_mut(c.rows.len() * l * 3 * d);
            let (mine_rows, other_rows) = rows_rest.split_at_mut(c.rows.len() * l * row_cols);
            d_inputs.push((mine, self.projects_tokens.then_some(mine_rows)));
            (rest, rows_rest) = (others, other_rows);
        }
        let slots = &queries.steps;
        self.chunks
            .par_iter_mut()
            .zip(d_inputs)
            .for_each(|(c, (d_inputs, d_rows))| {
                let d_out = if slots.is_empty() {
                    ChunkGrad::Last(&d_queries[c.rows.start * d..c.rows.end * d])
                } else {
                    let q = c.queries.clone();
                    ChunkGrad::Steps {
                        slots: &slots[q.clone()],
                        d_queries: &d_queries[q.start * d..q.end * d],
                    }
                };
                c.backward(spec, gru, d_out, d_inputs, d_rows)
            });
        // Each projected row's gradient is the sum of its tokens' rows, in
        // batch order whatever the thread count; in parallel over slots.
        // The work follows the tokens: no per-thread copy of all `U` rows.
        group_tokens_by_slot(
            &self.chunks,
            input.windows,
            u,
            l,
            &mut self.token_start,
            &mut self.slot_tokens,
        );
        let g = GruTensors::of_mut(&mut grads.tower);
        g.recurrent_kernel.fill(0.0);
        g.recurrent_bias.fill(0.0);
        for c in &self.chunks {
            kernels::add_assign(g.recurrent_kernel, &c.d_recurrent);
            kernels::add_assign(g.recurrent_bias, &c.d_recurrent_bias);
        }
        let query = &mut grads.query_embedding;
        query.values.clear();
        query.values.resize(u * d, 0.0);
        g.kernel.fill(0.0);
        g.input_bias.fill(0.0);
        if self.projects_tokens {
            // Each row's gradient is the sum of its tokens' input-row
            // gradients; the kernel's, the chunks' in chunk order.
            sum_rows_by_slot(
                &self.d_token_rows,
                d,
                &self.token_start,
                &self.slot_tokens,
                &mut query.values,
            );
            for c in &self.chunks {
                kernels::add_assign(g.kernel, &c.d_kernel);
                kernels::add_assign(g.input_bias, &c.d_input_bias);
            }
            return;
        }
        self.d_projected.resize(u * 3 * d, 0.0);
        sum_rows_by_slot(
            &self.d_tokens,
            3 * d,
            &self.token_start,
            &self.slot_tokens,
            &mut self.d_projected,
        );
        embedding::project_table_backward(
            input.rows,
            gru.kernel,
            &self.d_projected,
            d,
            &mut query.values,
            g.kernel,
            g.input_bias,
            model.threads,
        );
    }

    /// With the projected table (`inference_tables`): one chunk over the
    /// windows, on this thread. Without: the training forward.
    fn infer(
        &mut self,
        model: &Model,
        tables: &[f32],
        batch: &Batch,
        inputs: &mut InputRows,
        queries: &mut Queries,
    ) {
        if tables.is_empty() {
            let step = StepOptions::default();
            inputs.gather(model, batch, &step);
            self.forward(model, batch, inputs.view(), &step, queries);
            return;
        }
        self.chunks.resize_with(1, GruChunk::default);
        let chunk = &mut self.chunks[0];
        chunk.rows = 0..0;
        chunk.forward(
            model.spec,
            GruTensors::of(&model.params.tower),
            ChunkInput::Projected(tables),
            &batch.contexts,
        );
        queries.vectors.clear();
        queries.vectors.extend_from_slice(chunk.output(model.spec));
        queries.steps.clear();
        queries.labels.clear();
    }
}

/// Where the GRU's input projection `E[id]·W + b_in` is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputProjection {
    /// `Tokens` when the batch's distinct rows are at least half its
    /// tokens, else `DistinctRows` (`cargo bench --bench scale` with
    /// `SEQREC_SCALE_PROJECTION`: at 34% distinct `DistinctRows` was as
    /// fast or faster, at 56% `Tokens` was faster).
    #[default]
    Auto,
    /// Once per distinct row, into a `U x 3D` table the GRU reads by id:
    /// few products when rows recur (a small catalogue), but at 10^6 items
    /// a batch's rows are nearly all distinct and the table outgrows the
    /// cache, so every step's reads are scattered misses.
    DistinctRows,
    /// Token by token inside the GRU, one step at a time (`GruInput::Tokens`),
    /// so each step's projection is read while still in cache.
    Tokens,
}

impl InputProjection {
    fn per_token(self, distinct: usize, tokens: usize) -> bool {
        match self {
            InputProjection::Auto => 2 * distinct >= tokens,
            InputProjection::DistinctRows => false,
            InputProjection::Tokens => true,
        }
    }
}

/// Splits `batch_size` rows into `parts` runs of near-equal size.
fn row_ranges(batch_size: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1).min(batch_size.max(1));
    (0..parts)
        .map(|p| (p * batch_size / parts)..((p + 1) * batch_size / parts))
        .collect()
}

/// For each slot, the rows of `d_tokens` that belong to it, in batch
/// order (row, then step): a counting sort of the batch's tokens by slot.
/// Chunk `c` holds its tokens step-major after the chunks before it, so the
/// token at (row, t) is row `start·L + t·rows + (row − start)` there.
fn group_tokens_by_slot(
    chunks: &[GruChunk],
    windows: &[u32],
    slots: usize,
    l: usize,
    token_start: &mut Vec<u32>,
    slot_tokens: &mut Vec<u32>,
) {
    token_start.clear();
    token_start.resize(slots + 1, 0);
    for &slot in windows {
        token_start[slot as usize + 1] += 1;
    }
    for s in 0..slots {
        token_start[s + 1] += token_start[s];
    }
    slot_tokens.resize(windows.len(), 0);
    let mut next: Vec<u32> = token_start[..slots].to_vec();
    for c in chunks {
        let rows = c.rows.len();
        for row in c.rows.clone() {
            let window = &windows[row * l..(row + 1) * l];
            for (t, &slot) in window.iter().enumerate() {
                let at = &mut next[slot as usize];
                slot_tokens[*at as usize] =
                    (c.rows.start * l + t * rows + row - c.rows.start) as u32;
                *at += 1;
            }
        }
    }
}

/// `out[s] = Σ src[k]` over `k` in `tokens[start[s]..start[s + 1]]`, rows
/// of `cols`, summed in that order; in parallel over blocks of slots.
fn sum_rows_by_slot(src: &[f32], cols: usize, start: &[u32], tokens: &[u32], out: &mut [f32]) {
    const SLOTS: usize = 256;
    if cols == 0 {
        return;
    }
    out.par_chunks_mut(SLOTS * cols)
        .enumerate()
        .for_each(|(block, out)| {
            let first = block * SLOTS;
            let slots = out.len() / cols;
            // The block's tokens, slot after slot: prefetched a few ahead
            // across slot boundaries (most slots have one token).
            let base = start[first] as usize;
            let flat = &tokens[base..start[first + slots] as usize];
            for (i, row) in out.chunks_exact_mut(cols).enumerate() {
                row.fill(0.0);
                for j in start[first + i] as usize - base..start[first + i + 1] as usize - base {
                    kernels::prefetch_row_ahead(src, cols, flat, j);
                    let k = flat[j] as usize;
                    kernels::add_assign(row, &src[k * cols..(k + 1) * cols]);
                }
            }
        });
}

/// The queries of a batch the tower has run over: each row's last state,
/// or in sequence training (`batch.targets`) the state after every step
/// with a label, row by row, noting each one's step in `slots` and each
/// chunk's run of them.
fn gather_queries(
    spec: &ModelSpec,
    batch: &Batch,
    chunks: &mut [GruChunk],
    queries: &mut Vec<f32>,
    slots: &mut Vec<u32>,
    labels: &mut Vec<u32>,
) {
    let l = spec.context_len;
    queries.clear();
    if !batch.is_sequence() {
        slots.clear();
        labels.clear();
        for c in chunks.iter() {
            queries.extend_from_slice(c.output(spec));
        }
        return;
    }
    query_steps(spec, batch, slots, labels);
    // Slots are in row order and a chunk is a run of rows: its queries are
    // one run of slots.
    for c in chunks.iter_mut() {
        let before = |row: usize| slots.partition_point(|&s| (s as usize) < row * l);
        c.queries = before(c.rows.start)..before(c.rows.end);
        for &slot in &slots[c.queries.clone()] {
            let (row, t) = (slot as usize / l, slot as usize % l);
            queries.extend_from_slice(c.state_after(spec, t, row - c.rows.start));
        }
    }
}
