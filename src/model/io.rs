//! The model file: one safetensors file holding the parameters, the
//! optimiser's moments (so training can resume) and, as JSON metadata, the
//! configuration, the training history and the catalogue (titles, item keys).
//! Written to a temporary file and renamed, so a crash never leaves half a
//! model; read with every field checked, so a bad file is an error, not a
//! panic.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::{ModelConfig, Params, TENSOR_NAMES};
use crate::data::Catalog;
use crate::train::adamw::AdamW;
use crate::train::{EpochReport, TrainConfig, TrainState};

/// Marks a safetensors file as a seqrec model.
pub const FORMAT: &str = "seqrec-model";
pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "seqrec";

/// Everything in a model file besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: String,
    pub version: u32,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub history: Vec<EpochReport>,
    pub optimizer_step: u64,
    /// Where the training data came from.
    pub dataset: String,
    pub titles: Vec<String>,
    pub is_item: Vec<bool>,
    pub item_keys: Option<Vec<String>>,
    /// The training data's users, by the id in their file; their histories
    /// are the `user_items` tensor, cut at `user_offsets`.
    pub user_keys: Vec<String>,
    /// With a validation split: the epoch whose parameters these are (the
    /// history goes on to the last epoch run).
    #[serde(default)]
    pub best_epoch: Option<usize>,
    /// How the training data was read, so `evaluate` reads it the same way.
    #[serde(default)]
    pub data: DataSettings,
}

/// The reading and splitting settings of the training data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DataSettings {
    /// `None`: every rating kept.
    pub min_rating: Option<f32>,
    pub min_sequence_len: usize,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            min_rating: Some(2.0),
            min_sequence_len: 3,
        }
    }
}

/// Every training user's whole history (oldest first), so `--user ID` and
/// seen-item exclusion work from the model file alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserHistories {
    pub keys: Vec<String>,
    pub offsets: Vec<u32>,
    pub items: Vec<u32>,
}

impl UserHistories {
    pub fn from_sequences(seqs: &crate::data::Sequences, user_keys: &[String]) -> UserHistories {
        UserHistories {
            keys: seqs
                .users
                .iter()
                .map(|&u| user_keys[u as usize].clone())
                .collect(),
            offsets: seqs.offsets.clone(),
            items: seqs.items.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, user: usize) -> &[u32] {
        &self.items[self.offsets[user] as usize..self.offsets[user + 1] as usize]
    }
}

impl ModelMeta {
    pub fn catalog(&self) -> Catalog {
        Catalog {
            titles: self.titles.clone(),
            is_item: self.is_item.clone(),
            keys: self.item_keys.clone(),
        }
    }
}

/// A model as saved: its metadata and training state.
#[derive(Debug, Clone)]
pub struct SavedModel {
    pub meta: ModelMeta,
    pub state: TrainState,
    pub users: UserHistories,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Builds the file's bytes. Deterministic: the same state gives the same
/// bytes (one metadata key, so no hash-map ordering enters the header).
pub fn to_bytes(model: &SavedModel) -> Result<Vec<u8>> {
    let cfg = &model.state.model;
    let shapes = Params::shapes(cfg);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let groups = [
        ("", &model.state.params),
        ("adam_m.", &model.state.optimizer.m),
        ("adam_v.", &model.state.optimizer.v),
    ];
    for (prefix, params) in groups {
        for ((name, shape), data) in TENSOR_NAMES.iter().zip(&shapes).zip(params.tensors()) {
            owned.push((format!("{prefix}{name}"), shape.clone(), f32_bytes(data)));
        }
    }
    let users = &model.users;
    let user_tensors = [
        (
            "user_items".to_string(),
            vec![users.items.len()],
            u32_bytes(&users.items),
        ),
        (
            "user_offsets".to_string(),
            vec![users.offsets.len()],
            u32_bytes(&users.offsets),
        ),
    ];
    let views = owned
        .iter()
        .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .chain(
            user_tensors
                .iter()
                .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::U32, s.clone(), b)?))),
        )
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&model.meta)?)]);
    Ok(safetensors::serialize(views, &Some(meta))?)
}

/// Temporary files are created private (0600); a model, log or plot is
/// meant to be read by others (a service running as another user), so it
/// gets the usual 0644 before it is renamed into place.
pub fn readable_by_all(file: &std::fs::File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// The folder a file goes in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to a temporary file beside `path`, synced and made
/// readable, then renamed over `path`: a crash leaves the old file or the
/// new one, never half of either.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".seqrec-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    readable_by_all(tmp.as_file());
    tmp.persist(path)
        .map_err(|e| anyhow!("{}: cannot move into place: {}", path.display(), e.error))?;
    Ok(())
}

/// Writes the model atomically (see `write_atomically`).
pub fn save(path: &Path, model: &SavedModel) -> Result<()> {
    write_atomically(path, &to_bytes(model)?)
}

fn read_tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("tensor {name:?} is missing"))?;
    if t.dtype() != Dtype::F32 {
        bail!("tensor {name:?}: expected F32, found {:?}", t.dtype());
    }
    if t.shape() != shape {
        bail!(
            "tensor {name:?}: expected shape {:?}, found {:?}",
            shape,
            t.shape()
        );
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        bail!("tensor {name:?} holds NaN or infinite values");
    }
    Ok(v)
}

fn read_u32s(st: &SafeTensors, name: &str) -> Result<Vec<u32>> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("tensor {name:?} is missing"))?;
    if t.dtype() != Dtype::U32 || t.shape().len() != 1 {
        bail!(
            "tensor {name:?}: expected a U32 vector, found {:?} {:?}",
            t.dtype(),
            t.shape()
        );
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Checks that the stored histories are well formed: offsets rise from 0 to
/// the item count, one more than the users, every id inside the vocabulary.
fn read_users(st: &SafeTensors, meta: &ModelMeta) -> Result<UserHistories> {
    let items = read_u32s(st, "user_items")?;
    let offsets = read_u32s(st, "user_offsets")?;
    let ok = offsets.len() == meta.user_keys.len() + 1
        && offsets.first() == Some(&0)
        && offsets.last().map(|&o| o as usize) == Some(items.len())
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && items.iter().all(|&i| (i as usize) < meta.model.vocab_size);
    if !ok {
        bail!(
            "the stored user histories are inconsistent ({} users, {} offsets, {} items)",
            meta.user_keys.len(),
            offsets.len(),
            items.len()
        );
    }
    Ok(UserHistories {
        keys: meta.user_keys.clone(),
        offsets,
        items,
    })
}

/// Parses a model file's bytes, checking every field.
pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("not a safetensors file (truncated or corrupt?): {e:?}"))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("unreadable header: {e:?}"))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            anyhow!("a safetensors file, but not a seqrec model (no {META_KEY:?} metadata)")
        })?;
    let meta: ModelMeta =
        serde_json::from_str(meta_json).context("the seqrec metadata is not valid")?;
    if meta.format != FORMAT {
        bail!("metadata format {:?}: expected {FORMAT:?}", meta.format);
    }
    if meta.version != FORMAT_VERSION {
        bail!(
            "model file version {}: this seqrec reads version {FORMAT_VERSION}",
            meta.version
        );
    }
    let cfg = meta.model;
    if cfg.dim == 0 || cfg.vocab_size == 0 || cfg.context_len == 0 {
        bail!("model config {cfg:?}: sizes must be positive");
    }
    // Checked before anything is allocated from them: an edited header must
    // not make the reader ask for terabytes.
    if cfg.dim > 4096
        || cfg.context_len > 1000
        || cfg.vocab_size > crate::data::readers::MAX_ITEM_ID as usize + 1
    {
        bail!("model config {cfg:?}: dim at most 4096, context_len at most 1000, vocabulary at most {}", crate::data::readers::MAX_ITEM_ID as usize + 1);
    }
    if cfg.dim != meta.train.embedding_dim || cfg.context_len != meta.train.context_len {
        bail!("model config {cfg:?} disagrees with its training settings (embedding_dim {}, context_len {})", meta.train.embedding_dim, meta.train.context_len);
    }
    let expected_bytes = Params::shapes(&cfg)
        .iter()
        .map(|s| s.iter().product::<usize>())
        .sum::<usize>()
        * 4
        * 3;
    if expected_bytes > bytes.len() {
        bail!(
            "model config {cfg:?} needs {expected_bytes} bytes of tensors; the file has {}",
            bytes.len()
        );
    }
    if meta.titles.len() != cfg.vocab_size || meta.is_item.len() != cfg.vocab_size {
        bail!(
            "catalogue has {} titles for a vocabulary of {}",
            meta.titles.len(),
            cfg.vocab_size
        );
    }
    let shapes = Params::shapes(&cfg);
    let mut groups: Vec<Params> = Vec::new();
    for prefix in ["", "adam_m.", "adam_v."] {
        let mut p = Params::zeros(&cfg);
        for ((name, shape), dst) in TENSOR_NAMES.iter().zip(&shapes).zip(p.tensors_mut()) {
            *dst = read_tensor(&st, &format!("{prefix}{name}"), shape)?;
        }
        groups.push(p);
    }
    let v = groups.pop().unwrap_or_else(|| Params::zeros(&cfg));
    let m = groups.pop().unwrap_or_else(|| Params::zeros(&cfg));
    let params = groups.pop().unwrap_or_else(|| Params::zeros(&cfg));
    let optimizer = AdamW {
        cfg: meta.train.optimizer(),
        step: meta.optimizer_step,
        m,
        v,
    };
    let users = read_users(&st, &meta)?;
    Ok(SavedModel {
        users,
        state: TrainState {
            model: cfg,
            params,
            optimizer,
            history: meta.history.clone(),
        },
        meta,
    })
}

/// Reads a model file; errors name the file and what is wrong with it.
pub fn load(path: &Path) -> Result<SavedModel> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the model file", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("{}: not a usable seqrec model", path.display()))
}
