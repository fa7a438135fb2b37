//! Everything between a file on disk and a batch of examples: readers for each
//! format, per-user sequences and the reference's examples (label positions),
//! download and synthetic data. Windows and batches belong to the model
//! (`model::batch`), which owns the context length and padding.
//!
//! - `table`: what every format's reader returns and shares (`Interactions`,
//!   `Catalog`, `DataError`, `ReadOptions`, `GenericFormat`, parsing helpers).
//! - One module per format, each importing `table` and never another format:
//!   `movielens` (`.dat`, `u.data`/`u.item`, CSV releases), `delimited`
//!   (generic CSV/TSV logs and title files), `columnar` (Parquet, Arrow IPC);
//!   `csv_rows` holds the CSV reading that `movielens` and `delimited` share.
//! - `source`: picks the format, calls its reader and adds a generic log's
//!   titles, which may come in another format than the log.
//! - `options`: where a command's or Python call's data is and how to read
//!   it (`DataOptions`), defined once for both.
//! - `sequences`, `download`, `synth`: per-user histories and examples,
//!   fetching releases, synthetic logs.

pub mod columnar;
mod csv_rows;
pub mod delimited;
pub mod download;
pub mod movielens;
pub mod options;
pub mod sequences;
pub mod source;
pub mod synth;
pub mod table;

pub use download::DownloadError;
pub use options::{DataOptions, DataOptionsError};
pub use sequences::{DataSettings, ExampleSet, Sequences, UserHistories};
pub use source::{load, read_arrow_ipc_stream, DataSource, Dataset, SourceError};
pub use synth::SynthError;
pub use table::{Catalog, DataError, Interactions, ReadOptions};
