//! Everything between a file on disk and a batch of examples: readers for each
//! format, per-user sequences and the reference's examples (label positions),
//! download and synthetic data. Windows and batches belong to the model
//! (`model::batch`), which owns the context length and padding.

pub mod columnar;
pub mod download;
pub mod readers;
pub mod sequences;
pub mod source;
pub mod synth;

pub use download::DownloadError;
pub use readers::{Catalog, DataError, Interactions, ReadOptions};
pub use sequences::{DataSettings, ExampleSet, Sequences, UserHistories};
pub use source::{load, read_arrow_ipc_stream, DataSource, Dataset, SourceError};
pub use synth::SynthError;
