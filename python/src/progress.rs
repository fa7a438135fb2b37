//! Training's events, forwarded to a Python callable (by default
//! `seqrec._progress.Progress`: a tqdm bar, or a line per epoch). Events
//! arrive on a worker thread while the GIL is released; each forward takes
//! the GIL for the call only.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use seqrec::train::{EpochReport, Event};

/// Step events are forwarded at most this often: a call into Python costs
/// microseconds, a notebook redraw far more, and a step can take less.
const STEP_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `callback(kind, *values)` per event: `("start", train_examples,
/// test_examples, steps, threads)`, `("epoch_start", epoch, epochs,
/// steps)`, `("step", step, running_loss)` (throttled) and `("epoch_end",
/// report)`.
pub struct Forwarder {
    callback: Py<PyAny>,
    last_step: Option<Instant>,
    /// The first error the callback raised; later events are dropped and
    /// the run stops; the error is raised when training returns.
    pub error: Option<PyErr>,
}

impl Forwarder {
    pub fn new(callback: Py<PyAny>) -> Forwarder {
        Forwarder {
            callback,
            last_step: None,
            error: None,
        }
    }

    /// Forwards `event`; breaks once the callback has raised (the run
    /// stops, and its error is raised when training returns).
    pub fn on_event(&mut self, event: Event) -> ControlFlow<()> {
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        if let Event::Step { .. } = event {
            let now = Instant::now();
            if self
                .last_step
                .is_some_and(|t| now.duration_since(t) < STEP_INTERVAL)
            {
                return ControlFlow::Continue(());
            }
            self.last_step = Some(now);
        }
        let result = Python::attach(|py| -> PyResult<()> {
            let cb = self.callback.bind(py);
            match event {
                Event::Start {
                    train_examples,
                    test_examples,
                    steps,
                    threads,
                } => cb.call1(("start", train_examples, test_examples, steps, threads))?,
                Event::EpochStart {
                    epoch,
                    epochs,
                    steps,
                } => cb.call1(("epoch_start", epoch, epochs, steps))?,
                Event::Step { step, running_loss } => cb.call1(("step", step, running_loss))?,
                Event::EpochEnd(report) => cb.call1(("epoch_end", epoch_dict(py, report)?))?,
            };
            Ok(())
        });
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

/// An epoch's figures, as a dict (the `--log` line's keys).
pub fn epoch_dict<'py>(py: Python<'py>, r: &EpochReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", r.epoch)?;
    d.set_item("loss", r.loss)?;
    d.set_item("val_loss", r.val_loss)?;
    for (key, value) in [
        ("hr10", r.hr10),
        ("ndcg10", r.ndcg10),
        ("valid_hr10", r.valid_hr10),
        ("valid_ndcg10", r.valid_ndcg10),
    ] {
        if let Some(v) = value {
            d.set_item(key, v)?;
        }
    }
    // The f32's shortest form (0.005, not 0.004999999888241291), as the
    // command line's JSON prints it.
    let learning_rate: f64 = r.learning_rate.to_string().parse().unwrap_or(f64::NAN);
    d.set_item("learning_rate", learning_rate)?;
    d.set_item("seconds", r.seconds)?;
    Ok(d)
}
