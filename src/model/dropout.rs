//! Inverted dropout with counter-based masks: element `i`'s keep decision
//! is a hash of `(seed, i)`, so a mask is the same whatever the thread
//! count or the rows a pass computes.

/// Element `i` of a dropout keep-mask: `1 / (1 - p)` or 0, from a
/// counter-based hash of `(seed, i)`, so it is the same whatever the thread
/// count or the rows computed.
fn dropout_keep(seed: u64, i: u64, p: f32) -> f32 {
    let threshold = (p as f64 * u32::MAX as f64) as u32;
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if (z >> 32) as u32 >= threshold {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

/// A keep-mask of `n` elements scaled by `1 / (1 - p)`.
pub fn dropout_mask(out: &mut Vec<f32>, n: usize, p: f32, seed: u64) {
    out.clear();
    out.extend((0..n as u64).map(|i| dropout_keep(seed, i, p)));
}

/// The rows `ids` of the keep-mask of a `vocab x cols` table
/// (`ids.len() x cols`): the same values `dropout_mask` gives those rows.
pub fn dropout_mask_rows(out: &mut Vec<f32>, ids: &[u32], cols: usize, p: f32, seed: u64) {
    out.clear();
    for &id in ids {
        let start = id as u64 * cols as u64;
        out.extend((0..cols as u64).map(|j| dropout_keep(seed, start + j, p)));
    }
}

/// Inverted dropout in place, `x ⊙= mask`, with a mask from `dropout_mask`.
pub fn dropout_forward(x: &mut [f32], mask: &[f32]) {
    for (x, m) in x.iter_mut().zip(mask) {
        *x *= m;
    }
}

/// The backward of `dropout_forward`, in place: `g ⊙= mask`.
pub fn dropout_backward(g: &mut [f32], mask: &[f32]) {
    for (g, m) in g.iter_mut().zip(mask) {
        *g *= m;
    }
}
