//! A whole training run in the library: from a dataset and settings (and
//! optionally a model to resume) to a `TrainedModel`, with events for a
//! caller to show progress. The command line only parses, calls and prints.

use crate::data::{
    Catalog, DataError, DataSettings, Dataset, ExampleSet, Sequences, UserHistories,
};
use crate::model::ModelSpec;

use super::{
    fit, Diverged, Event, MetricsHook, SettingError, Settings, TrainConfig, TrainData, TrainState,
};

/// A trained model and everything needed to use it later: what a model
/// file holds (`checkpoint`).
#[derive(Debug, Clone)]
pub struct TrainedModel {
    pub spec: ModelSpec,
    /// The training settings; `epochs` is the total trained so far.
    pub config: TrainConfig,
    pub state: TrainState,
    /// Where the training data came from.
    pub dataset: String,
    pub catalog: Catalog,
    pub users: UserHistories,
    /// How the training data was read, so `evaluate` reads it the same way.
    pub data: DataSettings,
    /// With a validation split: the epoch whose parameters these are (the
    /// history goes on to the last epoch run).
    pub best_epoch: Option<usize>,
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
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
    #[error(transparent)]
    Diverged(#[from] Diverged),
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

/// The thread count a setting means (0: one per core) and its pool.
pub fn thread_pool(threads: usize) -> Result<(rayon::ThreadPool, usize), TrainError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| TrainError::Threads(e.to_string()))?;
    Ok((pool, threads))
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
    on_event: &mut (dyn FnMut(Event) + Send),
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
            if prev.catalog.titles != dataset.catalog.titles
                || prev.catalog.keys != dataset.catalog.keys
            {
                return Err(TrainError::OtherCatalogue {
                    data: dataset.origin.clone(),
                    trained_on: prev.dataset,
                });
            }
            if let Some((field, was, now)) = prev.spec.differences(&spec).into_iter().next() {
                return Err(TrainError::OtherSpec { field, was, now });
            }
            let mut state = prev.state;
            state.optimizer.cfg = cfg.optimizer();
            state
        }
        None => TrainState::new(&spec, cfg),
    };
    let (pool, threads) = thread_pool(cfg.threads)?;
    on_event(Event::Start {
        train_examples: train.len(),
        test_examples: test.len(),
        steps: train.num_batches(cfg.batch_size),
        threads,
    });
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
        spec,
        config: TrainConfig {
            epochs: state.history.len(),
            ..cfg.clone()
        },
        state,
        dataset: dataset.origin.clone(),
        catalog: dataset.catalog.clone(),
        users,
        data,
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
