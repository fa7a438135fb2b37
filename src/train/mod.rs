//! Training: the loop over epochs and batches, the optimiser, and the state
//! that a model file keeps so training can resume.

pub mod adamw;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::batches::{fill_batch, Padding, WindowSpec};
use crate::data::{Batch, ExampleSet, Sequences};
use crate::model::{ForwardOptions, Model, ModelConfig, Params, Workspace};
use adamw::{AdamW, AdamWConfig};

/// Every hyper-parameter of a training run. The defaults are the reference's;
/// a TOML config file takes the same keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub test_batch_size: usize,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub embedding_dim: usize,
    pub context_len: usize,
    pub seed: u64,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Report HR@10 and NDCG@10 on the test examples every this many epochs (0: never).
    pub eval_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let opt = AdamWConfig::default();
        TrainConfig {
            epochs: 5,
            batch_size: 4096,
            test_batch_size: 2048,
            learning_rate: opt.learning_rate,
            weight_decay: opt.weight_decay,
            beta_1: opt.beta_1,
            beta_2: opt.beta_2,
            epsilon: opt.epsilon,
            embedding_dim: 32,
            context_len: 10,
            seed: 42,
            threads: 0,
            eval_every: 0,
        }
    }
}

impl TrainConfig {
    pub fn optimizer(&self) -> AdamWConfig {
        AdamWConfig {
            learning_rate: self.learning_rate,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        }
    }

    pub fn window(&self) -> WindowSpec {
        WindowSpec {
            context_len: self.context_len,
            padding: Padding::Right,
        }
    }

    pub fn forward_options(&self) -> ForwardOptions {
        ForwardOptions::default()
    }

    /// Says which value is out of range, by its flag/key name.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("test_batch_size", self.test_batch_size),
            ("embedding_dim", self.embedding_dim),
            ("context_len", self.context_len),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name}: expected at least 1, found 0"));
            }
        }
        let finite = [
            ("learning_rate", self.learning_rate),
            ("weight_decay", self.weight_decay),
            ("beta_1", self.beta_1),
            ("beta_2", self.beta_2),
            ("epsilon", self.epsilon),
        ];
        for (name, v) in finite {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name}: expected a finite number >= 0, found {v}"));
            }
        }
        if self.beta_1 >= 1.0 || self.beta_2 >= 1.0 {
            return Err("beta_1 and beta_2: expected values below 1".into());
        }
        if self.embedding_dim > 4096 {
            return Err(format!(
                "embedding_dim: expected at most 4096, found {}",
                self.embedding_dim
            ));
        }
        Ok(())
    }
}

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
    #[serde(skip)]
    pub seconds: f64,
    #[serde(skip)]
    pub step_ms_median: f64,
}

/// Everything that training changes: the parameters, the optimiser's state
/// and the history. A model file holds exactly this.
#[derive(Debug, Clone)]
pub struct TrainState {
    pub model: ModelConfig,
    pub params: Params,
    pub optimizer: AdamW,
    pub history: Vec<EpochReport>,
}

impl TrainState {
    pub fn new(model: ModelConfig, cfg: &TrainConfig) -> TrainState {
        TrainState {
            model,
            params: Params::init(&model, cfg.seed),
            optimizer: AdamW::new(cfg.optimizer(), &model),
            history: Vec::new(),
        }
    }
}

/// What the loop tells its caller, for progress bars and logs.
pub enum Event<'a> {
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
    window: WindowSpec,
) -> f64 {
    let mut batch = Batch::default();
    let mut total = 0.0;
    for chunk in examples.label_pos.chunks(batch_size) {
        fill_batch(seqs, chunk, window, &mut batch);
        total += model.loss_sum(ws, &batch);
    }
    total / examples.len().max(1) as f64
}

/// Ranking metrics of the current parameters, `(HR@10, NDCG@10)`; given by
/// the caller so that training does not depend on retrieval.
pub type MetricsHook<'a> = &'a dyn Fn(&ModelConfig, &Params) -> (f64, f64);

/// Trains `state` for `cfg.epochs` more epochs. Must run inside a rayon pool
/// of `threads` threads.
pub fn fit(
    state: &mut TrainState,
    data: &TrainData,
    cfg: &TrainConfig,
    threads: usize,
    metrics: Option<MetricsHook>,
    on_event: &mut dyn FnMut(Event),
) {
    let window = cfg.window();
    let mut ws = Workspace::default();
    let mut grads = Params::zeros(&state.model);
    let mut batch = Batch::default();
    let steps = data.train.num_batches(cfg.batch_size);
    let first = state.history.len() + 1;
    let last = state.history.len() + cfg.epochs;
    for epoch in first..=last {
        on_event(Event::EpochStart {
            epoch,
            epochs: last,
            steps,
        });
        let t0 = Instant::now();
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        let mut step_ms = Vec::with_capacity(steps);
        for (step, chunk) in data.train.label_pos.chunks(cfg.batch_size).enumerate() {
            let ts = Instant::now();
            fill_batch(data.seqs, chunk, window, &mut batch);
            let model = Model {
                cfg: &state.model,
                params: &state.params,
                opts: cfg.forward_options(),
                threads,
            };
            let loss = model.loss_and_grads(&mut ws, &batch, &mut grads);
            state
                .optimizer
                .apply(&mut state.params, &grads, cfg.learning_rate);
            loss_sum += loss * batch.size as f64;
            seen += batch.size;
            step_ms.push(ts.elapsed().as_secs_f64() * 1e3);
            on_event(Event::Step {
                step: step + 1,
                running_loss: loss_sum / seen as f64,
            });
        }
        let model = Model {
            cfg: &state.model,
            params: &state.params,
            opts: cfg.forward_options(),
            threads,
        };
        let val_loss = mean_loss(
            &model,
            &mut ws,
            data.seqs,
            data.test,
            cfg.test_batch_size,
            window,
        );
        step_ms.sort_by(|a, b| a.total_cmp(b));
        let ranking = match metrics {
            Some(f) if cfg.eval_every > 0 && epoch % cfg.eval_every == 0 => {
                Some(f(&state.model, &state.params))
            }
            _ => None,
        };
        let report = EpochReport {
            epoch,
            loss: loss_sum / seen.max(1) as f64,
            val_loss,
            hr10: ranking.map(|r| r.0),
            ndcg10: ranking.map(|r| r.1),
            seconds: t0.elapsed().as_secs_f64(),
            step_ms_median: step_ms.get(step_ms.len() / 2).copied().unwrap_or(0.0),
        };
        on_event(Event::EpochEnd(&report));
        state.history.push(report);
    }
}
