//! `seqrec export MODEL --items FILE.parquet [--queries FILE.parquet]`: a
//! model's item vectors and users' query vectors as Parquet, for a vector
//! database (see `crate::export` and the README).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::data::DataOptions;
use crate::export::{self, Written};
use crate::retrieval::recommender::Recommender;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A model file written by `seqrec train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Write every item's id, title and candidate vector here (Parquet).
    #[arg(long, value_name = "FILE.parquet")]
    pub items: Option<PathBuf>,
    /// Write every known user's id, history length and current query vector here (Parquet).
    #[arg(long, value_name = "FILE.parquet")]
    pub queries: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Summary {
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Written>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queries: Option<Written>,
    seconds: f64,
}

pub fn export(args: ExportArgs, quiet: bool) -> Result<()> {
    if args.items.is_none() && args.queries.is_none() {
        bail!("nothing to export: give --items FILE.parquet, --queries FILE.parquet or both");
    }
    let outputs: Vec<(&str, &Path)> = [
        ("--items", args.items.as_deref()),
        ("--queries", args.queries.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, path)| Some((flag, path?)))
    .collect();
    // The model and its cache now; the data it records it was trained on
    // once its file says which (before a byte is written).
    let model_files = super::model_files(&args.model);
    let inputs: Vec<&Path> = model_files.iter().map(PathBuf::as_path).collect();
    crate::files::check_outputs(&outputs, &inputs)?;
    let started = Instant::now();
    let saved = crate::checkpoint::load_for_inference(&args.model)?.artifact;
    let data_files = DataOptions::recorded_input_files(&saved.dataset);
    let data: Vec<&Path> = data_files.iter().map(PathBuf::as_path).collect();
    crate::files::check_outputs(&outputs, &data)?;
    let rec = Recommender::new(saved);
    let items = match &args.items {
        Some(path) => Some(export::write_items(&rec, path).context("--items")?),
        None => None,
    };
    let queries = match &args.queries {
        Some(path) => {
            let bar = crate::progress::bar(
                Some(rec.users.len() as u64),
                "queries [{bar:30}] {pos}/{len} users {elapsed}",
                !quiet,
            );
            let written = export::write_queries(&rec, path, &mut |n| bar.inc(n as u64));
            bar.finish_and_clear();
            Some(written.context("--queries")?)
        }
        None => None,
    };
    let summary = Summary {
        items,
        queries,
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    for (what, written, path) in [
        ("items", summary.items, &args.items),
        ("user queries", summary.queries, &args.queries),
    ] {
        if let (Some(w), Some(path)) = (written, path) {
            println!(
                "{} {what} ({} floats each) written to {}",
                w.rows,
                w.dim,
                path.display()
            );
        }
    }
    println!(
        "in {:.2} s; score by inner product (the dot product), not cosine",
        summary.seconds
    );
    Ok(())
}
