//! Where data comes from: a MovieLens folder (any release), a generic
//! interaction file, or a named dataset fetched into the cache. It picks the
//! format and calls that format's reader; a generic log's title file, which
//! may be in another format than the log, is read here, above the formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::columnar::{self, ColumnarKind};
use super::delimited;
use super::download::{self, DownloadError};
use super::movielens;
use super::table::{
    self, Catalog, DataError, GenericFormat, Interactions, ReadOptions, MAX_UNUSED_IDS,
};

/// Why data could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: no such file or folder", path.display())]
    NotFound { path: PathBuf },
    /// A device, FIFO or socket: data is read from a file or a folder.
    #[error(
        "{}: is {kind}, not a regular file or a folder; give the interaction file or the MovieLens folder",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{}: cannot list the folder", path.display())]
    ListFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: no MovieLens files found (expected ratings.dat + movies.dat, u.data + u.item, \
         or ratings.csv + movies.csv); for another interaction file, pass the file itself",
        path.display()
    )]
    NoMovieLensFiles { path: PathBuf },
    /// One file of a MovieLens release, given without the release around it.
    #[error(
        "{}: this is one file of a MovieLens release, and its folder holds no ratings \
         file to go with it; pass the folder holding the whole release (ratings and movies files)",
        path.display()
    )]
    MovieLensFile { path: PathBuf },
    /// Item ids so sparse that most embedding rows would be for no item.
    #[error(
        "{}: item ids go up to {max_id} but only {used} are items, so the model would hold \
         {rows} embedding rows, {unused} of them for no item; renumber the items 1..{used} \
         (`renumber_items`: their ids are kept as keys, and the vocabulary is no longer \
         the reference's)",
        path.display(),
        rows = max_id + 1,
        unused = max_id - used
    )]
    SparseIds {
        path: PathBuf,
        max_id: usize,
        used: usize,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(
        "{}: no ratings left to use ({lines_read} read, {below_min_rating} below the minimum rating, {skipped_lines} malformed)",
        path.display()
    )]
    NoRatings {
        path: PathBuf,
        lines_read: usize,
        below_min_rating: usize,
        skipped_lines: usize,
    },
    /// A named dataset that is neither cached nor downloadable.
    #[error("dataset {name}: {}", offline_hint(name))]
    Fetch {
        name: String,
        #[source]
        source: DownloadError,
    },
}

/// What to do when named dataset `name` cannot be fetched.
pub fn offline_hint(name: &str) -> String {
    format!(
        "not in the cache and not downloadable; offline, unzip the release \
         yourself and pass its folder instead (e.g. `seqrec train path/to/{name}`)"
    )
}

type Result<T, E = SourceError> = std::result::Result<T, E>;

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
    /// A Parquet interaction log with named columns.
    Parquet,
    /// An Arrow IPC interaction log (file or stream) with named columns.
    ArrowIpc,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it was read from, for messages and the model file.
    pub origin: String,
    pub format: Format,
    pub interactions: Interactions,
    pub catalog: Catalog,
}

/// Whether `path` is a file of a MovieLens release by its name (and, for
/// the CSV names that a generic file may share, by its header).
fn is_movielens_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    match name.to_ascii_lowercase().as_str() {
        "ratings.dat" | "movies.dat" | "users.dat" | "u.data" | "u.item" | "u.user" => true,
        "ratings.csv" | "movies.csv" | "tags.csv" | "links.csv" => {
            let mut head = [0u8; 64];
            let n = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                .unwrap_or(0);
            let head = &head[..n];
            let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
            head.starts_with(b"userId,movieId,") || head.starts_with(b"movieId,")
        }
        _ => false,
    }
}

/// Finds the format of `path`: a folder is a MovieLens release by the files
/// in it (or in its only subfolder, as a zip extracts); a file of such a
/// release stands for its folder; any other file is generic.
pub fn detect(path: &Path) -> Result<(Format, PathBuf)> {
    if path.is_file() {
        if !is_movielens_file(path) {
            return Ok((Format::Generic, path.to_path_buf()));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        return match probe(dir) {
            Some(f) => Ok((f, dir.to_path_buf())),
            None => Err(SourceError::MovieLensFile {
                path: path.to_path_buf(),
            }),
        };
    }
    if !path.is_dir() {
        return Err(match std::fs::metadata(path) {
            Ok(meta) => SourceError::NotAFile {
                path: path.to_path_buf(),
                kind: crate::files::kind_of(&meta),
            },
            Err(_) => SourceError::NotFound {
                path: path.to_path_buf(),
            },
        });
    }
    if let Some(f) = probe(path) {
        return Ok((f, path.to_path_buf()));
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| SourceError::ListFolder {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    if let [only] = subdirs.as_slice() {
        if let Some(f) = probe(only) {
            return Ok((f, only.clone()));
        }
    }
    Err(SourceError::NoMovieLensFiles {
        path: path.to_path_buf(),
    })
}

impl Format {
    /// The MovieLens formats, in the order a folder is probed for them.
    const MOVIELENS: [Format; 3] = [
        Format::MovieLensDat,
        Format::MovieLens100k,
        Format::MovieLensCsv,
    ];

    /// A release's ratings file and titles file, by name in its folder
    /// (None for a generic file, which is the one file read).
    pub fn files(self) -> Option<(&'static str, &'static str)> {
        match self {
            Format::MovieLensDat => Some(("ratings.dat", "movies.dat")),
            Format::MovieLens100k => Some(("u.data", "u.item")),
            Format::MovieLensCsv => Some(("ratings.csv", "movies.csv")),
            Format::Generic | Format::Parquet | Format::ArrowIpc => None,
        }
    }
}

/// The MovieLens release in `dir`, by its ratings file. Whatever is at
/// that name counts: one that is no regular file (a FIFO) is refused by
/// its reader, which says so, instead of the folder seeming empty.
fn probe(dir: &Path) -> Option<Format> {
    Format::MOVIELENS.into_iter().find(|f| {
        f.files()
            .is_some_and(|(ratings, _)| dir.join(ratings).exists())
    })
}

/// Reads a dataset from a MovieLens folder or interaction file.
pub fn read_path(path: &Path, generic: &GenericFormat, opts: &ReadOptions) -> Result<Dataset> {
    let (mut format, dir) = detect(path)?;
    let (mut interactions, mut catalog) = match format {
        Format::MovieLensDat => {
            let movies = dir.join("movies.dat");
            let cat = if movies.exists() {
                movielens::read_ml1m_movies(&movies, opts)?
            } else {
                Catalog::default()
            };
            (
                movielens::read_ml1m_ratings(&dir.join("ratings.dat"), opts)?,
                cat,
            )
        }
        Format::MovieLens100k => {
            let items = dir.join("u.item");
            let cat = if items.exists() {
                movielens::read_ml100k_items(&items, opts)?
            } else {
                Catalog::default()
            };
            (
                movielens::read_ml100k_ratings(&dir.join("u.data"), opts)?,
                cat,
            )
        }
        Format::MovieLensCsv => {
            let movies = dir.join("movies.csv");
            let cat = if movies.exists() {
                movielens::read_movielens_csv_movies(&movies, opts)?
            } else {
                Catalog::default()
            };
            (
                movielens::read_movielens_csv_ratings(&dir.join("ratings.csv"), opts)?,
                cat,
            )
        }
        Format::Generic | Format::Parquet | Format::ArrowIpc => {
            let (interactions, mut catalog) = match columnar::sniff(&dir)? {
                Some(kind) => {
                    format = match kind {
                        ColumnarKind::Parquet => Format::Parquet,
                        _ => Format::ArrowIpc,
                    };
                    columnar::read_file(&dir, kind, generic, opts)?
                }
                None => delimited::read_generic(&dir, generic, opts)?,
            };
            add_titles(&mut catalog, generic, opts)?;
            (interactions, catalog)
        }
    };
    if format.files().is_some() {
        // Checked before the catalogue grows to cover every rated id: the
        // rows are what would be allocated, here and again in training.
        let used = used_ids(&catalog, &interactions);
        let max_id = used.len() - 1;
        let count = used.iter().filter(|&&u| u).count();
        if opts.renumber_items {
            renumber(&mut catalog, &mut interactions, &used);
        } else if max_id - count > MAX_UNUSED_IDS && max_id - count > count {
            return Err(SourceError::SparseIds {
                path: dir,
                max_id,
                used: count,
            });
        }
    }
    let origin = dir.display().to_string();
    complete(origin, format, interactions, catalog)
}

/// The dataset of `interactions` read from `origin`, its catalogue
/// covering every rated id; none is an error.
fn complete(
    origin: String,
    format: Format,
    interactions: Interactions,
    mut catalog: Catalog,
) -> Result<Dataset> {
    table::complete_catalog(&mut catalog, &interactions);
    if interactions.is_empty() {
        return Err(SourceError::NoRatings {
            path: PathBuf::from(origin),
            lines_read: interactions.lines_read,
            below_min_rating: interactions.below_min_rating,
            skipped_lines: interactions.skipped_lines,
        });
    }
    Ok(Dataset {
        origin,
        format,
        interactions,
        catalog,
    })
}

/// Reads an interaction log held in memory as an Arrow IPC stream (or
/// file), as a DataFrame or Arrow table from Python arrives; `origin`
/// names it in messages and in the model file.
pub fn read_arrow_ipc_stream(
    bytes: &[u8],
    origin: &str,
    generic: &GenericFormat,
    opts: &ReadOptions,
) -> Result<Dataset> {
    let (interactions, mut catalog) =
        columnar::read_bytes(bytes, Path::new(origin), generic, opts)?;
    add_titles(&mut catalog, generic, opts)?;
    complete(origin.to_string(), Format::ArrowIpc, interactions, catalog)
}

/// Titles the items of a generic log's `catalog` (keyed by the log's item
/// ids) from `generic.titles`, if given: a CSV/TSV or a columnar file,
/// whatever the log's own format. Rows for items the log never rates are
/// left out.
fn add_titles(
    catalog: &mut Catalog,
    generic: &GenericFormat,
    opts: &ReadOptions,
) -> Result<(), DataError> {
    let Some(path) = &generic.titles else {
        return Ok(());
    };
    let Catalog { titles, keys, .. } = catalog;
    let id_of_key: HashMap<&str, usize> = keys
        .iter()
        .flatten()
        .enumerate()
        .skip(1)
        .map(|(id, key)| (key.as_str(), id))
        .collect();
    let mut set_title = |key: &str, title: String| {
        if let Some(&id) = id_of_key.get(key) {
            titles[id] = title;
        }
    };
    match columnar::sniff(path)? {
        Some(kind) => columnar::read_titles(path, kind, generic, opts, &mut set_title),
        None => delimited::read_titles(path, generic, opts, &mut set_title),
    }
}

/// Which ids are items (listed in the item file or rated), by id; id 0,
/// padding, is not. Its length is the largest such id + 1.
fn used_ids(catalog: &Catalog, interactions: &Interactions) -> Vec<bool> {
    let max_rated = interactions.items.iter().copied().max().unwrap_or(0) as usize;
    let mut used = vec![false; max_rated.max(catalog.titles.len().saturating_sub(1)) + 1];
    for (id, &is) in catalog.is_item.iter().enumerate() {
        used[id] |= is;
    }
    for &i in &interactions.items {
        used[i as usize] = true;
    }
    used[0] = false;
    used
}

/// Numbers the `used` ids 1..N in the order of their ids, keeping each
/// id as the item's key and its title.
fn renumber(catalog: &mut Catalog, interactions: &mut Interactions, used: &[bool]) {
    let mut new_id = vec![0u32; used.len()];
    let mut titles = vec![String::new()];
    let mut keys = vec![String::new()];
    for (old, _) in used.iter().enumerate().filter(|(_, &u)| u) {
        new_id[old] = titles.len() as u32;
        titles.push(std::mem::take(
            catalog.titles.get_mut(old).unwrap_or(&mut String::new()),
        ));
        keys.push(old.to_string());
    }
    for i in &mut interactions.items {
        *i = new_id[*i as usize];
    }
    *catalog = Catalog {
        is_item: (0..titles.len()).map(|i| i > 0).collect(),
        titles,
        keys: Some(keys),
    };
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
            let dir = download::ensure(name, cache_dir, None, show_progress).map_err(|source| {
                SourceError::Fetch {
                    name: name.clone(),
                    source,
                }
            })?;
            let mut ds = read_path(&dir, generic, opts)?;
            ds.origin = name.clone();
            Ok(ds)
        }
    }
}
