//! The one way seqrec shows long work: an indicatif bar on stderr (never
//! stdout, which carries summaries), hidden when `show` is false (`--quiet`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` units (a spinner when unknown) drawn with `template`
/// (indicatif's syntax).
pub fn bar(total: Option<u64>, template: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    // A bad template is a programming error, but a plain bar beats a panic.
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}
