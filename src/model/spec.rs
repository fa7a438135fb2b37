//! The model's one definition: everything that fixes what a query vector
//! means. It is saved once in the model file, read back whole, and every
//! consumer (batches, the training step, retrieval, the server) reads the
//! context length, padding and masking from here, so training and serving
//! cannot disagree about how a history becomes a query.

use serde::{Deserialize, Serialize};

use crate::settings::settings_group;

/// Which side of a short history the padding ids (0) go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// The reference: real items first, then padding ids (0).
    #[default]
    Right,
    /// Padding first, so the newest item is always the last GRU step.
    Left,
}

/// A tower's name: the `--tower` flag and the model file's `tower` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueryTower {
    /// Item embedding, then a Keras 3 GRU; the query is its last state.
    #[default]
    Gru,
    /// Item embedding, then SASRec's causal self-attention blocks; the
    /// query is the output at the newest item.
    Sasrec,
}

/// The tower a `ModelSpec` defines, with its own hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerSpec {
    Gru,
    /// `heads` divides the embedding size; `activation` is the
    /// feed-forward's.
    SasRec {
        blocks: usize,
        heads: usize,
        activation: Activation,
    },
}

/// The flat hyper-parameters a tower without them reads as (the values
/// older model files and `ModelOptions` default to).
pub const DEFAULT_HEADS: usize = 1;
pub const DEFAULT_BLOCKS: usize = 2;

/// The feed-forward's activation (SASRec).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Gelu,
}

impl TowerSpec {
    pub fn kind(&self) -> QueryTower {
        match self {
            TowerSpec::Gru => QueryTower::Gru,
            TowerSpec::SasRec { .. } => QueryTower::Sasrec,
        }
    }

    /// The spec of tower `kind` from the flat options (`ModelOptions`, the
    /// model file); a tower ignores the ones it has no use for.
    pub fn from_flat(
        kind: QueryTower,
        heads: usize,
        blocks: usize,
        activation: Activation,
    ) -> TowerSpec {
        match kind {
            QueryTower::Gru => TowerSpec::Gru,
            QueryTower::Sasrec => TowerSpec::SasRec {
                blocks,
                heads,
                activation,
            },
        }
    }

    /// The flat options of this spec: `(tower, heads, blocks, activation)`,
    /// the defaults where the tower has none.
    pub fn flat(&self) -> (QueryTower, usize, usize, Activation) {
        match *self {
            TowerSpec::Gru => (
                QueryTower::Gru,
                DEFAULT_HEADS,
                DEFAULT_BLOCKS,
                Activation::default(),
            ),
            TowerSpec::SasRec {
                blocks,
                heads,
                activation,
            } => (QueryTower::Sasrec, heads, blocks, activation),
        }
    }
}

/// Upper bounds checked before anything is allocated from a spec (a model
/// file's header must not make the reader ask for terabytes).
pub const MAX_DIM: usize = 4096;
pub const MAX_CONTEXT_LEN: usize = 1000;
pub const MAX_BLOCKS: usize = 64;

/// The model's definition. Two specs that are `==` define the same maths.
/// Stored in the model file as `ModelSpecFile`'s flat fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ModelSpecFile", into = "ModelSpecFile")]
pub struct ModelSpec {
    /// Rows of each embedding table: largest item id + 1 (id 0 is padding).
    pub vocab_size: usize,
    /// Embedding size, which is also the GRU's size (EMBEDDING_DIM).
    pub dim: usize,
    /// Items of history the query tower reads (MAX_CONTEXT_LENGTH).
    pub context_len: usize,
    pub padding: Padding,
    /// Padding steps leave the GRU state unchanged (off in parity mode).
    /// SASRec always masks padding.
    pub mask_padding: bool,
    /// Candidates are scored with the query tower's item embedding (one
    /// table for both towers, GRU4Rec's "constrained embedding").
    pub shared_embeddings: bool,
    /// The query tower and its own hyper-parameters.
    pub tower: TowerSpec,
}

/// `ModelSpec` as the model file holds it (version 2): the tower's
/// hyper-parameters as flat fields, which files from before SASRec lack.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpecFile {
    vocab_size: usize,
    dim: usize,
    context_len: usize,
    padding: Padding,
    mask_padding: bool,
    shared_embeddings: bool,
    tower: QueryTower,
    #[serde(default = "default_heads")]
    heads: usize,
    #[serde(default = "default_blocks")]
    blocks: usize,
    #[serde(default)]
    activation: Activation,
}

impl From<ModelSpecFile> for ModelSpec {
    fn from(f: ModelSpecFile) -> ModelSpec {
        ModelSpec {
            vocab_size: f.vocab_size,
            dim: f.dim,
            context_len: f.context_len,
            padding: f.padding,
            mask_padding: f.mask_padding,
            shared_embeddings: f.shared_embeddings,
            tower: TowerSpec::from_flat(f.tower, f.heads, f.blocks, f.activation),
        }
    }
}

impl From<ModelSpec> for ModelSpecFile {
    fn from(s: ModelSpec) -> ModelSpecFile {
        let (tower, heads, blocks, activation) = s.tower.flat();
        ModelSpecFile {
            vocab_size: s.vocab_size,
            dim: s.dim,
            context_len: s.context_len,
            padding: s.padding,
            mask_padding: s.mask_padding,
            shared_embeddings: s.shared_embeddings,
            tower,
            heads,
            blocks,
            activation,
        }
    }
}

fn default_heads() -> usize {
    DEFAULT_HEADS
}

fn default_blocks() -> usize {
    DEFAULT_BLOCKS
}

settings_group! {
    /// The part of a spec a user chooses; the vocabulary comes from the
    /// data. The defaults are the reference's. Ranges are checked by
    /// `validate` (some depend on each other).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct ModelOptions / ModelFlags {
        /// Embedding and GRU size.
        embedding_dim: usize = 32;
        /// Items of history the model reads (MAX_CONTEXT_LENGTH).
        context_len: usize = 10;
        /// Padding side of short contexts.
        padding: Padding = Padding::Right, flag(value_enum);
        /// Padding steps leave the GRU state unchanged (SASRec always masks padding).
        mask_padding: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// One item table for the query input and the candidates (GRU4Rec's constrained embedding).
        shared_embeddings: bool = false, flag(value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true");
        /// The query tower: gru (the reference's) or sasrec (causal self-attention blocks).
        tower: QueryTower = QueryTower::Gru, flag(value_enum);
        /// SASRec: attention heads (a divisor of embedding_dim).
        heads: usize = default_heads();
        /// SASRec: self-attention blocks.
        blocks: usize = default_blocks();
        /// SASRec: the feed-forward's activation.
        activation: Activation = Activation::Relu, flag(value_enum);
    }
}

/// A spec that cannot define a model; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: expected {expected}, found {found}")]
    OutOfRange {
        field: &'static str,
        expected: String,
        found: usize,
    },
}

fn check_range(field: &'static str, value: usize, max: usize) -> Result<(), SpecError> {
    if value == 0 || value > max {
        return Err(SpecError::OutOfRange {
            field,
            expected: format!("a value in 1..={max}"),
            found: value,
        });
    }
    Ok(())
}

impl ModelOptions {
    /// The spec of a model of these options over `vocab_size` ids.
    pub fn spec(&self, vocab_size: usize) -> ModelSpec {
        ModelSpec {
            vocab_size,
            dim: self.embedding_dim,
            context_len: self.context_len,
            padding: self.padding,
            mask_padding: self.mask_padding,
            shared_embeddings: self.shared_embeddings,
            tower: TowerSpec::from_flat(self.tower, self.heads, self.blocks, self.activation),
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        check_range("embedding_dim", self.embedding_dim, MAX_DIM)?;
        check_range("context_len", self.context_len, MAX_CONTEXT_LEN)?;
        check_range("blocks", self.blocks, MAX_BLOCKS)?;
        check_range("heads", self.heads, self.embedding_dim)?;
        if !self.embedding_dim.is_multiple_of(self.heads) {
            return Err(SpecError::OutOfRange {
                field: "heads",
                expected: format!("a divisor of embedding_dim ({})", self.embedding_dim),
                found: self.heads,
            });
        }
        Ok(())
    }
}

impl ModelSpec {
    /// The options of this spec; a tower's hyper-parameters it has no use
    /// for read as their defaults.
    pub fn options(&self) -> ModelOptions {
        let (tower, heads, blocks, activation) = self.tower.flat();
        ModelOptions {
            embedding_dim: self.dim,
            context_len: self.context_len,
            padding: self.padding,
            mask_padding: self.mask_padding,
            shared_embeddings: self.shared_embeddings,
            tower,
            heads,
            blocks,
            activation,
        }
    }

    /// Sizes within bounds; `max_vocab` is the largest vocabulary allowed.
    pub fn validate(&self, max_vocab: usize) -> Result<(), SpecError> {
        self.options().validate()?;
        check_range("vocab_size", self.vocab_size, max_vocab)
    }

    /// The fields where `self` and `other` differ, each as
    /// `(name, self's value, other's value)`: the vocabulary, then every
    /// key of `ModelOptions` in its table's order, shown as the config
    /// file writes it (a key added to the table is compared too).
    pub fn differences(&self, other: &ModelSpec) -> Vec<(&'static str, String, String)> {
        let shown = |s: &ModelSpec| -> Vec<String> {
            let options = serde_json::to_value(s.options()).unwrap_or_default();
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            std::iter::once(s.vocab_size.to_string())
                .chain(ModelOptions::KEYS.iter().map(|k| text(&options[*k])))
                .collect()
        };
        std::iter::once("vocab_size")
            .chain(ModelOptions::KEYS.iter().copied())
            .zip(shown(self).into_iter().zip(shown(other)))
            .filter(|(_, (a, b))| a != b)
            .map(|(name, (a, b))| (name, a, b))
            .collect()
    }

    /// Whether a history of `len` items is read before padding steps that
    /// wash it out: with right padding and no mask (the reference's
    /// settings) the GRU's last steps read padding, so every short history
    /// gets nearly the same answer. Left padding, or a mask, reads the
    /// newest item last.
    pub fn short_history_washed_out(&self, len: usize) -> bool {
        !self.tower.always_masks_padding()
            && self.padding == Padding::Right
            && !self.mask_padding
            && len < self.context_len
    }

    /// The window step holding the newest of `len` real items (the last
    /// step when there are none).
    pub fn newest_step(&self, len: usize) -> usize {
        match self.padding {
            Padding::Left => self.context_len - 1,
            Padding::Right => len.clamp(1, self.context_len) - 1,
        }
    }

    /// The one place a history becomes the model's input window: the last
    /// `context_len` items of `history` (oldest first) into `out` (length
    /// `context_len`), padded with 0 on the spec's side; ids outside the
    /// vocabulary read as padding. Returns the number of real items.
    pub fn cut_window(&self, history: &[u32], out: &mut [u32]) -> usize {
        let l = self.context_len;
        let recent = &history[history.len().saturating_sub(l)..];
        out.fill(0);
        let offset = match self.padding {
            Padding::Right => 0,
            Padding::Left => l - recent.len(),
        };
        for (slot, &id) in out[offset..].iter_mut().zip(recent) {
            *slot = if (id as usize) < self.vocab_size {
                id
            } else {
                0
            };
        }
        recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_keeps_the_newest_items_on_the_padding_side_asked() {
        let right = ModelOptions {
            context_len: 4,
            ..ModelOptions::default()
        }
        .spec(10);
        let left = ModelSpec {
            padding: Padding::Left,
            ..right
        };
        let mut out = [9; 4];
        assert_eq!(right.cut_window(&[1, 2], &mut out), 2);
        assert_eq!(out, [1, 2, 0, 0]);
        assert_eq!(left.cut_window(&[1, 2], &mut out), 2);
        assert_eq!(out, [0, 0, 1, 2]);
        assert_eq!(left.cut_window(&[1, 2, 3, 4, 5, 6], &mut out), 4);
        assert_eq!(out, [3, 4, 5, 6]);
        // An id outside the vocabulary reads as padding.
        right.cut_window(&[3, 12], &mut out);
        assert_eq!(out, [3, 0, 0, 0]);
        assert_eq!(right.cut_window(&[], &mut out), 0);
        assert_eq!(out, [0; 4]);
    }

    /// The model file keeps the flat form 406c112 wrote (version 2), and
    /// reads files from before SASRec, which lack the tower's fields.
    #[test]
    fn a_spec_is_stored_in_the_flat_form_of_version_2() {
        let gru = ModelOptions {
            context_len: 4,
            ..ModelOptions::default()
        }
        .spec(10);
        let sasrec = ModelSpec {
            tower: TowerSpec::SasRec {
                blocks: 3,
                heads: 2,
                activation: Activation::Gelu,
            },
            ..gru
        };
        let flat = |tower: &str, heads, blocks, activation: &str| {
            format!(
                "{{\"vocab_size\":10,\"dim\":32,\"context_len\":4,\"padding\":\"right\",\
                 \"mask_padding\":false,\"shared_embeddings\":false,\"tower\":\"{tower}\",\
                 \"heads\":{heads},\"blocks\":{blocks},\"activation\":\"{activation}\"}}"
            )
        };
        for (spec, text) in [
            (gru, flat("gru", 1, 2, "relu")),
            (sasrec, flat("sasrec", 2, 3, "gelu")),
        ] {
            assert_eq!(serde_json::to_string(&spec).unwrap(), text);
            assert_eq!(serde_json::from_str::<ModelSpec>(&text).unwrap(), spec);
        }
        let before_sasrec =
            "{\"vocab_size\":10,\"dim\":32,\"context_len\":4,\"padding\":\"right\",\
                             \"mask_padding\":false,\"shared_embeddings\":false,\"tower\":\"gru\"}";
        assert_eq!(
            serde_json::from_str::<ModelSpec>(before_sasrec).unwrap(),
            gru
        );
        let unknown = before_sasrec.replace('}', ",\"extra\":1}");
        assert!(serde_json::from_str::<ModelSpec>(&unknown).is_err());
    }

    #[test]
    fn differences_name_every_changed_key_with_its_values_as_written() {
        let a = ModelOptions::default().spec(10);
        assert!(a.differences(&a).is_empty());
        let b = ModelOptions {
            embedding_dim: 8,
            padding: Padding::Left,
            tower: QueryTower::Sasrec,
            activation: Activation::Gelu,
            ..ModelOptions::default()
        }
        .spec(12);
        let found = a.differences(&b);
        let expected = [
            ("vocab_size", "10", "12"),
            ("embedding_dim", "32", "8"),
            ("padding", "right", "left"),
            ("tower", "gru", "sasrec"),
            ("activation", "relu", "gelu"),
        ];
        assert_eq!(
            found,
            expected
                .iter()
                .map(|&(k, x, y)| (k, x.to_string(), y.to_string()))
                .collect::<Vec<_>>()
        );
    }
}
