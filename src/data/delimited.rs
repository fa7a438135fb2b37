//! Generic interaction logs in CSV or TSV: a header row, the user, item,
//! timestamp and (optional) rating columns chosen by name (`GenericFormat`),
//! any strings as user and item ids; and title files in the same dialect.
//!
//! A malformed line is an error naming file, line and what was expected, or,
//! with `skip_bad_lines`, it is counted and left out.

use std::collections::HashMap;
use std::path::Path;

use super::csv_rows::{column, for_each_record, open_csv};
use super::table::{
    parse_num, parse_timestamp, utf8_or_latin1, Catalog, Collector, DataError, GenericFormat,
    Interactions, ReadOptions, TIMESTAMP_EXPECTED,
};
use crate::text::quoted;

/// A generic interaction file: a header row, columns chosen by name, any
/// strings as user and item ids. Items get dense ids 1..N in order of first
/// appearance. The catalogue is untitled: `fmt.titles` is read by `source`,
/// which reads it whatever the log's format.
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
    Ok((interactions, Catalog::of_item_keys(item_keys)))
}

/// A CSV/TSV title file: `set_title(item key, title)` for each row.
pub fn read_titles(
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
