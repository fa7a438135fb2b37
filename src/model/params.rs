//! The learned tensors of the two-tower model and their Keras initialisers:
//! a named-tensor store. The two embedding tables are every model's; the
//! query tower declares the rest (`Tower::tensors`: each tensor's name and
//! shape) and `Params::tower` holds them in that order, so a new tower
//! adds its tensors without a change here. `Params::tensor_defs` is the
//! registry: every tensor of a spec's model, in the one order
//! `Params::tensors`, `Grads::tensors`, the optimiser's state and the
//! model file follow.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::embedding::SparseRows;
use super::spec::ModelSpec;

/// The query tower's item embedding's name (in the model file and the
/// optimiser's buffers, `adam_m.query_embedding`).
pub const QUERY_EMBEDDING: &str = "query_embedding";
/// The candidate tower's item embedding's name.
pub const CANDIDATE_EMBEDDING: &str = "candidate_embedding";

/// One learned tensor: its name (the model file's, and the optimiser
/// names its state after it: `adam_m.{name}`) and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDef {
    pub name: &'static str,
    pub shape: Vec<usize>,
}

impl TensorDef {
    pub fn new(name: &'static str, shape: Vec<usize>) -> TensorDef {
        TensorDef { name, shape }
    }

    /// Its number of values.
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every learned tensor, each a flat row-major `f32` buffer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    /// Query tower's item embedding, `vocab x dim`.
    pub query_embedding: Vec<f32>,
    /// Candidate tower's item embedding, `vocab x dim`.
    pub candidate_embedding: Vec<f32>,
    /// The query tower's tensors, in the order and shapes it declares
    /// (`Tower::tensors`); the tower reads them by name through a view
    /// of its own (`gru::GruTensors`, `sasrec::weights`).
    pub tower: Vec<Vec<f32>>,
}

impl Params {
    /// Every tensor of a model of `spec`, in the registry's order: the
    /// query embedding, the tower's (`Tower::tensors`), the candidate
    /// embedding. `tensors`, `Grads::tensors`, the optimiser's state and
    /// the model file all follow it.
    pub fn tensor_defs(spec: &ModelSpec) -> Vec<TensorDef> {
        let table = vec![spec.vocab_size, spec.dim];
        let mut defs = vec![TensorDef::new(QUERY_EMBEDDING, table.clone())];
        defs.extend(spec.tower.tensors(spec));
        defs.push(TensorDef::new(CANDIDATE_EMBEDDING, table));
        defs
    }

    pub fn zeros(spec: &ModelSpec) -> Params {
        let table = spec.vocab_size * spec.dim;
        Params {
            query_embedding: vec![0.0; table],
            candidate_embedding: vec![0.0; table],
            tower: zero_tower(spec),
        }
    }

    /// Every tensor, in the order of `tensor_defs`.
    pub fn tensors(&self) -> impl Iterator<Item = &[f32]> {
        std::iter::once(self.query_embedding.as_slice())
            .chain(self.tower.iter().map(Vec::as_slice))
            .chain(std::iter::once(self.candidate_embedding.as_slice()))
    }

    /// Every tensor, writable, in the order of `tensor_defs`.
    pub fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        std::iter::once(&mut self.query_embedding)
            .chain(self.tower.iter_mut())
            .chain(std::iter::once(&mut self.candidate_embedding))
    }

    /// Keras' initialisers: embeddings uniform(−0.05, 0.05), the tower's
    /// tensors as it says (`Tower::init_tensors`), biases zero.
    /// Deterministic from `seed`: one generator draws the query
    /// embedding, then the tower's tensors, then the candidate embedding.
    pub fn init(spec: &ModelSpec, seed: u64) -> Params {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (v, d) = (spec.vocab_size, spec.dim);
        let mut p = Params::zeros(spec);
        let uniform = |rng: &mut ChaCha8Rng, n: usize, limit: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-limit..limit)).collect()
        };
        p.query_embedding = uniform(&mut rng, v * d, 0.05);
        spec.tower.init_tensors(spec, &mut rng, &mut p.tower);
        p.candidate_embedding = uniform(&mut rng, v * d, 0.05);
        p
    }
}

/// The tower's tensors of a model of `spec`, zero.
fn zero_tower(spec: &ModelSpec) -> Vec<Vec<f32>> {
    spec.tower
        .tensors(spec)
        .iter()
        .map(|t| vec![0.0; t.size()])
        .collect()
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

/// The gradient of every parameter: the tower's tensors dense, each
/// embedding table as the rows the batch touched (so a step's cost follows
/// the batch, not the catalogue).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Grads {
    /// Query tower's item embedding: touched rows of `vocab x dim`.
    pub query_embedding: SparseRows,
    /// Candidate tower's item embedding: touched rows (none with shared
    /// embeddings, whose candidate gradient goes to the query table).
    pub candidate_embedding: SparseRows,
    /// The tower's tensors' gradients, dense, as `Params::tower`.
    pub tower: Vec<Vec<f32>>,
}

impl Grads {
    pub fn zeros(spec: &ModelSpec) -> Grads {
        Grads {
            tower: zero_tower(spec),
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
        p.tower.clone_from(&self.tower);
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
    /// Every tensor's gradient, in the order of `Params::tensor_defs`:
    /// with the names and `Params::tensors`, the registry optimisers walk
    /// without naming a tensor.
    pub fn tensors(&self) -> impl Iterator<Item = Gradient<'_>> {
        std::iter::once(Gradient::Rows(&self.query_embedding))
            .chain(self.tower.iter().map(|g| Gradient::Dense(g)))
            .chain(std::iter::once(Gradient::Rows(&self.candidate_embedding)))
    }
}
