//! The `seqrec` command line: one subcommand per job, each a thin layer over
//! the library. Summaries go to stdout, progress and logs to stderr.

mod data_cmd;
mod evaluate_cmd;
mod export_cmd;
mod fetch_cmd;
mod plot;
mod recommend_cmd;
mod serve_cmd;
mod synth_cmd;
mod train_cmd;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::data::{DataError, DataOptions, DataOptionsError, SourceError};

#[derive(Parser, Debug)]
#[command(
    name = "seqrec",
    version,
    about = "Sequential recommender: train, evaluate and serve a GRU4Rec two-tower model on a CPU"
)]
pub struct Cli {
    /// Silence progress bars (summaries and errors still print).
    #[arg(long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download a MovieLens release into the cache (ml-1m, ml-100k, ml-20m, ml-25m, ml-32m, ml-latest-small).
    Fetch(fetch_cmd::FetchArgs),
    /// Inspect a dataset.
    Data {
        #[command(subcommand)]
        command: Box<data_cmd::DataCommand>,
    },
    /// Train the GRU4Rec two-tower model (the reference's settings by default) and save it.
    Train(Box<train_cmd::TrainArgs>),
    /// HR/NDCG/MRR@K of a model over the full catalogue, beside a most-popular baseline.
    Evaluate(Box<evaluate_cmd::EvaluateArgs>),
    /// Top-K recommendations for a history, a known user, a file of users, or the reference's demo.
    Recommend(Box<recommend_cmd::RecommendArgs>),
    /// Write synthetic MovieLens-1M-format data with planted sequential structure.
    Synth(synth_cmd::SynthArgs),
    /// Serve recommendations over HTTP (JSON API; hot-swaps the model on SIGHUP).
    Serve(Box<crate::serve::ServeConfig>),
    /// Write a model's item vectors and users' query vectors as Parquet, for a vector database.
    Export(export_cmd::ExportArgs),
}

/// Where `train` writes the model without `--out` (git ignores it in a
/// checkout of seqrec).
pub const DEFAULT_MODEL_FILE: &str = "seqrec-model.safetensors";

/// The library names settings (`user_col`, a named dataset); here the
/// errors name the flags that set them.
pub fn explain_data_error(e: DataOptionsError) -> anyhow::Error {
    let e = match e {
        DataOptionsError::Source(e) => e,
        DataOptionsError::Setting { key, message } => {
            return anyhow::anyhow!("{}: {message}", flag(key))
        }
        e => return e.into(),
    };
    match e {
        SourceError::Fetch { name, source } => anyhow::Error::new(source).context(format!(
            "--dataset {name}: {}",
            crate::data::source::offline_hint(&name)
        )),
        SourceError::Data(DataError::MissingColumn {
            file,
            column,
            setting,
            columns,
            suggest_delimiter,
        }) => {
            let set_with = set_with(setting);
            let hint = match suggest_delimiter {
                None => String::new(),
                Some(b'\t') => {
                    " (the header is one column holding tabs: pass --delimiter tab)".into()
                }
                Some(d) => {
                    let c = d as char;
                    format!(" (the header is one column holding `{c}`: pass --delimiter '{c}')")
                }
            };
            anyhow::anyhow!(
                "{}:1: header has no column {}{set_with}; columns are {}{hint}",
                file.display(),
                crate::text::quoted(&column),
                crate::data::table::column_list(&columns)
            )
        }
        SourceError::Data(DataError::NoSuchColumn {
            file,
            column,
            setting,
            columns,
        }) => anyhow::anyhow!(
            "{}: no column {}{}; its columns are {}",
            file.display(),
            crate::text::quoted(&column),
            set_with(setting),
            crate::data::table::column_list(&columns)
        ),
        e => e.into(),
    }
}

/// " (set it with --user-col)" for the setting that chose a column.
fn set_with(setting: Option<&str>) -> String {
    setting
        .map(|s| format!(" (set it with {})", flag(s)))
        .unwrap_or_default()
}

/// `report` with each setting it names in backticks (`min_sequence_len`,
/// the library's way) shown as the flag that sets it (--min-sequence-len).
/// Backticked words that are no setting (`tab`) stay as they are.
pub fn in_flags(report: &str) -> String {
    let is_setting = |word: &str| {
        DataOptions::KEYS.contains(&word)
            || crate::train::TrainConfig::KEYS.contains(&word)
            || crate::model::ModelOptions::KEYS.contains(&word)
    };
    let mut out = String::with_capacity(report.len());
    let mut rest = report;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        match after.find('`') {
            // The data is the commands' positional argument.
            Some(4) if after.starts_with("data") => {
                out.push_str(&rest[..open]);
                out.push_str("DATA");
                rest = &after[5..];
            }
            Some(close) if is_setting(&after[..close]) => {
                out.push_str(&rest[..open]);
                out.push_str(&flag(&after[..close]));
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The flag that sets a setting: `user_col` is `--user-col`. The library's
/// errors name settings; the command line reports them by flag.
pub fn flag(setting: &str) -> String {
    format!("--{}", setting.replace('_', "-"))
}

/// Runs the command line; returns the process exit code. Errors print to
/// stderr with their chain of causes.
pub fn main() -> i32 {
    // A flag given twice takes its last value, in every subcommand (so a
    // script can append overrides to a fixed command line).
    let command = Cli::command().mut_subcommands(|s| {
        s.args_override_self(true)
            .mut_subcommands(|s| s.args_override_self(true))
    });
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", in_flags(&crate::text::error_report(&e)));
            1
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Fetch(a) => fetch_cmd::fetch(a, quiet),
        Command::Data { command } => data_cmd::data(*command, quiet),
        Command::Train(a) => train_cmd::train(*a, quiet),
        Command::Evaluate(a) => evaluate_cmd::evaluate(*a, quiet),
        Command::Recommend(a) => recommend_cmd::recommend(*a, quiet),
        Command::Synth(a) => synth_cmd::synth(a, quiet),
        Command::Serve(a) => serve_cmd::serve(*a, quiet),
        Command::Export(a) => export_cmd::export(a, quiet),
    }
}

/// Puts `rec` on the top-K `choice` asks for (the approximate index searched
/// with `search_list`, or its default), saying on stderr (unless
/// `quiet`) when the approximate graph is built, how long that took and
/// whether it was cached beside `model` (unless `quiet`, or `announce` is
/// false: the caller reports it). Returns how the graph was got (`None`:
/// exact top-K).
pub fn use_index(
    rec: &mut crate::retrieval::recommender::Recommender,
    choice: crate::retrieval::approx::IndexChoice,
    search_list: Option<crate::retrieval::approx::SearchList>,
    model: &std::path::Path,
    quiet: bool,
    announce: bool,
) -> Result<Option<crate::retrieval::approx::IndexSource>> {
    use crate::retrieval::approx::{self, ApproxSettings, IndexSource};
    let cache = approx::cache_path(model);
    let started = std::time::Instant::now();
    let spinner = crate::progress::bar(
        None,
        "{spinner} approximate index: {msg} {elapsed}",
        !quiet && choice.approximate(rec.item_count()),
    );
    spinner.set_message(format!("{} items", rec.item_count()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let source = rec.use_index(choice, Some(&cache), ApproxSettings::searching(search_list))?;
    spinner.finish_and_clear();
    if quiet || !announce {
        return Ok(source);
    }
    match &source {
        Some(IndexSource::BuiltAndCached) => eprintln!(
            "built the approximate index over {} items in {:.1} s, cached at {}",
            rec.item_count(),
            started.elapsed().as_secs_f64(),
            cache.display()
        ),
        Some(IndexSource::BuiltNotCached(why)) => eprintln!(
            "built the approximate index over {} items in {:.1} s (not cached: {})",
            rec.item_count(),
            started.elapsed().as_secs_f64(),
            why
        ),
        Some(IndexSource::Cache) | None => {}
    }
    Ok(source)
}

/// The files a command that reads `model` must not write over: the model
/// file and its index cache (`MODEL.index`).
pub fn model_files(model: &std::path::Path) -> Vec<std::path::PathBuf> {
    vec![
        model.to_path_buf(),
        crate::retrieval::approx::cache_path(model),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_named_in_prose_are_shown_as_their_flags() {
        assert_eq!(
            in_flags("use a smaller `embedding_dim` or `renumber_items`; `min_sequence_len`"),
            "use a smaller --embedding-dim or --renumber-items; --min-sequence-len"
        );
        // Words that are no setting, and a lone backtick, stay as written.
        assert_eq!(
            in_flags("pass `tab` or `epochz` `"),
            "pass `tab` or `epochz` `"
        );
        assert_eq!(in_flags("`epochs`"), "--epochs");
        assert_eq!(
            in_flags("pass `data` or `dataset` NAME"),
            "pass DATA or --dataset NAME"
        );
    }
}
