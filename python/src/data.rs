//! Where a Python call's data comes from (a path, a named dataset, or a
//! DataFrame / Arrow table sent as an Arrow IPC stream) and how it is read:
//! the command line's `DataArgs`, filled from keyword arguments, so the
//! defaults (minimum rating 2, sequences of at least 3, ...) are its own.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, FromArgMatches};
use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use seqrec::cli::DataArgs;
use seqrec::data::{DataSettings, Dataset};

use seqrec::data::read_arrow_ipc_stream;

/// The keyword arguments that say how data is read, as the command line's
/// data flags name them (`--user-col` is `user_col`).
pub const DATA_KEYWORDS: [&str; 15] = [
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

/// The data a call reads.
pub enum Source {
    /// A path or named dataset, read as the command line reads it (or,
    /// with neither, the model's recorded training data).
    Args,
    /// An Arrow IPC stream (from a DataFrame or table) and a name for it
    /// in messages and the model file.
    Arrow { stream: Vec<u8>, origin: String },
}

/// The data and how to read it.
pub struct DataRequest {
    pub args: DataArgs,
    pub source: Source,
}

/// `DataArgs` with the command line's defaults: parsed from no flags at
/// all, so every default is clap's, as the CLI declares it.
fn default_data_args() -> Result<DataArgs> {
    let command = DataArgs::augment_args(clap::Command::new("seqrec"));
    let matches = command.try_get_matches_from(["seqrec"])?;
    Ok(DataArgs::from_arg_matches(&matches)?)
}

/// One keyword's value (None: not given), converted, with the keyword
/// named when it has the wrong type.
fn take<'py, T: FromPyObjectOwned<'py>>(
    options: &Bound<'py, PyDict>,
    key: &str,
) -> PyResult<Option<T>> {
    match options.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v.extract::<T>().map(Some).map_err(|e| {
            let e: PyErr = e.into();
            PyTypeError::new_err(format!("{key}: {}", e.value(v.py())))
        }),
    }
}

/// Reads `data` (None, a path, or anything `seqrec._convert` turns into an
/// Arrow stream) and the data keywords of `options` into a request.
pub fn request(
    py: Python<'_>,
    data: Option<&Bound<'_, PyAny>>,
    options: &Bound<'_, PyDict>,
) -> PyResult<DataRequest> {
    let mut args = default_data_args().map_err(crate::seqrec_error)?;
    let mut source = Source::Args;
    match data {
        None => {}
        Some(d) if d.is_none() => {}
        Some(d) if d.is_instance_of::<PyString>() || d.hasattr("__fspath__")? => {
            args.data = Some(d.extract::<PathBuf>()?);
        }
        Some(d) => {
            let convert = py.import("seqrec._convert")?;
            let (stream, origin): (Vec<u8>, String) =
                convert.call_method1("arrow_ipc_stream", (d,))?.extract()?;
            source = Source::Arrow { stream, origin };
        }
    }
    args.dataset = take(options, "dataset")?;
    if let Some(dir) = take(options, "data_dir")? {
        args.data_dir = Some(dir);
    }
    args.min_rating = take(options, "min_rating")?;
    args.no_rating_filter = take(options, "no_rating_filter")?.unwrap_or(false);
    args.min_sequence_len = take(options, "min_sequence_len")?;
    args.skip_bad_lines = take(options, "skip_bad_lines")?.unwrap_or(false);
    args.renumber_items = take(options, "renumber_items")?.unwrap_or(false);
    args.delimiter = take(options, "delimiter")?;
    for (key, field) in [
        ("user_col", &mut args.user_col),
        ("item_col", &mut args.item_col),
        ("time_col", &mut args.time_col),
        ("title_item_col", &mut args.title_item_col),
        ("title_col", &mut args.title_col),
    ] {
        if let Some(v) = take::<String>(options, key)? {
            *field = v;
        }
    }
    args.rating_col = take(options, "rating_col")?;
    args.titles_file = take(options, "titles_file")?;
    if matches!(source, Source::Arrow { .. }) && args.dataset.is_some() {
        return Err(crate::SeqrecError::new_err(
            "give either data or dataset, not both",
        ));
    }
    Ok(DataRequest { args, source })
}

/// The command line's messages name its flags (`--min-sequence-len`); a
/// Python caller set keywords (`min_sequence_len`).
pub fn keyword_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(after.len());
        if len > 0 && after.as_bytes()[0].is_ascii_lowercase() {
            out.push_str(&after[..len].replace('-', "_"));
        } else {
            out.push_str("--");
            out.push_str(&after[..len]);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// A `DataArgs` error, in keywords.
fn in_keywords(e: anyhow::Error) -> anyhow::Error {
    anyhow!(keyword_names(&format!("{e:#}")))
}

impl DataRequest {
    /// For `evaluate`: what the user did not set is read as the model's
    /// training data was, and without data, that data itself.
    pub fn default_to_model(&mut self, settings: &DataSettings, recorded: &str) -> Result<()> {
        self.args.default_to(settings);
        if matches!(self.source, Source::Args) {
            self.args.default_source_to(recorded).map_err(in_keywords)?;
        }
        Ok(())
    }

    /// How ratings are filtered and sequences kept, checked.
    pub fn settings(&self) -> Result<DataSettings> {
        self.args.data_settings().map_err(in_keywords)
    }

    /// Reads the dataset (releases the GIL: call inside `detach`).
    pub fn load(&self, show_progress: bool) -> Result<Dataset> {
        match &self.source {
            Source::Arrow { stream, origin } => {
                let generic = self.args.generic_format().map_err(in_keywords)?;
                read_arrow_ipc_stream(stream, origin, &generic, &self.args.read_options())
                    .map_err(|e| in_keywords(DataArgs::explain(e)))
            }
            // The command line's own loading, with its explained errors.
            Source::Args => self.args.load(!show_progress).map_err(in_keywords),
        }
    }
}
