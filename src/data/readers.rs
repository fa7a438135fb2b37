//! Readers for every input format seqrec takes. Each turns a file into the same
//! two things: `Interactions` (who picked what, when, in file order, ratings
//! below the minimum already dropped) and a `Catalog` (what each item id is).
//!
//! A malformed line is an error naming file, line and what was expected, or,
//! with `skip_bad_lines`, it is counted and left out.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::text::{escaped, quoted, quoted_bytes};

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
    /// A column of a type the reader cannot take as what it stands for.
    #[error("{}: column {}: {msg}", file.display(), quoted(column))]
    ColumnType {
        file: PathBuf,
        column: String,
        msg: String,
    },
    /// A file that its format's reader refused as a whole.
    #[error("{}: not a readable {format} file: {}", file.display(), escaped(msg))]
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

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
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

    fn grow_to(&mut self, id: usize) {
        if self.titles.len() <= id {
            self.titles.resize(id + 1, String::new());
            self.is_item.resize(id + 1, false);
        }
    }

    fn set(&mut self, id: u32, title: String) {
        self.grow_to(id as usize);
        self.titles[id as usize] = title;
        self.is_item[id as usize] = true;
    }

    /// Makes every rated id a known item and the vocabulary cover them.
    fn cover(&mut self, items: &[u32]) {
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

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Streams a file's lines as bytes with 1-based line numbers, without the
/// line ending, skipping blank lines.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let mut line = buf.as_slice();
        // Editors on Windows start UTF-8 files with a byte-order mark; the
        // CSV reader drops it, and so do these.
        if line_no == 1 {
            line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
        }
        while let Some((&last, rest)) = line.split_last() {
            if last == b'\n' || last == b'\r' {
                line = rest;
            } else {
                break;
            }
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        f(line_no, line)?;
    }
}

/// Splits `line` on a multi-byte separator into at most `N` fields; the last
/// field keeps any further separators. Returns how many fields were found.
fn split_fields<'a, const N: usize>(line: &'a [u8], sep: &[u8], out: &mut [&'a [u8]; N]) -> usize {
    let mut start = 0;
    let mut n = 0;
    let mut i = 0;
    while n + 1 < N && i + sep.len() <= line.len() {
        if &line[i..i + sep.len()] == sep {
            out[n] = &line[start..i];
            n += 1;
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out[n] = &line[start..];
    n + 1
}

fn parse_num<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
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

    fn bad(&mut self, line: usize, msg: String) -> Result<(), DataError> {
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

    /// One `user SEP item SEP rating SEP timestamp` line with numeric ids.
    fn numeric_line(&mut self, line_no: usize, line: &[u8], sep: &[u8]) -> Result<(), DataError> {
        self.out.lines_read += 1;
        let mut f = [&line[..0]; 4];
        let n = split_fields(line, sep, &mut f);
        let sep_name = String::from_utf8_lossy(sep).replace('\t', "TAB");
        if n != 4 {
            return self.bad(
                line_no,
                format!(
                    "expected 4 fields `user{0}item{0}rating{0}timestamp`, found {n}",
                    sep_name
                ),
            );
        }
        let Some(user) = parse_num::<u64>(f[0]) else {
            return self.bad(
                line_no,
                format!("user id: expected an integer, found {}", quoted_bytes(f[0])),
            );
        };
        let item = match parse_num::<u32>(f[1]) {
            Some(i) if i > MAX_ITEM_ID => {
                return self.bad(
                    line_no,
                    format!("item id {i}: ids above {MAX_ITEM_ID} are not supported (give the file as a generic interaction file to renumber them)"),
                )
            }
            Some(i) if i > 0 => i,
            _ => {
                return self.bad(
                    line_no,
                    format!(
                        "item id: expected a positive integer, found {}", quoted_bytes(f[1])
                    ),
                )
            }
        };
        let Some(rating) = parse_num::<f32>(f[2]).filter(|r| r.is_finite()) else {
            return self.bad(
                line_no,
                format!("rating: expected a number, found {}", quoted_bytes(f[2])),
            );
        };
        let Some(ts) = parse_timestamp(f[3]) else {
            return self.bad(
                line_no,
                format!(
                    "timestamp: expected {TIMESTAMP_EXPECTED}, found {}",
                    quoted_bytes(f[3])
                ),
            );
        };
        if self.keep(Some(rating)) {
            let user = self.users.numeric(user);
            self.push(user, item, ts);
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Interactions {
        self.out.user_keys = std::mem::take(&mut self.users.keys);
        self.out
    }
}

/// MovieLens-1M `ratings.dat` (`UserID::MovieID::Rating::Timestamp`).
pub fn read_ml1m_ratings(path: &Path, opts: &ReadOptions) -> Result<Interactions, DataError> {
    let mut c = Collector::new(opts, path);
    for_each_line(path, |n, line| c.numeric_line(n, line, b"::"))?;
    Ok(c.finish())
}

/// MovieLens-1M `movies.dat` (`MovieID::Title::Genres`, Latin-1).
pub fn read_ml1m_movies(path: &Path, opts: &ReadOptions) -> Result<Catalog, DataError> {
    read_title_lines(path, opts, b"::", 1)
}

/// MovieLens-100K `u.data` (`user TAB item TAB rating TAB timestamp`).
pub fn read_ml100k_ratings(path: &Path, opts: &ReadOptions) -> Result<Interactions, DataError> {
    let mut c = Collector::new(opts, path);
    for_each_line(path, |n, line| c.numeric_line(n, line, b"\t"))?;
    Ok(c.finish())
}

/// MovieLens-100K `u.item` (`id|title|date|...|19 genre flags`, Latin-1).
pub fn read_ml100k_items(path: &Path, opts: &ReadOptions) -> Result<Catalog, DataError> {
    read_title_lines(path, opts, b"|", 1)
}

/// A Latin-1 item file with a numeric id in field 0 and the title in field
/// `title_field`.
fn read_title_lines(
    path: &Path,
    opts: &ReadOptions,
    sep: &[u8],
    title_field: usize,
) -> Result<Catalog, DataError> {
    let mut cat = Catalog::default();
    cat.grow_to(0);
    let sep_name = String::from_utf8_lossy(sep).to_string();
    for_each_line(path, |line_no, line| {
        let mut f = [&line[..0]; 3];
        let n = split_fields(line, sep, &mut f);
        let fail = |msg: String| {
            if opts.skip_bad_lines {
                Ok(())
            } else {
                Err(DataError::Malformed {
                    file: path.to_path_buf(),
                    line: line_no,
                    msg,
                })
            }
        };
        if n <= title_field {
            return fail(format!(
                "expected `id{sep_name}title{sep_name}...`, found {n} field(s)"
            ));
        }
        let id = match parse_num::<u32>(f[0]) {
            Some(i) if i > 0 && i <= MAX_ITEM_ID => i,
            _ => {
                return fail(format!(
                    "item id: expected a positive integer, found {}",
                    quoted_bytes(f[0])
                ))
            }
        };
        let title = f[title_field];
        cat.set(id, latin1(title));
        Ok(())
    })?;
    Ok(cat)
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

fn delimiter_for(path: &Path, given: Option<u8>) -> u8 {
    given.unwrap_or_else(|| {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "tsv" || e == "tab" => b'\t',
            _ => b',',
        }
    })
}

fn csv_reader(path: &Path, delimiter: u8) -> Result<csv::Reader<File>, DataError> {
    let file = File::open(path).map_err(io_err(path))?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(file))
}

/// Opens a CSV file and reads its header row.
fn open_csv(path: &Path, delimiter: u8) -> Result<(csv::Reader<File>, csv::ByteRecord), DataError> {
    let mut rdr = csv_reader(path, delimiter)?;
    let headers = rdr
        .byte_headers()
        .map_err(|e| DataError::Malformed {
            file: path.to_path_buf(),
            line: 1,
            msg: format!("unreadable header: {e}"),
        })?
        .clone();
    Ok((rdr, headers))
}

fn column(
    path: &Path,
    headers: &csv::ByteRecord,
    name: &str,
    setting: Option<&'static str>,
) -> Result<usize, DataError> {
    headers
        .iter()
        .position(|h| h.trim_ascii() == name.as_bytes())
        .ok_or_else(|| {
            let columns: Vec<String> = headers.iter().map(utf8_or_latin1).collect();
            let suggest_delimiter = match columns.as_slice() {
                [only] if only.contains('\t') => Some(b'\t'),
                [only] if only.contains(';') => Some(b';'),
                _ => None,
            };
            DataError::MissingColumn {
                file: path.to_path_buf(),
                column: name.to_string(),
                setting,
                columns,
                suggest_delimiter,
            }
        })
}

/// Iterates CSV records with their line numbers, turning csv errors into
/// located errors.
///
/// The csv crate ends a quoted field that is never closed at the end of the
/// file without an error: the rest of the file becomes one field, and the
/// record then looks short of columns. A record that `f` refuses, or that
/// holds a line break, is checked for that first, so the message says what
/// is wrong.
fn for_each_record(
    path: &Path,
    rdr: &mut csv::Reader<File>,
    delimiter: u8,
    mut f: impl FnMut(usize, &csv::ByteRecord) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
                if rec.len() == 1 && rec[0].trim_ascii().is_empty() {
                    continue;
                }
                let result = f(line, &rec);
                let spans_lines = rec.iter().any(|v| v.contains(&b'\n') || v.contains(&b'\r'));
                if result.is_err() || spans_lines {
                    let start = rec.position().map(|p| p.byte()).unwrap_or(0);
                    if quote_left_open(path, start, delimiter)? {
                        return Err(DataError::Malformed {
                            file: path.to_path_buf(),
                            line,
                            msg: "a quoted field opened on this line is never closed \
                                  (it runs to the end of the file)"
                                .into(),
                        });
                    }
                }
                result?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                return Err(DataError::Malformed {
                    file: path.to_path_buf(),
                    line,
                    msg: format!("unreadable CSV: {e}"),
                });
            }
        }
    }
}

/// Whether the record starting at byte `start` of `path` opens a quoted
/// field that the file never closes. Reads that one record only: it stops
/// at the record's end outside quotes.
fn quote_left_open(path: &Path, start: u64, delimiter: u8) -> Result<bool, DataError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(io_err(path))?;
    file.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let (mut in_quotes, mut field_start, mut just_closed, mut started) =
        (false, true, false, false);
    for b in BufReader::new(file).bytes() {
        let b = b.map_err(io_err(path))?;
        let line_end = b == b'\n' || b == b'\r';
        if !started && line_end {
            continue;
        }
        started = true;
        if in_quotes {
            if b == b'"' {
                in_quotes = false;
                just_closed = true;
            }
            continue;
        }
        // A quote opens a field, or right after a closing quote stands for
        // a quote inside the field ("").
        if b == b'"' && (field_start || just_closed) {
            in_quotes = true;
        } else if line_end {
            return Ok(false);
        }
        field_start = b == delimiter;
        just_closed = false;
    }
    Ok(in_quotes)
}

/// MovieLens CSV releases (`ratings.csv`: `userId,movieId,rating,timestamp`).
pub fn read_movielens_csv_ratings(
    path: &Path,
    opts: &ReadOptions,
) -> Result<Interactions, DataError> {
    let (mut rdr, headers) = open_csv(path, b',')?;
    let cols = [
        column(path, &headers, "userId", None)?,
        column(path, &headers, "movieId", None)?,
        column(path, &headers, "rating", None)?,
        column(path, &headers, "timestamp", None)?,
    ];
    let mut c = Collector::new(opts, path);
    for_each_record(path, &mut rdr, b',', |line, rec| {
        c.out.lines_read += 1;
        let get = |i: usize| rec.get(cols[i]);
        let (Some(u), Some(m), Some(r), Some(t)) = (get(0), get(1), get(2), get(3)) else {
            return c.bad(
                line,
                format!(
                    "expected 4 fields `userId,movieId,rating,timestamp`, found {}",
                    rec.len()
                ),
            );
        };
        let Some(u) = parse_num::<u64>(u) else {
            return c.bad(
                line,
                format!("userId: expected an integer, found {}", quoted_bytes(u)),
            );
        };
        let m = match parse_num::<u32>(m) {
            Some(m) if m > MAX_ITEM_ID => {
                return c.bad(
                    line,
                    format!("movieId {m}: ids above {MAX_ITEM_ID} are not supported"),
                )
            }
            Some(m) if m > 0 => m,
            _ => {
                return c.bad(
                    line,
                    format!(
                        "movieId: expected a positive integer, found {}",
                        quoted_bytes(m)
                    ),
                )
            }
        };
        let Some(r) = parse_num::<f32>(r).filter(|r| r.is_finite()) else {
            return c.bad(
                line,
                format!("rating: expected a number, found {}", quoted_bytes(r)),
            );
        };
        let Some(t) = parse_timestamp(t) else {
            return c.bad(
                line,
                format!(
                    "timestamp: expected {TIMESTAMP_EXPECTED}, found {}",
                    quoted_bytes(t)
                ),
            );
        };
        if c.keep(Some(r)) {
            let u = c.users.numeric(u);
            c.push(u, m, t);
        }
        Ok(())
    })?;
    Ok(c.finish())
}

/// MovieLens CSV releases (`movies.csv`: `movieId,title,genres`, titles quoted
/// when they hold commas).
pub fn read_movielens_csv_movies(path: &Path, opts: &ReadOptions) -> Result<Catalog, DataError> {
    let (mut rdr, headers) = open_csv(path, b',')?;
    let id_col = column(path, &headers, "movieId", None)?;
    let title_col = column(path, &headers, "title", None)?;
    let mut cat = Catalog::default();
    cat.grow_to(0);
    for_each_record(path, &mut rdr, b',', |line, rec| {
        let id = rec
            .get(id_col)
            .and_then(parse_num::<u32>)
            .filter(|&i| i > 0 && i <= MAX_ITEM_ID);
        match (id, rec.get(title_col)) {
            (Some(id), Some(t)) => {
                cat.set(id, utf8_or_latin1(t));
                Ok(())
            }
            _ if opts.skip_bad_lines => Ok(()),
            _ => Err(DataError::Malformed {
                file: path.to_path_buf(),
                line,
                msg: "expected `movieId,title,genres` with a positive integer movieId".into(),
            }),
        }
    })?;
    Ok(cat)
}

/// A generic interaction file: a header row, columns chosen by name, any
/// strings as user and item ids. Items get dense ids 1..N in order of first
/// appearance; the optional title file names them.
pub fn read_generic(
    path: &Path,
    fmt: &GenericFormat,
    opts: &ReadOptions,
) -> Result<(Interactions, Catalog), DataError> {
    let delimiter = delimiter_for(path, fmt.delimiter);
    let (mut rdr, headers) = open_csv(path, delimiter)?;
    let user_col = column(path, &headers, &fmt.user_col, Some("user_col"))?;
    let item_col = column(path, &headers, &fmt.item_col, Some("item_col"))?;
    let time_col = column(path, &headers, &fmt.time_col, Some("time_col"))?;
    let rating_col = match &fmt.rating_col {
        Some(name) => Some(column(path, &headers, name, Some("rating_col"))?),
        None => None,
    };
    let mut item_ids: HashMap<String, u32> = HashMap::new();
    let mut item_keys: Vec<String> = vec![String::new()];
    let mut c = Collector::new(opts, path);
    for_each_record(path, &mut rdr, delimiter, |line, rec| {
        c.out.lines_read += 1;
        let field = |col: usize, name: &str| -> Result<&[u8], String> {
            match rec.get(col) {
                Some(v) if !v.trim_ascii().is_empty() => Ok(v.trim_ascii()),
                Some(_) => Err(format!("column {} is empty", quoted(name))),
                None => Err(format!(
                    "expected a value in column {} (field {}), the line has {} field(s)",
                    quoted(name),
                    col + 1,
                    rec.len()
                )),
            }
        };
        let (u, i, t) = match (
            field(user_col, &fmt.user_col),
            field(item_col, &fmt.item_col),
            field(time_col, &fmt.time_col),
        ) {
            (Ok(u), Ok(i), Ok(t)) => (u, i, t),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return c.bad(line, e),
        };
        let Some(ts) = parse_timestamp(t) else {
            return c.bad(
                line,
                format!(
                    "column {}: expected {TIMESTAMP_EXPECTED}, found {}",
                    quoted(&fmt.time_col),
                    quoted(&utf8_or_latin1(t))
                ),
            );
        };
        let rating = match rating_col {
            Some(col) => match field(col, fmt.rating_col.as_deref().unwrap_or("")) {
                Ok(r) => match parse_num::<f32>(r).filter(|r| r.is_finite()) {
                    Some(r) => Some(r),
                    None => {
                        return c.bad(
                            line,
                            format!(
                                "column {}: expected a number, found {}",
                                quoted(fmt.rating_col.as_deref().unwrap_or("")),
                                quoted(&utf8_or_latin1(r))
                            ),
                        )
                    }
                },
                Err(e) => return c.bad(line, e),
            },
            None => None,
        };
        if !c.keep(rating) {
            return Ok(());
        }
        let user = c.users.text(&utf8_or_latin1(u));
        let key = utf8_or_latin1(i);
        let next = item_keys.len() as u32;
        let item = *item_ids.entry(key).or_insert_with_key(|k| {
            item_keys.push(k.clone());
            next
        });
        c.push(user, item, ts);
        Ok(())
    })?;
    let interactions = c.finish();
    let cat = generic_catalog(item_keys, fmt, opts)?;
    Ok((interactions, cat))
}

/// The catalogue of a generic file whose items got ids 1..N in the order
/// of `item_keys` (index 0: padding), titled from `fmt.titles` if given.
pub(super) fn generic_catalog(
    item_keys: Vec<String>,
    fmt: &GenericFormat,
    opts: &ReadOptions,
) -> Result<Catalog, DataError> {
    let mut cat = Catalog::default();
    cat.cover(&[]);
    cat.grow_to(item_keys.len().saturating_sub(1));
    for id in 1..item_keys.len() {
        cat.is_item[id] = true;
    }
    if let Some(tpath) = &fmt.titles {
        let item_ids: HashMap<&str, u32> = item_keys
            .iter()
            .enumerate()
            .skip(1)
            .map(|(id, k)| (k.as_str(), id as u32))
            .collect();
        let mut set_title = |key: &str, title: String| {
            if let Some(&id) = item_ids.get(key) {
                cat.titles[id as usize] = title;
            }
        };
        if let Some(kind) = super::columnar::sniff(tpath)? {
            super::columnar::read_titles(tpath, kind, fmt, opts, &mut set_title)?;
        } else {
            read_csv_titles(tpath, fmt, opts, &mut set_title)?;
        }
    }
    cat.keys = Some(item_keys);
    Ok(cat)
}

/// A CSV/TSV title file: `set_title(item key, title)` for each row.
fn read_csv_titles(
    tpath: &Path,
    fmt: &GenericFormat,
    opts: &ReadOptions,
    set_title: &mut dyn FnMut(&str, String),
) -> Result<(), DataError> {
    let tdelimiter = delimiter_for(tpath, fmt.delimiter);
    let (mut trdr, th) = open_csv(tpath, tdelimiter)?;
    let ic = column(tpath, &th, &fmt.title_item_col, Some("title_item_col"))?;
    let tc = column(tpath, &th, &fmt.title_col, Some("title_col"))?;
    for_each_record(tpath, &mut trdr, tdelimiter, |line, rec| {
        match (rec.get(ic), rec.get(tc)) {
            (Some(k), Some(t)) => {
                set_title(&utf8_or_latin1(k.trim_ascii()), utf8_or_latin1(t));
                Ok(())
            }
            _ if opts.skip_bad_lines => Ok(()),
            _ => Err(DataError::Malformed {
                file: tpath.to_path_buf(),
                line,
                msg: format!(
                    "expected columns {} and {}",
                    quoted(&fmt.title_item_col),
                    quoted(&fmt.title_col)
                ),
            }),
        }
    })
}

/// Makes the catalogue cover every rated id (a rated id missing from the item
/// file still gets an embedding row, with an empty title).
pub fn complete_catalog(cat: &mut Catalog, interactions: &Interactions) {
    cat.cover(&interactions.items);
}
