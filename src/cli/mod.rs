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

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::data::table::GenericFormat;
use crate::data::{download, DataError, DataSettings, DataSource, ReadOptions, SourceError};

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
    Serve(Box<serve_cmd::ServeArgs>),
    /// Write a model's item vectors and users' query vectors as Parquet, for a vector database.
    Export(export_cmd::ExportArgs),
}

/// Where `train` writes the model without `--out` (git ignores it in a
/// checkout of seqrec).
pub const DEFAULT_MODEL_FILE: &str = "seqrec-model.safetensors";

/// Where the data comes from and how it becomes examples; shared by every
/// command that reads data.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A MovieLens folder (ml-1m, ml-100k, CSV releases) or an interaction file (CSV/TSV, Parquet, Arrow IPC).
    #[arg(value_name = "DATA")]
    pub data: Option<PathBuf>,
    /// A named dataset, fetched into the cache on first use (e.g. ml-1m).
    #[arg(long, conflicts_with = "data")]
    pub dataset: Option<String>,
    /// Cache folder for downloaded datasets [default: the XDG cache dir, seqrec/].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Drop ratings below this value (the reference's MIN_RATING) [default: 2; evaluate: the model's].
    #[arg(long)]
    pub min_rating: Option<f32>,
    /// Keep every rating, whatever its value.
    #[arg(long)]
    pub no_rating_filter: bool,
    /// Skip users with fewer ratings (MIN_SEQUENCE_LENGTH) [default: 3; evaluate: the model's].
    #[arg(long)]
    pub min_sequence_len: Option<usize>,
    /// Count and skip malformed lines instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// MovieLens data: number the items 1..N instead of using their ids as
    /// embedding rows (for sparse ids; the vocabulary is then not the reference's).
    #[arg(long)]
    pub renumber_items: bool,
    /// Generic files: field delimiter, one character, or `tab` / `\t` (default: tab for .tsv, else comma).
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// Generic files: the user column's name.
    #[arg(long, default_value = "user_id")]
    pub user_col: String,
    /// Generic files: the item column's name.
    #[arg(long, default_value = "item_id")]
    pub item_col: String,
    /// Generic files: the timestamp column's name.
    #[arg(long, default_value = "timestamp")]
    pub time_col: String,
    /// Generic files: the rating column's name (none by default: no filter).
    #[arg(long)]
    pub rating_col: Option<String>,
    /// Generic files: an item-title file (CSV/TSV with a header).
    #[arg(long, value_name = "FILE")]
    pub titles_file: Option<PathBuf>,
    /// Title file: the item column's name.
    #[arg(long, default_value = "item_id")]
    pub title_item_col: String,
    /// Title file: the title column's name.
    #[arg(long, default_value = "title")]
    pub title_col: String,
}

impl DataArgs {
    pub fn source(&self) -> Result<DataSource> {
        match (&self.data, &self.dataset) {
            (Some(p), None) => Ok(DataSource::Path(p.clone())),
            (None, Some(n)) => Ok(DataSource::Named(n.clone())),
            (None, None) => bail!("no data given: pass a MovieLens folder or interaction file, or --dataset NAME (e.g. --dataset ml-1m)"),
            (Some(_), Some(_)) => bail!("give either DATA or --dataset, not both"),
        }
    }

    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            min_rating: (!self.no_rating_filter).then_some(self.min_rating.unwrap_or(2.0)),
            skip_bad_lines: self.skip_bad_lines,
            renumber_items: self.renumber_items,
        }
    }

    pub fn generic_format(&self) -> Result<GenericFormat> {
        let delimiter = match self.delimiter.as_deref() {
            None => None,
            Some("tab" | "\\t" | "\t") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
            Some(d) => bail!(
                "--delimiter: expected one ASCII character or `tab`, found {}",
                crate::text::quoted(d)
            ),
        };
        Ok(GenericFormat {
            delimiter,
            user_col: self.user_col.clone(),
            item_col: self.item_col.clone(),
            time_col: self.time_col.clone(),
            rating_col: self.rating_col.clone(),
            titles: self.titles_file.clone(),
            title_item_col: self.title_item_col.clone(),
            title_col: self.title_col.clone(),
        })
    }

    /// Without DATA or --dataset, the data a model records it was trained
    /// on (a named release, or the folder or file it was read from, as it
    /// was given then).
    pub fn default_source_to(&mut self, recorded: &str) -> Result<()> {
        if self.data.is_some() || self.dataset.is_some() {
            return Ok(());
        }
        if download::find_dataset(recorded).is_some() {
            self.dataset = Some(recorded.to_string());
        } else if !recorded.is_empty() && std::path::Path::new(recorded).exists() {
            self.data = Some(PathBuf::from(recorded));
        } else {
            bail!(
                "no data given, and the model's training data {} is not found from here: pass DATA (the folder or file it was trained on) or --dataset NAME",
                crate::text::quoted(recorded)
            );
        }
        Ok(())
    }

    /// The files the data is read from: the file given, or the ratings and
    /// titles files of the MovieLens folder given (or of the named
    /// dataset's cache folder), and the title file. Outputs are checked
    /// against these, never to write over them.
    pub fn input_files(&self) -> Vec<PathBuf> {
        use crate::data::source::detect;
        let root = match (&self.data, &self.dataset) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(name)) => Some(self.cache_dir().join(name)),
            (None, None) => None,
        };
        let mut files = match root.as_deref().map(detect) {
            Some(Ok((format, path))) => match format.files() {
                Some((ratings, titles)) => vec![path.join(ratings), path.join(titles)],
                None => vec![path],
            },
            // Reading the data will say what is wrong with it.
            Some(Err(_)) | None => root.into_iter().collect(),
        };
        files.extend(self.titles_file.clone());
        files
    }

    /// How ratings are filtered and sequences kept, checked.
    pub fn data_settings(&self) -> Result<DataSettings> {
        let min_sequence_len = self.min_sequence_len.unwrap_or(3);
        if min_sequence_len < 2 {
            bail!("--min-sequence-len: expected at least 2 (one context item and one label)");
        }
        Ok(DataSettings {
            min_rating: self.read_options().min_rating,
            min_sequence_len,
            renumber_items: self.renumber_items,
        })
    }

    /// Reads the data as the model's training data was read, for what the
    /// user did not set: `evaluate` then ranks the same test examples.
    pub fn default_to(&mut self, data: &DataSettings) {
        if self.min_rating.is_none() && !self.no_rating_filter {
            match data.min_rating {
                Some(r) => self.min_rating = Some(r),
                None => self.no_rating_filter = true,
            }
        }
        self.min_sequence_len.get_or_insert(data.min_sequence_len);
        self.renumber_items |= data.renumber_items;
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(download::default_cache_dir)
    }

    pub fn load(&self, quiet: bool) -> Result<crate::data::Dataset> {
        crate::data::load(
            &self.source()?,
            &self.generic_format()?,
            &self.read_options(),
            &self.cache_dir(),
            !quiet,
        )
        .map_err(Self::explain)
    }

    /// The library names settings (`user_col`, a named dataset); here the
    /// errors name the flags that set them.
    pub fn explain(e: SourceError) -> anyhow::Error {
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
                let set_with = setting
                    .map(|s| format!(" (set it with {})", flag(s)))
                    .unwrap_or_default();
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
                setting
                    .map(|s| format!(" (set it with {})", flag(s)))
                    .unwrap_or_default(),
                crate::data::table::column_list(&columns)
            ),
            e => e.into(),
        }
    }
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
            eprintln!("{}", crate::text::error_report(&e));
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

/// `--search-list N`: the approximate index's search list (ef), a whole
/// number from 1 to `approx::MAX_SEARCH_LIST`.
pub fn search_list_arg(text: &str) -> std::result::Result<usize, String> {
    use crate::retrieval::approx::MAX_SEARCH_LIST;
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_SEARCH_LIST).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_SEARCH_LIST}"
        )),
    }
}

/// Puts `rec` on the top-K `choice` asks for (the approximate index searched
/// with `search_list`, or its default), saying on stderr (unless
/// `quiet`) when the approximate graph is built, how long that took and
/// whether it was cached beside `model`.
pub fn use_index(
    rec: &mut crate::retrieval::recommender::Recommender,
    choice: crate::retrieval::approx::IndexChoice,
    search_list: Option<usize>,
    model: &std::path::Path,
    quiet: bool,
) -> Result<()> {
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
    if quiet {
        return Ok(());
    }
    match source {
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
    Ok(())
}
