//! Synthetic MovieLens-1M-shaped data with planted sequential structure.
//!
//! A sequence model can only be judged against data whose structure is known:
//! here the generator knows, for every test example, the exact probability of
//! each possible next item, so it can report the best HR@10 / NDCG@10 that any
//! model could reach (the "ceiling") next to what ranking by popularity gets.
//!
//! The generative process, per user:
//! - Items are split at random into clusters of about `cluster_size` items;
//!   each cluster's items are put in a random order (a "storyline"). Every
//!   cluster has up to `next_clusters` other clusters it tends to lead to.
//! - Every item has a Zipf-like popularity `g`, weight `(rank + offset)^-s`
//!   with the offset a fixed fraction of the item count.
//! - The first item is drawn by popularity; the walk's state is then the
//!   (cluster, position) of the last item it produced.
//! - Each later kept rating is, with probability `noise_prob`, an item drawn
//!   by global popularity (state unchanged); otherwise, with `stay_prob`, the
//!   walk stays in its cluster and, with `follow_prob`, moves ahead in the
//!   storyline by 1..=`follow_window` positions (weighted by popularity),
//!   else picks an item of the cluster by popularity; without staying it
//!   jumps to one of the cluster's next clusters and enters it by popularity.
//! - Extra lines rated 1 (a `low_rating_fraction` of all lines, items drawn by
//!   popularity) are mixed in; the default reader filter (ratings >= 2) drops
//!   them, so the kept sequence is exactly the walk.
//!
//! Users are written in order, each user's lines in time order (ties share a
//! second and keep walk order, which the readers' stable sort preserves).
//! Every user's randomness comes from its own ChaCha8 stream, so the files do
//! not depend on the number of threads.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Why synthetic data could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A `SynthConfig` field out of range; `field` is its name (`users`,
    /// `max_item_id`, ...).
    #[error("{field}: {msg}")]
    Setting { field: &'static str, msg: String },
    #[error("{}: not a folder", path.display())]
    NotAFolder { path: PathBuf },
    /// A file operation: `what` says what failed ("cannot write", ...).
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The folder holds files synth did not write.
    #[error(
        "{}: holds files seqrec synth did not write ({}); pick an empty or new folder, or pass --force to write over them",
        path.display(),
        files.join(", ")
    )]
    NotOurs { path: PathBuf, files: Vec<String> },
    #[error("cannot encode the summary as JSON")]
    Json(#[from] serde_json::Error),
    /// A file to be written is a FIFO, a device or a folder.
    #[error(transparent)]
    Output(#[from] crate::files::OutputError),
}

type Result<T, E = SynthError> = std::result::Result<T, E>;

fn setting(field: &'static str, msg: String) -> SynthError {
    SynthError::Setting { field, msg }
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SynthError {
    let path = path.to_path_buf();
    move |source| SynthError::Io { path, what, source }
}

/// Cut-off of the ranking metrics reported as the ceiling.
pub const CEILING_K: usize = 10;

/// Names the generative process in `synth.json`, so that files made by a
/// changed process are never mistaken for old ones.
pub const GENERATOR: &str = "seqrec-synth/1";

/// The reference skips users with fewer kept ratings; every synthetic user is
/// kept so that the ceiling covers exactly the test examples.
const MIN_KEPT_PER_USER: usize = 3;

/// Log-normal draws beyond this many standard deviations are redrawn, which
/// keeps the longest user near ML-1M's ~2,300 ratings instead of ~5,000.
const LENGTH_Z_LIMIT: f64 = 3.0;

/// ML-1M's first timestamp; users start within ML-1M's first ~16 months.
const FIRST_TIMESTAMP: i64 = 956_703_932;
const START_SPREAD_SECONDS: i64 = 43_000_000;
/// Between ratings of a session: ~1 minute; between sessions: ~3 days.
const SESSION_GAP_MEAN_SECONDS: f64 = 60.0;
const BREAK_GAP_MEAN_SECONDS: f64 = 3.0 * 86_400.0;
const BREAK_PROB: f64 = 0.03;

/// Share of ratings 2, 3, 4, 5 among ML-1M's ratings of 2 and above.
const KEPT_RATING_SHARES: [f64; 4] = [0.1139, 0.2767, 0.3697, 0.2397];

/// Users are generated in parallel a chunk of about this many lines at a time,
/// which bounds memory for any size.
const CHUNK_LINES: usize = 1 << 20;

/// ML-1M's genres; each cluster gets a few, so genres hint at clusters.
const GENRES: [&str; 18] = [
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// What to generate. The default is the shape of MovieLens-1M.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Same seed and config, byte-identical files.
    pub seed: u64,
    pub users: usize,
    /// Distinct movies in `movies.dat`.
    pub items: usize,
    /// Movie ids are spread over 1..=max_item_id with gaps, the largest always
    /// used (vocabulary = max_item_id + 1). None: items * 3952 / 3706, as ML-1M.
    pub max_item_id: Option<u32>,
    /// Lines of `ratings.dat`, the rating-1 lines included.
    pub ratings: usize,
    /// Fewest lines per user (ML-1M: 20).
    pub min_user_ratings: usize,
    /// Spread of the log-normal part of user lengths above the minimum.
    pub length_sigma: f64,
    /// Zipf exponent `s` of item popularity `(rank + offset)^-s`.
    pub popularity_exponent: f64,
    /// The popularity curve's offset as a fraction of the item count: it
    /// flattens the head, and scaling it with the items keeps the curve's
    /// shape (e.g. the top 10%'s share) the same at any size.
    pub popularity_offset_fraction: f64,
    /// Items per cluster (about; clusters are near-equal in size).
    pub cluster_size: usize,
    /// Clusters a walk can jump to from each cluster.
    pub next_clusters: usize,
    /// Chance that a non-noise step stays in the current cluster.
    pub stay_prob: f64,
    /// Chance that a step staying in the cluster moves ahead in its storyline.
    pub follow_prob: f64,
    /// How many positions ahead a storyline step may move.
    pub follow_window: usize,
    /// Chance that a kept rating is drawn by global popularity instead.
    pub noise_prob: f64,
    /// Share of lines rated 1, outside the walk (the default filter drops them).
    pub low_rating_fraction: f64,
    /// Chance that a line has the same timestamp as the one before.
    pub tie_prob: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            users: 6040,
            items: 3706,
            max_item_id: None,
            ratings: 1_000_209,
            min_user_ratings: 20,
            length_sigma: 1.1,
            popularity_exponent: 1.0,
            popularity_offset_fraction: 0.027,
            cluster_size: 50,
            next_clusters: 3,
            stay_prob: 0.8,
            follow_prob: 0.75,
            follow_window: 3,
            noise_prob: 0.1,
            low_rating_fraction: 0.0562,
            tie_prob: 0.05,
        }
    }
}

impl SynthConfig {
    /// The largest movie id: as given, or scaled from the item count like ML-1M.
    pub fn resolved_max_item_id(&self) -> u64 {
        match self.max_item_id {
            Some(m) => m as u64,
            None => (self.items as u64).saturating_mul(3952) / 3706,
        }
    }

    /// Number of clusters the items are split into.
    pub fn clusters(&self) -> usize {
        let size = self.cluster_size.max(1);
        ((self.items + size / 2) / size).max(1)
    }

    /// Checks every field; errors name the field (`SynthError::Setting`).
    pub fn validate(&self) -> Result<()> {
        if self.users == 0 {
            return Err(setting("users", "expected at least 1, found 0".into()));
        }
        if self.items == 0 {
            return Err(setting("items", "expected at least 1, found 0".into()));
        }
        let max_id = self.resolved_max_item_id();
        if max_id < self.items as u64 {
            return Err(setting(
                "max_item_id",
                format!(
                    "{max_id} is smaller than items {}; ids are distinct, so it must be at least the item count",
                    self.items
                ),
            ));
        }
        if max_id >= u32::MAX as u64 {
            return Err(setting(
                "max_item_id",
                format!("{max_id} is too large (at most {})", u32::MAX - 1),
            ));
        }
        if self.min_user_ratings < MIN_KEPT_PER_USER {
            return Err(setting(
                "min_user_ratings",
                format!(
                    "expected at least {MIN_KEPT_PER_USER} (a test example needs a history), found {}",
                    self.min_user_ratings
                ),
            ));
        }
        let needed = (self.users as u128) * (self.min_user_ratings as u128);
        if (self.ratings as u128) < needed {
            return Err(setting(
                "ratings",
                format!(
                    "{} is fewer than users {} x min_user_ratings {} = {needed}",
                    self.ratings, self.users, self.min_user_ratings
                ),
            ));
        }
        if self.ratings >= u32::MAX as usize {
            return Err(setting(
                "ratings",
                format!("{} is too many (at most {})", self.ratings, u32::MAX - 1),
            ));
        }
        if self.cluster_size == 0 {
            return Err(setting(
                "cluster_size",
                "expected at least 1, found 0".into(),
            ));
        }
        if self.follow_window == 0 {
            return Err(setting(
                "follow_window",
                "expected at least 1, found 0".into(),
            ));
        }
        let finite_nonneg = |field: &'static str, v: f64| -> Result<()> {
            if !v.is_finite() || v < 0.0 {
                return Err(setting(
                    field,
                    format!("expected a finite number >= 0, found {v}"),
                ));
            }
            Ok(())
        };
        finite_nonneg("length_sigma", self.length_sigma)?;
        finite_nonneg("popularity_exponent", self.popularity_exponent)?;
        finite_nonneg(
            "popularity_offset_fraction",
            self.popularity_offset_fraction,
        )?;
        let probability = |field: &'static str, v: f64, max: f64| -> Result<()> {
            if !(0.0..=max).contains(&v) {
                return Err(setting(
                    field,
                    format!("expected a probability between 0 and {max}, found {v}"),
                ));
            }
            Ok(())
        };
        probability("stay_prob", self.stay_prob, 1.0)?;
        probability("follow_prob", self.follow_prob, 1.0)?;
        probability("noise_prob", self.noise_prob, 1.0)?;
        probability("tie_prob", self.tie_prob, 1.0)?;
        // Above one half, most lines would be outside the walk.
        probability("low_rating_fraction", self.low_rating_fraction, 0.5)?;
        Ok(())
    }
}

/// Kept-sequence lengths (after the default rating filter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LengthSummary {
    pub min: usize,
    pub median: usize,
    pub mean: f64,
    pub max: usize,
}

/// What was written, and the best any model could do on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub generator: String,
    pub seed: u64,
    /// The config used, `max_item_id` filled in.
    pub config: SynthConfig,
    pub users: usize,
    pub items: usize,
    pub max_item_id: u32,
    /// Largest id + 1, as the readers count it.
    pub vocab_size: usize,
    pub clusters: usize,
    /// Lines in `ratings.dat`.
    pub ratings_written: usize,
    /// Lines rated 2 or more: the walk.
    pub ratings_kept: usize,
    /// Lines rated 1, which the default filter drops.
    pub ratings_low: usize,
    /// Distinct items among the kept ratings.
    pub items_rated: usize,
    pub kept_length: LengthSummary,
    /// One per user: its last kept rating.
    pub test_examples: usize,
    /// Mean over test examples of the true probability mass of the 10 items
    /// an oracle knowing the generator's state ranks first.
    pub ceiling_hr10: f64,
    /// Mean over test examples of the oracle's expected 1/log2(rank + 1),
    /// ranks beyond 10 counting 0.
    pub ceiling_ndcg10: f64,
    /// Share of test examples whose actual last item is among those 10:
    /// the oracle's HR@10 on these very labels, which is what a model's
    /// HR@10 is measured on. It differs from `ceiling_hr10` by sampling
    /// (one draw per user: a standard error of about 0.006 at 6,040 users).
    #[serde(default)]
    pub oracle_test_hr10: f64,
    /// The same expectations for the 10 items most frequent in training
    /// (all kept ratings but each user's last).
    pub popularity_hr10: f64,
    pub popularity_ndcg10: f64,
    /// Wall time; not written to `synth.json`, which stays reproducible.
    #[serde(skip)]
    pub seconds: f64,
}

/// Where the walk is: a cluster and a position in its storyline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WalkState {
    cluster: u32,
    pos: u32,
}

struct Cluster {
    /// Item indices in storyline order.
    items: Vec<u32>,
    /// Running sums of the items' popularity, for drawing by popularity.
    cum_pop: Vec<f64>,
    /// Clusters a jump goes to, and running sums of their weights.
    targets: Vec<u32>,
    cum_target: Vec<f64>,
    genres: String,
}

impl Cluster {
    fn total_pop(&self) -> f64 {
        self.cum_pop.last().copied().unwrap_or(0.0)
    }
}

/// Step probabilities, resolved once from the config.
#[derive(Clone, Copy)]
struct StepProbs {
    noise: f64,
    stay: f64,
    follow: f64,
    window: usize,
}

/// The fixed part of the generative process: items, clusters, popularity.
struct World {
    /// Movie id of each item index; ascending.
    ids: Vec<u32>,
    /// Normalised global popularity of each item index.
    pop: Vec<f64>,
    cum_pop: Vec<f64>,
    /// The CEILING_K most popular items: outside the walk's reach only the
    /// noise term remains, and these hold the largest noise terms.
    most_popular: Vec<u32>,
    item_state: Vec<WalkState>,
    clusters: Vec<Cluster>,
    years: Vec<u16>,
    probs: StepProbs,
}

/// Stream 0 builds the world, stream 1 the user lengths, stream 2 + u user u;
/// separate streams keep, say, the world unchanged when `users` changes.
fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Index drawn with probability proportional to the increments of `cum`.
fn draw_cumulative(cum: &[f64], rng: &mut impl Rng) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let u = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= u)
        .min(cum.len().saturating_sub(1))
}

fn running_sums(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

impl World {
    fn build(cfg: &SynthConfig) -> World {
        let mut rng = rng_for(cfg.seed, 0);
        let n = cfg.items;
        let max_id = cfg.resolved_max_item_id() as u32;

        // Ids: the largest always, the rest a random subset of 1..max_id
        // (Floyd's sampling: memory follows the item count, not the id range).
        let mut chosen = std::collections::HashSet::with_capacity(n);
        let below_max = max_id - 1;
        for j in (below_max + 1 - (n as u32 - 1))..=below_max {
            let t = rng.random_range(1..=j);
            if !chosen.insert(t) {
                chosen.insert(j);
            }
        }
        let mut ids: Vec<u32> = chosen.into_iter().collect();
        ids.sort_unstable();
        ids.push(max_id);

        // Popularity rank is independent of the id, as in MovieLens.
        let mut by_rank: Vec<u32> = (0..n as u32).collect();
        shuffle(&mut by_rank, &mut rng);
        let offset = cfg.popularity_offset_fraction * n as f64;
        let mut raw_pop = vec![0.0; n];
        for (rank, &item) in by_rank.iter().enumerate() {
            raw_pop[item as usize] = (rank as f64 + 1.0 + offset).powf(-cfg.popularity_exponent);
        }
        let total: f64 = raw_pop.iter().sum();
        let pop: Vec<f64> = raw_pop.iter().map(|w| w / total).collect();
        let cum_pop = running_sums(pop.iter().copied());
        let most_popular = by_rank[..CEILING_K.min(n)].to_vec();

        let n_clusters = cfg.clusters();
        let mut order: Vec<u32> = (0..n as u32).collect();
        shuffle(&mut order, &mut rng);
        let mut item_state = vec![WalkState::default(); n];
        let mut clusters = Vec::with_capacity(n_clusters);
        for c in 0..n_clusters {
            let items = order[c * n / n_clusters..(c + 1) * n / n_clusters].to_vec();
            for (pos, &i) in items.iter().enumerate() {
                item_state[i as usize] = WalkState {
                    cluster: c as u32,
                    pos: pos as u32,
                };
            }
            let cum_pop = running_sums(items.iter().map(|&i| pop[i as usize]));
            let mut others: Vec<u32> = (0..n_clusters as u32).filter(|&o| o != c as u32).collect();
            let n_targets = cfg.next_clusters.min(others.len());
            for k in 0..n_targets {
                let j = rng.random_range(k..others.len());
                others.swap(k, j);
            }
            others.truncate(n_targets);
            // The first target is the likeliest: weights 1, 1/2, 1/3, ...
            let cum_target = running_sums((0..n_targets).map(|k| 1.0 / (k as f64 + 1.0)));
            let n_genres = rng.random_range(1..=3);
            let mut genre_idx: Vec<usize> = (0..GENRES.len()).collect();
            for k in 0..n_genres {
                let j = rng.random_range(k..genre_idx.len());
                genre_idx.swap(k, j);
            }
            genre_idx.truncate(n_genres);
            genre_idx.sort_unstable();
            let genres = genre_idx
                .iter()
                .map(|&g| GENRES[g])
                .collect::<Vec<_>>()
                .join("|");
            clusters.push(Cluster {
                items,
                cum_pop,
                targets: others,
                cum_target,
                genres,
            });
        }
        let years = (0..n).map(|_| rng.random_range(1919..=2000u16)).collect();
        World {
            ids,
            pop,
            cum_pop,
            most_popular,
            item_state,
            clusters,
            years,
            probs: StepProbs {
                noise: cfg.noise_prob,
                stay: cfg.stay_prob,
                follow: cfg.follow_prob,
                window: cfg.follow_window,
            },
        }
    }

    fn draw_by_popularity(&self, rng: &mut impl Rng) -> u32 {
        draw_cumulative(&self.cum_pop, rng) as u32
    }

    fn draw_in_cluster(&self, cluster: u32, rng: &mut impl Rng) -> u32 {
        let c = &self.clusters[cluster as usize];
        c.items[draw_cumulative(&c.cum_pop, rng)]
    }

    /// Storyline moves possible from a position: never back onto itself.
    fn window(&self, cluster: &Cluster) -> usize {
        self.probs.window.min(cluster.items.len() - 1)
    }

    /// One kept rating: the item, with the state moved on.
    /// Must stay in step with `next_item_candidates`.
    fn step(&self, state: &mut WalkState, rng: &mut impl Rng) -> u32 {
        let p = self.probs;
        if rng.random::<f64>() < p.noise {
            return self.draw_by_popularity(rng);
        }
        let c = &self.clusters[state.cluster as usize];
        let u = rng.random::<f64>();
        let item = if u < p.stay * p.follow {
            let window = self.window(c);
            if window == 0 {
                c.items[state.pos as usize]
            } else {
                let size = c.items.len();
                let ahead = |d: usize| c.items[(state.pos as usize + d) % size];
                let total: f64 = (1..=window).map(|d| self.pop[ahead(d) as usize]).sum();
                let mut x = rng.random::<f64>() * total;
                let mut chosen = ahead(window);
                for d in 1..=window {
                    let w = self.pop[ahead(d) as usize];
                    if x < w {
                        chosen = ahead(d);
                        break;
                    }
                    x -= w;
                }
                chosen
            }
        } else if u < p.stay || c.targets.is_empty() {
            self.draw_in_cluster(state.cluster, rng)
        } else {
            let t = c.targets[draw_cumulative(&c.cum_target, rng)];
            self.draw_in_cluster(t, rng)
        };
        *state = self.item_state[item as usize];
        item
    }

    /// The exact distribution of the next kept item from `state`, as
    /// (item, probability) pairs over the items the walk can reach plus the
    /// globally most popular ones. Any other item has only the noise term
    /// `noise * pop`, which is below that of each listed popular item, so the
    /// top `CEILING_K` items of the full distribution are always listed.
    fn next_item_candidates(&self, state: WalkState, out: &mut Vec<(u32, f64)>) {
        out.clear();
        let p = self.probs;
        let walk = 1.0 - p.noise;
        let c = &self.clusters[state.cluster as usize];
        let jump_mass = walk * (1.0 - p.stay);
        let own_cluster_mass =
            walk * p.stay * (1.0 - p.follow) + if c.targets.is_empty() { jump_mass } else { 0.0 };
        let c_total = c.total_pop();
        let base = out.len();
        for &i in &c.items {
            let g = self.pop[i as usize];
            out.push((i, p.noise * g + own_cluster_mass * g / c_total));
        }
        let follow_mass = walk * p.stay * p.follow;
        let window = self.window(c);
        if window == 0 {
            out[base + state.pos as usize].1 += follow_mass;
        } else {
            let size = c.items.len();
            let slot = |d: usize| (state.pos as usize + d) % size;
            let total: f64 = (1..=window)
                .map(|d| self.pop[c.items[slot(d)] as usize])
                .sum();
            for d in 1..=window {
                let g = self.pop[c.items[slot(d)] as usize];
                out[base + slot(d)].1 += follow_mass * g / total;
            }
        }
        let target_total = c.cum_target.last().copied().unwrap_or(0.0);
        let mut prev_cum = 0.0;
        for (&t, &cum) in c.targets.iter().zip(&c.cum_target) {
            let share = (cum - prev_cum) / target_total;
            prev_cum = cum;
            let tc = &self.clusters[t as usize];
            let t_total = tc.total_pop();
            for &i in &tc.items {
                let g = self.pop[i as usize];
                out.push((i, p.noise * g + jump_mass * share * g / t_total));
            }
        }
        for &i in &self.most_popular {
            let home = self.item_state[i as usize].cluster;
            if home != state.cluster && !c.targets.contains(&home) {
                out.push((i, p.noise * self.pop[i as usize]));
            }
        }
    }

    /// The true probability of `item` next, given the candidates from `state`.
    fn probability(&self, candidates: &[(u32, f64)], item: u32) -> f64 {
        candidates
            .iter()
            .find(|&&(i, _)| i == item)
            .map(|&(_, p)| p)
            .unwrap_or(self.probs.noise * self.pop[item as usize])
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut impl Rng) {
    for k in (1..v.len()).rev() {
        let j = rng.random_range(0..=k);
        v.swap(k, j);
    }
}

/// Lines per user: the minimum plus a share of the rest proportional to a
/// truncated log-normal draw, rounded so that the total is exactly `ratings`.
fn user_lengths(cfg: &SynthConfig) -> Vec<usize> {
    let mut rng = rng_for(cfg.seed, 1);
    let raw: Vec<f64> = (0..cfg.users)
        .map(|_| loop {
            let z: f64 = rng.sample(StandardNormal);
            if z <= LENGTH_Z_LIMIT {
                break (cfg.length_sigma * z).exp();
            }
        })
        .collect();
    let extra = cfg.ratings - cfg.users * cfg.min_user_ratings;
    let raw_total: f64 = raw.iter().sum();
    let shares: Vec<f64> = raw.iter().map(|r| r / raw_total * extra as f64).collect();
    let mut lengths: Vec<usize> = shares
        .iter()
        .map(|s| cfg.min_user_ratings + s.floor() as usize)
        .collect();
    let assigned: usize = lengths.iter().sum();
    // Largest remainders first; index breaks ties, so the result is exact and
    // reproducible.
    let mut short = cfg.ratings.saturating_sub(assigned);
    let mut by_remainder: Vec<usize> = (0..cfg.users).collect();
    by_remainder.sort_by(|&a, &b| {
        let (ra, rb) = (shares[a] - shares[a].floor(), shares[b] - shares[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &u in by_remainder.iter().cycle() {
        if short == 0 {
            break;
        }
        lengths[u] += 1;
        short -= 1;
    }
    lengths
}

/// Appends `n` in decimal.
fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[k..]);
}

/// One user's lines and what the ceiling needs of them.
struct UserOutput {
    bytes: Vec<u8>,
    /// Kept items (the walk), in order.
    walk: Vec<u32>,
    low_rated: usize,
    /// The state the last kept item was drawn from: the test example's truth.
    state_before_last: WalkState,
}

fn kept_rating(rng: &mut impl Rng) -> u64 {
    let u = rng.random::<f64>();
    let mut acc = 0.0;
    for (k, share) in KEPT_RATING_SHARES.iter().enumerate() {
        acc += share;
        if u < acc {
            return k as u64 + 2;
        }
    }
    5
}

fn next_gap(cfg: &SynthConfig, rng: &mut impl Rng) -> i64 {
    if rng.random::<f64>() < cfg.tie_prob {
        return 0;
    }
    let e: f64 = rng.sample(Exp1);
    if rng.random::<f64>() < BREAK_PROB {
        3600 + (e * BREAK_GAP_MEAN_SECONDS) as i64
    } else {
        1 + (e * SESSION_GAP_MEAN_SECONDS) as i64
    }
}

fn generate_user(world: &World, cfg: &SynthConfig, user: usize, lines: usize) -> UserOutput {
    let mut rng = rng_for(cfg.seed, 2 + user as u64);
    let mut bytes = Vec::with_capacity(lines * 30);
    let mut walk: Vec<u32> = Vec::with_capacity(lines);
    let mut low_rated = 0;
    let mut state: Option<WalkState> = None;
    let mut state_before_last = WalkState::default();
    let mut timestamp = FIRST_TIMESTAMP + rng.random_range(0..START_SPREAD_SECONDS);
    for line in 0..lines {
        if line > 0 {
            timestamp += next_gap(cfg, &mut rng);
        }
        let walk_lines_needed = MIN_KEPT_PER_USER.saturating_sub(walk.len());
        let low = lines - line > walk_lines_needed && rng.random::<f64>() < cfg.low_rating_fraction;
        let (item, rating) = if low {
            low_rated += 1;
            (world.draw_by_popularity(&mut rng), 1)
        } else {
            let item = match state.as_mut() {
                None => {
                    let first = world.draw_by_popularity(&mut rng);
                    state = Some(world.item_state[first as usize]);
                    first
                }
                Some(s) => {
                    state_before_last = *s;
                    world.step(s, &mut rng)
                }
            };
            walk.push(item);
            (item, kept_rating(&mut rng))
        };
        push_decimal(&mut bytes, user as u64 + 1);
        bytes.extend_from_slice(b"::");
        push_decimal(&mut bytes, world.ids[item as usize] as u64);
        bytes.extend_from_slice(b"::");
        push_decimal(&mut bytes, rating);
        bytes.extend_from_slice(b"::");
        push_decimal(&mut bytes, timestamp as u64);
        bytes.push(b'\n');
    }
    UserOutput {
        bytes,
        walk,
        low_rated,
        state_before_last,
    }
}

/// Writes `path` through a temporary file and a rename (`files`), so a
/// reader never sees a half-written file; the temporary file is removed on
/// failure.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<tempfile::NamedTempFile>) -> Result<()>,
) -> Result<()> {
    let tmp = crate::files::temp_file_beside(path)
        .map_err(io_err(path, "cannot create a temporary file"))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp);
    fill(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(|e| io_err(path, "cannot write")(e.into_error()))?;
    crate::files::persist(tmp, path).map_err(io_err(path, "cannot move into place"))
}

fn progress_bar(total: u64, show: bool) -> indicatif::ProgressBar {
    crate::progress::bar(
        Some(total),
        "synth [{bar:40}] {human_pos}/{human_len} ratings ({eta})",
        show,
    )
}

/// Expected HR@k and NDCG@k of a ranking under the true next-item probabilities.
fn expected_metrics(ranked_probs: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut hr = 0.0;
    let mut ndcg = 0.0;
    for (r, p) in ranked_probs.take(CEILING_K).enumerate() {
        hr += p;
        ndcg += p / (r as f64 + 2.0).log2();
    }
    (hr, ndcg)
}

/// The files `generate` writes.
pub const WRITTEN_FILES: [&str; 3] = ["ratings.dat", "movies.dat", "synth.json"];

/// Checks that writing into `out_dir` loses nothing of the user's: it is
/// missing, empty, or holds only what an earlier synth wrote there (its
/// `synth.json` names this generator family). A real `ratings.dat` in the
/// folder is refused, as is any other file.
pub fn check_out_dir(out_dir: &Path) -> Result<()> {
    if !out_dir.exists() {
        return Ok(());
    }
    if !out_dir.is_dir() {
        return Err(SynthError::NotAFolder {
            path: out_dir.to_path_buf(),
        });
    }
    let entries = fs::read_dir(out_dir).map_err(io_err(out_dir, "cannot list the folder"))?;
    let mut foreign = Vec::new();
    let mut ours = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(out_dir, "cannot list the folder"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if WRITTEN_FILES.contains(&name.as_str()) && entry.path().is_file() {
            ours.push(name);
        } else if !(name.starts_with(".seqrec-") && name.ends_with(".tmp")) {
            foreign.push(crate::text::escaped(&name));
        }
    }
    let made_by_synth = || {
        // Bounded, and never waiting on a FIFO: a summary is a few KiB.
        crate::files::read_bounded(&out_dir.join("synth.json"), 1 << 20, "a synth.json")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("generator")?
                    .as_str()
                    .map(|g| g.starts_with("seqrec-synth/"))
            })
            .unwrap_or(false)
    };
    if !ours.is_empty() && !made_by_synth() {
        foreign.append(&mut ours);
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let total = foreign.len();
    foreign.truncate(5);
    if total > 5 {
        foreign.push(format!("and {} more", total - 5));
    }
    Err(SynthError::NotOurs {
        path: out_dir.to_path_buf(),
        files: foreign,
    })
}

/// Writes `ratings.dat`, `movies.dat` and `synth.json` into `out_dir`
/// (created if missing) and returns what `synth.json` holds.
pub fn generate(cfg: &SynthConfig, out_dir: &Path, show_progress: bool) -> Result<SynthSummary> {
    let started = Instant::now();
    cfg.validate()?;
    let mut cfg = cfg.clone();
    cfg.max_item_id = Some(cfg.resolved_max_item_id() as u32);
    let cfg = cfg;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir, "cannot create the folder"))?;
    if !out_dir.is_dir() {
        return Err(SynthError::NotAFolder {
            path: out_dir.to_path_buf(),
        });
    }
    // Even with `force`, only regular files are replaced: a FIFO or a
    // device named ratings.dat is said now, before the data is made.
    for name in WRITTEN_FILES {
        crate::files::check_output("out_dir", &out_dir.join(name), &[])?;
    }

    let world = World::build(&cfg);
    let lengths = user_lengths(&cfg);
    let n_items = cfg.items;

    let pb = progress_bar(cfg.ratings as u64, show_progress);
    let mut train_counts = vec![0u64; n_items];
    let mut rated = vec![false; n_items];
    let mut kept_lengths = Vec::with_capacity(cfg.users);
    // Per user: the walk's state before its last item, and that item.
    let mut test_cases = Vec::with_capacity(cfg.users);
    let mut ratings_low = 0usize;
    let ratings_path = out_dir.join("ratings.dat");
    write_atomically(&ratings_path, |w| {
        let mut first_user = 0;
        while first_user < cfg.users {
            let mut end = first_user;
            let mut lines = 0;
            while end < cfg.users && (end == first_user || lines + lengths[end] <= CHUNK_LINES) {
                lines += lengths[end];
                end += 1;
            }
            let outputs: Vec<UserOutput> = (first_user..end)
                .into_par_iter()
                .map(|u| generate_user(&world, &cfg, u, lengths[u]))
                .collect();
            for out in outputs {
                w.write_all(&out.bytes)
                    .map_err(io_err(&ratings_path, "cannot write"))?;
                let (history, _test) = out.walk.split_at(out.walk.len() - 1);
                for &i in history {
                    train_counts[i as usize] += 1;
                }
                for &i in &out.walk {
                    rated[i as usize] = true;
                }
                kept_lengths.push(out.walk.len());
                test_cases.push((out.state_before_last, out.walk[out.walk.len() - 1]));
                ratings_low += out.low_rated;
            }
            pb.inc(lines as u64);
            first_user = end;
        }
        Ok(())
    })?;
    pb.finish_and_clear();

    let movies_path = out_dir.join("movies.dat");
    write_atomically(&movies_path, |w| {
        let mut line = Vec::with_capacity(96);
        for (i, &id) in world.ids.iter().enumerate() {
            let s = world.item_state[i];
            let c = &world.clusters[s.cluster as usize];
            line.clear();
            push_decimal(&mut line, id as u64);
            // The title shows the storyline, so that recommendations can be
            // read: part 13 of story 7 should follow part 12.
            line.extend_from_slice(b"::Story ");
            push_decimal(&mut line, s.cluster as u64 + 1);
            line.extend_from_slice(b" part ");
            push_decimal(&mut line, s.pos as u64 + 1);
            line.extend_from_slice(b" (");
            push_decimal(&mut line, world.years[i] as u64);
            line.extend_from_slice(b")::");
            line.extend_from_slice(c.genres.as_bytes());
            line.push(b'\n');
            w.write_all(&line)
                .map_err(io_err(&movies_path, "cannot write"))?;
        }
        Ok(())
    })?;

    // The popularity baseline ranks by training frequency; ties by item id.
    let mut by_count: Vec<u32> = (0..n_items as u32).collect();
    by_count.sort_by(|&a, &b| {
        train_counts[b as usize]
            .cmp(&train_counts[a as usize])
            .then(a.cmp(&b))
    });
    by_count.truncate(CEILING_K);
    let popular = by_count;

    let per_user: Vec<[f64; 5]> = test_cases
        .par_iter()
        .map_init(Vec::new, |candidates, &(state, label)| {
            world.next_item_candidates(state, candidates);
            let pop_probs: Vec<f64> = popular
                .iter()
                .map(|&i| world.probability(candidates, i))
                .collect();
            let (pop_hr, pop_ndcg) = expected_metrics(pop_probs.into_iter());
            candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let (hr, ndcg) = expected_metrics(candidates.iter().map(|&(_, p)| p));
            let hit = candidates.iter().take(CEILING_K).any(|&(i, _)| i == label);
            [hr, ndcg, pop_hr, pop_ndcg, f64::from(u8::from(hit))]
        })
        .collect();
    let mut sums = [0.0f64; 5];
    for m in &per_user {
        for (s, v) in sums.iter_mut().zip(m) {
            *s += v;
        }
    }
    let n_users = cfg.users as f64;

    let mut sorted_lengths = kept_lengths.clone();
    sorted_lengths.sort_unstable();
    let ratings_kept: usize = kept_lengths.iter().sum();
    let max_item_id = world.ids.last().copied().unwrap_or(0);
    let summary = SynthSummary {
        generator: GENERATOR.to_string(),
        seed: cfg.seed,
        users: cfg.users,
        items: n_items,
        max_item_id,
        vocab_size: max_item_id as usize + 1,
        clusters: world.clusters.len(),
        ratings_written: cfg.ratings,
        ratings_kept,
        ratings_low,
        items_rated: rated.iter().filter(|&&r| r).count(),
        kept_length: LengthSummary {
            min: sorted_lengths.first().copied().unwrap_or(0),
            median: sorted_lengths[sorted_lengths.len() / 2],
            mean: ratings_kept as f64 / n_users,
            max: sorted_lengths.last().copied().unwrap_or(0),
        },
        test_examples: cfg.users,
        ceiling_hr10: sums[0] / n_users,
        ceiling_ndcg10: sums[1] / n_users,
        oracle_test_hr10: sums[4] / n_users,
        popularity_hr10: sums[2] / n_users,
        popularity_ndcg10: sums[3] / n_users,
        seconds: 0.0,
        config: cfg,
    };
    let json = serde_json::to_string_pretty(&summary)?;
    let json_path = out_dir.join("synth.json");
    write_atomically(&json_path, |w| {
        w.write_all(json.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(io_err(&json_path, "cannot write"))
    })?;
    Ok(SynthSummary {
        seconds: started.elapsed().as_secs_f64(),
        ..summary
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_world(cfg: &SynthConfig) -> World {
        cfg.validate().unwrap();
        World::build(cfg)
    }

    /// The ceiling is only as right as the distribution it ranks: sampling
    /// many steps from one state must reproduce it.
    #[test]
    fn candidates_match_sampled_steps() {
        let cfg = SynthConfig {
            items: 60,
            cluster_size: 8,
            follow_window: 3,
            ..SynthConfig::default()
        };
        let world = small_world(&cfg);
        let mut rng = rng_for(99, 7);
        for state in [
            world.item_state[0],
            world.item_state[17],
            world.item_state[59],
        ] {
            let mut candidates = Vec::new();
            world.next_item_candidates(state, &mut candidates);
            let exact: Vec<f64> = (0..cfg.items as u32)
                .map(|i| world.probability(&candidates, i))
                .collect();
            let total: f64 = exact.iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
            let draws = 400_000;
            let mut counts = vec![0usize; cfg.items];
            for _ in 0..draws {
                let mut s = state;
                counts[world.step(&mut s, &mut rng) as usize] += 1;
            }
            for (i, &c) in counts.iter().enumerate() {
                let freq = c as f64 / draws as f64;
                assert!(
                    (freq - exact[i]).abs() < 0.004,
                    "item {i}: sampled {freq}, exact {}",
                    exact[i]
                );
            }
        }
    }

    #[test]
    fn single_item_clusters_and_no_jumps_are_handled() {
        for (items, cluster_size) in [(1, 1), (3, 2), (5, 50)] {
            let cfg = SynthConfig {
                items,
                cluster_size,
                ..SynthConfig::default()
            };
            let world = small_world(&cfg);
            let mut rng = rng_for(3, 3);
            let mut candidates = Vec::new();
            for i in 0..items {
                let state = world.item_state[i];
                world.next_item_candidates(state, &mut candidates);
                let total: f64 = (0..items as u32)
                    .map(|j| world.probability(&candidates, j))
                    .sum();
                assert!((total - 1.0).abs() < 1e-9);
                let mut s = state;
                assert!((world.step(&mut s, &mut rng) as usize) < items);
            }
        }
    }

    #[test]
    fn lengths_hit_the_total_exactly() {
        for (users, ratings) in [(1, 20), (7, 1000), (100, 2000), (6040, 1_000_209)] {
            let cfg = SynthConfig {
                users,
                ratings,
                ..SynthConfig::default()
            };
            let lengths = user_lengths(&cfg);
            assert_eq!(lengths.iter().sum::<usize>(), ratings);
            assert!(lengths.iter().all(|&l| l >= cfg.min_user_ratings));
        }
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 10, 956_703_932, u64::MAX] {
            let mut buf = Vec::new();
            push_decimal(&mut buf, n);
            assert_eq!(String::from_utf8(buf).unwrap(), n.to_string());
        }
    }
}
