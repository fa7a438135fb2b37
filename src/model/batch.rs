//! Batches: the input windows of a run of examples, cut from the sequences
//! only when the batch is made, through the spec's one window function
//! (`ModelSpec::cut_window`), the same one that serving uses.

use super::spec::ModelSpec;
use crate::data::{ExampleSet, Sequences};

/// `size` examples: `contexts` is `size x context_len` ids (0 = padding),
/// `lengths` the number of real items in each context.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub size: usize,
    pub contexts: Vec<u32>,
    pub labels: Vec<u32>,
    pub lengths: Vec<u32>,
}

/// The items a user picked before the one at `label_pos`, oldest first.
pub fn history_before(seqs: &Sequences, label_pos: u32) -> &[u32] {
    let s = seqs.sequence_of(label_pos);
    &seqs.items[seqs.offsets[s] as usize..label_pos as usize]
}

/// Fills `batch` with the examples `positions` (label positions).
pub fn fill_batch(spec: &ModelSpec, seqs: &Sequences, positions: &[u32], batch: &mut Batch) {
    let l = spec.context_len;
    batch.size = positions.len();
    batch.contexts.resize(positions.len() * l, 0);
    batch.labels.clear();
    batch.lengths.clear();
    for (row, &p) in positions.iter().enumerate() {
        let window = &mut batch.contexts[row * l..(row + 1) * l];
        let n = spec.cut_window(history_before(seqs, p), window);
        batch.labels.push(seqs.items[p as usize]);
        batch.lengths.push(n as u32);
    }
}

/// Batches of `examples` in order, the last one smaller.
pub fn batches<'a>(
    spec: &'a ModelSpec,
    seqs: &'a Sequences,
    examples: &'a ExampleSet,
    batch_size: usize,
) -> impl Iterator<Item = Batch> + 'a {
    examples
        .label_pos
        .chunks(batch_size.max(1))
        .map(move |chunk| {
            let mut b = Batch::default();
            fill_batch(spec, seqs, chunk, &mut b);
            b
        })
}
