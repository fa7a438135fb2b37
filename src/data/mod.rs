//! Everything between a file on disk and a batch of examples: readers for each
//! format, per-user sequences, the reference's examples, batches, download and
//! synthetic data.

pub mod batches;
pub mod download;
pub mod readers;
pub mod sequences;
pub mod source;
pub mod synth;

pub use batches::{Batch, Padding, WindowSpec};
pub use readers::{Catalog, DataError, Interactions, ReadOptions};
pub use sequences::{ExampleSet, Sequences, SplitConfig};
pub use source::{load, DataSource, Dataset};
