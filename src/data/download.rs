//! Downloading MovieLens releases from GroupLens into a local cache.
//!
//! A dataset lives in `cache_dir/<folder>` (e.g. `cache_dir/ml-1m`). That
//! folder only ever appears through a single `rename` of a completely
//! extracted, verified archive, so its existence is the "done" marker: a
//! download that fails half way leaves nothing behind but an error.
//!
//! Steps: stream the zip into a temporary file in the cache folder while
//! hashing it, check its length (Content-Length) and SHA-256, extract it into
//! a temporary folder next to the destination, then rename the dataset folder
//! into place. Temporaries are removed on every failure path.
//!
//! Nothing a server sends is trusted for size: the download stops at the
//! release's known size (or `MAX_DOWNLOAD_BYTES`), and extraction stops at
//! `MAX_UNPACKED_BYTES`, at `MAX_EXPANSION` times the archive's size and at
//! `MAX_ENTRIES` entries, whichever comes first, so a small archive cannot
//! fill the disk (a zip bomb).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::text::{escaped, quoted};

/// Why a dataset could not be fetched. File errors keep the `io::Error` as
/// their source; `Fetch` and `Extract` wrap the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "unknown dataset {}; known datasets: {}{}",
        quoted(name),
        known_dataset_names(),
        unknown_hint(name)
    )]
    UnknownDataset { name: String },
    #[error("{} exists but is not a folder; remove it to fetch {dataset}", path.display())]
    NotAFolder { path: PathBuf, dataset: String },
    /// Any failure of `ensure` past the checks above, with where it went.
    #[error("fetching dataset {dataset} into {}", cache_dir.display())]
    Fetch {
        dataset: String,
        cache_dir: PathBuf,
        #[source]
        source: Box<DownloadError>,
    },
    #[error("destination {} has no usable folder name", path.display())]
    BadDestination { path: PathBuf },
    #[error("expected SHA-256 {} is not 64 hex digits", quoted(hex))]
    BadSha256 { hex: String },
    /// A file operation: `action` says what was being done to `path`
    /// ("creating", "opening", "writing", ...).
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("moving {} to {}", from.display(), to.display())]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("HTTP {code} {} from {url}", escaped(status_text))]
    Http {
        url: String,
        code: u16,
        status_text: String,
    },
    /// The server could not be reached (or the connection failed).
    #[error("could not download {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} sent an invalid Content-Length header: {}", quoted(value))]
    BadContentLength {
        url: String,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// The body is (or claims to be) larger than the download may be.
    #[error(
        "download of {url} is larger than the {limit} bytes allowed{}",
        claimed.map(|c| format!(" (it announces {c} bytes)")).unwrap_or_default()
    )]
    TooLarge {
        url: String,
        limit: u64,
        claimed: Option<u64>,
    },
    #[error("download of {url} was cut short: expected {expected} bytes, got {received}")]
    CutShort {
        url: String,
        expected: u64,
        received: u64,
    },
    #[error("download of {url} failed after {received} bytes: {error}")]
    ReadFailed {
        url: String,
        received: u64,
        error: io::Error,
    },
    #[error("download of {url} is incomplete: expected {expected} bytes, got {received}")]
    Incomplete {
        url: String,
        expected: u64,
        received: u64,
    },
    #[error("SHA-256 mismatch for {url}: expected {expected}, got {got}")]
    Sha256Mismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("size mismatch for {url}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("extracting {url}")]
    Extract {
        url: String,
        #[source]
        source: Box<DownloadError>,
    },
    #[error("the download is not a readable zip archive")]
    NotAZip(#[source] zip::result::ZipError),
    #[error("reading entry #{index} of the archive")]
    ZipEntry {
        index: usize,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("refusing unsafe path {} in the archive", quoted(name))]
    UnsafePath { name: String },
    #[error("refusing symbolic link {} in the archive", quoted(name))]
    Symlink { name: String },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    /// Extraction stopped at `limit` bytes: the archive unpacks to more.
    #[error(
        "the archive unpacks to more than {limit} bytes (at most {MAX_EXPANSION} times its \
         {archive_bytes} bytes and at most {MAX_UNPACKED_BYTES} bytes); refusing it as a zip bomb"
    )]
    UnpacksTooLarge { limit: u64, archive_bytes: u64 },
    #[error("extracting {} to {}", quoted(name), to.display())]
    ExtractEntry {
        name: String,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `found` lists the archive's names, each already quoted.
    #[error("archive {url} has no top-level folder '{folder}/' (it has: {found})")]
    MissingFolder {
        url: String,
        folder: String,
        found: String,
    },
}

impl DownloadError {
    /// Whether the mirror could not be reached at all (offline, wrong host),
    /// as opposed to answering with something wrong.
    pub fn is_unreachable(&self) -> bool {
        match self {
            DownloadError::Unreachable { .. } => true,
            DownloadError::Fetch { source, .. } | DownloadError::Extract { source, .. } => {
                source.is_unreachable()
            }
            _ => false,
        }
    }
}

type Result<T, E = DownloadError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io {
        action,
        path,
        source,
    }
}

/// Where GroupLens publishes the MovieLens zips.
pub const DEFAULT_MIRROR: &str = "https://files.grouplens.org/datasets/movielens";

/// Environment variable naming a base URL to use instead of [`DEFAULT_MIRROR`]
/// when no mirror is passed explicitly (e.g. an offline mirror).
pub const MIRROR_ENV_VAR: &str = "SEQREC_MIRROR";

/// How long to wait for a connection, and for each read once connected.
/// A read timeout rather than a whole-request one, so a slow but steady
/// download of a 250 MB release is not cut off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest download of a release whose size is not recorded. Every
/// MovieLens zip is below 300 MB.
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// The most bytes an archive may unpack to. The largest release seqrec
/// fetches, ml-25m, unpacks to about 1.2 GB.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// The most an archive may unpack to per byte of archive. MovieLens' CSV
/// and `.dat` files deflate about 4 to 1; a zip bomb reaches 1000 to 1.
pub const MAX_EXPANSION: u64 = 100;

/// The most entries an archive may hold (a MovieLens release has under 30):
/// millions of empty files would exhaust the disk's inodes, not its bytes.
pub const MAX_ENTRIES: usize = 10_000;

/// A MovieLens release that `ensure` knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownDataset {
    /// The name users type, e.g. `ml-1m`.
    pub name: &'static str,
    /// The file name on the mirror, e.g. `ml-1m.zip`.
    pub zip_name: &'static str,
    /// The top-level folder inside the zip, which becomes `cache_dir/<folder>`.
    pub folder: &'static str,
    /// Lower-case hex SHA-256 of the zip. Every release `ensure` fetches is
    /// checked against one (GroupLens itself only publishes MD5 sums).
    pub sha256: &'static str,
    /// Size of the zip in bytes, where known: the download stops there.
    pub size: Option<u64>,
}

/// Every dataset name `ensure` accepts.
///
/// Where the sums come from (GroupLens publishes MD5 sums only; these
/// SHA-256 sums are recorded by other projects that fetch the same zips):
/// - ml-100k, ml-1m, ml-20m, ml-25m, ml-latest-small, sums and sizes:
///   tensorflow/datasets, `tensorflow_datasets/url_checksums/movielens.txt`
///   (commit 1c076ac3); the same sums for ml-100k, ml-1m, ml-25m and
///   ml-latest-small are in ankane/disco-cli, `src/download.rs`.
/// - ml-32m: ankane/disco-cli, `src/download.rs` (commit 42f5617a), which
///   records no size.
/// - ml-1m again: `../shared/SPEC.md` (the reference's data).
///
/// ml-latest-small has not changed since its 2018 release; should GroupLens
/// reissue it, the fetch fails on the sum and says so (unzip it yourself and
/// pass its folder). ml-latest is not here at all: it is reissued as the
/// catalogue grows, so no fixed sum can check it (`unknown_hint` says so).
pub const KNOWN_DATASETS: &[KnownDataset] = &[
    KnownDataset {
        name: "ml-100k",
        zip_name: "ml-100k.zip",
        folder: "ml-100k",
        sha256: "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        size: Some(4_924_029),
    },
    KnownDataset {
        name: "ml-1m",
        zip_name: "ml-1m.zip",
        folder: "ml-1m",
        sha256: "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        size: Some(5_917_549),
    },
    KnownDataset {
        name: "ml-20m",
        zip_name: "ml-20m.zip",
        folder: "ml-20m",
        sha256: "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        size: Some(198_702_078),
    },
    KnownDataset {
        name: "ml-25m",
        zip_name: "ml-25m.zip",
        folder: "ml-25m",
        sha256: "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        size: Some(261_978_986),
    },
    KnownDataset {
        name: "ml-32m",
        zip_name: "ml-32m.zip",
        folder: "ml-32m",
        sha256: "e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee",
        size: None,
    },
    KnownDataset {
        name: "ml-latest-small",
        zip_name: "ml-latest-small.zip",
        folder: "ml-latest-small",
        sha256: "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        size: Some(978_202),
    },
];

/// Looks up a dataset by name (ASCII case-insensitive).
pub fn find_dataset(name: &str) -> Option<&'static KnownDataset> {
    KNOWN_DATASETS
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name.trim()))
}

/// The names of all known datasets, comma-separated, for error messages.
pub fn known_dataset_names() -> String {
    KNOWN_DATASETS
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a name that is not fetchable is not, where there is a reason.
fn unknown_hint(name: &str) -> &'static str {
    if name.trim().eq_ignore_ascii_case("ml-latest") {
        "; ml-latest is reissued as it grows, so there is no fixed SHA-256 to check \
         it against: download it yourself and pass its folder"
    } else {
        ""
    }
}

/// Makes sure dataset `name` is extracted under `cache_dir` and returns its
/// folder (e.g. `cache_dir/ml-1m`). Does nothing if that folder already exists.
///
/// `mirror` replaces the base URL [`DEFAULT_MIRROR`]; the zip is fetched from
/// `<mirror>/<name>.zip`. When `mirror` is `None`, the environment variable
/// `SEQREC_MIRROR` ([`MIRROR_ENV_VAR`]) is used if set and non-empty, which is
/// handy for offline mirrors. `show_progress` draws a progress bar on stderr.
///
/// Every release is checked against its recorded SHA-256 before it is
/// unpacked.
pub fn ensure(
    name: &str,
    cache_dir: &Path,
    mirror: Option<&str>,
    show_progress: bool,
) -> Result<PathBuf> {
    let dataset = find_dataset(name).ok_or_else(|| DownloadError::UnknownDataset {
        name: name.to_string(),
    })?;
    ensure_dataset(dataset, cache_dir, mirror, show_progress)
}

/// `ensure` for a release described by the caller (a mirror's own build
/// of a release, with its own sum).
pub fn ensure_dataset(
    dataset: &KnownDataset,
    cache_dir: &Path,
    mirror: Option<&str>,
    show_progress: bool,
) -> Result<PathBuf> {
    let dest_folder = cache_dir.join(dataset.folder);
    if dest_folder.is_dir() {
        return Ok(dest_folder);
    }
    if dest_folder.exists() {
        return Err(DownloadError::NotAFolder {
            path: dest_folder,
            dataset: dataset.name.to_string(),
        });
    }

    let base = resolve_mirror(mirror);
    let url = format!("{}/{}", base.trim_end_matches('/'), dataset.zip_name);
    let expected = Expected {
        sha256: Some(dataset.sha256),
        size: dataset.size,
    };
    download_and_extract_checked(&url, expected, &dest_folder, show_progress).map_err(|e| {
        DownloadError::Fetch {
            dataset: dataset.name.to_string(),
            cache_dir: cache_dir.to_path_buf(),
            source: Box::new(e),
        }
    })?;
    Ok(dest_folder)
}

/// The default cache folder: `$XDG_CACHE_HOME/seqrec` (or the platform's).
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("seqrec")
}

/// The base URL to download from: the explicit mirror, else `SEQREC_MIRROR`,
/// else GroupLens.
pub fn resolve_mirror(mirror: Option<&str>) -> String {
    if let Some(m) = mirror {
        return m.to_string();
    }
    match std::env::var(MIRROR_ENV_VAR) {
        Ok(m) if !m.trim().is_empty() => m.trim().to_string(),
        _ => DEFAULT_MIRROR.to_string(),
    }
}

/// Downloads the zip at `url`, checks it against `expected_sha256` (lower or
/// upper-case hex; `None` downloads unverified and warns on stderr), and
/// extracts it so that the archive's top-level folder named like
/// `dest_folder`'s last component becomes `dest_folder`. Other top-level
/// entries of the archive are discarded.
///
/// Does nothing if `dest_folder` already exists. On failure nothing is left
/// behind: the temporary zip and extraction folder (hidden files next to
/// `dest_folder`) are removed.
pub fn download_and_extract(
    url: &str,
    expected_sha256: Option<&str>,
    dest_folder: &Path,
    show_progress: bool,
) -> Result<()> {
    let expected = Expected {
        sha256: expected_sha256,
        size: None,
    };
    download_and_extract_checked(url, expected, dest_folder, show_progress)
}

/// What a download must match, where known.
#[derive(Debug, Clone, Copy)]
struct Expected<'a> {
    sha256: Option<&'a str>,
    size: Option<u64>,
}

fn download_and_extract_checked(
    url: &str,
    expected: Expected<'_>,
    dest_folder: &Path,
    show_progress: bool,
) -> Result<()> {
    if dest_folder.is_dir() {
        return Ok(());
    }
    let expected_sha256 = match expected.sha256 {
        Some(hex) => Some(normalize_sha256(hex)?),
        None => None,
    };
    let folder_name = dest_folder
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DownloadError::BadDestination {
            path: dest_folder.to_path_buf(),
        })?
        .to_string();
    // Temporaries live next to the destination so the final rename stays on
    // one filesystem, which is what makes it atomic.
    let parent = match dest_folder.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err("creating cache folder", &parent))?;

    if expected_sha256.is_none() {
        eprintln!(
            "warning: no SHA-256 is recorded for {url}; it will be downloaded WITHOUT integrity verification"
        );
    }

    let zip_temp = TempPath::new_file(&parent, &folder_name, "zip")?;
    let limit = expected.size.unwrap_or(MAX_DOWNLOAD_BYTES);
    let sha256 = download_to_file(url, zip_temp.path(), limit, show_progress)?;

    match &expected_sha256 {
        Some(want) if *want != sha256 => {
            return Err(DownloadError::Sha256Mismatch {
                url: url.to_string(),
                expected: want.clone(),
                got: sha256,
            })
        }
        Some(_) => {}
        None => eprintln!("warning: {url} was not verified; its SHA-256 is {sha256}"),
    }
    if let Some(want_size) = expected.size {
        let got_size = fs::metadata(zip_temp.path())
            .map_err(io_err("reading size of", zip_temp.path()))?
            .len();
        if got_size != want_size {
            return Err(DownloadError::SizeMismatch {
                url: url.to_string(),
                expected: want_size,
                got: got_size,
            });
        }
    }

    let extract_temp = TempPath::new_dir(&parent, &folder_name, "extract")?;
    extract_zip(zip_temp.path(), extract_temp.path()).map_err(|e| DownloadError::Extract {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    drop(zip_temp);

    let extracted = extract_temp.path().join(&folder_name);
    if !extracted.is_dir() {
        return Err(DownloadError::MissingFolder {
            url: url.to_string(),
            found: list_names(extract_temp.path()),
            folder: folder_name,
        });
    }
    if let Err(err) = fs::rename(&extracted, dest_folder) {
        // Another process may have finished the same download meanwhile;
        // its complete folder is as good as ours.
        if !dest_folder.is_dir() {
            return Err(DownloadError::Move {
                from: extracted,
                to: dest_folder.to_path_buf(),
                source: err,
            });
        }
    }
    drop(extract_temp);
    Ok(())
}

/// Checks that `hex` looks like a SHA-256 and returns it in lower case.
fn normalize_sha256(hex: &str) -> Result<String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DownloadError::BadSha256 {
            hex: hex.to_string(),
        });
    }
    Ok(hex.to_ascii_lowercase())
}

/// Streams `url` into `path` and returns the body's lower-case hex SHA-256.
/// Fails if the body is shorter or longer than its Content-Length, or
/// longer than `limit` bytes (refused unread when it announces so).
fn download_to_file(url: &str, path: &Path, limit: u64, show_progress: bool) -> Result<String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .user_agent(concat!("seqrec/", env!("CARGO_PKG_VERSION")))
        .build();
    // Ask for the bytes as stored: a transparently decompressed body would
    // not match Content-Length or the published hash.
    let response = match agent.get(url).set("Accept-Encoding", "identity").call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(DownloadError::Http {
                url: url.to_string(),
                code,
                status_text: r.status_text().to_string(),
            })
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(DownloadError::Unreachable {
                url: url.to_string(),
                detail: describe_transport(&t),
            })
        }
    };

    let encoded = response
        .header("Content-Encoding")
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let content_length = match response.header("Content-Length") {
        Some(v) if !encoded => {
            Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|source| DownloadError::BadContentLength {
                        url: url.to_string(),
                        value: v.to_string(),
                        source,
                    })?,
            )
        }
        _ => None,
    };

    if let Some(claimed) = content_length.filter(|&c| c > limit) {
        return Err(DownloadError::TooLarge {
            url: url.to_string(),
            limit,
            claimed: Some(claimed),
        });
    }
    let progress = make_progress_bar(content_length.or(Some(limit)), show_progress);
    let result = copy_hashing(
        response.into_reader(),
        path,
        url,
        content_length,
        limit,
        &progress,
    );
    match &result {
        Ok(_) => progress.finish_and_clear(),
        Err(_) => progress.abandon(),
    }
    result
}

/// Copies `body` into a new file at `path`, hashing as it goes, and checks
/// the byte count against `content_length` and `limit`.
fn copy_hashing(
    mut body: impl Read,
    path: &Path,
    url: &str,
    content_length: Option<u64>,
    limit: u64,
    progress: &ProgressBar,
) -> Result<String> {
    let file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => match content_length {
                // ureq reports a connection closed before Content-Length
                // bytes as UnexpectedEof; say how short it was.
                Some(want) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(DownloadError::CutShort {
                        url: url.to_string(),
                        expected: want,
                        received,
                    })
                }
                _ => {
                    return Err(DownloadError::ReadFailed {
                        url: url.to_string(),
                        received,
                        error: e,
                    })
                }
            },
        };
        received += n as u64;
        if received > limit {
            return Err(DownloadError::TooLarge {
                url: url.to_string(),
                limit,
                claimed: None,
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err("writing", path))?;
        progress.inc(n as u64);
    }
    out.flush().map_err(io_err("writing", path))?;
    if let Some(want) = content_length {
        if want != received {
            return Err(DownloadError::Incomplete {
                url: url.to_string(),
                expected: want,
                received,
            });
        }
    }
    Ok(hex_lower(&hasher.finalize()))
}

/// A transport error without the URL, which ureq's Display repeats.
fn describe_transport(err: &ureq::Transport) -> String {
    let mut text = err.kind().to_string();
    if let Some(message) = err.message() {
        text.push_str(": ");
        text.push_str(message);
    }
    if let Some(source) = std::error::Error::source(err) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

fn make_progress_bar(total: Option<u64>, show_progress: bool) -> ProgressBar {
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    let bar = crate::progress::bar(total, template, show_progress);
    bar.set_message("downloading");
    bar
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts every entry of the zip at `zip_path` under `into`, refusing
/// entries whose path would escape it (zip-slip), symbolic links, and an
/// archive that unpacks beyond the limits (module docs).
fn extract_zip(zip_path: &Path, into: &Path) -> Result<()> {
    let file = File::open(zip_path).map_err(io_err("opening", zip_path))?;
    let archive_bytes = file
        .metadata()
        .map_err(io_err("reading size of", zip_path))?
        .len();
    let limit = MAX_UNPACKED_BYTES.min(archive_bytes.saturating_mul(MAX_EXPANSION));
    let too_large = || DownloadError::UnpacksTooLarge {
        limit,
        archive_bytes,
    };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(DownloadError::NotAZip)?;
    if archive.len() > MAX_ENTRIES {
        return Err(DownloadError::TooManyEntries { limit: MAX_ENTRIES });
    }
    // The sizes the archive declares let most bombs be refused before a
    // byte is written; the bytes actually unpacked are counted below, as
    // declarations can lie.
    let mut declared: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|source| DownloadError::ZipEntry { index, source })?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > limit {
        return Err(too_large());
    }
    let mut unpacked: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|source| DownloadError::ZipEntry { index, source })?;
        let name = entry.name().to_string();
        let Some(relative) = safe_relative_path(&name) else {
            return Err(DownloadError::UnsafePath { name });
        };
        if entry.is_symlink() {
            return Err(DownloadError::Symlink { name });
        }
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = into.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(io_err("creating", &target))?;
            continue;
        }
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        }
        let out = File::create(&target).map_err(io_err("creating", &target))?;
        let mut out = BufWriter::new(out);
        // One byte past what is left tells "exactly at the limit" from "over".
        let left = limit - unpacked;
        let written = io::copy(&mut (&mut entry).take(left + 1), &mut out)
            .and_then(|n| out.flush().map(|_| n))
            .map_err(|source| DownloadError::ExtractEntry {
                name,
                to: target,
                source,
            })?;
        if written > left {
            return Err(too_large());
        }
        unpacked += written;
    }
    Ok(())
}

/// Turns a zip entry name into a relative path, or `None` if it is absolute,
/// has a drive prefix, goes up with `..`, or contains a NUL byte. Both `/`
/// and `\` count as separators, since zips made on Windows use either.
pub fn safe_relative_path(entry_name: &str) -> Option<PathBuf> {
    if entry_name.contains('\0') || entry_name.starts_with(['/', '\\']) {
        return None;
    }
    let mut path = PathBuf::new();
    for part in entry_name.split(['/', '\\']) {
        match part {
            "" | "." => continue,
            ".." => return None,
            // A colon is a drive ("C:") or stream separator on Windows.
            p if p.contains(':') => return None,
            p => {
                let mut components = Path::new(p).components();
                match (components.next(), components.next()) {
                    (Some(Component::Normal(_)), None) => path.push(p),
                    _ => return None,
                }
            }
        }
    }
    Some(path)
}

/// Up to ten names in `dir`, quoted (they come from the archive), for
/// error messages.
fn list_names(dir: &Path) -> String {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| quoted(&e.file_name().to_string_lossy()))
            .collect(),
        Err(_) => Vec::new(),
    };
    if names.is_empty() {
        return "nothing".to_string();
    }
    names.sort();
    names.truncate(10);
    names.join(", ")
}

/// A temporary file or folder that is removed when dropped, so every early
/// return (and panic) cleans up after itself.
struct TempPath {
    path: PathBuf,
    is_dir: bool,
}

impl TempPath {
    fn new_file(parent: &Path, stem: &str, kind: &str) -> Result<Self> {
        let path = unique_temp_name(parent, stem, kind);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("creating temporary file", &path))?;
        Ok(Self {
            path,
            is_dir: false,
        })
    }

    fn new_dir(parent: &Path, stem: &str, kind: &str) -> Result<Self> {
        let path = unique_temp_name(parent, stem, kind);
        fs::create_dir(&path).map_err(io_err("creating temporary folder", &path))?;
        Ok(Self { path, is_dir: true })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        // Best effort: there is no one to report a failed cleanup to here.
        let _ = if self.is_dir {
            fs::remove_dir_all(&self.path)
        } else {
            fs::remove_file(&self.path)
        };
    }
}

/// A hidden name next to the destination that no other process or thread
/// will pick: pid, time and a counter.
fn unique_temp_name(parent: &Path, stem: &str, kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    parent.join(format!(
        ".{stem}.{kind}.{}-{nanos}-{count}.tmp",
        std::process::id()
    ))
}
