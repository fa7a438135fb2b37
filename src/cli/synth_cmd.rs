//! `seqrec synth OUT_DIR`: writes MovieLens-1M-format data with planted
//! sequential structure, and the best HR@10 any model could reach on it.

use anyhow::Result;
use clap::Args;

use crate::data::synth::{self, SynthConfig, SynthError};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Folder to write ratings.dat, movies.dat and synth.json into (created if missing).
    pub out_dir: std::path::PathBuf,
    /// Random seed; the same seed and flags give byte-identical files.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = SynthConfig::default().users)]
    pub users: usize,
    /// Number of distinct movies.
    #[arg(long, default_value_t = SynthConfig::default().items)]
    pub items: usize,
    /// Lines of ratings.dat in all, the rating-1 lines included.
    #[arg(long, default_value_t = SynthConfig::default().ratings)]
    pub ratings: usize,
    /// Largest movie id; ids are spread over 1..=this with gaps [default: items x 3952 / 3706].
    #[arg(long)]
    pub max_item_id: Option<u32>,
    /// Fewest lines per user.
    #[arg(long, default_value_t = SynthConfig::default().min_user_ratings)]
    pub min_user_ratings: usize,
    /// Spread (sigma) of the log-normal user lengths; 0 makes every user alike.
    #[arg(long, default_value_t = SynthConfig::default().length_sigma)]
    pub length_sigma: f64,
    /// Zipf exponent of item popularity, (rank + offset)^-exponent.
    #[arg(long, default_value_t = SynthConfig::default().popularity_exponent)]
    pub popularity_exponent: f64,
    /// Offset added to popularity ranks, as a fraction of --items; larger flattens the head.
    #[arg(long, default_value_t = SynthConfig::default().popularity_offset_fraction)]
    pub popularity_offset_fraction: f64,
    /// Items per cluster (about).
    #[arg(long, default_value_t = SynthConfig::default().cluster_size)]
    pub cluster_size: usize,
    /// Clusters a walk can jump to from each cluster.
    #[arg(long, default_value_t = SynthConfig::default().next_clusters)]
    pub next_clusters: usize,
    /// Chance that a step stays in its cluster.
    #[arg(long, default_value_t = SynthConfig::default().stay_prob)]
    pub stay_prob: f64,
    /// Chance that a step within the cluster moves ahead in its storyline.
    #[arg(long, default_value_t = SynthConfig::default().follow_prob)]
    pub follow_prob: f64,
    /// How many positions ahead a storyline step may move.
    #[arg(long, default_value_t = SynthConfig::default().follow_window)]
    pub follow_window: usize,
    /// Chance that a kept rating is a random popular item instead.
    #[arg(long, default_value_t = SynthConfig::default().noise_prob)]
    pub noise_prob: f64,
    /// Share of lines rated 1, outside the walk (the default filter drops them).
    #[arg(long, default_value_t = SynthConfig::default().low_rating_fraction)]
    pub low_rating_fraction: f64,
    /// Chance that a rating has the same timestamp as the previous one.
    #[arg(long, default_value_t = SynthConfig::default().tie_prob)]
    pub tie_prob: f64,
    /// Print the summary as JSON (the content of synth.json).
    #[arg(long)]
    pub json: bool,
    /// Write into OUT_DIR even if it holds files synth did not write (ratings.dat, movies.dat and synth.json are replaced; other files are left).
    #[arg(long)]
    pub force: bool,
}

impl SynthArgs {
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            users: self.users,
            items: self.items,
            max_item_id: self.max_item_id,
            ratings: self.ratings,
            min_user_ratings: self.min_user_ratings,
            length_sigma: self.length_sigma,
            popularity_exponent: self.popularity_exponent,
            popularity_offset_fraction: self.popularity_offset_fraction,
            cluster_size: self.cluster_size,
            next_clusters: self.next_clusters,
            stay_prob: self.stay_prob,
            follow_prob: self.follow_prob,
            follow_window: self.follow_window,
            noise_prob: self.noise_prob,
            low_rating_fraction: self.low_rating_fraction,
            tie_prob: self.tie_prob,
        }
    }
}

pub fn synth(args: SynthArgs, quiet: bool) -> Result<()> {
    if !args.force {
        synth::check_out_dir(&args.out_dir)?;
    }
    let s = synth::generate(&args.config(), &args.out_dir, !quiet).map_err(|e| match e {
        // The library names the setting (`min_user_ratings`); the flag is
        // `--min-user-ratings`.
        SynthError::Setting { field, msg } => {
            anyhow::anyhow!("{}: {msg}", super::flag(field))
        }
        e => e.into(),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let dir = args.out_dir.display();
    println!(
        "wrote           {dir}/ratings.dat, movies.dat, synth.json in {:.2} s",
        s.seconds
    );
    println!(
        "ratings         {} written, {} kept, {} rated 1 (dropped by the default filter)",
        s.ratings_written, s.ratings_kept, s.ratings_low
    );
    println!(
        "users           {}, kept length min {}  median {}  mean {:.1}  max {}",
        s.users, s.kept_length.min, s.kept_length.median, s.kept_length.mean, s.kept_length.max
    );
    println!(
        "items           {} in catalogue ({} rated), ids up to {}, vocabulary {}, {} clusters",
        s.items, s.items_rated, s.max_item_id, s.vocab_size, s.clusters
    );
    println!(
        "ceiling         HR@10 {:.4}  NDCG@10 {:.4} (oracle knowing the generator's state, {} test examples)",
        s.ceiling_hr10, s.ceiling_ndcg10, s.test_examples
    );
    println!(
        "oracle on test  HR@10 {:.4} (its top 10 against the actual test items: the ceiling as sampled by these labels)",
        s.oracle_test_hr10
    );
    println!(
        "popularity      HR@10 {:.4}  NDCG@10 {:.4} (top 10 by training frequency)",
        s.popularity_hr10, s.popularity_ndcg10
    );
    Ok(())
}
