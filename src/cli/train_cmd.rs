//! `seqrec train DATA --out MODEL`: the reference's training, by default
//! exactly; every hyper-parameter a flag or a key of `--config FILE`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::recommend_cmd::{demo, print_demo};
use super::DataArgs;
use crate::data::Padding;
use crate::data::Sequences;
use crate::eval;
use crate::model::io::{self, ModelMeta, SavedModel, UserHistories, FORMAT, FORMAT_VERSION};
use crate::model::ModelConfig;
use crate::retrieval::recommender::Recommender;
use crate::train::{self, Event, LrSchedule, Split, TrainConfig, TrainData, TrainState};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the model file.
    #[arg(long, short, default_value = "seqrec-model.safetensors")]
    pub out: PathBuf,
    /// A TOML file with any of the keys below (epochs, batch_size, ...); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue training a saved model (its settings, optimiser state and history) for --epochs more epochs.
    #[arg(long, value_name = "MODEL")]
    pub resume: Option<PathBuf>,
    /// Epochs to train [default: 5].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size [default: 4096].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Batch size of the val_loss pass [default: 2048].
    #[arg(long)]
    pub test_batch_size: Option<usize>,
    /// AdamW learning rate [default: 0.005].
    #[arg(long)]
    pub learning_rate: Option<f32>,
    /// AdamW decoupled weight decay [default: 0.004].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Embedding and GRU size [default: 32].
    #[arg(long)]
    pub embedding_dim: Option<usize>,
    /// Seed of every random choice [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Report HR@10 and NDCG@10 (seen items excluded) on the test examples every N epochs.
    #[arg(long, value_name = "N")]
    pub eval_every: Option<usize>,
    /// Start from a named set of settings: `parity` (the reference) or `best` (the measured best; see README).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Padding side of short contexts [default: right, as the reference].
    #[arg(long, value_enum)]
    pub padding: Option<Padding>,
    /// Padding steps leave the GRU state unchanged.
    #[arg(long)]
    pub mask_padding: bool,
    /// Shuffle the train examples every epoch (seeded).
    #[arg(long)]
    pub shuffle: bool,
    /// In-batch negatives holding the row's own label get no probability.
    #[arg(long)]
    pub remove_accidental_hits: bool,
    /// Subtract each negative's log sampling probability from its logit.
    #[arg(long)]
    pub logq_correction: bool,
    /// Extra negatives per batch, drawn by popularity^alpha and shared by all rows.
    #[arg(long, value_name = "N")]
    pub negatives: Option<usize>,
    /// The exponent alpha of the extra negatives' sampler [default: 0.75].
    #[arg(long, value_name = "ALPHA")]
    pub negative_alpha: Option<f32>,
    /// One item table for the query input and the candidates.
    #[arg(long)]
    pub shared_embeddings: bool,
    /// Dropout on the input embeddings [default: 0].
    #[arg(long, value_name = "P")]
    pub dropout_input: Option<f32>,
    /// Dropout on the GRU output [default: 0].
    #[arg(long, value_name = "P")]
    pub dropout_output: Option<f32>,
    /// Linear learning-rate warm-up over this many steps [default: 0].
    #[arg(long, value_name = "STEPS")]
    pub warmup_steps: Option<usize>,
    /// Learning-rate decay after warm-up [default: constant].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// The decayed learning rate ends at this fraction of the peak [default: 0].
    #[arg(long, value_name = "RATIO")]
    pub min_lr_ratio: Option<f32>,
    /// Carve a validation split from train (each user's second-to-last item) and keep the epoch with the best validation NDCG@10.
    #[arg(long)]
    pub validation: bool,
    /// Stop after N epochs without a better validation NDCG@10 (needs --validation).
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Draw train/val loss and HR@10/NDCG@10 per epoch into a PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Write one JSON line per epoch (losses, metrics, learning rate, seconds).
    #[arg(long, value_name = "FILE.jsonl")]
    pub log: Option<PathBuf>,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Summary {
    model: String,
    dataset: String,
    epochs: Vec<EpochLine>,
    train_examples: usize,
    test_examples: usize,
    steps_per_epoch: usize,
    threads: usize,
    data_seconds: f64,
    train_seconds: f64,
    /// The saved model on the test examples, seen items excluded.
    test: eval::AtK,
    /// Its most-popular baseline, the same way.
    popularity: eval::AtK,
    /// The saved model on the test examples, every item a candidate.
    test_all_items: eval::AtK,
    step_ms_median: f64,
    peak_memory_mib: Option<f64>,
}

/// The per-epoch figures the plot draws.
fn lines_for_plot(lines: &[EpochLine]) -> Vec<super::plot::EpochPoint> {
    lines
        .iter()
        .map(|l| super::plot::EpochPoint {
            epoch: l.epoch,
            loss: l.loss,
            val_loss: l.val_loss,
            hr10: l.valid_hr10.or(l.hr10),
            ndcg10: l.valid_ndcg10.or(l.ndcg10),
        })
        .collect()
}

#[derive(Serialize)]
struct EpochLine {
    epoch: usize,
    loss: f64,
    val_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    hr10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ndcg10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_hr10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_ndcg10: Option<f64>,
    learning_rate: f32,
    seconds: f64,
    step_ms_median: f64,
}

/// Rewrites the whole JSON-lines log atomically (a few lines per epoch).
fn write_log(path: &std::path::Path, lines: &[EpochLine]) -> Result<()> {
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, l)?;
        out.push(b'\n');
    }
    io::write_atomically(path, &out)
}

/// Peak resident memory of this process, from /proc (Linux).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A resumed model keeps the settings that define its maths: changing them
/// half-way would silently train (and later serve) a different model.
fn check_resume_settings(saved: &TrainConfig, asked: &TrainConfig) -> Result<()> {
    let fixed = [
        (
            "embedding_dim",
            saved.embedding_dim.to_string(),
            asked.embedding_dim.to_string(),
        ),
        (
            "context_len",
            saved.context_len.to_string(),
            asked.context_len.to_string(),
        ),
        (
            "padding",
            format!("{:?}", saved.padding),
            format!("{:?}", asked.padding),
        ),
        (
            "mask_padding",
            saved.mask_padding.to_string(),
            asked.mask_padding.to_string(),
        ),
        (
            "shared_embeddings",
            saved.shared_embeddings.to_string(),
            asked.shared_embeddings.to_string(),
        ),
    ];
    for (name, was, now) in fixed {
        if was != now {
            bail!("--resume: the model was trained with {name} = {was}; it cannot continue with {now}");
        }
    }
    Ok(())
}

/// Overlays the keys of a TOML config file on `cfg`: keys the file does not
/// name keep their value (from the preset or the resumed model), and an
/// unknown key is an error that names it.
fn merge_config_file(cfg: &TrainConfig, text: &str) -> Result<TrainConfig> {
    let file: toml::Table = toml::from_str(text)?;
    let mut merged = toml::Table::try_from(cfg)?;
    for (key, value) in file {
        merged.insert(key, value);
    }
    Ok(merged.try_into()?)
}

/// Defaults (or the resumed model's settings), then the preset, then the
/// config file, then the flags.
fn resolve_config(args: &TrainArgs, base: TrainConfig) -> Result<TrainConfig> {
    let mut cfg = match &args.preset {
        Some(name) => {
            TrainConfig::preset(name, base).map_err(|e| anyhow::anyhow!("--preset: {e}"))?
        }
        None => base,
    };
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        cfg = merge_config_file(&cfg, &text)
            .with_context(|| format!("{}: not a valid seqrec config", path.display()))?;
    }
    macro_rules! flag {
        ($($f:ident),*) => { $( if let Some(v) = args.$f { cfg.$f = v; } )* };
    }
    flag!(
        epochs,
        batch_size,
        test_batch_size,
        learning_rate,
        weight_decay,
        embedding_dim,
        seed,
        threads,
        eval_every
    );
    flag!(
        padding,
        negatives,
        negative_alpha,
        dropout_input,
        dropout_output,
        warmup_steps,
        lr_schedule,
        min_lr_ratio,
        patience
    );
    macro_rules! switch {
        ($($f:ident),*) => { $( if args.$f { cfg.$f = true; } )* };
    }
    switch!(
        mask_padding,
        shuffle,
        remove_accidental_hits,
        logq_correction,
        shared_embeddings,
        validation
    );
    if let Some(l) = args.data.context_len {
        cfg.context_len = l;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    Ok(cfg)
}

pub fn train(args: TrainArgs, quiet: bool) -> Result<()> {
    let resumed = match &args.resume {
        Some(p) => Some(io::load(p)?),
        None => None,
    };
    // A resumed run keeps the saved settings but trains a fresh count of
    // epochs (the saved count is the total trained so far).
    let base = resumed
        .as_ref()
        .map(|m| TrainConfig {
            epochs: TrainConfig::default().epochs,
            ..m.meta.train.clone()
        })
        .unwrap_or_default();
    let mut cfg = resolve_config(&args, base)?;
    if let Some(prev) = &resumed {
        check_resume_settings(&prev.meta.train, &cfg)?;
    }
    // Output folders are checked now, not after minutes of training.
    for (flag, path) in [
        ("--out", Some(&args.out)),
        ("--plot", args.plot.as_ref()),
        ("--log", args.log.as_ref()),
    ] {
        if let Some(path) = path {
            let dir = io::parent_dir(path);
            if !dir.is_dir() {
                bail!(
                    "{flag} {}: the folder {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
        }
    }
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        cfg.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the worker threads")?;

    let t_data = Instant::now();
    let ds = args.data.load(quiet)?;
    let mut split = args.data.split_config()?;
    split.context_len = cfg.context_len;
    let seqs = Sequences::build(&ds.interactions, split.min_sequence_len)?;
    let (train_set, valid_set, test_set) = if cfg.validation {
        seqs.split_last_two()
    } else {
        let (train, test) = seqs.split_last();
        (train, Default::default(), test)
    };
    if train_set.is_empty() {
        bail!(
            "{}: no training examples (every user has fewer than {} ratings?)",
            ds.origin,
            split.min_sequence_len
        );
    }
    let data_seconds = t_data.elapsed().as_secs_f64();

    let model_cfg = ModelConfig {
        vocab_size: ds.catalog.vocab_size(),
        dim: cfg.embedding_dim,
        context_len: cfg.context_len,
    };
    let mut state = match resumed {
        Some(prev) => {
            if prev.meta.titles != ds.catalog.titles || prev.meta.item_keys != ds.catalog.keys {
                bail!(
                    "--resume: {} is not the data the model was trained on ({}): its catalogue differs",
                    ds.origin,
                    prev.meta.dataset
                );
            }
            if prev.state.model.vocab_size != model_cfg.vocab_size {
                bail!(
                    "--resume: the model has a vocabulary of {} ids, this data {}; resume on the data it was trained on",
                    prev.state.model.vocab_size,
                    model_cfg.vocab_size
                );
            }
            let mut s = prev.state;
            s.optimizer.cfg = cfg.optimizer();
            s
        }
        None => TrainState::new(model_cfg, &cfg),
    };

    let data = TrainData {
        seqs: &seqs,
        train: &train_set,
        valid: &valid_set,
        test: &test_set,
    };
    let steps = train_set.num_batches(cfg.batch_size);
    if !quiet {
        eprintln!(
            "training on {}: {} train / {} test examples, {} steps per epoch, {} thread(s)",
            ds.origin,
            train_set.len(),
            test_set.len(),
            steps,
            threads
        );
    }
    let mut bar: Option<ProgressBar> = None;
    let mut last_epoch = 0;
    let mut log_error: Option<anyhow::Error> = None;
    let mut lines = Vec::new();
    let t_train = Instant::now();
    let json = args.json;
    let ranking = |m: &ModelConfig, p: &crate::model::Params, split: Split| {
        let rec = Recommender::from_parts(
            *m,
            p.clone(),
            ds.catalog.clone(),
            cfg.window().padding,
            cfg.forward_options().mask_padding,
            UserHistories::default(),
        );
        let examples = match split {
            Split::Validation => &valid_set,
            Split::Test => &test_set,
        };
        let r = eval::evaluate(&rec, &seqs, &train_set, examples, &[10]);
        (r.model.seen_excluded[0].hr, r.model.seen_excluded[0].ndcg)
    };
    let outcome = pool.install(|| {
        train::fit(
            &mut state,
            &data,
            &cfg,
            threads,
            Some(&ranking),
            &mut |ev| match ev {
                Event::EpochStart {
                    epoch,
                    epochs,
                    steps,
                } => {
                    last_epoch = epochs;
                    if !quiet {
                        let b = ProgressBar::new(steps as u64);
                        b.set_style(
                            ProgressStyle::with_template(
                                "epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} {elapsed}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        b.set_prefix(format!("{epoch}/{epochs}"));
                        bar = Some(b);
                    }
                }
                Event::Step { running_loss, .. } => {
                    if let Some(b) = &bar {
                        b.set_message(format!("{running_loss:.4}"));
                        b.inc(1);
                    }
                }
                Event::EpochEnd(r) => {
                    if let Some(b) = bar.take() {
                        b.finish_and_clear();
                    }
                    if !json {
                        let mut ranking = String::new();
                        if let (Some(h), Some(n)) = (r.valid_hr10, r.valid_ndcg10) {
                            ranking += &format!("  valid HR@10 {h:.4}  NDCG@10 {n:.4}");
                        }
                        if let (Some(h), Some(n)) = (r.hr10, r.ndcg10) {
                            ranking += &format!("  HR@10 {h:.4}  NDCG@10 {n:.4}");
                        }
                        println!(
                            "epoch {}/{}  loss {:.4}  val_loss {:.4}{}  {:.1} s",
                            r.epoch, last_epoch, r.loss, r.val_loss, ranking, r.seconds
                        );
                    }
                    lines.push(EpochLine {
                        epoch: r.epoch,
                        loss: r.loss,
                        val_loss: r.val_loss,
                        hr10: r.hr10,
                        ndcg10: r.ndcg10,
                        valid_hr10: r.valid_hr10,
                        valid_ndcg10: r.valid_ndcg10,
                        learning_rate: r.learning_rate,
                        seconds: r.seconds,
                        step_ms_median: r.step_ms_median,
                    });
                    if let Some(path) = &args.log {
                        log_error = log_error.take().or_else(|| write_log(path, &lines).err());
                    }
                }
            },
        )
    });
    let train_seconds = t_train.elapsed().as_secs_f64();
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    // A diverged run writes nothing: the model file already there stays.
    let outcome = outcome?;
    if let Some(e) = log_error {
        return Err(e.context("--log: cannot write the log"));
    }

    cfg.epochs = state.history.len();
    let meta = ModelMeta {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        model: state.model,
        train: cfg.clone(),
        history: state.history.clone(),
        optimizer_step: state.optimizer.step,
        dataset: ds.origin.clone(),
        titles: ds.catalog.titles.clone(),
        is_item: ds.catalog.is_item.clone(),
        item_keys: ds.catalog.keys.clone(),
        user_keys: Vec::new(),
        best_epoch: outcome.best_epoch,
        data: io::DataSettings {
            min_rating: args.data.read_options().min_rating,
            min_sequence_len: split.min_sequence_len,
        },
    };
    let users = UserHistories::from_sequences(&seqs, &ds.interactions.user_keys);
    let meta = ModelMeta {
        user_keys: users.keys.clone(),
        ..meta
    };
    let saved = SavedModel { meta, state, users };
    io::save(&args.out, &saved)?;

    let rec = Recommender::new(saved);
    let final_eval = pool.install(|| eval::evaluate(&rec, &seqs, &train_set, &test_set, &[10]));
    if let Some(path) = &args.plot {
        super::plot::draw(path, &lines_for_plot(&lines)).context("--plot")?;
    }
    let mut medians: Vec<f64> = lines.iter().map(|l| l.step_ms_median).collect();
    medians.sort_by(|a, b| a.total_cmp(b));
    let summary = Summary {
        model: args.out.display().to_string(),
        dataset: ds.origin.clone(),
        train_examples: train_set.len(),
        test_examples: test_set.len(),
        steps_per_epoch: steps,
        threads,
        data_seconds,
        train_seconds,
        step_ms_median: medians.get(medians.len() / 2).copied().unwrap_or(0.0),
        peak_memory_mib: peak_memory_mib(),
        test: final_eval.model.seen_excluded[0],
        popularity: final_eval.popularity.seen_excluded[0],
        test_all_items: final_eval.model.all_items[0],
        epochs: lines,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "trained {} epoch(s) in {:.1} s ({:.1} ms per step, median; data {:.2} s; peak memory {:.0} MiB)",
            summary.epochs.len(),
            summary.train_seconds,
            summary.step_ms_median,
            summary.data_seconds,
            summary.peak_memory_mib.unwrap_or(f64::NAN)
        );
        println!("model written to {}", summary.model);
        if let Some(best) = outcome.best_epoch {
            println!("kept the parameters of epoch {best} (best validation NDCG@10)");
        }
        println!(
            "test (seen items excluded): HR@10 {:.4}  NDCG@10 {:.4}  MRR@10 {:.4}   most popular: HR@10 {:.4}  NDCG@10 {:.4}",
            summary.test.hr, summary.test.ndcg, summary.test.mrr, summary.popularity.hr, summary.popularity.ndcg
        );
        // The reference ends with this demo; `seqrec recommend MODEL --demo` repeats it.
        let (watched, recommended) = demo(&rec)?;
        print_demo(&watched, &recommended);
    }
    Ok(())
}
