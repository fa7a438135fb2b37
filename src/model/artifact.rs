//! A trained model as inference sees it: its definition, its parameters,
//! the catalogue its ids index and the users' histories it was trained on,
//! and where and how its data was read. Everything `recommend`, `evaluate`,
//! `serve`, `export` and Python's recommend need, and nothing of training:
//! the optimiser's state and the epochs' history belong to
//! `train::TrainedModel`, which holds an `Artifact` and adds them. So
//! inference code never imports `train`, and a loaded model never carries
//! two copies of its tables it does not use.

use crate::data::{Catalog, DataSettings, UserHistories};

use super::{ModelSpec, Params};

#[derive(Debug, Clone)]
pub struct Artifact {
    /// The model's one definition (vocabulary, dimension, context, tower).
    pub spec: ModelSpec,
    pub params: Params,
    /// Where the training data came from (a path or a dataset's name).
    pub dataset: String,
    /// The items the ids index: titles, which ids are items, their keys.
    pub catalog: Catalog,
    /// The training data's users and their histories, for `--user`.
    pub users: UserHistories,
    /// How the training data was read, so `evaluate` reads it the same way.
    pub data: DataSettings,
}
