//! Arguments checked before any work, each error naming its argument: a
//! value of the wrong type is a `TypeError`, a value out of range a
//! `SeqrecError` saying what was expected (pyo3's own conversion of an int
//! out of range is an `OverflowError`; bools, strs and paths keep pyo3's
//! `TypeError`, which names the argument). Values quoted in messages
//! are cut short and escaped, as the command line quotes its input.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};

use crate::SeqrecError;

/// The most characters of a value's repr a message quotes.
const REPR_CHARS: usize = 60;

/// The name of `value`'s type, escaped.
pub fn type_name(value: &Bound<'_, PyAny>) -> String {
    let name = value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    seqrec::text::escaped(&name)
}

/// `repr(value)`, at most `REPR_CHARS` characters of it, escaped.
pub fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut short: String = text.chars().take(REPR_CHARS).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    seqrec::text::escaped(&short)
}

/// An int (a numpy integer too, never a bool) from `low` to `high`.
pub fn int_argument(name: &str, value: &Bound<'_, PyAny>, low: i64, high: i64) -> PyResult<i64> {
    let is_int = value.is_instance_of::<PyInt>() || value.hasattr("__index__")?;
    if value.is_instance_of::<PyBool>() || !is_int {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected an int, found a value of type {}",
            type_name(value)
        )));
    }
    match value.extract::<i64>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(SeqrecError::new_err(format!(
            "{name}: expected {low} to {high}, found {}",
            short_repr(value)
        ))),
    }
}

/// A path: a str or an `os.PathLike`.
pub fn path_argument(name: &str, value: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    if value.is_instance_of::<PyString>() || value.hasattr("__fspath__")? {
        if let Ok(path) = value.extract::<PathBuf>() {
            return Ok(path);
        }
    }
    Err(PyTypeError::new_err(format!(
        "{name}: expected a path (str or os.PathLike), found a value of type {}",
        type_name(value)
    )))
}
