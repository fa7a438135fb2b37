//! The GRU query tower.

pub mod cell;

pub use cell::*;
