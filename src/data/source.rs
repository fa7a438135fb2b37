//! Where data comes from: a MovieLens folder (any release), a generic
//! interaction file, or a named dataset fetched into the cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::download;
use super::readers::{self, Catalog, GenericFormat, Interactions, ReadOptions};

#[derive(Debug, Clone)]
pub enum DataSource {
    /// A MovieLens folder or an interaction file.
    Path(PathBuf),
    /// A dataset known to `seqrec fetch`, downloaded on first use.
    Named(String),
}

/// The formats a folder or file can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ratings.dat` + `movies.dat` (`::`, Latin-1): MovieLens-1M and 10M.
    MovieLensDat,
    /// `u.data` + `u.item`: MovieLens-100K.
    MovieLens100k,
    /// `ratings.csv` + `movies.csv`: MovieLens-20M, 25M, 32M, latest.
    MovieLensCsv,
    /// A CSV/TSV interaction file with named columns.
    Generic,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it was read from, for messages and the model file.
    pub origin: String,
    pub format: Format,
    pub interactions: Interactions,
    pub catalog: Catalog,
}

/// Finds the format of `path`: a file is generic; a folder is a MovieLens
/// release by the files in it (or in its only subfolder, as a zip extracts).
pub fn detect(path: &Path) -> Result<(Format, PathBuf)> {
    if path.is_file() {
        return Ok((Format::Generic, path.to_path_buf()));
    }
    if !path.is_dir() {
        bail!("{}: no such file or folder", path.display());
    }
    let probe = |dir: &Path| -> Option<Format> {
        if dir.join("ratings.dat").is_file() {
            Some(Format::MovieLensDat)
        } else if dir.join("u.data").is_file() {
            Some(Format::MovieLens100k)
        } else if dir.join("ratings.csv").is_file() {
            Some(Format::MovieLensCsv)
        } else {
            None
        }
    };
    if let Some(f) = probe(path) {
        return Ok((f, path.to_path_buf()));
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list the folder", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    if let [only] = subdirs.as_slice() {
        if let Some(f) = probe(only) {
            return Ok((f, only.clone()));
        }
    }
    bail!(
        "{}: no MovieLens files found (expected ratings.dat + movies.dat, u.data + u.item, \
         or ratings.csv + movies.csv); for another interaction file, pass the file itself",
        path.display()
    )
}

/// Reads a dataset from a MovieLens folder or interaction file.
pub fn read_path(path: &Path, generic: &GenericFormat, opts: &ReadOptions) -> Result<Dataset> {
    let (format, dir) = detect(path)?;
    let (interactions, mut catalog) = match format {
        Format::MovieLensDat => {
            let movies = dir.join("movies.dat");
            let cat = if movies.is_file() {
                readers::read_ml1m_movies(&movies, opts)?
            } else {
                Catalog::default()
            };
            (
                readers::read_ml1m_ratings(&dir.join("ratings.dat"), opts)?,
                cat,
            )
        }
        Format::MovieLens100k => {
            let items = dir.join("u.item");
            let cat = if items.is_file() {
                readers::read_ml100k_items(&items, opts)?
            } else {
                Catalog::default()
            };
            (
                readers::read_ml100k_ratings(&dir.join("u.data"), opts)?,
                cat,
            )
        }
        Format::MovieLensCsv => {
            let movies = dir.join("movies.csv");
            let cat = if movies.is_file() {
                readers::read_movielens_csv_movies(&movies, opts)?
            } else {
                Catalog::default()
            };
            (
                readers::read_movielens_csv_ratings(&dir.join("ratings.csv"), opts)?,
                cat,
            )
        }
        Format::Generic => readers::read_generic(&dir, generic, opts)?,
    };
    readers::complete_catalog(&mut catalog, &interactions);
    if interactions.is_empty() {
        bail!(
            "{}: no ratings left to use ({} read, {} below the minimum rating, {} malformed)",
            dir.display(),
            interactions.lines_read,
            interactions.below_min_rating,
            interactions.skipped_lines
        );
    }
    Ok(Dataset {
        origin: dir.display().to_string(),
        format,
        interactions,
        catalog,
    })
}

/// Reads `source`, fetching a named dataset into `cache_dir` first if needed.
pub fn load(
    source: &DataSource,
    generic: &GenericFormat,
    opts: &ReadOptions,
    cache_dir: &Path,
    show_progress: bool,
) -> Result<Dataset> {
    match source {
        DataSource::Path(p) => read_path(p, generic, opts),
        DataSource::Named(name) => {
            let dir = download::ensure(name, cache_dir, None, show_progress).with_context(|| {
                format!(
                    "--dataset {name}: not in the cache and not downloadable; offline, unzip the release \
                     yourself and pass its folder instead (e.g. `seqrec train path/to/{name}`)"
                )
            })?;
            let mut ds = read_path(&dir, generic, opts)?;
            ds.origin = name.clone();
            Ok(ds)
        }
    }
}
