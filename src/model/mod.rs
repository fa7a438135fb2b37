//! The two-tower model: parameters, their Keras initialisers, and the forward
//! and backward pass of one batch (query tower = item embedding + GRU,
//! candidate tower = item embedding, in-batch softmax between them).

pub mod embedding;
pub mod gru;
pub mod io;
pub mod loss;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Batch;
use crate::kernels;
use gru::{GruCache, GruGradScratch, GruShape};
use loss::{LossGrads, LossInputs};

/// The shape of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Rows of each embedding table: largest item id + 1 (id 0 is padding).
    pub vocab_size: usize,
    /// Embedding size, which is also the GRU's size (EMBEDDING_DIM).
    pub dim: usize,
    /// Steps of history the GRU reads (MAX_CONTEXT_LENGTH).
    pub context_len: usize,
}

/// Every learned tensor, each a flat row-major `f32` buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Query tower's item embedding, `vocab x dim`.
    pub query_embedding: Vec<f32>,
    /// GRU input kernel, `dim x 3·dim`, gates z, r, h.
    pub kernel: Vec<f32>,
    /// GRU recurrent kernel, `dim x 3·dim`.
    pub recurrent_kernel: Vec<f32>,
    /// GRU input bias, `3·dim`.
    pub input_bias: Vec<f32>,
    /// GRU recurrent bias, `3·dim`.
    pub recurrent_bias: Vec<f32>,
    /// Candidate tower's item embedding, `vocab x dim`.
    pub candidate_embedding: Vec<f32>,
}

/// The tensor names, in the order of `Params::tensors`.
pub const TENSOR_NAMES: [&str; 6] = [
    "query_embedding",
    "gru_kernel",
    "gru_recurrent_kernel",
    "gru_input_bias",
    "gru_recurrent_bias",
    "candidate_embedding",
];

impl Params {
    pub fn zeros(cfg: &ModelConfig) -> Params {
        let (v, d) = (cfg.vocab_size, cfg.dim);
        Params {
            query_embedding: vec![0.0; v * d],
            kernel: vec![0.0; d * 3 * d],
            recurrent_kernel: vec![0.0; d * 3 * d],
            input_bias: vec![0.0; 3 * d],
            recurrent_bias: vec![0.0; 3 * d],
            candidate_embedding: vec![0.0; v * d],
        }
    }

    /// The shape of each tensor, in the order of `tensors`.
    pub fn shapes(cfg: &ModelConfig) -> [Vec<usize>; 6] {
        let (v, d) = (cfg.vocab_size, cfg.dim);
        [
            vec![v, d],
            vec![d, 3 * d],
            vec![d, 3 * d],
            vec![3 * d],
            vec![3 * d],
            vec![v, d],
        ]
    }

    pub fn tensors(&self) -> [&[f32]; 6] {
        [
            &self.query_embedding,
            &self.kernel,
            &self.recurrent_kernel,
            &self.input_bias,
            &self.recurrent_bias,
            &self.candidate_embedding,
        ]
    }

    pub fn tensors_mut(&mut self) -> [&mut Vec<f32>; 6] {
        [
            &mut self.query_embedding,
            &mut self.kernel,
            &mut self.recurrent_kernel,
            &mut self.input_bias,
            &mut self.recurrent_bias,
            &mut self.candidate_embedding,
        ]
    }

    /// Keras' initialisers: embeddings uniform(−0.05, 0.05), the input
    /// kernel Glorot-uniform, the recurrent kernel orthogonal, biases zero.
    /// Deterministic from `seed`.
    pub fn init(cfg: &ModelConfig, seed: u64) -> Params {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (v, d) = (cfg.vocab_size, cfg.dim);
        let mut p = Params::zeros(cfg);
        let uniform = |rng: &mut ChaCha8Rng, n: usize, limit: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-limit..limit)).collect()
        };
        p.query_embedding = uniform(&mut rng, v * d, 0.05);
        let glorot = (6.0 / (d + 3 * d) as f64).sqrt() as f32;
        p.kernel = uniform(&mut rng, d * 3 * d, glorot);
        p.recurrent_kernel = orthogonal(&mut rng, d, 3 * d);
        p.candidate_embedding = uniform(&mut rng, v * d, 0.05);
        p
    }
}

/// Keras' `Orthogonal` initialiser for a `rows x cols` matrix: the Q of a
/// Gaussian matrix's QR decomposition (signs fixed by R's diagonal),
/// transposed when the matrix is wide, so its rows (or columns) are
/// orthonormal.
pub fn orthogonal(rng: &mut impl Rng, rows: usize, cols: usize) -> Vec<f32> {
    let (tall, short) = (rows.max(cols), rows.min(cols));
    // Columns of a tall x short Gaussian matrix, orthonormalised by modified
    // Gram-Schmidt in f64 (this equals Householder QR with R's diagonal made
    // positive, which is Keras' sign fix).
    let mut q: Vec<Vec<f64>> = (0..short)
        .map(|_| (0..tall).map(|_| StandardNormal.sample(rng)).collect())
        .collect();
    for j in 0..short {
        let (done, rest) = q.split_at_mut(j);
        let col = &mut rest[0];
        for prev in done.iter() {
            let dot: f64 = col.iter().zip(prev).map(|(a, b)| a * b).sum();
            for (x, p) in col.iter_mut().zip(prev) {
                *x -= dot * p;
            }
        }
        let norm = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        for x in col.iter_mut() {
            *x /= norm;
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // Tall: element (r, c) is q's column c at row r; wide: transposed.
            out[r * cols + c] = if rows >= cols { q[c][r] } else { q[r][c] } as f32;
        }
    }
    out
}

/// Options of the forward pass that change the model's maths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Padding steps leave the GRU state unchanged (off in parity mode).
    pub mask_padding: bool,
    /// Candidates are scored with the query tower's item embedding (one
    /// table for both towers, GRU4Rec's "constrained embedding").
    pub shared_embeddings: bool,
}

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
}

/// A keep-mask scaled by `1 / (1 - p)`, from a counter-based hash so it is
/// the same whatever the thread count.
pub fn dropout_mask(out: &mut Vec<f32>, n: usize, p: f32, seed: u64) {
    let keep = 1.0 / (1.0 - p);
    let threshold = (p as f64 * u32::MAX as f64) as u32;
    out.clear();
    out.extend((0..n as u64).map(|i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if (z >> 32) as u32 >= threshold {
            keep
        } else {
            0.0
        }
    }));
}

/// Seconds spent in each phase of `loss_and_grads`, summed over calls (for
/// benchmarks: the cost of reading the clock is negligible at this size).
#[derive(Debug, Default, Clone, Copy)]
pub struct PhaseTimes {
    /// Input projection and the GRU over the batch.
    pub forward: f64,
    /// Candidate gather and the fused softmax cross-entropy, both directions.
    pub loss: f64,
    /// GRU backward, gradient scatter and the projection's backward.
    pub backward: f64,
}

/// Buffers of one batch's forward and backward pass, reused across steps.
#[derive(Default)]
pub struct Workspace {
    pub times: PhaseTimes,
    projected: Vec<f32>,
    input_mask: Vec<f32>,
    dropped_embedding: Vec<f32>,
    output_mask: Vec<f32>,
    column_ids: Vec<u32>,
    column_bias: Vec<f32>,
    d_projected: Vec<f32>,
    queries: Vec<f32>,
    candidates: Vec<f32>,
    d_queries: Vec<f32>,
    d_candidates: Vec<f32>,
    chunks: Vec<ChunkState>,
}

/// One thread's share of the batch: a run of consecutive rows.
#[derive(Default)]
struct ChunkState {
    rows: std::ops::Range<usize>,
    /// The chunk's context ids, step-major (`steps x rows`).
    ids: Vec<u32>,
    mask: Vec<f32>,
    cache: GruCache,
    scratch: GruGradScratch,
    d_projected: Vec<f32>,
    d_recurrent: Vec<f32>,
    d_recurrent_bias: Vec<f32>,
}

impl ChunkState {
    /// Lays out the chunk's ids step-major and runs the GRU.
    fn forward(
        &mut self,
        batch: &Batch,
        projected: &[f32],
        params: &Params,
        cfg: &ModelConfig,
        opts: ForwardOptions,
    ) {
        let (l, d) = (cfg.context_len, cfg.dim);
        let rows = self.rows.len();
        self.ids.resize(l * rows, 0);
        for (i, b) in self.rows.clone().enumerate() {
            for (t, &id) in batch.contexts[b * l..(b + 1) * l].iter().enumerate() {
                self.ids[t * rows + i] = id;
            }
        }
        if opts.mask_padding {
            self.mask.clear();
            self.mask
                .extend(self.ids.iter().map(|&id| if id == 0 { 0.0 } else { 1.0 }));
        }
        let shape = GruShape {
            batch: rows,
            steps: l,
            hidden: d,
        };
        let mask = opts.mask_padding.then_some(self.mask.as_slice());
        gru::forward(
            projected,
            &self.ids,
            &params.recurrent_kernel,
            &params.recurrent_bias,
            mask,
            shape,
            &mut self.cache,
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

/// The model's maths over one batch.
pub struct Model<'a> {
    pub cfg: &'a ModelConfig,
    pub params: &'a Params,
    pub opts: ForwardOptions,
    pub threads: usize,
}

impl Model<'_> {
    /// Projects the input table (through `dropped_embedding` when input
    /// dropout is on) and splits the batch into per-thread chunks.
    fn prepare(&self, ws: &mut Workspace, batch: &Batch, input_dropout: bool) {
        let (v, d) = (self.cfg.vocab_size, self.cfg.dim);
        ws.projected.resize(v * 3 * d, 0.0);
        let table = if input_dropout {
            &ws.dropped_embedding
        } else {
            &self.params.query_embedding
        };
        embedding::project_table(
            table,
            &self.params.kernel,
            &self.params.input_bias,
            d,
            &mut ws.projected,
            self.threads,
        );
        let ranges = row_ranges(batch.size, self.threads);
        ws.chunks.resize_with(ranges.len(), ChunkState::default);
        ws.chunks.truncate(ranges.len());
        for (c, r) in ws.chunks.iter_mut().zip(ranges) {
            c.rows = r;
        }
    }

    fn run_chunks(&self, ws: &mut Workspace, batch: &Batch, out: &mut Vec<f32>) {
        let d = self.cfg.dim;
        let projected = &ws.projected;
        ws.chunks
            .par_iter_mut()
            .for_each(|c| c.forward(batch, projected, self.params, self.cfg, self.opts));
        out.resize(batch.size * d, 0.0);
        for c in &ws.chunks {
            let shape = GruShape {
                batch: c.rows.len(),
                steps: self.cfg.context_len,
                hidden: d,
            };
            out[c.rows.start * d..c.rows.end * d].copy_from_slice(c.cache.output(shape));
        }
    }

    /// The query tower: writes `batch.size x dim` embeddings into `out`.
    pub fn encode(&self, ws: &mut Workspace, batch: &Batch, out: &mut Vec<f32>) {
        self.prepare(ws, batch, false);
        self.run_chunks(ws, batch, out);
    }

    /// The table candidates are scored against.
    fn candidate_table(&self) -> &[f32] {
        if self.opts.shared_embeddings {
            &self.params.query_embedding
        } else {
            &self.params.candidate_embedding
        }
    }

    /// The in-batch softmax loss summed over the batch's rows, without
    /// gradients (the reference's val_loss, times the batch size).
    pub fn loss_sum(&self, ws: &mut Workspace, batch: &Batch) -> f64 {
        let d = self.cfg.dim;
        let mut queries = std::mem::take(&mut ws.queries);
        self.encode(ws, batch, &mut queries);
        ws.candidates.resize(batch.size * d, 0.0);
        embedding::gather_rows(self.candidate_table(), d, &batch.labels, &mut ws.candidates);
        let inputs = LossInputs {
            q: &queries,
            c: &ws.candidates,
            rows: batch.size,
            cols: batch.size,
            d,
            column_ids: None,
            column_bias: None,
        };
        let loss = loss::in_batch_softmax(&inputs, None, self.threads);
        ws.queries = queries;
        loss
    }

    /// Forward and backward of the mean loss: writes the gradient of every
    /// parameter into `grads` and returns the mean loss. `StepOptions::default()`
    /// is the reference's step.
    pub fn loss_and_grads(
        &self,
        ws: &mut Workspace,
        batch: &Batch,
        grads: &mut Params,
        step: &StepOptions,
    ) -> f64 {
        let (v, d, l) = (self.cfg.vocab_size, self.cfg.dim, self.cfg.context_len);
        let n = batch.size;
        let t0 = std::time::Instant::now();
        let input_dropout = step.dropout_input > 0.0;
        if input_dropout {
            dropout_mask(
                &mut ws.input_mask,
                v * d,
                step.dropout_input,
                step.dropout_seed,
            );
            ws.dropped_embedding.clear();
            ws.dropped_embedding.extend(
                self.params
                    .query_embedding
                    .iter()
                    .zip(&ws.input_mask)
                    .map(|(e, m)| e * m),
            );
        }
        let mut queries = std::mem::take(&mut ws.queries);
        self.prepare(ws, batch, input_dropout);
        self.run_chunks(ws, batch, &mut queries);
        let output_dropout = step.dropout_output > 0.0;
        if output_dropout {
            dropout_mask(
                &mut ws.output_mask,
                n * d,
                step.dropout_output,
                step.dropout_seed ^ 0x5EED_0F0D_D0D0_5EED,
            );
            for (q, m) in queries.iter_mut().zip(&ws.output_mask) {
                *q *= m;
            }
        }
        let t1 = std::time::Instant::now();

        // Columns: the batch's labels, then the shared extra negatives.
        ws.column_ids.clear();
        ws.column_ids.extend_from_slice(&batch.labels);
        ws.column_ids.extend_from_slice(step.negatives);
        let cols = ws.column_ids.len();
        ws.candidates.resize(cols * d, 0.0);
        embedding::gather_rows(
            self.candidate_table(),
            d,
            &ws.column_ids,
            &mut ws.candidates,
        );
        let with_bias = step.in_batch_log_q.is_some() || step.negatives_log_q.is_some();
        if with_bias {
            ws.column_bias.clear();
            for (j, &id) in ws.column_ids.iter().enumerate() {
                let log_q = if j < n {
                    step.in_batch_log_q
                } else {
                    step.negatives_log_q
                };
                ws.column_bias.push(log_q.map_or(0.0, |q| -q[id as usize]));
            }
        }
        ws.d_queries.resize(n * d, 0.0);
        ws.d_candidates.resize(cols * d, 0.0);
        let inputs = LossInputs {
            q: &queries,
            c: &ws.candidates,
            rows: n,
            cols,
            d,
            column_ids: step
                .remove_accidental_hits
                .then_some(ws.column_ids.as_slice()),
            column_bias: with_bias.then_some(ws.column_bias.as_slice()),
        };
        let scale = 1.0 / n.max(1) as f32;
        let loss_sum = loss::in_batch_softmax(
            &inputs,
            Some(LossGrads {
                dq: &mut ws.d_queries,
                dc: &mut ws.d_candidates,
                scale,
            }),
            self.threads,
        );
        ws.queries = queries;
        if output_dropout {
            for (g, m) in ws.d_queries.iter_mut().zip(&ws.output_mask) {
                *g *= m;
            }
        }
        let t2 = std::time::Instant::now();

        grads.candidate_embedding.fill(0.0);
        embedding::scatter_add_rows(
            &mut grads.candidate_embedding,
            d,
            &ws.column_ids,
            &ws.d_candidates,
        );

        let d_queries = &ws.d_queries;
        let params = self.params;
        let mask_padding = self.opts.mask_padding;
        ws.chunks.par_iter_mut().for_each(|c| {
            let rows = c.rows.len();
            let shape = GruShape {
                batch: rows,
                steps: l,
                hidden: d,
            };
            c.d_recurrent.clear();
            c.d_recurrent.resize(d * 3 * d, 0.0);
            c.d_recurrent_bias.clear();
            c.d_recurrent_bias.resize(3 * d, 0.0);
            c.d_projected.clear();
            c.d_projected.resize(v * 3 * d, 0.0);
            let mask = mask_padding.then_some(c.mask.as_slice());
            gru::backward(
                &d_queries[c.rows.start * d..c.rows.end * d],
                &c.ids,
                &params.recurrent_kernel,
                mask,
                shape,
                &c.cache,
                &mut c.d_projected,
                &mut c.d_recurrent,
                &mut c.d_recurrent_bias,
                &mut c.scratch,
            );
        });

        ws.d_projected.clear();
        ws.d_projected.resize(v * 3 * d, 0.0);
        grads.recurrent_kernel.fill(0.0);
        grads.recurrent_bias.fill(0.0);
        for c in &ws.chunks {
            kernels::add_assign(&mut ws.d_projected, &c.d_projected);
            kernels::add_assign(&mut grads.recurrent_kernel, &c.d_recurrent);
            kernels::add_assign(&mut grads.recurrent_bias, &c.d_recurrent_bias);
        }
        grads.query_embedding.fill(0.0);
        grads.kernel.fill(0.0);
        grads.input_bias.fill(0.0);
        let table = if input_dropout {
            &ws.dropped_embedding
        } else {
            &params.query_embedding
        };
        embedding::project_table_backward(
            table,
            &params.kernel,
            &ws.d_projected,
            d,
            &mut grads.query_embedding,
            &mut grads.kernel,
            &mut grads.input_bias,
            self.threads,
        );
        if input_dropout {
            for (g, m) in grads.query_embedding.iter_mut().zip(&ws.input_mask) {
                *g *= m;
            }
        }
        if self.opts.shared_embeddings {
            kernels::add_assign(&mut grads.query_embedding, &grads.candidate_embedding);
            grads.candidate_embedding.fill(0.0);
        }
        let t3 = std::time::Instant::now();
        ws.times.forward += (t1 - t0).as_secs_f64();
        ws.times.loss += (t2 - t1).as_secs_f64();
        ws.times.backward += (t3 - t2).as_secs_f64();
        loss_sum * scale as f64
    }
}
