//! Columnar interaction logs: Parquet files (as Spark, DuckDB, Polars and
//! pandas write them) and Arrow IPC files and streams, read through the
//! arrow and parquet crates.
//!
//! Columns are chosen by the same settings as a CSV file's
//! (`GenericFormat`), only those columns are decoded, and each row becomes
//! what a CSV line would: an id of any integer or string type becomes the
//! key its text would be, so a log gives the same examples whichever
//! format it is written in. Timestamps are integers, floats (truncated),
//! Arrow timestamps or dates; only their order matters, so a timestamp
//! keeps its unit. A bad row is an error naming the file, the row (from 1)
//! and the column, or with `skip_bad_lines` it is counted and left out.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::table::{
    parse_timestamp, timestamp_of_float, Catalog, Collector, DataError, GenericFormat,
    Interactions, KeyIndex, ReadOptions, TIMESTAMP_EXPECTED,
};
use crate::text::{escaped, quoted};

/// The columnar formats seqrec reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnarKind {
    Parquet,
    /// The Arrow IPC file format (`.arrow`, Feather v2).
    ArrowFile,
    /// The Arrow IPC stream format (what `pyarrow.ipc.new_stream` writes).
    ArrowStream,
}

impl ColumnarKind {
    pub fn name(self) -> &'static str {
        match self {
            ColumnarKind::Parquet => "Parquet",
            ColumnarKind::ArrowFile | ColumnarKind::ArrowStream => "Arrow IPC",
        }
    }

    /// The kind whose magic bytes `head` starts with.
    fn of_head(head: &[u8]) -> Option<ColumnarKind> {
        if head.starts_with(b"PAR1") {
            Some(ColumnarKind::Parquet)
        } else if head.starts_with(b"ARROW1") {
            Some(ColumnarKind::ArrowFile)
        } else if head.starts_with(&[0xFF; 4]) {
            Some(ColumnarKind::ArrowStream)
        } else {
            None
        }
    }
}

/// The most bytes of magic and padding before an IPC file's stream.
const MAX_IPC_FILE_PADDING: usize = 1024;

/// Where the stream starts in an IPC file beginning with `head`: after the
/// 6 bytes of magic, padded with zeros to the writer's alignment (8 bytes
/// by the specification, 64 by arrow-rs). A stream's first 8 bytes are
/// never all zero (a continuation marker or a message length comes first).
fn ipc_file_stream_start(head: &[u8]) -> usize {
    let mut start = 8;
    while start + 8 <= head.len().min(MAX_IPC_FILE_PADDING) && head[start..start + 8] == [0; 8] {
        start += 8;
    }
    start
}

/// Rows decoded at a time: big enough that per-batch work vanishes, small
/// enough that a batch's columns stay in cache.
const BATCH_ROWS: usize = 64 * 1024;

/// The columnar format of `path` by its first bytes, or None for a text
/// file. A file named as a columnar one that does not start like one is
/// an error, not a CSV file.
pub fn sniff(path: &Path) -> Result<Option<ColumnarKind>, DataError> {
    let io = |source| DataError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(8);
    super::table::open_data(path)
        .map_err(io)?
        .take(8)
        .read_to_end(&mut head)
        .map_err(io)?;
    let kind = ColumnarKind::of_head(&head);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let named = match ext.as_deref() {
        Some("parquet" | "pq") => Some(ColumnarKind::Parquet),
        Some("arrow" | "feather" | "ipc" | "arrows") => Some(ColumnarKind::ArrowFile),
        _ => None,
    };
    match (kind, named) {
        (None, Some(named)) => Err(DataError::Unreadable {
            file: path.to_path_buf(),
            format: named.name(),
            msg: match named {
                ColumnarKind::Parquet => "it does not start with Parquet's magic bytes `PAR1`",
                _ => "it starts neither like an Arrow IPC file (`ARROW1`) nor like a stream",
            }
            .into(),
        }),
        (kind, _) => Ok(kind),
    }
}

fn unreadable(file: &Path, kind: ColumnarKind) -> impl Fn(String) -> DataError + '_ {
    move |msg| DataError::Unreadable {
        file: file.to_path_buf(),
        format: kind.name(),
        msg,
    }
}

fn no_such_column(file: &Path, schema: &Schema, name: &str, setting: &'static str) -> DataError {
    DataError::NoSuchColumn {
        file: file.to_path_buf(),
        column: name.to_string(),
        setting: Some(setting),
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
    }
}

/// The positions in `schema` of the columns `wanted` (name, setting), each
/// once, or the first missing (or doubled) one as an error.
fn find_columns(
    file: &Path,
    schema: &Schema,
    wanted: &[(&str, &'static str)],
) -> Result<Vec<usize>, DataError> {
    let mut found = Vec::new();
    for &(name, setting) in wanted {
        let Some(i) = schema.fields().iter().position(|f| f.name() == name) else {
            return Err(no_such_column(file, schema, name, setting));
        };
        let count = schema.fields().iter().filter(|f| f.name() == name).count();
        if count > 1 {
            return Err(DataError::DuplicateColumn {
                file: file.to_path_buf(),
                column: name.to_string(),
                setting: Some(setting),
                count,
            });
        }
        if !found.contains(&i) {
            found.push(i);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Reads the record batches of `file` (of `kind`) holding the columns
/// `wanted` and hands each to `each`. Runs the decoders behind a panic
/// guard: a corrupt file must be an error, not an abort.
fn for_each_batch(
    file: &Path,
    // Only Arrow IPC is read from memory.
    bytes: Option<&[u8]>,
    kind: ColumnarKind,
    wanted: &[(&str, &'static str)],
    each: &mut dyn FnMut(&RecordBatch) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let fail = unreadable(file, kind);
    let io = |source| DataError::Io {
        file: file.to_path_buf(),
        source,
    };
    // An IPC file is an IPC stream after 8 bytes of magic, with a footer
    // after it that indexes the batches. The stream reader reads it: the
    // footer's block sizes are the file's word, and the file reader
    // allocates them before reading a byte, where the stream reader grows
    // its buffer with the bytes that really arrive.
    let skip = match (kind, bytes) {
        (ColumnarKind::ArrowFile, Some(b)) => ipc_file_stream_start(b),
        (ColumnarKind::ArrowFile, None) => {
            let mut head = Vec::with_capacity(MAX_IPC_FILE_PADDING);
            super::table::open_data(file)
                .map_err(io)?
                .take(MAX_IPC_FILE_PADDING as u64)
                .read_to_end(&mut head)
                .map_err(io)?;
            ipc_file_stream_start(&head)
        }
        _ => 0,
    };
    let source = || -> Result<Box<dyn Read + '_>, DataError> {
        Ok(match bytes {
            Some(b) => Box::new(b.get(skip..).unwrap_or_default()),
            None => {
                let mut f = super::table::open_data(file).map_err(io)?;
                f.seek(SeekFrom::Start(skip as u64)).map_err(io)?;
                Box::new(BufReader::new(f))
            }
        })
    };
    let run = || -> Result<(), DataError> {
        type Batches<'b> = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + 'b>;
        let batches: Batches = match kind {
            ColumnarKind::Parquet => {
                // Parquet is read from its file (its footer comes first).
                let builder = ParquetRecordBatchReaderBuilder::try_new(
                    super::table::open_data(file).map_err(io)?,
                )
                .map_err(|e| fail(e.to_string()))?;
                let roots = find_columns(file, builder.schema(), wanted)?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                Box::new(
                    builder
                        .with_projection(mask)
                        .with_batch_size(BATCH_ROWS)
                        .build()
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
            ColumnarKind::ArrowFile | ColumnarKind::ArrowStream => {
                // The schema is the stream's first message: reading it
                // again from the start costs one small read.
                let schema = arrow_ipc::reader::StreamReader::try_new(source()?, None)
                    .map_err(|e| fail(e.to_string()))?
                    .schema();
                let projection = find_columns(file, &schema, wanted)?;
                Box::new(
                    arrow_ipc::reader::StreamReader::try_new(source()?, Some(projection))
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
        };
        for batch in batches {
            each(&batch.map_err(|e| fail(e.to_string()))?)?;
        }
        Ok(())
    };
    match decoder_guard::run(run) {
        Ok(result) => result,
        Err(why) => Err(fail(format!("the decoder failed on corrupt data: {why}"))),
    }
}

/// The arrow and parquet decoders assert on some corrupt inputs instead of
/// returning an error. A panic inside `run` becomes an error carrying its
/// message, and the panic hook stays silent for it (it would print a
/// panic report and backtrace to the user's terminal); panics anywhere
/// else are reported as before.
mod decoder_guard {
    use std::cell::{Cell, RefCell};
    use std::sync::Once;

    thread_local! {
        static DECODING: Cell<bool> = const { Cell::new(false) };
        static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
    }

    fn install_hook() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if DECODING.with(Cell::get) {
                    let msg = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    MESSAGE.with(|m| *m.borrow_mut() = msg);
                } else {
                    previous(info);
                }
            }));
        });
    }

    /// Runs `f`, turning a panic into `Err(its message)`.
    pub fn run<T>(f: impl FnOnce() -> T) -> Result<T, String> {
        install_hook();
        let was = DECODING.with(|d| d.replace(true));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        DECODING.with(|d| d.set(was));
        result.map_err(|_| MESSAGE.with(|m| crate::text::escaped(&m.borrow())))
    }
}

/// A column's values as a CSV line would hold them, by type.
enum Values<'a> {
    /// Any integer type (wide enough for every one of them).
    Ints(Vec<i128>),
    Floats(Vec<f64>),
    Text(Text<'a>),
}

/// String columns of each Arrow layout.
enum Text<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    /// Categorical data: each row's index into a dictionary of strings.
    Dictionary {
        keys: Vec<usize>,
        values: Box<Text<'a>>,
    },
}

impl Text<'_> {
    fn at(&self, i: usize) -> &str {
        match self {
            Text::Utf8(a) => a.value(i),
            Text::Large(a) => a.value(i),
            Text::View(a) => a.value(i),
            Text::Dictionary { keys, values } => values.at(keys[i]),
        }
    }
}

fn text_of(col: &dyn Array) -> Option<Text<'_>> {
    Some(match col.data_type() {
        DataType::Utf8 => Text::Utf8(col.as_string::<i32>()),
        DataType::LargeUtf8 => Text::Large(col.as_string::<i64>()),
        DataType::Utf8View => Text::View(col.as_string_view()),
        DataType::Dictionary(_, _) => {
            let dict = col.as_any_dictionary();
            Text::Dictionary {
                keys: dict.normalized_keys(),
                values: Box::new(text_of(dict.values().as_ref())?),
            }
        }
        _ => return None,
    })
}

/// A primitive column's values, widened to i128 (exact for every integer
/// type, and for timestamps and dates as their raw counts).
macro_rules! widen {
    ($col:expr, $t:ty) => {
        $col.as_primitive::<$t>()
            .values()
            .iter()
            .map(|&v| v as i128)
            .collect()
    };
}

fn ints_of(col: &dyn Array) -> Option<Vec<i128>> {
    Some(match col.data_type() {
        DataType::Int8 => widen!(col, Int8Type),
        DataType::Int16 => widen!(col, Int16Type),
        DataType::Int32 => widen!(col, Int32Type),
        DataType::Int64 => widen!(col, Int64Type),
        DataType::UInt8 => widen!(col, UInt8Type),
        DataType::UInt16 => widen!(col, UInt16Type),
        DataType::UInt32 => widen!(col, UInt32Type),
        DataType::UInt64 => widen!(col, UInt64Type),
        // Categorical integers (a pandas category of ints): each row's
        // value through its key. A key outside the dictionary (a corrupt
        // file) reads as 0, and the row as whatever that makes it.
        DataType::Dictionary(_, _) => {
            let dict = col.as_any_dictionary();
            let values = ints_of(dict.values().as_ref())?;
            dict.normalized_keys()
                .iter()
                .map(|&k| values.get(k).copied().unwrap_or(0))
                .collect()
        }
        _ => return None,
    })
}

/// Timestamps and dates as their raw count of units (only order matters).
fn times_of(col: &dyn Array) -> Option<Vec<i128>> {
    Some(match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => widen!(col, TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => widen!(col, TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => widen!(col, TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => widen!(col, TimestampNanosecondType),
        DataType::Date32 => widen!(col, Date32Type),
        DataType::Date64 => widen!(col, Date64Type),
        _ => return ints_of(col),
    })
}

fn floats_of(col: &dyn Array) -> Option<Vec<f64>> {
    Some(match col.data_type() {
        DataType::Float32 => col
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DataType::Float64 => col.as_primitive::<Float64Type>().values().to_vec(),
        _ => return None,
    })
}

/// A column of `batch` by name (its presence was checked on the schema).
fn column<'b>(
    file: &Path,
    batch: &'b RecordBatch,
    name: &str,
    setting: &'static str,
) -> Result<&'b dyn Array, DataError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| no_such_column(file, &batch.schema(), name, setting))
}

fn wrong_type(file: &Path, name: &str, expected: &str, found: &DataType) -> DataError {
    DataError::ColumnType {
        file: file.to_path_buf(),
        column: name.to_string(),
        msg: format!("expected {expected}, found {}", escaped(&found.to_string())),
    }
}

/// An id column (users, items, title keys): integers or strings.
fn ids<'a>(file: &Path, col: &'a dyn Array, name: &str) -> Result<Values<'a>, DataError> {
    if let Some(v) = ints_of(col) {
        return Ok(Values::Ints(v));
    }
    text_of(col)
        .map(Values::Text)
        .ok_or_else(|| wrong_type(file, name, "integer or string ids", col.data_type()))
}

fn times<'a>(file: &Path, col: &'a dyn Array, name: &str) -> Result<Values<'a>, DataError> {
    if let Some(v) = times_of(col) {
        return Ok(Values::Ints(v));
    }
    if let Some(v) = floats_of(col) {
        return Ok(Values::Floats(v));
    }
    text_of(col).map(Values::Text).ok_or_else(|| {
        wrong_type(
            file,
            name,
            "integer, float, timestamp or date timestamps",
            col.data_type(),
        )
    })
}

fn ratings<'a>(file: &Path, col: &'a dyn Array, name: &str) -> Result<Values<'a>, DataError> {
    if let Some(v) = ints_of(col) {
        return Ok(Values::Ints(v));
    }
    if let Some(v) = floats_of(col) {
        return Ok(Values::Floats(v));
    }
    text_of(col)
        .map(Values::Text)
        .ok_or_else(|| wrong_type(file, name, "numeric ratings", col.data_type()))
}

/// What an id of row `i` is, or why it is none.
enum Id<'a> {
    Int(i128),
    Text(&'a str),
}

/// Whether each row of `col` holds no value: its own nulls, and for a
/// dictionary also the rows whose key points at a null value (Arrow's
/// logical nulls; a null inside a dictionary of ints would otherwise read
/// as the 0 beneath it).
fn null_test(col: &dyn Array) -> impl Fn(usize) -> bool {
    let nulls = col.logical_nulls();
    move |i| nulls.as_ref().is_some_and(|n| n.is_null(i))
}

fn id_at<'a>(null: bool, values: &'a Values, i: usize, name: &str) -> Result<Id<'a>, String> {
    if null {
        return Err(format!("column {} is empty (null)", quoted(name)));
    }
    match values {
        Values::Ints(v) => Ok(Id::Int(v[i])),
        Values::Text(t) => match t.at(i).trim_ascii() {
            "" => Err(format!("column {} is empty", quoted(name))),
            s => Ok(Id::Text(s)),
        },
        Values::Floats(_) => Err(format!("column {} holds no ids", quoted(name))),
    }
}

fn time_at(null: bool, values: &Values, i: usize, name: &str) -> Result<i64, String> {
    if null {
        return Err(format!("column {} is empty (null)", quoted(name)));
    }
    let found = match values {
        Values::Ints(v) => match i64::try_from(v[i]) {
            Ok(t) => return Ok(t),
            Err(_) => v[i].to_string(),
        },
        Values::Floats(v) => match timestamp_of_float(v[i]) {
            Some(t) => return Ok(t),
            None => v[i].to_string(),
        },
        Values::Text(t) => match parse_timestamp(t.at(i).as_bytes()) {
            Some(t) => return Ok(t),
            None => quoted(t.at(i)),
        },
    };
    Err(format!(
        "column {}: expected {TIMESTAMP_EXPECTED}, found {found}",
        quoted(name)
    ))
}

fn rating_at(null: bool, values: &Values, i: usize, name: &str) -> Result<f32, String> {
    if null {
        return Err(format!("column {} is empty (null)", quoted(name)));
    }
    let value = match values {
        Values::Ints(v) => Some(v[i] as f32),
        Values::Floats(v) => Some(v[i] as f32),
        Values::Text(t) => t.at(i).trim().parse::<f32>().ok(),
    };
    match value.filter(|r| r.is_finite()) {
        Some(r) => Ok(r),
        None => {
            let found = match values {
                Values::Ints(v) => v[i].to_string(),
                Values::Floats(v) => v[i].to_string(),
                Values::Text(t) => quoted(t.at(i)),
            };
            Err(format!(
                "column {}: expected a number, found {found}",
                quoted(name)
            ))
        }
    }
}

impl Id<'_> {
    /// Its index in `keys`, numbered as a CSV file's text would be.
    fn index_in(&self, keys: &mut KeyIndex) -> u32 {
        match *self {
            Id::Int(v) => keys.int(v),
            Id::Text(s) => keys.text(s),
        }
    }
}

/// Reads an interaction log in a columnar format: `path` names it (and
/// holds it unless `bytes` are given). Its catalogue is untitled: `source`
/// adds the titles of `fmt.titles`.
fn read_log(
    path: &Path,
    bytes: Option<&[u8]>,
    kind: ColumnarKind,
    fmt: &GenericFormat,
    opts: &ReadOptions,
) -> Result<(Interactions, Catalog), DataError> {
    let mut wanted = vec![
        (fmt.user_col.as_str(), "user_col"),
        (fmt.item_col.as_str(), "item_col"),
        (fmt.time_col.as_str(), "time_col"),
    ];
    if let Some(r) = &fmt.rating_col {
        wanted.push((r.as_str(), "rating_col"));
    }
    let mut c = Collector::new(opts, path);
    // Items are numbered from 1 (0 is padding): their index + 1.
    let mut items = KeyIndex::default();
    let mut rows_before = 0usize;
    for_each_batch(path, bytes, kind, &wanted, &mut |batch| {
        let user_col = column(path, batch, &fmt.user_col, "user_col")?;
        let item_col = column(path, batch, &fmt.item_col, "item_col")?;
        let time_col = column(path, batch, &fmt.time_col, "time_col")?;
        let users = ids(path, user_col, &fmt.user_col)?;
        let item_values = ids(path, item_col, &fmt.item_col)?;
        let time_values = times(path, time_col, &fmt.time_col)?;
        let (user_null, item_null, time_null) = (
            null_test(user_col),
            null_test(item_col),
            null_test(time_col),
        );
        let rating = match &fmt.rating_col {
            Some(name) => {
                let col = column(path, batch, name, "rating_col")?;
                Some((null_test(col), ratings(path, col, name)?, name.as_str()))
            }
            None => None,
        };
        for i in 0..batch.num_rows() {
            c.out.lines_read += 1;
            let row = rows_before + i + 1;
            let parsed = (|| {
                let user = id_at(user_null(i), &users, i, &fmt.user_col)?;
                let item = id_at(item_null(i), &item_values, i, &fmt.item_col)?;
                let time = time_at(time_null(i), &time_values, i, &fmt.time_col)?;
                let r = match &rating {
                    Some((null, values, name)) => Some(rating_at(null(i), values, i, name)?),
                    None => None,
                };
                Ok::<_, String>((user, item, time, r))
            })();
            let (user, item, time, r) = match parsed {
                Ok(v) => v,
                Err(msg) => {
                    c.bad_row(row, msg)?;
                    continue;
                }
            };
            if !c.keep(r) {
                continue;
            }
            let user = user.index_in(&mut c.users);
            let item = item.index_in(&mut items) + 1;
            c.push(user, item, time);
        }
        rows_before += batch.num_rows();
        Ok(())
    })?;
    let interactions = c.finish();
    let mut item_keys = vec![String::new()];
    item_keys.extend(items.into_keys());
    Ok((interactions, Catalog::of_item_keys(item_keys)))
}

/// Reads an interaction log from a Parquet or Arrow IPC file.
pub fn read_file(
    path: &Path,
    kind: ColumnarKind,
    fmt: &GenericFormat,
    opts: &ReadOptions,
) -> Result<(Interactions, Catalog), DataError> {
    read_log(path, None, kind, fmt, opts)
}

/// Reads an interaction log held in memory as an Arrow IPC stream or file
/// (by its first bytes); `origin` names it in messages.
pub fn read_bytes(
    bytes: &[u8],
    origin: &Path,
    fmt: &GenericFormat,
    opts: &ReadOptions,
) -> Result<(Interactions, Catalog), DataError> {
    let kind = ColumnarKind::of_head(bytes)
        .filter(|&k| k != ColumnarKind::Parquet)
        .ok_or_else(|| DataError::Unreadable {
            file: origin.to_path_buf(),
            format: "Arrow IPC",
            msg: "it starts like neither an Arrow IPC stream nor an Arrow IPC file".into(),
        })?;
    read_log(origin, Some(bytes), kind, fmt, opts)
}

/// A title file in a columnar format: `set_title(item key, title)` for
/// each row (rows without a title are left untitled).
pub fn read_titles(
    path: &Path,
    kind: ColumnarKind,
    fmt: &GenericFormat,
    opts: &ReadOptions,
    set_title: &mut dyn FnMut(&str, String),
) -> Result<(), DataError> {
    let wanted = [
        (fmt.title_item_col.as_str(), "title_item_col"),
        (fmt.title_col.as_str(), "title_col"),
    ];
    let mut rows_before = 0usize;
    for_each_batch(path, None, kind, &wanted, &mut |batch| {
        let key_col = column(path, batch, &fmt.title_item_col, "title_item_col")?;
        let title_col = column(path, batch, &fmt.title_col, "title_col")?;
        let keys = ids(path, key_col, &fmt.title_item_col)?;
        let titles = text_of(title_col)
            .ok_or_else(|| wrong_type(path, &fmt.title_col, "strings", title_col.data_type()))?;
        let (key_null, title_null) = (null_test(key_col), null_test(title_col));
        for i in 0..batch.num_rows() {
            let key = match id_at(key_null(i), &keys, i, &fmt.title_item_col) {
                Ok(Id::Int(v)) => v.to_string(),
                Ok(Id::Text(s)) => s.to_string(),
                Err(_) if opts.skip_bad_lines => continue,
                Err(msg) => {
                    return Err(DataError::BadRow {
                        file: path.to_path_buf(),
                        row: rows_before + i + 1,
                        msg,
                    })
                }
            };
            if !title_null(i) {
                set_title(&key, titles.at(i).to_string());
            }
        }
        rows_before += batch.num_rows();
        Ok(())
    })
}
