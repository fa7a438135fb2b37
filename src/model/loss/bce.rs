//! Binary cross-entropy against sampled negatives, the loss of the SASRec
//! paper and of the Keras-RS SASRec example:
//! `−log σ(s⁺) − Σ⁻ log(1 − σ(s⁻))`, each negative scored on its own, with
//! no calibration and no logit offset (`gbce` at `β = 1` without its prior
//! offset). The kernel is gBCE's, given those constants.

use super::gbce::gbce_row;
use super::{ColumnLayout, RowColumns, RowLoss};

/// Plain BCE: a row's negatives are its columns from `first_negative` on
/// (the label columns before it are other rows' positives).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bce {
    pub first_negative: usize,
}

impl RowLoss for Bce {
    fn for_columns(self, columns: ColumnLayout) -> Bce {
        Bce {
            first_negative: columns.label_columns,
        }
    }

    fn row(&self, s: &mut [f32], row: &RowColumns) -> f64 {
        gbce_row(
            s,
            row.positive,
            row.column_ids,
            row.column_bias,
            1.0,
            self.first_negative,
            0.0,
            row.excluded,
            row.scale,
        )
    }
}
