//! `seqrec data stats DATA`: what a user checks first about a dataset.

use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::data::DataOptions;
use crate::data::Sequences;
use crate::model::{fill_batch, Batch, ModelOptions};
use crate::text::quoted;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Counts, sequence lengths, examples, steps per epoch and the first batch's rows.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataOptions,
    /// Items of history in each shown row (a model's context_len).
    #[arg(long, default_value_t = ModelOptions::default().context_len)]
    pub context_len: usize,
    /// Batch size for the steps-per-epoch figure.
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,
    /// How many rows of the first train batch to show.
    #[arg(long, default_value_t = 5)]
    pub rows: usize,
    /// Show the rows' titles as well as their ids.
    #[arg(long)]
    pub titles: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct LengthStats {
    min: usize,
    p25: usize,
    median: usize,
    p75: usize,
    p90: usize,
    p99: usize,
    max: usize,
    mean: f64,
}

#[derive(Serialize)]
struct Row {
    context: Vec<u32>,
    label: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_titles: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label_title: Option<String>,
}

#[derive(Serialize)]
struct Stats {
    origin: String,
    ratings_read: usize,
    ratings_below_min_rating: usize,
    malformed_lines_skipped: usize,
    ratings_kept: usize,
    users_read: usize,
    users_kept: usize,
    items_rated: usize,
    items_in_catalog: usize,
    vocab_size: usize,
    sequence_length: LengthStats,
    train_examples: usize,
    test_examples: usize,
    batch_size: usize,
    steps_per_epoch: usize,
    first_train_rows: Vec<Row>,
    seconds: f64,
}

pub fn data(cmd: DataCommand, quiet: bool) -> Result<()> {
    match cmd {
        DataCommand::Stats(a) => stats(a, quiet),
    }
}

fn percentile(sorted: &[usize], q: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn stats(args: StatsArgs, quiet: bool) -> Result<()> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size: expected at least 1");
    }
    let split = args
        .data
        .data_settings()
        .map_err(super::explain_data_error)?;
    // The rows are shown as a model of the reference's options would see them.
    let options = ModelOptions {
        context_len: args.context_len,
        ..ModelOptions::default()
    };
    options.validate().map_err(|e| {
        let e = crate::train::SettingError::from(e);
        anyhow::anyhow!("{}: {}", super::flag(&e.key), e.message)
    })?;
    let t0 = Instant::now();
    let ds = args.data.load(quiet).map_err(super::explain_data_error)?;
    let seqs = Sequences::build(&ds.interactions, split.min_sequence_len)?;
    let (train, test) = seqs.split_last();
    let seconds = t0.elapsed().as_secs_f64();

    let mut lens: Vec<usize> = (0..seqs.len()).map(|s| seqs.get(s).len()).collect();
    lens.sort_unstable();
    let mut rated = vec![false; ds.catalog.vocab_size()];
    for &i in &ds.interactions.items {
        rated[i as usize] = true;
    }
    let spec = options.spec(ds.catalog.vocab_size());
    let l = spec.context_len;
    let mut batch = Batch::default();
    let n_rows = args.rows.min(train.len());
    fill_batch(&spec, &seqs, &train.label_pos[..n_rows], &mut batch);
    let rows = (0..n_rows)
        .map(|r| Row {
            context: batch.contexts[r * l..(r + 1) * l].to_vec(),
            label: batch.labels[r],
            context_titles: args.titles.then(|| {
                batch.contexts[r * l..(r + 1) * l]
                    .iter()
                    .map(|&i| ds.catalog.title(i).to_string())
                    .collect()
            }),
            label_title: args
                .titles
                .then(|| ds.catalog.title(batch.labels[r]).to_string()),
        })
        .collect();

    let s = Stats {
        origin: ds.origin.clone(),
        ratings_read: ds.interactions.lines_read,
        ratings_below_min_rating: ds.interactions.below_min_rating,
        malformed_lines_skipped: ds.interactions.skipped_lines,
        ratings_kept: ds.interactions.len(),
        users_read: ds.interactions.user_keys.len(),
        users_kept: seqs.len(),
        items_rated: rated.iter().filter(|&&b| b).count(),
        items_in_catalog: ds.catalog.num_items(),
        vocab_size: ds.catalog.vocab_size(),
        sequence_length: LengthStats {
            min: lens.first().copied().unwrap_or(0),
            p25: percentile(&lens, 0.25),
            median: percentile(&lens, 0.5),
            p75: percentile(&lens, 0.75),
            p90: percentile(&lens, 0.9),
            p99: percentile(&lens, 0.99),
            max: lens.last().copied().unwrap_or(0),
            mean: if lens.is_empty() {
                0.0
            } else {
                lens.iter().sum::<usize>() as f64 / lens.len() as f64
            },
        },
        train_examples: train.len(),
        test_examples: test.len(),
        batch_size: args.batch_size,
        steps_per_epoch: train.num_batches(args.batch_size),
        first_train_rows: rows,
        seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("data            {}", s.origin);
    println!(
        "ratings         {} read, {} kept ({} below min rating, {} malformed lines skipped)",
        s.ratings_read, s.ratings_kept, s.ratings_below_min_rating, s.malformed_lines_skipped
    );
    println!(
        "users           {} read, {} kept (at least {} ratings)",
        s.users_read, s.users_kept, split.min_sequence_len
    );
    println!(
        "items           {} rated, {} in catalogue, vocabulary {} (largest id + 1; 0 is padding)",
        s.items_rated, s.items_in_catalog, s.vocab_size
    );
    let l = &s.sequence_length;
    println!(
        "sequence length min {}  p25 {}  median {}  p75 {}  p90 {}  p99 {}  max {}  mean {:.1}",
        l.min, l.p25, l.median, l.p75, l.p90, l.p99, l.max, l.mean
    );
    println!(
        "examples        {} train, {} test (context {}, right-padded with 0)",
        s.train_examples, s.test_examples, spec.context_len
    );
    println!(
        "steps per epoch {} at batch size {}",
        s.steps_per_epoch, s.batch_size
    );
    println!("first train batch, {} rows:", n_rows);
    for r in &s.first_train_rows {
        println!("  context {:?} -> label {}", r.context, r.label);
        if let (Some(ct), Some(lt)) = (&r.context_titles, &r.label_title) {
            // Titles are the file's text: bounded and escaped like input
            // in messages.
            let ct: Vec<String> = ct.iter().map(|t| quoted(t)).collect();
            println!("    context titles: [{}]", ct.join(", "));
            println!("    label title:    {}", quoted(lt));
        }
    }
    eprintln!("read and built examples in {:.3} s", s.seconds);
    Ok(())
}
