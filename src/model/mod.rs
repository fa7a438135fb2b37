//! The two-tower model: parameters, their Keras initialisers, and the forward
//! and backward pass of one batch (query tower = item embedding + GRU,
//! candidate tower = item embedding, in-batch softmax between them).

pub mod embedding;
pub mod gru;
pub mod io;
pub mod kernels;
pub mod loss;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Batch;
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
    fn prepare(&self, ws: &mut Workspace, batch: &Batch) {
        let (v, d) = (self.cfg.vocab_size, self.cfg.dim);
        ws.projected.resize(v * 3 * d, 0.0);
        embedding::project_table(
            &self.params.query_embedding,
            &self.params.kernel,
            &self.params.input_bias,
            d,
            &mut ws.projected,
            self.threads,
        );
        let ranges = row_ranges(batch.size, self.threads);
        ws.chunks.resize_with(ranges.len(), ChunkState::default);
        for (c, r) in ws.chunks.iter_mut().zip(ranges) {
            c.rows = r;
        }
    }

    /// The query tower: writes `batch.size x dim` embeddings into `out`.
    pub fn encode(&self, ws: &mut Workspace, batch: &Batch, out: &mut Vec<f32>) {
        let d = self.cfg.dim;
        self.prepare(ws, batch);
        let projected = &ws.projected;
        ws.chunks
            .par_iter_mut()
            .for_each(|c| c.forward(batch, projected, self.params, self.cfg, self.opts));
        out.resize(batch.size * d, 0.0);
        let shape = |c: &ChunkState| GruShape {
            batch: c.rows.len(),
            steps: self.cfg.context_len,
            hidden: d,
        };
        for c in &ws.chunks {
            out[c.rows.start * d..c.rows.end * d].copy_from_slice(c.cache.output(shape(c)));
        }
    }

    /// The in-batch softmax loss summed over the batch's rows, without
    /// gradients (the reference's val_loss, times the batch size).
    pub fn loss_sum(&self, ws: &mut Workspace, batch: &Batch) -> f64 {
        let d = self.cfg.dim;
        let mut queries = std::mem::take(&mut ws.queries);
        self.encode(ws, batch, &mut queries);
        ws.candidates.resize(batch.size * d, 0.0);
        embedding::gather_rows(
            &self.params.candidate_embedding,
            d,
            &batch.labels,
            &mut ws.candidates,
        );
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

    /// Forward and backward of the mean in-batch softmax loss: writes the
    /// gradient of every parameter into `grads` and returns the mean loss.
    pub fn loss_and_grads(&self, ws: &mut Workspace, batch: &Batch, grads: &mut Params) -> f64 {
        let (v, d, l) = (self.cfg.vocab_size, self.cfg.dim, self.cfg.context_len);
        let n = batch.size;
        let t0 = std::time::Instant::now();
        let mut queries = std::mem::take(&mut ws.queries);
        self.encode(ws, batch, &mut queries);
        let t1 = std::time::Instant::now();
        ws.candidates.resize(n * d, 0.0);
        embedding::gather_rows(
            &self.params.candidate_embedding,
            d,
            &batch.labels,
            &mut ws.candidates,
        );
        ws.d_queries.resize(n * d, 0.0);
        ws.d_candidates.resize(n * d, 0.0);
        let inputs = LossInputs {
            q: &queries,
            c: &ws.candidates,
            rows: n,
            cols: n,
            d,
            column_ids: None,
            column_bias: None,
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
        let t2 = std::time::Instant::now();

        grads.candidate_embedding.fill(0.0);
        embedding::scatter_add_rows(
            &mut grads.candidate_embedding,
            d,
            &batch.labels,
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
        embedding::project_table_backward(
            &params.query_embedding,
            &params.kernel,
            &ws.d_projected,
            d,
            &mut grads.query_embedding,
            &mut grads.kernel,
            &mut grads.input_bias,
            self.threads,
        );
        let t3 = std::time::Instant::now();
        ws.times.forward += (t1 - t0).as_secs_f64();
        ws.times.loss += (t2 - t1).as_secs_f64();
        ws.times.backward += (t3 - t2).as_secs_f64();
        loss_sum * scale as f64
    }
}
