//! The model file: one safetensors file holding a `TrainedModel`: the
//! parameters, the optimiser's moments (so training can resume), the users'
//! histories, and as JSON metadata the model's spec (once), the training
//! settings and history and the catalogue. Written atomically (`files`), so
//! a crash never leaves half a model; read with every field checked, so a
//! bad file is an error, not a panic. The tensors are the spec's
//! (`Params::tensor_defs`: the embeddings and the tower's own, by the names
//! the tower gives them) and their optimiser state; an empty tensor the
//! model does not have is ignored, any other refused.
//!
//! This module sits above `train` (it saves what training returns) and
//! below `retrieval` (which loads what it saved). Inference reads a
//! `SavedModel`: the `model::Artifact` and the training's record as the
//! file's JSON, so `retrieval`, `eval`, `serve` and `export` need nothing of
//! `train`; `load` reads the whole `TrainedModel` for `--resume`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::{Catalog, DataSettings, UserHistories};
use crate::model::{Artifact, ModelSpec, Params, TensorDef};
use crate::text::{escaped, quoted};
use crate::train::optimizer::OptimizerState;
use crate::train::{EpochReport, TrainConfig, TrainedModel};

/// Marks a safetensors file as a seqrec model.
pub const FORMAT: &str = "seqrec-model";
/// 2: the model's spec is one `spec` record (version 1 spread it over
/// `model` and the training settings).
pub const FORMAT_VERSION: u32 = 2;
const META_KEY: &str = "seqrec";

/// Everything in a model file besides the tensors. The training's settings
/// and history are typed when written (`TrainConfig`, `EpochReport`) and
/// read as JSON values first, so a load for inference never interprets
/// them (`SavedModel`); `load` converts them for training.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModelMeta<Settings = TrainConfig, Epoch = EpochReport> {
    format: String,
    version: u32,
    spec: ModelSpec,
    train: Settings,
    history: Vec<Epoch>,
    optimizer_step: u64,
    dataset: String,
    titles: Vec<String>,
    is_item: Vec<bool>,
    item_keys: Option<Vec<String>>,
    /// The training data's users, by the id in their file; their histories
    /// are the `user_items` tensor, cut at `user_offsets`.
    user_keys: Vec<String>,
    best_epoch: Option<usize>,
    data: DataSettings,
}

/// The metadata as read: the training's part left as JSON.
type StoredMeta = ModelMeta<serde_json::Value, serde_json::Value>;

/// What training recorded about a model, as the file holds it: shown by
/// inference (`serve`'s `/v1/model`), never interpreted by it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingRecord {
    /// The training settings (`TrainConfig` as JSON).
    pub settings: serde_json::Value,
    /// One `EpochReport` a trained epoch, as JSON.
    pub history: Vec<serde_json::Value>,
    pub optimizer_step: u64,
    pub best_epoch: Option<usize>,
}

/// A model file read for inference: the model and its training's record,
/// without the optimiser's moments.
#[derive(Debug, Clone)]
pub struct SavedModel {
    pub artifact: Artifact,
    pub record: TrainingRecord,
}

/// Just enough of the metadata to say which version a file is.
#[derive(Deserialize)]
struct VersionProbe {
    format: String,
    version: u32,
}

/// What is wrong with a model file. The message holds the cause (the
/// fields are not `source`s, so a printed chain does not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: cannot read the model file: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: cannot write the model file: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a usable seqrec model: {reason}")]
    Invalid { path: PathBuf, reason: FormatError },
}

/// What is wrong with a model file's bytes (which field, what was expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

impl From<String> for FormatError {
    fn from(reason: String) -> Self {
        FormatError(reason)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Builds the file's bytes. Deterministic: the same model gives the same
/// bytes (one metadata key, so no hash-map ordering enters the header).
pub fn to_bytes(model: &TrainedModel) -> Result<Vec<u8>, FormatError> {
    let artifact = &model.artifact;
    // The spec's tensors only (`Params::tensor_defs`): a GRU model's file
    // holds no SASRec tensor and the other way round. A tensor without
    // values is not written (nor read).
    let defs = Params::tensor_defs(&artifact.spec);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (def, data) in defs.iter().zip(artifact.params.tensors()) {
        if !data.is_empty() {
            owned.push((def.name.to_string(), def.shape.clone(), f32_bytes(data)));
        }
    }
    // The optimiser's state by the names it gives (`adam_m.gru_kernel`): a
    // buffer has its tensor's shape.
    for (name, tensor, data) in model.optimizer.named_buffers() {
        owned.push((name, defs[tensor].shape.clone(), f32_bytes(data)));
    }
    let users = &artifact.users;
    let user_tensors = [
        ("user_items", users.items.len(), u32_bytes(&users.items)),
        (
            "user_offsets",
            users.offsets.len(),
            u32_bytes(&users.offsets),
        ),
    ];
    let views = owned
        .iter()
        .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .chain(
            user_tensors
                .iter()
                .map(|(n, len, b)| Ok((*n, TensorView::new(Dtype::U32, vec![*len], b)?))),
        )
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| format!("{e:?}"))?;
    let meta: ModelMeta = ModelMeta {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        spec: artifact.spec,
        train: model.config.clone(),
        history: model.history.clone(),
        optimizer_step: model.optimizer.step,
        dataset: artifact.dataset.clone(),
        titles: artifact.catalog.titles.clone(),
        is_item: artifact.catalog.is_item.clone(),
        item_keys: artifact.catalog.keys.clone(),
        user_keys: artifact.users.keys.clone(),
        best_epoch: model.best_epoch,
        data: artifact.data,
    };
    let json = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
    let meta = HashMap::from([(META_KEY.to_string(), json)]);
    Ok(safetensors::serialize(views, &Some(meta)).map_err(|e| format!("{e:?}"))?)
}

/// What a model file records of `model`'s training, as `load_for_inference`
/// reads it back: the settings and history as the file's JSON text reads
/// (an f32 written shortest reads back as the f64 of that text).
pub fn training_record(model: &TrainedModel) -> Result<TrainingRecord, FormatError> {
    fn as_file_reads<T: Serialize>(value: &T) -> Result<serde_json::Value, FormatError> {
        serde_json::to_string(value)
            .and_then(|text| serde_json::from_str(&text))
            .map_err(|e| FormatError(e.to_string()))
    }
    Ok(TrainingRecord {
        settings: as_file_reads(&model.config)?,
        history: model
            .history
            .iter()
            .map(as_file_reads)
            .collect::<Result<_, _>>()?,
        optimizer_step: model.optimizer.step,
        best_epoch: model.best_epoch,
    })
}

/// Writes the model atomically (see `files::write_atomically`).
pub fn save(path: &Path, model: &TrainedModel) -> Result<(), CheckpointError> {
    let bytes = to_bytes(model).map_err(|reason| CheckpointError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    crate::files::write_atomically(path, &bytes).map_err(|error| CheckpointError::Write {
        path: path.to_path_buf(),
        error,
    })
}

fn read_tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("tensor {name:?} is missing"))?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor {name:?}: expected F32, found {:?}",
            t.dtype()
        ));
    }
    if t.shape() != shape {
        return Err(format!(
            "tensor {name:?}: expected shape {:?}, found {}",
            shape,
            escaped(&format!("{:?}", t.shape()))
        ));
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("tensor {name:?} holds NaN or infinite values"));
    }
    Ok(v)
}

fn read_u32s(st: &SafeTensors, name: &str) -> Result<Vec<u32>, String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("tensor {name:?} is missing"))?;
    if t.dtype() != Dtype::U32 || t.shape().len() != 1 {
        return Err(format!(
            "tensor {name:?}: expected a U32 vector, found {:?} {}",
            t.dtype(),
            escaped(&format!("{:?}", t.shape()))
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Checks that the stored histories are well formed: offsets rise from 0 to
/// the item count, one more than the users, every id inside the vocabulary.
fn read_users(st: &SafeTensors, meta: &StoredMeta) -> Result<UserHistories, String> {
    let items = read_u32s(st, "user_items")?;
    let offsets = read_u32s(st, "user_offsets")?;
    let ok = offsets.len() == meta.user_keys.len() + 1
        && offsets.first() == Some(&0)
        && offsets.last().map(|&o| o as usize) == Some(items.len())
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && items.iter().all(|&i| (i as usize) < meta.spec.vocab_size);
    if !ok {
        return Err(format!(
            "the stored user histories are inconsistent ({} users, {} offsets, {} items)",
            meta.user_keys.len(),
            offsets.len(),
            items.len()
        ));
    }
    Ok(UserHistories {
        keys: meta.user_keys.clone(),
        offsets,
        items,
    })
}

/// Parses a model file's bytes, checking every field.
pub fn from_bytes(bytes: &[u8]) -> Result<TrainedModel, FormatError> {
    parse(bytes, Moments::Read)
        .and_then(Parsed::into_trained)
        .map_err(FormatError)
}

/// Whether a load reads the optimiser's moments: training resumes from
/// them; retrieval never reads them, and they are two of a model's three
/// copies of every table (512 MB of a 10^6-item model).
#[derive(Clone, Copy, PartialEq)]
enum Moments {
    Read,
    Skip,
}

/// A file's contents, checked: the optimiser's state (every tensor named
/// `{state}.{tensor}`) only when asked for, its shapes checked once the
/// optimiser that wrote it is known (`into_trained`).
struct Parsed {
    saved: SavedModel,
    optimizer_state: Option<StoredTensors>,
}

/// Tensors read from the file by name: their shape and values.
type StoredTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

impl Parsed {
    /// The whole model for training: the recorded settings and history
    /// typed again, the moments beside the parameters.
    fn into_trained(self) -> Result<TrainedModel, String> {
        let SavedModel { artifact, record } = self.saved;
        let invalid = |what: &str, e: serde_json::Error| {
            format!(
                "the seqrec metadata's {what} are not valid: {}",
                escaped(&e.to_string())
            )
        };
        let config: TrainConfig =
            serde_json::from_value(record.settings).map_err(|e| invalid("training settings", e))?;
        let history = record
            .history
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<EpochReport>, _>>()
            .map_err(|e| invalid("epoch reports", e))?;
        let mut stored = self
            .optimizer_state
            .ok_or_else(|| "the optimiser's state was not read".to_string())?;
        let mut optimizer = OptimizerState::new(config.optimizer(), &artifact.spec);
        optimizer.step = record.optimizer_step;
        for (name, shape) in optimizer.buffer_shapes(&artifact.spec) {
            let (found, values) = stored
                .remove(&name)
                .ok_or_else(|| format!("tensor {name:?} is missing"))?;
            if found != shape {
                return Err(format!(
                    "tensor {name:?}: expected shape {shape:?}, found {}",
                    escaped(&format!("{found:?}"))
                ));
            }
            optimizer.set_buffer(&name, values);
        }
        Ok(TrainedModel {
            artifact,
            optimizer,
            config,
            history,
            best_epoch: record.best_epoch,
        })
    }
}

/// The most optimiser steps a model file may record: 2^53, beyond any run
/// (a step a microsecond for 285 years), and where a count stops being
/// exact as the f64 AdamW's bias correction takes (one more step than
/// `u64::MAX` would wrap to 0 and divide by zero).
const MAX_OPTIMIZER_STEP: u64 = 1 << 53;

/// A renumbered catalogue's keys: one per embedding row, every item's its
/// own (an item's id is looked up by its key, and the answers carry it).
fn check_item_keys(keys: &[String], is_item: &[bool]) -> Result<(), String> {
    if keys.len() != is_item.len() {
        return Err(format!(
            "item_keys has {} keys for a vocabulary of {}",
            keys.len(),
            is_item.len()
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for (id, key) in keys.iter().enumerate() {
        if is_item[id] && !seen.insert(key.as_str()) {
            return Err(format!(
                "item_keys: the key {} is given to two items (the second is item {id})",
                quoted(key)
            ));
        }
    }
    Ok(())
}

fn parse(bytes: &[u8], moments: Moments) -> Result<Parsed, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        format!(
            "not a safetensors file (truncated or corrupt?): {}",
            escaped(&format!("{e:?}"))
        )
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("unreadable header: {}", escaped(&format!("{e:?}"))))?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            format!("a safetensors file, but not a seqrec model (no {META_KEY:?} metadata)")
        })?;
    // serde's messages quote the offending value, which is the file's.
    let invalid = |e: serde_json::Error| {
        format!(
            "the seqrec metadata is not valid: {}",
            escaped(&e.to_string())
        )
    };
    let probe: VersionProbe = serde_json::from_str(meta_json).map_err(invalid)?;
    if probe.format != FORMAT {
        return Err(format!(
            "metadata format {}: expected {FORMAT:?}",
            quoted(&probe.format)
        ));
    }
    if probe.version != FORMAT_VERSION {
        return Err(format!(
            "model file version {}: this seqrec reads version {FORMAT_VERSION}{}",
            probe.version,
            if probe.version < FORMAT_VERSION {
                " (written by an older seqrec: train it again)"
            } else {
                " (written by a newer seqrec)"
            }
        ));
    }
    let meta: StoredMeta = serde_json::from_str(meta_json).map_err(invalid)?;
    let spec = meta.spec;
    // Checked before anything is allocated from it: an edited header must
    // not make the reader ask for terabytes.
    spec.validate(crate::data::table::MAX_ITEM_ID as usize + 1)
        .map_err(|e| format!("spec: {e}"))?;
    let defs = Params::tensor_defs(&spec);
    let expected_bytes = defs.iter().map(|t| t.size()).sum::<usize>() * 4 * 3;
    if expected_bytes > bytes.len() {
        return Err(format!(
            "spec {spec:?} needs {expected_bytes} bytes of tensors; the file has {}",
            bytes.len()
        ));
    }
    if meta.titles.len() != spec.vocab_size || meta.is_item.len() != spec.vocab_size {
        return Err(format!(
            "catalogue has {} titles for a vocabulary of {}",
            meta.titles.len(),
            spec.vocab_size
        ));
    }
    if let Some(keys) = &meta.item_keys {
        check_item_keys(keys, &meta.is_item)?;
    }
    if meta.optimizer_step > MAX_OPTIMIZER_STEP {
        return Err(format!(
            "optimizer_step: expected at most {MAX_OPTIMIZER_STEP} (no run takes more steps), \
             found {}",
            meta.optimizer_step
        ));
    }
    let mut params = Params::zeros(&spec);
    for (def, dst) in defs.iter().zip(params.tensors_mut()) {
        if def.size() > 0 {
            *dst = read_tensor(&st, def.name, &def.shape)?;
        }
    }
    check_tensor_names(&st, &spec, &defs)?;
    let optimizer_state = match moments {
        Moments::Read => Some(read_optimizer_state(&st)?),
        Moments::Skip => None,
    };
    let users = read_users(&st, &meta)?;
    Ok(Parsed {
        saved: SavedModel {
            artifact: Artifact {
                spec,
                params,
                dataset: meta.dataset,
                catalog: Catalog {
                    titles: meta.titles,
                    is_item: meta.is_item,
                    keys: meta.item_keys,
                },
                users,
                data: meta.data,
            },
            record: TrainingRecord {
                settings: meta.train,
                history: meta.history,
                optimizer_step: meta.optimizer_step,
                best_epoch: meta.best_epoch,
            },
        },
        optimizer_state,
    })
}

/// Whether a tensor of the file is optimiser state (`adam_m.gru_kernel`):
/// the model's own tensors and the users' have no dot in their names.
fn is_optimizer_state(name: &str) -> bool {
    name.contains('.')
}

/// The histories' tensors (`read_users`).
const USER_TENSORS: [&str; 2] = ["user_items", "user_offsets"];

/// Every tensor of the file must be one of the model's (`defs`), a user
/// tensor, or optimiser state of one of the model's (`{state}.{tensor}`;
/// `into_trained` reads the states its optimiser keeps). A
/// tensor of no values that is none of these is ignored: a tensor the
/// model does not have, as a file may list another tower's empty tensors.
/// Any other is refused: the file is not the model its spec says. Read
/// from the header alone, so a load without the moments checks them too.
fn check_tensor_names(
    st: &SafeTensors,
    spec: &ModelSpec,
    defs: &[TensorDef],
) -> Result<(), String> {
    for (name, info) in st.tensors() {
        let tensor = name.split_once('.').map_or(name.as_str(), |(_, t)| t);
        let known = defs.iter().any(|t| t.name == tensor)
            || (!is_optimizer_state(&name) && USER_TENSORS.contains(&name.as_str()));
        if !known && info.shape().iter().product::<usize>() > 0 {
            return Err(format!(
                "tensor {} of shape {}: a {} model has no such tensor",
                quoted(&name),
                escaped(&format!("{:?}", info.shape())),
                format!("{:?}", spec.tower.kind()).to_lowercase()
            ));
        }
    }
    Ok(())
}

/// Every optimiser-state tensor of the file, F32 and finite, by name.
fn read_optimizer_state(st: &SafeTensors) -> Result<StoredTensors, String> {
    let mut out = HashMap::new();
    for name in st.names() {
        if is_optimizer_state(name) {
            let shape = st
                .tensor(name)
                .map_err(|_| format!("tensor {name:?} is unreadable"))?
                .shape()
                .to_vec();
            let values = read_tensor(st, name, &shape)?;
            out.insert(name.to_string(), (shape, values));
        }
    }
    Ok(out)
}

/// A model file opened for reading, and its length: a regular file only.
/// A FIFO or a device at the path (say `/dev/zero`) is refused at once
/// instead of blocking or reading without end; the open does not wait for
/// a FIFO's writer.
fn open_model_file(path: &Path) -> std::io::Result<(std::fs::File, FileStamp)> {
    let (file, meta) = crate::files::open_regular_with_metadata(path)?;
    Ok((file, FileStamp::of(&meta)))
}

/// Which file a model was read from, as it was then: its device and inode,
/// length and modification time. A model read for inference leaves the
/// optimiser's moments in that file; `copy_model_file` saves the model
/// again by copying the file, once it has checked the stamp still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        FileStamp {
            device,
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// The bytes of a model file, read to the length it had when opened and no
/// further. A file longer than its safetensors header says is refused by
/// `parse`.
fn read_model_file(path: &Path) -> std::io::Result<(Vec<u8>, FileStamp)> {
    use std::io::Read;
    let (file, stamp) = open_model_file(path)?;
    let mut bytes = Vec::with_capacity(stamp.len as usize);
    file.take(stamp.len).read_to_end(&mut bytes)?;
    Ok((bytes, stamp))
}

/// `read_model_file` less the optimiser's moments: the header and every
/// other tensor are read into a zeroed buffer of the file's length, and the
/// moments' ranges stay zero, never read nor touched (a fresh zeroed
/// allocation of this size costs no pages until written). `parse` with
/// `Moments::Skip` checks the header against the length as before.
#[cfg(unix)]
fn read_model_file_without_moments(path: &Path) -> std::io::Result<(Vec<u8>, FileStamp)> {
    use std::os::unix::fs::FileExt;
    let (file, stamp) = open_model_file(path)?;
    let len = stamp.len;
    let mut bytes = vec![0u8; len as usize];
    let head = bytes.len().min(8);
    file.read_exact_at(&mut bytes[..head], 0)?;
    let header_len = match bytes.get(..8) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => return Ok((bytes, stamp)),
    };
    // A header longer than the file: `parse` says so.
    let Some(stop) = header_len.checked_add(8).filter(|&s| s <= len) else {
        return Ok((bytes, stamp));
    };
    let stop = stop as usize;
    file.read_exact_at(&mut bytes[8..stop], 8)?;
    let Ok((_, header)) = SafeTensors::read_metadata(&bytes) else {
        return Ok((bytes, stamp));
    };
    for (name, info) in header.tensors() {
        if is_optimizer_state(&name) {
            continue;
        }
        let (start, end) = (stop + info.data_offsets.0, stop + info.data_offsets.1);
        file.read_exact_at(&mut bytes[start..end], start as u64)?;
    }
    Ok((bytes, stamp))
}

#[cfg(not(unix))]
fn read_model_file_without_moments(path: &Path) -> std::io::Result<(Vec<u8>, FileStamp)> {
    read_model_file(path)
}

/// Reads a model file; errors name the file and what is wrong with it.
pub fn load(path: &Path) -> Result<TrainedModel, CheckpointError> {
    load_stamped(path).map(|(model, _)| model)
}

/// `load`, with the stamp of the file it read: a training that continues
/// a model read for inference reads the same file again, and checks it is
/// still the one read then.
pub fn load_stamped(path: &Path) -> Result<(TrainedModel, FileStamp), CheckpointError> {
    load_with(path, Moments::Read, Parsed::into_trained)
}

/// `load` for retrieval (`recommend`, `serve`, `evaluate`, `export`): the
/// optimiser's moments are left unread, and the training's record is kept
/// as the file's JSON; everything else is read and checked as `load` does.
pub fn load_for_inference(path: &Path) -> Result<SavedModel, CheckpointError> {
    load_for_inference_stamped(path).map(|(model, _)| model)
}

/// `load_for_inference`, with the stamp of the file it read, which
/// `copy_model_file` needs to save the model again.
pub fn load_for_inference_stamped(path: &Path) -> Result<(SavedModel, FileStamp), CheckpointError> {
    load_with(path, Moments::Skip, |parsed| Ok(parsed.saved))
}

/// Saves a model read by `load_for_inference_stamped` from `from`: the
/// file holds what the model in memory does and the optimiser's moments it
/// left unread, so the model is saved by copying the file (atomically, as
/// `save` writes), once the stamp shows the file is still the one read. A
/// destination that is that file already holds the model: nothing is
/// written.
pub fn copy_model_file(from: &Path, stamp: &FileStamp, to: &Path) -> Result<(), CheckpointError> {
    use std::io::Read;
    let read_error = |error| CheckpointError::Read {
        path: from.to_path_buf(),
        error,
    };
    let (file, now) = open_model_file(from).map_err(read_error)?;
    if now != *stamp {
        return Err(CheckpointError::Invalid {
            path: from.to_path_buf(),
            reason: FormatError(
                "the model file changed since the model was read from it, and saving a \
                 model read for inference copies that file (it holds the optimiser's \
                 state, which was not read): load the model again, then save it"
                    .into(),
            ),
        });
    }
    if let Ok(meta) = std::fs::metadata(to) {
        if FileStamp::of(&meta) == *stamp {
            return Ok(());
        }
    }
    // Streamed, not read whole: a model of millions of items is gigabytes.
    let write_error = |error| CheckpointError::Write {
        path: to.to_path_buf(),
        error,
    };
    let mut tmp = crate::files::temp_file_beside(to).map_err(write_error)?;
    let copied = std::io::copy(&mut file.take(stamp.len), tmp.as_file_mut()).map_err(read_error)?;
    if copied != stamp.len {
        return Err(CheckpointError::Invalid {
            path: from.to_path_buf(),
            reason: FormatError(format!(
                "the model file ended after {copied} of its {} bytes while it was copied",
                stamp.len
            )),
        });
    }
    crate::files::persist(tmp, to).map_err(write_error)
}

fn load_with<T>(
    path: &Path,
    moments: Moments,
    finish: fn(Parsed) -> Result<T, String>,
) -> Result<(T, FileStamp), CheckpointError> {
    let read = match moments {
        Moments::Read => read_model_file(path),
        Moments::Skip => read_model_file_without_moments(path),
    };
    let (bytes, stamp) = read.map_err(|error| CheckpointError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&bytes, moments)
        .and_then(finish)
        .map(|model| (model, stamp))
        .map_err(|reason| CheckpointError::Invalid {
            path: path.to_path_buf(),
            reason: FormatError(reason),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelOptions, Padding};

    fn small_model() -> TrainedModel {
        let spec = ModelOptions {
            embedding_dim: 4,
            context_len: 3,
            padding: Padding::Left,
            mask_padding: true,
            ..ModelOptions::default()
        }
        .spec(6);
        let config = TrainConfig::default();
        TrainedModel {
            artifact: Artifact {
                spec,
                params: Params::init(&spec, config.seed),
                dataset: "test".into(),
                catalog: Catalog {
                    titles: (0..6).map(|i| format!("item {i}")).collect(),
                    is_item: (0..6).map(|i| i > 0).collect(),
                    keys: None,
                },
                users: UserHistories {
                    keys: vec!["u1".into()],
                    offsets: vec![0, 2],
                    items: vec![1, 2],
                },
                data: DataSettings::default(),
            },
            optimizer: OptimizerState::new(config.optimizer(), &spec),
            config,
            history: Vec::new(),
            best_epoch: None,
        }
    }

    /// Rewrites a metadata value in place (same length, so the header's
    /// offsets stay valid). The metadata is JSON inside a JSON string, so
    /// its quotes appear escaped.
    fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        // Searched in the bytes: a lossy text view would shift offsets past
        // any non-UTF-8 byte (the header's length prefix has some).
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .expect("the metadata holds the text");
        let mut out = bytes.to_vec();
        out[at..at + to.len()].copy_from_slice(to.as_bytes());
        out
    }

    #[test]
    fn only_a_regular_model_file_is_read_and_only_as_long_as_its_header_says() {
        type Loader = fn(&Path) -> Result<(), CheckpointError>;
        let loaders: [Loader; 2] = [
            |path| load(path).map(drop),
            |path| load_for_inference(path).map(drop),
        ];
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("model.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let good = to_bytes(&small_model()).unwrap();
        let file = dir.path().join("m.safetensors");
        for load in loaders {
            // A device that never ends: refused at once, nothing read.
            let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
            // A FIFO with no writer: refused without blocking.
            let err = load(&fifo).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
            // A folder.
            let err = load(dir.path()).unwrap_err().to_string();
            assert!(err.contains("model file"), "{err}");
            std::fs::write(&file, &good).unwrap();
            assert!(load(&file).is_ok());
            // Bytes appended after a valid model, or the model cut short
            // (at its end, inside the header, inside the length prefix):
            // refused, whether or not the loader reads every tensor.
            let mut longer = good.clone();
            longer.extend_from_slice(&[0u8; 4096]);
            for bad in [
                &longer[..],
                &good[..good.len() - 4],
                &good[..20],
                &good[..5],
            ] {
                std::fs::write(&file, bad).unwrap();
                assert!(
                    load(&file).is_err(),
                    "{} bytes of {}",
                    bad.len(),
                    good.len()
                );
            }
        }
    }

    #[test]
    fn the_spec_is_saved_once_and_read_back_whole() {
        let model = small_model();
        let bytes = to_bytes(&model).unwrap();
        let back = from_bytes(&bytes).unwrap();
        assert_eq!(back.artifact.spec, model.artifact.spec);
        assert_eq!(back.artifact.params, model.artifact.params);
        assert_eq!(back.artifact.users, model.artifact.users);
        // One record: the training settings no longer carry the model's.
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches(r#"\"context_len\""#).count(), 1, "{text}");
        assert_eq!(to_bytes(&back).unwrap(), bytes, "same model, same bytes");
        // A GRU model's file holds no SASRec tensor (it reads as before).
        assert!(!text.contains("sasrec_weights"));
    }

    #[test]
    fn a_load_for_inference_reads_everything_but_the_moments() {
        let mut model = small_model();
        // Moments unlike the parameters, so a mix-up would show.
        let spec = model.artifact.spec;
        let table = spec.vocab_size * spec.dim;
        let m: Vec<f32> = (0..table).map(|i| i as f32).collect();
        let mut v = vec![0.0; table];
        v[3] = 7.0;
        assert!(model.optimizer.set_buffer("adam_m.query_embedding", m));
        assert!(model.optimizer.set_buffer("adam_v.candidate_embedding", v));
        assert!(!model.optimizer.set_buffer("adam_q.gru_kernel", vec![]));
        model.optimizer.step = 12;
        model.history.push(EpochReport {
            epoch: 1,
            loss: 2.5,
            val_loss: 2.75,
            hr10: Some(0.125),
            ndcg10: None,
            valid_hr10: None,
            valid_ndcg10: None,
            learning_rate: 0.001,
            seconds: 0.0,
            step_ms_median: 0.0,
        });
        model.best_epoch = Some(1);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.safetensors");
        save(&file, &model).unwrap();
        let whole = load(&file).unwrap();
        assert_eq!(whole.optimizer, model.optimizer);
        assert_eq!(whole.history, model.history);
        assert_eq!(whole.config, model.config);
        let SavedModel {
            artifact: served,
            record,
        } = load_for_inference(&file).unwrap();
        assert_eq!(served.spec, model.artifact.spec);
        assert_eq!(served.params, model.artifact.params);
        assert_eq!(served.users, model.artifact.users);
        assert_eq!(served.catalog.titles, model.artifact.catalog.titles);
        assert_eq!(served.catalog.is_item, model.artifact.catalog.is_item);
        // The record is the file's JSON, unchanged.
        assert_eq!(record.optimizer_step, 12);
        assert_eq!(record.best_epoch, Some(1));
        // As the file's text reads (an f32 written shortest reads back as
        // the f64 of that text, not of the f32).
        let as_read = |v: String| serde_json::from_str::<serde_json::Value>(&v).unwrap();
        assert_eq!(
            record.history,
            vec![as_read(serde_json::to_string(&model.history[0]).unwrap())]
        );
        assert_eq!(
            record.settings,
            as_read(serde_json::to_string(&model.config).unwrap())
        );
        assert_eq!(record, training_record(&model).unwrap());
        // A damaged parameter is still refused.
        let bytes = to_bytes(&model).unwrap();
        let broken = edit(&bytes, "\"candidate_embedding\"", "\"candidate_embeddinX\"");
        std::fs::write(&file, broken).unwrap();
        let err = load_for_inference(&file).unwrap_err().to_string();
        assert!(err.contains("candidate_embedding"), "{err}");
    }

    #[test]
    fn a_model_read_for_inference_is_saved_by_copying_its_file_while_unchanged() {
        let mut model = small_model();
        model.optimizer.step = 3;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.safetensors");
        save(&file, &model).unwrap();
        let original = std::fs::read(&file).unwrap();
        let (_, stamp) = load_for_inference_stamped(&file).unwrap();
        // The copy is the file, moments and all.
        let copy = dir.path().join("copy.safetensors");
        copy_model_file(&file, &stamp, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), original);
        assert_eq!(load(&copy).unwrap().optimizer, model.optimizer);
        // Saved onto itself: nothing to write.
        copy_model_file(&file, &stamp, &file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), original);
        // The file replaced since (another training wrote it): refused,
        // and the destination untouched.
        model.optimizer.step = 4;
        save(&file, &model).unwrap();
        let err = copy_model_file(&file, &stamp, &copy)
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed since the model was read"), "{err}");
        assert_eq!(std::fs::read(&copy).unwrap(), original);
        // Gone: the read error names the file.
        std::fs::remove_file(&file).unwrap();
        let err = copy_model_file(&file, &stamp, &copy)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.safetensors"), "{err}");
    }

    #[test]
    fn a_sasrec_model_is_read_back_whole_without_gru_tensors() {
        let mut model = small_model();
        let spec = &mut model.artifact.spec;
        spec.tower = crate::model::TowerSpec::SasRec {
            blocks: 2,
            heads: 2,
            activation: crate::model::Activation::Relu,
        };
        let spec = *spec;
        model.artifact.params = Params::init(&spec, model.config.seed);
        model.optimizer = OptimizerState::new(model.config.optimizer(), &spec);
        let bytes = to_bytes(&model).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("sasrec_weights") && !text.contains("gru_kernel"));
        let back = from_bytes(&bytes).unwrap();
        assert_eq!(back.artifact.spec, model.artifact.spec);
        assert!(!crate::model::sasrec::weights(&back.artifact.params.tower).is_empty());
        assert_eq!(back.artifact.params, model.artifact.params);
        assert_eq!(back.optimizer, model.optimizer);
    }

    /// `bytes` (a model file) with the tensors `extra` added, zero.
    fn with_tensors(bytes: &[u8], extra: &[(&str, Vec<usize>)]) -> Vec<u8> {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let zeros: Vec<Vec<u8>> = extra
            .iter()
            .map(|(_, shape)| vec![0u8; 4 * shape.iter().product::<usize>()])
            .collect();
        let mut views = st.tensors();
        for ((name, shape), data) in extra.iter().zip(&zeros) {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).unwrap();
            views.push((name.to_string(), view));
        }
        safetensors::serialize(views, header.metadata()).unwrap()
    }

    /// A file may list tensors of no values the model does not have (the
    /// other tower's, as a file that named every tower's tensors would):
    /// they are ignored, by both loaders. One with values, or a tensor of
    /// the model with another shape, is refused by name.
    #[test]
    fn another_tower_s_empty_tensors_are_ignored_and_any_other_stranger_refused() {
        let gru = small_model();
        let mut sasrec = small_model();
        sasrec.artifact.spec.tower = crate::model::TowerSpec::SasRec {
            blocks: 1,
            heads: 2,
            activation: crate::model::Activation::Relu,
        };
        let spec = sasrec.artifact.spec;
        sasrec.artifact.params = Params::init(&spec, 3);
        sasrec.optimizer = OptimizerState::new(sasrec.config.optimizer(), &spec);
        let gru_names = [
            "gru_kernel",
            "gru_recurrent_kernel",
            "gru_input_bias",
            "gru_recurrent_bias",
        ];
        let with_moments = |names: &[&'static str]| -> Vec<(String, Vec<usize>)> {
            ["", "adam_m.", "adam_v."]
                .iter()
                .flat_map(|prefix| names.iter().map(move |n| (format!("{prefix}{n}"), vec![0])))
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.safetensors");
        for (model, other) in [
            (&gru, with_moments(&["sasrec_weights"])),
            (&sasrec, with_moments(&gru_names)),
        ] {
            let extra: Vec<(&str, Vec<usize>)> =
                other.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
            let bytes = with_tensors(&to_bytes(model).unwrap(), &extra);
            let back = from_bytes(&bytes).unwrap();
            assert_eq!(back.artifact.params, model.artifact.params);
            assert_eq!(back.optimizer, model.optimizer);
            std::fs::write(&file, &bytes).unwrap();
            let served = load_for_inference(&file).unwrap();
            assert_eq!(served.artifact.params, model.artifact.params);
            // Written again, the empty tensors are gone.
            assert_eq!(to_bytes(&back).unwrap(), to_bytes(model).unwrap());
        }
        let gru_bytes = to_bytes(&gru).unwrap();
        for stranger in ["sasrec_weights", "adam_m.sasrec_weights", "embedding"] {
            let bytes = with_tensors(&gru_bytes, &[(stranger, vec![3])]);
            let err = from_bytes(&bytes).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{stranger:?} of shape [3]"))
                    && err.contains("a gru model has no such tensor"),
                "{err}"
            );
            std::fs::write(&file, &bytes).unwrap();
            let err = load_for_inference(&file).unwrap_err().to_string();
            assert!(err.contains(stranger), "{err}");
        }
        // The model's own tensor, empty: refused for its shape.
        let sasrec_bytes = to_bytes(&sasrec).unwrap();
        let st = SafeTensors::deserialize(&sasrec_bytes).unwrap();
        let views: Vec<(String, TensorView)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != "sasrec_weights")
            .collect();
        let (_, header) = SafeTensors::read_metadata(&sasrec_bytes).unwrap();
        let without = safetensors::serialize(views, header.metadata()).unwrap();
        let bytes = with_tensors(&without, &[("sasrec_weights", vec![0])]);
        let err = from_bytes(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("\"sasrec_weights\": expected shape [") && err.contains("found [0]"),
            "{err}"
        );
    }

    #[test]
    fn old_versions_and_edited_headers_are_refused_clearly() {
        let bytes = to_bytes(&small_model()).unwrap();
        let v1 = edit(&bytes, r#"\"version\":2"#, r#"\"version\":1"#);
        let err = from_bytes(&v1).unwrap_err().to_string();
        assert!(
            err.contains("version 1") && err.contains("older seqrec"),
            "{err}"
        );
        // Sizes are checked before anything is allocated from them.
        let bigger = edit(&bytes, r#"\"dim\":4,"#, r#"\"dim\":9,"#);
        let err = from_bytes(&bigger).unwrap_err().to_string();
        assert!(err.contains("bytes of tensors"), "{err}");
        let zero = edit(&bytes, r#"\"dim\":4,"#, r#"\"dim\":0,"#);
        let err = from_bytes(&zero).unwrap_err().to_string();
        assert!(err.contains("embedding_dim"), "{err}");
        let other_vocab = edit(&bytes, r#"\"vocab_size\":6,"#, r#"\"vocab_size\":7,"#);
        let err = from_bytes(&other_vocab).unwrap_err().to_string();
        assert!(err.contains("6 titles for a vocabulary of 7"), "{err}");
        let bad_padding = edit(&bytes, r#"\"left\""#, r#"\"up!!\""#);
        assert!(from_bytes(&bad_padding).is_err());
        let mut endless = small_model();
        endless.optimizer.step = u64::MAX;
        let err = from_bytes(&to_bytes(&endless).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("optimizer_step: expected at most 9007199254740992"),
            "{err}"
        );
    }

    #[test]
    fn item_keys_must_name_every_row_once() {
        let mut model = small_model();
        let keys: Vec<String> = ["", "a", "b", "c", "d", "e"].map(String::from).into();
        model.artifact.catalog.keys = Some(keys.clone());
        let bytes = to_bytes(&model).unwrap();
        assert!(from_bytes(&bytes).is_ok());
        // Fewer keys than rows: items without a key answered "" before.
        let short = edit(&bytes, r#",\"d\",\"e\"]"#, "]            ");
        let err = from_bytes(&short).unwrap_err().to_string();
        assert!(
            err.contains("item_keys has 4 keys for a vocabulary of 6"),
            "{err}"
        );
        let twice = edit(&bytes, r#"\"d\""#, r#"\"a\""#);
        let err = from_bytes(&twice).unwrap_err().to_string();
        assert!(
            err.contains(r#"item_keys: the key "a" is given to two items (the second is item 4)"#),
            "{err}"
        );
    }

    /// A safetensors file without tensors whose seqrec metadata is `json`.
    fn with_metadata(json: &str) -> Vec<u8> {
        let meta = HashMap::from([(META_KEY.to_string(), json.to_string())]);
        let none: Vec<(&str, TensorView)> = Vec::new();
        safetensors::serialize(none, &Some(meta)).unwrap()
    }

    #[test]
    fn values_from_the_file_are_bounded_and_escaped_in_messages() {
        let huge = format!("\u{1b}]0;owned\u{7}{}", "x".repeat(1_000_000));
        let cases = [
            // The format string is echoed by seqrec's own message.
            serde_json::json!({ "format": huge, "version": 2 }).to_string(),
            // A value serde quotes in its error (an unknown variant).
            serde_json::json!({ "format": FORMAT, "version": "v" }).to_string(),
        ];
        let mut unknown_variant = serde_json::to_value(small_model_meta()).unwrap();
        unknown_variant["spec"]["padding"] = serde_json::Value::String(huge.clone());
        for json in cases.into_iter().chain([unknown_variant.to_string()]) {
            let err = from_bytes(&with_metadata(&json)).unwrap_err().to_string();
            assert!(err.len() < 400, "{} bytes: {}", err.len(), &err[..400]);
            assert!(!err.chars().any(|c| c.is_control()), "{err:?}");
        }
    }

    fn small_model_meta() -> ModelMeta {
        let model = small_model();
        let artifact = &model.artifact;
        ModelMeta {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            spec: artifact.spec,
            train: model.config.clone(),
            history: Vec::new(),
            optimizer_step: 0,
            dataset: artifact.dataset.clone(),
            titles: artifact.catalog.titles.clone(),
            is_item: artifact.catalog.is_item.clone(),
            item_keys: None,
            user_keys: artifact.users.keys.clone(),
            best_epoch: None,
            data: artifact.data,
        }
    }
}
