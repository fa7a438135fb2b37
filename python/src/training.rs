//! `seqrec.train`: settings from keywords (over the defaults or the model
//! it continues, a preset and a config file, as `seqrec train` applies its
//! flags), the run on a thread of its own while the caller's thread
//! watches for Ctrl-C (`interruptible`), and the closing evaluation.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::anyhow;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString};
use seqrec::checkpoint;
use seqrec::eval;
use seqrec::retrieval::recommender::Recommender;
use seqrec::train::config::ConfigFileError;
use seqrec::train::{Event, Settings, TrainedModel};

use crate::args::{path_argument, short_repr, type_name};
use crate::data::{self, DATA_KEYWORDS};
use crate::guarded;
use crate::model::{Model, Origin};
use crate::progress::Forwarder;

/// How often the caller's thread looks for a signal while training runs:
/// Ctrl-C stops the run within this and one training step.
const SIGNAL_INTERVAL: Duration = Duration::from_millis(50);

/// Stack of the thread a run goes on (the main thread's usual size: the
/// run was on the caller's thread before).
const RUN_STACK: usize = 8 << 20;

/// A setting's value as the TOML value a config file would give it.
fn toml_value(key: &str, value: &Bound<'_, PyAny>) -> PyResult<toml::Value> {
    if value.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(value.extract()?));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(toml::Value::String(text.to_cow()?.into_owned()));
    }
    // Ints (and numpy's) first: 3 must stay an integer, not become 3.0.
    if let Ok(n) = value.extract::<i64>() {
        return Ok(toml::Value::Integer(n));
    }
    if value.extract::<i128>().is_ok() {
        return Err(crate::SeqrecError::new_err(format!(
            "{key}: {} is out of range for any setting",
            short_repr(value)
        )));
    }
    if let Ok(x) = value.extract::<f64>() {
        return Ok(toml::Value::Float(x));
    }
    Err(PyTypeError::new_err(format!(
        "{key}: expected an int, float, bool or str, found a value of type {}",
        type_name(value)
    )))
}

/// `base` (the defaults, or the settings of the model a run continues),
/// then the preset, then the config file, then the keyword arguments (as
/// `seqrec train` applies its flags), checked.
fn resolve_settings(
    base: Settings,
    preset: Option<&str>,
    config: Option<&Path>,
    table: toml::Table,
) -> anyhow::Result<Settings> {
    let mut settings = base;
    if let Some(name) = preset {
        settings = settings.preset(name)?;
    }
    if let Some(path) = config {
        settings = settings.overlay_config_file(path).map_err(|e| match e {
            ConfigFileError::Read(e) => anyhow!("config: {e}"),
            invalid => invalid.into(),
        })?;
    }
    settings = settings.overlay(table)?;
    settings
        .validate()
        .map_err(|e| anyhow!("invalid setting: {e}"))?;
    Ok(settings)
}

/// The whole state of the model a run continues: a `Model` trained in this
/// process, one read by `seqrec.load` (whose file is read again, with the
/// optimiser's state, and must not have changed since), or a model file.
fn model_to_resume(resume: &Bound<'_, PyAny>) -> PyResult<TrainedModel> {
    if let Ok(model) = resume.cast::<Model>() {
        return match model.get().origin() {
            Origin::Trained(trained) => Ok((**trained).clone()),
            Origin::Loaded { path, stamp } => guarded(|| {
                let (trained, now) = checkpoint::load_stamped(path)?;
                if now != *stamp {
                    anyhow::bail!(
                        "resume: {} changed since the model was loaded from it; load it again",
                        seqrec::text::quoted(&path.display().to_string())
                    );
                }
                Ok(trained)
            }),
        };
    }
    let path = path_argument("resume", resume).map_err(|_| {
        PyTypeError::new_err(format!(
            "resume: expected a seqrec.Model or a model file's path, found a value of type {}",
            type_name(resume)
        ))
    })?;
    guarded(|| Ok(checkpoint::load(&path)?))
}

/// Runs `work` on a thread of its own while the calling thread, the GIL
/// released, looks for signals every `SIGNAL_INTERVAL`: Python runs its
/// signal handlers only on the main thread, between bytecodes, so a run on
/// the caller's thread would see Ctrl-C only once it ended. A handler that
/// raises (KeyboardInterrupt) sets the flag `work` is given, and its error
/// comes back beside `work`'s result. Where no thread can be started, the
/// work runs here, as before (Ctrl-C then waits for its end).
fn interruptible<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&AtomicBool) -> T + Send,
) -> (T, Option<PyErr>) {
    let stop = AtomicBool::new(false);
    let work = std::sync::Mutex::new(Some(work));
    let take = || work.lock().ok().and_then(|mut w| w.take());
    py.detach(|| {
        std::thread::scope(|scope| {
            let (done, finished) = mpsc::channel::<()>();
            let stop = &stop;
            let spawned = std::thread::Builder::new()
                .name("seqrec-train".into())
                .stack_size(RUN_STACK)
                .spawn_scoped(scope, move || {
                    let out = take().map(|work| work(stop));
                    let _ = done.send(());
                    out
                });
            let Ok(run) = spawned else {
                let work = take().expect("the work was not taken by a thread never started");
                return (work(stop), None);
            };
            let mut signal = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(SIGNAL_INTERVAL)
            {
                if signal.is_none() {
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        signal = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            let out = run
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .expect("the training thread ran the work");
            (out, signal)
        })
    })
}

/// Trains a model, as `seqrec train` does, and returns it.
///
/// `data` is a path (a MovieLens folder or an interaction file, any format
/// `seqrec train` reads), a pandas or Polars DataFrame, or a pyarrow Table;
/// or give `dataset="ml-100k"` (a named dataset, fetched on first use).
/// Column names and read options are the command line's data flags as
/// keywords (`user_col`, `item_col`, `time_col`, `rating_col`,
/// `min_rating`, `min_sequence_len`, ...). Every training setting is a
/// keyword with its config key (`epochs`, `batch_size`, `learning_rate`,
/// `seed`, `tower`, `context_len`, ...), over the defaults or `preset`
/// ("parity", "best" or "sasrec").
///
/// `config` is a config file (`seqrec train --config`, the TOML that
/// `seqrec train --print-config` writes), applied after the preset and
/// before the keywords.
///
/// `resume` continues a model (a `Model`, or a model file's path) on the
/// same data, as `seqrec train --resume` does: its settings are the base,
/// `epochs` more epochs are trained, and the optimiser goes on from its
/// saved state.
///
/// Progress shows as a tqdm bar when tqdm is installed (else a line per
/// epoch on stderr); `quiet=True` silences it, and `progress` takes a
/// callable instead: `progress(kind, *values)` per event. The GIL is
/// released while training; Ctrl-C stops it between steps and raises
/// KeyboardInterrupt (nothing is kept). Raises `SeqrecError` with seqrec's
/// message.
#[pyfunction]
#[pyo3(signature = (data=None, *, preset=None, config=None, resume=None, quiet=false, progress=None, **settings))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    data: Option<&Bound<'_, PyAny>>,
    preset: Option<&str>,
    config: Option<&Bound<'_, PyAny>>,
    resume: Option<&Bound<'_, PyAny>>,
    quiet: bool,
    progress: Option<Py<PyAny>>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<Model> {
    if let Some(p) = &progress {
        if !p.bind(py).is_callable() {
            return Err(PyTypeError::new_err(format!(
                "progress: expected a callable, found a value of type {}",
                type_name(p.bind(py))
            )));
        }
    }
    let config = config
        .filter(|c| !c.is_none())
        .map(|c| path_argument("config", c))
        .transpose()?;
    let data_options = PyDict::new(py);
    let mut table = toml::Table::new();
    if let Some(settings) = settings {
        for (key, value) in settings.iter() {
            let key: String = key.extract()?;
            if DATA_KEYWORDS.contains(&key.as_str()) {
                data_options.set_item(&key, value)?;
            } else {
                let value = toml_value(&key, &value)?;
                table.insert(key, value);
            }
        }
    }
    let request = data::request(py, data, &data_options)?;
    let resumed = resume.map(model_to_resume).transpose()?;
    let base = resumed
        .as_ref()
        .map_or_else(Settings::default, TrainedModel::settings_to_continue);
    let settings = guarded(|| resolve_settings(base, preset, config.as_deref(), table))?;
    if let Some(w) = seqrec::workers::oversubscription_warning("threads", settings.train.threads) {
        let warnings = py.import("warnings")?;
        warnings.call_method1("warn", (w.trim_start_matches("warning: "),))?;
    }
    let callback = match (quiet, progress) {
        (true, _) => None,
        (false, Some(p)) => Some(p),
        (false, None) => Some(
            py.import("seqrec._progress")?
                .getattr("Progress")?
                .call0()?
                .unbind(),
        ),
    };
    let mut forwarder = callback.map(Forwarder::new);
    let (outcome, signal) = interruptible(py, |stop| {
        guarded(|| {
            let data_settings = request.settings()?;
            let ds = request.load(!quiet)?;
            let ranking = eval::ranking_hook(&ds.catalog);
            let mut on_event = |ev: Event<'_>| {
                if stop.load(Ordering::Relaxed) {
                    return ControlFlow::Break(());
                }
                match forwarder.as_mut() {
                    Some(f) => f.on_event(ev),
                    None => ControlFlow::Continue(()),
                }
            };
            let session = seqrec::train::run(
                &ds,
                data_settings,
                &settings,
                resumed,
                Some(&ranking),
                &mut on_event,
            )?;
            // The command line's closing evaluation.
            let rec = Recommender::new(session.model.artifact.clone());
            let report = session.pool.install(|| {
                eval::training_report(&rec, &session.seqs, &session.train, &session.test)
            });
            let metrics = serde_json::to_string(&report)?;
            Ok((session.model, rec, metrics))
        })
    });
    if let Some(e) = signal {
        return Err(e);
    }
    if let Some(e) = forwarder.and_then(|f| f.error) {
        return Err(e);
    }
    let (trained, rec, metrics) = outcome?;
    guarded(|| Model::trained(trained, rec, metrics))
}
