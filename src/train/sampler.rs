//! Negative sampling: the label frequencies of the train examples, as the
//! in-batch sampler's log Q (for logQ correction) and as the
//! popularity^alpha distribution extra negatives are drawn from.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::{ExampleSet, Sequences};

/// The label frequencies of `examples`, and their logs as sampling
/// probabilities (for logQ correction).
pub struct Sampler {
    /// log Q of an in-batch negative: its share of the train labels.
    pub in_batch_log_q: Vec<f32>,
    /// Cumulative distribution of popularity^alpha over ids.
    cumulative: Vec<f64>,
    /// log of the same distribution.
    pub negative_log_q: Vec<f32>,
}

impl Sampler {
    pub fn new(seqs: &Sequences, train: &ExampleSet, vocab: usize, alpha: f32) -> Sampler {
        let mut counts = vec![0.0f64; vocab];
        for &p in &train.label_pos {
            counts[seqs.items[p as usize] as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum::<f64>().max(1.0);
        // Ids never seen as a label are never in-batch negatives; give them
        // the smallest observed share so their (unused) log stays finite.
        let smallest = counts
            .iter()
            .copied()
            .filter(|&c| c > 0.0)
            .fold(f64::INFINITY, f64::min);
        let in_batch_log_q = counts
            .iter()
            .map(|&c| (c.max(smallest.min(1.0)) / total).ln() as f32)
            .collect();
        // popularity^0 is uniform over every item id, labelled in train or
        // not: gBCE's negatives must reach the items no label ever pushed,
        // or those keep their initial scores above every trained item's.
        let weights: Vec<f64> = counts
            .iter()
            .enumerate()
            .map(|(id, &c)| match (id, alpha == 0.0) {
                (0, _) => 0.0,
                (_, true) => 1.0,
                _ if c > 0.0 => c.powf(alpha as f64),
                _ => 0.0,
            })
            .collect();
        let wsum: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / wsum;
                acc
            })
            .collect();
        let negative_log_q = weights
            .iter()
            .map(|&w| ((w / wsum).max(1e-30)).ln() as f32)
            .collect();
        Sampler {
            in_batch_log_q,
            cumulative,
            negative_log_q,
        }
    }

    pub fn draw(&self, rng: &mut ChaCha8Rng, n: usize, out: &mut Vec<u32>) {
        out.clear();
        for _ in 0..n {
            let u: f64 = rng.random();
            let id = self
                .cumulative
                .partition_point(|&c| c < u)
                .min(self.cumulative.len() - 1);
            out.push(id as u32);
        }
    }
}
