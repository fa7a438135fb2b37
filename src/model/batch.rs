//! Batches: the input windows of a run of examples, cut from the sequences
//! only when the batch is made, through the spec's one window function
//! (`ModelSpec::cut_window`), the same one that serving uses.

use super::spec::ModelSpec;
use crate::data::{ExampleSet, Sequences};

/// `size` examples: `contexts` is `size x context_len` ids (0 = padding),
/// `lengths` the number of real items in each context. In sequence
/// training, `targets` (`size x context_len`) holds the label of every step
/// (the item after the step's item; 0 where the step has none to learn)
/// and `labels` each row's last one.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub size: usize,
    pub contexts: Vec<u32>,
    pub labels: Vec<u32>,
    pub lengths: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    /// Whether the loss is taken at every step (`fill_sequence_batch`).
    pub fn is_sequence(&self) -> bool {
        !self.targets.is_empty()
    }
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
    batch.targets.clear();
    for (row, &p) in positions.iter().enumerate() {
        let window = &mut batch.contexts[row * l..(row + 1) * l];
        let n = spec.cut_window(history_before(seqs, p), window);
        batch.labels.push(seqs.items[p as usize]);
        batch.lengths.push(n as u32);
    }
}

/// Sequence training's rows: each user's run of train label positions cut,
/// from its end, into pieces of at most `context_len` labels; a row is named
/// by its last label position. Every train label is in exactly one row,
/// and a row reads only items before its labels.
pub fn sequence_row_ends(spec: &ModelSpec, seqs: &Sequences, train: &ExampleSet) -> Vec<u32> {
    let l = spec.context_len as u32;
    let mut ends = Vec::new();
    let positions = &train.label_pos;
    let mut i = 0;
    while i < positions.len() {
        // A run: consecutive positions of one sequence.
        let s = seqs.sequence_of(positions[i]);
        let mut j = i + 1;
        while j < positions.len()
            && positions[j] == positions[j - 1] + 1
            && positions[j] < seqs.offsets[s + 1]
        {
            j += 1;
        }
        let (first, last) = (positions[i], positions[j - 1]);
        let mut end = last as i64;
        while end >= first as i64 {
            ends.push(end as u32);
            end -= l as i64;
        }
        i = j;
    }
    ends.sort_unstable();
    ends
}

/// Fills `batch` with the sequence-training rows `ends` (from
/// `sequence_row_ends`): row `end`'s window is the history before `end`,
/// and each real step's target the item after it, so the row learns the
/// labels `(end − n, end]` for its `n` real items. Train labels start at
/// each sequence's second item (`Sequences::split_last*`), so these are all
/// train labels, and the rows of one run do not overlap.
pub fn fill_sequence_batch(spec: &ModelSpec, seqs: &Sequences, ends: &[u32], batch: &mut Batch) {
    let l = spec.context_len;
    fill_batch(spec, seqs, ends, batch);
    batch.targets.clear();
    batch.targets.resize(ends.len() * l, 0);
    for (row, &end) in ends.iter().enumerate() {
        let n = batch.lengths[row] as usize;
        let offset = match spec.padding {
            crate::model::Padding::Right => 0,
            crate::model::Padding::Left => l - n,
        };
        // The k-th real item of the window sits at position end − n + k;
        // its target is the next position's item.
        for k in 0..n {
            let id = seqs.items[end as usize - n + k + 1];
            batch.targets[row * l + offset + k] = if (id as usize) < spec.vocab_size {
                id
            } else {
                0
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelOptions, Padding};

    /// Every train label is learnt exactly once, at the step right after
    /// the item before it, and no row reads a test item.
    #[test]
    fn sequence_rows_cover_every_train_label_once_from_the_items_before_it() {
        let mut seqs = Sequences::default();
        seqs.offsets.push(0);
        // Lengths 2 (one train label), 5, 12 and 13: pieces of 4 labels.
        for (user, len) in [2u32, 5, 12, 13].into_iter().enumerate() {
            seqs.items
                .extend((0..len).map(|k| 100 * (user as u32 + 1) + k));
            seqs.offsets.push(seqs.items.len() as u32);
            seqs.users.push(user as u32);
        }
        let (train, test) = seqs.split_last();
        for padding in [Padding::Left, Padding::Right] {
            let spec = ModelOptions {
                context_len: 4,
                padding,
                ..ModelOptions::default()
            }
            .spec(2000);
            let ends = sequence_row_ends(&spec, &seqs, &train);
            let mut batch = Batch::default();
            fill_sequence_batch(&spec, &seqs, &ends, &mut batch);
            let mut learnt = Vec::new();
            for row in 0..batch.size {
                let window = &batch.contexts[row * 4..(row + 1) * 4];
                let targets = &batch.targets[row * 4..(row + 1) * 4];
                for t in 0..4 {
                    if targets[t] == 0 {
                        assert_eq!(window[t], 0, "only padding has no target");
                        continue;
                    }
                    // Items are numbered in order within a user: the target
                    // is the item right after the step's item.
                    assert_eq!(targets[t], window[t] + 1, "{padding:?} row {row}");
                    learnt.push(targets[t]);
                }
            }
            learnt.sort_unstable();
            let mut want: Vec<u32> = train
                .label_pos
                .iter()
                .map(|&p| seqs.items[p as usize])
                .collect();
            want.sort_unstable();
            assert_eq!(learnt, want, "{padding:?}");
            for &p in &test.label_pos {
                assert!(!batch.contexts.contains(&seqs.items[p as usize]));
            }
        }
    }
}
