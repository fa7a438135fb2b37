//! Training: the loop over epochs and batches, the optimiser, and the state
//! that a model file keeps so training can resume.

pub mod adamw;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::batches::{fill_batch, Padding, WindowSpec};
use crate::data::{Batch, ExampleSet, Sequences};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{ForwardOptions, Model, ModelConfig, Params, StepOptions, Workspace};
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

    // Beyond the reference: each off by default (parity).
    /// Which side of a short context the padding goes.
    pub padding: Padding,
    /// Padding steps leave the GRU state unchanged.
    pub mask_padding: bool,
    /// Shuffle the train examples every epoch (seeded).
    pub shuffle: bool,
    /// In-batch negatives that carry the row's own label get no probability.
    pub remove_accidental_hits: bool,
    /// Subtract log Q (the sampling probability) from every negative's logit.
    pub logq_correction: bool,
    /// Extra negatives per batch, shared by every row (GRU4Rec's n_sample).
    pub negatives: usize,
    /// Extra negatives are drawn in proportion to popularity^alpha (sample_alpha).
    pub negative_alpha: f32,
    /// One item table for the query input and the candidates.
    pub shared_embeddings: bool,
    /// Dropout on the input embeddings.
    pub dropout_input: f32,
    /// Dropout on the GRU output.
    pub dropout_output: f32,
    /// Linear warm-up of the learning rate over this many steps.
    pub warmup_steps: usize,
    /// Learning-rate decay after warm-up.
    pub lr_schedule: LrSchedule,
    /// The decayed learning rate ends at this fraction of the peak.
    pub min_lr_ratio: f32,
    /// Carve a validation set from train (each user's second-to-last item)
    /// and keep the epoch with the best validation NDCG@10.
    pub validation: bool,
    /// Stop after this many epochs without a better validation NDCG@10 (0: never).
    pub patience: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The reference: one learning rate throughout.
    #[default]
    Constant,
    Linear,
    Cosine,
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
            padding: Padding::Right,
            mask_padding: false,
            shuffle: false,
            remove_accidental_hits: false,
            logq_correction: false,
            negatives: 0,
            negative_alpha: 0.75,
            shared_embeddings: false,
            dropout_input: 0.0,
            dropout_output: 0.0,
            warmup_steps: 0,
            lr_schedule: LrSchedule::Constant,
            min_lr_ratio: 0.0,
            validation: false,
            patience: 0,
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
            padding: self.padding,
        }
    }

    pub fn forward_options(&self) -> ForwardOptions {
        ForwardOptions {
            mask_padding: self.mask_padding,
            shared_embeddings: self.shared_embeddings,
        }
    }

    /// A named starting point, applied over `base`: `parity` is the
    /// reference; `best` is the combination that measured best (README,
    /// "Training better than the reference").
    pub fn preset(name: &str, base: TrainConfig) -> Result<TrainConfig, String> {
        match name {
            "parity" => Ok(TrainConfig {
                seed: base.seed,
                threads: base.threads,
                ..TrainConfig::default()
            }),
            "best" => Ok(TrainConfig {
                epochs: 20,
                batch_size: 256,
                learning_rate: 0.003,
                padding: Padding::Left,
                mask_padding: true,
                shuffle: true,
                remove_accidental_hits: true,
                logq_correction: true,
                shared_embeddings: true,
                dropout_input: 0.1,
                dropout_output: 0.1,
                warmup_steps: 100,
                lr_schedule: LrSchedule::Cosine,
                min_lr_ratio: 0.05,
                validation: true,
                patience: 4,
                ..base
            }),
            other => Err(format!("unknown preset {other:?}: expected parity or best")),
        }
    }

    /// The learning rate at `step` (0-based) of `total` steps.
    pub fn learning_rate_at(&self, step: usize, total: usize) -> f32 {
        let peak = self.learning_rate;
        if step < self.warmup_steps {
            return peak * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f32;
        let progress = ((step - self.warmup_steps) as f32 / span).min(1.0);
        let floor = peak * self.min_lr_ratio;
        match self.lr_schedule {
            LrSchedule::Constant => peak,
            LrSchedule::Linear => floor + (peak - floor) * (1.0 - progress),
            LrSchedule::Cosine => {
                floor + (peak - floor) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
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
        for (name, p) in [
            ("dropout_input", self.dropout_input),
            ("dropout_output", self.dropout_output),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!(
                    "{name}: expected a probability in [0, 1), found {p}"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(format!(
                "min_lr_ratio: expected a value in [0, 1], found {}",
                self.min_lr_ratio
            ));
        }
        if !self.negative_alpha.is_finite() || self.negative_alpha < 0.0 {
            return Err(format!(
                "negative_alpha: expected a finite number >= 0, found {}",
                self.negative_alpha
            ));
        }
        if self.negatives > 1_000_000 {
            return Err(format!(
                "negatives: expected at most 1000000, found {}",
                self.negatives
            ));
        }
        if self.batch_size < 2 && self.negatives == 0 {
            return Err("batch_size: expected at least 2 (a batch of one has no negatives), or give negatives".into());
        }
        if self.test_batch_size < 2 {
            return Err(
                "test_batch_size: expected at least 2 (the in-batch loss of one example is 0)"
                    .into(),
            );
        }
        if self.context_len > 1000 {
            return Err(format!(
                "context_len: expected at most 1000, found {}",
                self.context_len
            ));
        }
        if self.patience > 0 && !self.validation {
            return Err("patience: early stopping needs validation = true (--validation)".into());
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
    /// Carved from train (`--validation`); empty otherwise.
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

/// Which examples a metrics hook ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Validation,
    Test,
}

/// Ranking metrics of the current parameters, `(HR@10, NDCG@10)` with seen
/// items excluded; given by the caller so that training does not depend on
/// retrieval.
pub type MetricsHook<'a> = &'a dyn Fn(&ModelConfig, &Params, Split) -> (f64, f64);

/// The label frequencies of `examples`, and their logs as sampling
/// probabilities (for logQ correction).
struct Sampler {
    /// log Q of an in-batch negative: its share of the train labels.
    in_batch_log_q: Vec<f32>,
    /// Cumulative distribution of popularity^alpha over ids.
    cumulative: Vec<f64>,
    /// log of the same distribution.
    negative_log_q: Vec<f32>,
}

impl Sampler {
    fn new(seqs: &Sequences, train: &ExampleSet, vocab: usize, alpha: f32) -> Sampler {
        let mut counts = vec![0.0f64; vocab];
        for &p in &train.label_pos {
            counts[seqs.items[p as usize] as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum::<f64>().max(1.0);
        // Ids never seen as a label are never in-batch negatives; give them
        // the smallest observed share so their (unused) log stays finite.
        let smallest = counts
            .iter()
            .copied()
            .filter(|&c| c > 0.0)
            .fold(f64::INFINITY, f64::min);
        let in_batch_log_q = counts
            .iter()
            .map(|&c| (c.max(smallest.min(1.0)) / total).ln() as f32)
            .collect();
        let weights: Vec<f64> = counts
            .iter()
            .map(|&c| if c > 0.0 { c.powf(alpha as f64) } else { 0.0 })
            .collect();
        let wsum: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / wsum;
                acc
            })
            .collect();
        let negative_log_q = weights
            .iter()
            .map(|&w| ((w / wsum).max(1e-30)).ln() as f32)
            .collect();
        Sampler {
            in_batch_log_q,
            cumulative,
            negative_log_q,
        }
    }

    fn draw(&self, rng: &mut ChaCha8Rng, n: usize, out: &mut Vec<u32>) {
        out.clear();
        for _ in 0..n {
            let u: f64 = rng.random();
            let id = self
                .cumulative
                .partition_point(|&c| c < u)
                .min(self.cumulative.len() - 1);
            out.push(id as u32);
        }
    }
}

/// Trains `state` for `cfg.epochs` more epochs. Must run inside a rayon pool
/// of `threads` threads. With a validation split, the parameters that end in
/// `state` are those of the epoch with the best validation NDCG@10.
pub fn fit(
    state: &mut TrainState,
    data: &TrainData,
    cfg: &TrainConfig,
    threads: usize,
    metrics: Option<MetricsHook>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Outcome, Diverged> {
    let window = cfg.window();
    let mut ws = Workspace::default();
    let mut grads = Params::zeros(&state.model);
    let mut batch = Batch::default();
    let steps = data.train.num_batches(cfg.batch_size);
    let first = state.history.len() + 1;
    let last = state.history.len() + cfg.epochs;
    let total_steps = steps * last;
    let sampler = (cfg.logq_correction || cfg.negatives > 0).then(|| {
        Sampler::new(
            data.seqs,
            data.train,
            state.model.vocab_size,
            cfg.negative_alpha,
        )
    });
    let mut negatives = Vec::new();
    let mut order = data.train.label_pos.clone();
    let validating = cfg.validation && !data.valid.is_empty() && metrics.is_some();
    let mut best: Option<(f64, Params, usize)> = None;
    let mut since_best = 0usize;
    if cfg.shared_embeddings {
        state
            .params
            .candidate_embedding
            .clone_from(&state.params.query_embedding);
    }
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
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407),
        );
        if cfg.shuffle {
            // From the file order each epoch, so a resumed run shuffles as
            // an uninterrupted one would.
            order.copy_from_slice(&data.train.label_pos);
            order.shuffle(&mut rng);
        }
        let mut lr = cfg.learning_rate;
        for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let ts = Instant::now();
            let global_step = (epoch - 1) * steps + step;
            fill_batch(data.seqs, chunk, window, &mut batch);
            if let (Some(s), true) = (&sampler, cfg.negatives > 0) {
                s.draw(&mut rng, cfg.negatives, &mut negatives);
            }
            let options = StepOptions {
                remove_accidental_hits: cfg.remove_accidental_hits,
                in_batch_log_q: sampler
                    .as_ref()
                    .filter(|_| cfg.logq_correction)
                    .map(|s| s.in_batch_log_q.as_slice()),
                negatives: &negatives,
                negatives_log_q: sampler
                    .as_ref()
                    .filter(|_| cfg.logq_correction)
                    .map(|s| s.negative_log_q.as_slice()),
                dropout_input: cfg.dropout_input,
                dropout_output: cfg.dropout_output,
                dropout_seed: cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ global_step as u64,
            };
            let model = Model {
                cfg: &state.model,
                params: &state.params,
                opts: cfg.forward_options(),
                threads,
            };
            let loss = model.loss_and_grads(&mut ws, &batch, &mut grads, &options);
            if !loss.is_finite() {
                return Err(Diverged {
                    epoch,
                    step: step + 1,
                    loss,
                });
            }
            lr = cfg.learning_rate_at(global_step, total_steps);
            state.optimizer.apply(&mut state.params, &grads, lr);
            if cfg.shared_embeddings {
                state
                    .params
                    .candidate_embedding
                    .clone_from(&state.params.query_embedding);
            }
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
        let test_ranking = match metrics {
            Some(f) if cfg.eval_every > 0 && epoch % cfg.eval_every == 0 => {
                Some(f(&state.model, &state.params, Split::Test))
            }
            _ => None,
        };
        let valid_ranking = match metrics {
            Some(f) if validating => Some(f(&state.model, &state.params, Split::Validation)),
            _ => None,
        };
        let report = EpochReport {
            epoch,
            loss: loss_sum / seen.max(1) as f64,
            val_loss,
            hr10: test_ranking.map(|r| r.0),
            ndcg10: test_ranking.map(|r| r.1),
            valid_hr10: valid_ranking.map(|r| r.0),
            valid_ndcg10: valid_ranking.map(|r| r.1),
            learning_rate: lr,
            seconds: t0.elapsed().as_secs_f64(),
            step_ms_median: step_ms.get(step_ms.len() / 2).copied().unwrap_or(0.0),
        };
        on_event(Event::EpochEnd(&report));
        state.history.push(report);
        if let Some((_, ndcg)) = valid_ranking {
            if best.as_ref().is_none_or(|(b, _, _)| ndcg > *b) {
                best = Some((ndcg, state.params.clone(), epoch));
                since_best = 0;
            } else {
                since_best += 1;
                if cfg.patience > 0 && since_best >= cfg.patience {
                    break;
                }
            }
        }
    }
    let mut outcome = Outcome::default();
    if let Some((_, params, epoch)) = best {
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

/// Training stopped because the loss stopped being a number.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("training diverged at epoch {epoch}, step {step} (loss {loss}); lower --learning-rate")]
pub struct Diverged {
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
}
