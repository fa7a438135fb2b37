//! The MovieLens releases, in their three layouts: `ratings.dat` +
//! `movies.dat` (`::`, Latin-1: ML-1M, ML-10M), `u.data` + `u.item`
//! (ML-100K), and `ratings.csv` + `movies.csv` (ML-20M and later). Ids are
//! the release's own numbers; `source` renumbers them when asked.
//!
//! A malformed line is an error naming file, line and what was expected, or,
//! with `skip_bad_lines`, it is counted and left out.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::csv_rows::{column, for_each_record, open_csv};
use super::table::{
    io_err, latin1, parse_num, parse_timestamp, utf8_or_latin1, Catalog, Collector, DataError,
    Interactions, ReadOptions, MAX_ITEM_ID, TIMESTAMP_EXPECTED,
};
use crate::text::quoted_bytes;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Streams a file's lines as bytes with 1-based line numbers, without the
/// line ending, skipping blank lines.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = super::table::open_data(path).map_err(io_err(path))?;
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

/// One `user SEP item SEP rating SEP timestamp` line with numeric ids.
fn read_numeric_line(
    c: &mut Collector,
    line_no: usize,
    line: &[u8],
    sep: &[u8],
) -> Result<(), DataError> {
    c.out.lines_read += 1;
    let mut f = [&line[..0]; 4];
    let n = split_fields(line, sep, &mut f);
    let sep_name = String::from_utf8_lossy(sep).replace('\t', "TAB");
    if n != 4 {
        return c.bad(
            line_no,
            format!(
                "expected 4 fields `user{0}item{0}rating{0}timestamp`, found {n}",
                sep_name
            ),
        );
    }
    let Some(user) = parse_num::<u64>(f[0]) else {
        return c.bad(
            line_no,
            format!("user id: expected an integer, found {}", quoted_bytes(f[0])),
        );
    };
    let item = match parse_num::<u32>(f[1]) {
        Some(i) if i > MAX_ITEM_ID => {
            return c.bad(
                line_no,
                format!("item id {i}: ids above {MAX_ITEM_ID} are not supported (give the file as a generic interaction file to renumber them)"),
            )
        }
        Some(i) if i > 0 => i,
        _ => {
            return c.bad(
                line_no,
                format!(
                    "item id: expected a positive integer, found {}", quoted_bytes(f[1])
                ),
            )
        }
    };
    let Some(rating) = parse_num::<f32>(f[2]).filter(|r| r.is_finite()) else {
        return c.bad(
            line_no,
            format!("rating: expected a number, found {}", quoted_bytes(f[2])),
        );
    };
    let Some(ts) = parse_timestamp(f[3]) else {
        return c.bad(
            line_no,
            format!(
                "timestamp: expected {TIMESTAMP_EXPECTED}, found {}",
                quoted_bytes(f[3])
            ),
        );
    };
    if c.keep(Some(rating)) {
        let user = c.users.numeric(user);
        c.push(user, item, ts);
    }
    Ok(())
}

/// MovieLens-1M `ratings.dat` (`UserID::MovieID::Rating::Timestamp`).
pub fn read_ml1m_ratings(path: &Path, opts: &ReadOptions) -> Result<Interactions, DataError> {
    let mut c = Collector::new(opts, path);
    for_each_line(path, |n, line| read_numeric_line(&mut c, n, line, b"::"))?;
    Ok(c.finish())
}

/// MovieLens-1M `movies.dat` (`MovieID::Title::Genres`, Latin-1).
pub fn read_ml1m_movies(path: &Path, opts: &ReadOptions) -> Result<Catalog, DataError> {
    read_title_lines(path, opts, b"::", 1)
}

/// MovieLens-100K `u.data` (`user TAB item TAB rating TAB timestamp`).
pub fn read_ml100k_ratings(path: &Path, opts: &ReadOptions) -> Result<Interactions, DataError> {
    let mut c = Collector::new(opts, path);
    for_each_line(path, |n, line| read_numeric_line(&mut c, n, line, b"\t"))?;
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
