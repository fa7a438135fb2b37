//! `seqrec evaluate MODEL [DATA]`: HR/NDCG/MRR@K over the full catalogue,
//! for the model and for a most-popular baseline, with and without seen
//! items. Without DATA, on the data the model records it was trained on.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use crate::data::DataOptions;
use crate::eval::{self, EvalReport};
use crate::retrieval::approx::{IndexChoice, SearchList};
use crate::retrieval::recommender::Recommender;

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// A model file written by `seqrec train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataOptions,
    /// Cut-offs, comma-separated.
    #[arg(long, default_value = "10,20")]
    pub k: String,
    /// Worker threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// exact: rank against every item (the metrics); approx: also retrieve through the approximate graph and report its recall@K against exact and the metrics it gives.
    #[arg(long, value_enum, default_value_t = EvalIndex::Exact)]
    pub index: EvalIndex,
    /// With --index approx: candidates the graph's walk keeps (ef) [default: 40]; compare a few to choose serve's.
    #[arg(long, value_name = "N")]
    pub search_list: Option<SearchList>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalIndex {
    Exact,
    Approx,
}

/// Parses `10,20` into cut-offs, each at least 1.
pub fn parse_ks(text: &str) -> Result<Vec<usize>> {
    let mut ks = Vec::new();
    for part in text.split(',') {
        match part.trim().parse::<usize>() {
            Ok(k) if k >= 1 => ks.push(k),
            _ => bail!(
                "--k: expected positive integers separated by commas (e.g. 10,20), found {part:?}"
            ),
        }
    }
    Ok(ks)
}

pub fn print_report(r: &EvalReport) {
    println!(
        "{} test examples ranked against {} items (tie rule: {})",
        r.examples, r.candidates, r.tie_rule
    );
    println!(
        "{:<11} {:>4}   {:>7} {:>7} {:>7}   {:>7} {:>7} {:>7}",
        "", "", "all items", "", "", "seen excluded", "", ""
    );
    println!(
        "{:<11} {:>4}   {:>7} {:>7} {:>7}   {:>7} {:>7} {:>7}",
        "scorer", "K", "HR", "NDCG", "MRR", "HR", "NDCG", "MRR"
    );
    for (name, s) in [("model", &r.model), ("popularity", &r.popularity)] {
        for (a, b) in s.all_items.iter().zip(&s.seen_excluded) {
            println!(
                "{:<11} {:>4}   {:>7.4} {:>7.4} {:>7.4}   {:>7.4} {:>7.4} {:>7.4}",
                name, a.k, a.hr, a.ndcg, a.mrr, b.hr, b.ndcg, b.mrr
            );
        }
    }
    if let Some(a) = &r.approx {
        for b in &a.seen_excluded {
            println!(
                "{:<11} {:>4}   {:>7} {:>7} {:>7}   {:>7.4} {:>7.4} {:>7.4}",
                "approx", b.k, "", "", "", b.hr, b.ndcg, b.mrr
            );
        }
        println!(
            "approximate top-{} found {:.4} of exact top-{} (recall, seen items excluded; search list {})",
            a.k, a.recall, a.k, a.search_list
        );
    }
}

pub fn evaluate(args: EvaluateArgs, quiet: bool) -> Result<()> {
    let ks = parse_ks(&args.k)?;
    if args.search_list.is_some() && args.index != EvalIndex::Approx {
        bail!("--search-list: the approximate index's setting, only with --index approx");
    }
    // Checked before the model and data are read, not after.
    let threads = args.threads.unwrap_or(0);
    crate::workers::count("--threads", threads)?;
    if let Some(w) = crate::workers::oversubscription_warning("--threads", threads) {
        eprintln!("{w}");
    }
    let saved = crate::checkpoint::load_for_inference(&args.model)?.artifact;
    let mut args = args;
    args.data.default_to(&saved.data);
    if args.data.data.is_none() && args.data.dataset.is_none() {
        args.data
            .default_source_to(&saved.dataset)
            .map_err(super::explain_data_error)?;
        if !quiet {
            eprintln!(
                "evaluating on {}, the model's training data",
                crate::text::escaped(&saved.dataset)
            );
        }
    }
    let mut rec = Recommender::new(saved);
    if args.index == EvalIndex::Approx {
        super::use_index(
            &mut rec,
            IndexChoice::Approx,
            args.search_list,
            &args.model,
            quiet,
            true,
        )?;
    }
    let data = args
        .data
        .data_settings()
        .map_err(super::explain_data_error)?;
    let ds = args.data.load(quiet).map_err(super::explain_data_error)?;
    let t0 = Instant::now();
    let report = eval::evaluate_dataset(&rec, &ds, data.min_sequence_len, &ks, threads)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if !quiet {
        eprintln!("evaluated in {:.2} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
