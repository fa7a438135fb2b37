//! The settings of a training run: the model's options (which become its
//! `ModelSpec`) and the optimiser/loop's `TrainConfig`. The defaults are the
//! reference's; presets, a TOML file and the command line's flags overlay
//! them, in that order. Each key has one name everywhere: the field, the
//! TOML key and (with `-` for `_`) the flag.

use serde::{Deserialize, Serialize};

use super::optimizer::{AdamWConfig, AnyOptimizer, OptimizerKind};
use crate::model::{Bce, Gbce, LossKind, ModelOptions, Padding, Softmax, SpecError};
use crate::settings::{finite_non_negative, positive, probability, settings_group, unit_interval};

settings_group! {
    /// Every hyper-parameter of training besides the model's definition.
    /// The defaults are the reference's; everything beyond it is off.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct TrainConfig / TrainFlags {
        /// Epochs to train.
        epochs: usize = 5, check(positive);
        /// Training batch size.
        batch_size: usize = 4096, check(positive);
        /// Batch size of the val_loss pass.
        test_batch_size: usize = 2048, check(positive);
        /// AdamW learning rate.
        learning_rate: f32 = ADAMW.learning_rate, check(finite_non_negative);
        /// AdamW decoupled weight decay.
        weight_decay: f32 = ADAMW.weight_decay, check(finite_non_negative);
        /// AdamW's decay of the first moment.
        beta_1: f32 = ADAMW.beta_1, check(finite_non_negative);
        /// AdamW's decay of the second moment.
        beta_2: f32 = ADAMW.beta_2, check(finite_non_negative);
        /// AdamW's epsilon.
        epsilon: f32 = ADAMW.epsilon, check(finite_non_negative);
        /// How the embedding tables are updated: every row each step (adamw, the reference) or only the rows a step touched (lazy-adamw, for big catalogues).
        optimizer: OptimizerKind = OptimizerKind::AdamW, flag(value_enum);
        /// Seed of every random choice.
        seed: u64 = 42;
        /// Worker threads (0: one per core).
        threads: usize = 0, check(crate::workers::check);
        /// Report HR@10 and NDCG@10 (seen items excluded) on the test examples every N epochs (0: never).
        eval_every: usize = 0, flag(value_name = "N");
        /// Shuffle the train examples every epoch (seeded).
        shuffle: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// In-batch negatives holding the row's own label get no probability.
        remove_accidental_hits: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// Subtract each negative's log sampling probability from its logit.
        logq_correction: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// Extra negatives per batch, drawn by popularity^alpha and shared by all rows (GRU4Rec's n_sample).
        negatives: usize = 0, check(|&n| at_most(n, 1_000_000)), flag(value_name = "N");
        /// The exponent alpha of the extra negatives' sampler (popularity^alpha over train labels; 0: uniform over every item id).
        negative_alpha: f32 = 0.75, check(finite_non_negative), flag(value_name = "ALPHA");
        /// Dropout on the input embeddings.
        dropout_input: f32 = 0.0, check(probability), flag(value_name = "P");
        /// Dropout on the GRU output.
        dropout_output: f32 = 0.0, check(probability), flag(value_name = "P");
        /// Dropout inside the SASRec tower (its input, attention and feed-forward outputs).
        tower_dropout: f32 = 0.0, check(probability), flag(value_name = "P");
        /// Linear learning-rate warm-up over this many steps.
        warmup_steps: usize = 0, flag(value_name = "STEPS");
        /// Learning-rate decay after warm-up.
        lr_schedule: LrSchedule = LrSchedule::Constant, flag(value_enum);
        /// The decayed learning rate ends at this fraction of the peak.
        min_lr_ratio: f32 = 0.0, check(unit_interval), flag(value_name = "RATIO");
        /// Carve a validation split from train (each user's second-to-last item) and keep the epoch with the best validation NDCG@10.
        validation: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// Stop after N epochs without a better validation NDCG@10 (0: never; needs validation).
        patience: usize = 0, flag(value_name = "N");
        /// Learn from every step of a history (predict item t+1 from items ..t), one row per piece of context_len items of a user's history, instead of one row per label.
        sequence_training: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// The loss: softmax cross-entropy (the reference's), gbce (gSASRec's calibrated binary cross-entropy) or bce (plain binary cross-entropy, the SASRec paper's).
        loss: Loss = Loss::Softmax, flag(value_enum);
        /// gBCE's calibration t in [0, 1] (0: plain BCE; 1 fully corrects for the negatives being a sample of the catalogue).
        gbce_t: f32 = 0.75, check(unit_interval), flag(value_name = "T");
        /// Score every item of the catalogue in the loss, instead of the batch's labels and extra negatives (so no logQ).
        full_softmax: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// The items a query has read get no probability in its loss, as evaluation (seen items excluded) gives them none (needs sequence_training or full_softmax).
        exclude_history_in_loss: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
    }
}

/// AdamW's defaults (the reference's), where the table's come from.
const ADAMW: AdamWConfig = AdamWConfig::REFERENCE;

fn at_most(n: usize, max: usize) -> Result<(), String> {
    if n <= max {
        Ok(())
    } else {
        Err(format!("expected at most {max}, found {n}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Softmax cross-entropy (the reference's).
    #[default]
    Softmax,
    /// gSASRec's generalised binary cross-entropy.
    Gbce,
    /// Plain binary cross-entropy (the SASRec paper's).
    Bce,
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

/// A setting out of range; names the key, never a flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

/// A model option out of range is a setting out of range, keyed by its field.
impl From<SpecError> for SettingError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::OutOfRange {
                field,
                expected,
                found,
            } => setting_error(field, format!("expected {expected}, found {found}")),
        }
    }
}

fn setting_error(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.into(),
        message: message.into(),
    }
}

impl TrainConfig {
    /// The optimiser these settings choose (`optimizer`), with AdamW's.
    pub fn optimizer(&self) -> AnyOptimizer {
        let adamw = AdamWConfig {
            learning_rate: self.learning_rate,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        };
        AnyOptimizer::new(self.optimizer, adamw)
    }

    /// The loss the settings name, with its own settings.
    pub fn loss(&self) -> LossKind {
        match self.loss {
            Loss::Softmax => LossKind::Softmax(Softmax),
            Loss::Gbce => LossKind::Gbce(Gbce::calibrated(self.gbce_t)),
            Loss::Bce => LossKind::Bce(Bce::default()),
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

    /// Says which value is out of range, by its key: each key's own check
    /// (the table's), then the rules between keys.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.check_each()
            .map_err(|(key, message)| setting_error(key, message))?;
        if self.batch_size < 2 && self.negatives == 0 {
            return Err(setting_error(
                "batch_size",
                "expected at least 2 (a batch of one has no negatives), or give negatives",
            ));
        }
        if self.test_batch_size < 2 {
            return Err(setting_error(
                "test_batch_size",
                "expected at least 2 (the in-batch loss of one example is 0)",
            ));
        }
        if self.patience > 0 && !self.validation {
            return Err(setting_error(
                "patience",
                "early stopping needs validation = true",
            ));
        }
        if self.loss != Loss::Softmax && self.negatives == 0 && !self.full_softmax {
            return Err(setting_error(
                "loss",
                "gbce and bce learn against sampled negatives: give negatives (e.g. 256, with \
                 negative_alpha = 0 for a uniform sample) or full_softmax = true",
            ));
        }
        if self.exclude_history_in_loss && !self.sequence_training && !self.full_softmax {
            return Err(setting_error(
                "exclude_history_in_loss",
                "needs each item in one column: set sequence_training or full_softmax",
            ));
        }
        if self.full_softmax && (self.negatives > 0 || self.logq_correction) {
            return Err(setting_error(
                "full_softmax",
                "scores every item, so negatives and logq_correction do not apply: drop them",
            ));
        }
        if self.beta_1 >= 1.0 || self.beta_2 >= 1.0 {
            return Err(setting_error(
                "beta_1 and beta_2",
                "expected values below 1",
            ));
        }
        Ok(())
    }
}

/// Everything a training run is told: the model's options and the
/// training's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    pub model: ModelOptions,
    pub train: TrainConfig,
}

/// The largest config file (`--config`) read: a file of every key is a
/// few KiB; anything near this is not a config file.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Missing, not a regular file, too large, not text.
    #[error(transparent)]
    Read(#[from] crate::files::ReadError),
    #[error("{}: not a valid seqrec config: {error}", .path.display())]
    Invalid {
        path: std::path::PathBuf,
        error: SettingError,
    },
}

/// The named starting points of `Settings::preset`.
pub const PRESETS: [&str; 3] = ["parity", "best", "sasrec"];

impl Settings {
    /// A named starting point, applied over `self`: `parity` is the
    /// reference (keeping the seed and threads); `best` is the combination
    /// that measured best (README, "Beyond the reference").
    pub fn preset(&self, name: &str) -> Result<Settings, SettingError> {
        match name {
            "parity" => Ok(Settings {
                model: ModelOptions::default(),
                train: TrainConfig {
                    seed: self.train.seed,
                    threads: self.train.threads,
                    ..TrainConfig::default()
                },
            }),
            "best" => Ok(Settings {
                model: ModelOptions {
                    padding: Padding::Left,
                    mask_padding: true,
                    shared_embeddings: true,
                    ..self.model
                },
                train: TrainConfig {
                    // Dense AdamW measured at least as good as lazy on
                    // ML-100K and clearly better on synthetic data (README,
                    // "Big catalogues"); lazy is for catalogues where the
                    // dense pass over every row dominates the step.
                    optimizer: OptimizerKind::AdamW,
                    epochs: 20,
                    batch_size: 256,
                    learning_rate: 0.003,
                    shuffle: true,
                    remove_accidental_hits: true,
                    logq_correction: true,
                    dropout_input: 0.1,
                    dropout_output: 0.1,
                    warmup_steps: 100,
                    lr_schedule: LrSchedule::Cosine,
                    min_lr_ratio: 0.05,
                    validation: true,
                    patience: 4,
                    ..self.train.clone()
                },
            }),
            // SASRec learning from every step of long histories, scored
            // against every item (docs/training-sequence.md). It trains a
            // fixed 60 epochs on every item but each user's last, without a
            // validation split: on MovieLens-100K that measured better than
            // keeping the second-to-last items out for early stopping.
            // Dropout on the input embeddings (0.2) with 60 epochs instead
            // of 50 measured +0.010 HR@10 over 6 seeds; 70 epochs gain
            // more but take longer than two minutes there.
            "sasrec" => Ok(Settings {
                model: ModelOptions {
                    tower: crate::model::QueryTower::Sasrec,
                    embedding_dim: 64,
                    context_len: 200,
                    padding: Padding::Left,
                    mask_padding: true,
                    shared_embeddings: true,
                    heads: 1,
                    blocks: 2,
                    activation: crate::model::spec::Activation::Relu,
                },
                train: TrainConfig {
                    optimizer: OptimizerKind::AdamW,
                    sequence_training: true,
                    full_softmax: true,
                    exclude_history_in_loss: true,
                    loss: Loss::Softmax,
                    epochs: 60,
                    batch_size: 64,
                    learning_rate: 0.003,
                    shuffle: true,
                    remove_accidental_hits: true,
                    logq_correction: false,
                    negatives: 0,
                    dropout_input: 0.2,
                    dropout_output: 0.0,
                    tower_dropout: 0.2,
                    warmup_steps: 100,
                    lr_schedule: LrSchedule::Cosine,
                    min_lr_ratio: 0.05,
                    validation: false,
                    patience: 0,
                    ..self.train.clone()
                },
            }),
            other => Err(setting_error(
                "preset",
                format!("unknown preset {other:?}: expected parity, best or sasrec"),
            )),
        }
    }

    /// Overlays the config file at `path` (`overlay_toml`), a regular file
    /// of at most `MAX_CONFIG_BYTES`: `seqrec train --config` and Python's
    /// `train(config=...)`.
    pub fn overlay_config_file(&self, path: &std::path::Path) -> Result<Settings, ConfigFileError> {
        let text = crate::files::read_text(path, MAX_CONFIG_BYTES, "a config file")?;
        self.overlay_toml(&text)
            .map_err(|error| ConfigFileError::Invalid {
                path: path.to_path_buf(),
                error,
            })
    }

    /// Overlays the keys of a TOML table (one flat namespace: the model's
    /// keys and the training's): keys it does not name keep their value, an
    /// unknown key is an error that names it.
    ///
    /// The file is the user's: a message says where in it (line and
    /// column) and quotes nothing of it unescaped or unbounded.
    pub fn overlay_toml(&self, text: &str) -> Result<Settings, SettingError> {
        let file: toml::Table = toml::from_str(text).map_err(|e| {
            let at = match e.span() {
                Some(span) => {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                    let line_start = before
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    let column = String::from_utf8_lossy(&before[line_start..])
                        .chars()
                        .count()
                        + 1;
                    format!("line {line}, column {column}: ")
                }
                None => String::new(),
            };
            setting_error(
                "config",
                format!("{at}{}", crate::text::message(e.message())),
            )
        })?;
        self.overlay(file)
    }

    /// Overlays the keys of `table` (see `overlay_toml`).
    pub fn overlay(&self, table: toml::Table) -> Result<Settings, SettingError> {
        let mut model = to_table(&self.model)?;
        let mut train = to_table(&self.train)?;
        for (key, value) in table {
            let in_model = model.contains_key(&key);
            let part = if in_model {
                &mut model
            } else if train.contains_key(&key) {
                &mut train
            } else {
                return Err(setting_error(&crate::text::escaped(&key), "unknown key"));
            };
            // Each value is tried alone, so its error names its key; a
            // value of the wrong type or out of the choices is quoted in
            // the message, escaped and bounded.
            let mut alone = part.clone();
            alone.insert(key.clone(), value.clone());
            let wrong = |e: toml::de::Error| {
                setting_error(
                    &crate::text::escaped(&key),
                    crate::text::message(e.message()),
                )
            };
            if in_model {
                ModelOptions::deserialize(alone).map_err(wrong)?;
            } else {
                TrainConfig::deserialize(alone).map_err(wrong)?;
            }
            part.insert(key, value);
        }
        let whole = |e: toml::de::Error| setting_error("config", crate::text::message(e.message()));
        let model = ModelOptions::deserialize(model).map_err(whole)?;
        let train = TrainConfig::deserialize(train).map_err(whole)?;
        Ok(Settings { model, train })
    }

    /// The settings as one flat TOML table, the form a config file takes.
    pub fn to_toml(&self) -> Result<String, SettingError> {
        let mut table = to_table(&self.model)?;
        table.extend(to_table(&self.train)?);
        // Every float setting is an f32: print its shortest form (0.9, not
        // 0.8999999761581421), which reads back as the same f32.
        for (_, value) in table.iter_mut() {
            if let toml::Value::Float(x) = value {
                if let Ok(short) = (*x as f32).to_string().parse::<f64>() {
                    *x = short;
                }
            }
        }
        toml::to_string(&table).map_err(|e| setting_error("config", e.to_string()))
    }

    pub fn validate(&self) -> Result<(), SettingError> {
        self.model.validate()?;
        self.train.validate()?;
        if self.train.sequence_training
            && self.model.tower == crate::model::QueryTower::Gru
            && self.model.padding == Padding::Right
            && !self.model.mask_padding
        {
            return Err(setting_error(
                "sequence_training",
                "learns the query at every real step, but with right padding and no mask a \
                 served query is the state after the padding steps: set padding = left or \
                 mask_padding = true",
            ));
        }
        Ok(())
    }
}

/// A serialisable settings part as a TOML table (every key present).
fn to_table<T: Serialize>(value: &T) -> Result<toml::Table, SettingError> {
    toml::Table::try_from(value).map_err(|e| setting_error("config", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_schedules() {
        let cfg = TrainConfig {
            learning_rate: 1.0,
            warmup_steps: 10,
            lr_schedule: LrSchedule::Cosine,
            min_lr_ratio: 0.1,
            ..TrainConfig::default()
        };
        assert!((cfg.learning_rate_at(0, 110) - 0.1).abs() < 1e-6);
        assert!((cfg.learning_rate_at(9, 110) - 1.0).abs() < 1e-6);
        assert!((cfg.learning_rate_at(10, 110) - 1.0).abs() < 1e-6);
        assert!((cfg.learning_rate_at(60, 110) - 0.55).abs() < 1e-6);
        assert!((cfg.learning_rate_at(110, 110) - 0.1).abs() < 1e-6);
        let linear = TrainConfig {
            lr_schedule: LrSchedule::Linear,
            ..cfg.clone()
        };
        assert!((linear.learning_rate_at(60, 110) - 0.55).abs() < 1e-6);
        assert!((linear.learning_rate_at(35, 110) - 0.775).abs() < 1e-6);
        let constant = TrainConfig::default();
        assert_eq!(constant.learning_rate_at(500, 1000), constant.learning_rate);
    }

    #[test]
    fn a_toml_overlay_sets_only_its_keys_and_names_unknown_ones() {
        let best = Settings::default().preset("best").unwrap();
        let s = best
            .overlay_toml("epochs = 3\nshuffle = false\npadding = \"right\"\n")
            .unwrap();
        assert_eq!((s.train.epochs, s.train.shuffle), (3, false));
        assert_eq!(s.model.padding, Padding::Right);
        assert!(
            s.model.mask_padding && s.train.validation,
            "untouched keys keep the preset's"
        );
        let err = best.overlay_toml("epoch = 3\n").unwrap_err();
        assert_eq!(err.key, "epoch");
        let err = best.overlay_toml("epochs = \"three\"\n").unwrap_err();
        assert!(err.to_string().contains("epochs"), "{err}");
        // The file's text is quoted escaped, and where it is said by line.
        for (text, want) in [
            ("epochs = 3\nfoo\x1b[2J = 3\n", "config: line 2, column 4: "),
            ("padding = \"\x1b[2Jleft\"\n", "config: line 1, column 12: "),
            // A value the file holds escaped: the key it was given for.
            ("padding = \"\\u001b[2Jleft\"\n", "padding: "),
            ("\"\\u001b[2J\" = 1\n", "\\u{1b}[2J: unknown key"),
        ] {
            let err = best.overlay_toml(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert!(!err.contains('\x1b'), "{text:?}: {err}");
        }
        let long = format!("padding = \"{}\"\n", "x".repeat(100_000));
        let err = best.overlay_toml(&long).unwrap_err().to_string();
        assert!(err.len() < 1000, "{} bytes", err.len());
        // What `--print-config` prints reads back as the same settings.
        let text = s.to_toml().unwrap();
        assert_eq!(Settings::default().overlay_toml(&text).unwrap(), s);
        // Validation names the key.
        let zero = Settings::default()
            .overlay_toml("context_len = 0\n")
            .unwrap();
        assert_eq!(zero.validate().unwrap_err().key, "context_len");
        // A key's own check says what was expected without naming the key
        // again (the error adds it once).
        let threads = Settings::default()
            .overlay_toml("threads = 5000\n")
            .unwrap();
        assert_eq!(
            threads.validate().unwrap_err().to_string(),
            "threads: expected 0 (one per core) to 1024, found 5000"
        );
    }
}
