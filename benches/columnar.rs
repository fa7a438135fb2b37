//! `cargo bench --bench columnar`: seconds to read the same interaction log
//! from a CSV file and from a Parquet file (snappy, as Spark and DuckDB
//! write by default), at 1M and 25M rows, through `source::read_path` as
//! `seqrec train` reads it (ids numbered, rating filter applied).
//!
//! The log has MovieLens-25M's shape: integer user and item ids (about 154
//! ratings a user, 59,047 items, popularity skewed), a float rating and an
//! integer timestamp; both files hold the same rows, and the two reads
//! must give the same interactions (checked).
//!
//! Environment: SEQREC_BENCH_ROWS (comma-separated sizes, default
//! `1000000,25000000`), SEQREC_BENCH_REPEATS (runs per file, best and
//! median reported; default 3).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use seqrec::data::source;
use seqrec::data::table::{GenericFormat, ReadOptions};

use common::{env, median};

const ITEMS: u64 = 59_047;
const RATINGS_PER_USER: usize = 154;
const WRITE_BATCH: usize = 1 << 20;

/// Row `i` of the log: (user, item, rating, timestamp), from a fixed hash.
fn row(i: usize) -> (i64, i64, f32, i64) {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    // Squaring a uniform draw skews popularity toward small ids.
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    let item = 1 + ((u * u) * ITEMS as f64) as i64;
    let rating = 0.5 * (1 + (x % 10)) as f32;
    let user = 1 + (i / RATINGS_PER_USER) as i64;
    (user, item, rating, 1_000_000_000 + i as i64)
}

fn write_files(dir: &Path, rows: usize) {
    let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.join("log.csv")).unwrap());
    writeln!(csv, "user_id,item_id,rating,timestamp").unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = std::fs::File::create(dir.join("log.parquet")).unwrap();
    let mut parquet: Option<ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    for start in (0..rows).step_by(WRITE_BATCH) {
        let end = (start + WRITE_BATCH).min(rows);
        let (mut u, mut it, mut r, mut t) = (vec![], vec![], vec![], vec![]);
        for i in start..end {
            let (user, item, rating, ts) = row(i);
            writeln!(csv, "{user},{item},{rating},{ts}").unwrap();
            u.push(user);
            it.push(item);
            r.push(rating);
            t.push(ts);
        }
        let batch = RecordBatch::try_from_iter([
            ("user_id", Arc::new(Int64Array::from(u)) as ArrayRef),
            ("item_id", Arc::new(Int64Array::from(it))),
            ("rating", Arc::new(Float32Array::from(r))),
            ("timestamp", Arc::new(Int64Array::from(t))),
        ])
        .unwrap();
        let w = parquet.get_or_insert_with(|| {
            ArrowWriter::try_new(file.take().unwrap(), batch.schema(), Some(props.clone())).unwrap()
        });
        w.write(&batch).unwrap();
    }
    csv.flush().unwrap();
    parquet.unwrap().close().unwrap();
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SEQREC_BENCH_ROWS")
        .unwrap_or_else(|_| "1000000,25000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let repeats = env("SEQREC_BENCH_REPEATS", 3).max(1);
    let fmt = GenericFormat {
        rating_col: Some("rating".into()),
        ..GenericFormat::default()
    };
    let opts = ReadOptions::default();
    println!(
        "{:>11} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "rows", "format", "MiB", "best s", "median s", "Mrows/s", "CSV/this"
    );
    for rows in sizes {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), rows);
        let mut csv_median = 0.0;
        let mut first: Option<(Vec<u32>, Vec<u32>)> = None;
        for name in ["log.csv", "log.parquet"] {
            let path = dir.path().join(name);
            let mut secs = Vec::new();
            for _ in 0..repeats {
                let t = Instant::now();
                let ds = source::read_path(&path, &fmt, &opts).expect("read the log");
                secs.push(t.elapsed().as_secs_f64());
                let got = (ds.interactions.users, ds.interactions.items);
                match &first {
                    None => first = Some(got),
                    Some(want) => assert!(want == &got, "{name} reads other interactions"),
                }
            }
            let best = secs.iter().copied().fold(f64::INFINITY, f64::min);
            let med = median(secs);
            if name == "log.csv" {
                csv_median = med;
            }
            let mib = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
            println!(
                "{rows:>11} {:>8} {mib:>10.1} {best:>10.3} {med:>10.3} {:>10.2} {:>8.2}",
                name.trim_start_matches("log."),
                rows as f64 / med / 1e6,
                csv_median / med
            );
        }
    }
}
