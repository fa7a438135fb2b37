//! The whole SASRec tower's passes over a batch: `forward`, `forward_at`
//! (inference at the query steps only) and `backward`, and the cache they
//! share.

use rayon::prelude::*;

use super::layers::*;
use super::layout::*;
use crate::model::dropout::{dropout_backward, dropout_forward, dropout_mask};

/// What `forward` keeps for `backward`, and both passes' scratch buffers;
/// reused across calls (resized, never shrunk).
#[derive(Default)]
pub struct SasRecCache {
    /// The shape, dropout rate and seed of the last forward.
    pub(super) last: Option<(SasRecShape, f32, u64)>,
    /// The residual stream entering each block and the final LayerNorm:
    /// `(blocks + 1) x N x D`.
    pub(super) xs: Vec<f32>,
    /// Per block, the stream after the attention residual: `blocks x N x D`.
    pub(super) x_mid: Vec<f32>,
    /// Per block, LN1's output, mean and 1/std (`N x D`, `N`, `N`).
    pub(super) ln1: Vec<f32>,
    pub(super) ln1_mean: Vec<f32>,
    pub(super) ln1_rstd: Vec<f32>,
    /// Per block, q, k and v head-major within each row:
    /// `[part q/k/v][head][step][D/H]`, `L·3D` per row.
    pub(super) qkv_heads: Vec<f32>,
    /// Per block, the attention probabilities: `H` matrices of `L x L` per
    /// row, each holding its span's `n x n` (see `span`) at its start.
    pub(super) att: Vec<f32>,
    /// Per block, the attention output before `W_out`, `N x D`.
    pub(super) y: Vec<f32>,
    pub(super) ln2: Vec<f32>,
    pub(super) ln2_mean: Vec<f32>,
    pub(super) ln2_rstd: Vec<f32>,
    /// Per block, the feed-forward's pre-activation and activation.
    pub(super) h1: Vec<f32>,
    pub(super) act: Vec<f32>,
    pub(super) lnf_mean: Vec<f32>,
    pub(super) lnf_rstd: Vec<f32>,
    /// `N x D`: the output.
    pub(super) out: Vec<f32>,
    /// Dropout keep-masks (empty without dropout): the embedding's, and per
    /// block the attention output's and the feed-forward's.
    pub(super) emb_mask: Vec<f32>,
    pub(super) attn_masks: Vec<Vec<f32>>,
    pub(super) ffn_masks: Vec<Vec<f32>>,
    /// Scratch: `N x 3D`, `N x D` (head-major), `N x D`.
    pub(super) qkv: Vec<f32>,
    pub(super) y_heads: Vec<f32>,
    pub(super) tmp: Vec<f32>,
    /// Backward scratch.
    pub(super) dx: Vec<f32>,
    pub(super) d_tmp: Vec<f32>,
    pub(super) d_tmp2: Vec<f32>,
    pub(super) d_ln: Vec<f32>,
    pub(super) d_qkv: Vec<f32>,
    pub(super) d_qkv_heads: Vec<f32>,
    pub(super) d_y_heads: Vec<f32>,
    pub(super) d_att: Vec<f32>,
}

impl SasRecCache {
    /// The last forward's output, `N x D`, token (b, t) at `(b·L + t)·D`.
    pub fn output(&self) -> &[f32] {
        &self.out
    }

    pub(super) fn resize_forward(&mut self, s: SasRecShape, dropout: bool) {
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

    pub(super) fn resize_backward(&mut self, s: SasRecShape) {
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

/// The shapes `forward` and `forward_at` are given.
pub(super) fn check_forward(s: SasRecShape, weights: &[f32], input: &[f32], mask: &[f32]) {
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
