//! `train`, `load` and the `Model` they return: its `Recommender` (for
//! `recommend`, `encode` and `evaluate`, answering as `seqrec recommend` /
//! `evaluate` do), what the model file records beside it, and where it came
//! from (`Origin`, for `save`). `load` reads a model for inference, as
//! `seqrec recommend` does: the optimiser's state stays in the file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use numpy::ndarray::ArrayView2;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use seqrec::checkpoint::{self, FileStamp, SavedModel, TrainingRecord};
use seqrec::data::DataSettings;
use seqrec::eval;
use seqrec::model::Artifact;
use seqrec::retrieval::recommender::{QueryError, Recommender};
use seqrec::train::{EpochReport, Event, Settings, TrainConfig, TrainedModel};

use crate::data::{self, DATA_KEYWORDS};
use crate::progress::{epoch_dict, Forwarder};
use crate::{guarded, SeqrecError};

/// The most items `recommend` returns per history (the command line's limit).
const MAX_K: i64 = 10_000;

/// A trained seqrec model: recommend, encode, evaluate and save.
///
/// Made by `seqrec.train` or `seqrec.load`. Item ids are the ones users
/// know (the data's item column), ints where every id in the catalogue is
/// an integer, else strings.
#[pyclass(frozen, module = "seqrec")]
pub struct Model {
    rec: Recommender,
    /// Where the training data came from and how it was read.
    dataset: String,
    data: DataSettings,
    /// The training's settings and history, as the model file holds them.
    record: TrainingRecord,
    origin: Origin,
    /// The key of each embedding row as an integer, when every item's key
    /// is one (row 0, padding, is -1); `None` when some key is text.
    numeric_keys: Option<Vec<i64>>,
    /// The model id of each integer key of a renumbered catalogue whose
    /// keys are all integers: an int is looked up without formatting it.
    by_int_key: HashMap<i64, u32>,
    /// The final evaluation of a model trained in this process (JSON).
    test_metrics: Option<String>,
}

/// Where a `Model` came from, which says how it is saved.
enum Origin {
    /// Trained in this process: the whole state, the optimiser's included,
    /// written by `save`.
    Trained(Box<TrainedModel>),
    /// Read by `load` for inference: `save` copies the file it was read
    /// from, which holds the optimiser's state (`checkpoint::copy_model_file`).
    Loaded { path: PathBuf, stamp: FileStamp },
}

/// `text` when it is an integer written the one way Python prints it.
fn canonical_int(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|n| n.to_string() == text)
}

impl Model {
    /// A model trained in this process; `rec` is the recommender over its
    /// artifact that the closing evaluation built.
    fn trained(
        trained: TrainedModel,
        rec: Recommender,
        test_metrics: String,
    ) -> anyhow::Result<Model> {
        let record = checkpoint::training_record(&trained)?;
        let artifact = &trained.artifact;
        let (dataset, data) = (artifact.dataset.clone(), artifact.data);
        let origin = Origin::Trained(Box::new(trained));
        Ok(Model::new(
            rec,
            dataset,
            data,
            record,
            origin,
            Some(test_metrics),
        ))
    }

    /// A model read from `path` for inference.
    fn loaded(saved: SavedModel, path: PathBuf, stamp: FileStamp) -> Model {
        let SavedModel { artifact, record } = saved;
        let Artifact { dataset, data, .. } = &artifact;
        let (dataset, data) = (dataset.clone(), *data);
        let rec = Recommender::new(artifact);
        Model::new(
            rec,
            dataset,
            data,
            record,
            Origin::Loaded { path, stamp },
            None,
        )
    }

    fn new(
        rec: Recommender,
        dataset: String,
        data: DataSettings,
        record: TrainingRecord,
        origin: Origin,
        test_metrics: Option<String>,
    ) -> Model {
        let numeric_keys: Option<Vec<i64>> = match &rec.catalog.keys {
            None => Some((0..rec.spec.vocab_size as i64).collect()),
            Some(keys) => std::iter::once(Some(-1))
                .chain(keys.iter().skip(1).map(|k| canonical_int(k)))
                .collect(),
        };
        let by_int_key = match (&rec.catalog.keys, &numeric_keys) {
            (Some(_), Some(keys)) => (1..keys.len())
                .filter(|&i| rec.is_item(i as u32))
                .map(|i| (keys[i], i as u32))
                .collect(),
            _ => HashMap::new(),
        };
        Model {
            rec,
            dataset,
            data,
            record,
            origin,
            numeric_keys,
            by_int_key,
            test_metrics,
        }
    }

    /// The model id of an item id as sent (the HTTP API's rule: numbers are
    /// ids, or keys of a renumbered catalogue; text is looked up as typed).
    fn lookup(&self, item: &Bound<'_, PyAny>) -> PyResult<Result<u32, String>> {
        if let Ok(text) = item.cast::<PyString>() {
            let text = text.to_cow()?;
            return Ok(self.rec.item_id(&text).map_err(|_| text.to_string()));
        }
        if item.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err("a bool is not an item id"));
        }
        let Ok(n) = item.extract::<i64>() else {
            let kind = item.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "expected an item id (int or str), found a value of type {kind}"
            )));
        };
        let id = if self.rec.catalog.keys.is_none() {
            u32::try_from(n).ok().filter(|&i| self.rec.is_item(i))
        } else if self.numeric_keys.is_some() {
            // Every key is an integer written canonically: the same answer
            // as looking up its text.
            self.by_int_key.get(&n).copied()
        } else {
            self.rec.item_id(&n.to_string()).ok()
        };
        Ok(id.ok_or_else(|| n.to_string()))
    }

    /// Every history as model ids; errors name the history and position.
    fn resolve(&self, histories: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
        if histories.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(
                "histories: expected a list of histories (lists of item ids), found a str",
            ));
        }
        let mut out = Vec::new();
        for (i, history) in histories.try_iter()?.enumerate() {
            let history = history?;
            if history.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(format!(
                    "histories[{i}]: expected a list of item ids, found a str"
                )));
            }
            let items = history.try_iter().map_err(|_| {
                PyTypeError::new_err(format!("histories[{i}]: expected a list of item ids"))
            })?;
            let mut ids = Vec::new();
            for (j, item) in items.enumerate() {
                let item = item?;
                match self.lookup(&item) {
                    Ok(Ok(id)) => ids.push(id),
                    Ok(Err(key)) => {
                        return Err(SeqrecError::new_err(format!(
                            "histories[{i}][{j}]: {}",
                            QueryError::UnknownItem(key)
                        )))
                    }
                    Err(e) => {
                        return Err(PyTypeError::new_err(format!(
                            "histories[{i}][{j}]: {}",
                            e.value(item.py())
                        )))
                    }
                }
            }
            if ids.is_empty() {
                return Err(SeqrecError::new_err(format!(
                    "histories[{i}]: expected at least one item"
                )));
            }
            out.push(ids);
        }
        Ok(out)
    }

    /// A model with the reference's padding gives nearly one answer to
    /// every history shorter than its context: the user is warned, as
    /// `seqrec recommend` warns (Python shows a warning once per place).
    fn warn_if_washed_out(&self, py: Python<'_>, histories: &[&[u32]]) -> PyResult<()> {
        if !histories
            .iter()
            .any(|h| self.rec.spec.short_history_washed_out(h.len()))
        {
            return Ok(());
        }
        // One text whatever the batch, so Python shows it once per place.
        let message = format!(
            "histories shorter than the model's context ({} items), and the \
             model pads on the right without a mask (the reference's settings): its answers to \
             short histories hardly depend on them. A model trained with preset=\"best\" (left \
             padding, masked) answers them well.",
            self.rec.spec.context_len
        );
        py.import("warnings")?.call_method1("warn", (message,))?;
        Ok(())
    }

    /// `json` (from serde) as Python objects.
    fn from_json<'py>(py: Python<'py>, json: &str) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.call_method1("loads", (json,))
    }
}

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
    if let Ok(x) = value.extract::<f64>() {
        return Ok(toml::Value::Float(x));
    }
    Err(PyTypeError::new_err(format!(
        "{key}: expected an int, float, bool or str, found a value of type {}",
        value.get_type().name()?
    )))
}

/// Defaults, then the preset, then the keyword arguments (as `seqrec
/// train` applies its flags), checked.
fn resolve_settings(preset: Option<&str>, table: toml::Table) -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    if let Some(name) = preset {
        settings = settings.preset(name)?;
    }
    settings = settings.overlay(table)?;
    settings
        .validate()
        .map_err(|e| anyhow!("invalid setting: {e}"))?;
    Ok(settings)
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
/// Progress shows as a tqdm bar when tqdm is installed (else a line per
/// epoch on stderr); `quiet=True` silences it, and `progress` takes a
/// callable instead: `progress(kind, *values)` per event. The GIL is
/// released while training. Raises `SeqrecError` with seqrec's message.
#[pyfunction]
#[pyo3(signature = (data=None, *, preset=None, quiet=false, progress=None, **settings))]
pub fn train(
    py: Python<'_>,
    data: Option<&Bound<'_, PyAny>>,
    preset: Option<&str>,
    quiet: bool,
    progress: Option<Py<PyAny>>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<Model> {
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
    let settings = guarded(|| resolve_settings(preset, table))?;
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
    let outcome = py.detach(|| {
        guarded(|| {
            let data_settings = request.settings()?;
            let ds = request.load(!quiet)?;
            let ranking = eval::ranking_hook(&ds.catalog);
            let mut on_event = |ev: Event<'_>| {
                if let Some(f) = forwarder.as_mut() {
                    f.on_event(ev)
                }
            };
            let session = seqrec::train::run(
                &ds,
                data_settings,
                &settings,
                None,
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
    if let Some(f) = forwarder {
        if let Some(e) = f.error {
            return Err(e);
        }
    }
    let (trained, rec, metrics) = outcome?;
    guarded(|| Model::trained(trained, rec, metrics))
}

/// Loads a model file written by `seqrec train` or `Model.save`.
#[pyfunction]
pub fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    py.detach(|| {
        guarded(|| {
            let (saved, stamp) = checkpoint::load_for_inference_stamped(&path)?;
            Ok(Model::loaded(saved, path, stamp))
        })
    })
}

#[pymethods]
impl Model {
    /// The top `k` items for each history, as `seqrec recommend` gives
    /// them (exact top-K; ties broken by smaller id).
    ///
    /// `histories` is a list of histories, each a list of item ids as users
    /// know them (ints or strs), oldest first. Returns `(ids, scores)`, two
    /// `(len(histories), k)` numpy arrays; where a history has fewer than
    /// `k` items left to recommend, its row ends with id -1 (None for text
    /// ids) and score NaN. `exclude_seen` leaves out the history's items.
    #[pyo3(signature = (histories, k=10, exclude_seen=false))]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        histories: &Bound<'py, PyAny>,
        k: i64,
        exclude_seen: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray2<f32>>)> {
        if !(1..=MAX_K).contains(&k) {
            return Err(SeqrecError::new_err(format!(
                "k: expected 1 to {MAX_K}, found {k}"
            )));
        }
        let k = k as usize;
        let histories = self.resolve(histories)?;
        let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        self.warn_if_washed_out(py, &refs)?;
        let found =
            py.detach(|| guarded(|| Ok(self.rec.recommend(&refs, k, exclude_seen, false))))?;
        let rows = found.len();
        let mut scores = vec![f32::NAN; rows * k];
        for (row, items) in found.iter().enumerate() {
            for (col, s) in items.iter().enumerate() {
                scores[row * k + col] = s.score;
            }
        }
        let scores = PyArray1::from_vec(py, scores).reshape([rows, k])?;
        let ids = match &self.numeric_keys {
            Some(keys) => {
                let mut ids = vec![-1i64; rows * k];
                for (row, items) in found.iter().enumerate() {
                    for (col, s) in items.iter().enumerate() {
                        ids[row * k + col] = keys[s.id as usize];
                    }
                }
                PyArray1::from_vec(py, ids).reshape([rows, k])?.into_any()
            }
            None => {
                let mut ids: Vec<Py<PyAny>> = Vec::with_capacity(rows * k);
                for items in &found {
                    for col in 0..k {
                        ids.push(match items.get(col) {
                            Some(s) => PyString::new(py, &self.rec.catalog.key(s.id))
                                .into_any()
                                .unbind(),
                            None => py.None(),
                        });
                    }
                }
                PyArray1::from_vec(py, ids).reshape([rows, k])?.into_any()
            }
        };
        Ok((ids, scores))
    }

    /// Query vectors of the histories (a `(len(histories), dim)` float32
    /// array): what `recommend` scores the item embeddings against.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        histories: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let histories = self.resolve(histories)?;
        let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let queries = py.detach(|| guarded(|| Ok(self.rec.encode(&refs))))?;
        // The vector becomes the array's buffer: no copy.
        PyArray1::from_vec(py, queries).reshape([refs.len(), self.rec.spec.dim])
    }

    /// HR/NDCG/MRR@K over the full catalogue, beside a most-popular
    /// baseline, as `seqrec evaluate --json` reports them (a dict).
    ///
    /// `data` as for `train`; without it, the model's training data (when
    /// it was a path or named dataset). Read options not given default to
    /// how the model's training data was read. `k` is a cut-off or a list.
    #[pyo3(signature = (data=None, *, k=None, threads=0, quiet=false, **options))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
        k: Option<&Bound<'py, PyAny>>,
        threads: usize,
        quiet: bool,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ks: Vec<i64> = match k {
            None => vec![10, 20],
            Some(k) if k.extract::<i64>().is_ok() => vec![k.extract()?],
            Some(k) => k.extract().map_err(|_| {
                PyTypeError::new_err("k: expected a positive int or a list of them")
            })?,
        };
        if ks.is_empty() || ks.iter().any(|&k| k < 1) {
            return Err(SeqrecError::new_err(format!(
                "k: expected positive integers (e.g. [10, 20]), found {ks:?}"
            )));
        }
        let ks: Vec<usize> = ks.into_iter().map(|k| k as usize).collect();
        let data_options = PyDict::new(py);
        if let Some(options) = options {
            for (key, value) in options.iter() {
                let key: String = key.extract()?;
                if !DATA_KEYWORDS.contains(&key.as_str()) {
                    return Err(PyTypeError::new_err(format!(
                        "evaluate() got an unexpected keyword argument {key:?} (it takes the data keywords: {})",
                        DATA_KEYWORDS.join(", ")
                    )));
                }
                data_options.set_item(key, value)?;
            }
        }
        let mut request = data::request(py, data, &data_options)?;
        guarded(|| request.default_to_model(&self.data, &self.dataset))?;
        let report = py.detach(|| {
            guarded(|| {
                let data = request.settings()?;
                let ds = request.load(!quiet)?;
                let report =
                    eval::evaluate_dataset(&self.rec, &ds, data.min_sequence_len, &ks, threads)?;
                Ok(serde_json::to_string(&report)?)
            })
        })?;
        Model::from_json(py, &report)
    }

    /// Writes the model file (safetensors, atomically): the same file
    /// `seqrec train --out` writes, readable by `seqrec.load` and the CLI.
    /// A model from `seqrec.load` is saved by copying the file it was read
    /// from (which holds the optimiser's state `load` leaves unread), so
    /// that file must not have changed since.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| {
            guarded(|| match &self.origin {
                Origin::Trained(trained) => Ok(checkpoint::save(&path, trained)?),
                Origin::Loaded { path: from, stamp } => {
                    Ok(checkpoint::copy_model_file(from, stamp, &path)?)
                }
            })
        })
    }

    /// The candidate item embeddings, `(vocab_size, dim)` float32, row `i`
    /// for model id `i` (`item_keys[i]`; row 0 is padding). A read-only
    /// view of the model's own table, no copy.
    #[getter]
    fn item_embeddings<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let py = slf.py();
        let model = slf.get();
        let spec = &model.rec.spec;
        let view = ArrayView2::from_shape(
            (spec.vocab_size, spec.dim),
            &model.rec.params.candidate_embedding,
        )
        .map_err(|e| SeqrecError::new_err(format!("item embeddings: {e}")))?;
        // SAFETY: the array borrows the table of this Model, which it holds
        // as its base object, so the table outlives it; the Model is frozen
        // (no method mutates or reallocates the table), and the array is
        // made read-only below so Python cannot write to it either.
        let array = unsafe { PyArray2::borrow_from_array(&view, slf.clone().into_any()) };
        let flags = PyDict::new(py);
        flags.set_item("write", false)?;
        array.call_method("setflags", (), Some(&flags))?;
        Ok(array)
    }

    /// The item id users know for each embedding row (None for row 0,
    /// padding, and for ids that are no item).
    #[getter]
    fn item_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let catalog = &self.rec.catalog;
        let keys = (0..self.rec.spec.vocab_size as u32).map(|i| -> PyResult<Py<PyAny>> {
            if !self.rec.is_item(i) {
                return Ok(py.None());
            }
            Ok(match &self.numeric_keys {
                Some(keys) => keys[i as usize].into_pyobject(py)?.into_any().unbind(),
                None => PyString::new(py, &catalog.key(i)).into_any().unbind(),
            })
        });
        PyList::new(py, keys.collect::<PyResult<Vec<_>>>()?)
    }

    /// Embedding size.
    #[getter]
    fn dim(&self) -> usize {
        self.rec.spec.dim
    }

    /// Embedding rows (largest model id + 1).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.rec.spec.vocab_size
    }

    /// Where the training data came from, as recorded in the model file.
    #[getter]
    fn dataset(&self) -> &str {
        &self.dataset
    }

    /// With a validation split, the epoch whose parameters these are.
    #[getter]
    fn best_epoch(&self) -> Option<usize> {
        self.record.best_epoch
    }

    /// One dict per epoch trained (loss, val_loss, metrics, learning rate).
    #[getter]
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let epochs = self
            .record
            .history
            .iter()
            .map(|r| {
                let report: EpochReport = guarded(|| Ok(serde_json::from_value(r.clone())?))?;
                epoch_dict(py, &report)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, epochs)
    }

    /// For a model trained in this process: the closing evaluation `seqrec
    /// train --json` reports (test and popularity HR/NDCG/MRR@10, seen
    /// items excluded; `test_all_items`), else None.
    #[getter]
    fn test_metrics<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.test_metrics
            .as_deref()
            .map(|m| Model::from_json(py, m))
            .transpose()
    }

    /// Every setting of the model, by config key (what `seqrec train
    /// --print-config` prints; `epochs` is the total trained).
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = guarded(|| {
            let train: TrainConfig = serde_json::from_value(self.record.settings.clone())?;
            let settings = Settings {
                model: self.rec.spec.options(),
                train,
            };
            let table: toml::Table = toml::from_str(&settings.to_toml()?)?;
            Ok(serde_json::to_string(&table)?)
        })?;
        Model::from_json(py, &json)
    }

    /// For benchmarks: seconds per `recommend` call of the engine alone
    /// (ids already resolved, no arrays built), the mean of `repeats`.
    #[pyo3(signature = (histories, k=10, exclude_seen=false, repeats=100))]
    fn _engine_recommend_seconds(
        &self,
        py: Python<'_>,
        histories: &Bound<'_, PyAny>,
        k: usize,
        exclude_seen: bool,
        repeats: usize,
    ) -> PyResult<f64> {
        if !(1..=MAX_K as usize).contains(&k) || repeats == 0 {
            return Err(SeqrecError::new_err("k: 1 to 10000; repeats: at least 1"));
        }
        let histories = self.resolve(histories)?;
        let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        py.detach(|| {
            let started = Instant::now();
            for _ in 0..repeats {
                std::hint::black_box(self.rec.recommend(&refs, k, exclude_seen, false));
            }
            Ok(started.elapsed().as_secs_f64() / repeats as f64)
        })
    }

    fn __repr__(&self) -> String {
        let spec = &self.rec.spec;
        format!(
            "Model(tower={:?}, items={}, dim={}, context_len={}, epochs={}, dataset={:?})",
            spec.tower,
            self.rec.item_count(),
            spec.dim,
            spec.context_len,
            self.record.history.len(),
            self.dataset
        )
    }
}
