//! A trained model ready to answer "what next?": it turns histories (ids,
//! titles or a known user) into query embeddings and retrieves the top K.
//! `seqrec recommend`, `seqrec evaluate` and `seqrec serve` all use it.

use std::collections::HashMap;
use std::path::Path;

use super::approx::{
    approx_top_k, ApproxIndex, ApproxSettings, IndexChoice, IndexError, IndexSource,
};
use super::{top_k, Candidates, Scored};
use crate::checkpoint::{self, CheckpointError};
use crate::data::{Catalog, UserHistories};
use crate::model::{Artifact, ModelSpec, Params, QueryEncoder};

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
    /// The model's definition, as saved.
    pub spec: ModelSpec,
    pub catalog: Catalog,
    pub params: Params,
    pub users: UserHistories,
    /// The query tower's projected input table, computed once.
    encoder: QueryEncoder,
    allowed: Vec<bool>,
    by_key: HashMap<String, u32>,
    by_title: HashMap<String, Vec<u32>>,
    by_user: HashMap<String, usize>,
    /// The approximate graph `recommend` searches, when one is in use.
    approx: Option<ApproxIndex>,
}

impl Recommender {
    pub fn load(path: &Path) -> Result<Recommender, CheckpointError> {
        Ok(Recommender::new(
            checkpoint::load_for_inference(path)?.artifact,
        ))
    }

    pub fn new(model: Artifact) -> Recommender {
        Recommender::from_parts(model.spec, model.params, model.catalog, model.users)
    }

    /// A recommender over parameters still in training (for metrics between
    /// epochs) or loaded from a file.
    pub fn from_parts(
        spec: ModelSpec,
        params: Params,
        catalog: Catalog,
        users: UserHistories,
    ) -> Recommender {
        let encoder = QueryEncoder::new(&spec, &params);
        let allowed: Vec<bool> = (0..spec.vocab_size)
            .map(|i| i > 0 && catalog.is_item.get(i).copied().unwrap_or(false))
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
            spec,
            catalog,
            params,
            users,
            encoder,
            allowed,
            by_key,
            by_title,
            by_user,
            approx: None,
        }
    }

    /// Items that can be recommended.
    pub fn item_count(&self) -> usize {
        self.allowed.iter().filter(|&&a| a).count()
    }

    /// Puts `recommend` on the approximate graph when `choice` says so for
    /// this catalogue (else on exact top-K), reading the graph from `cache`
    /// or building it there. Returns how the graph was got, or `None` for
    /// exact.
    pub fn use_index(
        &mut self,
        choice: IndexChoice,
        cache: Option<&Path>,
        settings: ApproxSettings,
    ) -> Result<Option<IndexSource>, IndexError> {
        self.approx = None;
        if !choice.approximate(self.item_count()) {
            return Ok(None);
        }
        let (index, source) = ApproxIndex::load_or_build(cache, self.candidates(false), settings)?;
        self.approx = Some(index);
        Ok(Some(source))
    }

    /// The graph `recommend` searches, if any.
    pub fn approx_index(&self) -> Option<&ApproxIndex> {
        self.approx.as_ref()
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

    /// Query vectors (`histories.len() x dim`), through the model's one
    /// query path (`QueryEncoder`, as in training).
    pub fn encode(&self, histories: &[&[u32]]) -> Vec<f32> {
        self.encoder.encode(&self.spec, &self.params, histories)
    }

    /// The candidate table; `parity` allows every id, as the reference's
    /// BruteForceRetrieval does (padding and non-items included).
    pub fn candidates(&self, parity: bool) -> Candidates<'_> {
        Candidates {
            embeddings: &self.params.candidate_embedding,
            dim: self.spec.dim,
            allowed: (!parity).then_some(self.allowed.as_slice()),
        }
    }

    /// Top `k` for each history; `exclude_seen` leaves out every item of the
    /// history itself. On the approximate graph when `use_index` put it
    /// there (never in `parity` mode).
    pub fn recommend(
        &self,
        histories: &[&[u32]],
        k: usize,
        exclude_seen: bool,
        parity: bool,
    ) -> Vec<Vec<Scored>> {
        let queries = self.encode(histories);
        let none: &[u32] = &[];
        let exclude = |q: usize| {
            if exclude_seen {
                histories[q]
            } else {
                none
            }
        };
        match &self.approx {
            // Parity is the reference's brute force, whatever the index.
            Some(index) if !parity => {
                approx_top_k(index, &queries, self.candidates(false), k, exclude)
            }
            _ => top_k(&queries, self.candidates(parity), k, exclude),
        }
    }
}
