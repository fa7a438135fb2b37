//! The types and helpers every input format shares: what a reader returns
//! (`Interactions`, `Catalog`), how it fails (`DataError`), the options it
//! reads by (`ReadOptions`, `GenericFormat`), and the pieces that make two
//! formats read the same log the same way: user numbering (`KeyIndex`),
//! the rating filter and bad-line policy (`Collector`), timestamp and
//! number parsing, and text decoding.
//!
//! The format modules (`movielens`, `delimited`, `columnar`) import this
//! one and never each other, so no format can come to depend on another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::text::{escaped, quoted};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}:{line}: {msg}", file.display())]
    Malformed {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A header without a column the reader needs. `setting` names the
    /// `GenericFormat` field that chose the column (None: the format fixes
    /// it); `suggest_delimiter` is set when the header looks like one column
    /// holding another delimiter.
    #[error(
        "{}:1: header has no column {}{}; columns are {}{}",
        file.display(),
        quoted(column),
        setting.map(|s| format!(" (the {s} setting)")).unwrap_or_default(),
        column_list(columns),
        suggest_delimiter.map(delimiter_hint).unwrap_or_default()
    )]
    MissingColumn {
        file: PathBuf,
        column: String,
        setting: Option<&'static str>,
        columns: Vec<String>,
        suggest_delimiter: Option<u8>,
    },
    /// A row of a columnar file (Parquet, Arrow) that breaks a rule;
    /// `row` counts the file's rows from 1.
    #[error("{}: row {row}: {msg}", file.display())]
    BadRow {
        file: PathBuf,
        row: usize,
        msg: String,
    },
    /// A columnar file without a column the reader needs (`setting` as in
    /// `MissingColumn`).
    #[error(
        "{}: no column {}{}; its columns are {}",
        file.display(),
        quoted(column),
        setting.map(|s| format!(" (the {s} setting)")).unwrap_or_default(),
        column_list(columns)
    )]
    NoSuchColumn {
        file: PathBuf,
        column: String,
        setting: Option<&'static str>,
        columns: Vec<String>,
    },
    /// A column wanted by name that the file holds more than once (pandas
    /// and Arrow allow it): which one is meant cannot be told.
    #[error(
        "{}: column {} appears {count} times{}; seqrec reads columns by name, so rename all but one",
        file.display(),
        quoted(column),
        setting.map(|s| format!(" (the {s} setting)")).unwrap_or_default()
    )]
    DuplicateColumn {
        file: PathBuf,
        column: String,
        setting: Option<&'static str>,
        count: usize,
    },
    /// A column of a type the reader cannot take as what it stands for.
    #[error("{}: column {}: {msg}", file.display(), quoted(column))]
    ColumnType {
        file: PathBuf,
        column: String,
        msg: String,
    },
    /// A file that its format's reader refused as a whole.
    #[error("{}: not a readable {format} file: {}", file.display(), crate::text::message(msg))]
    Unreadable {
        file: PathBuf,
        format: &'static str,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// How many of a header's columns a message lists.
const SHOWN_COLUMNS: usize = 20;

/// A header's column names for a message: each escaped and bounded (they
/// come from the file), the first `SHOWN_COLUMNS` of them.
pub fn column_list(columns: &[String]) -> String {
    let mut out: Vec<String> = columns
        .iter()
        .take(SHOWN_COLUMNS)
        .map(|c| escaped(c))
        .collect();
    if columns.len() > SHOWN_COLUMNS {
        out.push(format!("… ({} columns)", columns.len()));
    }
    out.join(", ")
}

/// " (the header is one column holding tabs: set the delimiter to tab)".
fn delimiter_hint(d: u8) -> String {
    match d {
        b'\t' => " (the header is one column holding tabs: set the delimiter to tab)".into(),
        d => {
            let c = d as char;
            format!(" (the header is one column holding `{c}`: set the delimiter to '{c}')")
        }
    }
}

/// Opens a data file for reading: a regular file only, refused at once
/// (never waited on, never read without end) when it is a FIFO, a device
/// or a folder (`files::open_regular`).
pub(super) fn open_data(path: &Path) -> std::io::Result<std::fs::File> {
    crate::files::open_regular(path).map(|(file, _)| file)
}

pub(super) fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        file: file.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Ratings below this are dropped while reading (the reference's MIN_RATING).
    pub min_rating: Option<f32>,
    /// Count and skip malformed lines instead of failing on the first.
    pub skip_bad_lines: bool,
    /// Number a MovieLens release's item ids 1..N (their ids kept as keys)
    /// instead of using them as they are. Generic files are always
    /// renumbered.
    pub renumber_items: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            min_rating: Some(2.0),
            skip_bad_lines: false,
            renumber_items: false,
        }
    }
}

/// The largest numeric item id accepted. Ids are embedding rows, so an id
/// is memory: sparse or huge ids are renumbered 1..N (`renumber_items`, and
/// always in a generic file, whose ids are strings).
pub const MAX_ITEM_ID: u32 = 10_000_000;

/// How many embedding rows may stand for ids that are no item before a
/// release's ids count as sparse (`source` then asks for `renumber_items`).
/// MovieLens' own releases leave about 200,000 ids unused (ML-32M: ids up
/// to 292,757 for 87,585 movies).
pub const MAX_UNUSED_IDS: usize = 1_000_000;

/// Kept ratings in file order, as parallel columns so each rating is stored once.
#[derive(Debug, Default, Clone)]
pub struct Interactions {
    /// Dense user index, numbered in order of first appearance.
    pub users: Vec<u32>,
    /// Item id as the model sees it (the MovieLens id, or a dense 1..N id).
    pub items: Vec<u32>,
    pub timestamps: Vec<i64>,
    /// The user id as written in the file, by dense index.
    pub user_keys: Vec<String>,
    /// Data lines read (header and blank lines excluded).
    pub lines_read: usize,
    /// Ratings dropped by the minimum-rating filter.
    pub below_min_rating: usize,
    /// Malformed lines skipped (only with `skip_bad_lines`).
    pub skipped_lines: usize,
}

impl Interactions {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What each item id means. Id 0 is padding and never an item.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Title by id ("" where unknown); its length is the vocabulary size.
    pub titles: Vec<String>,
    /// Whether the id is a real item (listed in the item file or rated).
    pub is_item: Vec<bool>,
    /// The item's original key for datasets whose ids were renumbered.
    pub keys: Option<Vec<String>>,
}

impl Catalog {
    /// Number of embedding rows: largest id + 1 (MovieLens' `movies_count + 1`).
    pub fn vocab_size(&self) -> usize {
        self.titles.len()
    }
    pub fn num_items(&self) -> usize {
        self.is_item.iter().filter(|&&b| b).count()
    }
    pub fn title(&self, id: u32) -> &str {
        self.titles
            .get(id as usize)
            .map(|s| s.as_str())
            .unwrap_or("")
    }
    /// The id as a user knows it: the original key when ids were renumbered.
    pub fn key(&self, id: u32) -> String {
        match &self.keys {
            Some(k) => k.get(id as usize).cloned().unwrap_or_default(),
            None => id.to_string(),
        }
    }

    /// The untitled catalogue of a log whose items got ids 1..N in the
    /// order of `item_keys` (index 0: padding); `source` adds the titles.
    pub(super) fn of_item_keys(item_keys: Vec<String>) -> Catalog {
        let mut cat = Catalog::default();
        cat.cover(&[]);
        cat.grow_to(item_keys.len().saturating_sub(1));
        for id in 1..item_keys.len() {
            cat.is_item[id] = true;
        }
        cat.keys = Some(item_keys);
        cat
    }

    pub(super) fn grow_to(&mut self, id: usize) {
        if self.titles.len() <= id {
            self.titles.resize(id + 1, String::new());
            self.is_item.resize(id + 1, false);
        }
    }

    pub(super) fn set(&mut self, id: u32, title: String) {
        self.grow_to(id as usize);
        self.titles[id as usize] = title;
        self.is_item[id as usize] = true;
    }

    /// Makes every rated id a known item and the vocabulary cover them.
    pub(super) fn cover(&mut self, items: &[u32]) {
        if self.titles.is_empty() {
            self.grow_to(0);
        }
        let max = items.iter().copied().max().unwrap_or(0) as usize;
        self.grow_to(max);
        for &i in items {
            self.is_item[i as usize] = true;
        }
    }
}

/// Maps keys (user ids; a columnar file's item ids too) to dense indices
/// 0.. in order of first appearance, keeping each key's text.
#[derive(Default)]
pub(super) struct KeyIndex {
    small: Vec<u32>,
    other: HashMap<String, u32>,
    keys: Vec<String>,
}

impl KeyIndex {
    const SMALL_LIMIT: u64 = 1 << 24;

    pub(super) fn numeric(&mut self, key: u64) -> u32 {
        if key < Self::SMALL_LIMIT {
            let k = key as usize;
            if self.small.len() <= k {
                self.small.resize(k + 1, u32::MAX);
            }
            if self.small[k] == u32::MAX {
                self.small[k] = self.keys.len() as u32;
                self.keys.push(key.to_string());
            }
            self.small[k]
        } else {
            self.text(&key.to_string())
        }
    }

    /// An integer key of any integer type's range.
    pub(super) fn int(&mut self, key: i128) -> u32 {
        match u64::try_from(key) {
            Ok(k) => self.numeric(k),
            Err(_) => self.text(&key.to_string()),
        }
    }

    /// The keys by index.
    pub(super) fn into_keys(self) -> Vec<String> {
        self.keys
    }

    pub(super) fn text(&mut self, key: &str) -> u32 {
        if let Ok(n) = key.parse::<u64>() {
            if n < Self::SMALL_LIMIT && n.to_string() == key {
                return self.numeric(n);
            }
        }
        if let Some(&i) = self.other.get(key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.other.insert(key.to_string(), i);
        self.keys.push(key.to_string());
        i
    }
}

/// Latin-1 bytes to text: each byte is the code point of the same value.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// UTF-8 where valid, else Latin-1 (older MovieLens CSVs mix both).
pub(super) fn utf8_or_latin1(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => latin1(bytes),
    }
}

pub(super) fn parse_num<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// Timestamps are integers; decimal seconds are accepted and truncated.
/// A value outside the 64-bit range is refused: `as` would saturate it to
/// the end of time without a word.
pub(super) fn parse_timestamp(field: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(field).ok()?.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().and_then(timestamp_of_float))
}

/// A float timestamp truncated to an integer, or None outside the 64-bit
/// range (or NaN).
pub(super) fn timestamp_of_float(v: f64) -> Option<i64> {
    // -2^63 and 2^63 are exact in f64; the range is [-2^63, 2^63).
    const END: f64 = 9_223_372_036_854_775_808.0;
    (-END..END).contains(&v).then_some(v as i64)
}

/// What a timestamp must be, for messages.
pub(super) const TIMESTAMP_EXPECTED: &str = "an integer number of seconds within the 64-bit range";

/// Collects kept ratings, applying the rating filter and the bad-line policy.
pub(super) struct Collector<'o> {
    opts: &'o ReadOptions,
    file: PathBuf,
    pub(super) users: KeyIndex,
    pub(super) out: Interactions,
}

impl<'o> Collector<'o> {
    pub(super) fn new(opts: &'o ReadOptions, file: &Path) -> Self {
        Collector {
            opts,
            file: file.to_path_buf(),
            users: KeyIndex::default(),
            out: Interactions::default(),
        }
    }

    pub(super) fn bad(&mut self, line: usize, msg: String) -> Result<(), DataError> {
        if self.opts.skip_bad_lines {
            self.out.skipped_lines += 1;
            Ok(())
        } else {
            Err(DataError::Malformed {
                file: self.file.clone(),
                line,
                msg,
            })
        }
    }

    /// `bad` for a row of a columnar file.
    pub(super) fn bad_row(&mut self, row: usize, msg: String) -> Result<(), DataError> {
        if self.opts.skip_bad_lines {
            self.out.skipped_lines += 1;
            Ok(())
        } else {
            Err(DataError::BadRow {
                file: self.file.clone(),
                row,
                msg,
            })
        }
    }

    /// Applies the rating filter. Called before the user is numbered, so
    /// users are ordered by their first *kept* rating, as in the reference.
    pub(super) fn keep(&mut self, rating: Option<f32>) -> bool {
        if let (Some(min), Some(r)) = (self.opts.min_rating, rating) {
            if r < min {
                self.out.below_min_rating += 1;
                return false;
            }
        }
        true
    }

    pub(super) fn push(&mut self, user: u32, item: u32, ts: i64) {
        self.out.users.push(user);
        self.out.items.push(item);
        self.out.timestamps.push(ts);
    }

    pub(super) fn finish(mut self) -> Interactions {
        self.out.user_keys = std::mem::take(&mut self.users.keys);
        self.out
    }
}

/// Options of the generic interaction-file reader.
#[derive(Debug, Clone)]
pub struct GenericFormat {
    /// Field delimiter; by default tab for `.tsv`/`.tab` files, else comma.
    pub delimiter: Option<u8>,
    pub user_col: String,
    pub item_col: String,
    pub time_col: String,
    pub rating_col: Option<String>,
    /// Optional item-title file (same delimiter rules) with its two columns.
    pub titles: Option<PathBuf>,
    pub title_item_col: String,
    pub title_col: String,
}

impl Default for GenericFormat {
    fn default() -> Self {
        GenericFormat {
            delimiter: None,
            user_col: "user_id".into(),
            item_col: "item_id".into(),
            time_col: "timestamp".into(),
            rating_col: None,
            titles: None,
            title_item_col: "item_id".into(),
            title_col: "title".into(),
        }
    }
}

/// Makes the catalogue cover every rated id (a rated id missing from the item
/// file still gets an embedding row, with an empty title).
pub fn complete_catalog(cat: &mut Catalog, interactions: &Interactions) {
    cat.cover(&interactions.items);
}
