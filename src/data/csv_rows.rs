//! CSV rows for the readers of text formats with a header row (MovieLens'
//! CSV releases, generic CSV/TSV logs and title files): opening a file and
//! its header, finding a column by name, and walking the records with their
//! line numbers, every failure located in the file.
//!
//! A helper of the format modules, not a format: it imports only `table`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::table::{io_err, utf8_or_latin1, DataError};

fn csv_reader(path: &Path, delimiter: u8) -> Result<csv::Reader<File>, DataError> {
    let file = super::table::open_data(path).map_err(io_err(path))?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(file))
}

/// Opens a CSV file and reads its header row.
pub(super) fn open_csv(
    path: &Path,
    delimiter: u8,
) -> Result<(csv::Reader<File>, csv::ByteRecord), DataError> {
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

pub(super) fn column(
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
pub(super) fn for_each_record(
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
    let mut file = super::table::open_data(path).map_err(io_err(path))?;
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
