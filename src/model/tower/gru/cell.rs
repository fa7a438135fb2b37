//! The Keras 3 GRU (`reset_after=True`, gate order z, r, h) over a batch of
//! sequences, forward and backward, as in llm.c: plain slices, one fused
//! element-wise kernel per direction, matrix products through `gemm`.
//!
//! Per step, with `gx = x·W + b_in` (read from a table projected once per
//! distinct row a batch reads, see `embedding`, or projected here step by
//! step where most tokens are distinct rows: `GruInput`) and `gh = h·U +
//! b_rec`:
//!   z = σ(gx_z + gh_z), r = σ(gx_r + gh_r), ĥ = tanh(gx_h + r ⊙ gh_h),
//!   h' = z ⊙ h + (1 − z) ⊙ ĥ,
//! and where a mask is given, a padding step keeps the state: h' = h.

use crate::kernels::{
    self, add_column_sums, dispatch, matmul, prefetch_row_ahead, sigmoid, tanh, Mat, Output,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruShape {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
}

/// What the forward pass keeps for the backward pass, step-major:
/// `h` holds the `steps + 1` states (the first all zeros), the others the
/// gates of each step.
#[derive(Debug, Default, Clone)]
pub struct GruCache {
    pub h: Vec<f32>,
    pub z: Vec<f32>,
    pub r: Vec<f32>,
    pub hh: Vec<f32>,
    /// The recurrent part of the candidate's pre-activation, `h·U_h + b_rec_h`.
    pub gh_h: Vec<f32>,
    gh: Vec<f32>,
    /// `GruInput::Tokens`: one step's input projection, and the row
    /// numbers `0..batch` that `cell_forward` reads it by.
    gx: Vec<f32>,
    rows: Vec<u32>,
}

impl GruCache {
    /// The last state, `batch x hidden`: the query embeddings.
    pub fn output(&self, shape: GruShape) -> &[f32] {
        let n = shape.batch * shape.hidden;
        &self.h[shape.steps * n..(shape.steps + 1) * n]
    }

    fn resize(&mut self, s: GruShape) {
        let n = s.batch * s.hidden;
        self.h.resize((s.steps + 1) * n, 0.0);
        for v in [&mut self.z, &mut self.r, &mut self.hh, &mut self.gh_h] {
            v.resize(s.steps * n, 0.0);
        }
        self.gh.resize(3 * n, 0.0);
    }
}

dispatch! {
    /// One step for every row: reads each row's input projection straight
    /// from the projected table (`ids` picks the rows), writes the gates and
    /// the next state.
    fn cell_forward(
        projected: &[f32],
        ids: &[u32],
        gh: &[f32],
        b_rec: &[f32],
        h: &[f32],
        mask: Option<&[f32]>,
        d: usize,
        z: &mut [f32],
        r: &mut [f32],
        hh: &mut [f32],
        gh_h: &mut [f32],
        h_next: &mut [f32],
    ) {
        let (bz, br, bh) = (&b_rec[..d], &b_rec[d..2 * d], &b_rec[2 * d..3 * d]);
        for (b, &id) in ids.iter().enumerate() {
            prefetch_row_ahead(projected, 3 * d, ids, b);
            let gx = &projected[id as usize * 3 * d..(id as usize + 1) * 3 * d];
            let (gxz, gxr, gxh) = (&gx[..d], &gx[d..2 * d], &gx[2 * d..]);
            let g = &gh[b * 3 * d..(b + 1) * 3 * d];
            let (ghz, ghr, ghh) = (&g[..d], &g[d..2 * d], &g[2 * d..]);
            let keep = mask.map_or(1.0, |m| m[b]);
            let o = b * d..(b + 1) * d;
            let h = &h[o.clone()];
            let z = &mut z[o.clone()];
            let r = &mut r[o.clone()];
            let hh = &mut hh[o.clone()];
            let gh_h = &mut gh_h[o.clone()];
            let h_next = &mut h_next[o];
            for j in 0..d {
                let zj = sigmoid(gxz[j] + ghz[j] + bz[j]);
                let rj = sigmoid(gxr[j] + ghr[j] + br[j]);
                let ghj = ghh[j] + bh[j];
                let hj = tanh(gxh[j] + rj * ghj);
                let new = zj * h[j] + (1.0 - zj) * hj;
                z[j] = zj;
                r[j] = rj;
                hh[j] = hj;
                gh_h[j] = ghj;
                h_next[j] = keep * new + (1.0 - keep) * h[j];
            }
        }
    }
}

dispatch! {
    /// One step back for every row: from the gradient of the next state to
    /// the gradients of the step's pre-activations (`dgx`, `dgh`) and of the
    /// previous state (its direct part; `dgh·Uᵀ` is added by the caller).
    fn cell_backward(
        dh_next: &[f32],
        h: &[f32],
        z: &[f32],
        r: &[f32],
        hh: &[f32],
        gh_h: &[f32],
        mask: Option<&[f32]>,
        d: usize,
        dgx: &mut [f32],
        dgh: &mut [f32],
        dh: &mut [f32],
    ) {
        let rows = h.len() / d;
        for b in 0..rows {
            let keep = mask.map_or(1.0, |m| m[b]);
            let o = b * d..(b + 1) * d;
            let dh_next = &dh_next[o.clone()];
            let h = &h[o.clone()];
            let z = &z[o.clone()];
            let r = &r[o.clone()];
            let hh = &hh[o.clone()];
            let gh_h = &gh_h[o.clone()];
            let dh = &mut dh[o];
            let dgx = &mut dgx[b * 3 * d..(b + 1) * 3 * d];
            let (dgx_z, rest) = dgx.split_at_mut(d);
            let (dgx_r, dgx_h) = rest.split_at_mut(d);
            let dgh = &mut dgh[b * 3 * d..(b + 1) * 3 * d];
            let (dgh_z, rest) = dgh.split_at_mut(d);
            let (dgh_r, dgh_h) = rest.split_at_mut(d);
            for j in 0..d {
                let dn = dh_next[j] * keep;
                let dz = dn * (h[j] - hh[j]);
                let da_h = dn * (1.0 - z[j]) * (1.0 - hh[j] * hh[j]);
                let dr = da_h * gh_h[j];
                let da_z = dz * z[j] * (1.0 - z[j]);
                let da_r = dr * r[j] * (1.0 - r[j]);
                dgx_z[j] = da_z;
                dgx_r[j] = da_r;
                dgx_h[j] = da_h;
                dgh_z[j] = da_z;
                dgh_r[j] = da_r;
                dgh_h[j] = da_h * r[j];
                dh[j] = dn * z[j] + dh_next[j] * (1.0 - keep);
            }
        }
    }
}

/// Where step `t` of row `b` finds its input projection `x·W + b_in`
/// (`3·hidden` wide).
#[derive(Clone, Copy)]
pub enum GruInput<'a> {
    /// Row `ids[t·batch + b]` of `table`, projected beforehand for every
    /// distinct row a batch reads: cheap when few rows recur often.
    Projected { table: &'a [f32], ids: &'a [u32] },
    /// Projected here, one step at a time: row `t·batch + b` of `x`
    /// (`steps x batch x hidden`) times `w` (`hidden x 3·hidden`) plus
    /// `b_in`. Where most tokens are distinct rows (big catalogues), this
    /// does about the same products and keeps each step's projection in
    /// cache instead of reading rows scattered over a large table.
    Tokens {
        x: &'a [f32],
        w: &'a [f32],
        b_in: &'a [f32],
    },
}

/// Runs the GRU from a zero state over `input`; `u` is the recurrent kernel
/// (`hidden x 3·hidden`), `b_rec` its bias; `mask`, when given, is `steps x
/// batch` with 1 for a real item and 0 for padding.
pub fn forward(
    input: GruInput,
    u: &[f32],
    b_rec: &[f32],
    mask: Option<&[f32]>,
    s: GruShape,
    cache: &mut GruCache,
) {
    cache.resize(s);
    let (b, d) = (s.batch, s.hidden);
    let n = b * d;
    match input {
        GruInput::Projected { table, ids } => {
            assert!(
                ids.len() >= s.steps * b,
                "gru: {} ids for {} steps of {b}",
                ids.len(),
                s.steps
            );
            assert!(
                ids.iter().all(|&i| (i as usize + 1) * 3 * d <= table.len()),
                "gru: id outside the projected table"
            );
        }
        GruInput::Tokens { x, w, b_in } => {
            assert!(
                x.len() >= s.steps * n && w.len() == 3 * d * d && b_in.len() == 3 * d,
                "gru: token inputs are steps x batch x hidden"
            );
            cache.gx.resize(3 * n, 0.0);
            cache.rows.clear();
            cache.rows.extend(0..b as u32);
        }
    }
    cache.h[..n].fill(0.0);
    for t in 0..s.steps {
        let (h_prev, h_rest) = cache.h[t * n..].split_at_mut(n);
        // gh (b x 3d) = h_prev (b x d) · u (d x 3d).
        matmul(
            &mut cache.gh,
            Mat::new(h_prev, b, d),
            Mat::new(u, d, 3 * d),
            Output::Overwrite,
            1,
        );
        let (projected, ids) = match input {
            GruInput::Projected { table, ids } => (table, &ids[t * b..(t + 1) * b]),
            GruInput::Tokens { x, w, b_in } => {
                // gx (b x 3d) = x_t (b x d) · w (d x 3d) + b_in.
                matmul(
                    &mut cache.gx,
                    Mat::new(&x[t * n..(t + 1) * n], b, d),
                    Mat::new(w, d, 3 * d),
                    Output::Overwrite,
                    1,
                );
                for row in cache.gx.chunks_exact_mut(3 * d) {
                    kernels::add_assign(row, b_in);
                }
                (cache.gx.as_slice(), cache.rows.as_slice())
            }
        };
        let gate = t * n..(t + 1) * n;
        cell_forward(
            projected,
            ids,
            &cache.gh,
            b_rec,
            h_prev,
            mask.map(|m| &m[t * b..(t + 1) * b]),
            d,
            &mut cache.z[gate.clone()],
            &mut cache.r[gate.clone()],
            &mut cache.hh[gate.clone()],
            &mut cache.gh_h[gate],
            &mut h_rest[..n],
        );
    }
}

/// Scratch buffers of the backward pass, reused across calls.
#[derive(Debug, Default, Clone)]
pub struct GruGradScratch {
    dh: Vec<f32>,
    dh_prev: Vec<f32>,
    dgh: Vec<f32>,
}

/// The backward of `GruInput::Tokens`, done step by step while each step's
/// `d(x·W + b_in)` is in cache: `x` and `w` as given to `forward`, and
/// where to add `dw` (`hidden x 3·hidden`) and `db_in` (`3·hidden`) and
/// write `dx` (each token's input-row gradient, laid out as `x`).
pub struct TokenGrads<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub dw: &'a mut [f32],
    pub db_in: &'a mut [f32],
    pub dx: &'a mut [f32],
}

/// Back-propagates `d_out` (the gradient of the last state) and, when
/// given, `d_states` (the gradient of the state after each step, `steps x
/// batch x hidden`: sequence training reads every step) through the steps. Writes the gradient of each step's input projection into
/// `d_inputs` (`steps x batch x 3·hidden`, step-major like `forward`'s
/// `ids`: one row per token, summed per projected row by the caller), and
/// adds into `du` and `db_rec`; with `tokens`, through the input projection
/// too.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d_out: &[f32],
    d_states: Option<&[f32]>,
    u: &[f32],
    mask: Option<&[f32]>,
    s: GruShape,
    cache: &GruCache,
    d_inputs: &mut [f32],
    du: &mut [f32],
    db_rec: &mut [f32],
    mut tokens: Option<TokenGrads>,
    scratch: &mut GruGradScratch,
) {
    let (b, d) = (s.batch, s.hidden);
    let n = b * d;
    assert_eq!(
        d_inputs.len(),
        s.steps * 3 * n,
        "gru: d_inputs is steps x batch x 3d"
    );
    scratch.dh.clear();
    scratch.dh.extend_from_slice(&d_out[..n]);
    scratch.dh_prev.resize(n, 0.0);
    scratch.dgh.resize(3 * n, 0.0);
    for t in (0..s.steps).rev() {
        if let Some(d_states) = d_states {
            kernels::add_assign(&mut scratch.dh, &d_states[t * n..(t + 1) * n]);
        }
        let h_prev = &cache.h[t * n..(t + 1) * n];
        let gate = t * n..(t + 1) * n;
        cell_backward(
            &scratch.dh,
            h_prev,
            &cache.z[gate.clone()],
            &cache.r[gate.clone()],
            &cache.hh[gate.clone()],
            &cache.gh_h[gate],
            mask.map(|m| &m[t * b..(t + 1) * b]),
            d,
            &mut d_inputs[t * 3 * n..(t + 1) * 3 * n],
            &mut scratch.dgh,
            &mut scratch.dh_prev,
        );
        // du (d x 3d) += h_prevᵀ (d x b) · dgh (b x 3d).
        matmul(
            du,
            Mat::new(h_prev, b, d).t(),
            Mat::new(&scratch.dgh, b, 3 * d),
            Output::Accumulate,
            1,
        );
        add_column_sums(db_rec, &scratch.dgh, 3 * d);
        if let Some(g) = tokens.as_mut() {
            let dgx = &d_inputs[t * 3 * n..(t + 1) * 3 * n];
            // dw (d x 3d) += x_tᵀ (d x b) · dgx (b x 3d); dx_t = dgx · wᵀ.
            matmul(
                g.dw,
                Mat::new(&g.x[t * n..(t + 1) * n], b, d).t(),
                Mat::new(dgx, b, 3 * d),
                Output::Accumulate,
                1,
            );
            add_column_sums(g.db_in, dgx, 3 * d);
            matmul(
                &mut g.dx[t * n..(t + 1) * n],
                Mat::new(dgx, b, 3 * d),
                Mat::new(g.w, d, 3 * d).t(),
                Output::Overwrite,
                1,
            );
        }
        // dh_prev (b x d) += dgh (b x 3d) · uᵀ (3d x d).
        matmul(
            &mut scratch.dh_prev,
            Mat::new(&scratch.dgh, b, 3 * d),
            Mat::new(u, d, 3 * d).t(),
            Output::Accumulate,
            1,
        );
        std::mem::swap(&mut scratch.dh, &mut scratch.dh_prev);
    }
}
