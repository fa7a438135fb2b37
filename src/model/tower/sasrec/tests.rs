//! Every layer's backward against central finite differences of an
//! independent, naive f64 implementation written here (no engine code),
//! the whole tower likewise, and the masking, causality and
//! thread-count properties bit for bit.

use super::layers::*;
use super::layout::*;
use super::passes::*;
use crate::model::gradcheck::{check_range as check, random, to_f32};
use crate::model::{
    Batch, Model, ModelOptions, Padding, Params, QueryTower, StepOptions, Workspace,
};
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
        let mut grads: Vec<Vec<f32>> = [d * d, d, d * d, d].iter().map(|&k| vec![0.0; k]).collect();
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
            let row =
                |o: &[f32], u: usize| bits(&o[(b * s.steps + u) * 8..(b * s.steps + u + 1) * 8]);
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
            ws.tower
                .as_sasrec()
                .expect("a SASRec tower")
                .columns()
                .len(),
            2,
            "trimmed to the longest short row"
        );
        let trimmed = ws.queries.vectors.clone();
        model.forward(&mut ws, &batch_of(&histories), &StepOptions::default());
        assert_eq!(
            ws.tower
                .as_sasrec()
                .expect("a SASRec tower")
                .columns()
                .len(),
            8
        );
        assert_eq!(&ws.queries.vectors[..16], &trimmed[..], "{padding:?}");
    }
}
