//! `train`, `load` and the `Model` they return: its `Recommender` (for
//! `recommend`, `encode` and `evaluate`, answering as `seqrec recommend` /
//! `evaluate` do), what the model file records beside it, and where it came
//! from (`Origin`, for `save`). `load` reads a model for inference, as
//! `seqrec recommend` does: the optimiser's state stays in the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use numpy::ndarray::ArrayView2;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString};
use seqrec::checkpoint::{self, FileStamp, SavedModel, TrainingRecord};
use seqrec::data::{DataOptions, DataSettings};
use seqrec::eval;
use seqrec::model::Artifact;
use seqrec::retrieval::recommender::{QueryError, Recommender};
use seqrec::train::{EpochReport, Settings, TrainConfig, TrainedModel};

use crate::args::{int_argument, short_repr, type_name};
use crate::data::{self, DATA_KEYWORDS};
use crate::progress::epoch_dict;
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
pub(crate) enum Origin {
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
    pub(crate) fn trained(
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
        if !item.is_instance_of::<PyInt>() && !item.hasattr("__index__")? {
            return Err(PyTypeError::new_err(format!(
                "expected an item id (int or str), found a value of type {}",
                type_name(item)
            )));
        }
        let Ok(n) = item.extract::<i64>() else {
            // An int no catalogue holds (beyond 64 bits): unknown, as any
            // id not in the catalogue is.
            return Ok(Err(short_repr(item)));
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

    /// Each element of `list` (a list, not a str), with its index.
    fn items_of<'py>(
        name: &str,
        list: &Bound<'py, PyAny>,
        what: &str,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let wrong = || {
            PyTypeError::new_err(format!(
                "{name}: expected a list of {what}, found a value of type {}",
                type_name(list)
            ))
        };
        if list.is_instance_of::<PyString>() {
            return Err(wrong());
        }
        list.try_iter()
            .map_err(|_| wrong())?
            .collect::<PyResult<Vec<_>>>()
    }

    /// Histories given as lists of titles; errors name the history and
    /// position.
    fn resolve_titles(&self, titles: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
        let mut out = Vec::new();
        for (i, history) in Model::items_of("titles", titles, "histories (lists of titles)")?
            .iter()
            .enumerate()
        {
            let at = format!("titles[{i}]");
            let mut ids = Vec::new();
            for (j, title) in Model::items_of(&at, history, "titles")?.iter().enumerate() {
                let title = title.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "{at}[{j}]: expected a title (str), found a value of type {}",
                        type_name(title)
                    ))
                })?;
                let id = self
                    .rec
                    .title_id(&title.to_cow()?)
                    .map_err(|e| SeqrecError::new_err(format!("{at}[{j}]: {e}")))?;
                ids.push(id);
            }
            if ids.is_empty() {
                return Err(SeqrecError::new_err(format!(
                    "{at}: expected at least one title"
                )));
            }
            out.push(ids);
        }
        Ok(out)
    }

    /// The whole known histories of users of the training data, only when
    /// look-ups are allowed (the server's rule).
    fn resolve_users(&self, users: &Bound<'_, PyAny>, allowed: bool) -> PyResult<Vec<Vec<u32>>> {
        if !allowed {
            return Err(SeqrecError::new_err(
                "users: looking up users of the training data needs allow_user_lookup=True \
                 (the server's --allow-user-lookup rule: the stored histories are the training \
                 data's, and answers with and without exclude_seen give them away); or pass \
                 the users' histories",
            ));
        }
        let mut out = Vec::new();
        for (i, user) in Model::items_of("users", users, "user ids")?
            .iter()
            .enumerate()
        {
            let key = if let Ok(text) = user.cast::<PyString>() {
                text.to_cow()?.into_owned()
            } else if user.is_instance_of::<PyInt>() && !user.is_instance_of::<PyBool>() {
                user.str()?.to_string()
            } else {
                return Err(PyTypeError::new_err(format!(
                    "users[{i}]: expected a user id (int or str), found a value of type {}",
                    type_name(user)
                )));
            };
            let history = self
                .rec
                .user_history(&key)
                .map_err(|e| SeqrecError::new_err(format!("users[{i}]: {e}")))?;
            out.push(history.to_vec());
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

    /// Where the model came from (for `train(resume=...)`).
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// `json` (from serde) as Python objects.
    fn from_json<'py>(py: Python<'py>, json: &str) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.call_method1("loads", (json,))
    }
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
    /// Give exactly one of: `histories`, a list of histories, each a list
    /// of item ids as users know them (ints or strs), oldest first;
    /// `titles`, a list of histories as item titles (exact,
    /// case-insensitive); `users`, a list of users of the training data,
    /// whose whole known histories are used, only with
    /// `allow_user_lookup=True` (the server's `--allow-user-lookup` rule:
    /// the stored histories are the training data's, and answers with and
    /// without `exclude_seen` give them away). Returns `(ids, scores)`, two
    /// `(len(histories), k)` numpy arrays; where a history has fewer than
    /// `k` items left to recommend, its row ends with id -1 (None for text
    /// ids) and score NaN. `exclude_seen` leaves out the history's items.
    #[pyo3(signature = (histories=None, k=None, exclude_seen=false, *, titles=None, users=None, allow_user_lookup=false))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        histories: Option<&Bound<'py, PyAny>>,
        k: Option<&Bound<'py, PyAny>>,
        exclude_seen: bool,
        titles: Option<&Bound<'py, PyAny>>,
        users: Option<&Bound<'py, PyAny>>,
        allow_user_lookup: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray2<f32>>)> {
        let k = match k {
            Some(k) => int_argument("k", k, 1, MAX_K)? as usize,
            None => 10,
        };
        let histories = match (histories, titles, users) {
            (Some(h), None, None) => self.resolve(h)?,
            (None, Some(t), None) => self.resolve_titles(t)?,
            (None, None, Some(u)) => self.resolve_users(u, allow_user_lookup)?,
            _ => {
                return Err(PyTypeError::new_err(
                    "recommend: give exactly one of histories, titles or users",
                ))
            }
        };
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
    #[pyo3(signature = (data=None, *, k=None, threads=None, quiet=false, **options))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
        k: Option<&Bound<'py, PyAny>>,
        threads: Option<&Bound<'py, PyAny>>,
        quiet: bool,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let threads = match threads {
            Some(t) => int_argument("threads", t, 0, seqrec::workers::MAX_THREADS as i64)? as usize,
            None => 0,
        };
        let ks: Vec<usize> = match k {
            None => vec![10, 20],
            Some(k) if k.is_instance_of::<PyInt>() || k.hasattr("__index__")? => {
                vec![int_argument("k", k, 1, MAX_K)? as usize]
            }
            Some(k) => {
                let list = Model::items_of("k", k, "cut-offs (positive ints)")?;
                if list.is_empty() {
                    return Err(SeqrecError::new_err(
                        "k: expected at least one cut-off (e.g. [10, 20])",
                    ));
                }
                list.iter()
                    .enumerate()
                    .map(|(i, v)| int_argument(&format!("k[{i}]"), v, 1, MAX_K).map(|n| n as usize))
                    .collect::<PyResult<_>>()?
            }
        };
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
        // Never over the data the model was trained on.
        let inputs = DataOptions::recorded_input_files(&self.dataset);
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        guarded(|| Ok(seqrec::files::check_output("path", &path, &inputs)?))?;
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
