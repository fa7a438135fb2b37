//! Every backward function of the engine against central finite differences
//! of an independent, naive f64 implementation of the same maths (written
//! here from SPEC.md, sharing no code with the engine).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::loss::{self, LossGrads, LossInputs};
use super::sasrec::{Activation, SasRecShape};
use super::{
    embedding, Batch, Grads, GruTower, InputProjection, Model, ModelOptions, ModelSpec, Padding,
    Params, StepOptions, TowerSpec, Workspace,
};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The Keras GRU (reset_after) in f64, from a zero state; `x` is
/// `batch x steps x dim` inputs already projected (`x·W + b_in`, 3·dim each).
pub(crate) fn ref_gru(
    gx: &[f64],
    u: &[f64],
    b_rec: &[f64],
    mask: Option<&[f64]>,
    b: usize,
    l: usize,
    d: usize,
) -> Vec<f64> {
    let states = ref_gru_states(gx, u, b_rec, mask, b, l, d);
    (0..b)
        .flat_map(|row| states[(row * l + l - 1) * d..(row * l + l) * d].to_vec())
        .collect()
}

/// `ref_gru`'s state after every step, `batch x steps x dim`.
fn ref_gru_states(
    gx: &[f64],
    u: &[f64],
    b_rec: &[f64],
    mask: Option<&[f64]>,
    b: usize,
    l: usize,
    d: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; b * l * d];
    for row in 0..b {
        let mut h = vec![0.0; d];
        for t in 0..l {
            let g = &gx[(t * b + row) * 3 * d..(t * b + row + 1) * 3 * d];
            let mut gh = vec![0.0; 3 * d];
            for (k, ghk) in gh.iter_mut().enumerate() {
                *ghk = b_rec[k] + (0..d).map(|i| h[i] * u[i * 3 * d + k]).sum::<f64>();
            }
            let keep = mask.map_or(1.0, |m| m[t * b + row]);
            let mut next = vec![0.0; d];
            for j in 0..d {
                let z = sigmoid(g[j] + gh[j]);
                let r = sigmoid(g[d + j] + gh[d + j]);
                let hh = (g[2 * d + j] + r * gh[2 * d + j]).tanh();
                next[j] = keep * (z * h[j] + (1.0 - z) * hh) + (1.0 - keep) * h[j];
            }
            h = next;
            out[(row * l + t) * d..(row * l + t + 1) * d].copy_from_slice(&h);
        }
    }
    out
}

/// Sum over rows of `logsumexp(row) - row[i]`, with the options of the
/// engine: row `i`'s positive at column `positives[i]` when given, and with
/// `gbce = (β, first_negative, o)` the gBCE loss `β·softplus(−(s⁺ + o)) +
/// Σ⁻ softplus(s⁻ + o)` over the negatives from column `first_negative` on
/// instead.
#[allow(clippy::too_many_arguments)]
pub(super) fn ref_loss(
    q: &[f64],
    c: &[f64],
    rows: usize,
    cols: usize,
    d: usize,
    ids: Option<&[u32]>,
    bias: Option<&[f64]>,
    positives: Option<&[u32]>,
    gbce: Option<(f64, usize, f64)>,
    excluded: Option<&[Vec<usize>]>,
) -> f64 {
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let mut total = 0.0;
    for row in 0..rows {
        let i = positives.map_or(row, |p| p[row] as usize);
        let excluded_here = |j: usize| excluded.is_some_and(|e| e[row].contains(&j));
        let logits: Vec<f64> = (0..cols)
            .map(|j| {
                (0..d).map(|k| q[row * d + k] * c[j * d + k]).sum::<f64>()
                    + bias.map_or(0.0, |b| b[j])
            })
            .collect();
        let kept: Vec<usize> = (0..cols)
            .filter(|&j| j == i || (ids.is_none_or(|ids| ids[j] != ids[i]) && !excluded_here(j)))
            .collect();
        if let Some((beta, first_negative, offset)) = gbce {
            total += beta * softplus(-(logits[i] + offset));
            total += kept
                .iter()
                .filter(|&&j| j != i && j >= first_negative)
                .map(|&j| softplus(logits[j] + offset))
                .sum::<f64>();
            continue;
        }
        let kept: Vec<f64> = kept.iter().map(|&j| logits[j]).collect();
        let m = kept.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + kept.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        total += lse - logits[i];
    }
    total
}

/// What the whole-model reference applies beyond the reference's loss.
#[derive(Clone, Default)]
struct RefOptions {
    mask_padding: bool,
    shared: bool,
    remove_hits: bool,
    negatives: Vec<u32>,
    /// Per id, added to the logit of an in-batch / extra column.
    in_batch_bias: Option<Vec<f64>>,
    negatives_bias: Option<Vec<f64>>,
    input_mask: Option<Vec<f64>>,
    output_mask: Option<Vec<f64>>,
    /// Score every item 1..v; gBCE with this beta.
    full_softmax: bool,
    gbce_t: Option<f32>,
    /// A query's read items get no probability.
    exclude_history: bool,
    /// The summed loss is divided by this rather than the query count.
    mean_queries: Option<f64>,
    /// The SASRec tower of this shape (`batch` ignored) instead of the GRU,
    /// and the spec that says where a window's newest item is.
    sasrec: Option<(SasRecShape, ModelSpec)>,
}

/// The whole model's mean loss in f64.
fn ref_model_loss(
    p: &[Vec<f64>],
    batch: &Batch,
    v: usize,
    d: usize,
    l: usize,
    o: &RefOptions,
) -> f64 {
    // The registry's order: the query embedding, the tower's, the
    // candidate embedding.
    let [qe, tower @ .., ce] = p else {
        panic!("{} tensors", p.len())
    };
    let qe_in: Vec<f64> = match &o.input_mask {
        Some(m) => qe.iter().zip(m).map(|(a, b)| a * b).collect(),
        None => qe.clone(),
    };
    let b = batch.size;
    if let Some((shape, spec)) = o.sasrec {
        // Each token's input row, the tower, each query at its step.
        let input: Vec<f64> = batch
            .contexts
            .iter()
            .flat_map(|&id| qe_in[id as usize * d..(id as usize + 1) * d].to_vec())
            .collect();
        let mask: Vec<f64> = batch
            .contexts
            .iter()
            .map(|&id| if id == 0 { 0.0 } else { 1.0 })
            .collect();
        let shape = SasRecShape { batch: b, ..shape };
        let [weights] = tower else {
            panic!("SASRec has 1 tensor, not {}", tower.len())
        };
        let states = super::sasrec::tests::ref_tower(shape, weights, &input, &mask, None);
        let newest: Vec<usize> = (0..b)
            .map(|row| spec.newest_step(batch.lengths[row] as usize))
            .collect();
        return ref_loss_from_states(&states, &newest, batch, qe, ce, v, d, l, o);
    }
    let [w, u, b_in, b_rec] = tower else {
        panic!("a GRU has 4 tensors, not {}", tower.len())
    };
    let mut gx = vec![0.0; l * b * 3 * d];
    let mut mask = vec![0.0; l * b];
    for t in 0..l {
        for row in 0..b {
            let id = batch.contexts[row * l + t] as usize;
            assert!(id < v);
            mask[t * b + row] = if id == 0 { 0.0 } else { 1.0 };
            for k in 0..3 * d {
                gx[(t * b + row) * 3 * d + k] = b_in[k]
                    + (0..d)
                        .map(|i| qe_in[id * d + i] * w[i * 3 * d + k])
                        .sum::<f64>();
            }
        }
    }
    let states = ref_gru_states(
        &gx,
        u,
        b_rec,
        o.mask_padding.then_some(mask.as_slice()),
        b,
        l,
        d,
    );
    // The GRU's query is its last state, padding steps or not.
    ref_loss_from_states(&states, &vec![l - 1; b], batch, qe, ce, v, d, l, o)
}

/// The mean loss of a tower's states (`batch x steps x dim`): the queries
/// are each row's state at `newest[row]`, or in sequence training the state
/// at every step with a target.
#[allow(clippy::too_many_arguments)]
fn ref_loss_from_states(
    states: &[f64],
    newest: &[usize],
    batch: &Batch,
    qe: &[f64],
    ce: &[f64],
    v: usize,
    d: usize,
    l: usize,
    o: &RefOptions,
) -> f64 {
    let b = batch.size;
    // The items a query at (row, t) has read.
    let read = |row: usize, t: usize| -> Vec<u32> {
        batch.contexts[row * l..=row * l + t]
            .iter()
            .copied()
            .filter(|&id| id != 0)
            .collect()
    };
    let mut seen: Vec<Vec<u32>> = Vec::new();
    let (mut q, labels): (Vec<f64>, Vec<u32>) = if batch.targets.is_empty() {
        seen.extend((0..b).map(|row| read(row, newest[row])));
        (
            (0..b)
                .flat_map(|row| {
                    let t = row * l + newest[row];
                    states[t * d..(t + 1) * d].to_vec()
                })
                .collect(),
            batch.labels.clone(),
        )
    } else {
        let mut q = Vec::new();
        let mut labels = Vec::new();
        for row in 0..b {
            for t in 0..l {
                let target = batch.targets[row * l + t];
                if target != 0 {
                    q.extend_from_slice(&states[(row * l + t) * d..(row * l + t + 1) * d]);
                    labels.push(target);
                    seen.push(read(row, t));
                }
            }
        }
        (q, labels)
    };
    let n = labels.len();
    if let Some(m) = &o.output_mask {
        for (x, m) in q.iter_mut().zip(m) {
            *x *= m;
        }
    }
    let table: &[f64] = if o.shared { qe } else { ce };
    // Columns: every item; or the labels (distinct ones in sequence
    // training), then the extra negatives.
    let mut label_columns: Vec<u32> = Vec::new();
    let (ids, positives): (Vec<u32>, Option<Vec<u32>>) = if o.full_softmax {
        (
            (1..v as u32).collect(),
            Some(labels.iter().map(|&x| x - 1).collect()),
        )
    } else if batch.targets.is_empty() {
        (labels.iter().chain(&o.negatives).copied().collect(), None)
    } else {
        let positives = labels
            .iter()
            .map(|&x| match label_columns.iter().position(|&c| c == x) {
                Some(k) => k as u32,
                None => {
                    label_columns.push(x);
                    label_columns.len() as u32 - 1
                }
            })
            .collect();
        (
            label_columns.iter().chain(&o.negatives).copied().collect(),
            Some(positives),
        )
    };
    let in_batch = if o.full_softmax {
        0
    } else if batch.targets.is_empty() {
        n
    } else {
        label_columns.len()
    };
    let c: Vec<f64> = ids
        .iter()
        .flat_map(|&id| table[id as usize * d..(id as usize + 1) * d].to_vec())
        .collect();
    let bias: Option<Vec<f64>> =
        (o.in_batch_bias.is_some() || o.negatives_bias.is_some()).then(|| {
            ids.iter()
                .enumerate()
                .map(|(j, &id)| {
                    let table = if j < in_batch {
                        &o.in_batch_bias
                    } else {
                        &o.negatives_bias
                    };
                    table.as_ref().map_or(0.0, |t| t[id as usize])
                })
                .collect()
        });
    ref_loss(
        &q,
        &c,
        n,
        ids.len(),
        d,
        o.remove_hits.then_some(ids.as_slice()),
        bias.as_deref(),
        positives.as_deref(),
        o.gbce_t.map(|t| {
            // The negatives: the extra ones, or every other item.
            let negatives = ids.len() - in_batch - usize::from(in_batch == 0);
            let beta = loss::gbce_beta(t, negatives, v - 1) as f64;
            // ln(β / negatives), computed independently of the engine's.
            (beta, in_batch, (beta / negatives as f64).ln())
        }),
        o.exclude_history
            .then(|| {
                // A query's read items' columns: every column of them with a
                // full softmax, the distinct label columns otherwise.
                seen.iter()
                    .map(|seen| {
                        (0..ids.len())
                            .filter(|&j| (o.full_softmax || j < in_batch) && seen.contains(&ids[j]))
                            .collect()
                    })
                    .collect::<Vec<Vec<usize>>>()
            })
            .as_deref(),
    ) / o.mean_queries.unwrap_or(n as f64)
}

pub(crate) fn random(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

pub(crate) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Checks `analytic` against central differences of `f` at `x`, on every
/// entry (the sizes here are small).
pub(crate) fn check(name: &str, x: &mut [f64], analytic: &[f32], f: &mut dyn FnMut(&[f64]) -> f64) {
    let n = x.len();
    check_range(name, x, 0..n, analytic, f);
}

/// Checks `analytic` (the gradient of entries `range` of `x`) against
/// central differences of `f`, on every entry.
pub(crate) fn check_range(
    name: &str,
    x: &mut [f64],
    range: std::ops::Range<usize>,
    analytic: &[f32],
    f: &mut dyn FnMut(&[f64]) -> f64,
) {
    assert_eq!(range.len(), analytic.len(), "{name}: gradient size");
    let eps = 1e-5;
    let scale = analytic.iter().fold(0.0f64, |m, &g| m.max(g.abs() as f64));
    assert!(scale > 0.0, "{name}: gradient is all zeros");
    let mut worst = 0.0f64;
    let entries = range.len();
    for (i, &a) in range.zip(analytic) {
        let keep = x[i];
        x[i] = keep + eps;
        let up = f(x);
        x[i] = keep - eps;
        let down = f(x);
        x[i] = keep;
        let numeric = (up - down) / (2.0 * eps);
        let err = (numeric - a as f64).abs() / (1e-3 * scale + numeric.abs());
        worst = worst.max(err);
        assert!(
            err < 2e-3,
            "{name}[{i}]: analytic {a} vs numeric {numeric} (relative error {err:.2e})"
        );
    }
    eprintln!("{name}: worst relative error {worst:.2e} over {entries} entries");
}

#[test]
fn loss_backward_matches_finite_differences() {
    // 70 rows span several tiles; 75 columns add extra negatives; dim 5 is not a
    // multiple of the vector width.
    let (rows, cols, d) = (70, 75, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut q = random(&mut rng, rows * d, 1.0);
    let mut c = random(&mut rng, cols * d, 1.0);
    let ids: Vec<u32> = (0..cols).map(|_| rng.random_range(1..30)).collect();
    let bias = random(&mut rng, cols, 0.5);
    // Each row's positive at a chosen column (sequence training): more
    // rows than columns is then allowed.
    let positives: Vec<u32> = (0..rows)
        .map(|_| rng.random_range(0..cols as u32))
        .collect();
    // Up to 3 excluded columns a row (read items; the positive among them
    // at times, which stays the positive), used with the bias cases.
    let excluded_rows: Vec<Vec<usize>> = (0..rows)
        .map(|_| {
            (0..rng.random_range(0..4))
                .map(|_| rng.random_range(0..cols))
                .collect()
        })
        .collect();
    let excluded_offsets: Vec<u32> = std::iter::once(0)
        .chain(excluded_rows.iter().scan(0u32, |n, e| {
            *n += e.len() as u32;
            Some(*n)
        }))
        .collect();
    let excluded_columns: Vec<u32> = excluded_rows.iter().flatten().map(|&j| j as u32).collect();
    // gBCE: (beta, first negative column).
    for (use_ids, use_bias, threads, use_positives, gbce) in [
        (false, false, 1, false, None),
        (true, true, 2, false, None),
        (false, true, 2, false, None),
        (true, false, 1, false, None),
        (true, true, 2, true, None),
        (false, false, 1, false, Some((1.0f32, 0, 0.0f32))),
        (true, true, 2, true, Some((0.3, 40, -1.7))),
        (false, true, 1, true, Some((0.05, 60, 0.4))),
        (true, true, 2, true, Some((1.0, 40, 0.0))),
    ] {
        let ids_opt = use_ids.then_some(ids.as_slice());
        let bias_opt = use_bias.then_some(bias.as_slice());
        let excl_opt = use_bias.then_some(excluded_rows.as_slice());
        let bias_f32 = to_f32(&bias);
        let (qf, cf) = (to_f32(&q), to_f32(&c));
        let inputs = LossInputs {
            excluded: use_bias
                .then_some((excluded_offsets.as_slice(), excluded_columns.as_slice())),
            q: &qf,
            c: &cf,
            rows,
            cols,
            d,
            column_ids: ids_opt,
            column_bias: use_bias.then_some(bias_f32.as_slice()),
            positives: use_positives.then_some(positives.as_slice()),
            // β = 1 without an offset is plain BCE: checked through its own
            // implementation against the same f64 reference.
            kind: gbce.map_or(
                loss::LossKind::Softmax(loss::Softmax),
                |(beta, first_negative, logit_offset)| {
                    if beta == 1.0 && logit_offset == 0.0 {
                        loss::LossKind::Bce(loss::Bce { first_negative })
                    } else {
                        loss::LossKind::Gbce(loss::Gbce {
                            t: 0.0,
                            beta,
                            first_negative,
                            logit_offset,
                        })
                    }
                },
            ),
        };
        let pos_opt = use_positives.then_some(positives.as_slice());
        let gbce_opt = gbce.map(|(b, first, o)| (b as f64, first, o as f64));
        let reference = |q: &[f64], c: &[f64]| {
            ref_loss(
                q, c, rows, cols, d, ids_opt, bias_opt, pos_opt, gbce_opt, excl_opt,
            )
        };
        let mut dq = vec![0.0f32; rows * d];
        let mut dc = vec![0.0f32; cols * d];
        // Tiles of 32 rows: 70 rows span three tiles (and with two threads,
        // two parts of two tiles each).
        let got = loss::in_batch_softmax_tiled(
            &inputs,
            Some(LossGrads {
                dq: &mut dq,
                dc: &mut dc,
                scale: 1.0,
            }),
            threads,
            32,
        );
        let want = reference(&q, &c);
        assert!(
            (got - want).abs() < 1e-4 * want.abs(),
            "loss {got} vs {want}"
        );
        let without_grads = loss::in_batch_softmax(&inputs, None, threads);
        let one_tile = loss::in_batch_softmax_tiled(&inputs, None, 1, 1000);
        assert!((one_tile - got).abs() < 1e-9 * got.abs());
        assert!((without_grads - got).abs() < 1e-9 * got.abs());
        let c0 = c.clone();
        let q0 = q.clone();
        check("loss dq", &mut q, &dq, &mut |x| reference(x, &c0));
        check("loss dc", &mut c, &dc, &mut |x| reference(&q0, x));
    }
}

#[test]
fn gbce_beta_spans_plain_bce_to_the_sampling_rate() {
    // 100 negatives of 1001 items: alpha = 0.1.
    assert!((loss::gbce_beta(0.0, 100, 1001) - 1.0).abs() < 1e-6);
    assert!((loss::gbce_beta(1.0, 100, 1001) - 0.1).abs() < 1e-6);
    // t = 0.5: alpha (0.5 (1 - 10) + 10) = 0.1 * 5.5.
    assert!((loss::gbce_beta(0.5, 100, 1001) - 0.55).abs() < 1e-6);
    // Every item a negative: alpha = 1, beta = 1 whatever t.
    assert!((loss::gbce_beta(0.75, 1000, 1001) - 1.0).abs() < 1e-6);
}

#[test]
fn gbce_prior_offset_starts_a_new_model_where_the_shift_gradient_vanishes() {
    // beta (1 - sigma(o)) = negatives sigma(o), solved independently.
    for (beta, negatives) in [(0.36f32, 256usize), (1.0, 1681), (0.05, 3)] {
        let o = loss::gbce_prior_offset(beta, negatives) as f64;
        let sig = 1.0 / (1.0 + (-o).exp());
        let (pull, push) = (beta as f64 * (1.0 - sig), negatives as f64 * sig);
        assert!(
            (pull - push).abs() < 1e-5 * push,
            "{beta} {negatives}: {pull} vs {push}"
        );
    }
    // Every score zero (queries orthogonal to one shared candidate vector):
    // a query's gradient is the sum of its row's logit gradients times that
    // vector, zero with the offset and a push down (positive) without it.
    let (rows, negatives, d) = (3, 8, 2);
    let cols = rows + negatives;
    let c: Vec<f32> = (0..cols).flat_map(|_| [1.0f32, 0.0]).collect();
    let q: Vec<f32> = (0..rows).flat_map(|_| [0.0f32, 1.0]).collect();
    let beta = loss::gbce_beta(0.75, negatives, 50);
    for (offset, vanishes) in [
        (loss::gbce_prior_offset(beta, negatives), true),
        (0.0, false),
    ] {
        let (mut dq, mut dc) = (vec![0.0f32; rows * d], vec![0.0f32; cols * d]);
        let inputs = LossInputs {
            q: &q,
            c: &c,
            rows,
            cols,
            d,
            column_ids: None,
            column_bias: None,
            positives: None,
            excluded: None,
            kind: loss::LossKind::Gbce(loss::Gbce {
                t: 0.0,
                beta,
                first_negative: rows,
                logit_offset: offset,
            }),
        };
        let grads = LossGrads {
            dq: &mut dq,
            dc: &mut dc,
            scale: 1.0,
        };
        loss::in_batch_softmax(&inputs, Some(grads), 1);
        for row in 0..rows {
            let shift = dq[row * d];
            if vanishes {
                assert!(shift.abs() < 1e-5, "row {row}: {shift}");
            } else {
                // Half of each negative's weight against half the positive's.
                let want = negatives as f32 * 0.5 - beta * 0.5;
                assert!((shift - want).abs() < 1e-4, "row {row}: {shift} vs {want}");
            }
        }
    }
}

#[test]
fn accidental_hit_removal_ignores_duplicate_labels() {
    // Row 0's label (7) also sits in column 2. With removal, row 0's loss is
    // that of the batch without column 2.
    let d = 3;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = to_f32(&random(&mut rng, 3 * d, 1.0));
    let c = to_f32(&random(&mut rng, 3 * d, 1.0));
    let row_loss = |q: &[f32], c: &[f32], cols: usize, ids: Option<&[u32]>| {
        let inputs = LossInputs {
            q,
            c,
            rows: 1,
            cols,
            d,
            column_ids: ids,
            column_bias: None,
            positives: None,
            excluded: None,
            kind: loss::LossKind::Softmax(loss::Softmax),
        };
        loss::in_batch_softmax(&inputs, None, 1)
    };
    let with_dup = row_loss(&q, &c, 3, Some(&[7, 8, 7]));
    let without_col = row_loss(&q, &c[..2 * d], 2, None);
    assert!(
        (with_dup - without_col).abs() < 1e-6,
        "{with_dup} vs {without_col}"
    );
    let plain = row_loss(&q, &c, 3, None);
    assert!((plain - without_col).abs() > 1e-4);
}

#[test]
fn projection_backward_matches_finite_differences() {
    let (v, d) = (9, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut emb = random(&mut rng, v * d, 1.0);
    let mut w = random(&mut rng, d * 3 * d, 1.0);
    let mut b_in = random(&mut rng, 3 * d, 1.0);
    let upstream = random(&mut rng, v * 3 * d, 1.0);
    let reference = |emb: &[f64], w: &[f64], b: &[f64]| -> f64 {
        let mut s = 0.0;
        for r in 0..v {
            for k in 0..3 * d {
                let p = b[k]
                    + (0..d)
                        .map(|i| emb[r * d + i] * w[i * 3 * d + k])
                        .sum::<f64>();
                s += p * upstream[r * 3 * d + k];
            }
        }
        s
    };
    let mut p = vec![0.0f32; v * 3 * d];
    embedding::project_table(&to_f32(&emb), &to_f32(&w), &to_f32(&b_in), d, &mut p, 1);
    let (mut demb, mut dw, mut db) = (
        vec![0.0f32; v * d],
        vec![0.0f32; d * 3 * d],
        vec![0.0f32; 3 * d],
    );
    embedding::project_table_backward(
        &to_f32(&emb),
        &to_f32(&w),
        &to_f32(&upstream),
        d,
        &mut demb,
        &mut dw,
        &mut db,
        2,
    );
    let (e0, w0, b0) = (emb.clone(), w.clone(), b_in.clone());
    check("projection demb", &mut emb, &demb, &mut |x| {
        reference(x, &w0, &b0)
    });
    check("projection dw", &mut w, &dw, &mut |x| {
        reference(&e0, x, &b0)
    });
    check("projection db_in", &mut b_in, &db, &mut |x| {
        reference(&e0, &w0, x)
    });
}

/// A batch of right-padded contexts with padding ids, like the reference's.
fn small_batch(rng: &mut ChaCha8Rng, size: usize, l: usize, v: usize) -> Batch {
    let mut b = Batch {
        size,
        ..Batch::default()
    };
    for _ in 0..size {
        let real = rng.random_range(1..=l);
        for t in 0..l {
            b.contexts.push(if t < real {
                rng.random_range(1..v as u32)
            } else {
                0
            });
        }
        b.labels.push(rng.random_range(1..v as u32));
        b.lengths.push(real as u32);
    }
    b
}

/// One whole step, the reference's and with every training option, against
/// finite differences of the f64 model.
#[test]
fn whole_training_step_matches_finite_differences() {
    let (v, d, l) = (12, 4, 5);
    let cfg = spec(v, d, l);
    // (batch size, threads, options): the reference; a last small batch on
    // two threads; masking; and every option of "train better" at once.
    // Then sequence training (a loss at every labelled step): softmax over
    // the distinct labels, with every option; gBCE; a full softmax.
    #[derive(PartialEq)]
    enum Mode {
        Window,
        Sequence,
        SequenceGbce,
        SequenceFull,
    }
    // The same for the SASRec tower (2 blocks, 2 heads), right and left
    // padded.
    #[derive(PartialEq, Clone, Copy)]
    enum Tower {
        Gru,
        SasrecRight,
        SasrecLeft,
    }
    use Tower::*;
    let cases: Vec<(usize, usize, bool, bool, bool, Mode, Tower)> = vec![
        (9, 1, false, false, false, Mode::Window, Gru),
        (13, 2, false, false, false, Mode::Window, Gru),
        (6, 2, true, false, false, Mode::Window, Gru),
        (7, 2, true, true, false, Mode::Window, Gru),
        (8, 1, false, false, true, Mode::Window, Gru),
        (6, 2, true, false, false, Mode::Sequence, Gru),
        (7, 3, true, true, true, Mode::Sequence, Gru),
        (5, 2, true, false, false, Mode::SequenceGbce, Gru),
        (6, 1, true, false, true, Mode::SequenceGbce, Gru),
        (5, 2, true, true, false, Mode::SequenceFull, Gru),
        (6, 2, true, false, false, Mode::Window, SasrecRight),
        (7, 2, true, true, true, Mode::Window, SasrecLeft),
        (6, 3, true, false, true, Mode::Sequence, SasrecLeft),
        (5, 1, true, true, false, Mode::Sequence, SasrecRight),
        (5, 2, true, false, true, Mode::SequenceGbce, SasrecLeft),
        (5, 2, true, true, false, Mode::SequenceFull, SasrecRight),
    ];
    for (case, (size, threads, mask_padding, shared, extras, mode, tower)) in
        cases.iter().enumerate()
    {
        let (size, threads, mask_padding, shared, extras, tower) =
            (*size, *threads, *mask_padding, *shared, *extras, *tower);
        let mut rng = ChaCha8Rng::seed_from_u64(case as u64 + 100);
        let mut batch = small_batch(&mut rng, size, l, v);
        if tower == SasrecLeft {
            // Padding first: rotate each row's real items to its end.
            for row in 0..size {
                let n = batch.lengths[row] as usize;
                batch.contexts[row * l..(row + 1) * l].rotate_right(l - n);
            }
        }
        if *mode != Mode::Window {
            // A target at most real steps (a few without one), repeats among
            // them so that distinct-label columns matter.
            batch.targets = (0..size * l)
                .map(|i| {
                    let real = batch.contexts[i] != 0;
                    if real && rng.random_range(0..5) != 0 {
                        rng.random_range(1..6u32)
                    } else {
                        0
                    }
                })
                .collect();
            assert!(batch.targets.iter().any(|&t| t != 0));
        }
        let case_spec = ModelSpec {
            mask_padding,
            shared_embeddings: shared,
            tower: if tower == Gru {
                TowerSpec::Gru
            } else {
                TowerSpec::SasRec {
                    heads: 2,
                    blocks: 2,
                    activation: if case % 2 == 0 {
                        Activation::Relu
                    } else {
                        Activation::Gelu
                    },
                }
            },
            padding: if tower == SasrecLeft {
                Padding::Left
            } else {
                Padding::Right
            },
            ..cfg
        };
        let defs = Params::tensor_defs(&case_spec);
        let mut p64: Vec<Vec<f64>> = defs
            .iter()
            .map(|t| random(&mut rng, t.size(), 0.6))
            .collect();
        if tower != Gru {
            // LayerNorm gains near 1, as trained ones are.
            let init = super::sasrec::init_weights(l, d, 2, &mut rng);
            for (x, w) in p64[1].iter_mut().zip(init) {
                *x = *x * 0.3 + w as f64;
            }
        }
        let params = {
            let mut p = Params::zeros(&case_spec);
            for (dst, src) in p.tensors_mut().zip(&p64) {
                *dst = to_f32(src);
            }
            p
        };
        let full = *mode == Mode::SequenceFull;
        // Read items excluded from the loss: in every sequence case with
        // extras, and every full softmax.
        let exclude_history = (*mode != Mode::Window && extras) || full;
        // The loss over a batch's mean number of queries, in some cases.
        let mean_queries = (*mode != Mode::Window && case % 2 == 1).then_some(7.5f32);
        let gbce_t = (*mode == Mode::SequenceGbce).then_some(0.6f32);
        let negatives: Vec<u32> = if (extras || gbce_t.is_some()) && !full {
            vec![3, 5, 5, 9]
        } else {
            vec![]
        };
        let in_q: Vec<f32> = (0..v).map(|i| -1.0 - 0.1 * i as f32).collect();
        let neg_q: Vec<f32> = (0..v).map(|i| -2.0 + 0.05 * i as f32).collect();
        let step = StepOptions {
            remove_accidental_hits: extras,
            in_batch_log_q: extras.then_some(in_q.as_slice()),
            negatives: &negatives,
            negatives_log_q: extras.then_some(neg_q.as_slice()),
            dropout_input: if extras { 0.3 } else { 0.0 },
            dropout_output: if extras { 0.2 } else { 0.0 },
            dropout_seed: 77,
            loss: gbce_t.map_or(loss::LossKind::Softmax(loss::Softmax), |t| {
                loss::LossKind::Gbce(loss::Gbce::calibrated(t))
            }),
            full_softmax: full,
            tower_dropout: 0.0,
            exclude_history,
            mean_queries,
        };
        let mut ref_opts = RefOptions {
            mask_padding,
            shared,
            full_softmax: full,
            gbce_t,
            exclude_history,
            mean_queries: mean_queries.map(|m| m as f64),
            sasrec: (tower != Gru).then(|| {
                let shape = SasRecShape {
                    batch: size,
                    steps: l,
                    positions: l,
                    first_position: 0,
                    dim: d,
                    heads: 2,
                    blocks: 2,
                    activation: case_spec.tower.flat().3,
                };
                (shape, case_spec)
            }),
            ..RefOptions::default()
        };
        if extras {
            let (mut im, mut om) = (Vec::new(), Vec::new());
            super::dropout_mask(&mut im, v * d, 0.3, 77);
            let queries = if *mode == Mode::Window {
                size
            } else {
                batch.targets.iter().filter(|&&t| t != 0).count()
            };
            super::dropout_mask(&mut om, queries * d, 0.2, 77 ^ 0x5EED_0F0D_D0D0_5EED);
            assert!(
                im.contains(&0.0) && om.contains(&0.0),
                "the masks drop something"
            );
            ref_opts.input_mask = Some(im.iter().map(|&x| x as f64).collect());
            ref_opts.output_mask = Some(om.iter().map(|&x| x as f64).collect());
            ref_opts.remove_hits = true;
            ref_opts.in_batch_bias = Some(in_q.iter().map(|&x| -x as f64).collect());
            ref_opts.negatives_bias = Some(neg_q.iter().map(|&x| -x as f64).collect());
        }
        ref_opts.negatives = negatives.clone();
        let model = Model {
            spec: &case_spec,
            params: &params,
            threads,
        };
        // The GRU's two ways of projecting its inputs, each checked whole.
        let projections = if tower == Gru {
            &[InputProjection::DistinctRows, InputProjection::Tokens][..]
        } else {
            &[InputProjection::Auto][..]
        };
        for &projection in projections {
            let mut sparse = Grads::zeros(&case_spec);
            let mut ws = Workspace::with_tower(GruTower::with_projection(projection).into());
            let got = model.loss_and_grads(&mut ws, &batch, &mut sparse, &step);
            for rows in [&sparse.query_embedding, &sparse.candidate_embedding] {
                let mut ids = rows.ids.clone();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(
                    ids.len(),
                    rows.ids.len(),
                    "case {case} {projection:?}: each row once"
                );
                assert_eq!(rows.values.len(), rows.ids.len() * d);
            }
            let grads = sparse.to_dense(&case_spec);
            let want = ref_model_loss(&p64, &batch, v, d, l, &ref_opts);
            assert!(
                (got - want).abs() < 1e-5,
                "case {case} {projection:?}: loss {got} vs {want}"
            );
            if !extras && *mode == Mode::Window {
                let sum = model.loss_sum(&mut ws, &batch);
                assert!((sum / size as f64 - got).abs() < 1e-6);
            }
            for (i, (g, def)) in grads.tensors().zip(&defs).enumerate() {
                let name = def.name;
                if shared && name == "candidate_embedding" {
                    // Unused with a shared table: its gradient went to the query table.
                    assert!(g.iter().all(|&x| x == 0.0));
                    continue;
                }
                let mut x = p64[i].clone();
                check(
                    &format!("case {case} {projection:?} {name}"),
                    &mut x,
                    g,
                    &mut |x| {
                        let saved = std::mem::replace(&mut p64[i], x.to_vec());
                        let loss = ref_model_loss(&p64, &batch, v, d, l, &ref_opts);
                        p64[i] = saved;
                        loss
                    },
                );
            }
        }
    }
}

#[test]
fn keras_initialisers() {
    let cfg = spec(50, 8, 3);
    let p = Params::init(&cfg, 42);
    assert_eq!(p, Params::init(&cfg, 42));
    assert_ne!(p, Params::init(&cfg, 43));
    assert!(p.query_embedding.iter().all(|x| x.abs() <= 0.05));
    let gru = super::gru::GruTensors::of(&p.tower);
    let limit = (6.0f32 / 32.0).sqrt();
    assert!(gru.kernel.iter().all(|x| x.abs() <= limit));
    assert!(gru.kernel.iter().any(|x| x.abs() > 0.5 * limit));
    // Orthogonal 8 x 24: rows orthonormal.
    let u = gru.recurrent_kernel;
    for i in 0..8 {
        for j in 0..8 {
            let dot: f32 = (0..24).map(|k| u[i * 24 + k] * u[j * 24 + k]).sum();
            assert!(
                (dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5,
                "rows {i},{j}: {dot}"
            );
        }
    }
    assert!(gru
        .input_bias
        .iter()
        .chain(gru.recurrent_bias)
        .all(|&x| x == 0.0));
}

/// A spec of the reference's options with these sizes.
fn spec(vocab_size: usize, dim: usize, context_len: usize) -> ModelSpec {
    ModelOptions {
        embedding_dim: dim,
        context_len,
        ..ModelOptions::default()
    }
    .spec(vocab_size)
}
