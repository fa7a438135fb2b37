//! The two-tower model: its definition (`spec`), parameters, and the maths
//! of one batch, llm.c-style: `Model::forward` (query tower), `Model::loss`
//! (fused in-batch softmax, forward and backward), `Model::backward` (query
//! tower backward), each over plain `f32` buffers held in a `Workspace`.
//! Inference encodes histories through the same tower code
//! (`QueryEncoder`), so a served query is the training forward's, bit for
//! bit.
//!
//! Shapes: `B` rows in a batch, `L` = `spec.context_len`, `D` = `spec.dim`,
//! `V` = `spec.vocab_size`, `C` = loss columns (`B` labels + extra negatives).

pub mod artifact;
pub mod batch;
pub mod embedding;
#[cfg(test)]
mod gradcheck;
pub mod gru;
pub mod loss;
pub mod params;
pub mod sasrec;
pub mod spec;

use rayon::prelude::*;

use crate::kernels;

pub use artifact::Artifact;
pub use batch::{fill_batch, fill_sequence_batch, history_before, sequence_row_ends, Batch};
pub use embedding::{SparseRows, TouchedRows};
use gru::{GruCache, GruGradScratch, GruInput, GruShape};
pub use loss::LossKind;
use loss::{LossGrads, LossInputs};
pub use params::{orthogonal, Gradient, Grads, Params, TensorKind, TENSOR_KINDS, TENSOR_NAMES};
use sasrec::{SasRecCache, SasRecShape};
pub use spec::{ModelOptions, ModelSpec, Padding, QueryTower, SpecError};

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
    /// gBCE with this calibration `t` instead of softmax cross-entropy.
    pub gbce_t: Option<f32>,
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

/// Element `i` of a dropout keep-mask: `1 / (1 - p)` or 0, from a
/// counter-based hash of `(seed, i)`, so it is the same whatever the thread
/// count or the rows computed.
fn dropout_keep(seed: u64, i: u64, p: f32) -> f32 {
    let threshold = (p as f64 * u32::MAX as f64) as u32;
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if (z >> 32) as u32 >= threshold {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

/// A keep-mask of `n` elements scaled by `1 / (1 - p)`.
pub fn dropout_mask(out: &mut Vec<f32>, n: usize, p: f32, seed: u64) {
    out.clear();
    out.extend((0..n as u64).map(|i| dropout_keep(seed, i, p)));
}

/// The rows `ids` of the keep-mask of a `vocab x cols` table
/// (`ids.len() x cols`): the same values `dropout_mask` gives those rows.
pub fn dropout_mask_rows(out: &mut Vec<f32>, ids: &[u32], cols: usize, p: f32, seed: u64) {
    out.clear();
    for &id in ids {
        let start = id as u64 * cols as u64;
        out.extend((0..cols as u64).map(|j| dropout_keep(seed, start + j, p)));
    }
}

/// Inverted dropout in place, `x ⊙= mask`, with a mask from `dropout_mask`.
pub fn dropout_forward(x: &mut [f32], mask: &[f32]) {
    for (x, m) in x.iter_mut().zip(mask) {
        *x *= m;
    }
}

/// The backward of `dropout_forward`, in place: `g ⊙= mask`.
pub fn dropout_backward(g: &mut [f32], mask: &[f32]) {
    for (g, m) in g.iter_mut().zip(mask) {
        *g *= m;
    }
}

/// The logQ correction as a per-column logit bias: `-log Q(id)` of the
/// column's sampler (the first `in_batch` columns are the batch's labels,
/// the rest extra negatives); 0 where that sampler has no correction.
pub fn logq_column_bias(
    column_ids: &[u32],
    in_batch: usize,
    in_batch_log_q: Option<&[f32]>,
    negatives_log_q: Option<&[f32]>,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.extend(column_ids.iter().enumerate().map(|(j, &id)| {
        let log_q = if j < in_batch {
            in_batch_log_q
        } else {
            negatives_log_q
        };
        log_q.map_or(0.0, |q| -q[id as usize])
    }));
}

/// Where a tower chunk's tokens find their inputs; the chunk's windows
/// index these tables' rows.
#[derive(Clone, Copy)]
pub enum TowerInput<'a> {
    /// `rows x 3D`: each row's input projection `E[id]·W + b_in`.
    Projected(&'a [f32]),
    /// `rows x D`: the input rows themselves, projected token by token
    /// inside the GRU (`GruInput::Tokens`).
    Rows(&'a [f32]),
}

/// The query tower over one run of consecutive rows: its windows laid out
/// step-major, the padding mask, the GRU's cache for the backward pass and
/// this run's gradient accumulators. Training gives each thread one; the
/// `QueryEncoder` uses the same `forward`.
#[derive(Default)]
pub struct TowerChunk {
    rows: std::ops::Range<usize>,
    /// Context ids, step-major: `L x rows`.
    ids: Vec<u32>,
    /// 1 for a real item, 0 for padding, `L x rows` (masking only).
    mask: Vec<f32>,
    cache: GruCache,
    scratch: GruGradScratch,
    /// `TowerInput::Rows`: each token's input row, laid out as `ids` (`L x
    /// rows x D`).
    token_rows: Vec<f32>,
    /// `D x 3D` and `3D`: of the recurrent kernel and bias, and with
    /// `TowerInput::Rows` of the input kernel and bias too.
    d_recurrent: Vec<f32>,
    d_recurrent_bias: Vec<f32>,
    d_kernel: Vec<f32>,
    d_input_bias: Vec<f32>,
    /// Sequence training: the gradient of every step's state (`L x rows x
    /// D`) and a zero last-state gradient.
    d_states: Vec<f32>,
    d_last: Vec<f32>,
    /// Sequence training: this chunk's queries in `Workspace::query_slots`.
    queries: std::ops::Range<usize>,
}

/// The gradient a tower chunk gets back: of its last states, or of the
/// states at the steps that were queries.
enum TowerGrad<'a> {
    Last(&'a [f32]),
    Steps {
        slots: &'a [u32],
        d_queries: &'a [f32],
    },
}

impl TowerChunk {
    fn shape(&self, spec: &ModelSpec) -> GruShape {
        GruShape {
            batch: self.rows.len(),
            steps: spec.context_len,
            hidden: spec.dim,
        }
    }

    /// Runs the tower over `contexts` (`rows x L` windows from
    /// `ModelSpec::cut_window`, or rewritten to touched-row slots), whose
    /// ids are rows of `input`.
    pub fn forward(
        &mut self,
        spec: &ModelSpec,
        params: &Params,
        input: TowerInput,
        contexts: &[u32],
    ) {
        let l = spec.context_len;
        let rows = contexts.len() / l;
        self.rows = self.rows.start..self.rows.start + rows;
        self.ids.resize(l * rows, 0);
        for (i, window) in contexts.chunks_exact(l).enumerate() {
            for (t, &id) in window.iter().enumerate() {
                self.ids[t * rows + i] = id;
            }
        }
        if spec.mask_padding {
            self.mask.clear();
            self.mask
                .extend(self.ids.iter().map(|&id| if id == 0 { 0.0 } else { 1.0 }));
        }
        let mask = spec.mask_padding.then_some(self.mask.as_slice());
        let shape = self.shape(spec);
        let d = spec.dim;
        let input = match input {
            TowerInput::Projected(table) => GruInput::Projected {
                table,
                ids: &self.ids,
            },
            TowerInput::Rows(table) => {
                self.token_rows.resize(self.ids.len() * d, 0.0);
                embedding::gather_rows_serial(table, d, &self.ids, &mut self.token_rows);
                GruInput::Tokens {
                    x: &self.token_rows,
                    w: &params.kernel,
                    b_in: &params.input_bias,
                }
            }
        };
        gru::forward(
            input,
            &params.recurrent_kernel,
            &params.recurrent_bias,
            mask,
            shape,
            &mut self.cache,
        );
    }

    /// The query vectors of the last `forward`, `rows x D`.
    pub fn output(&self, spec: &ModelSpec) -> &[f32] {
        self.cache.output(self.shape(spec))
    }

    /// The tower's state after step `t` of this chunk's row `i`, `D`: the
    /// query for the item after that step (sequence training).
    fn state_after(&self, spec: &ModelSpec, t: usize, i: usize) -> &[f32] {
        let (n, d) = (self.rows.len() * spec.dim, spec.dim);
        &self.cache.h[(t + 1) * n + i * d..(t + 1) * n + (i + 1) * d]
    }

    /// Back-propagates `d_out` (`rows x D`), or in sequence training the
    /// queries' gradients `d_queries` at the steps `query_slots` (`row · L +
    /// t`, this chunk's rows), into this chunk's accumulators and
    /// `d_inputs`, the gradient of each of its tokens' input projection (`L
    /// x rows x 3D`, laid out as `ids`); given `d_rows` (after a
    /// `TowerInput::Rows` forward), through the projection too, into
    /// `d_rows` (`L x rows x D`, each token's input-row gradient) and this
    /// chunk's `d_kernel` and `d_input_bias`.
    fn backward(
        &mut self,
        spec: &ModelSpec,
        params: &Params,
        d_out: TowerGrad,
        d_inputs: &mut [f32],
        d_rows: Option<&mut [f32]>,
    ) {
        let d = spec.dim;
        let shape = self.shape(spec);
        self.d_recurrent.clear();
        self.d_recurrent.resize(d * 3 * d, 0.0);
        self.d_recurrent_bias.clear();
        self.d_recurrent_bias.resize(3 * d, 0.0);
        let mask = spec.mask_padding.then_some(self.mask.as_slice());
        let (rows, l) = (self.rows.len(), spec.context_len);
        let (d_out, d_states) = match d_out {
            TowerGrad::Last(d_out) => (d_out, None),
            TowerGrad::Steps { slots, d_queries } => {
                self.d_states.clear();
                self.d_states.resize(l * rows * d, 0.0);
                for (&slot, g) in slots.iter().zip(d_queries.chunks_exact(d)) {
                    let (row, t) = (slot as usize / l - self.rows.start, slot as usize % l);
                    self.d_states[(t * rows + row) * d..(t * rows + row + 1) * d]
                        .copy_from_slice(g);
                }
                self.d_last.clear();
                self.d_last.resize(rows * d, 0.0);
                (self.d_last.as_slice(), Some(self.d_states.as_slice()))
            }
        };
        let tokens = d_rows.map(|dx| {
            self.d_kernel.clear();
            self.d_kernel.resize(d * 3 * d, 0.0);
            self.d_input_bias.clear();
            self.d_input_bias.resize(3 * d, 0.0);
            gru::TokenGrads {
                x: &self.token_rows,
                w: &params.kernel,
                dw: &mut self.d_kernel,
                db_in: &mut self.d_input_bias,
                dx,
            }
        });
        gru::backward(
            d_out,
            d_states,
            &params.recurrent_kernel,
            mask,
            shape,
            &self.cache,
            d_inputs,
            &mut self.d_recurrent,
            &mut self.d_recurrent_bias,
            tokens,
            &mut self.scratch,
        );
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
    chunks: &[TowerChunk],
    local_contexts: &[u32],
    slots: usize,
    l: usize,
    token_start: &mut Vec<u32>,
    slot_tokens: &mut Vec<u32>,
) {
    token_start.clear();
    token_start.resize(slots + 1, 0);
    for &slot in local_contexts {
        token_start[slot as usize + 1] += 1;
    }
    for s in 0..slots {
        token_start[s + 1] += token_start[s];
    }
    slot_tokens.resize(local_contexts.len(), 0);
    let mut next: Vec<u32> = token_start[..slots].to_vec();
    for c in chunks {
        let rows = c.rows.len();
        for row in c.rows.clone() {
            let window = &local_contexts[row * l..(row + 1) * l];
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
    chunks: &mut [TowerChunk],
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

/// The token of the trimmed tower input (`row · steps + t − first`, for
/// the window columns `columns = first..first + steps`) holding window
/// step `slot = row · L + t`.
fn tower_token(slot: u32, l: usize, columns: &std::ops::Range<usize>) -> usize {
    let (row, t) = (slot as usize / l, slot as usize % l);
    debug_assert!(columns.contains(&t), "a query at a trimmed-off step");
    row * columns.len() + t - columns.start
}

/// The steps a tower's output is read at (`row · L + t`) and their labels:
/// each labelled step in sequence training, otherwise each row's newest
/// item (the last step with left padding, the last real one with right).
fn query_steps(spec: &ModelSpec, batch: &Batch, slots: &mut Vec<u32>, labels: &mut Vec<u32>) {
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

/// Inference: the projected table of fixed parameters, computed once, and
/// the one path from histories to query vectors (`recommend`, `evaluate`,
/// `serve` and the metrics between epochs all use it).
pub struct QueryEncoder {
    /// `V x 3D`: `E·W + b_in` for every id.
    projected: Vec<f32>,
}

impl QueryEncoder {
    pub fn new(spec: &ModelSpec, params: &Params) -> QueryEncoder {
        if spec.tower != QueryTower::Gru {
            return QueryEncoder {
                projected: Vec::new(),
            };
        }
        let mut projected = vec![0.0; spec.vocab_size * 3 * spec.dim];
        embedding::project_table(
            &params.query_embedding,
            &params.kernel,
            &params.input_bias,
            spec.dim,
            &mut projected,
            1,
        );
        QueryEncoder { projected }
    }

    /// Query vectors, `histories.len() x D`, each from the last
    /// `context_len` items of its history (oldest first), in parallel
    /// chunks of rows.
    pub fn encode(&self, spec: &ModelSpec, params: &Params, histories: &[&[u32]]) -> Vec<f32> {
        if spec.tower == QueryTower::Sasrec && histories.len() > 1 {
            // Chunks of like length run over few padding columns: encode in
            // order of length, then put the queries back.
            let d = spec.dim;
            let mut order: Vec<usize> = (0..histories.len()).collect();
            order.sort_by_key(|&i| histories[i].len().min(spec.context_len));
            let sorted: Vec<&[u32]> = order.iter().map(|&i| histories[i]).collect();
            let queries = self.encode_in_order(spec, params, &sorted);
            let mut out = vec![0.0f32; histories.len() * d];
            for (k, &i) in order.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&queries[k * d..(k + 1) * d]);
            }
            return out;
        }
        self.encode_in_order(spec, params, histories)
    }

    fn encode_in_order(&self, spec: &ModelSpec, params: &Params, histories: &[&[u32]]) -> Vec<f32> {
        let d = spec.dim;
        let mut out = vec![0.0f32; histories.len() * d];
        // SASRec's chunks are smaller: its cost grows with a chunk's
        // longest window, and the longest chunk must not hold up the rest.
        let chunk_rows = match spec.tower {
            QueryTower::Gru => 256,
            QueryTower::Sasrec => 32,
        };
        // One job per thread, each with its own buffers, reused across its
        // chunks: a fresh workspace per chunk (or per rayon split) would
        // page in and zero its large buffers every time. Jobs take every
        // `jobs`-th chunk, so long and short histories spread evenly.
        let chunks = histories.len().div_ceil(chunk_rows);
        let jobs = rayon::current_num_threads().clamp(1, chunks.max(1));
        let parts: Vec<Vec<(usize, Vec<f32>)>> = (0..jobs)
            .into_par_iter()
            .map(|job| {
                let (mut ws, mut tower) = (Workspace::default(), TowerChunk::default());
                (job..chunks)
                    .step_by(jobs)
                    .map(|c| {
                        let hs =
                            &histories[c * chunk_rows..((c + 1) * chunk_rows).min(histories.len())];
                        (c, self.encode_chunk(spec, params, hs, &mut ws, &mut tower))
                    })
                    .collect()
            })
            .collect();
        for (c, queries) in parts.into_iter().flatten() {
            out[c * chunk_rows * d..][..queries.len()].copy_from_slice(&queries);
        }
        out
    }

    /// The queries of one chunk of histories (`hs.len() x D`), on this
    /// thread.
    fn encode_chunk(
        &self,
        spec: &ModelSpec,
        params: &Params,
        hs: &[&[u32]],
        ws: &mut Workspace,
        tower: &mut TowerChunk,
    ) -> Vec<f32> {
        let l = spec.context_len;
        let mut contexts = vec![0u32; hs.len() * l];
        let mut lengths = Vec::with_capacity(hs.len());
        for (h, window) in hs.iter().zip(contexts.chunks_exact_mut(l)) {
            lengths.push(spec.cut_window(h, window) as u32);
        }
        if spec.tower != QueryTower::Gru {
            // The training forward itself, without dropout.
            let batch = Batch {
                size: hs.len(),
                contexts,
                labels: vec![0; hs.len()],
                lengths,
                targets: Vec::new(),
            };
            let model = Model {
                spec,
                params,
                threads: 1,
            };
            let mut queries = Vec::new();
            model.encode(ws, &batch, &mut queries);
            return queries;
        }
        tower.rows = 0..0;
        tower.forward(
            spec,
            params,
            TowerInput::Projected(&self.projected),
            &contexts,
        );
        tower.output(spec).to_vec()
    }
}

/// Buffers of one batch's forward and backward pass, reused across steps.
/// `U` is the number of distinct ids in the batch's windows (padding
/// included), `K` the number of distinct loss columns.
#[derive(Default)]
pub struct Workspace {
    /// The distinct input ids (slot 0 is always padding, so a window's
    /// padding reads as 0 after the rewrite) and the windows rewritten to
    /// their slots, `B x L`.
    inputs: TouchedRows,
    local_contexts: Vec<u32>,
    renumbered_slots: Vec<u32>,
    /// `U x D`: the touched rows of the input table, input dropout applied,
    /// and the dropout mask of those rows.
    input_rows: Vec<f32>,
    input_mask: Vec<f32>,
    /// How the GRU's input projection is done (`Auto` unless a test or a
    /// bench picks), and how the last forward did it.
    pub projection: InputProjection,
    projects_tokens: bool,
    /// `U x 3D`, their input projection `E·W + b_in`, and its gradient
    /// (`InputProjection::DistinctRows`).
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
    /// `N x D` output-dropout mask.
    output_mask: Vec<f32>,
    /// Sequence training: the step of each query (`row · L + t`) and its
    /// label; the distinct labels, which are the in-batch columns.
    query_slots: Vec<u32>,
    query_labels: Vec<u32>,
    label_columns: TouchedRows,
    /// Each query's positive column, when it is not the query's own row;
    /// the number of label columns (before the extra negatives).
    positives: Vec<u32>,
    label_column_count: usize,
    /// With `exclude_history`: each query's excluded columns, CSR.
    excluded_offsets: Vec<u32>,
    excluded_columns: Vec<u32>,
    /// `C` column ids and their logit bias; the `K` distinct ones.
    column_ids: Vec<u32>,
    column_bias: Vec<f32>,
    columns: TouchedRows,
    /// `N x D` query vectors (after output dropout) and their gradient: `N`
    /// is `B`, or in sequence training the number of labelled steps.
    pub queries: Vec<f32>,
    d_queries: Vec<f32>,
    /// `C x D` candidate vectors and their gradient.
    candidates: Vec<f32>,
    d_candidates: Vec<f32>,
    chunks: Vec<TowerChunk>,
    /// SASRec: the tower's input (`B·L x D`, each token's row of
    /// `input_rows`), its padding mask (`B·L`), its cache, and the gradients
    /// of its output and input.
    sasrec: SasRecCache,
    /// The window columns the tower ran over (`B x steps` tokens).
    tower_columns: std::ops::Range<usize>,
    tower_input: Vec<f32>,
    tower_mask: Vec<f32>,
    d_tower_output: Vec<f32>,
    d_tower_input: Vec<f32>,
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

impl Workspace {
    /// The number of queries (losses) of the last forward.
    pub fn queries_taken(&self, spec: &ModelSpec) -> usize {
        self.queries.len() / spec.dim.max(1)
    }
}

/// The model's maths over one batch.
pub struct Model<'a> {
    pub spec: &'a ModelSpec,
    pub params: &'a Params,
    pub threads: usize,
}

impl Model<'_> {
    /// The table candidates are scored against.
    fn candidate_table(&self) -> &[f32] {
        if self.spec.shared_embeddings {
            &self.params.query_embedding
        } else {
            &self.params.candidate_embedding
        }
    }

    /// The query tower: projects the `U` distinct rows the batch's windows
    /// read (input dropout applied to them when `step` asks), runs the tower
    /// chunk by chunk in parallel over windows rewritten to those rows, and
    /// leaves `B x D` queries in `ws.queries`, output dropout applied.
    pub fn forward(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) {
        self.gather_inputs(ws, batch, step);
        match self.spec.tower {
            QueryTower::Gru => self.gru_forward(ws, batch),
            QueryTower::Sasrec => self.sasrec_forward(ws, batch, step),
        }
        if step.dropout_output > 0.0 {
            dropout_mask(
                &mut ws.output_mask,
                ws.queries.len(),
                step.dropout_output,
                step.dropout_seed ^ 0x5EED_0F0D_D0D0_5EED,
            );
            dropout_forward(&mut ws.queries, &ws.output_mask);
        }
    }

    /// The `U` distinct rows the batch's windows read, gathered from the
    /// input table (input dropout applied when `step` asks), and the
    /// windows rewritten to them.
    fn gather_inputs(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) {
        let (v, d) = (self.spec.vocab_size, self.spec.dim);
        // Only the rows the windows read are projected: the work follows
        // the batch, not the catalogue.
        ws.inputs.clear(v);
        ws.inputs.insert(0);
        ws.local_contexts.clear();
        for (i, &id) in batch.contexts.iter().enumerate() {
            if let Some(&ahead) = batch.contexts.get(i + kernels::PREFETCH_AHEAD) {
                ws.inputs.prefetch(ahead);
            }
            let slot = ws.inputs.insert(id);
            ws.local_contexts.push(slot);
        }
        let u = ws.inputs.len();
        // Where the batch reads much of the table, rows in id order let the
        // gather and the lazy optimiser stream it (at 62,967 ids the lazy
        // update took 1.7 ms instead of 2.3-2.9; at 10^6 ids, where rows
        // are far apart, it measured the same either way).
        if 8 * u >= v {
            ws.inputs
                .sort(&mut ws.local_contexts, &mut ws.renumbered_slots);
        }
        ws.input_rows.resize(u * d, 0.0);
        embedding::gather_rows(
            &self.params.query_embedding,
            d,
            &ws.inputs.ids,
            &mut ws.input_rows,
        );
        if step.dropout_input > 0.0 {
            dropout_mask_rows(
                &mut ws.input_mask,
                &ws.inputs.ids,
                d,
                step.dropout_input,
                step.dropout_seed,
            );
            dropout_forward(&mut ws.input_rows, &ws.input_mask);
        }
    }

    /// The GRU over the batch's windows, in parallel chunks of rows,
    /// reading the input projection of the `U` rows in `ws.input_rows`.
    fn gru_forward(&self, ws: &mut Workspace, batch: &Batch) {
        let (d, l, u) = (self.spec.dim, self.spec.context_len, ws.inputs.len());
        ws.projects_tokens = ws.projection.per_token(u, ws.local_contexts.len());
        if !ws.projects_tokens {
            ws.projected.resize(u * 3 * d, 0.0);
            embedding::project_table(
                &ws.input_rows,
                &self.params.kernel,
                &self.params.input_bias,
                d,
                &mut ws.projected,
                self.threads,
            );
        }
        let ranges = row_ranges(batch.size, self.threads);
        ws.chunks.resize_with(ranges.len(), TowerChunk::default);
        ws.chunks.truncate(ranges.len());
        for (c, r) in ws.chunks.iter_mut().zip(ranges) {
            c.rows = r;
        }
        let (spec, params) = (self.spec, self.params);
        let input = if ws.projects_tokens {
            TowerInput::Rows(&ws.input_rows)
        } else {
            TowerInput::Projected(&ws.projected)
        };
        let local_contexts = &ws.local_contexts;
        ws.chunks.par_iter_mut().for_each(|c| {
            let contexts = &local_contexts[c.rows.start * l..c.rows.end * l];
            c.forward(spec, params, input, contexts)
        });
        gather_queries(
            spec,
            batch,
            &mut ws.chunks,
            &mut ws.queries,
            &mut ws.query_slots,
            &mut ws.query_labels,
        );
    }

    /// SASRec over the batch's windows: every token's input row, the tower,
    /// then the output at each query's step.
    fn sasrec_forward(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) {
        let (d, l) = (self.spec.dim, self.spec.context_len);
        let shape = self.sasrec_input(ws, batch);
        sasrec::forward(
            shape,
            &self.params.tower_weights,
            &ws.tower_input,
            &ws.tower_mask,
            step.tower_dropout,
            step.dropout_seed ^ 0x5A5E_C0DE_0000_0001,
            self.threads,
            &mut ws.sasrec,
        );
        query_steps(self.spec, batch, &mut ws.query_slots, &mut ws.query_labels);
        let out = ws.sasrec.output();
        ws.queries.clear();
        for &slot in &ws.query_slots {
            let t = tower_token(slot, l, &ws.tower_columns);
            ws.queries.extend_from_slice(&out[t * d..(t + 1) * d]);
        }
    }

    /// The tower's input: each token's row of `ws.input_rows` over the
    /// columns some window has an item in (padding costs nothing, and a
    /// step keeps its position-table row), and the padding mask.
    fn sasrec_input(&self, ws: &mut Workspace, batch: &Batch) -> SasRecShape {
        let (d, l) = (self.spec.dim, self.spec.context_len);
        let steps = batch
            .lengths
            .iter()
            .max()
            .map_or(1, |&n| n as usize)
            .clamp(1, l);
        let first = match self.spec.padding {
            Padding::Left => l - steps,
            Padding::Right => 0,
        };
        ws.tower_columns = first..first + steps;
        let shape = self.sasrec_shape(batch.size, first, steps);
        ws.tower_input.resize(batch.size * steps * d, 0.0);
        ws.tower_mask.clear();
        for row in 0..batch.size {
            let window = row * l + first..row * l + first + steps;
            for (t, &slot) in ws.local_contexts[window.clone()].iter().enumerate() {
                let token = (row * steps + t) * d;
                ws.tower_input[token..token + d]
                    .copy_from_slice(&ws.input_rows[slot as usize * d..(slot as usize + 1) * d]);
            }
            ws.tower_mask
                .extend(
                    batch.contexts[window]
                        .iter()
                        .map(|&id| if id == 0 { 0.0 } else { 1.0 }),
                );
        }
        shape
    }

    /// Inference on window batches: each row's query at its newest step,
    /// through `sasrec::forward_at` (the last block at the query steps only).
    fn sasrec_encode(&self, ws: &mut Workspace, batch: &Batch, out: &mut Vec<f32>) {
        let l = self.spec.context_len;
        self.gather_inputs(ws, batch, &StepOptions::default());
        let shape = self.sasrec_input(ws, batch);
        query_steps(self.spec, batch, &mut ws.query_slots, &mut ws.query_labels);
        let at: Vec<usize> = ws
            .query_slots
            .iter()
            .enumerate()
            .map(|(row, &slot)| tower_token(slot, l, &ws.tower_columns) - row * shape.steps)
            .collect();
        sasrec::forward_at(
            shape,
            &self.params.tower_weights,
            &ws.tower_input,
            &ws.tower_mask,
            &at,
            self.threads,
            &mut ws.sasrec,
            out,
        );
    }

    /// The tower's shape over `steps` window columns from `first`.
    fn sasrec_shape(&self, batch: usize, first: usize, steps: usize) -> SasRecShape {
        SasRecShape {
            batch,
            steps,
            positions: self.spec.context_len,
            first_position: first,
            dim: self.spec.dim,
            heads: self.spec.heads,
            blocks: self.spec.blocks,
            activation: self.spec.activation,
        }
    }

    /// The query tower alone: writes `B x D` query vectors into `out`.
    pub fn encode(&self, ws: &mut Workspace, batch: &Batch, out: &mut Vec<f32>) {
        if self.spec.tower == QueryTower::Sasrec && !batch.is_sequence() {
            self.sasrec_encode(ws, batch, out);
            return;
        }
        self.forward(ws, batch, &StepOptions::default());
        out.clone_from(&ws.queries);
    }

    /// Gathers the loss columns and their logQ bias; returns whether there
    /// is a bias. The columns are the queries' labels (the batch's, one per
    /// row, as the reference; in sequence training each distinct label
    /// once), then the extra negatives; or with `full_softmax` every item.
    fn gather_columns(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) -> bool {
        let (d, v) = (self.spec.dim, self.spec.vocab_size);
        ws.column_ids.clear();
        ws.positives.clear();
        let sequence = batch.is_sequence();
        let labels: &[u32] = if sequence {
            &ws.query_labels
        } else {
            &batch.labels
        };
        let in_batch = if step.full_softmax {
            ws.column_ids.extend(1..v as u32);
            ws.positives.extend(labels.iter().map(|&id| id - 1));
            0
        } else if sequence {
            ws.label_columns.clear(v);
            for &id in labels {
                let slot = ws.label_columns.insert(id);
                ws.positives.push(slot);
            }
            ws.column_ids.extend_from_slice(&ws.label_columns.ids);
            ws.column_ids.extend_from_slice(step.negatives);
            ws.label_columns.len()
        } else {
            ws.column_ids.extend_from_slice(labels);
            ws.column_ids.extend_from_slice(step.negatives);
            labels.len()
        };
        ws.label_column_count = in_batch;
        ws.candidates.resize(ws.column_ids.len() * d, 0.0);
        embedding::gather_rows(
            self.candidate_table(),
            d,
            &ws.column_ids,
            &mut ws.candidates,
        );
        let with_bias =
            !step.full_softmax && (step.in_batch_log_q.is_some() || step.negatives_log_q.is_some());
        if with_bias {
            logq_column_bias(
                &ws.column_ids,
                in_batch,
                step.in_batch_log_q,
                step.negatives_log_q,
                &mut ws.column_bias,
            );
        }
        with_bias
    }

    /// The fused loss over `ws.queries`, forward and backward: returns the
    /// mean over queries and leaves its gradient in `d_queries` (`N x D`,
    /// output dropout undone) and `d_candidates` (`C x D`).
    pub fn loss(&self, ws: &mut Workspace, batch: &Batch, step: &StepOptions) -> f64 {
        let d = self.spec.dim;
        let n = ws.queries.len() / d;
        let with_bias = self.gather_columns(ws, batch, step);
        let cols = ws.column_ids.len();
        ws.d_queries.resize(n * d, 0.0);
        ws.d_candidates.resize(cols * d, 0.0);
        // Distinct label columns leave accidental hits only among the extra
        // negatives, and a full softmax none.
        let remove_hits = step.remove_accidental_hits && !step.full_softmax;
        if step.exclude_history {
            self.history_columns(ws, batch, step.full_softmax);
        }
        let inputs = LossInputs {
            q: &ws.queries,
            c: &ws.candidates,
            rows: n,
            cols,
            d,
            excluded: step.exclude_history.then_some((
                ws.excluded_offsets.as_slice(),
                ws.excluded_columns.as_slice(),
            )),
            column_ids: remove_hits.then_some(ws.column_ids.as_slice()),
            column_bias: with_bias.then_some(ws.column_bias.as_slice()),
            positives: (!ws.positives.is_empty()).then_some(ws.positives.as_slice()),
            // gBCE's negatives: the extra ones, or with a full softmax every
            // other item.
            kind: step.gbce_t.map_or(LossKind::Softmax, |t| {
                let first_negative = ws.label_column_count;
                let negatives = cols - first_negative - usize::from(first_negative == 0);
                let beta = loss::gbce_beta(t, negatives, self.spec.vocab_size - 1);
                LossKind::Gbce {
                    beta,
                    first_negative,
                    logit_offset: loss::gbce_prior_offset(beta, negatives),
                }
            }),
        };
        // The mean over queries, or over the mean number a batch has, so
        // each query weighs the same in batches of unlike sizes.
        let scale = 1.0 / step.mean_queries.unwrap_or(n.max(1) as f32);
        let grads = LossGrads {
            dq: &mut ws.d_queries,
            dc: &mut ws.d_candidates,
            scale,
        };
        let loss_sum = loss::in_batch_softmax(&inputs, Some(grads), self.threads);
        if step.dropout_output > 0.0 {
            dropout_backward(&mut ws.d_queries, &ws.output_mask);
        }
        loss_sum * scale as f64
    }

    /// For each query, the columns of the items its window holds up to its
    /// step (padding and items without a column left out), into
    /// `ws.excluded_*`.
    fn history_columns(&self, ws: &mut Workspace, batch: &Batch, full_softmax: bool) {
        let l = self.spec.context_len;
        let n = ws.queries_taken(self.spec);
        ws.excluded_offsets.clear();
        ws.excluded_columns.clear();
        ws.excluded_offsets.push(0);
        assert!(
            full_softmax || batch.is_sequence(),
            "excluding the history needs distinct columns"
        );
        for q in 0..n {
            // The GRU's window queries have no slot: the row's last step.
            let (row, t) = match ws.query_slots.get(q) {
                Some(&slot) => (slot as usize / l, slot as usize % l),
                None => (q, l - 1),
            };
            for &id in &batch.contexts[row * l..=row * l + t] {
                let column = match id {
                    0 => None,
                    _ if full_softmax => Some(id - 1),
                    _ => ws.label_columns.slot(id),
                };
                ws.excluded_columns.extend(column);
            }
            ws.excluded_offsets.push(ws.excluded_columns.len() as u32);
        }
    }

    /// The in-batch softmax loss summed over the batch's rows (one query
    /// per row, at its last step), without gradients (the reference's
    /// val_loss, times the batch size).
    pub fn loss_sum(&self, ws: &mut Workspace, batch: &Batch) -> f64 {
        let step = StepOptions::default();
        if self.spec.tower == QueryTower::Sasrec {
            // The encoder runs rows of like length together, over few
            // padding columns; a row's query does not depend on the rows
            // beside it, so these are the forward's queries, bit for bit.
            ws.queries = self.queries_by_length(batch);
        } else {
            self.forward(ws, batch, &step);
        }
        self.gather_columns(ws, batch, &step);
        let inputs = LossInputs {
            q: &ws.queries,
            c: &ws.candidates,
            rows: batch.size,
            cols: batch.size,
            d: self.spec.dim,
            column_ids: None,
            column_bias: None,
            positives: None,
            excluded: None,
            kind: LossKind::Softmax,
        };
        loss::in_batch_softmax(&inputs, None, self.threads)
    }

    /// The batch's queries (`B x D`, one per row at its newest step)
    /// through `QueryEncoder`, from the items of each row's window.
    fn queries_by_length(&self, batch: &Batch) -> Vec<f32> {
        let l = self.spec.context_len;
        let histories: Vec<&[u32]> = batch
            .contexts
            .chunks_exact(l)
            .zip(&batch.lengths)
            .map(|(window, &n)| match self.spec.padding {
                Padding::Left => &window[l - n as usize..],
                Padding::Right => &window[..n as usize],
            })
            .collect();
        QueryEncoder::new(self.spec, self.params).encode(self.spec, self.params, &histories)
    }

    /// Back-propagates the loss's gradients through the candidate gather,
    /// the tower and the input rows into `grads`: the tower's tensors
    /// overwritten, each embedding table's gradient as the rows touched.
    pub fn backward(&self, ws: &mut Workspace, grads: &mut Grads, step: &StepOptions) {
        let spec = self.spec;
        let d = spec.dim;
        // Candidate table: one row per distinct column, duplicates summed in
        // column order.
        ws.columns.clear(spec.vocab_size);
        let cand = &mut grads.candidate_embedding;
        cand.values.clear();
        ws.columns
            .scatter_add(&mut cand.values, d, &ws.column_ids, &ws.d_candidates);
        cand.ids.clone_from(&ws.columns.ids);
        // The tower leaves the gradient of the `U` input rows in
        // `grads.query_embedding.values`.
        match spec.tower {
            QueryTower::Gru => self.gru_backward(ws, grads),
            QueryTower::Sasrec => self.sasrec_backward(ws, grads, step),
        }
        let query = &mut grads.query_embedding;
        let cand = &mut grads.candidate_embedding;
        if step.dropout_input > 0.0 {
            dropout_backward(&mut query.values, &ws.input_mask);
        }
        if spec.shared_embeddings {
            // One table: the candidate rows' gradient joins the query rows'.
            ws.inputs
                .scatter_add(&mut query.values, d, &cand.ids, &cand.values);
            cand.ids.clear();
            cand.values.clear();
        }
        query.ids.clone_from(&ws.inputs.ids);
    }

    /// The GRU's backward over its chunks, then the input projection's.
    fn gru_backward(&self, ws: &mut Workspace, grads: &mut Grads) {
        let (spec, params) = (self.spec, self.params);
        let d = spec.dim;
        let (u, l) = (ws.inputs.len(), spec.context_len);
        let tokens = ws.local_contexts.len();
        ws.d_tokens.resize(tokens * 3 * d, 0.0);
        let row_cols = if ws.projects_tokens { d } else { 0 };
        ws.d_token_rows.resize(tokens * row_cols, 0.0);
        let mut d_inputs = Vec::with_capacity(ws.chunks.len());
        let (mut rest, mut rows_rest) =
            (ws.d_tokens.as_mut_slice(), ws.d_token_rows.as_mut_slice());
        for c in &ws.chunks {
            let (mine, others) = rest.split_at_mut(c.rows.len() * l * 3 * d);
            let (mine_rows, other_rows) = rows_rest.split_at_mut(c.rows.len() * l * row_cols);
            d_inputs.push((mine, ws.projects_tokens.then_some(mine_rows)));
            (rest, rows_rest) = (others, other_rows);
        }
        let (d_queries, slots) = (&ws.d_queries, &ws.query_slots);
        ws.chunks
            .par_iter_mut()
            .zip(d_inputs)
            .for_each(|(c, (d_inputs, d_rows))| {
                let d_out = if slots.is_empty() {
                    TowerGrad::Last(&d_queries[c.rows.start * d..c.rows.end * d])
                } else {
                    let q = c.queries.clone();
                    TowerGrad::Steps {
                        slots: &slots[q.clone()],
                        d_queries: &d_queries[q.start * d..q.end * d],
                    }
                };
                c.backward(spec, params, d_out, d_inputs, d_rows)
            });
        // Each projected row's gradient is the sum of its tokens' rows, in
        // batch order whatever the thread count; in parallel over slots.
        // The work follows the tokens: no per-thread copy of all `U` rows.
        group_tokens_by_slot(
            &ws.chunks,
            &ws.local_contexts,
            u,
            l,
            &mut ws.token_start,
            &mut ws.slot_tokens,
        );
        grads.recurrent_kernel.fill(0.0);
        grads.recurrent_bias.fill(0.0);
        for c in &ws.chunks {
            kernels::add_assign(&mut grads.recurrent_kernel, &c.d_recurrent);
            kernels::add_assign(&mut grads.recurrent_bias, &c.d_recurrent_bias);
        }
        let query = &mut grads.query_embedding;
        query.values.clear();
        query.values.resize(u * d, 0.0);
        grads.kernel.fill(0.0);
        grads.input_bias.fill(0.0);
        if ws.projects_tokens {
            // Each row's gradient is the sum of its tokens' input-row
            // gradients; the kernel's, the chunks' in chunk order.
            sum_rows_by_slot(
                &ws.d_token_rows,
                d,
                &ws.token_start,
                &ws.slot_tokens,
                &mut query.values,
            );
            for c in &ws.chunks {
                kernels::add_assign(&mut grads.kernel, &c.d_kernel);
                kernels::add_assign(&mut grads.input_bias, &c.d_input_bias);
            }
            return;
        }
        ws.d_projected.resize(u * 3 * d, 0.0);
        sum_rows_by_slot(
            &ws.d_tokens,
            3 * d,
            &ws.token_start,
            &ws.slot_tokens,
            &mut ws.d_projected,
        );
        embedding::project_table_backward(
            &ws.input_rows,
            &params.kernel,
            &ws.d_projected,
            d,
            &mut query.values,
            &mut grads.kernel,
            &mut grads.input_bias,
            self.threads,
        );
    }

    /// SASRec's backward: the queries' gradients at their steps, through
    /// the tower, each token's input gradient summed into its row.
    fn sasrec_backward(&self, ws: &mut Workspace, grads: &mut Grads, step: &StepOptions) {
        let (d, l) = (self.spec.dim, self.spec.context_len);
        let columns = ws.tower_columns.clone();
        let (rows, steps) = (ws.local_contexts.len() / l, columns.len());
        let tokens = rows * steps;
        ws.d_tower_output.clear();
        ws.d_tower_output.resize(tokens * d, 0.0);
        for (&slot, g) in ws.query_slots.iter().zip(ws.d_queries.chunks_exact(d)) {
            let t = tower_token(slot, l, &columns);
            ws.d_tower_output[t * d..(t + 1) * d].copy_from_slice(g);
        }
        ws.d_tower_input.resize(tokens * d, 0.0);
        sasrec::backward(
            self.sasrec_shape(rows, columns.start, steps),
            &self.params.tower_weights,
            &ws.d_tower_output,
            &ws.tower_mask,
            step.tower_dropout,
            step.dropout_seed ^ 0x5A5E_C0DE_0000_0001,
            self.threads,
            &mut ws.sasrec,
            &mut grads.tower_weights,
            &mut ws.d_tower_input,
        );
        let query = &mut grads.query_embedding;
        query.values.clear();
        query.values.resize(ws.inputs.len() * d, 0.0);
        // In token order, so the sums do not depend on the thread count.
        let mut d_tokens = ws.d_tower_input.chunks_exact(d);
        for row in 0..rows {
            for &slot in &ws.local_contexts[row * l + columns.start..row * l + columns.end] {
                let slot = slot as usize;
                let g = d_tokens.next().expect("one gradient row per token");
                kernels::add_assign(&mut query.values[slot * d..(slot + 1) * d], g);
            }
        }
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
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The served query (`QueryEncoder`, one history at a time or many)
    /// equals the training forward's (`fill_batch` + `Model::forward`) bit
    /// for bit, for every padding/mask combination and for histories
    /// shorter than, equal to and longer than the context.
    #[test]
    fn served_queries_equal_the_training_forward_bit_for_bit() {
        let vocab = 40;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let variants = [QueryTower::Gru, QueryTower::Sasrec]
            .into_iter()
            .flat_map(|t| [Padding::Right, Padding::Left].map(|p| (t, p)))
            .flat_map(|(t, p)| [false, true].map(|m| (t, p, m)));
        for (tower, padding, mask_padding) in variants {
            {
                let spec = ModelOptions {
                    embedding_dim: 8,
                    context_len: 6,
                    padding,
                    mask_padding,
                    tower,
                    heads: 2,
                    ..ModelOptions::default()
                }
                .spec(vocab);
                let params = Params::init(&spec, 3);
                // Lengths 1..=13: shorter than, equal to and longer than 6;
                // 300 rows so the encoder uses more than one chunk.
                let mut seqs = crate::data::Sequences::default();
                seqs.offsets.push(0);
                let mut positions = Vec::new();
                for row in 0..300 {
                    let len = 1 + row % 13;
                    for _ in 0..len {
                        seqs.items.push(rng.random_range(1..vocab as u32));
                    }
                    positions.push(seqs.items.len() as u32);
                    seqs.items.push(rng.random_range(1..vocab as u32));
                    seqs.offsets.push(seqs.items.len() as u32);
                    seqs.users.push(row as u32);
                }
                let histories: Vec<&[u32]> = positions
                    .iter()
                    .map(|&p| history_before(&seqs, p))
                    .collect();
                let encoder = QueryEncoder::new(&spec, &params);
                let served = encoder.encode(&spec, &params, &histories);
                let one_by_one: Vec<f32> = histories
                    .iter()
                    .flat_map(|h| encoder.encode(&spec, &params, &[h]))
                    .collect();
                for threads in [1, 2, 3] {
                    let mut batch = Batch::default();
                    fill_batch(&spec, &seqs, &positions, &mut batch);
                    let model = Model {
                        spec: &spec,
                        params: &params,
                        threads,
                    };
                    let mut trained = Vec::new();
                    model.encode(&mut Workspace::default(), &batch, &mut trained);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let what =
                        format!("{tower:?}, {padding:?}, mask {mask_padding}, {threads} thread(s)");
                    assert_eq!(bits(&served), bits(&trained), "{what}");
                    assert_eq!(bits(&one_by_one), bits(&trained), "{what}, one by one");
                }
                // val_loss (`loss_sum`) is the in-batch softmax of these
                // same queries, however it runs the tower.
                let mut batch = Batch::default();
                fill_batch(&spec, &seqs, &positions, &mut batch);
                let model = Model {
                    spec: &spec,
                    params: &params,
                    threads: 2,
                };
                let got = model.loss_sum(&mut Workspace::default(), &batch);
                let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
                let d = spec.dim;
                let label_rows: Vec<f32> = batch
                    .labels
                    .iter()
                    .flat_map(|&id| params.candidate_embedding[id as usize * d..][..d].to_vec())
                    .collect();
                let n = batch.size;
                let want = gradcheck::ref_loss(
                    &f64s(&served),
                    &f64s(&label_rows),
                    n,
                    n,
                    d,
                    None,
                    None,
                    None,
                    None,
                    None,
                );
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs(),
                    "{tower:?}, {padding:?}, mask {mask_padding}: loss_sum {got}, f64 {want}"
                );
            }
        }
    }

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
                ws.queries.chunks(8).map(|q| q.to_vec()).collect::<Vec<_>>()
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

    /// SASRec runs only over the window columns some row has an item in;
    /// a short row's query is bit-identical whether its batch is trimmed
    /// to 2 columns or runs all 8 (a long row beside it).
    #[test]
    fn sasrec_queries_do_not_depend_on_the_columns_the_batch_runs() {
        for padding in [Padding::Left, Padding::Right] {
            let spec = ModelOptions {
                embedding_dim: 8,
                context_len: 8,
                padding,
                tower: QueryTower::Sasrec,
                heads: 2,
                ..ModelOptions::default()
            }
            .spec(40);
            let params = Params::init(&spec, 4);
            let model = Model {
                spec: &spec,
                params: &params,
                threads: 2,
            };
            let histories: [&[u32]; 3] = [&[5, 9], &[7], &[1, 2, 3, 4, 5, 6, 7, 8, 9]];
            let batch_of = |hs: &[&[u32]]| {
                let mut b = Batch {
                    size: hs.len(),
                    contexts: vec![0; hs.len() * 8],
                    labels: vec![1; hs.len()],
                    ..Batch::default()
                };
                for (h, w) in hs.iter().zip(b.contexts.chunks_exact_mut(8)) {
                    b.lengths.push(spec.cut_window(h, w) as u32);
                }
                b
            };
            let mut ws = Workspace::default();
            model.forward(&mut ws, &batch_of(&histories[..2]), &StepOptions::default());
            assert_eq!(
                ws.tower_columns.len(),
                2,
                "trimmed to the longest short row"
            );
            let trimmed = ws.queries.clone();
            model.forward(&mut ws, &batch_of(&histories), &StepOptions::default());
            assert_eq!(ws.tower_columns.len(), 8);
            assert_eq!(&ws.queries[..16], &trimmed[..], "{padding:?}");
        }
    }

    #[test]
    fn a_window_keeps_the_newest_items_on_the_padding_side_asked() {
        let right = ModelOptions {
            context_len: 4,
            ..ModelOptions::default()
        }
        .spec(10);
        let left = ModelSpec {
            padding: Padding::Left,
            ..right
        };
        let mut out = [9; 4];
        assert_eq!(right.cut_window(&[1, 2], &mut out), 2);
        assert_eq!(out, [1, 2, 0, 0]);
        assert_eq!(left.cut_window(&[1, 2], &mut out), 2);
        assert_eq!(out, [0, 0, 1, 2]);
        assert_eq!(left.cut_window(&[1, 2, 3, 4, 5, 6], &mut out), 4);
        assert_eq!(out, [3, 4, 5, 6]);
        // An id outside the vocabulary reads as padding.
        right.cut_window(&[3, 12], &mut out);
        assert_eq!(out, [3, 0, 0, 0]);
        assert_eq!(right.cut_window(&[], &mut out), 0);
        assert_eq!(out, [0; 4]);
    }
}
