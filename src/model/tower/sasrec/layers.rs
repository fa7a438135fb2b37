//! The SASRec tower's layers, forward and backward: LayerNorm, the linear
//! maps, the position embedding, causal multi-head attention and the
//! feed-forward, each over flat `N x ·` buffers (shapes in `super`'s header).

use rayon::prelude::*;

use super::layout::*;
use super::passes::SasRecCache;
use crate::kernels::{add_column_sums, matmul, matmul_block, Mat, Output};
use crate::model::dropout::{dropout_forward, dropout_mask};

/// Where a dropout mask is applied.
#[derive(Clone, Copy)]
pub(super) enum Place {
    Embedding = 1,
    Attention = 2,
    FeedForward = 3,
}

pub(super) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of one dropout mask: hashed, so masks of different places are
/// not shifted copies of one counter stream.
pub(super) fn mask_seed(seed: u64, place: Place, block: usize) -> u64 {
    splitmix(seed ^ splitmix(((place as u64) << 32) | block as u64))
}

/// Rows per parallel task of the element-wise passes (fixed, so the
/// results do not depend on the thread count, though these are row-local
/// anyway).
pub(super) const ROWS: usize = 64;

/// `out = (x − mean)·rstd·gain + bias` per row of `d`; keeps mean and rstd.
pub(super) fn layer_norm_forward(
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
pub(super) fn layer_norm_backward(
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
pub(super) fn linear_forward(
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
pub(super) fn linear_backward(
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
pub(super) fn embed_forward(
    s: SasRecShape,
    input: &[f32],
    pos: &[f32],
    mask: &[f32],
    x0: &mut [f32],
) {
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
pub(super) fn embed_backward(
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
pub(super) fn span(mask: &[f32]) -> Option<(usize, usize)> {
    let first = mask.iter().position(|&m| m != 0.0)?;
    let last = mask.iter().rposition(|&m| m != 0.0)?;
    Some((first, last + 1 - first))
}

/// Blocks of `CAUSAL_BLOCK` query steps `(first, end)` over a span of `n`:
/// block `[r0, r1)` only needs the keys before `r1`, so causal attention
/// computes about half of each `n x n` product instead of all of it.
pub(super) fn causal_blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(CAUSAL_BLOCK)
        .map(move |r0| (r0, (r0 + CAUSAL_BLOCK).min(n)))
}

/// Query steps per block of `causal_blocks`: small enough to skip most of
/// the future, large enough for the products to run at speed. The unit
/// tests' rows are a few steps long, so there blocks are 4 steps: every
/// check then runs over several blocks and a partial last one.
#[cfg(not(test))]
pub(super) const CAUSAL_BLOCK: usize = 64;
#[cfg(test)]
pub(super) const CAUSAL_BLOCK: usize = 4;

/// One row's `steps x (chunks·w)` buffer to chunk-major
/// `[chunk][step][w]`.
pub(super) fn to_heads(src: &[f32], dst: &mut [f32], steps: usize, chunks: usize, w: usize) {
    for t in 0..steps {
        for c in 0..chunks {
            dst[(c * steps + t) * w..(c * steps + t + 1) * w]
                .copy_from_slice(&src[(t * chunks + c) * w..(t * chunks + c + 1) * w]);
        }
    }
}

/// The inverse of `to_heads`.
pub(super) fn from_heads(src: &[f32], dst: &mut [f32], steps: usize, chunks: usize, w: usize) {
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
pub(super) fn block_forward(
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

pub(super) fn attention_forward(
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
pub(super) fn attention_backward(
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
pub(super) fn activate(kind: Activation, h: &[f32], out: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK)
        .zip(h.par_chunks(CHUNK))
        .for_each(|(out, h)| match kind {
            Activation::Relu => simd::relu(h, out),
            Activation::Gelu => simd::gelu(h, out),
        });
}

/// `g ⊙= act'(h)`, in parallel blocks.
pub(super) fn activate_backward(kind: Activation, h: &[f32], g: &mut [f32]) {
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
pub(super) fn feed_forward(
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
pub(super) fn feed_forward_backward(
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
pub(super) fn add_rows(a: &[f32], b: &[f32], mask: Option<&[f32]>, d: usize, out: &mut [f32]) {
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
pub(super) fn mask_rows(x: &mut [f32], mask: &[f32], d: usize) {
    for (x, &m) in x.chunks_exact_mut(d).zip(mask) {
        if m != 1.0 {
            x.iter_mut().for_each(|v| *v *= m);
        }
    }
}
