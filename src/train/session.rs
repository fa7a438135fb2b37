//! A whole training run in the library: from a dataset and settings (and
//! optionally a model to resume) to a `TrainedModel`, with events for a
//! caller to show progress. The command line only parses, calls and prints.

use std::ops::ControlFlow;

use crate::data::{DataError, DataSettings, Dataset, ExampleSet, Sequences, UserHistories};
use crate::model::{Artifact, ModelSpec, Params};

use super::{
    fit, optimizer::OptimizerState, EpochReport, Event, MetricsHook, SettingError, Settings,
    Stopped, TrainConfig, TrainData, TrainState,
};

/// A trained model and its training: the `Artifact` inference reads, and
/// what training alone needs to go on (the optimiser's state, the epochs'
/// history, the settings). What a model file holds (`checkpoint`).
#[derive(Debug, Clone)]
pub struct TrainedModel {
    pub artifact: Artifact,
    /// The training settings; `epochs` is the total trained so far.
    pub config: TrainConfig,
    pub optimizer: OptimizerState,
    pub history: Vec<EpochReport>,
    /// With a validation split: the epoch whose parameters these are (the
    /// history goes on to the last epoch run).
    pub best_epoch: Option<usize>,
}

impl TrainedModel {
    /// The settings a run continuing this model starts from, before any
    /// preset, config file or flag: the saved ones, with a fresh count of
    /// epochs (the saved count is the total trained so far).
    pub fn settings_to_continue(&self) -> Settings {
        Settings {
            model: self.artifact.spec.options(),
            train: TrainConfig {
                epochs: TrainConfig::default().epochs,
                ..self.config.clone()
            },
        }
    }

    /// The state the training loop goes on from (`--resume`).
    fn into_state(self) -> TrainState {
        TrainState {
            params: self.artifact.params,
            optimizer: self.optimizer,
            history: self.history,
        }
    }
}

/// Why a run could not train.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid setting: {0}")]
    Setting(#[from] SettingError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(
        "{origin}: no training examples (every user has fewer than {min_sequence_len} ratings?)"
    )]
    NoExamples {
        origin: String,
        min_sequence_len: usize,
    },
    #[error("resume: {data} is not the data the model was trained on ({trained_on}): its catalogue differs")]
    OtherCatalogue { data: String, trained_on: String },
    #[error("resume: the model was trained with {field} = {was}; it cannot continue with {now}")]
    OtherSpec {
        field: &'static str,
        was: String,
        now: String,
    },
    /// The model's tables would not fit in memory: refused before any is
    /// allocated (an allocation that fails aborts the process).
    #[error(
        "the model needs at least {needed} bytes ({:.1} GiB) for its {vocab_size} x {dim} \
         embedding tables and the optimiser's state, beyond the {limit} bytes ({:.1} GiB) \
         allowed, three quarters of the memory this process may use (the machine's, \
         `ulimit -v` or the container's limit); use a smaller `embedding_dim` \
         or fewer item ids (`renumber_items` numbers sparse MovieLens ids 1..N)",
        *needed as f64 / GIB,
        *limit as f64 / GIB
    )]
    OutOfMemory {
        needed: u64,
        limit: u64,
        vocab_size: usize,
        dim: usize,
    },
    #[error(transparent)]
    Threads(#[from] crate::workers::ThreadsError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// A finished run: the model, the examples it was trained and tested on,
/// and the worker threads (for evaluating it the same way).
pub struct Session {
    pub model: TrainedModel,
    pub seqs: Sequences,
    pub train: ExampleSet,
    pub valid: ExampleSet,
    pub test: ExampleSet,
    pub pool: rayon::ThreadPool,
    pub threads: usize,
}

const GIB: f64 = (1u64 << 30) as f64;

/// The bytes a model of `spec` holds while it trains: the parameters and
/// the optimiser's two moments, three copies of every table (saturating:
/// the product can overflow only when it is far too large anyway).
pub fn training_bytes(spec: &ModelSpec) -> u64 {
    Params::tensor_defs(spec)
        .iter()
        .map(|t| {
            t.shape
                .iter()
                .fold(1u64, |n, &d| n.saturating_mul(d as u64))
        })
        .fold(0u64, u64::saturating_add)
        .saturating_mul(4 * 3)
}

/// The memory this process may use, in bytes: the least of the machine's
/// physical memory, the address-space limit (`ulimit -v`) and the control
/// group's limit (a container's), where the system says.
pub fn usable_memory() -> Option<u64> {
    [physical_memory(), address_space_limit(), cgroup_limit()]
        .into_iter()
        .flatten()
        .min()
}

fn address_space_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0
            && lim.rlim_cur != libc::RLIM_INFINITY
        {
            // rlim_t is u64 on Linux, not on every unix.
            #[allow(clippy::unnecessary_cast)]
            return Some(lim.rlim_cur as u64);
        }
    }
    None
}

/// The least of cgroup v2's `memory.max` (or v1's `memory.limit_in_bytes`)
/// over this process's group and the groups above it: a limit set on a
/// parent (a systemd slice, a container) binds its children too. "max", or
/// v1's huge sentinel, is no limit.
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        return least_limit_up(std::path::Path::new(root), path, file);
    }
    None
}

/// The least limit in `file` of the group at `path` under `root` and of
/// each group above it.
fn least_limit_up(root: &std::path::Path, path: &str, file: &str) -> Option<u64> {
    let mut group = root.join(path.trim_start_matches('/'));
    let mut least = None;
    loop {
        let limit = std::fs::read_to_string(group.join(file))
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok())
            .filter(|&b| b < 1 << 60);
        least = match (least, limit) {
            (Some(a), Some(b)) => Some(u64::min(a, b)),
            (a, b) => a.or(b),
        };
        if group == root || !group.pop() || !group.starts_with(root) {
            return least;
        }
    }
}

/// This machine's physical memory in bytes, where the system says.
pub fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return Some((pages as u64).saturating_mul(page as u64));
        }
    }
    None
}

/// Refuses a model whose training state would take more than three
/// quarters of `memory` (unknown: not checked). The rest is the batches',
/// the data's and the system's.
pub fn check_memory(spec: &ModelSpec, memory: Option<u64>) -> Result<(), TrainError> {
    let Some(memory) = memory else {
        return Ok(());
    };
    let needed = training_bytes(spec);
    let limit = memory / 4 * 3;
    if needed > limit {
        return Err(TrainError::OutOfMemory {
            needed,
            limit,
            vocab_size: spec.vocab_size,
            dim: spec.dim,
        });
    }
    Ok(())
}

/// Trains on `dataset` (read with `data`) as `settings` say, from scratch or
/// continuing `resume` (whose spec the settings must reproduce: a model's
/// maths cannot change half-way). `metrics` ranks the examples between
/// epochs (validation, `eval_every`).
pub fn run(
    dataset: &Dataset,
    data: DataSettings,
    settings: &Settings,
    resume: Option<TrainedModel>,
    metrics: Option<MetricsHook>,
    on_event: &mut (dyn FnMut(Event) -> ControlFlow<()> + Send),
) -> Result<Session, TrainError> {
    settings.validate()?;
    let cfg = &settings.train;
    let spec = settings.model.spec(dataset.catalog.vocab_size());
    let seqs = Sequences::build(&dataset.interactions, data.min_sequence_len)?;
    let (train, valid, test) = if cfg.validation {
        seqs.split_last_two()
    } else {
        let (train, test) = seqs.split_last();
        (train, ExampleSet::default(), test)
    };
    if train.is_empty() {
        return Err(TrainError::NoExamples {
            origin: dataset.origin.clone(),
            min_sequence_len: data.min_sequence_len,
        });
    }
    let mut state = match resume {
        Some(prev) => {
            let trained = &prev.artifact;
            if trained.catalog.titles != dataset.catalog.titles
                || trained.catalog.keys != dataset.catalog.keys
            {
                return Err(TrainError::OtherCatalogue {
                    data: dataset.origin.clone(),
                    trained_on: trained.dataset.clone(),
                });
            }
            if let Some((field, was, now)) = trained.spec.differences(&spec).into_iter().next() {
                return Err(TrainError::OtherSpec { field, was, now });
            }
            let mut state = prev.into_state();
            state.optimizer.switch_to(cfg.optimizer(), &spec);
            state
        }
        None => {
            check_memory(&spec, usable_memory())?;
            TrainState::new(&spec, cfg)
        }
    };
    let (pool, threads) = crate::workers::pool("threads", cfg.threads)?;
    let start = on_event(Event::Start {
        train_examples: train.len(),
        test_examples: test.len(),
        steps: super::training_rows(&spec, cfg, &seqs, &train)
            .len()
            .div_ceil(cfg.batch_size),
        threads,
    });
    if start.is_break() {
        return Err(Stopped::Interrupted { epoch: 0, step: 0 }.into());
    }
    let examples = TrainData {
        seqs: &seqs,
        train: &train,
        valid: &valid,
        test: &test,
    };
    let outcome = pool.install(|| {
        fit(
            &spec, &mut state, &examples, cfg, threads, metrics, on_event,
        )
    })?;
    let users = UserHistories::from_sequences(&seqs, &dataset.interactions.user_keys);
    let model = TrainedModel {
        artifact: Artifact {
            spec,
            params: state.params,
            dataset: dataset.origin.clone(),
            catalog: dataset.catalog.clone(),
            users,
            data,
        },
        config: TrainConfig {
            epochs: state.history.len(),
            ..cfg.clone()
        },
        optimizer: state.optimizer,
        history: state.history,
        best_epoch: outcome.best_epoch,
    };
    Ok(Session {
        model,
        seqs,
        train,
        valid,
        test,
        pool,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelOptions;

    #[test]
    fn the_least_cgroup_limit_on_the_way_up_binds() {
        let root = tempfile::tempdir().unwrap();
        let slice = root.path().join("user.slice");
        let leaf = slice.join("session-1.scope");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(slice.join("memory.max"), "2147483648\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        let path = "/user.slice/session-1.scope";
        assert_eq!(
            least_limit_up(root.path(), path, "memory.max"),
            Some(2 << 30)
        );
        std::fs::write(leaf.join("memory.max"), "1073741824\n").unwrap();
        assert_eq!(
            least_limit_up(root.path(), path, "memory.max"),
            Some(1 << 30)
        );
        std::fs::write(slice.join("memory.max"), "max\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        assert_eq!(least_limit_up(root.path(), path, "memory.max"), None);
    }

    #[test]
    fn a_model_beyond_the_memory_is_refused_before_allocating() {
        // Item id 10,000,000 at the default 32 dimensions: 7.7 GB of tables.
        let spec = ModelOptions::default().spec(10_000_001);
        assert!(
            training_bytes(&spec) > 7_600_000_000,
            "{}",
            training_bytes(&spec)
        );
        let msg = check_memory(&spec, Some(8 << 30)).unwrap_err().to_string();
        assert!(
            msg.contains("10000001 x 32") && msg.contains("`embedding_dim`"),
            "{msg}"
        );
        assert!(check_memory(&spec, Some(64 << 30)).is_ok());
        assert!(check_memory(&spec, None).is_ok());
        // The largest spec there is cannot overflow the count into a pass.
        let huge = ModelOptions {
            embedding_dim: crate::model::spec::MAX_DIM,
            ..ModelOptions::default()
        }
        .spec(usize::MAX / 2);
        assert!(check_memory(&huge, Some(u64::MAX)).is_err());
    }
}
