//! A trained model ready to answer "what next?": it turns histories (ids,
//! titles or a known user) into query embeddings and retrieves the top K.
//! `seqrec recommend`, `seqrec evaluate` and `seqrec serve` all use it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use rayon::prelude::*;

use super::{top_k, Candidates, Scored};
use crate::data::batches::Padding;
use crate::data::Catalog;
use crate::model::gru::{self, GruCache, GruShape};
use crate::model::io::{self, SavedModel, UserHistories};
use crate::model::{embedding, ModelConfig, Params};

/// Why a history could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown item {0:?}: not in the model's catalogue")]
    UnknownItem(String),
    #[error("no item has the title {0:?}")]
    UnknownTitle(String),
    #[error("several items have the title {0:?} (ids {1}): give ids instead")]
    AmbiguousTitle(String, String),
    #[error("unknown user {0:?}: not in the model's training data")]
    UnknownUser(String),
}

pub struct Recommender {
    pub config: ModelConfig,
    pub padding: Padding,
    pub mask_padding: bool,
    pub catalog: Catalog,
    pub params: Params,
    pub users: UserHistories,
    /// `E·W + b_in` for every id, computed once.
    projected: Vec<f32>,
    allowed: Vec<bool>,
    by_key: HashMap<String, u32>,
    by_title: HashMap<String, Vec<u32>>,
    by_user: HashMap<String, usize>,
}

impl Recommender {
    pub fn load(path: &Path) -> Result<Recommender> {
        Ok(Recommender::new(io::load(path)?))
    }

    pub fn new(saved: SavedModel) -> Recommender {
        let padding = saved.meta.train.window().padding;
        let mask_padding = saved.meta.train.forward_options().mask_padding;
        let catalog = saved.meta.catalog();
        Recommender::from_parts(
            saved.state.model,
            saved.state.params,
            catalog,
            padding,
            mask_padding,
            saved.users,
        )
    }

    /// A recommender over parameters still in training (for metrics between
    /// epochs) or loaded from a file.
    pub fn from_parts(
        cfg: ModelConfig,
        params: Params,
        catalog: Catalog,
        padding: Padding,
        mask_padding: bool,
        users: UserHistories,
    ) -> Recommender {
        let mut projected = vec![0.0; cfg.vocab_size * 3 * cfg.dim];
        embedding::project_table(
            &params.query_embedding,
            &params.kernel,
            &params.input_bias,
            cfg.dim,
            &mut projected,
            1,
        );
        let allowed: Vec<bool> = (0..cfg.vocab_size)
            .map(|i| i > 0 && catalog.is_item[i])
            .collect();
        let by_key = match &catalog.keys {
            Some(keys) => keys
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, k)| (k.clone(), i as u32))
                .collect(),
            None => HashMap::new(),
        };
        let mut by_title: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, t) in catalog.titles.iter().enumerate().skip(1) {
            if !t.is_empty() {
                by_title.entry(t.to_lowercase()).or_default().push(i as u32);
            }
        }
        let by_user = users
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        Recommender {
            config: cfg,
            padding,
            mask_padding,
            catalog,
            params,
            users,
            projected,
            allowed,
            by_key,
            by_title,
            by_user,
        }
    }

    /// An item id from what a user typed: the original key for renumbered
    /// datasets, else the numeric id.
    pub fn item_id(&self, key: &str) -> Result<u32, QueryError> {
        let key = key.trim();
        let id = if self.catalog.keys.is_some() {
            self.by_key.get(key).copied()
        } else {
            key.parse::<u32>().ok()
        };
        match id {
            Some(i) if self.is_item(i) => Ok(i),
            _ => Err(QueryError::UnknownItem(key.to_string())),
        }
    }

    pub fn is_item(&self, id: u32) -> bool {
        self.allowed.get(id as usize).copied().unwrap_or(false)
    }

    /// An item id by exact title (case-insensitive).
    pub fn title_id(&self, title: &str) -> Result<u32, QueryError> {
        match self
            .by_title
            .get(&title.trim().to_lowercase())
            .map(Vec::as_slice)
        {
            Some([id]) => Ok(*id),
            Some(ids) if !ids.is_empty() => Err(QueryError::AmbiguousTitle(
                title.to_string(),
                ids.iter()
                    .map(|&i| self.catalog.key(i))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            _ => Err(QueryError::UnknownTitle(title.to_string())),
        }
    }

    /// The whole known history of a user of the training data, oldest first.
    pub fn user_history(&self, user: &str) -> Result<&[u32], QueryError> {
        self.by_user
            .get(user.trim())
            .map(|&u| self.users.get(u))
            .ok_or_else(|| QueryError::UnknownUser(user.to_string()))
    }

    /// Query embeddings (`histories.len() x dim`) from the last
    /// `context_len` items of each history, laid out as in training.
    pub fn encode(&self, histories: &[&[u32]]) -> Vec<f32> {
        let (l, d) = (self.config.context_len, self.config.dim);
        let mut out = vec![0.0f32; histories.len() * d];
        const CHUNK: usize = 256;
        out.par_chunks_mut(CHUNK * d)
            .zip(histories.par_chunks(CHUNK))
            .for_each(|(out, hs)| {
                let rows = hs.len();
                let mut ids = vec![0u32; l * rows];
                for (b, h) in hs.iter().enumerate() {
                    let recent = &h[h.len().saturating_sub(l)..];
                    let offset = match self.padding {
                        Padding::Right => 0,
                        Padding::Left => l - recent.len(),
                    };
                    for (t, &id) in recent.iter().enumerate() {
                        let id = if (id as usize) < self.config.vocab_size {
                            id
                        } else {
                            0
                        };
                        ids[(offset + t) * rows + b] = id;
                    }
                }
                let mask: Option<Vec<f32>> = self.mask_padding.then(|| {
                    ids.iter()
                        .map(|&i| if i == 0 { 0.0 } else { 1.0 })
                        .collect()
                });
                let shape = GruShape {
                    batch: rows,
                    steps: l,
                    hidden: d,
                };
                let mut cache = GruCache::default();
                gru::forward(
                    &self.projected,
                    &ids,
                    &self.params.recurrent_kernel,
                    &self.params.recurrent_bias,
                    mask.as_deref(),
                    shape,
                    &mut cache,
                );
                out.copy_from_slice(cache.output(shape));
            });
        out
    }

    /// The candidate table; `parity` allows every id, as the reference's
    /// BruteForceRetrieval does (padding and non-items included).
    pub fn candidates(&self, parity: bool) -> Candidates<'_> {
        Candidates {
            embeddings: &self.params.candidate_embedding,
            dim: self.config.dim,
            allowed: (!parity).then_some(self.allowed.as_slice()),
        }
    }

    /// Top `k` for each history; `exclude_seen` leaves out every item of the
    /// history itself.
    pub fn recommend(
        &self,
        histories: &[&[u32]],
        k: usize,
        exclude_seen: bool,
        parity: bool,
    ) -> Vec<Vec<Scored>> {
        let queries = self.encode(histories);
        let none: &[u32] = &[];
        top_k(&queries, self.candidates(parity), k, |q| {
            if exclude_seen {
                histories[q]
            } else {
                none
            }
        })
    }
}
