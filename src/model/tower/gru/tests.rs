//! The GRU's maths against finite differences of the f64 reference GRU
//! in `model::gradcheck`, and its two input paths and padding mask bit for
//! bit.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cell::{self as gru, GruCache, GruGradScratch, GruInput, GruShape};
use crate::model::gradcheck::{check, random, ref_gru, to_f32};

#[test]
fn gru_backward_matches_finite_differences() {
    for (d, b, l, masked) in [(4, 3, 5, false), (5, 7, 4, true), (8, 2, 3, false)] {
        let mut rng = ChaCha8Rng::seed_from_u64(7 + d as u64);
        let mut gx = random(&mut rng, l * b * 3 * d, 1.0);
        let mut u = random(&mut rng, d * 3 * d, 0.7);
        let mut b_rec = random(&mut rng, 3 * d, 0.5);
        let mask: Vec<f64> = (0..l * b)
            .map(|i| if i % 3 == 2 { 0.0 } else { 1.0 })
            .collect();
        let mask_f32 = to_f32(&mask);
        let upstream = random(&mut rng, b * d, 1.0);
        let s = GruShape {
            batch: b,
            steps: l,
            hidden: d,
        };
        let mut cache = GruCache::default();
        let m = masked.then_some(mask_f32.as_slice());
        // Identity ids: step t of row b reads row t·b + b of the table, so the
        // projected-table gradient is exactly the gradient of gx.
        let ids: Vec<u32> = (0..(l * b) as u32).collect();
        let gx32 = to_f32(&gx);
        gru::forward(
            GruInput::Projected {
                table: &gx32,
                ids: &ids,
            },
            &to_f32(&u),
            &to_f32(&b_rec),
            m,
            s,
            &mut cache,
        );
        let want = ref_gru(&gx, &u, &b_rec, masked.then_some(mask.as_slice()), b, l, d);
        for (a, w) in cache.output(s).iter().zip(&want) {
            assert!((*a as f64 - w).abs() < 1e-5, "forward {a} vs {w}");
        }
        let mut dgx = vec![0.0f32; gx.len()];
        let mut du = vec![0.0f32; u.len()];
        let mut db = vec![0.0f32; 3 * d];
        gru::backward(
            &to_f32(&upstream),
            None,
            &to_f32(&u),
            m,
            s,
            &cache,
            &mut dgx,
            &mut du,
            &mut db,
            None,
            &mut GruGradScratch::default(),
        );
        let dot = |h: Vec<f64>| h.iter().zip(&upstream).map(|(a, b)| a * b).sum::<f64>();
        let mk = masked.then_some(mask.as_slice());
        let (u0, b0, gx0) = (u.clone(), b_rec.clone(), gx.clone());
        check("gru dgx", &mut gx, &dgx, &mut |x| {
            dot(ref_gru(x, &u0, &b0, mk, b, l, d))
        });
        check("gru du", &mut u, &du, &mut |x| {
            dot(ref_gru(&gx0, x, &b0, mk, b, l, d))
        });
        check("gru db_rec", &mut b_rec, &db, &mut |x| {
            dot(ref_gru(&gx0, &u0, x, mk, b, l, d))
        });
    }
}

#[test]
fn gru_projecting_token_by_token_equals_reading_a_projected_table() {
    // The same inputs two ways: each token's row projected inside the GRU
    // step by step, or `x·W + b_in` of every token computed here (f64) and
    // read from a table by scattered ids.
    let (b, l, d) = (3, 4, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = random(&mut rng, l * b * d, 1.0);
    let w = random(&mut rng, d * 3 * d, 0.5);
    let b_in = random(&mut rng, 3 * d, 0.3);
    let u = to_f32(&random(&mut rng, d * 3 * d, 0.5));
    let b_rec = to_f32(&random(&mut rng, 3 * d, 0.3));
    // Token k's projection sits at table row `perm[k]`.
    let perm: Vec<u32> = (0..(l * b) as u32)
        .map(|k| (k * 7 + 3) % (l * b) as u32)
        .collect();
    let mut table = vec![0.0f32; l * b * 3 * d];
    for (k, &row) in perm.iter().enumerate() {
        for j in 0..3 * d {
            let dot: f64 = (0..d).map(|i| x[k * d + i] * w[i * 3 * d + j]).sum();
            table[row as usize * 3 * d + j] = (dot + b_in[j]) as f32;
        }
    }
    let s = GruShape {
        batch: b,
        steps: l,
        hidden: d,
    };
    let mask: Vec<f32> = (0..l * b)
        .map(|i| if i % 5 == 1 { 0.0 } else { 1.0 })
        .collect();
    let (x, w, b_in) = (to_f32(&x), to_f32(&w), to_f32(&b_in));
    let (mut by_table, mut by_token) = (GruCache::default(), GruCache::default());
    let table_input = GruInput::Projected {
        table: &table,
        ids: &perm,
    };
    let token_input = GruInput::Tokens {
        x: &x,
        w: &w,
        b_in: &b_in,
    };
    gru::forward(table_input, &u, &b_rec, Some(&mask), s, &mut by_table);
    gru::forward(token_input, &u, &b_rec, Some(&mask), s, &mut by_token);
    for (name, a, t) in [
        ("h", &by_table.h, &by_token.h),
        ("z", &by_table.z, &by_token.z),
        ("hh", &by_table.hh, &by_token.hh),
    ] {
        assert_eq!(a.len(), t.len());
        for (p, q) in a.iter().zip(t) {
            assert!((p - q).abs() < 1e-5, "{name}: {p} vs {q}");
        }
    }
    assert!(by_token.output(s).iter().any(|&h| h.abs() > 0.05));
}

#[test]
fn masked_gru_ignores_padding() {
    // With the mask, a sequence's state after [a, b, pad, pad] equals the
    // state after [a, b]; without it, it does not.
    let (d, l) = (4, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let gx_real = random(&mut rng, 2 * 3 * d, 1.0);
    let gx_pad = random(&mut rng, 3 * d, 1.0);
    let u = to_f32(&random(&mut rng, d * 3 * d, 0.7));
    let b_rec = vec![0.1f32; 3 * d];
    let mut gx = to_f32(&gx_real);
    gx.extend(to_f32(&gx_pad));
    gx.extend(to_f32(&gx_pad));
    let short = GruShape {
        batch: 1,
        steps: 2,
        hidden: d,
    };
    let long = GruShape {
        batch: 1,
        steps: l,
        hidden: d,
    };
    let (mut c1, mut c2, mut c3) = (
        GruCache::default(),
        GruCache::default(),
        GruCache::default(),
    );
    let ids = [0, 1, 2, 3];
    let input = |ids| GruInput::Projected { table: &gx, ids };
    gru::forward(input(&ids[..2]), &u, &b_rec, None, short, &mut c1);
    gru::forward(
        input(&ids),
        &u,
        &b_rec,
        Some(&[1.0, 1.0, 0.0, 0.0]),
        long,
        &mut c2,
    );
    gru::forward(input(&ids), &u, &b_rec, None, long, &mut c3);
    assert_eq!(c1.output(short), c2.output(long));
    assert_ne!(c1.output(short), c3.output(long));
}
