//! `seqrec train DATA --out MODEL`: the reference's training, by default
//! exactly; every setting a flag or a key of `--config FILE`. The run itself
//! is `train::run` in the library; this file parses, calls and prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use serde::Serialize;

use super::recommend_cmd::{demo, print_demo};
use crate::checkpoint;
use crate::data::DataOptions;
use crate::eval;
use crate::retrieval::approx::{IndexChoice, IndexSource};
use crate::retrieval::recommender::Recommender;
use crate::train::config::ConfigFileError;
use crate::train::{self, Event, Settings, TrainedModel};

// Switches take `--NAME` or `--NAME=true` to turn on and `--NAME=false` to
// turn off, so a preset's or config file's switch can be turned off from
// the command line. The model's and training's flags come from their
// settings tables (`ModelOptions`, `TrainConfig`): each named as its
// config key, unset unless given, overlaying the defaults, preset and
// config file as a TOML table (see `--print-config`).

#[derive(Args, Debug)]
#[command(
    after_help = "Every setting defaults to the reference's value (Keras-RS GRU4Rec); \
                  `seqrec train --print-config` prints the value of each in effect \
                  (defaults, then --preset, then --config, then these flags)."
)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataOptions,
    /// Where to write the model file.
    #[arg(long, short, default_value = super::DEFAULT_MODEL_FILE)]
    pub out: PathBuf,
    /// A TOML file with any of the settings' keys (epochs, batch_size, padding, ...); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue training a saved model (its settings, optimiser state and history) for --epochs more epochs.
    #[arg(long, value_name = "MODEL")]
    pub resume: Option<PathBuf>,
    /// Start from a named set of settings: `parity` (the reference), `best` (the measured best window GRU; see README) or `sasrec` (SASRec trained at every step of 200-item histories, full softmax, 60 epochs; see docs/training-sequence.md).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    #[command(flatten, next_help_heading = "Model")]
    pub model: crate::model::spec::ModelFlags,
    #[command(flatten, next_help_heading = "Training")]
    pub train: train::config::TrainFlags,
    /// Print the settings in effect (defaults, preset, config file, flags) as a config file, and stop.
    #[arg(long)]
    pub print_config: bool,
    /// Draw train/val loss and HR@10/NDCG@10 per epoch into a PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Write one JSON line per epoch (losses, metrics, learning rate, seconds).
    #[arg(long, value_name = "FILE.jsonl")]
    pub log: Option<PathBuf>,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// The approximate index `recommend` and `serve` will use: approx builds it now and caches it beside the model file as MODEL.index, auto does so above 100,000 items (so the first `serve` does not wait for it), exact builds none.
    #[arg(long, value_enum, default_value_t = IndexChoice::Auto)]
    pub index: IndexChoice,
}

#[derive(Serialize)]
struct Summary {
    model: String,
    dataset: String,
    epochs: Vec<EpochLine>,
    /// The examples and the closing evaluation (`train_examples`,
    /// `test_examples`, `test`, `popularity`, `test_all_items`).
    #[serde(flatten)]
    report: eval::TrainingReport,
    steps_per_epoch: usize,
    threads: usize,
    data_seconds: f64,
    train_seconds: f64,
    /// Writing the model file.
    save_seconds: f64,
    /// The final evaluation on the test examples.
    eval_seconds: f64,
    /// Building (or reading) the approximate index; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    index_seconds: Option<f64>,
    /// The index `recommend` and `serve` will use.
    index: IndexReport,
    step_ms_median: f64,
    /// The median step's time per label it trained on (a label is a
    /// window in window training, a step of a history in sequence
    /// training): the cost of one trained position.
    us_per_trained_position: f64,
    peak_memory_mib: Option<f64>,
}

/// The top-K the model will be served with: `exact` (no graph), or the
/// approximate graph and where it was cached.
#[derive(Serialize)]
struct IndexReport {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<usize>,
    /// The cache file's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    /// `built`, or `cache` when the file already held this model's graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'static str>,
}

impl IndexReport {
    fn line(&self) -> String {
        match (&self.path, self.items, self.bytes, self.seconds) {
            (Some(path), Some(items), Some(bytes), Some(seconds)) => format!(
                "approximate index over {items} items {} {path} ({:.1} MiB) in {seconds:.2} s",
                if self.from == Some("cache") {
                    "read from"
                } else {
                    "written to"
                },
                bytes as f64 / (1 << 20) as f64
            ),
            _ => {
                "index: exact (recommend and serve score every item; --index approx builds a graph)"
                    .into()
            }
        }
    }
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
    crate::files::write_atomically(path, &out)
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// Peak resident memory of this process, from /proc (Linux).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Defaults (or the resumed model's settings), then the preset, then the
/// config file, then the flags.
fn resolve_settings(args: &TrainArgs, base: Settings) -> Result<Settings> {
    let mut settings = match &args.preset {
        Some(name) => base.preset(name).map_err(|e| anyhow::anyhow!("--{e}"))?,
        None => base,
    };
    if let Some(path) = &args.config {
        settings = settings.overlay_config_file(path).map_err(|e| match e {
            ConfigFileError::Read(e) => anyhow::anyhow!("--config {e}"),
            invalid => invalid.into(),
        })?;
    }
    let mut flags = toml::Table::try_from(&args.model)?;
    flags.extend(toml::Table::try_from(&args.train)?);
    settings = settings
        .overlay(flags)
        .map_err(|e| anyhow::anyhow!("{}: {}", super::flag(&e.key), e.message))?;
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    Ok(settings)
}

/// Shows the run's events: a progress bar per epoch, a line per epoch, and
/// the JSON-lines log.
struct Printer<'a> {
    args: &'a TrainArgs,
    quiet: bool,
    origin: &'a str,
    bar: Option<ProgressBar>,
    last_epoch: usize,
    /// As training announced it (sequence training counts its rows).
    steps_per_epoch: usize,
    lines: Vec<EpochLine>,
    log_error: Option<anyhow::Error>,
}

impl Printer<'_> {
    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Start {
                train_examples,
                test_examples,
                steps,
                threads,
            } => {
                self.steps_per_epoch = steps;
                if !self.quiet {
                    eprintln!(
                        "training on {}: {train_examples} train / {test_examples} test examples, {steps} steps per epoch, {threads} thread(s)",
                        self.origin
                    );
                }
            }
            Event::EpochStart {
                epoch,
                epochs,
                steps,
            } => {
                self.last_epoch = epochs;
                let bar = crate::progress::bar(
                    Some(steps as u64),
                    "epoch {prefix} [{bar:30}] {pos}/{len} loss {msg} {elapsed}",
                    !self.quiet,
                );
                bar.set_prefix(format!("{epoch}/{epochs}"));
                self.bar = Some(bar);
            }
            Event::Step { running_loss, .. } => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("{running_loss:.4}"));
                    b.inc(1);
                }
            }
            Event::EpochEnd(r) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                if !self.args.json {
                    let mut ranking = String::new();
                    if let (Some(h), Some(n)) = (r.valid_hr10, r.valid_ndcg10) {
                        ranking += &format!("  valid HR@10 {h:.4}  NDCG@10 {n:.4}");
                    }
                    if let (Some(h), Some(n)) = (r.hr10, r.ndcg10) {
                        ranking += &format!("  HR@10 {h:.4}  NDCG@10 {n:.4}");
                    }
                    println!(
                        "epoch {}/{}  loss {:.4}  val_loss {:.4}{}  {:.1} s",
                        r.epoch, self.last_epoch, r.loss, r.val_loss, ranking, r.seconds
                    );
                }
                self.lines.push(EpochLine {
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
                if let Some(path) = &self.args.log {
                    let error = self.log_error.take();
                    self.log_error = error.or_else(|| write_log(path, &self.lines).err());
                }
            }
        }
    }
}

pub fn train(args: TrainArgs, quiet: bool) -> Result<()> {
    let resumed = match &args.resume {
        Some(p) => Some(checkpoint::load(p)?),
        None => None,
    };
    let base = resumed
        .as_ref()
        .map_or_else(Settings::default, TrainedModel::settings_to_continue);
    let settings = resolve_settings(&args, base)?;
    if args.print_config {
        print!("{}", settings.to_toml()?);
        return Ok(());
    }
    if let Some(w) = crate::workers::oversubscription_warning("threads", settings.train.threads) {
        eprintln!("{w}");
    }
    // Outputs are checked now, not after minutes of training.
    // `--resume M --out M` continues a model in place, as asked: the old
    // file stays until the new one is renamed over it.
    let mut inputs = args.data.input_files();
    inputs.extend(args.config.iter().cloned());
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let outputs: Vec<(&str, &Path)> = [
        ("--out", Some(&args.out)),
        ("--plot", args.plot.as_ref()),
        ("--log", args.log.as_ref()),
    ]
    .into_iter()
    .filter_map(|(flag, path)| Some((flag, path?.as_path())))
    .collect();
    if let Some(plot) = &args.plot {
        super::plot::check_path(plot)?;
    }
    crate::files::check_outputs(&outputs, &inputs)?;
    // The graph is cached beside the model as MODEL.index: checked as an
    // output too, so that a FIFO, a device or an input there is said now.
    let cache = crate::retrieval::approx::cache_path(&args.out);
    if args.index != IndexChoice::Exact {
        let mut all = outputs.clone();
        all.push(("the index cache", &cache));
        crate::files::check_outputs(&all, &inputs).map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "--index {}: the approximate index is cached beside the model file, as MODEL.index; \
                 move what is there, give another --out, or pass --index exact",
                args.index.name()
            ))
        })?;
    }
    if let Some(resumed) = &args.resume {
        // Only the model may replace the model it continues.
        let others: Vec<(&str, &Path)> = outputs
            .iter()
            .filter(|(flag, _)| *flag != "--out")
            .copied()
            .collect();
        crate::files::check_outputs(&others, &[resumed.as_path()])?;
    }

    let t_data = Instant::now();
    let data = args
        .data
        .data_settings()
        .map_err(super::explain_data_error)?;
    let ds = args.data.load(quiet).map_err(super::explain_data_error)?;
    let data_seconds = t_data.elapsed().as_secs_f64();
    let ranking = eval::ranking_hook(&ds.catalog);
    let mut printer = Printer {
        args: &args,
        quiet,
        origin: &ds.origin,
        bar: None,
        last_epoch: 0,
        steps_per_epoch: 0,
        lines: Vec::new(),
        log_error: None,
    };
    let t_train = Instant::now();
    let result = train::run(&ds, data, &settings, resumed, Some(&ranking), &mut |ev| {
        printer.on_event(ev);
        std::ops::ControlFlow::Continue(())
    });
    let train_seconds = t_train.elapsed().as_secs_f64();
    if let Some(b) = printer.bar.take() {
        b.finish_and_clear();
    }
    // A diverged run writes nothing: the model file already there stays.
    let session = result?;
    if let Some(e) = printer.log_error.take() {
        return Err(e.context("--log: cannot write the log"));
    }
    let lines = printer.lines;
    let steps_per_epoch = printer.steps_per_epoch;
    let t_save = Instant::now();
    checkpoint::save(&args.out, &session.model)?;
    let save_seconds = t_save.elapsed().as_secs_f64();

    let t_eval = Instant::now();
    let best_epoch = session.model.best_epoch;
    let mut rec = Recommender::new(session.model.artifact);
    let report = session
        .pool
        .install(|| eval::training_report(&rec, &session.seqs, &session.train, &session.test));
    let eval_seconds = t_eval.elapsed().as_secs_f64();
    // After the evaluation, which is exact: the graph is for serving.
    let t_index = Instant::now();
    let source = session
        .pool
        .install(|| super::use_index(&mut rec, args.index, None, &args.out, quiet, false))?;
    let index_seconds = rec
        .approx_index()
        .is_some()
        .then(|| t_index.elapsed().as_secs_f64());
    // The graph was asked for (or the catalogue is past auto's threshold)
    // so that serving need not build it: not writing it is a failure.
    if let Some(IndexSource::BuiltNotCached(why)) = &source {
        bail!(
            "--index {}: the model was written to {}, but its approximate index could not be: {why}",
            args.index.name(),
            args.out.display()
        );
    }
    let index = match (&source, rec.approx_index()) {
        (Some(source), Some(graph)) => IndexReport {
            kind: "approx",
            path: Some(cache.display().to_string()),
            items: Some(graph.items()),
            bytes: std::fs::metadata(&cache).ok().map(|m| m.len()),
            seconds: index_seconds,
            from: Some(match source {
                IndexSource::Cache => "cache",
                _ => "built",
            }),
        },
        _ => IndexReport {
            kind: "exact",
            path: None,
            items: None,
            bytes: None,
            seconds: None,
            from: None,
        },
    };
    if let Some(path) = &args.plot {
        super::plot::draw(path, &lines_for_plot(&lines)).context("--plot")?;
    }
    let mut medians: Vec<f64> = lines.iter().map(|l| l.step_ms_median).collect();
    medians.sort_by(|a, b| a.total_cmp(b));
    let step_ms_median = medians.get(medians.len() / 2).copied().unwrap_or(0.0);
    // Every train label is trained once an epoch, whatever the rows.
    let us_per_trained_position =
        step_ms_median * 1e3 * steps_per_epoch as f64 / session.train.len().max(1) as f64;
    let summary = Summary {
        model: args.out.display().to_string(),
        dataset: ds.origin.clone(),
        steps_per_epoch,
        threads: session.threads,
        data_seconds,
        train_seconds,
        save_seconds,
        eval_seconds,
        index_seconds,
        index,
        step_ms_median,
        us_per_trained_position,
        peak_memory_mib: peak_memory_mib(),
        report,
        epochs: lines,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "trained {} epoch(s) in {:.1} s ({:.1} ms per step, median, {:.2} µs per trained position; data {:.2} s; peak memory {:.0} MiB)",
            summary.epochs.len(),
            summary.train_seconds,
            summary.step_ms_median,
            summary.us_per_trained_position,
            summary.data_seconds,
            summary.peak_memory_mib.unwrap_or(f64::NAN)
        );
        println!(
            "model written to {} in {:.2} s; evaluated in {:.2} s",
            summary.model, summary.save_seconds, summary.eval_seconds
        );
        println!("{}", summary.index.line());
        if let Some(best) = best_epoch {
            println!("kept the parameters of epoch {best} (best validation NDCG@10)");
        }
        println!(
            "test (seen items excluded): HR@10 {:.4}  NDCG@10 {:.4}  MRR@10 {:.4}   most popular: HR@10 {:.4}  NDCG@10 {:.4}",
            summary.report.test.hr, summary.report.test.ndcg, summary.report.test.mrr, summary.report.popularity.hr, summary.report.popularity.ndcg
        );
        // The reference ends with this demo; `seqrec recommend MODEL --demo` repeats it.
        let (watched, recommended) = demo(&rec)?;
        print_demo(&watched, &recommended);
    }
    Ok(())
}
