//! The query towers: the GRU and SASRec.

pub mod gru;
pub mod sasrec;
