//! One thread's share of the GRU tower: a run of consecutive rows of the
//! batch, its windows laid out step-major, the GRU's cache and this run's
//! gradient accumulators. Training runs one chunk per thread; inference
//! runs one per job.

use super::cell::{self, GruCache, GruGradScratch, GruInput, GruShape};
use super::GruTensors;
use crate::model::embedding;
use crate::model::spec::ModelSpec;

/// Where a tower chunk's tokens find their inputs; the chunk's windows
/// index these tables' rows.
#[derive(Clone, Copy)]
pub enum ChunkInput<'a> {
    /// `rows x 3D`: each row's input projection `E[id]·W + b_in`.
    Projected(&'a [f32]),
    /// `rows x D`: the input rows themselves, projected token by token
    /// inside the GRU (`GruInput::Tokens`).
    Rows(&'a [f32]),
}

/// The GRU over one run of consecutive rows: its windows laid out
/// step-major, the padding mask, the GRU's cache for the backward pass and
/// this run's gradient accumulators. Training gives each thread one; the
/// `QueryEncoder` uses the same `forward`.
#[derive(Default)]
pub struct GruChunk {
    pub(super) rows: std::ops::Range<usize>,
    /// Context ids, step-major: `L x rows`.
    pub(super) ids: Vec<u32>,
    /// 1 for a real item, 0 for padding, `L x rows` (masking only).
    pub(super) mask: Vec<f32>,
    pub(super) cache: GruCache,
    pub(super) scratch: GruGradScratch,
    /// `ChunkInput::Rows`: each token's input row, laid out as `ids` (`L x
    /// rows x D`).
    pub(super) token_rows: Vec<f32>,
    /// `D x 3D` and `3D`: of the recurrent kernel and bias, and with
    /// `ChunkInput::Rows` of the input kernel and bias too.
    pub(super) d_recurrent: Vec<f32>,
    pub(super) d_recurrent_bias: Vec<f32>,
    pub(super) d_kernel: Vec<f32>,
    pub(super) d_input_bias: Vec<f32>,
    /// Sequence training: the gradient of every step's state (`L x rows x
    /// D`) and a zero last-state gradient.
    pub(super) d_states: Vec<f32>,
    pub(super) d_last: Vec<f32>,
    /// Sequence training: this chunk's queries in `Queries::steps`.
    pub(super) queries: std::ops::Range<usize>,
}

/// The gradient a tower chunk gets back: of its last states, or of the
/// states at the steps that were queries.
pub(super) enum ChunkGrad<'a> {
    Last(&'a [f32]),
    Steps {
        slots: &'a [u32],
        d_queries: &'a [f32],
    },
}

impl GruChunk {
    fn shape(&self, spec: &ModelSpec) -> GruShape {
        GruShape {
            batch: self.rows.len(),
            steps: spec.context_len,
            hidden: spec.dim,
        }
    }

    /// Runs the tower over `contexts` (`rows x L` windows from
    /// `ModelSpec::cut_window`, or rewritten to touched-row slots), whose
    /// ids are rows of `input`.
    pub fn forward(
        &mut self,
        spec: &ModelSpec,
        gru: GruTensors<&[f32]>,
        input: ChunkInput,
        contexts: &[u32],
    ) {
        let l = spec.context_len;
        let rows = contexts.len() / l;
        self.rows = self.rows.start..self.rows.start + rows;
        self.ids.resize(l * rows, 0);
        for (i, window) in contexts.chunks_exact(l).enumerate() {
            for (t, &id) in window.iter().enumerate() {
                self.ids[t * rows + i] = id;
            }
        }
        if spec.mask_padding {
            self.mask.clear();
            self.mask
                .extend(self.ids.iter().map(|&id| if id == 0 { 0.0 } else { 1.0 }));
        }
        let mask = spec.mask_padding.then_some(self.mask.as_slice());
        let shape = self.shape(spec);
        let d = spec.dim;
        let input = match input {
            ChunkInput::Projected(table) => GruInput::Projected {
                table,
                ids: &self.ids,
            },
            ChunkInput::Rows(table) => {
                self.token_rows.resize(self.ids.len() * d, 0.0);
                embedding::gather_rows_serial(table, d, &self.ids, &mut self.token_rows);
                GruInput::Tokens {
                    x: &self.token_rows,
                    w: gru.kernel,
                    b_in: gru.input_bias,
                }
            }
        };
        cell::forward(
            input,
            gru.recurrent_kernel,
            gru.recurrent_bias,
            mask,
            shape,
            &mut self.cache,
        );
    }

    /// The query vectors of the last `forward`, `rows x D`.
    pub fn output(&self, spec: &ModelSpec) -> &[f32] {
        self.cache.output(self.shape(spec))
    }

    /// The tower's state after step `t` of this chunk's row `i`, `D`: the
    /// query for the item after that step (sequence training).
    pub(super) fn state_after(&self, spec: &ModelSpec, t: usize, i: usize) -> &[f32] {
        let (n, d) = (self.rows.len() * spec.dim, spec.dim);
        &self.cache.h[(t + 1) * n + i * d..(t + 1) * n + (i + 1) * d]
    }

    /// Back-propagates `d_out` (`rows x D`), or in sequence training the
    /// queries' gradients `d_queries` at the steps `slots` (`row · L +
    /// t`, this chunk's rows), into this chunk's accumulators and
    /// `d_inputs`, the gradient of each of its tokens' input projection (`L
    /// x rows x 3D`, laid out as `ids`); given `d_rows` (after a
    /// `ChunkInput::Rows` forward), through the projection too, into
    /// `d_rows` (`L x rows x D`, each token's input-row gradient) and this
    /// chunk's `d_kernel` and `d_input_bias`.
    pub(super) fn backward(
        &mut self,
        spec: &ModelSpec,
        gru: GruTensors<&[f32]>,
        d_out: ChunkGrad,
        d_inputs: &mut [f32],
        d_rows: Option<&mut [f32]>,
    ) {
        let d = spec.dim;
        let shape = self.shape(spec);
        self.d_recurrent.clear();
        self.d_recurrent.resize(d * 3 * d, 0.0);
        self.d_recurrent_bias.clear();
        self.d_recurrent_bias.resize(3 * d, 0.0);
        let mask = spec.mask_padding.then_some(self.mask.as_slice());
        let (rows, l) = (self.rows.len(), spec.context_len);
        let (d_out, d_states) = match d_out {
            ChunkGrad::Last(d_out) => (d_out, None),
            ChunkGrad::Steps { slots, d_queries } => {
                self.d_states.clear();
                self.d_states.resize(l * rows * d, 0.0);
                for (&slot, g) in slots.iter().zip(d_queries.chunks_exact(d)) {
                    let (row, t) = (slot as usize / l - self.rows.start, slot as usize % l);
                    self.d_states[(t * rows + row) * d..(t * rows + row + 1) * d]
                        .copy_from_slice(g);
                }
                self.d_last.clear();
                self.d_last.resize(rows * d, 0.0);
                (self.d_last.as_slice(), Some(self.d_states.as_slice()))
            }
        };
        let tokens = d_rows.map(|dx| {
            self.d_kernel.clear();
            self.d_kernel.resize(d * 3 * d, 0.0);
            self.d_input_bias.clear();
            self.d_input_bias.resize(3 * d, 0.0);
            cell::TokenGrads {
                x: &self.token_rows,
                w: gru.kernel,
                dw: &mut self.d_kernel,
                db_in: &mut self.d_input_bias,
                dx,
            }
        });
        cell::backward(
            d_out,
            d_states,
            gru.recurrent_kernel,
            mask,
            shape,
            &self.cache,
            d_inputs,
            &mut self.d_recurrent,
            &mut self.d_recurrent_bias,
            tokens,
            &mut self.scratch,
        );
    }
}
