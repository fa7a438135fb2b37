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

/// One panel: the given series against the epoch. Returns the epoch
/// labels drawn, which are whole numbers, each once.
fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    points: &[EpochPoint],
    series: &[Series],
    path: &Path,
) -> Result<Vec<String>> {
    // Integer coordinates give integer ticks; a float axis labelled "{:.0}"
    // showed "1 1 1 1 1 2 2 2".
    let epochs = points.iter().map(|p| p.epoch).max().unwrap_or(1).max(2) as i32;
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
        .build_cartesian_2d(1..epochs, y)
        .map_err(|e| plot_error(path, e))?;
    let labels = std::cell::RefCell::new(Vec::new());
    let label = |x: &i32| {
        labels.borrow_mut().push(x.to_string());
        x.to_string()
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.min(12) as usize)
        .x_label_formatter(&label)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for &(name, color, get) in series {
        let line = points
            .iter()
            .filter_map(|p| get(p).map(|v| (p.epoch as i32, v)));
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
    Ok(labels.into_inner())
}

/// The plot is a PNG; a file name with another extension would hold a PNG
/// under a false name, so it is refused before training.
pub fn check_path(path: &Path) -> Result<()> {
    let png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !png {
        return Err(anyhow!(
            "--plot {}: the plot is a PNG image; give a file name ending in .png",
            path.display()
        ));
    }
    Ok(())
}

/// Draws the losses, and HR@10 and NDCG@10 beside them when the run
/// measured them (`--eval-every` or `--validation`), into a PNG written to
/// a temporary file and renamed. Returns the epoch labels of each panel.
pub fn draw(path: &Path, points: &[EpochPoint]) -> Result<Vec<Vec<String>>> {
    check_path(path)?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the bundled font is unreadable"))?;
    let with_metrics = points
        .iter()
        .any(|p| p.hr10.is_some() || p.ndcg10.is_some());
    // plotters picks the image format from the extension.
    let tmp = crate::files::temp_file_beside_as(path, "png")?;
    let mut labels = Vec::new();
    {
        let width = if with_metrics { 1200 } else { 600 };
        let root = BitMapBackend::new(tmp.path(), (width, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let (left, right) = root.split_horizontally(600);
        let losses: [Series; 2] = [
            ("train loss", BLUE, |p| Some(p.loss)),
            ("val_loss", RED, |p| Some(p.val_loss)),
        ];
        labels.push(panel(&left, "loss", points, &losses, path)?);
        if with_metrics {
            let metrics: [Series; 2] = [
                ("HR@10", GREEN, |p| p.hr10),
                ("NDCG@10", MAGENTA, |p| p.ndcg10),
            ];
            labels.push(panel(
                &right,
                "HR@10 and NDCG@10 (seen items excluded)",
                points,
                &metrics,
                path,
            )?);
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    crate::files::persist(tmp, path)
        .map_err(|e| anyhow!("{}: cannot move the plot into place: {e}", path.display()))?;
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(epochs: usize, metrics: bool) -> Vec<EpochPoint> {
        (1..=epochs)
            .map(|e| EpochPoint {
                epoch: e,
                loss: 7.0 - e as f64 * 0.1,
                val_loss: 7.1 - e as f64 * 0.1,
                hr10: metrics.then_some(0.1 + e as f64 * 0.01),
                ndcg10: metrics.then_some(0.05 + e as f64 * 0.01),
            })
            .collect()
    }

    /// The PNG's width, from its IHDR chunk.
    fn png_width(path: &Path) -> u32 {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        u32::from_be_bytes(b[16..20].try_into().unwrap())
    }

    #[test]
    fn epochs_are_labelled_with_whole_numbers_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        for epochs in [1, 3, 8, 40] {
            let labels = draw(&path, &points(epochs, true)).unwrap();
            assert_eq!(labels.len(), 2);
            for panel in labels {
                let mut seen = std::collections::HashSet::new();
                assert!(panel.len() >= 2, "{epochs}: {panel:?}");
                for l in &panel {
                    let n: i32 = l.parse().unwrap_or_else(|_| panic!("{epochs}: {panel:?}"));
                    assert!(
                        (1..=epochs.max(2) as i32).contains(&n) && seen.insert(n),
                        "{panel:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_metrics_panel_is_drawn_only_when_measured_and_only_png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        assert_eq!(draw(&path, &points(3, false)).unwrap().len(), 1);
        assert_eq!(png_width(&path), 600);
        draw(&path, &points(3, true)).unwrap();
        assert_eq!(png_width(&path), 1200);
        let jpg = dir.path().join("p.jpg");
        let e = draw(&jpg, &points(3, false)).unwrap_err().to_string();
        assert!(e.contains(".png") && !jpg.exists(), "{e}");
        assert!(draw(&dir.path().join("P.PNG"), &points(2, false)).is_ok());
    }
}
