//! The SASRec tower's sizes and its flat weight vector's layout: where each
//! block's tensors sit, and their initialisation.

use std::ops::Range;

pub use crate::model::spec::Activation;

/// LayerNorm's epsilon (added to the variance).
pub const LN_EPS: f32 = 1e-8;

/// The tower's sizes. `dim % heads == 0`. The position table has
/// `positions` rows; step `t` of a window reads row `first_position + t`,
/// so a batch whose windows all start (or end) with padding can run on
/// just its real columns: fewer `steps`, the same positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SasRecShape {
    pub batch: usize,
    pub steps: usize,
    pub positions: usize,
    pub first_position: usize,
    pub dim: usize,
    pub heads: usize,
    pub blocks: usize,
    pub activation: Activation,
}

impl SasRecShape {
    /// Tokens: `batch·steps`.
    pub fn tokens(&self) -> usize {
        self.batch * self.steps
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    pub(super) fn validate(&self) {
        assert!(
            self.first_position + self.steps <= self.positions,
            "sasrec: steps {}..{} outside a position table of {}",
            self.first_position,
            self.first_position + self.steps,
            self.positions
        );
        assert!(
            self.dim > 0 && self.heads > 0 && self.dim.is_multiple_of(self.heads),
            "sasrec: dim {} must be a positive multiple of heads {}",
            self.dim,
            self.heads
        );
    }
}

/// The tensors of one block in their order in the weight vector.
pub const BLOCK_TENSORS: [&str; 12] = [
    "ln1.gain",
    "ln1.bias",
    "attn.w_qkv",
    "attn.b_qkv",
    "attn.w_out",
    "attn.b_out",
    "ln2.gain",
    "ln2.bias",
    "ffn.w1",
    "ffn.b1",
    "ffn.w2",
    "ffn.b2",
];

/// `(rows, cols)` of each of `BLOCK_TENSORS`; vectors are `1 x n`.
pub(super) fn block_shapes(d: usize) -> [(usize, usize); 12] {
    [
        (1, d),
        (1, d),
        (d, 3 * d),
        (1, 3 * d),
        (d, d),
        (1, d),
        (1, d),
        (1, d),
        (d, d),
        (1, d),
        (d, d),
        (1, d),
    ]
}

pub(super) fn block_sizes(d: usize) -> [usize; 12] {
    block_shapes(d).map(|(r, c)| r * c)
}

/// Weights of one block: `6·D² + 10·D`.
pub fn block_len(dim: usize) -> usize {
    block_sizes(dim).iter().sum()
}

/// The length of the flat weight vector.
pub fn weight_count(steps: usize, dim: usize, blocks: usize) -> usize {
    steps * dim + blocks * block_len(dim) + 2 * dim
}

/// One tensor's place in the flat weight vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSlot {
    /// `pos_embedding`, `block{i}.{BLOCK_TENSORS[j]}`, `final_ln.gain`,
    /// `final_ln.bias`.
    pub name: String,
    pub range: Range<usize>,
    pub rows: usize,
    pub cols: usize,
}

/// Every tensor of the weight vector, in order, covering it exactly.
pub fn layout(steps: usize, dim: usize, blocks: usize) -> Vec<TensorSlot> {
    let mut slots = Vec::new();
    let mut at = 0;
    let mut push = |name: String, rows: usize, cols: usize| {
        slots.push(TensorSlot {
            name,
            range: at..at + rows * cols,
            rows,
            cols,
        });
        at += rows * cols;
    };
    push("pos_embedding".into(), steps, dim);
    for i in 0..blocks {
        for (name, (rows, cols)) in BLOCK_TENSORS.iter().zip(block_shapes(dim)) {
            push(format!("block{i}.{name}"), rows, cols);
        }
    }
    push("final_ln.gain".into(), 1, dim);
    push("final_ln.bias".into(), 1, dim);
    slots
}

/// Fresh weights: Glorot-uniform matrices (`±√(6 / (fan_in + fan_out))`,
/// with `W_qkv` taken as three `D x D` projections), LayerNorm gains 1,
/// every bias 0, position embedding uniform in `±0.05`.
pub fn init_weights(steps: usize, dim: usize, blocks: usize, rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut w = vec![0.0f32; weight_count(steps, dim, blocks)];
    for slot in layout(steps, dim, blocks) {
        let v = &mut w[slot.range];
        if slot.name == "pos_embedding" {
            v.iter_mut()
                .for_each(|x| *x = rng.random_range(-0.05..0.05));
        } else if slot.name.ends_with("gain") {
            v.fill(1.0);
        } else if slot.rows > 1 {
            let limit = (6.0 / (2 * dim) as f32).sqrt();
            v.iter_mut()
                .for_each(|x| *x = rng.random_range(-limit..limit));
        }
    }
    w
}

/// One block's tensors (weights or their gradients).
pub(super) struct Block<T> {
    pub(super) ln1_gain: T,
    pub(super) ln1_bias: T,
    pub(super) w_qkv: T,
    pub(super) b_qkv: T,
    pub(super) w_out: T,
    pub(super) b_out: T,
    pub(super) ln2_gain: T,
    pub(super) ln2_bias: T,
    pub(super) w1: T,
    pub(super) b1: T,
    pub(super) w2: T,
    pub(super) b2: T,
}

impl<T> Block<T> {
    pub(super) fn from_parts(parts: [T; 12]) -> Self {
        let [ln1_gain, ln1_bias, w_qkv, b_qkv, w_out, b_out, ln2_gain, ln2_bias, w1, b1, w2, b2] =
            parts;
        Block {
            ln1_gain,
            ln1_bias,
            w_qkv,
            b_qkv,
            w_out,
            b_out,
            ln2_gain,
            ln2_bias,
            w1,
            b1,
            w2,
            b2,
        }
    }
}

/// Where block `i` and the final LayerNorm start.
pub(super) fn block_range(s: SasRecShape, i: usize) -> Range<usize> {
    let start = s.positions * s.dim + i * block_len(s.dim);
    start..start + block_len(s.dim)
}

pub(super) fn final_start(s: SasRecShape) -> usize {
    s.positions * s.dim + s.blocks * block_len(s.dim)
}

pub(super) fn block(w: &[f32], s: SasRecShape, i: usize) -> Block<&[f32]> {
    let mut rest = &w[block_range(s, i)];
    Block::from_parts(block_sizes(s.dim).map(|n| {
        let (a, b) = rest.split_at(n);
        rest = b;
        a
    }))
}

pub(super) fn block_mut(w: &mut [f32], s: SasRecShape, i: usize) -> Block<&mut [f32]> {
    let mut rest = &mut w[block_range(s, i)];
    Block::from_parts(block_sizes(s.dim).map(|n| {
        let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
        rest = b;
        a
    }))
}
