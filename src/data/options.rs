//! What a command or a Python call is told about its data: where it is (a
//! path or a named release) and how to read it (rating filter, columns,
//! delimiter, titles file, minimum sequence length). Defined once, with
//! its defaults, as clap arguments: the command line flattens it into each
//! command that reads data, and Python fills it from keywords over the
//! same defaults, so neither front end restates a default or a check.
//! Messages name the keys (`min_sequence_len`); the command line shows
//! them as its flags.

use std::path::PathBuf;

use super::source::{DataSource, Dataset, SourceError};
use super::table::{GenericFormat, ReadOptions};
use super::{download, DataSettings};

/// What is wrong with the options, or with the data they lead to.
#[derive(Debug, thiserror::Error)]
pub enum DataOptionsError {
    /// One option out of range, named by its key.
    #[error("{key}: {message}")]
    Setting { key: &'static str, message: String },
    /// Options that say nothing or contradict each other.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

fn invalid(message: impl Into<String>) -> DataOptionsError {
    DataOptionsError::Invalid(message.into())
}

/// Where the data comes from and how it becomes examples: what every
/// command and Python call that reads data is told. Each key is a flag of
/// the command line (`--user-col`) and a keyword in Python (`user_col`);
/// the defaults are the ones declared here, for both.
#[derive(clap::Args, Debug, Clone)]
pub struct DataOptions {
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

impl DataOptions {
    pub fn source(&self) -> Result<DataSource, DataOptionsError> {
        match (&self.data, &self.dataset) {
            (Some(p), None) => Ok(DataSource::Path(p.clone())),
            (None, Some(n)) => Ok(DataSource::Named(n.clone())),
            (None, None) => Err(invalid(
                "no data given: pass `data` (a MovieLens folder or an interaction file) \
                 or `dataset` NAME (a named release, e.g. ml-1m)",
            )),
            (Some(_), Some(_)) => Err(invalid("give either `data` or `dataset`, not both")),
        }
    }

    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            min_rating: (!self.no_rating_filter).then_some(self.min_rating.unwrap_or(2.0)),
            skip_bad_lines: self.skip_bad_lines,
            renumber_items: self.renumber_items,
        }
    }

    pub fn generic_format(&self) -> Result<GenericFormat, DataOptionsError> {
        let delimiter = match self.delimiter.as_deref() {
            None => None,
            Some("tab" | "\\t" | "\t") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
            Some(d) => {
                return Err(DataOptionsError::Setting {
                    key: "delimiter",
                    message: format!(
                        "expected one ASCII character or `tab`, found {}",
                        crate::text::quoted(d)
                    ),
                })
            }
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
    pub fn default_source_to(&mut self, recorded: &str) -> Result<(), DataOptionsError> {
        if self.data.is_some() || self.dataset.is_some() {
            return Ok(());
        }
        if download::find_dataset(recorded).is_some() {
            self.dataset = Some(recorded.to_string());
        } else if !recorded.is_empty() && std::path::Path::new(recorded).exists() {
            self.data = Some(PathBuf::from(recorded));
        } else {
            return Err(invalid(format!(
                "no data given, and the model's training data {} is not found from here: \
                 pass `data` (the folder or file it was trained on) or `dataset` NAME",
                crate::text::quoted(recorded)
            )));
        }
        Ok(())
    }

    /// The files of the data a model records it was trained on (its
    /// `dataset`), where they are found from here (a folder's ratings and
    /// titles files, or the file): what writes beside a model (an export,
    /// a batch of answers, Python's `save`) must not replace them either.
    pub fn recorded_input_files(dataset: &str) -> Vec<PathBuf> {
        let mut data = DataOptions::defaults();
        match data.default_source_to(dataset) {
            Ok(()) => data.input_files(),
            Err(_) => Vec::new(),
        }
    }

    /// The files the data is read from: the file given, or the ratings and
    /// titles files of the MovieLens folder given (or of the named
    /// dataset's cache folder), and the title file. Outputs are checked
    /// against these, never to write over them.
    pub fn input_files(&self) -> Vec<PathBuf> {
        use super::source::detect;
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
    pub fn data_settings(&self) -> Result<DataSettings, DataOptionsError> {
        let min_sequence_len = self.min_sequence_len.unwrap_or(3);
        if min_sequence_len < 2 {
            return Err(DataOptionsError::Setting {
                key: "min_sequence_len",
                message: "expected at least 2 (one context item and one label)".into(),
            });
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

    /// Reads the data (fetching a named release first), with a progress
    /// bar unless `quiet`.
    pub fn load(&self, quiet: bool) -> Result<Dataset, DataOptionsError> {
        Ok(super::load(
            &self.source()?,
            &self.generic_format()?,
            &self.read_options(),
            &self.cache_dir(),
            !quiet,
        )?)
    }
}

impl DataOptions {
    /// Every key, as Python's keywords (the flags with `_` for `-`); `data`
    /// itself is Python's first argument.
    pub const KEYS: [&'static str; 15] = [
        "dataset",
        "data_dir",
        "min_rating",
        "no_rating_filter",
        "min_sequence_len",
        "skip_bad_lines",
        "renumber_items",
        "delimiter",
        "user_col",
        "item_col",
        "time_col",
        "rating_col",
        "titles_file",
        "title_item_col",
        "title_col",
    ];

    /// The options with nothing given: every default as declared above.
    pub fn defaults() -> DataOptions {
        use clap::{Args, FromArgMatches};
        let command = DataOptions::augment_args(clap::Command::new("seqrec"));
        let matches = command
            .try_get_matches_from(["seqrec"])
            .expect("no argument is required");
        DataOptions::from_arg_matches(&matches).expect("defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_the_fields_and_the_defaults_are_the_declared_ones() {
        use clap::Args;
        let command = DataOptions::augment_args(clap::Command::new("seqrec"));
        let ids: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "data")
            .collect();
        assert_eq!(ids, DataOptions::KEYS);
        let d = DataOptions::defaults();
        assert_eq!(
            (d.user_col.as_str(), d.title_col.as_str()),
            ("user_id", "title")
        );
        assert_eq!(d.data_settings().unwrap().min_sequence_len, 3);
        assert_eq!(d.read_options().min_rating, Some(2.0));
        let err = d.source().unwrap_err().to_string();
        assert!(
            err.starts_with("no data given") && err.contains("`dataset`"),
            "{err}"
        );
        let short = DataOptions {
            min_sequence_len: Some(1),
            ..DataOptions::defaults()
        };
        let err = short.data_settings().unwrap_err().to_string();
        assert!(
            err.starts_with("min_sequence_len: expected at least 2"),
            "{err}"
        );
        let bad = DataOptions {
            delimiter: Some(";;".into()),
            ..DataOptions::defaults()
        };
        let err = bad.generic_format().unwrap_err().to_string();
        assert!(err.starts_with("delimiter: expected one ASCII"), "{err}");
    }
}
