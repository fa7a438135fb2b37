//! Downloading MovieLens releases into the cache (placeholder; see issue 2).

use std::path::{Path, PathBuf};

/// Makes sure dataset `name` is extracted under `cache_dir` and returns its folder.
/// `mirror` replaces the base URL (tests serve zips from 127.0.0.1).
pub fn ensure(
    name: &str,
    cache_dir: &Path,
    mirror: Option<&str>,
    show_progress: bool,
) -> anyhow::Result<PathBuf> {
    let _ = (cache_dir, mirror, show_progress);
    anyhow::bail!("dataset {name}: download not implemented yet")
}

/// The default cache folder: `$XDG_CACHE_HOME/seqrec` (or the platform's).
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("seqrec")
}
