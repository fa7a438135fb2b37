//! TEMPORARY SHIM, to be deleted at the merge with main: stands in for
//! `seqrec::data::read_arrow_ipc_stream` (being added in src/data by
//! another change), with its signature, so this crate builds before it
//! lands. Until then DataFrame and Arrow input is refused with this error.

use seqrec::data::readers::GenericFormat;
use seqrec::data::{DataError, Dataset, ReadOptions, SourceError};

/// Whether DataFrame and Arrow input works: not with this shim. The tests
/// of that input skip while `_seqrec._ARROW_INPUT_AVAILABLE` is false; it
/// goes with the shim.
pub const ARROW_INPUT_AVAILABLE: bool = false;

pub fn read_arrow_ipc_stream(
    _bytes: &[u8],
    origin: &str,
    _generic: &GenericFormat,
    _opts: &ReadOptions,
) -> Result<Dataset, SourceError> {
    Err(SourceError::Data(DataError::Invalid(format!(
        "{origin}: DataFrame and Arrow input needs seqrec::data::read_arrow_ipc_stream, \
         which this build does not have yet; write the data to a CSV file and pass its path"
    ))))
}
