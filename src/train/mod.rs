//! Training: the settings (`config`), the optimiser (`adamw`), negative
//! sampling (`sampler`), the loop over epochs and batches (`fit`, here),
//! and a whole run from a dataset to a trained model (`session::run`).

pub mod config;
pub mod optimizer;
pub mod sampler;
pub mod session;

use std::ops::ControlFlow;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{ExampleSet, Sequences};
use crate::model::{
    fill_batch, fill_sequence_batch, sequence_row_ends, Batch, Grads, Model, ModelSpec, Params,
    SparseRows, StepOptions, Workspace,
};
pub use config::{Loss, LrSchedule, SettingError, Settings, TrainConfig, PRESETS};
use optimizer::OptimizerState;
use sampler::Sampler;
pub use session::{run, Session, TrainError, TrainedModel};

/// What one epoch measured. Only deterministic figures are saved in model
/// files; times are reported but not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub val_loss: f64,
    /// HR@10 and NDCG@10 on the test examples, when measured this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hr10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ndcg10: Option<f64>,
    /// HR@10 and NDCG@10 on the validation split, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_hr10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_ndcg10: Option<f64>,
    /// The peak learning rate of the epoch's last step.
    #[serde(default)]
    pub learning_rate: f32,
    #[serde(skip)]
    pub seconds: f64,
    #[serde(skip)]
    pub step_ms_median: f64,
}

/// Everything that training changes: the parameters, the optimiser's state
/// and the history.
#[derive(Debug, Clone)]
pub struct TrainState {
    pub params: Params,
    pub optimizer: OptimizerState,
    pub history: Vec<EpochReport>,
}

impl TrainState {
    pub fn new(spec: &ModelSpec, cfg: &TrainConfig) -> TrainState {
        TrainState {
            params: Params::init(spec, cfg.seed),
            optimizer: OptimizerState::new(cfg.optimizer(), spec),
            history: Vec::new(),
        }
    }
}

/// What the loop tells its caller, for progress bars and logs.
/// What a run tells its caller as it goes; returning `ControlFlow::Break`
/// stops it between steps (`Stopped::Interrupted`), keeping nothing.
pub type OnEvent<'a> = dyn FnMut(Event) -> ControlFlow<()> + 'a;

pub enum Event<'a> {
    /// Before the first epoch.
    Start {
        train_examples: usize,
        test_examples: usize,
        steps: usize,
        threads: usize,
    },
    EpochStart {
        epoch: usize,
        epochs: usize,
        steps: usize,
    },
    Step {
        step: usize,
        running_loss: f64,
    },
    EpochEnd(&'a EpochReport),
}

/// The examples a run trains and validates on.
pub struct TrainData<'a> {
    pub seqs: &'a Sequences,
    pub train: &'a ExampleSet,
    /// Carved from train (`validation`); empty otherwise.
    pub valid: &'a ExampleSet,
    pub test: &'a ExampleSet,
}

/// Mean in-batch loss over `examples` in batches of `batch_size`, weighted by
/// batch size (Keras' `evaluate`).
pub fn mean_loss(
    model: &Model,
    ws: &mut Workspace,
    seqs: &Sequences,
    examples: &ExampleSet,
    batch_size: usize,
) -> f64 {
    let mut batch = Batch::default();
    let mut total = 0.0;
    for chunk in examples.label_pos.chunks(batch_size) {
        fill_batch(model.spec, seqs, chunk, &mut batch);
        total += model.loss_sum(ws, &batch);
    }
    total / examples.len().max(1) as f64
}

/// Ranking metrics of the current parameters on `examples`, `(HR@10,
/// NDCG@10)` with seen items excluded; given by the caller so that training
/// does not depend on retrieval (`eval::ranking_hook` is the usual one).
pub type MetricsHook<'a> =
    &'a (dyn Fn(&ModelSpec, &Params, &Sequences, &ExampleSet) -> (f64, f64) + Sync);

/// Keeps the parameters of the epoch with the best validation NDCG@10 and
/// says when `patience` epochs have passed without a better one.
pub struct EarlyStopping {
    patience: usize,
    best: Option<(f64, Params, usize)>,
    since_best: usize,
}

impl EarlyStopping {
    /// `patience` 0 never stops early (the best epoch is still kept).
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping {
            patience,
            best: None,
            since_best: 0,
        }
    }

    /// Records an epoch's validation NDCG@10; true when training should stop.
    pub fn record(&mut self, ndcg: f64, params: &Params, epoch: usize) -> bool {
        if self.best.as_ref().is_none_or(|(b, _, _)| ndcg > *b) {
            self.best = Some((ndcg, params.clone(), epoch));
            self.since_best = 0;
            false
        } else {
            self.since_best += 1;
            self.patience > 0 && self.since_best >= self.patience
        }
    }

    /// The best epoch's parameters and number, if any epoch was recorded.
    pub fn into_best(self) -> Option<(Params, usize)> {
        self.best.map(|(_, p, e)| (p, e))
    }
}

/// The rows an epoch trains on: sequence training's are pieces of
/// histories, named by their last label; otherwise a row is one label.
pub fn training_rows(
    spec: &ModelSpec,
    cfg: &TrainConfig,
    seqs: &Sequences,
    train: &ExampleSet,
) -> Vec<u32> {
    if cfg.sequence_training {
        sequence_row_ends(spec, seqs, train)
    } else {
        train.label_pos.clone()
    }
}

/// The buffers and samplers of a run's steps, reused across epochs.
struct EpochRunner<'a> {
    spec: &'a ModelSpec,
    data: &'a TrainData<'a>,
    cfg: &'a TrainConfig,
    threads: usize,
    ws: Workspace,
    grads: Grads,
    batch: Batch,
    sampler: Option<Sampler>,
    negatives: Vec<u32>,
    /// The training rows, and in this epoch's order.
    rows: Vec<u32>,
    order: Vec<u32>,
    steps: usize,
    total_steps: usize,
}

impl<'a> EpochRunner<'a> {
    fn new(
        spec: &'a ModelSpec,
        data: &'a TrainData<'a>,
        cfg: &'a TrainConfig,
        threads: usize,
        last_epoch: usize,
    ) -> Self {
        let rows = training_rows(spec, cfg, data.seqs, data.train);
        let steps = rows.len().div_ceil(cfg.batch_size);
        let sampler = (cfg.logq_correction || cfg.negatives > 0)
            .then(|| Sampler::new(data.seqs, data.train, spec.vocab_size, cfg.negative_alpha));
        EpochRunner {
            spec,
            data,
            cfg,
            threads,
            ws: Workspace::default(),
            grads: Grads::zeros(spec),
            batch: Batch::default(),
            sampler,
            negatives: Vec::new(),
            order: rows.clone(),
            rows,
            steps,
            total_steps: steps * last_epoch,
        }
    }

    /// The batch of `positions`, its extra negatives (drawn from `rng`)
    /// and its gradients into `self.grads`; returns the mean loss.
    fn step(
        &mut self,
        state: &TrainState,
        positions: &[u32],
        global_step: usize,
        rng: &mut ChaCha8Rng,
    ) -> f64 {
        let cfg = self.cfg;
        if cfg.sequence_training {
            fill_sequence_batch(self.spec, self.data.seqs, positions, &mut self.batch);
        } else {
            fill_batch(self.spec, self.data.seqs, positions, &mut self.batch);
        }
        if let (Some(s), true) = (&self.sampler, cfg.negatives > 0) {
            s.draw(rng, cfg.negatives, &mut self.negatives);
        }
        let log_q = self.sampler.as_ref().filter(|_| cfg.logq_correction);
        let options = StepOptions {
            remove_accidental_hits: cfg.remove_accidental_hits,
            in_batch_log_q: log_q.map(|s| s.in_batch_log_q.as_slice()),
            negatives: &self.negatives,
            negatives_log_q: log_q.map(|s| s.negative_log_q.as_slice()),
            dropout_input: cfg.dropout_input,
            dropout_output: cfg.dropout_output,
            dropout_seed: cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ global_step as u64,
            loss: cfg.loss(),
            tower_dropout: cfg.tower_dropout,
            full_softmax: cfg.full_softmax,
            exclude_history: cfg.exclude_history_in_loss,
            mean_queries: cfg
                .sequence_training
                .then(|| self.data.train.len() as f32 / self.steps.max(1) as f32),
        };
        let model = Model {
            spec: self.spec,
            params: &state.params,
            threads: self.threads,
        };
        model.loss_and_grads(&mut self.ws, &self.batch, &mut self.grads, &options)
    }

    /// The optimiser's step at learning rate `lr`, then the shared table's
    /// copy for the candidates.
    fn update(&self, state: &mut TrainState, lr: f32) {
        state
            .optimizer
            .apply(&mut state.params, &self.grads, lr, self.spec.dim);
        if self.spec.shared_embeddings {
            if state.optimizer.changes_only_touched_rows() {
                tie_candidate_rows(
                    &mut state.params,
                    &self.grads.query_embedding,
                    self.spec.dim,
                );
            } else {
                tie_candidate_table(&mut state.params);
            }
        }
    }

    /// One pass over the train examples, then val_loss over the test
    /// examples. The report's metrics are left for the caller.
    fn run(
        &mut self,
        state: &mut TrainState,
        epoch: usize,
        on_event: &mut OnEvent,
    ) -> Result<EpochReport, Stopped> {
        let (cfg, data) = (self.cfg, self.data);
        let t0 = Instant::now();
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        let mut step_ms = Vec::with_capacity(self.steps);
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407),
        );
        if cfg.shuffle {
            // From the file order each epoch, so a resumed run shuffles as
            // an uninterrupted one would.
            self.order.copy_from_slice(&self.rows);
            self.order.shuffle(&mut rng);
        }
        if cfg.sequence_training && self.spec.tower.cost_follows_longest_window() {
            bucket_by_length(
                &mut self.order,
                self.spec,
                data.seqs,
                cfg.batch_size,
                &mut rng,
            );
        }
        let mut lr = cfg.learning_rate;
        let order = std::mem::take(&mut self.order);
        for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let ts = Instant::now();
            let global_step = (epoch - 1) * self.steps + step;
            let loss = self.step(state, chunk, global_step, &mut rng);
            if !loss.is_finite() {
                self.order = order;
                return Err(Stopped::Diverged(Diverged {
                    epoch,
                    step: step + 1,
                    loss,
                }));
            }
            lr = cfg.learning_rate_at(global_step, self.total_steps);
            self.update(state, lr);
            // Weighted by the losses taken: rows, or labelled steps.
            let taken = self.ws.queries_taken(self.spec);
            loss_sum += loss * taken as f64;
            seen += taken;
            step_ms.push(ts.elapsed().as_secs_f64() * 1e3);
            let flow = on_event(Event::Step {
                step: step + 1,
                running_loss: loss_sum / seen as f64,
            });
            if flow.is_break() {
                self.order = order;
                return Err(Stopped::Interrupted {
                    epoch,
                    step: step + 1,
                });
            }
        }
        self.order = order;
        let model = Model {
            spec: self.spec,
            params: &state.params,
            threads: self.threads,
        };
        let val_loss = mean_loss(
            &model,
            &mut self.ws,
            data.seqs,
            data.test,
            cfg.test_batch_size,
        );
        step_ms.sort_by(|a, b| a.total_cmp(b));
        Ok(EpochReport {
            epoch,
            loss: loss_sum / seen.max(1) as f64,
            val_loss,
            hr10: None,
            ndcg10: None,
            valid_hr10: None,
            valid_ndcg10: None,
            learning_rate: lr,
            seconds: t0.elapsed().as_secs_f64(),
            step_ms_median: step_ms.get(step_ms.len() / 2).copied().unwrap_or(0.0),
        })
    }
}

/// Batches of rows of like length, so SASRec runs each over few padding
/// columns: the order is cut into pools of 16 batches, each pool sorted by
/// window length (stable, so the same order in gives the same batches) and
/// its batches put in a random order.
fn bucket_by_length(
    order: &mut [u32],
    spec: &ModelSpec,
    seqs: &Sequences,
    batch_size: usize,
    rng: &mut ChaCha8Rng,
) {
    let length = |end: u32| {
        let start = seqs.offsets[seqs.sequence_of(end)];
        (end - start).min(spec.context_len as u32)
    };
    for pool in order.chunks_mut(16 * batch_size) {
        pool.sort_by_key(|&end| length(end));
        let mut batches: Vec<&[u32]> = pool.chunks(batch_size).collect();
        batches.shuffle(rng);
        let shuffled: Vec<u32> = batches.concat();
        pool.copy_from_slice(&shuffled);
    }
}

/// With shared embeddings the candidate table is a copy of the query
/// table, kept so the loss and retrieval read one layout.
fn tie_candidate_table(params: &mut Params) {
    params
        .candidate_embedding
        .clone_from(&params.query_embedding);
}

/// `tie_candidate_table` for the rows `touched` only.
fn tie_candidate_rows(params: &mut Params, touched: &SparseRows, d: usize) {
    for &id in &touched.ids {
        let row = id as usize * d..(id as usize + 1) * d;
        params.candidate_embedding[row.clone()].copy_from_slice(&params.query_embedding[row]);
    }
}

/// Trains `state` for `cfg.epochs` more epochs. Must run inside a rayon pool
/// of `threads` threads. With a validation split, the parameters that end in
/// `state` are those of the epoch with the best validation NDCG@10.
pub fn fit(
    spec: &ModelSpec,
    state: &mut TrainState,
    data: &TrainData,
    cfg: &TrainConfig,
    threads: usize,
    metrics: Option<MetricsHook>,
    on_event: &mut OnEvent,
) -> Result<Outcome, Stopped> {
    let first = state.history.len() + 1;
    let last = state.history.len() + cfg.epochs;
    let mut runner = EpochRunner::new(spec, data, cfg, threads, last);
    let validating = cfg.validation && !data.valid.is_empty() && metrics.is_some();
    let mut stopping = EarlyStopping::new(cfg.patience);
    if spec.shared_embeddings {
        tie_candidate_table(&mut state.params);
    }
    for epoch in first..=last {
        if on_event(Event::EpochStart {
            epoch,
            epochs: last,
            steps: runner.steps,
        })
        .is_break()
        {
            return Err(Stopped::Interrupted { epoch, step: 0 });
        }
        let t0 = Instant::now();
        let mut report = runner.run(state, epoch, on_event)?;
        let ranking = |examples| metrics.map(|f| f(spec, &state.params, data.seqs, examples));
        if cfg.eval_every > 0 && epoch % cfg.eval_every == 0 {
            if let Some((hr, ndcg)) = ranking(data.test) {
                (report.hr10, report.ndcg10) = (Some(hr), Some(ndcg));
            }
        }
        let valid = if validating {
            ranking(data.valid)
        } else {
            None
        };
        if let Some((hr, ndcg)) = valid {
            (report.valid_hr10, report.valid_ndcg10) = (Some(hr), Some(ndcg));
        }
        report.seconds = t0.elapsed().as_secs_f64();
        let flow = on_event(Event::EpochEnd(&report));
        state.history.push(report);
        if flow.is_break() {
            let step = runner.steps;
            return Err(Stopped::Interrupted { epoch, step });
        }
        if let Some((_, ndcg)) = valid {
            if stopping.record(ndcg, &state.params, epoch) {
                break;
            }
        }
    }
    let mut outcome = Outcome::default();
    if let Some((params, epoch)) = stopping.into_best() {
        state.params = params;
        outcome.best_epoch = Some(epoch);
    }
    Ok(outcome)
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// With a validation split: the epoch whose parameters were kept.
    pub best_epoch: Option<usize>,
}

/// Why training stopped before its last epoch: the run keeps nothing.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Stopped {
    #[error(transparent)]
    Diverged(#[from] Diverged),
    /// The event handler asked to stop (Ctrl-C in Python).
    #[error("training was interrupted at epoch {epoch}, step {step}")]
    Interrupted { epoch: usize, step: usize },
}

/// Training stopped because the loss stopped being a number.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("training diverged at epoch {epoch}, step {step} (loss {loss}); lower the learning rate")]
pub struct Diverged {
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
}
