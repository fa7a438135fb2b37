//! The model's one definition: everything that fixes what a query vector
//! means. It is saved once in the model file, read back whole, and every
//! consumer (batches, the training step, retrieval, the server) reads the
//! context length, padding and masking from here, so training and serving
//! cannot disagree about how a history becomes a query.

use serde::{Deserialize, Serialize};

pub use super::sasrec::Activation;

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

/// The network that turns a window of item ids into a query vector.
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

/// Upper bounds checked before anything is allocated from a spec (a model
/// file's header must not make the reader ask for terabytes).
pub const MAX_DIM: usize = 4096;
pub const MAX_CONTEXT_LEN: usize = 1000;
pub const MAX_BLOCKS: usize = 64;

/// The model's definition. Two specs that are `==` define the same maths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub tower: QueryTower,
    /// The SASRec tower's attention heads, blocks and feed-forward
    /// activation (unused by the GRU; absent from older model files).
    #[serde(default = "default_heads")]
    pub heads: usize,
    #[serde(default = "default_blocks")]
    pub blocks: usize,
    #[serde(default)]
    pub activation: Activation,
}

fn default_heads() -> usize {
    1
}

fn default_blocks() -> usize {
    2
}

/// The part of a spec a user chooses; the vocabulary comes from the data.
/// The defaults are the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOptions {
    pub embedding_dim: usize,
    pub context_len: usize,
    pub padding: Padding,
    pub mask_padding: bool,
    pub shared_embeddings: bool,
    pub tower: QueryTower,
    /// SASRec: attention heads (dividing the embedding size), blocks and
    /// the feed-forward's activation.
    pub heads: usize,
    pub blocks: usize,
    pub activation: Activation,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            embedding_dim: 32,
            context_len: 10,
            padding: Padding::Right,
            mask_padding: false,
            shared_embeddings: false,
            tower: QueryTower::Gru,
            heads: default_heads(),
            blocks: default_blocks(),
            activation: Activation::Relu,
        }
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
            tower: self.tower,
            heads: self.heads,
            blocks: self.blocks,
            activation: self.activation,
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
    pub fn options(&self) -> ModelOptions {
        ModelOptions {
            embedding_dim: self.dim,
            context_len: self.context_len,
            padding: self.padding,
            mask_padding: self.mask_padding,
            shared_embeddings: self.shared_embeddings,
            tower: self.tower,
            heads: self.heads,
            blocks: self.blocks,
            activation: self.activation,
        }
    }

    /// Sizes within bounds; `max_vocab` is the largest vocabulary allowed.
    pub fn validate(&self, max_vocab: usize) -> Result<(), SpecError> {
        self.options().validate()?;
        check_range("vocab_size", self.vocab_size, max_vocab)
    }

    /// The fields where `self` and `other` differ, each as
    /// `(name, self's value, other's value)`.
    pub fn differences(&self, other: &ModelSpec) -> Vec<(&'static str, String, String)> {
        let fields = |s: &ModelSpec| {
            [
                ("vocab_size", s.vocab_size.to_string()),
                ("embedding_dim", s.dim.to_string()),
                ("context_len", s.context_len.to_string()),
                ("padding", format!("{:?}", s.padding).to_lowercase()),
                ("mask_padding", s.mask_padding.to_string()),
                ("shared_embeddings", s.shared_embeddings.to_string()),
                ("tower", format!("{:?}", s.tower).to_lowercase()),
                ("heads", s.heads.to_string()),
                ("blocks", s.blocks.to_string()),
                ("activation", format!("{:?}", s.activation).to_lowercase()),
            ]
        };
        fields(self)
            .into_iter()
            .zip(fields(other))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| (a.0, a.1, b.1))
            .collect()
    }

    /// Whether a history of `len` items is read before padding steps that
    /// wash it out: with right padding and no mask (the reference's
    /// settings) the GRU's last steps read padding, so every short history
    /// gets nearly the same answer. Left padding, or a mask, reads the
    /// newest item last.
    pub fn short_history_washed_out(&self, len: usize) -> bool {
        self.tower == QueryTower::Gru
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

    /// The tower's weights beyond the item embedding, as one flat tensor
    /// (SASRec's blocks; the GRU keeps its own named tensors).
    pub fn tower_weight_count(&self) -> usize {
        match self.tower {
            QueryTower::Gru => 0,
            QueryTower::Sasrec => {
                super::sasrec::weight_count(self.context_len, self.dim, self.blocks)
            }
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
