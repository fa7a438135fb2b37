//! `seqrec._seqrec`: the Python package's native module, a thin layer over
//! the seqrec library (the same engine as the `seqrec` command line, not a
//! copy). It trains (`train`), loads (`load`) and wraps a model (`Model`:
//! recommend, encode, evaluate, save); `seqrec/__init__.py` re-exports it.
//!
//! Settings reach the engine as the command line's do: keyword arguments
//! become one TOML table overlaid on the defaults and preset, so names,
//! defaults and validation are the CLI's. The GIL is released while the
//! engine works; errors, and any panic, come back as `SeqrecError`.

mod args;
mod data;
mod model;
mod progress;
mod training;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    seqrec,
    SeqrecError,
    PyValueError,
    "An error from seqrec's engine, with its message as the command line prints it \
     (file, line, field and cause)."
);

/// The command line's error report without its "error: " prefix (an
/// exception already says it is one): the message and its causes.
pub(crate) fn seqrec_error(e: anyhow::Error) -> PyErr {
    let report = seqrec::text::error_report(&e);
    let message = report.strip_prefix("error: ").unwrap_or(&report);
    SeqrecError::new_err(message.to_string())
}

/// Runs engine code so that a panic becomes an exception, not an abort of
/// the interpreter (pyo3 would raise a `PanicException`, a `BaseException`
/// that `except Exception` does not catch).
pub(crate) fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(seqrec_error),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(SeqrecError::new_err(format!(
                "internal error (a bug in seqrec, please report it): {what}"
            )))
        }
    }
}

#[pymodule]
fn _seqrec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SeqrecError", m.py().get_type::<SeqrecError>())?;
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(training::train, m)?)?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add("PRESETS", seqrec::train::PRESETS.to_vec())?;
    Ok(())
}
