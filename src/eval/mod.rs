//! Ranking metrics over the full catalogue: each test example's label is
//! ranked against every item, and HR@K, NDCG@K and MRR@K averaged over the
//! examples, for the model and for a most-popular baseline.
//!
//! Tie rule: a label tied with other candidates ranks after all of them
//! (pessimistic), so a constant scorer gets no credit. Padding and ids that
//! are no item are never candidates. With seen items excluded, every earlier
//! item of the user's sequence is removed from the candidates, except the
//! label itself when the user picks it again.

use std::sync::Mutex;

use serde::Serialize;

use crate::data::{Catalog, DataError, Dataset, ExampleSet, Sequences, UserHistories};
use crate::model::{history_before as history, ModelSpec, Params};
use crate::retrieval::approx::approx_top_k;
use crate::retrieval::recommender::Recommender;
use crate::retrieval::{for_each_scored_row, rank_of, select_top_k, SelectScratch};
use crate::workers::{self, ThreadsError};

/// One K's figures, averaged over examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtK {
    pub k: usize,
    pub hr: f64,
    pub ndcg: f64,
    pub mrr: f64,
}

/// Sums of the metrics for a set of cut-offs, fed one rank at a time.
#[derive(Debug, Clone)]
pub struct RankMetrics {
    ks: Vec<usize>,
    sums: Vec<[f64; 3]>,
    count: usize,
}

impl RankMetrics {
    pub fn new(ks: &[usize]) -> RankMetrics {
        RankMetrics {
            ks: ks.to_vec(),
            sums: vec![[0.0; 3]; ks.len()],
            count: 0,
        }
    }

    /// Adds one example; `None` (the label was not a candidate) is a miss.
    pub fn add(&mut self, rank: Option<usize>) {
        self.count += 1;
        let Some(rank) = rank else { return };
        for (k, s) in self.ks.iter().zip(&mut self.sums) {
            if rank <= *k {
                s[0] += 1.0;
                s[1] += 1.0 / ((rank + 1) as f64).log2();
                s[2] += 1.0 / rank as f64;
            }
        }
    }

    pub fn finish(&self) -> Vec<AtK> {
        let n = self.count.max(1) as f64;
        self.ks
            .iter()
            .zip(&self.sums)
            .map(|(&k, s)| AtK {
                k,
                hr: s[0] / n,
                ndcg: s[1] / n,
                mrr: s[2] / n,
            })
            .collect()
    }
}

/// The figures of one scorer, with and without seen items.
#[derive(Debug, Clone, Serialize)]
pub struct ScorerReport {
    pub all_items: Vec<AtK>,
    pub seen_excluded: Vec<AtK>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub examples: usize,
    pub candidates: usize,
    pub model: ScorerReport,
    pub popularity: ScorerReport,
    pub tie_rule: &'static str,
    /// The approximate graph's top-K against exact, when the recommender
    /// was put on it (`evaluate --index approx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approx: Option<ApproxReport>,
}

/// What approximate top-K costs in quality, seen items excluded: the share
/// of exact top-K it finds, and the model's metrics when it retrieves.
#[derive(Debug, Clone, Serialize)]
pub struct ApproxReport {
    /// The list length compared (the largest cut-off).
    pub k: usize,
    /// The graph's search list (ef) the lists were found with.
    pub search_list: usize,
    /// `|approx ∩ exact| / |exact|` over the test examples.
    pub recall: f64,
    /// HR/NDCG/MRR at each cut-off from the approximate lists.
    pub seen_excluded: Vec<AtK>,
}

pub const TIE_RULE: &str = "a label tied with other candidates ranks after all of them";

/// Ranks of the labels of `examples` under `score_rows`' scores, without
/// and with the seen items knocked out.
fn ranks_both(row: &mut [f32], label: u32, seen: &[u32]) -> (Option<usize>, Option<usize>) {
    let all = rank_of(row, label);
    for &id in seen {
        if id != label {
            if let Some(x) = row.get_mut(id as usize) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    (all, rank_of(row, label))
}

/// Ranks under the most-popular scorer without scoring every item per
/// example: the allowed items' counts sorted once, so a label's rank is a
/// binary search, and seen-item exclusion subtracts the seen items that
/// ranked ahead of it. The same ranks as `ranks_both` over a full row.
struct PopularityRanks {
    counts: Vec<f32>,
    allowed: Vec<bool>,
    /// The allowed items' counts, ascending.
    sorted: Vec<f32>,
}

impl PopularityRanks {
    fn new(counts: Vec<f32>, is_item: impl Fn(u32) -> bool) -> PopularityRanks {
        let allowed: Vec<bool> = (0..counts.len() as u32).map(is_item).collect();
        let mut sorted: Vec<f32> = counts
            .iter()
            .zip(&allowed)
            .filter(|(_, &a)| a)
            .map(|(&c, _)| c)
            .collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        PopularityRanks {
            counts,
            allowed,
            sorted,
        }
    }

    /// Allowed items scoring at least `s`.
    fn at_least(&self, s: f32) -> usize {
        self.sorted.len() - self.sorted.partition_point(|&x| x < s)
    }

    fn ranks_both(&self, label: u32, seen: &[u32]) -> (Option<usize>, Option<usize>) {
        let l = label as usize;
        if !self.allowed.get(l).copied().unwrap_or(false) {
            return (None, None);
        }
        let s = self.counts[l];
        let all = self.at_least(s);
        let mut ahead: Vec<u32> = seen
            .iter()
            .copied()
            .filter(|&id| {
                id != label
                    && self.allowed.get(id as usize).copied().unwrap_or(false)
                    && self.counts[id as usize] >= s
            })
            .collect();
        ahead.sort_unstable();
        ahead.dedup();
        (Some(all), Some(all - ahead.len()))
    }
}

/// Popularity: how often each id is a label among `train`.
pub fn popularity(seqs: &Sequences, train: &ExampleSet, vocab: usize) -> Vec<f32> {
    let mut counts = vec![0.0f32; vocab];
    for &p in &train.label_pos {
        if let Some(c) = counts.get_mut(seqs.items[p as usize] as usize) {
            *c += 1.0;
        }
    }
    counts
}

/// Data that numbers its items otherwise than the model: its examples
/// cannot be ranked by the model.
#[derive(Debug, thiserror::Error)]
pub enum OtherCatalogue {
    #[error(
        "{origin}: its item ids go up to {data_max}, the model's up to {model_max}: evaluate on \
         the data the model was trained on"
    )]
    Size {
        origin: String,
        data_max: usize,
        model_max: usize,
    },
    #[error("{origin}: its items are not numbered as in the model's training data")]
    Keys { origin: String },
}

/// Checks that `ds` numbers its items as the model of `rec` does.
pub fn check_same_catalogue(rec: &Recommender, ds: &Dataset) -> Result<(), OtherCatalogue> {
    if ds.catalog.vocab_size() != rec.spec.vocab_size {
        return Err(OtherCatalogue::Size {
            origin: ds.origin.clone(),
            data_max: ds.catalog.vocab_size().saturating_sub(1),
            model_max: rec.spec.vocab_size.saturating_sub(1),
        });
    }
    if ds.catalog.keys != rec.catalog.keys {
        return Err(OtherCatalogue::Keys {
            origin: ds.origin.clone(),
        });
    }
    Ok(())
}

/// HR/NDCG/MRR at each of `ks` for the model and the popularity baseline on
/// `test`, ranking against every item of the catalogue.
pub fn evaluate(
    rec: &Recommender,
    seqs: &Sequences,
    train: &ExampleSet,
    test: &ExampleSet,
    ks: &[usize],
) -> EvalReport {
    let (mut m_all, mut m_seen) = (RankMetrics::new(ks), RankMetrics::new(ks));
    let (mut p_all, mut p_seen) = (RankMetrics::new(ks), RankMetrics::new(ks));
    let cands = rec.candidates(false);

    let pop = PopularityRanks::new(popularity(seqs, train, rec.spec.vocab_size), |id| {
        rec.is_item(id)
    });
    for &pos in &test.label_pos {
        let (a, s) = pop.ranks_both(seqs.items[pos as usize], history(seqs, pos));
        p_all.add(a);
        p_seen.add(s);
    }

    let index = rec.approx_index();
    let k_max = ks.iter().copied().max().unwrap_or(10);
    let mut a_seen = RankMetrics::new(ks);
    let (mut found, mut wanted) = (0usize, 0usize);
    for chunk in test.label_pos.chunks(4096) {
        let histories: Vec<&[u32]> = chunk.iter().map(|&p| history(seqs, p)).collect();
        let queries = rec.encode(&histories);
        let ranks = Mutex::new(vec![(None, None); chunk.len()]);
        let exact_lists = Mutex::new(vec![Vec::new(); chunk.len()]);
        for_each_scored_row(&queries, cands, |q, row| {
            let r = ranks_both(row, seqs.items[chunk[q] as usize], histories[q]);
            if index.is_some() {
                // The row now has the seen items (but the label) knocked out.
                let mut list = Vec::with_capacity(4 * k_max);
                select_top_k(row, k_max, &mut list, &mut SelectScratch::default());
                if let Ok(mut v) = exact_lists.lock() {
                    v[q] = list;
                }
            }
            if let Ok(mut v) = ranks.lock() {
                v[q] = r;
            }
        });
        for (a, s) in ranks.into_inner().unwrap_or_default() {
            m_all.add(a);
            m_seen.add(s);
        }
        if let Some(index) = index {
            let exclusions: Vec<Vec<u32>> = chunk
                .iter()
                .zip(&histories)
                .map(|(&p, h)| {
                    let label = seqs.items[p as usize];
                    h.iter().copied().filter(|&id| id != label).collect()
                })
                .collect();
            let lists = approx_top_k(index, &queries, cands, k_max, |q| &exclusions[q]);
            let exact_lists = exact_lists.into_inner().unwrap_or_default();
            for ((list, exact), &p) in lists.iter().zip(&exact_lists).zip(chunk) {
                let label = seqs.items[p as usize];
                a_seen.add(list.iter().position(|s| s.id == label).map(|i| i + 1));
                wanted += exact.len();
                found += list
                    .iter()
                    .filter(|s| exact.iter().any(|e| e.id == s.id))
                    .count();
            }
        }
    }
    EvalReport {
        examples: test.len(),
        candidates: (0..rec.spec.vocab_size)
            .filter(|&i| rec.is_item(i as u32))
            .count(),
        model: ScorerReport {
            all_items: m_all.finish(),
            seen_excluded: m_seen.finish(),
        },
        popularity: ScorerReport {
            all_items: p_all.finish(),
            seen_excluded: p_seen.finish(),
        },
        tie_rule: TIE_RULE,
        approx: index.map(|index| ApproxReport {
            k: k_max,
            search_list: index.settings().expansion_search,
            recall: found as f64 / wanted.max(1) as f64,
            seen_excluded: a_seen.finish(),
        }),
    }
}

/// Why a dataset could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    OtherCatalogue(#[from] OtherCatalogue),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Threads(#[from] ThreadsError),
}

/// `evaluate` over a whole dataset as training split it: its users'
/// sequences of at least `min_sequence_len` items, each user's last item
/// the test label, ranked by the model of `rec` on `threads` threads (0: one
/// per core). What `seqrec evaluate` and Python's `Model.evaluate` run.
pub fn evaluate_dataset(
    rec: &Recommender,
    ds: &Dataset,
    min_sequence_len: usize,
    ks: &[usize],
    threads: usize,
) -> Result<EvalReport, EvalError> {
    check_same_catalogue(rec, ds)?;
    let seqs = Sequences::build(&ds.interactions, min_sequence_len)?;
    let (train, test) = seqs.split_last();
    let (pool, _) = workers::pool("threads", threads)?;
    Ok(pool.install(|| evaluate(rec, &seqs, &train, &test, ks)))
}

/// How a training run ends (the reference's closing evaluation): the
/// trained model on the test examples at K = 10, with seen items excluded
/// and with every item a candidate, beside the most-popular baseline.
/// `seqrec train` prints it (and its `--json` holds these keys); Python's
/// `Model.test_metrics` is it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrainingReport {
    pub train_examples: usize,
    pub test_examples: usize,
    /// The saved model on the test examples, seen items excluded.
    pub test: AtK,
    /// Its most-popular baseline, the same way.
    pub popularity: AtK,
    /// The saved model on the test examples, every item a candidate.
    pub test_all_items: AtK,
}

/// The `TrainingReport` of the model of `rec`, trained on `train` and
/// tested on `test` (on the calling thread's pool).
pub fn training_report(
    rec: &Recommender,
    seqs: &Sequences,
    train: &ExampleSet,
    test: &ExampleSet,
) -> TrainingReport {
    let report = evaluate(rec, seqs, train, test, &[10]);
    TrainingReport {
        train_examples: train.len(),
        test_examples: test.len(),
        test: report.model.seen_excluded[0],
        popularity: report.popularity.seen_excluded[0],
        test_all_items: report.model.all_items[0],
    }
}

/// The metrics hook training calls between epochs: `(HR@10, NDCG@10)` of
/// the parameters being trained, seen items excluded, over `examples`.
pub fn ranking_hook(
    catalog: &Catalog,
) -> impl Fn(&ModelSpec, &Params, &Sequences, &ExampleSet) -> (f64, f64) + Sync + '_ {
    move |spec, params, seqs, examples| {
        let rec = Recommender::from_parts(
            *spec,
            params.clone(),
            catalog.clone(),
            UserHistories::default(),
        );
        // Popularity is not reported here, so any train set will do.
        let r = evaluate(&rec, seqs, &ExampleSet::default(), examples, &[10]);
        (r.model.seen_excluded[0].hr, r.model.seen_excluded[0].ndcg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The popularity shortcut gives the ranks of a full row, ties,
    /// repeated seen items and non-items included.
    #[test]
    fn popularity_ranks_equal_ranking_the_full_row() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let v = 60;
        let counts: Vec<f32> = (0..v).map(|_| rng.random_range(0..6) as f32).collect();
        let is_item = |id: u32| id > 0 && id % 7 != 3;
        let fast = PopularityRanks::new(counts.clone(), is_item);
        for _ in 0..500 {
            let label = rng.random_range(0..v as u32);
            let seen: Vec<u32> = (0..rng.random_range(0..12))
                .map(|_| rng.random_range(0..v as u32 + 3))
                .collect();
            let mut row: Vec<f32> = (0..v as u32)
                .map(|id| {
                    if is_item(id) {
                        counts[id as usize]
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            assert_eq!(
                fast.ranks_both(label, &seen),
                ranks_both(&mut row, label, &seen)
            );
        }
    }
}
