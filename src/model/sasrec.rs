//! SASRec's query tower (Kang & McAuley 2018, in the pre-LayerNorm form of
//! the PyTorch SASRec / gSASRec implementations): causal multi-head
//! self-attention blocks over a batch of item sequences, forward and
//! backward, llm.c-style: plain `f32` slices, matrix products through
//! `kernels::matmul`, row-parallel loops through rayon, every buffer kept in
//! a `SasRecCache` that is reused across calls.
//!
//! Written by hand because the rest of the engine is: the model's maths is
//! a set of forward/backward functions over flat buffers (see `gru`), and no
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
//! thread count, and the dropout masks come from `super::dropout_mask`
//! (counter-based), seeded per place and block from the call's `seed`.

use std::ops::Range;

use rayon::prelude::*;

use super::{dropout_backward, dropout_forward, dropout_mask};
use crate::kernels::{add_column_sums, matmul, matmul_block, Mat, Output};

/// LayerNorm's epsilon (added to the variance).
pub const LN_EPS: f32 = 1e-8;

/// The feed-forward's activation.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Gelu,
}

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

    fn validate(&self) {
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
fn block_shapes(d: usize) -> [(usize, usize); 12] {
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

fn block_sizes(d: usize) -> [usize; 12] {
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
struct Block<T> {
    ln1_gain: T,
    ln1_bias: T,
    w_qkv: T,
    b_qkv: T,
    w_out: T,
    b_out: T,
    ln2_gain: T,
    ln2_bias: T,
    w1: T,
    b1: T,
    w2: T,
    b2: T,
}

impl<T> Block<T> {
    fn from_parts(parts: [T; 12]) -> Self {
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
fn block_range(s: SasRecShape, i: usize) -> Range<usize> {
    let start = s.positions * s.dim + i * block_len(s.dim);
    start..start + block_len(s.dim)
}

fn final_start(s: SasRecShape) -> usize {
    s.positions * s.dim + s.blocks * block_len(s.dim)
}

fn block(w: &[f32], s: SasRecShape, i: usize) -> Block<&[f32]> {
    let mut rest = &w[block_range(s, i)];
    Block::from_parts(block_sizes(s.dim).map(|n| {
        let (a, b) = rest.split_at(n);
        rest = b;
        a
    }))
}

fn block_mut(w: &mut [f32], s: SasRecShape, i: usize) -> Block<&mut [f32]> {
    let mut rest = &mut w[block_range(s, i)];
    Block::from_parts(block_sizes(s.dim).map(|n| {
        let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
        rest = b;
        a
    }))
}

/// What `forward` keeps for `backward`, and both passes' scratch buffers;
/// reused across calls (resized, never shrunk).
#[derive(Default)]
pub struct SasRecCache {
    /// The shape, dropout rate and seed of the last forward.
    last: Option<(SasRecShape, f32, u64)>,
    /// The residual stream entering each block and the final LayerNorm:
    /// `(blocks + 1) x N x D`.
    xs: Vec<f32>,
    /// Per block, the stream after the attention residual: `blocks x N x D`.
    x_mid: Vec<f32>,
    /// Per block, LN1's output, mean and 1/std (`N x D`, `N`, `N`).
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    /// Per block, q, k and v head-major within each row:
    /// `[part q/k/v][head][step][D/H]`, `L·3D` per row.
    qkv_heads: Vec<f32>,
    /// Per block, the attention probabilities: `H` matrices of `L x L` per
    /// row, each holding its span's `n x n` (see `span`) at its start.
    att: Vec<f32>,
    /// Per block, the attention output before `W_out`, `N x D`.
    y: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    /// Per block, the feed-forward's pre-activation and activation.
    h1: Vec<f32>,
    act: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    /// `N x D`: the output.
    out: Vec<f32>,
    /// Dropout keep-masks (empty without dropout): the embedding's, and per
    /// block the attention output's and the feed-forward's.
    emb_mask: Vec<f32>,
    attn_masks: Vec<Vec<f32>>,
    ffn_masks: Vec<Vec<f32>>,
    /// Scratch: `N x 3D`, `N x D` (head-major), `N x D`.
    qkv: Vec<f32>,
    y_heads: Vec<f32>,
    tmp: Vec<f32>,
    /// Backward scratch.
    dx: Vec<f32>,
    d_tmp: Vec<f32>,
    d_tmp2: Vec<f32>,
    d_ln: Vec<f32>,
    d_qkv: Vec<f32>,
    d_qkv_heads: Vec<f32>,
    d_y_heads: Vec<f32>,
    d_att: Vec<f32>,
}

impl SasRecCache {
    /// The last forward's output, `N x D`, token (b, t) at `(b·L + t)·D`.
    pub fn output(&self) -> &[f32] {
        &self.out
    }

    fn resize_forward(&mut self, s: SasRecShape, dropout: bool) {
        let (n, d, nb) = (s.tokens(), s.dim, s.blocks);
        let nd = n * d;
        self.xs.resize((nb + 1) * nd, 0.0);
        for v in [
            &mut self.x_mid,
            &mut self.ln1,
            &mut self.y,
            &mut self.ln2,
            &mut self.h1,
            &mut self.act,
        ] {
            v.resize(nb * nd, 0.0);
        }
        for v in [
            &mut self.ln1_mean,
            &mut self.ln1_rstd,
            &mut self.ln2_mean,
            &mut self.ln2_rstd,
        ] {
            v.resize(nb * n, 0.0);
        }
        self.qkv_heads.resize(nb * 3 * nd, 0.0);
        self.att
            .resize(nb * s.batch * s.heads * s.steps * s.steps, 0.0);
        self.lnf_mean.resize(n, 0.0);
        self.lnf_rstd.resize(n, 0.0);
        self.out.resize(nd, 0.0);
        self.qkv.resize(3 * nd, 0.0);
        self.y_heads.resize(nd, 0.0);
        self.tmp.resize(nd, 0.0);
        if dropout {
            self.attn_masks.resize_with(nb, Vec::new);
            self.ffn_masks.resize_with(nb, Vec::new);
        }
    }

    fn resize_backward(&mut self, s: SasRecShape) {
        let nd = s.tokens() * s.dim;
        for v in [
            &mut self.dx,
            &mut self.d_tmp,
            &mut self.d_tmp2,
            &mut self.d_ln,
            &mut self.d_y_heads,
        ] {
            v.resize(nd, 0.0);
        }
        self.d_qkv.resize(3 * nd, 0.0);
        self.d_qkv_heads.resize(3 * nd, 0.0);
        self.d_att.resize(s.batch * s.steps * s.steps, 0.0);
    }
}

/// Where a dropout mask is applied.
#[derive(Clone, Copy)]
enum Place {
    Embedding = 1,
    Attention = 2,
    FeedForward = 3,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of one dropout mask: hashed, so masks of different places are
/// not shifted copies of one counter stream.
fn mask_seed(seed: u64, place: Place, block: usize) -> u64 {
    splitmix(seed ^ splitmix(((place as u64) << 32) | block as u64))
}

/// Rows per parallel task of the element-wise passes (fixed, so the
/// results do not depend on the thread count, though these are row-local
/// anyway).
const ROWS: usize = 64;

/// `out = (x − mean)·rstd·gain + bias` per row of `d`; keeps mean and rstd.
fn layer_norm_forward(
    x: &[f32],
    gain: &[f32],
    bias: &[f32],
    d: usize,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    out.par_chunks_mut(ROWS * d)
        .zip(mean.par_chunks_mut(ROWS))
        .zip(rstd.par_chunks_mut(ROWS))
        .zip(x.par_chunks(ROWS * d))
        .for_each(|(((out, mean), rstd), x)| {
            for (((o, m), r), x) in out
                .chunks_exact_mut(d)
                .zip(mean)
                .zip(rstd)
                .zip(x.chunks_exact(d))
            {
                let mu = x.iter().sum::<f32>() / d as f32;
                let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / d as f32;
                let rs = 1.0 / (var + LN_EPS).sqrt();
                for j in 0..d {
                    o[j] = (x[j] - mu) * rs * gain[j] + bias[j];
                }
                *m = mu;
                *r = rs;
            }
        });
}

/// The backward of `layer_norm_forward`: `d_x += ∂`, `d_gain += ∂`,
/// `d_bias += ∂`; `scratch` (`N x D`) holds `d_out ⊙ x̂`.
#[allow(clippy::too_many_arguments)]
fn layer_norm_backward(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    gain: &[f32],
    d_out: &[f32],
    d: usize,
    d_x: &mut [f32],
    d_gain: &mut [f32],
    d_bias: &mut [f32],
    scratch: &mut [f32],
) {
    d_x.par_chunks_mut(ROWS * d)
        .zip(scratch.par_chunks_mut(ROWS * d))
        .zip(x.par_chunks(ROWS * d))
        .zip(d_out.par_chunks(ROWS * d))
        .zip(mean.par_chunks(ROWS))
        .zip(rstd.par_chunks(ROWS))
        .for_each(|(((((d_x, scratch), x), d_out), mean), rstd)| {
            for (i, (&mu, &rs)) in mean.iter().zip(rstd).enumerate() {
                let row = i * d..(i + 1) * d;
                let (x, g) = (&x[row.clone()], &d_out[row.clone()]);
                let sc = &mut scratch[row.clone()];
                let (mut m1, mut m2) = (0.0f32, 0.0f32);
                for j in 0..d {
                    let xhat = (x[j] - mu) * rs;
                    let dxhat = g[j] * gain[j];
                    sc[j] = g[j] * xhat;
                    m1 += dxhat;
                    m2 += dxhat * xhat;
                }
                let (m1, m2) = (m1 / d as f32, m2 / d as f32);
                let dx = &mut d_x[row];
                for j in 0..d {
                    let xhat = (x[j] - mu) * rs;
                    dx[j] += rs * (g[j] * gain[j] - m1 - xhat * m2);
                }
            }
        });
    add_column_sums(d_gain, scratch, d);
    add_column_sums(d_bias, d_out, d);
}

/// `out (rows x cols_out) = x (rows x cols_in) · w + b`.
fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    cols_in: usize,
    out: &mut [f32],
    threads: usize,
) {
    let cols_out = b.len();
    let rows = x.len() / cols_in;
    for row in out.chunks_exact_mut(cols_out) {
        row.copy_from_slice(b);
    }
    matmul(
        out,
        Mat::new(x, rows, cols_in),
        Mat::new(w, cols_in, cols_out),
        Output::Accumulate,
        threads,
    );
}

/// The backward of `linear_forward`: `d_w += xᵀ·d_out`, `d_b += Σ d_out`,
/// and `d_x = d_out·wᵀ`.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    x: &[f32],
    w: &[f32],
    d_out: &[f32],
    cols_in: usize,
    d_x: &mut [f32],
    d_w: &mut [f32],
    d_b: &mut [f32],
    threads: usize,
) {
    let cols_out = d_b.len();
    let rows = x.len() / cols_in;
    matmul(
        d_w,
        Mat::new(x, rows, cols_in).t(),
        Mat::new(d_out, rows, cols_out),
        Output::Accumulate,
        threads,
    );
    add_column_sums(d_b, d_out, cols_out);
    matmul(
        d_x,
        Mat::new(d_out, rows, cols_out),
        Mat::new(w, cols_in, cols_out).t(),
        Output::Overwrite,
        threads,
    );
}

/// `x0 = (input·√D + pos[t]) ⊙ m`.
fn embed_forward(s: SasRecShape, input: &[f32], pos: &[f32], mask: &[f32], x0: &mut [f32]) {
    let (l, d) = (s.steps, s.dim);
    let scale = (d as f32).sqrt();
    x0.par_chunks_mut(l * d)
        .zip(input.par_chunks(l * d))
        .zip(mask.par_chunks(l))
        .for_each(|((x0, input), mask)| {
            for t in 0..l {
                let (x0, input) = (&mut x0[t * d..(t + 1) * d], &input[t * d..(t + 1) * d]);
                let p = &pos[t * d..(t + 1) * d];
                for j in 0..d {
                    x0[j] = (input[j] * scale + p[j]) * mask[t];
                }
            }
        });
}

/// The backward of `embed_forward`: `d_input = d_x0 ⊙ m · √D`,
/// `d_pos[t] += Σ_b d_x0 ⊙ m` (rows in order).
fn embed_backward(
    s: SasRecShape,
    d_x0: &[f32],
    mask: &[f32],
    d_input: &mut [f32],
    d_pos: &mut [f32],
) {
    let (l, d) = (s.steps, s.dim);
    let scale = (d as f32).sqrt();
    for ((d_x0, d_input), m) in d_x0
        .chunks_exact(d)
        .zip(d_input.chunks_exact_mut(d))
        .zip(mask)
    {
        for j in 0..d {
            d_input[j] = d_x0[j] * m * scale;
        }
    }
    for (b, rows) in d_x0.chunks_exact(l * d).enumerate() {
        for t in 0..l {
            let m = mask[b * l + t];
            if m != 0.0 {
                for (p, &g) in d_pos[t * d..(t + 1) * d]
                    .iter_mut()
                    .zip(&rows[t * d..(t + 1) * d])
                {
                    *p += g * m;
                }
            }
        }
    }
}

/// The steps from a row's first real item to its last (`start`, `len`);
/// `None` for a row of padding only. Attention works on this span only.
fn span(mask: &[f32]) -> Option<(usize, usize)> {
    let first = mask.iter().position(|&m| m != 0.0)?;
    let last = mask.iter().rposition(|&m| m != 0.0)?;
    Some((first, last + 1 - first))
}

/// Blocks of `CAUSAL_BLOCK` query steps `(first, end)` over a span of `n`:
/// block `[r0, r1)` only needs the keys before `r1`, so causal attention
/// computes about half of each `n x n` product instead of all of it.
fn causal_blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(CAUSAL_BLOCK)
        .map(move |r0| (r0, (r0 + CAUSAL_BLOCK).min(n)))
}

/// Query steps per block of `causal_blocks`: small enough to skip most of
/// the future, large enough for the products to run at speed. The unit
/// tests' rows are a few steps long, so there blocks are 4 steps: every
/// check then runs over several blocks and a partial last one.
#[cfg(not(test))]
const CAUSAL_BLOCK: usize = 64;
#[cfg(test)]
const CAUSAL_BLOCK: usize = 4;

/// One row's `steps x (chunks·w)` buffer to chunk-major
/// `[chunk][step][w]`.
fn to_heads(src: &[f32], dst: &mut [f32], steps: usize, chunks: usize, w: usize) {
    for t in 0..steps {
        for c in 0..chunks {
            dst[(c * steps + t) * w..(c * steps + t + 1) * w]
                .copy_from_slice(&src[(t * chunks + c) * w..(t * chunks + c + 1) * w]);
        }
    }
}

/// The inverse of `to_heads`.
fn from_heads(src: &[f32], dst: &mut [f32], steps: usize, chunks: usize, w: usize) {
    for t in 0..steps {
        for c in 0..chunks {
            dst[(t * chunks + c) * w..(t * chunks + c + 1) * w]
                .copy_from_slice(&src[(c * steps + t) * w..(c * steps + t + 1) * w]);
        }
    }
}

mod simd {
    use crate::kernels::{dispatch, fast_exp, tanh};

    dispatch! {
        /// Scores (`n x n`, unscaled) to causal masked softmax in place:
        /// row `t` over the real steps `u ≤ t`; a padding query's row is 0.
        fn softmax_causal(p: &mut [f32], mask: &[f32], n: usize, scale: f32) {
            for t in 0..n {
                let row = &mut p[t * n..(t + 1) * n];
                if mask[t] == 0.0 {
                    row.fill(0.0);
                    continue;
                }
                let (seen, future) = row.split_at_mut(t + 1);
                future.fill(0.0);
                let mut max = f32::NEG_INFINITY;
                for (s, &m) in seen.iter_mut().zip(mask) {
                    *s *= scale;
                    if m != 0.0 {
                        max = max.max(*s);
                    }
                }
                for (s, &m) in seen.iter_mut().zip(mask) {
                    let e = fast_exp(*s - max);
                    *s = if m != 0.0 { e } else { 0.0 };
                }
                let sum: f32 = seen.iter().sum();
                let inv = 1.0 / sum;
                for s in seen.iter_mut() {
                    *s *= inv;
                }
            }
        }
    }

    dispatch! {
        /// `dp` (the gradient of the probabilities `p`, `n x n`) to the
        /// gradient of the unscaled scores, in place.
        fn softmax_causal_backward(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
            for t in 0..n {
                let p = &p[t * n..t * n + t + 1];
                let (dp, future) = dp[t * n..(t + 1) * n].split_at_mut(t + 1);
                future.fill(0.0);
                let c: f32 = p.iter().zip(dp.iter()).map(|(p, g)| p * g).sum();
                for (g, &p) in dp.iter_mut().zip(p) {
                    *g = p * (*g - c) * scale;
                }
            }
        }
    }

    const GELU_C: f32 = 0.797_884_6; // √(2/π)
    const GELU_A: f32 = 0.044_715;

    dispatch! {
        fn relu(h: &[f32], out: &mut [f32]) {
            for (o, &x) in out.iter_mut().zip(h) {
                *o = x.max(0.0);
            }
        }
    }

    dispatch! {
        /// `g ⊙= relu'(h)`.
        fn relu_backward(h: &[f32], g: &mut [f32]) {
            for (g, &x) in g.iter_mut().zip(h) {
                *g = if x > 0.0 { *g } else { 0.0 };
            }
        }
    }

    dispatch! {
        fn gelu(h: &[f32], out: &mut [f32]) {
            for (o, &x) in out.iter_mut().zip(h) {
                let th = tanh(GELU_C * (x + GELU_A * x * x * x));
                *o = 0.5 * x * (1.0 + th);
            }
        }
    }

    dispatch! {
        /// `g ⊙= gelu'(h)`.
        fn gelu_backward(h: &[f32], g: &mut [f32]) {
            for (g, &x) in g.iter_mut().zip(h) {
                let th = tanh(GELU_C * (x + GELU_A * x * x * x));
                let dth = (1.0 - th * th) * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
                *g *= 0.5 * (1.0 + th) + 0.5 * x * dth;
            }
        }
    }
}

/// Causal masked multi-head attention over `qkv` (`N x 3D`, row-major):
/// writes `qkv_heads` and `att` (kept for the backward), the output `y`
/// (`N x D`), using `y_heads` (`N x D`) as scratch. Rows in parallel.
/// Block `i` of `forward`: from the stream `c.xs[i]` to `c.xs[i + 1]`,
/// keeping what `backward` needs.
#[allow(clippy::too_many_arguments)]
fn block_forward(
    s: SasRecShape,
    weights: &[f32],
    i: usize,
    mask: &[f32],
    dropout: f32,
    seed: u64,
    threads: usize,
    c: &mut SasRecCache,
) {
    let (n, d) = (s.tokens(), s.dim);
    let nd = n * d;
    let dropping = dropout > 0.0;
    let w = block(weights, s, i);
    let tok = i * nd..(i + 1) * nd;
    let row = i * n..(i + 1) * n;
    let (done, next) = c.xs.split_at_mut((i + 1) * nd);
    let (x, x_next) = (&done[i * nd..], &mut next[..nd]);
    let a = &mut c.ln1[tok.clone()];
    layer_norm_forward(
        x,
        w.ln1_gain,
        w.ln1_bias,
        d,
        a,
        &mut c.ln1_mean[row.clone()],
        &mut c.ln1_rstd[row.clone()],
    );
    linear_forward(a, w.w_qkv, w.b_qkv, d, &mut c.qkv, threads);
    let y = &mut c.y[tok.clone()];
    attention_forward(
        s,
        &c.qkv,
        mask,
        &mut c.qkv_heads[3 * i * nd..3 * (i + 1) * nd],
        &mut c.att[i * s.batch * s.heads * s.steps * s.steps..]
            [..s.batch * s.heads * s.steps * s.steps],
        &mut c.y_heads,
        y,
    );
    linear_forward(y, w.w_out, w.b_out, d, &mut c.tmp, threads);
    if dropping {
        let m = &mut c.attn_masks[i];
        dropout_mask(m, nd, dropout, mask_seed(seed, Place::Attention, i));
        dropout_forward(&mut c.tmp, m);
    }
    let x_mid = &mut c.x_mid[tok.clone()];
    add_rows(x, &c.tmp, None, d, x_mid);
    let f = &mut c.ln2[tok.clone()];
    layer_norm_forward(
        x_mid,
        w.ln2_gain,
        w.ln2_bias,
        d,
        f,
        &mut c.ln2_mean[row.clone()],
        &mut c.ln2_rstd[row],
    );
    feed_forward(
        s.activation,
        f,
        w.w1,
        w.b1,
        w.w2,
        w.b2,
        &mut c.h1[tok.clone()],
        &mut c.act[tok],
        &mut c.tmp,
        threads,
    );
    if dropping {
        let m = &mut c.ffn_masks[i];
        dropout_mask(m, nd, dropout, mask_seed(seed, Place::FeedForward, i));
        dropout_forward(&mut c.tmp, m);
    }
    add_rows(x_mid, &c.tmp, Some(mask), d, x_next);
}

fn attention_forward(
    s: SasRecShape,
    qkv: &[f32],
    mask: &[f32],
    qkv_heads: &mut [f32],
    att: &mut [f32],
    y_heads: &mut [f32],
    y: &mut [f32],
) {
    let (l, d, h, dh) = (s.steps, s.dim, s.heads, s.head_dim());
    let scale = 1.0 / (dh as f32).sqrt();
    qkv.par_chunks(3 * l * d)
        .zip(qkv_heads.par_chunks_mut(3 * l * d))
        .zip(att.par_chunks_mut(h * l * l))
        .zip(y_heads.par_chunks_mut(l * d))
        .zip(y.par_chunks_mut(l * d))
        .zip(mask.par_chunks(l))
        .for_each(|(((((qkv, qh), att), yh), y), mask)| {
            to_heads(qkv, qh, l, 3 * h, dh);
            let Some((lo, n)) = span(mask) else {
                y.fill(0.0);
                return;
            };
            let part = |p: usize, head: usize| &qh[((p * h + head) * l + lo) * dh..][..n * dh];
            for head in 0..h {
                let (q, k, v) = (part(0, head), part(1, head), part(2, head));
                let p = &mut att[head * l * l..][..n * n];
                // Scores of each block of queries against the keys up to
                // its last one: the rest of a row is the future.
                for (r0, r1) in causal_blocks(n) {
                    matmul_block(
                        &mut p[r0 * n..],
                        n,
                        Mat::new(&q[r0 * dh..r1 * dh], r1 - r0, dh),
                        Mat::new(&k[..r1 * dh], r1, dh).t(),
                        Output::Overwrite,
                        1,
                    );
                }
                simd::softmax_causal(p, &mask[lo..lo + n], n, scale);
                let yh = &mut yh[head * l * dh..(head + 1) * l * dh];
                yh[..lo * dh].fill(0.0);
                yh[(lo + n) * dh..].fill(0.0);
                let yh = &mut yh[lo * dh..(lo + n) * dh];
                for (r0, r1) in causal_blocks(n) {
                    matmul(
                        &mut yh[r0 * dh..r1 * dh],
                        Mat::block(&p[r0 * n..], r1 - r0, r1, n),
                        Mat::new(&v[..r1 * dh], r1, dh),
                        Output::Overwrite,
                        1,
                    );
                }
            }
            from_heads(yh, y, l, h, dh);
        });
}

/// The backward of `attention_forward`: from `d_y` (`N x D`) to `d_qkv`
/// (`N x 3D`, overwritten), with `d_y_heads` (`N x D`), `d_att`
/// (`B x L x L`) and `d_qkv_heads` (`N x 3D`) as scratch.
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    s: SasRecShape,
    d_y: &[f32],
    mask: &[f32],
    qkv_heads: &[f32],
    att: &[f32],
    d_y_heads: &mut [f32],
    d_att: &mut [f32],
    d_qkv_heads: &mut [f32],
    d_qkv: &mut [f32],
) {
    let (l, d, h, dh) = (s.steps, s.dim, s.heads, s.head_dim());
    let scale = 1.0 / (dh as f32).sqrt();
    d_y.par_chunks(l * d)
        .zip(d_y_heads.par_chunks_mut(l * d))
        .zip(qkv_heads.par_chunks(3 * l * d))
        .zip(att.par_chunks(h * l * l))
        .zip(d_att.par_chunks_mut(l * l))
        .zip(d_qkv_heads.par_chunks_mut(3 * l * d))
        .zip(d_qkv.par_chunks_mut(3 * l * d))
        .zip(mask.par_chunks(l))
        .for_each(|(((((((d_y, dyh), qh), att), ds), dqh), d_qkv), mask)| {
            let Some((lo, n)) = span(mask) else {
                d_qkv.fill(0.0);
                return;
            };
            to_heads(d_y, dyh, l, h, dh);
            dqh.fill(0.0);
            let part = |p: usize, head: usize| &qh[((p * h + head) * l + lo) * dh..][..n * dh];
            let span_of = |p: usize, head: usize| {
                ((p * h + head) * l + lo) * dh..((p * h + head) * l + lo + n) * dh
            };
            for head in 0..h {
                let (q, k, v) = (part(0, head), part(1, head), part(2, head));
                let dy = &dyh[(head * l + lo) * dh..][..n * dh];
                let p = &att[head * l * l..][..n * n];
                let ds = &mut ds[..n * n];
                // Block by block of queries, over the keys up to the
                // block's last one (the probabilities beyond are zero).
                // d_v and d_k sum over query blocks into `dqh`, zeroed above.
                for (r0, r1) in causal_blocks(n) {
                    let p_block = Mat::block(&p[r0 * n..], r1 - r0, r1, n);
                    let dy_block = Mat::new(&dy[r0 * dh..r1 * dh], r1 - r0, dh);
                    matmul(
                        &mut dqh[span_of(2, head)][..r1 * dh],
                        p_block.t(),
                        dy_block,
                        Output::Accumulate,
                        1,
                    );
                    matmul_block(
                        &mut ds[r0 * n..],
                        n,
                        dy_block,
                        Mat::new(&v[..r1 * dh], r1, dh).t(),
                        Output::Overwrite,
                        1,
                    );
                }
                simd::softmax_causal_backward(p, ds, n, scale);
                for (r0, r1) in causal_blocks(n) {
                    let ds_block = Mat::block(&ds[r0 * n..], r1 - r0, r1, n);
                    matmul(
                        &mut dqh[span_of(0, head)][r0 * dh..r1 * dh],
                        ds_block,
                        Mat::new(&k[..r1 * dh], r1, dh),
                        Output::Overwrite,
                        1,
                    );
                    matmul(
                        &mut dqh[span_of(1, head)][..r1 * dh],
                        ds_block.t(),
                        Mat::new(&q[r0 * dh..r1 * dh], r1 - r0, dh),
                        Output::Accumulate,
                        1,
                    );
                }
            }
            from_heads(dqh, d_qkv, l, 3 * h, dh);
        });
}

/// `act(h)` into `out`, in parallel blocks.
fn activate(kind: Activation, h: &[f32], out: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK)
        .zip(h.par_chunks(CHUNK))
        .for_each(|(out, h)| match kind {
            Activation::Relu => simd::relu(h, out),
            Activation::Gelu => simd::gelu(h, out),
        });
}

/// `g ⊙= act'(h)`, in parallel blocks.
fn activate_backward(kind: Activation, h: &[f32], g: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    g.par_chunks_mut(CHUNK)
        .zip(h.par_chunks(CHUNK))
        .for_each(|(g, h)| match kind {
            Activation::Relu => simd::relu_backward(h, g),
            Activation::Gelu => simd::gelu_backward(h, g),
        });
}

/// The feed-forward: `h1 = f·W1 + b1`, `act = act(h1)`, `out = act·W2 + b2`.
#[allow(clippy::too_many_arguments)]
fn feed_forward(
    kind: Activation,
    f: &[f32],
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    h1: &mut [f32],
    act: &mut [f32],
    out: &mut [f32],
    threads: usize,
) {
    let d = b1.len();
    linear_forward(f, w1, b1, d, h1, threads);
    activate(kind, h1, act);
    linear_forward(act, w2, b2, d, out, threads);
}

/// The backward of `feed_forward`: weight gradients added into `grads`'
/// `w1, b1, w2, b2`; `d_f` overwritten; `d_act` is `N x D` scratch.
#[allow(clippy::too_many_arguments)]
fn feed_forward_backward(
    kind: Activation,
    f: &[f32],
    h1: &[f32],
    act: &[f32],
    w1: &[f32],
    w2: &[f32],
    d_out: &[f32],
    grads: [&mut [f32]; 4],
    d_act: &mut [f32],
    d_f: &mut [f32],
    threads: usize,
) {
    let [d_w1, d_b1, d_w2, d_b2] = grads;
    let d = d_b1.len();
    linear_backward(act, w2, d_out, d, d_act, d_w2, d_b2, threads);
    activate_backward(kind, h1, d_act);
    linear_backward(f, w1, d_act, d, d_f, d_w1, d_b1, threads);
}

/// `out = (a + b) ⊙ m` per token (`m` one value per row of `d`), or
/// `a + b` without a mask.
fn add_rows(a: &[f32], b: &[f32], mask: Option<&[f32]>, d: usize, out: &mut [f32]) {
    out.par_chunks_mut(ROWS * d)
        .zip(a.par_chunks(ROWS * d))
        .zip(b.par_chunks(ROWS * d))
        .enumerate()
        .for_each(|(c, ((out, a), b))| {
            for (i, ((o, a), b)) in out
                .chunks_exact_mut(d)
                .zip(a.chunks_exact(d))
                .zip(b.chunks_exact(d))
                .enumerate()
            {
                let m = mask.map_or(1.0, |m| m[c * ROWS + i]);
                for j in 0..d {
                    o[j] = (a[j] + b[j]) * m;
                }
            }
        });
}

/// `x ⊙= m` per token.
fn mask_rows(x: &mut [f32], mask: &[f32], d: usize) {
    for (x, &m) in x.chunks_exact_mut(d).zip(mask) {
        if m != 1.0 {
            x.iter_mut().for_each(|v| *v *= m);
        }
    }
}

/// The shapes `forward` and `forward_at` are given.
fn check_forward(s: SasRecShape, weights: &[f32], input: &[f32], mask: &[f32]) {
    s.validate();
    let n = s.tokens();
    assert_eq!(
        weights.len(),
        weight_count(s.positions, s.dim, s.blocks),
        "sasrec: weights"
    );
    assert_eq!(
        input.len(),
        n * s.dim,
        "sasrec: input is batch x steps x dim"
    );
    assert_eq!(mask.len(), n, "sasrec: mask is batch x steps");
}

/// The forward pass: `input` (`N x D` item embeddings), `mask` (`N`, 1 real
/// / 0 padding, either side), dropout rate `dropout` (0 = none) with masks
/// from `seed`. The output is `cache.output()`; the cache also holds what
/// `backward` needs. `threads` is passed to the big matmuls; the row-parallel
/// loops run on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    s: SasRecShape,
    weights: &[f32],
    input: &[f32],
    mask: &[f32],
    dropout: f32,
    seed: u64,
    threads: usize,
    cache: &mut SasRecCache,
) {
    check_forward(s, weights, input, mask);
    let (n, d) = (s.tokens(), s.dim);
    let nd = n * d;
    assert!((0.0..1.0).contains(&dropout), "sasrec: dropout {dropout}");
    let dropping = dropout > 0.0;
    cache.resize_forward(s, dropping);
    cache.last = Some((s, dropout, seed));
    let c = cache;

    let pos = &weights[s.first_position * d..(s.first_position + s.steps) * d];
    embed_forward(s, input, pos, mask, &mut c.xs[..nd]);
    if dropping {
        dropout_mask(
            &mut c.emb_mask,
            nd,
            dropout,
            mask_seed(seed, Place::Embedding, 0),
        );
        dropout_forward(&mut c.xs[..nd], &c.emb_mask);
    }
    for i in 0..s.blocks {
        block_forward(s, weights, i, mask, dropout, seed, threads, c);
    }
    let fin = final_start(s);
    layer_norm_forward(
        &c.xs[s.blocks * nd..],
        &weights[fin..fin + d],
        &weights[fin + d..fin + 2 * d],
        d,
        &mut c.out,
        &mut c.lnf_mean,
        &mut c.lnf_rstd,
    );
    mask_rows(&mut c.out, mask, d);
}

/// Inference at one step per row: the output `forward` gives at step
/// `at[b]` of row `b` (a real step), without dropout, `B x D` into `out`.
/// Only the newest step of a history is a query, and no later layer reads
/// the last block's other steps: that block computes keys and values at
/// every step but attention, its feed-forward and the final LayerNorm at
/// the asked steps only, which saves about a third of a two-block tower.
/// The maths is `forward`'s; its products run over other shapes, so the
/// two agree to rounding, not bit for bit. Not followed by `backward`.
#[allow(clippy::too_many_arguments)]
pub fn forward_at(
    s: SasRecShape,
    weights: &[f32],
    input: &[f32],
    mask: &[f32],
    at: &[usize],
    threads: usize,
    cache: &mut SasRecCache,
    out: &mut Vec<f32>,
) {
    check_forward(s, weights, input, mask);
    let (n, d, l, b) = (s.tokens(), s.dim, s.steps, s.batch);
    let nd = n * d;
    assert_eq!(at.len(), b, "sasrec: one step per row");
    for (row, &t) in at.iter().enumerate() {
        assert!(
            t < l && mask[row * l + t] != 0.0,
            "sasrec: row {row} asks for step {t}, not a real one"
        );
    }
    cache.resize_forward(s, false);
    cache.last = None;
    let c = cache;
    let pos = &weights[s.first_position * d..(s.first_position + s.steps) * d];
    embed_forward(s, input, pos, mask, &mut c.xs[..nd]);
    let last = s.blocks - 1;
    for i in 0..last {
        block_forward(s, weights, i, mask, 0.0, 0, threads, c);
    }
    let w = block(weights, s, last);
    let x = &c.xs[last * nd..(last + 1) * nd];
    let a = &mut c.ln1[..nd];
    layer_norm_forward(
        x,
        w.ln1_gain,
        w.ln1_bias,
        d,
        a,
        &mut c.ln1_mean[..n],
        &mut c.ln1_rstd[..n],
    );
    linear_forward(a, w.w_qkv, w.b_qkv, d, &mut c.qkv, threads);
    // One query per row over the real steps up to it: `softmax_causal`'s
    // row `t`, and its product with the values.
    let (h, dh) = (s.heads, s.head_dim());
    let scale = 1.0 / (dh as f32).sqrt();
    let mut y = vec![0.0f32; b * d];
    let qkv = &c.qkv;
    y.par_chunks_mut(d).enumerate().for_each(|(row, y)| {
        let t = at[row];
        let m = &mask[row * l..row * l + t + 1];
        let token = |u: usize| &qkv[(row * l + u) * 3 * d..(row * l + u + 1) * 3 * d];
        let mut p = vec![0.0f32; t + 1];
        for head in 0..h {
            let cols = head * dh..(head + 1) * dh;
            let q = &token(t)[cols.clone()];
            let mut max = f32::NEG_INFINITY;
            for (u, pu) in p.iter_mut().enumerate() {
                if m[u] != 0.0 {
                    let k = &token(u)[d + cols.start..d + cols.end];
                    *pu = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                    max = max.max(*pu);
                }
            }
            let mut sum = 0.0f32;
            for (u, pu) in p.iter_mut().enumerate() {
                *pu = if m[u] != 0.0 {
                    crate::kernels::fast_exp(*pu - max)
                } else {
                    0.0
                };
                sum += *pu;
            }
            let yh = &mut y[cols.clone()];
            for (u, &pu) in p.iter().enumerate() {
                if pu != 0.0 {
                    let v = &token(u)[2 * d + cols.start..2 * d + cols.end];
                    for (o, &vj) in yh.iter_mut().zip(v) {
                        *o += pu / sum * vj;
                    }
                }
            }
        }
    });
    // The rest of the block and the final LayerNorm on the `B` query steps.
    let mut attn = vec![0.0f32; b * d];
    linear_forward(&y, w.w_out, w.b_out, d, &mut attn, threads);
    let mut x_mid = vec![0.0f32; b * d];
    for (row, &t) in at.iter().enumerate() {
        let x_t = &x[(row * l + t) * d..(row * l + t + 1) * d];
        for ((o, &xj), &aj) in x_mid[row * d..(row + 1) * d]
            .iter_mut()
            .zip(x_t)
            .zip(&attn[row * d..])
        {
            *o = xj + aj;
        }
    }
    let (mut mean, mut rstd) = (vec![0.0f32; b], vec![0.0f32; b]);
    let mut f = vec![0.0f32; b * d];
    layer_norm_forward(
        &x_mid, w.ln2_gain, w.ln2_bias, d, &mut f, &mut mean, &mut rstd,
    );
    let (mut h1, mut act, mut g) = (
        vec![0.0f32; b * d],
        vec![0.0f32; b * d],
        vec![0.0f32; b * d],
    );
    feed_forward(
        s.activation,
        &f,
        w.w1,
        w.b1,
        w.w2,
        w.b2,
        &mut h1,
        &mut act,
        &mut g,
        threads,
    );
    let mut x_out = vec![0.0f32; b * d];
    add_rows(&x_mid, &g, None, d, &mut x_out);
    let fin = final_start(s);
    out.clear();
    out.resize(b * d, 0.0);
    layer_norm_forward(
        &x_out,
        &weights[fin..fin + d],
        &weights[fin + d..fin + 2 * d],
        d,
        out,
        &mut mean,
        &mut rstd,
    );
}

/// The backward pass of the last `forward` (same shape, weights, mask,
/// dropout and seed; it reads the cache): from `d_output` (`N x D`) to
/// `d_weights` (the weight layout, overwritten) and `d_input` (`N x D`,
/// overwritten; 0 at padding).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    s: SasRecShape,
    weights: &[f32],
    d_output: &[f32],
    mask: &[f32],
    dropout: f32,
    seed: u64,
    threads: usize,
    cache: &mut SasRecCache,
    d_weights: &mut [f32],
    d_input: &mut [f32],
) {
    let (n, d) = (s.tokens(), s.dim);
    let nd = n * d;
    assert_eq!(
        cache.last,
        Some((s, dropout, seed)),
        "sasrec: backward must follow a forward of the same shape, dropout and seed"
    );
    assert_eq!(
        weights.len(),
        weight_count(s.positions, d, s.blocks),
        "sasrec: weights"
    );
    assert_eq!(d_weights.len(), weights.len(), "sasrec: d_weights");
    assert_eq!(d_output.len(), nd, "sasrec: d_output");
    assert_eq!(d_input.len(), nd, "sasrec: d_input");
    assert_eq!(mask.len(), n, "sasrec: mask");
    let dropping = dropout > 0.0;
    cache.resize_backward(s);
    let c = cache;
    d_weights.fill(0.0);

    // output = LN_final(x) ⊙ m.
    c.d_tmp.copy_from_slice(d_output);
    mask_rows(&mut c.d_tmp, mask, d);
    c.dx.fill(0.0);
    let fin = final_start(s);
    let (d_gain, d_bias) = d_weights[fin..fin + 2 * d].split_at_mut(d);
    layer_norm_backward(
        &c.xs[s.blocks * nd..],
        &c.lnf_mean,
        &c.lnf_rstd,
        &weights[fin..fin + d],
        &c.d_tmp,
        d,
        &mut c.dx,
        d_gain,
        d_bias,
        &mut c.d_ln,
    );
    for i in (0..s.blocks).rev() {
        let w = block(weights, s, i);
        let g = block_mut(d_weights, s, i);
        let tok = i * nd..(i + 1) * nd;
        let row = i * n..(i + 1) * n;
        // x_next = (x_mid + drop(ffn)) ⊙ m: dx becomes d x_mid's direct part.
        mask_rows(&mut c.dx, mask, d);
        c.d_tmp.copy_from_slice(&c.dx);
        if dropping {
            dropout_backward(&mut c.d_tmp, &c.ffn_masks[i]);
        }
        feed_forward_backward(
            s.activation,
            &c.ln2[tok.clone()],
            &c.h1[tok.clone()],
            &c.act[tok.clone()],
            w.w1,
            w.w2,
            &c.d_tmp,
            [g.w1, g.b1, g.w2, g.b2],
            &mut c.d_ln,
            &mut c.d_tmp2,
            threads,
        );
        layer_norm_backward(
            &c.x_mid[tok.clone()],
            &c.ln2_mean[row.clone()],
            &c.ln2_rstd[row.clone()],
            w.ln2_gain,
            &c.d_tmp2,
            d,
            &mut c.dx,
            g.ln2_gain,
            g.ln2_bias,
            &mut c.d_ln,
        );
        // x_mid = x + drop(attn·W_out + b_out).
        c.d_tmp.copy_from_slice(&c.dx);
        if dropping {
            dropout_backward(&mut c.d_tmp, &c.attn_masks[i]);
        }
        linear_backward(
            &c.y[tok.clone()],
            w.w_out,
            &c.d_tmp,
            d,
            &mut c.d_tmp2,
            g.w_out,
            g.b_out,
            threads,
        );
        let heads = s.batch * s.heads * s.steps * s.steps;
        attention_backward(
            s,
            &c.d_tmp2,
            mask,
            &c.qkv_heads[3 * i * nd..3 * (i + 1) * nd],
            &c.att[i * heads..(i + 1) * heads],
            &mut c.d_y_heads,
            &mut c.d_att,
            &mut c.d_qkv_heads,
            &mut c.d_qkv,
        );
        linear_backward(
            &c.ln1[tok.clone()],
            w.w_qkv,
            &c.d_qkv,
            d,
            &mut c.d_tmp2,
            g.w_qkv,
            g.b_qkv,
            threads,
        );
        layer_norm_backward(
            &c.xs[tok],
            &c.ln1_mean[row.clone()],
            &c.ln1_rstd[row],
            w.ln1_gain,
            &c.d_tmp2,
            d,
            &mut c.dx,
            g.ln1_gain,
            g.ln1_bias,
            &mut c.d_ln,
        );
    }
    if dropping {
        dropout_backward(&mut c.dx, &c.emb_mask);
    }
    let d_pos = &mut d_weights[s.first_position * d..(s.first_position + s.steps) * d];
    embed_backward(s, &c.dx, mask, d_input, d_pos);
}

#[cfg(test)]
pub(super) mod tests {
    //! Every layer's backward against central finite differences of an
    //! independent, naive f64 implementation written here (no engine code),
    //! the whole tower likewise, and the masking, causality and
    //! thread-count properties bit for bit.

    use super::*;
    use crate::model::gradcheck::{check_range as check, random, to_f32};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    // ---- the naive f64 reference -------------------------------------

    fn ref_ln(x: &[f64], gain: &[f64], bias: &[f64], d: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(d) {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            let sd = (var + 1e-8).sqrt();
            for j in 0..d {
                out.push((row[j] - mean) / sd * gain[j] + bias[j]);
            }
        }
        out
    }

    /// `x (rows x din) · w (din x dout) + b`.
    fn ref_linear(x: &[f64], w: &[f64], b: &[f64], din: usize, dout: usize) -> Vec<f64> {
        let rows = x.len() / din;
        let mut out = vec![0.0; rows * dout];
        for r in 0..rows {
            for k in 0..dout {
                out[r * dout + k] = b[k]
                    + (0..din)
                        .map(|i| x[r * din + i] * w[i * dout + k])
                        .sum::<f64>();
            }
        }
        out
    }

    /// `qkv` is `N x 3D` (q, k, v columns), the output `N x D`.
    fn ref_attention(
        qkv: &[f64],
        mask: &[f64],
        batch: usize,
        l: usize,
        d: usize,
        h: usize,
    ) -> Vec<f64> {
        let dh = d / h;
        let mut out = vec![0.0; batch * l * d];
        let at = |b: usize, t: usize, part: usize, head: usize, j: usize| {
            qkv[(b * l + t) * 3 * d + part * d + head * dh + j]
        };
        for b in 0..batch {
            for head in 0..h {
                for t in 0..l {
                    if mask[b * l + t] == 0.0 {
                        continue;
                    }
                    let keys: Vec<usize> = (0..=t).filter(|&u| mask[b * l + u] != 0.0).collect();
                    let scores: Vec<f64> = keys
                        .iter()
                        .map(|&u| {
                            (0..dh)
                                .map(|j| at(b, t, 0, head, j) * at(b, u, 1, head, j))
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    for j in 0..dh {
                        out[(b * l + t) * d + head * dh + j] = keys
                            .iter()
                            .zip(&exps)
                            .map(|(&u, e)| e / total * at(b, u, 2, head, j))
                            .sum::<f64>();
                    }
                }
            }
        }
        out
    }

    fn ref_act(kind: Activation, x: f64) -> f64 {
        match kind {
            Activation::Relu => x.max(0.0),
            Activation::Gelu => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
            }
        }
    }

    fn ref_ffn(kind: Activation, f: &[f64], w: [&[f64]; 4], d: usize) -> Vec<f64> {
        let [w1, b1, w2, b2] = w;
        let h: Vec<f64> = ref_linear(f, w1, b1, d, d)
            .iter()
            .map(|&x| ref_act(kind, x))
            .collect();
        ref_linear(&h, w2, b2, d, d)
    }

    fn ref_embed(input: &[f64], pos: &[f64], mask: &[f64], l: usize, d: usize) -> Vec<f64> {
        (0..input.len())
            .map(|i| {
                let (token, j) = (i / d, i % d);
                (input[i] * (d as f64).sqrt() + pos[(token % l) * d + j]) * mask[token]
            })
            .collect()
    }

    /// Dropout keep-masks (scaled), as the engine drew them.
    pub(crate) struct RefMasks {
        emb: Vec<f64>,
        attn: Vec<Vec<f64>>,
        ffn: Vec<Vec<f64>>,
    }

    /// The whole tower, reading the weights in the documented order.
    pub(crate) fn ref_tower(
        s: SasRecShape,
        w: &[f64],
        input: &[f64],
        mask: &[f64],
        drop: Option<&RefMasks>,
    ) -> Vec<f64> {
        let (l, d) = (s.steps, s.dim);
        let mut at = 0;
        let mut take = |n: usize| {
            at += n;
            &w[at - n..at]
        };
        let times = |x: &mut Vec<f64>, m: &[f64]| x.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
        let pos = take(l * d);
        let mut x = ref_embed(input, pos, mask, l, d);
        if let Some(m) = drop {
            times(&mut x, &m.emb);
        }
        for i in 0..s.blocks {
            let (g1, c1) = (take(d), take(d));
            let (wqkv, bqkv) = (take(3 * d * d), take(3 * d));
            let (wo, bo) = (take(d * d), take(d));
            let (g2, c2) = (take(d), take(d));
            let ffn = [take(d * d), take(d), take(d * d), take(d)];
            let qkv = ref_linear(&ref_ln(&x, g1, c1, d), wqkv, bqkv, d, 3 * d);
            let y = ref_attention(&qkv, mask, s.batch, l, d, s.heads);
            let mut o = ref_linear(&y, wo, bo, d, d);
            if let Some(m) = drop {
                times(&mut o, &m.attn[i]);
            }
            let x_mid: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let mut g = ref_ffn(s.activation, &ref_ln(&x_mid, g2, c2, d), ffn, d);
            if let Some(m) = drop {
                times(&mut g, &m.ffn[i]);
            }
            x = (0..x.len())
                .map(|k| (x_mid[k] + g[k]) * mask[k / d])
                .collect();
        }
        let (gf, cf) = (take(d), take(d));
        assert_eq!(at, w.len(), "reference read every weight");
        let mut out = ref_ln(&x, gf, cf, d);
        for (k, v) in out.iter_mut().enumerate() {
            *v *= mask[k / d];
        }
        out
    }

    // ---- helpers --------------------------------------------------------

    fn to_f64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(a, b)| a * b).sum()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{name}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{name}[{i}]: engine {g} vs reference {w}"
            );
        }
    }

    /// Rows: left padding, right padding, interior padding, padding only.
    const MASK_4X6: [f32; 24] = [
        0., 0., 1., 1., 1., 1., //
        1., 1., 1., 1., 0., 0., //
        1., 1., 0., 1., 1., 1., //
        0., 0., 0., 0., 0., 0.,
    ];

    /// Rows: left padding, right padding, none.
    const MASK_3X6: [f32; 18] = [
        0., 0., 1., 1., 1., 1., //
        1., 1., 1., 0., 0., 0., //
        1., 1., 1., 1., 1., 1.,
    ];

    fn shape(
        batch: usize,
        steps: usize,
        dim: usize,
        heads: usize,
        blocks: usize,
        activation: Activation,
    ) -> SasRecShape {
        SasRecShape {
            batch,
            steps,
            positions: steps,
            first_position: 0,
            dim,
            heads,
            blocks,
            activation,
        }
    }

    /// Initial weights with every entry perturbed (gains off 1, biases off
    /// 0), so no gradient is checked at a special point.
    fn perturbed_weights(s: SasRecShape, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let w = init_weights(s.steps, s.dim, s.blocks, rng);
        w.iter()
            .map(|&x| x as f64 + rng.random_range(-0.2..0.2))
            .collect()
    }

    // ---- per layer --------------------------------------------------------

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let (n, d) = (7, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut x: Vec<f64> = random(&mut rng, n * d, 2.0)
            .iter()
            .enumerate()
            .map(|(i, v)| v + (i / d) as f64)
            .collect();
        let mut gain: Vec<f64> = random(&mut rng, d, 0.5).iter().map(|g| g + 1.0).collect();
        let mut bias = random(&mut rng, d, 0.5);
        let r = random(&mut rng, n * d, 1.0);
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n]);
        let (xf, gf, bf) = (to_f32(&x), to_f32(&gain), to_f32(&bias));
        layer_norm_forward(&xf, &gf, &bf, d, &mut out, &mut mean, &mut rstd);
        assert_close("layer norm", &out, &ref_ln(&x, &gain, &bias, d), 1e-5);
        let (mut dx, mut dg, mut db, mut scratch) = (
            vec![0.0; n * d],
            vec![0.0; d],
            vec![0.0; d],
            vec![0.0; n * d],
        );
        layer_norm_backward(
            &xf,
            &mean,
            &rstd,
            &gf,
            &to_f32(&r),
            d,
            &mut dx,
            &mut dg,
            &mut db,
            &mut scratch,
        );
        let (x0, g0, b0) = (x.clone(), gain.clone(), bias.clone());
        check("ln d_x", &mut x, 0..n * d, &dx, &mut |v| {
            dot(&ref_ln(v, &g0, &b0, d), &r)
        });
        check("ln d_gain", &mut gain, 0..d, &dg, &mut |v| {
            dot(&ref_ln(&x0, v, &b0, d), &r)
        });
        check("ln d_bias", &mut bias, 0..d, &db, &mut |v| {
            dot(&ref_ln(&x0, &g0, v, d), &r)
        });
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let (batch, l, d) = (4, 6, 8);
        let mask = to_f64(&MASK_4X6);
        for heads in [1, 2] {
            let s = shape(batch, l, d, heads, 1, Activation::Relu);
            let mut rng = ChaCha8Rng::seed_from_u64(10 + heads as u64);
            let mut qkv = random(&mut rng, batch * l * 3 * d, 1.0);
            let r = random(&mut rng, batch * l * d, 1.0);
            let nd = batch * l * d;
            let (mut qh, mut att, mut yh, mut y) = (
                vec![0.0; 3 * nd],
                vec![f32::NAN; batch * heads * l * l],
                vec![0.0; nd],
                vec![f32::NAN; nd],
            );
            attention_forward(
                s,
                &to_f32(&qkv),
                &MASK_4X6,
                &mut qh,
                &mut att,
                &mut yh,
                &mut y,
            );
            assert_close(
                "attention",
                &y,
                &ref_attention(&qkv, &mask, batch, l, d, heads),
                1e-5,
            );
            let (mut dyh, mut datt, mut dqh, mut dqkv) = (
                vec![0.0; nd],
                vec![f32::NAN; batch * l * l],
                vec![0.0; 3 * nd],
                vec![f32::NAN; 3 * nd],
            );
            attention_backward(
                s,
                &to_f32(&r),
                &MASK_4X6,
                &qh,
                &att,
                &mut dyh,
                &mut datt,
                &mut dqh,
                &mut dqkv,
            );
            for (token, &m) in MASK_4X6.iter().enumerate() {
                if m == 0.0 {
                    assert!(
                        y[token * d..(token + 1) * d].iter().all(|&v| v == 0.0),
                        "padding query {token} outputs 0"
                    );
                    assert!(
                        dqkv[token * 3 * d..(token + 1) * 3 * d]
                            .iter()
                            .all(|&v| v == 0.0),
                        "padding token {token} gets no gradient"
                    );
                }
            }
            check(
                &format!("attention d_qkv, {heads} head(s)"),
                &mut qkv,
                0..3 * nd,
                &dqkv,
                &mut |v| dot(&ref_attention(v, &mask, batch, l, d, heads), &r),
            );
        }
    }

    #[test]
    fn feed_forward_backward_matches_finite_differences() {
        let (n, d) = (15, 8);
        for kind in [Activation::Relu, Activation::Gelu] {
            let mut rng = ChaCha8Rng::seed_from_u64(20);
            let mut f = random(&mut rng, n * d, 1.5);
            let mut w: Vec<Vec<f64>> = [d * d, d, d * d, d]
                .iter()
                .map(|&k| random(&mut rng, k, 0.7))
                .collect();
            let r = random(&mut rng, n * d, 1.0);
            let wf: Vec<Vec<f32>> = w.iter().map(|v| to_f32(v)).collect();
            let (mut h1, mut act, mut out) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d]);
            let ff = to_f32(&f);
            feed_forward(
                kind, &ff, &wf[0], &wf[1], &wf[2], &wf[3], &mut h1, &mut act, &mut out, 1,
            );
            let refs = |w: &[Vec<f64>]| [w[0].clone(), w[1].clone(), w[2].clone(), w[3].clone()];
            let w0 = refs(&w);
            let want = ref_ffn(kind, &f, [&w0[0], &w0[1], &w0[2], &w0[3]], d);
            assert_close(&format!("{kind:?} feed-forward"), &out, &want, 1e-5);
            let mut grads: Vec<Vec<f32>> =
                [d * d, d, d * d, d].iter().map(|&k| vec![0.0; k]).collect();
            let (mut d_act, mut d_f) = (vec![0.0; n * d], vec![0.0; n * d]);
            let [g0, g1, g2, g3] = &mut grads[..] else {
                unreachable!()
            };
            feed_forward_backward(
                kind,
                &ff,
                &h1,
                &act,
                &wf[0],
                &wf[2],
                &to_f32(&r),
                [g0, g1, g2, g3],
                &mut d_act,
                &mut d_f,
                1,
            );
            let f0 = f.clone();
            check(
                &format!("{kind:?} ffn d_f"),
                &mut f,
                0..n * d,
                &d_f,
                &mut |v| dot(&ref_ffn(kind, v, [&w0[0], &w0[1], &w0[2], &w0[3]], d), &r),
            );
            for (k, name) in ["w1", "b1", "w2", "b2"].iter().enumerate() {
                let mut wk = w[k].clone();
                let len = wk.len();
                check(
                    &format!("{kind:?} ffn d_{name}"),
                    &mut wk,
                    0..len,
                    &grads[k],
                    &mut |v| {
                        let mut all = refs(&w);
                        all[k] = v.to_vec();
                        dot(
                            &ref_ffn(kind, &f0, [&all[0], &all[1], &all[2], &all[3]], d),
                            &r,
                        )
                    },
                );
                w[k] = wk;
            }
        }
    }

    #[test]
    fn embedding_backward_matches_finite_differences() {
        let (batch, l, d) = (3, 6, 8);
        let s = shape(batch, l, d, 2, 1, Activation::Relu);
        let mask = to_f64(&MASK_3X6);
        let mut rng = ChaCha8Rng::seed_from_u64(30);
        let mut input = random(&mut rng, batch * l * d, 1.0);
        let mut pos = random(&mut rng, l * d, 0.5);
        let r = random(&mut rng, batch * l * d, 1.0);
        let mut x0 = vec![0.0; batch * l * d];
        embed_forward(s, &to_f32(&input), &to_f32(&pos), &MASK_3X6, &mut x0);
        assert_close(
            "embedding",
            &x0,
            &ref_embed(&input, &pos, &mask, l, d),
            1e-6,
        );
        let (mut d_input, mut d_pos) = (vec![f32::NAN; batch * l * d], vec![0.0; l * d]);
        embed_backward(s, &to_f32(&r), &MASK_3X6, &mut d_input, &mut d_pos);
        let (i0, p0) = (input.clone(), pos.clone());
        check(
            "embedding d_input",
            &mut input,
            0..batch * l * d,
            &d_input,
            &mut |v| dot(&ref_embed(v, &p0, &mask, l, d), &r),
        );
        check("embedding d_pos", &mut pos, 0..l * d, &d_pos, &mut |v| {
            dot(&ref_embed(&i0, v, &mask, l, d), &r)
        });
    }

    // ---- the whole tower ---------------------------------------------------

    /// Engine forward and backward (upstream `r`) of the tower.
    #[allow(clippy::too_many_arguments)]
    fn run_engine(
        s: SasRecShape,
        w: &[f64],
        input: &[f64],
        mask: &[f32],
        r: &[f64],
        dropout: f32,
        seed: u64,
        cache: &mut SasRecCache,
    ) -> (Vec<f32>, Vec<f32>) {
        let (wf, r) = (to_f32(w), to_f32(r));
        forward(s, &wf, &to_f32(input), mask, dropout, seed, 2, cache);
        let mut d_w = vec![f32::NAN; w.len()];
        let mut d_in = vec![f32::NAN; input.len()];
        backward(
            s, &wf, &r, mask, dropout, seed, 2, cache, &mut d_w, &mut d_in,
        );
        (d_w, d_in)
    }

    /// Every weight tensor and the input against finite differences of
    /// `loss(weights, input)`.
    fn check_tower(
        what: &str,
        s: SasRecShape,
        w: &[f64],
        input: &[f64],
        d_w: &[f32],
        d_in: &[f32],
        loss: &dyn Fn(&[f64], &[f64]) -> f64,
    ) {
        let mut wv = w.to_vec();
        for slot in layout(s.steps, s.dim, s.blocks) {
            check(
                &format!("{what}: {}", slot.name),
                &mut wv,
                slot.range.clone(),
                &d_w[slot.range],
                &mut |v| loss(v, input),
            );
        }
        let mut iv = input.to_vec();
        let len = iv.len();
        check(&format!("{what}: input"), &mut iv, 0..len, d_in, &mut |v| {
            loss(w, v)
        });
    }

    #[test]
    fn tower_matches_the_reference_forward_and_finite_differences() {
        for activation in [Activation::Relu, Activation::Gelu] {
            let s = shape(3, 6, 8, 2, 2, activation);
            let mut rng = ChaCha8Rng::seed_from_u64(40);
            let w = perturbed_weights(s, &mut rng);
            let input = random(&mut rng, s.tokens() * s.dim, 0.5);
            let r = random(&mut rng, s.tokens() * s.dim, 1.0);
            let mask = to_f64(&MASK_3X6);
            let mut cache = SasRecCache::default();
            let (d_w, d_in) = run_engine(s, &w, &input, &MASK_3X6, &r, 0.0, 0, &mut cache);
            let what = format!("{activation:?} tower");
            assert_close(
                &what,
                cache.output(),
                &ref_tower(s, &w, &input, &mask, None),
                1e-4,
            );
            check_tower(&what, s, &w, &input, &d_w, &d_in, &|w, x| {
                dot(&ref_tower(s, w, x, &mask, None), &r)
            });
        }
    }

    #[test]
    fn tower_with_dropout_matches_finite_differences() {
        let s = shape(3, 6, 8, 2, 2, Activation::Gelu);
        let (p, seed) = (0.3, 77);
        let mut rng = ChaCha8Rng::seed_from_u64(50);
        let w = perturbed_weights(s, &mut rng);
        let input = random(&mut rng, s.tokens() * s.dim, 0.5);
        let r = random(&mut rng, s.tokens() * s.dim, 1.0);
        let mask = to_f64(&MASK_3X6);
        let mut cache = SasRecCache::default();
        let (d_w, d_in) = run_engine(s, &w, &input, &MASK_3X6, &r, p, seed, &mut cache);
        let out = cache.output().to_vec();
        // The masks the engine drew: inverted dropout, different per place
        // and block, and each a real mask (some dropped, some kept).
        let masks = RefMasks {
            emb: to_f64(&cache.emb_mask),
            attn: cache.attn_masks.iter().map(|m| to_f64(m)).collect(),
            ffn: cache.ffn_masks.iter().map(|m| to_f64(m)).collect(),
        };
        let all: Vec<&Vec<f64>> = std::iter::once(&masks.emb)
            .chain(&masks.attn)
            .chain(&masks.ffn)
            .collect();
        assert_eq!(all.len(), 5);
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.len(), s.tokens() * s.dim);
            assert!(m
                .iter()
                .all(|&k| k == 0.0 || (k - 1.0 / (1.0 - p as f64)).abs() < 1e-6));
            let dropped = m.iter().filter(|&&k| k == 0.0).count() as f64 / m.len() as f64;
            assert!((0.15..0.45).contains(&dropped), "mask {i} drops {dropped}");
            for other in &all[..i] {
                assert_ne!(*other, *m, "masks differ by place and block");
            }
        }
        assert_close(
            "dropout tower",
            &out,
            &ref_tower(s, &w, &input, &mask, Some(&masks)),
            1e-4,
        );
        check_tower("dropout tower", s, &w, &input, &d_w, &d_in, &|w, x| {
            dot(&ref_tower(s, w, x, &mask, Some(&masks)), &r)
        });

        // The engine's own forward, differenced in f32 (loose), on a sample
        // of weights: the backward follows the forward's masks.
        let wf = to_f32(&w);
        let inf = to_f32(&input);
        let mut probe = SasRecCache::default();
        let mut loss = |wf: &[f32]| {
            forward(s, wf, &inf, &MASK_3X6, p, seed, 1, &mut probe);
            dot(&to_f64(probe.output()), &r)
        };
        let scale = d_w.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
        let mut wp = wf.clone();
        for _ in 0..40 {
            let i = rng.random_range(0..wf.len());
            let eps = 1e-2f32;
            wp[i] = wf[i] + eps;
            let up = loss(&wp);
            wp[i] = wf[i] - eps;
            let down = loss(&wp);
            wp[i] = wf[i];
            let numeric = (up - down) / (2.0 * eps as f64);
            assert!(
                (numeric - d_w[i] as f64).abs() < 1e-2 * scale + 2e-2 * numeric.abs(),
                "weight {i}: engine backward {} vs engine forward difference {numeric}",
                d_w[i]
            );
        }

        // Same seed, same result; another seed, another.
        let mut again = SasRecCache::default();
        forward(s, &wf, &inf, &MASK_3X6, p, seed, 3, &mut again);
        assert_eq!(bits(again.output()), bits(&out));
        forward(s, &wf, &inf, &MASK_3X6, p, seed + 1, 3, &mut again);
        assert_ne!(bits(again.output()), bits(&out));
        forward(s, &wf, &inf, &MASK_3X6, 0.0, seed, 3, &mut again);
        assert_ne!(bits(again.output()), bits(&out));
    }

    // ---- properties ---------------------------------------------------------

    fn setup(s: SasRecShape, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w = to_f32(&perturbed_weights(s, &mut rng));
        let input = to_f32(&random(&mut rng, s.tokens() * s.dim, 0.5));
        (w, input)
    }

    #[test]
    fn forward_at_gives_the_towers_output_at_the_asked_steps() {
        for (blocks, heads, activation) in [
            (1, 1, Activation::Relu),
            (2, 2, Activation::Gelu),
            (2, 1, Activation::Relu),
        ] {
            let s = shape(4, 6, 8, heads, blocks, activation);
            let mut rng = ChaCha8Rng::seed_from_u64(90 + blocks as u64);
            let w = perturbed_weights(s, &mut rng);
            let input = random(&mut rng, s.tokens() * s.dim, 0.5);
            // Rows: left padding, right padding, interior padding, none.
            let mask: Vec<f32> = MASK_4X6[..18].iter().chain(&[1.0; 6]).copied().collect();
            let want = ref_tower(s, &w, &input, &to_f64(&mask), None);
            let (w32, in32) = (to_f32(&w), to_f32(&input));
            let mut full = SasRecCache::default();
            forward(s, &w32, &in32, &mask, 0.0, 0, 1, &mut full);
            // Every real step of each row, one call per step position.
            for t in 0..6 {
                let at: Vec<usize> = (0..4)
                    .map(|row| {
                        if mask[row * 6 + t] != 0.0 {
                            t
                        } else {
                            mask[row * 6..row * 6 + 6]
                                .iter()
                                .rposition(|&m| m != 0.0)
                                .unwrap()
                        }
                    })
                    .collect();
                let mut cache = SasRecCache::default();
                let mut out = Vec::new();
                forward_at(s, &w32, &in32, &mask, &at, 1, &mut cache, &mut out);
                for (row, &step) in at.iter().enumerate() {
                    let token = (row * 6 + step) * 8..(row * 6 + step + 1) * 8;
                    let what = format!("{blocks} block(s), {heads} head(s), row {row} step {step}");
                    assert_close(
                        &what,
                        &out[row * 8..(row + 1) * 8],
                        &want[token.clone()],
                        1e-4,
                    );
                    let engine: Vec<f64> = to_f64(&full.output()[token]);
                    assert_close(&what, &out[row * 8..(row + 1) * 8], &engine, 1e-5);
                }
            }
        }
    }

    #[test]
    fn padding_inputs_do_not_change_real_outputs() {
        for (p, activation) in [(0.0, Activation::Relu), (0.2, Activation::Gelu)] {
            let s = shape(3, 6, 8, 2, 2, activation);
            let (w, input) = setup(s, 60);
            let mut rng = ChaCha8Rng::seed_from_u64(61);
            let mut other = input.clone();
            for (token, &m) in MASK_3X6.iter().enumerate() {
                if m == 0.0 {
                    for v in &mut other[token * 8..(token + 1) * 8] {
                        *v = rng.random_range(-3.0..3.0);
                    }
                }
            }
            assert_ne!(other, input);
            let (mut a, mut b) = (SasRecCache::default(), SasRecCache::default());
            forward(s, &w, &input, &MASK_3X6, p, 5, 1, &mut a);
            forward(s, &w, &other, &MASK_3X6, p, 5, 1, &mut b);
            for (token, &m) in MASK_3X6.iter().enumerate() {
                let (x, y) = (
                    &a.output()[token * 8..(token + 1) * 8],
                    &b.output()[token * 8..(token + 1) * 8],
                );
                if m == 0.0 {
                    assert!(
                        x.iter().chain(y).all(|&v| v == 0.0),
                        "padding token {token} outputs 0"
                    );
                } else {
                    assert_eq!(bits(x), bits(y), "real token {token}, dropout {p}");
                }
            }
        }
    }

    #[test]
    fn outputs_are_causal() {
        let s = shape(3, 6, 8, 2, 2, Activation::Gelu);
        let (w, input) = setup(s, 70);
        let mut base = SasRecCache::default();
        forward(s, &w, &input, &MASK_3X6, 0.1, 9, 1, &mut base);
        let mut rng = ChaCha8Rng::seed_from_u64(71);
        for t in 0..s.steps - 1 {
            let mut changed = input.clone();
            for b in 0..s.batch {
                let token = b * s.steps + t + 1;
                for v in &mut changed[token * 8..(token + 1) * 8] {
                    *v += rng.random_range(0.5..1.0);
                }
            }
            let mut c = SasRecCache::default();
            forward(s, &w, &changed, &MASK_3X6, 0.1, 9, 1, &mut c);
            for b in 0..s.batch {
                let row = |o: &[f32], u: usize| {
                    bits(&o[(b * s.steps + u) * 8..(b * s.steps + u + 1) * 8])
                };
                for u in 0..=t {
                    assert_eq!(
                        row(base.output(), u),
                        row(c.output(), u),
                        "row {b}: step {u} saw step {}",
                        t + 1
                    );
                }
                if MASK_3X6[b * s.steps + t + 1] != 0.0 {
                    assert_ne!(
                        row(base.output(), t + 1),
                        row(c.output(), t + 1),
                        "row {b}: step {} changed",
                        t + 1
                    );
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        // 24 rows of 7 steps, dim 16: big enough for several rayon tasks.
        let s = shape(24, 7, 16, 2, 2, Activation::Gelu);
        let (w, input) = setup(s, 80);
        let mask: Vec<f32> = (0..s.tokens())
            .map(|i| {
                let (b, t) = (i / s.steps, i % s.steps);
                match b % 3 {
                    0 => (t >= b % 7) as u8 as f32,
                    1 => (t < s.steps - b % 5) as u8 as f32,
                    _ => 1.0,
                }
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(81);
        let r = to_f32(&random(&mut rng, s.tokens() * s.dim, 1.0));
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut cache = SasRecCache::default();
                    let mut d_w = vec![0.0; w.len()];
                    let mut d_in = vec![0.0; input.len()];
                    // Twice through one cache: reuse must not change anything.
                    for _ in 0..2 {
                        forward(s, &w, &input, &mask, 0.1, 3, threads, &mut cache);
                        backward(
                            s, &w, &r, &mask, 0.1, 3, threads, &mut cache, &mut d_w, &mut d_in,
                        );
                    }
                    (bits(cache.output()), bits(&d_w), bits(&d_in))
                })
        };
        let one = run(1);
        for threads in [2, 3] {
            let other = run(threads);
            assert!(one.0 == other.0, "output, {threads} threads");
            assert!(one.1 == other.1, "d_weights, {threads} threads");
            assert!(one.2 == other.2, "d_input, {threads} threads");
        }
    }

    #[test]
    fn layout_covers_the_weights_and_init_follows_it() {
        let (l, d, blocks) = (5, 8, 2);
        let slots = layout(l, d, blocks);
        assert_eq!(slots.len(), 1 + 12 * blocks + 2);
        assert_eq!(slots[0].name, "pos_embedding");
        assert_eq!(slots[3].name, "block0.attn.w_qkv");
        assert_eq!((slots[3].rows, slots[3].cols), (d, 3 * d));
        assert_eq!(slots.last().unwrap().name, "final_ln.bias");
        let mut at = 0;
        for slot in &slots {
            assert_eq!(slot.range.start, at, "{}", slot.name);
            assert_eq!(slot.range.len(), slot.rows * slot.cols);
            at = slot.range.end;
        }
        assert_eq!(at, weight_count(l, d, blocks));
        assert_eq!(
            weight_count(l, d, blocks),
            l * d + blocks * (6 * d * d + 10 * d) + 2 * d
        );
        let w = init_weights(l, d, blocks, &mut ChaCha8Rng::seed_from_u64(1));
        let limit = (6.0 / (2 * d) as f32).sqrt();
        for slot in &slots {
            let v = &w[slot.range.clone()];
            if slot.name == "pos_embedding" {
                assert!(v.iter().all(|x| x.abs() <= 0.05) && v.iter().any(|&x| x != 0.0));
            } else if slot.name.ends_with("gain") {
                assert!(v.iter().all(|&x| x == 1.0), "{}", slot.name);
            } else if slot.rows > 1 {
                assert!(
                    v.iter().all(|x| x.abs() <= limit) && v.iter().any(|&x| x != 0.0),
                    "{}",
                    slot.name
                );
            } else {
                assert!(v.iter().all(|&x| x == 0.0), "{}", slot.name);
            }
        }
    }

    #[test]
    #[should_panic(expected = "same shape, dropout and seed")]
    fn backward_refuses_another_forwards_cache() {
        let s = shape(3, 6, 8, 2, 1, Activation::Relu);
        let (w, input) = setup(s, 90);
        let mut cache = SasRecCache::default();
        forward(s, &w, &input, &MASK_3X6, 0.1, 1, 1, &mut cache);
        let (mut d_w, mut d_in) = (vec![0.0; w.len()], vec![0.0; input.len()]);
        backward(
            s, &w, &input, &MASK_3X6, 0.1, 2, 1, &mut cache, &mut d_w, &mut d_in,
        );
    }
}
