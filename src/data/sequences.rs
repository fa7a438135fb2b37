//! Per-user sequences and the reference's train/test examples.
//!
//! Each kept rating is stored once, in `Sequences::items` (users one after
//! another, each in time order). An example is just the position of its label
//! in that array; its context window is cut when a batch is made.

use rayon::prelude::*;

use super::table::{DataError, Interactions};

/// Users' item sequences, concatenated. Sequence `s` is
/// `items[offsets[s]..offsets[s + 1]]`, in time order (ties in file order).
#[derive(Debug, Clone, Default)]
pub struct Sequences {
    pub offsets: Vec<u32>,
    pub items: Vec<u32>,
    /// The dense user index (into `Interactions::user_keys`) of each sequence.
    pub users: Vec<u32>,
}

impl Sequences {
    /// Groups ratings by user in order of first appearance, sorts each user's
    /// ratings by timestamp with a stable sort, and drops users with fewer
    /// than `min_len` ratings.
    pub fn build(inter: &Interactions, min_len: usize) -> Result<Sequences, DataError> {
        let n = inter.len();
        if n >= u32::MAX as usize {
            return Err(DataError::Invalid(format!(
                "{n} ratings: at most {} are supported",
                u32::MAX - 1
            )));
        }
        let n_users = inter.user_keys.len();
        let mut counts = vec![0u32; n_users + 1];
        for &u in &inter.users {
            counts[u as usize + 1] += 1;
        }
        for u in 0..n_users {
            counts[u + 1] += counts[u];
        }
        let starts = counts;
        // Counting sort by user keeps file order within a user.
        let mut order = vec![0u32; n];
        let mut next = starts.clone();
        for (i, &u) in inter.users.iter().enumerate() {
            let slot = &mut next[u as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        let mut segments: Vec<&mut [u32]> = Vec::with_capacity(n_users);
        let mut rest = order.as_mut_slice();
        for u in 0..n_users {
            let len = (starts[u + 1] - starts[u]) as usize;
            let (head, tail) = rest.split_at_mut(len);
            segments.push(head);
            rest = tail;
        }
        let ts = &inter.timestamps;
        segments
            .par_iter_mut()
            .with_min_len(64)
            .for_each(|seg| seg.sort_by_key(|&i| ts[i as usize]));

        let mut seqs = Sequences {
            offsets: vec![0],
            items: Vec::with_capacity(n),
            users: Vec::new(),
        };
        for u in 0..n_users {
            let seg = &order[starts[u] as usize..starts[u + 1] as usize];
            if seg.len() < min_len.max(2) {
                continue;
            }
            seqs.items
                .extend(seg.iter().map(|&i| inter.items[i as usize]));
            seqs.offsets.push(seqs.items.len() as u32);
            seqs.users.push(u as u32);
        }
        seqs.items.shrink_to_fit();
        Ok(seqs)
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, s: usize) -> &[u32] {
        &self.items[self.offsets[s] as usize..self.offsets[s + 1] as usize]
    }

    /// The sequence holding the item at `pos`.
    pub fn sequence_of(&self, pos: u32) -> usize {
        self.offsets.partition_point(|&o| o <= pos) - 1
    }

    /// The reference's split: for every user, each position from the second
    /// on is an example's label; the last one is the user's test example.
    pub fn split_last(&self) -> (ExampleSet, ExampleSet) {
        let train_n = self.items.len() - 2 * self.len();
        let mut train = Vec::with_capacity(train_n);
        let mut test = Vec::with_capacity(self.len());
        for s in 0..self.len() {
            let (a, b) = (self.offsets[s], self.offsets[s + 1]);
            train.extend(a + 1..b - 1);
            test.push(b - 1);
        }
        (
            ExampleSet { label_pos: train },
            ExampleSet { label_pos: test },
        )
    }
}

impl Sequences {
    /// The split with a validation set carved from train: each user's
    /// second-to-last item is their validation label, the last stays the
    /// test label, and the rest train. Users whose sequence is too short to
    /// give all three keep their examples in train and test only.
    pub fn split_last_two(&self) -> (ExampleSet, ExampleSet, ExampleSet) {
        let mut train = Vec::with_capacity(self.items.len());
        let mut valid = Vec::with_capacity(self.len());
        let mut test = Vec::with_capacity(self.len());
        for s in 0..self.len() {
            let (a, b) = (self.offsets[s], self.offsets[s + 1]);
            if b - a >= 3 {
                train.extend(a + 1..b - 2);
                valid.push(b - 2);
            } else {
                train.extend(a + 1..b - 1);
            }
            test.push(b - 1);
        }
        (
            ExampleSet { label_pos: train },
            ExampleSet { label_pos: valid },
            ExampleSet { label_pos: test },
        )
    }
}

/// A list of examples, each the position of its label in `Sequences::items`.
#[derive(Debug, Clone, Default)]
pub struct ExampleSet {
    pub label_pos: Vec<u32>,
}

impl ExampleSet {
    pub fn len(&self) -> usize {
        self.label_pos.len()
    }
    pub fn is_empty(&self) -> bool {
        self.label_pos.is_empty()
    }
    pub fn num_batches(&self, batch_size: usize) -> usize {
        self.len().div_ceil(batch_size)
    }
}

/// Every training user's whole history (oldest first), so `--user ID` and
/// seen-item exclusion work from the model file alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserHistories {
    pub keys: Vec<String>,
    pub offsets: Vec<u32>,
    pub items: Vec<u32>,
}

impl UserHistories {
    pub fn from_sequences(seqs: &Sequences, user_keys: &[String]) -> UserHistories {
        UserHistories {
            keys: seqs
                .users
                .iter()
                .map(|&u| user_keys[u as usize].clone())
                .collect(),
            offsets: seqs.offsets.clone(),
            items: seqs.items.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, user: usize) -> &[u32] {
        &self.items[self.offsets[user] as usize..self.offsets[user + 1] as usize]
    }
}

/// How ratings were read and turned into sequences, so `evaluate` can read
/// a model's training data exactly as training did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSettings {
    /// `None`: every rating kept.
    pub min_rating: Option<f32>,
    /// Users with fewer kept ratings are skipped (MIN_SEQUENCE_LENGTH).
    pub min_sequence_len: usize,
    /// A MovieLens release's item ids were numbered 1..N
    /// (`ReadOptions::renumber_items`).
    #[serde(default)]
    pub renumber_items: bool,
}

impl Default for DataSettings {
    /// The reference's MIN_RATING and MIN_SEQUENCE_LENGTH.
    fn default() -> Self {
        DataSettings {
            min_rating: Some(2.0),
            min_sequence_len: 3,
            renumber_items: false,
        }
    }
}
