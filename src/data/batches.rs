//! Batches: the context windows of a run of examples, cut from the sequences
//! only when the batch is made.

use super::sequences::{ExampleSet, Sequences};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// The reference: real items first, then padding ids (0).
    #[default]
    Right,
    /// Padding first, so the newest item is always the last GRU step.
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub context_len: usize,
    pub padding: Padding,
}

/// `size` examples: `contexts` is `size x context_len` ids (0 = padding),
/// `lengths` the number of real items in each context.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub size: usize,
    pub context_len: usize,
    pub contexts: Vec<u32>,
    pub labels: Vec<u32>,
    pub lengths: Vec<u32>,
}

impl Batch {
    pub fn context(&self, row: usize) -> &[u32] {
        &self.contexts[row * self.context_len..(row + 1) * self.context_len]
    }
}

/// Writes the window before `label_pos` into `out` (length `context_len`),
/// padded with 0 on the side `spec` says; returns the number of real items.
pub fn cut_window(seqs: &Sequences, label_pos: u32, spec: WindowSpec, out: &mut [u32]) -> u32 {
    let s = seqs.sequence_of(label_pos);
    let start = seqs.offsets[s].max(label_pos.saturating_sub(spec.context_len as u32));
    let real = &seqs.items[start as usize..label_pos as usize];
    out.fill(0);
    match spec.padding {
        Padding::Right => out[..real.len()].copy_from_slice(real),
        Padding::Left => out[spec.context_len - real.len()..].copy_from_slice(real),
    }
    real.len() as u32
}

/// Fills `batch` with the examples `positions` (label positions).
pub fn fill_batch(seqs: &Sequences, positions: &[u32], spec: WindowSpec, batch: &mut Batch) {
    let l = spec.context_len;
    batch.size = positions.len();
    batch.context_len = l;
    batch.contexts.resize(positions.len() * l, 0);
    batch.labels.clear();
    batch.lengths.clear();
    for (row, &p) in positions.iter().enumerate() {
        let n = cut_window(seqs, p, spec, &mut batch.contexts[row * l..(row + 1) * l]);
        batch.labels.push(seqs.items[p as usize]);
        batch.lengths.push(n);
    }
}

/// Batches of `examples` in order, the last one smaller.
pub fn batches<'a>(
    seqs: &'a Sequences,
    examples: &'a ExampleSet,
    batch_size: usize,
    spec: WindowSpec,
) -> impl Iterator<Item = Batch> + 'a {
    examples
        .label_pos
        .chunks(batch_size.max(1))
        .map(move |chunk| {
            let mut b = Batch::default();
            fill_batch(seqs, chunk, spec, &mut b);
            b
        })
}
