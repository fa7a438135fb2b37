//! `seqrec train --plot FILE.png`: losses and ranking metrics per epoch.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// The font ships with seqrec (DejaVu Sans, see assets/DejaVuSans.LICENSE),
/// so a plot needs no system fonts.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub struct EpochPoint {
    pub epoch: usize,
    pub loss: f64,
    pub val_loss: f64,
    pub hr10: Option<f64>,
    pub ndcg10: Option<f64>,
}

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// A line: its legend, colour, and the figure it takes from each epoch.
type Series = (&'static str, RGBColor, fn(&EpochPoint) -> Option<f64>);

fn plot_error(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: cannot draw the plot: {e}", path.display())
}

/// One panel: the given series against the epoch.
fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    points: &[EpochPoint],
    series: &[Series],
    path: &Path,
) -> Result<()> {
    let epochs = points.iter().map(|p| p.epoch).max().unwrap_or(1).max(2) as f64;
    let y = range(
        points
            .iter()
            .flat_map(|p| series.iter().filter_map(|s| (s.2)(p))),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..epochs, y)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for &(name, color, get) in series {
        let line = points
            .iter()
            .filter_map(|p| get(p).map(|v| (p.epoch as f64, v)));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    Ok(())
}

/// Draws two panels (losses; HR@10 and NDCG@10) into a PNG, written to a
/// temporary file and renamed.
pub fn draw(path: &Path, points: &[EpochPoint]) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the bundled font is unreadable"))?;
    // plotters picks the image format from the extension.
    let tmp = tempfile::Builder::new()
        .prefix(".seqrec-")
        .suffix(".png")
        .tempfile_in(crate::files::parent_dir(path))?;
    {
        let root = BitMapBackend::new(tmp.path(), (1200, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let (left, right) = root.split_horizontally(600);
        let losses: [Series; 2] = [
            ("train loss", BLUE, |p| Some(p.loss)),
            ("val_loss", RED, |p| Some(p.val_loss)),
        ];
        panel(&left, "loss", points, &losses, path)?;
        let metrics: [Series; 2] = [
            ("HR@10", GREEN, |p| p.hr10),
            ("NDCG@10", MAGENTA, |p| p.ndcg10),
        ];
        panel(
            &right,
            "HR@10 and NDCG@10 (seen items excluded)",
            points,
            &metrics,
            path,
        )?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    crate::files::persist(tmp, path)
        .map_err(|e| anyhow!("{}: cannot move the plot into place: {e}", path.display()))?;
    Ok(())
}
