//! The learned tensors of the two-tower model and their Keras initialisers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::embedding::SparseRows;
use super::spec::ModelSpec;

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
    /// The SASRec tower's weights, one flat vector (`sasrec::layout`);
    /// empty for the GRU, whose tensors are empty for SASRec.
    pub tower_weights: Vec<f32>,
}

/// The tensor names, in the order of `Params::tensors`.
pub const TENSOR_NAMES: [&str; 7] = [
    "query_embedding",
    "gru_kernel",
    "gru_recurrent_kernel",
    "gru_input_bias",
    "gru_recurrent_bias",
    "candidate_embedding",
    "sasrec_weights",
];

impl Params {
    pub fn zeros(spec: &ModelSpec) -> Params {
        let [qe, k, rk, ib, rb, ce, tw] =
            Params::shapes(spec).map(|s| vec![0.0; s.iter().product()]);
        Params {
            query_embedding: qe,
            kernel: k,
            recurrent_kernel: rk,
            input_bias: ib,
            recurrent_bias: rb,
            candidate_embedding: ce,
            tower_weights: tw,
        }
    }

    /// No tensors at all: the optimiser's moments of a model loaded for
    /// inference only (`checkpoint::load_for_inference`).
    pub fn empty() -> Params {
        Params {
            query_embedding: Vec::new(),
            kernel: Vec::new(),
            recurrent_kernel: Vec::new(),
            input_bias: Vec::new(),
            recurrent_bias: Vec::new(),
            candidate_embedding: Vec::new(),
            tower_weights: Vec::new(),
        }
    }

    /// The shape of each tensor, in the order of `tensors`: a tower's
    /// tensors are empty (`[0]`) in a model of another tower
    /// (`Tower::tensor_shapes`).
    pub fn shapes(spec: &ModelSpec) -> [Vec<usize>; 7] {
        let (v, d) = (spec.vocab_size, spec.dim);
        let [kernel, recurrent_kernel, input_bias, recurrent_bias, tower_weights] =
            spec.tower.tensor_shapes(spec);
        [
            vec![v, d],
            kernel,
            recurrent_kernel,
            input_bias,
            recurrent_bias,
            vec![v, d],
            tower_weights,
        ]
    }

    pub fn tensors(&self) -> [&[f32]; 7] {
        [
            &self.query_embedding,
            &self.kernel,
            &self.recurrent_kernel,
            &self.input_bias,
            &self.recurrent_bias,
            &self.candidate_embedding,
            &self.tower_weights,
        ]
    }

    pub fn tensors_mut(&mut self) -> [&mut Vec<f32>; 7] {
        [
            &mut self.query_embedding,
            &mut self.kernel,
            &mut self.recurrent_kernel,
            &mut self.input_bias,
            &mut self.recurrent_bias,
            &mut self.candidate_embedding,
            &mut self.tower_weights,
        ]
    }

    /// Keras' initialisers: embeddings uniform(−0.05, 0.05), the tower's
    /// tensors as it says (`Tower::init_tensors`), biases zero.
    /// Deterministic from `seed`.
    pub fn init(spec: &ModelSpec, seed: u64) -> Params {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (v, d) = (spec.vocab_size, spec.dim);
        let mut p = Params::zeros(spec);
        let uniform = |rng: &mut ChaCha8Rng, n: usize, limit: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-limit..limit)).collect()
        };
        p.query_embedding = uniform(&mut rng, v * d, 0.05);
        spec.tower.init_tensors(spec, &mut rng, &mut p);
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

/// The gradient of every parameter: the GRU's tensors dense, each embedding
/// table as the rows the batch touched (so a step's cost follows the batch,
/// not the catalogue).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Grads {
    /// Query tower's item embedding: touched rows of `vocab x dim`.
    pub query_embedding: SparseRows,
    /// `dim x 3·dim`.
    pub kernel: Vec<f32>,
    /// `dim x 3·dim`.
    pub recurrent_kernel: Vec<f32>,
    /// `3·dim`.
    pub input_bias: Vec<f32>,
    /// `3·dim`.
    pub recurrent_bias: Vec<f32>,
    /// Candidate tower's item embedding: touched rows (none with shared
    /// embeddings, whose candidate gradient goes to the query table).
    pub candidate_embedding: SparseRows,
    /// The SASRec tower's weights, dense.
    pub tower_weights: Vec<f32>,
}

impl Grads {
    pub fn zeros(spec: &ModelSpec) -> Grads {
        let p = Params::zeros(&ModelSpec {
            vocab_size: 0,
            ..*spec
        });
        Grads {
            kernel: p.kernel,
            recurrent_kernel: p.recurrent_kernel,
            input_bias: p.input_bias,
            recurrent_bias: p.recurrent_bias,
            tower_weights: p.tower_weights,
            ..Grads::default()
        }
    }

    /// The same gradient with every table dense (in `Params`' layout).
    pub fn to_dense(&self, spec: &ModelSpec) -> Params {
        let mut p = Params::zeros(spec);
        self.query_embedding
            .add_to_dense(&mut p.query_embedding, spec.dim);
        self.candidate_embedding
            .add_to_dense(&mut p.candidate_embedding, spec.dim);
        p.kernel.clone_from(&self.kernel);
        p.recurrent_kernel.clone_from(&self.recurrent_kernel);
        p.input_bias.clone_from(&self.input_bias);
        p.recurrent_bias.clone_from(&self.recurrent_bias);
        p.tower_weights.clone_from(&self.tower_weights);
        p
    }
}

/// One tensor's gradient, which says how the tensor learns: an embedding
/// table's is the rows a step touched, a tower tensor's is dense.
/// Optimisers step each kind their own way (`train::optimizer`).
#[derive(Debug, Clone, Copy)]
pub enum Gradient<'a> {
    /// A `vocab x dim` table, learned row by row.
    Rows(&'a SparseRows),
    /// A tower's weights, learned whole.
    Dense(&'a [f32]),
}

impl Grads {
    /// Every tensor's gradient, in the order of `TENSOR_NAMES`: with the
    /// names and `Params::tensors`, the registry optimisers walk without
    /// naming a tensor.
    pub fn tensors(&self) -> [Gradient<'_>; 7] {
        [
            Gradient::Rows(&self.query_embedding),
            Gradient::Dense(&self.kernel),
            Gradient::Dense(&self.recurrent_kernel),
            Gradient::Dense(&self.input_bias),
            Gradient::Dense(&self.recurrent_bias),
            Gradient::Rows(&self.candidate_embedding),
            Gradient::Dense(&self.tower_weights),
        ]
    }
}
