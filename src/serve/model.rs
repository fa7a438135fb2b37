//! The model being served and its hot swap: a loaded model file with the
//! summaries the API shows, held behind a lock that readers only copy an
//! `Arc` out of, so a swap never waits for requests and requests never see
//! half a model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::checkpoint::{self, CheckpointError, FORMAT, FORMAT_VERSION};
use crate::retrieval::approx::{self, ApproxSettings, IndexChoice, IndexError, IndexSource};
use crate::retrieval::recommender::Recommender;

/// Why a model file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Reading the file panicked.
    #[error("{}: the model file could not be read", path.display())]
    Unreadable { path: PathBuf },
    /// The approximate index could not be built.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Building the recommender from the file panicked.
    #[error(
        "{}: the model file is inconsistent (building the recommender failed)",
        path.display()
    )]
    Inconsistent { path: PathBuf },
}

type Result<T, E = ModelError> = std::result::Result<T, E>;

/// One loaded model file.
pub struct Loaded {
    pub rec: Recommender,
    /// 1 for the model loaded at start, one more at every successful reload.
    pub generation: u64,
    /// The small summary every recommendation carries, as JSON text.
    pub summary_json: String,
    /// `GET /v1/model`: the file's metadata less the title and user lists.
    pub info: Value,
}

/// A path as the API shows it: its last component. Where the service's
/// files lie on disk is none of its clients' business.
pub fn shown_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Fields of a model's summary that hold a path as the user gave it
/// (relative ones too: `../../home/alice/data/ml-1m`).
const PATH_FIELDS: [&str; 3] = ["dataset", "file", "path"];

/// Replaces every absolute path among `v`'s strings, and every value of a
/// path field, by its last component, so no field written into a model
/// file (now or later) shows the server's directories.
fn hide_dirs(v: &mut Value) {
    match v {
        Value::String(s) if Path::new(s.as_str()).is_absolute() => *s = shown_name(s),
        Value::Array(a) => a.iter_mut().for_each(hide_dirs),
        Value::Object(m) => {
            for (key, value) in m.iter_mut() {
                match value {
                    Value::String(s) if PATH_FIELDS.contains(&key.as_str()) => *s = shown_name(s),
                    other => hide_dirs(other),
                }
            }
        }
        _ => {}
    }
}

fn unix_seconds(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

impl Loaded {
    /// Reads and checks a model file, and puts it on the top-K `index` asks
    /// for (the graph read from its cache beside the file when that was
    /// built for this very model, else built and cached): the model and its
    /// graph are loaded, and swapped, together; `graph` says how the graph
    /// is built and searched. Never panics on a bad file.
    pub fn load(
        path: &Path,
        generation: u64,
        index: IndexChoice,
        graph: ApproxSettings,
    ) -> Result<Loaded> {
        let checkpoint::SavedModel {
            artifact: saved,
            record,
        } = std::panic::catch_unwind(|| checkpoint::load_for_inference(path)).map_err(|_| {
            ModelError::Unreadable {
                path: path.to_path_buf(),
            }
        })??;
        let items = saved.catalog.num_items();
        let epochs = record.history.len();
        let spec = &saved.spec;
        let mut summary = json!({
            "dataset": saved.dataset,
            "dim": spec.dim,
            "vocab_size": spec.vocab_size,
            "context_len": spec.context_len,
            "items": items,
            "epochs": epochs,
            "generation": generation,
        });
        let file_meta = std::fs::metadata(path).ok();
        hide_dirs(&mut summary);
        let mut info = json!({
            "file": {
                "name": shown_name(&path.to_string_lossy()),
                "bytes": file_meta.as_ref().map(|m| m.len()),
                "modified_unix": file_meta.as_ref().and_then(|m| m.modified().ok()).and_then(unix_seconds),
            },
            "generation": generation,
            "loaded_at_unix": unix_seconds(SystemTime::now()),
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dataset": saved.dataset,
            "model": spec,
            "train": record.settings,
            "history": record.history,
            "epochs": epochs,
            "optimizer_step": record.optimizer_step,
            "items": items,
            "users": saved.users.len(),
            "item_keys": saved.catalog.keys.is_some(),
        });
        let mut rec = std::panic::catch_unwind(move || Recommender::new(saved)).map_err(|_| {
            ModelError::Inconsistent {
                path: path.to_path_buf(),
            }
        })?;
        let cache = approx::cache_path(path);
        let source = rec.use_index(index, Some(&cache), graph)?;
        hide_dirs(&mut info);
        info["index"] = match (&source, rec.approx_index()) {
            (Some(source), Some(graph)) => json!({
                "kind": "approx",
                "items": graph.items(),
                "connectivity": graph.settings().connectivity,
                "expansion_search": graph.settings().expansion_search,
                "precision": graph.settings().precision.name(),
                "memory": graph.settings().memory.name(),
                "from": match source {
                    IndexSource::Cache => "cache",
                    IndexSource::BuiltAndCached | IndexSource::BuiltNotCached(_) => "built",
                },
            }),
            _ => json!({ "kind": "exact" }),
        };
        if let Some(IndexSource::BuiltNotCached(why)) = &source {
            tracing::warn!("approximate index built but not cached: {why}");
        }
        Ok(Loaded {
            rec,
            generation,
            summary_json: summary.to_string(),
            info,
        })
    }
}

/// What tells versions of a file apart for `--watch`: its modification
/// time and length.
pub type FileStamp = Option<(SystemTime, u64)>;

pub fn file_stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The model now served, swappable while requests run.
pub struct ModelSlot {
    path: PathBuf,
    index: IndexChoice,
    graph: ApproxSettings,
    current: RwLock<Arc<Loaded>>,
    /// One reload at a time; holds the last generation handed out.
    reloading: Mutex<u64>,
    /// The file as it was when last read, loaded or refused.
    stamp: Mutex<FileStamp>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl ModelSlot {
    /// Loads the first model; `stamp` is the file's, taken before reading it.
    /// Every later reload uses the same `index` and `graph` settings.
    pub fn load(path: PathBuf, index: IndexChoice, graph: ApproxSettings) -> Result<ModelSlot> {
        let stamp = file_stamp(&path);
        let first = Loaded::load(&path, 1, index, graph)?;
        Ok(ModelSlot {
            path,
            index,
            graph,
            current: RwLock::new(Arc::new(first)),
            reloading: Mutex::new(1),
            stamp: Mutex::new(stamp),
        })
    }

    /// The file's stamp when it was last read.
    pub fn last_stamp(&self) -> FileStamp {
        *lock(&self.stamp)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model to answer one request with: a request keeps its model to
    /// the end even when a swap happens meanwhile.
    pub fn get(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the model file again and swaps it in; a file that does not load
    /// is refused and the model in place keeps serving. Blocking: call it
    /// off the async runtime.
    pub fn reload(&self) -> Result<Arc<Loaded>> {
        let mut last = lock(&self.reloading);
        *lock(&self.stamp) = file_stamp(&self.path);
        let loaded = Arc::new(Loaded::load(&self.path, *last + 1, self.index, self.graph)?);
        *last += 1;
        match self.current.write() {
            Ok(mut g) => *g = loaded.clone(),
            Err(poisoned) => *poisoned.into_inner() = loaded.clone(),
        }
        Ok(loaded)
    }
}
