//! Where a Python call's data comes from (a path, a named dataset, or a
//! DataFrame / Arrow table sent as an Arrow IPC stream) and how it is read:
//! the library's `DataOptions`, filled from keyword arguments over its
//! defaults (minimum rating 2, sequences of at least 3, ...), the same the
//! command line's flags have.

use std::path::PathBuf;

use anyhow::Result;
use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use seqrec::data::{DataOptions, DataSettings, Dataset};

use seqrec::data::read_arrow_ipc_stream;

/// The keyword arguments that say how data is read: the library's keys.
pub const DATA_KEYWORDS: [&str; 15] = DataOptions::KEYS;

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
    pub args: DataOptions,
    pub source: Source,
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
    let mut args = DataOptions::defaults();
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

impl DataRequest {
    /// For `evaluate`: what the user did not set is read as the model's
    /// training data was, and without data, that data itself.
    pub fn default_to_model(&mut self, settings: &DataSettings, recorded: &str) -> Result<()> {
        self.args.default_to(settings);
        if matches!(self.source, Source::Args) {
            self.args.default_source_to(recorded)?;
        }
        Ok(())
    }

    /// How ratings are filtered and sequences kept, checked.
    pub fn settings(&self) -> Result<DataSettings> {
        Ok(self.args.data_settings()?)
    }

    /// Reads the dataset (releases the GIL: call inside `detach`).
    pub fn load(&self, show_progress: bool) -> Result<Dataset> {
        match &self.source {
            Source::Arrow { stream, origin } => {
                let generic = self.args.generic_format()?;
                Ok(read_arrow_ipc_stream(
                    stream,
                    origin,
                    &generic,
                    &self.args.read_options(),
                )?)
            }
            Source::Args => Ok(self.args.load(!show_progress)?),
        }
    }
}
