//! Parquet and Arrow IPC logs read as their CSV twins are, their errors,
//! and `seqrec export`'s Parquet files read back.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{StringDictionaryBuilder, StringViewBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array,
    Int8Array, LargeStringArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
    UInt64Array,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use seqrec::data::source::read_path;
use seqrec::data::table::GenericFormat;
use seqrec::data::{read_arrow_ipc_stream, Dataset, ReadOptions};

/// A log: (user, item, timestamp, rating) in file order.
const LOG: &[(&str, &str, i64, f32)] = &[
    ("u1", "i10", 5, 4.0),
    ("u2", "i11", 1, 5.0),
    ("u1", "i12", 3, 1.0),
    ("u1", "i11", 9, 3.0),
    ("u2", "i10", 2, 4.5),
    ("u3", "i13", 7, 2.0),
    ("u2", "i13", 8, 5.0),
    ("u1", "i13", 10, 5.0),
];

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn string_log() -> RecordBatch {
    batch(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(LOG.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "item_id",
            Arc::new(StringArray::from_iter_values(LOG.iter().map(|r| r.1))),
        ),
        (
            "timestamp",
            Arc::new(Int64Array::from_iter_values(LOG.iter().map(|r| r.2))),
        ),
        (
            "rating",
            Arc::new(Float32Array::from_iter_values(LOG.iter().map(|r| r.3))),
        ),
    ])
}

fn write_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("user_id,item_id,timestamp,rating\n");
    for (u, i, t, r) in LOG {
        text += &format!("{u},{i},{t},{r}\n");
    }
    let path = dir.join("log.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn ipc_stream(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    out
}

fn write_ipc_file(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

fn rated() -> GenericFormat {
    GenericFormat {
        rating_col: Some("rating".into()),
        ..GenericFormat::default()
    }
}

fn read(path: &Path, fmt: &GenericFormat) -> Dataset {
    read_path(path, fmt, &ReadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn error(path: &Path, fmt: &GenericFormat, opts: &ReadOptions) -> String {
    read_path(path, fmt, opts).unwrap_err().to_string()
}

/// Everything reading decides: users and items numbered, order kept,
/// ratings filtered, keys kept.
fn same_examples(a: &Dataset, b: &Dataset) {
    assert_eq!(a.interactions.users, b.interactions.users);
    assert_eq!(a.interactions.items, b.interactions.items);
    assert_eq!(a.interactions.timestamps, b.interactions.timestamps);
    assert_eq!(a.interactions.user_keys, b.interactions.user_keys);
    assert_eq!(
        a.interactions.below_min_rating,
        b.interactions.below_min_rating
    );
    assert_eq!(a.catalog.keys, b.catalog.keys);
    assert_eq!(a.catalog.is_item, b.catalog.is_item);
}

#[test]
fn parquet_and_arrow_logs_give_the_examples_of_the_same_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv = read(&write_csv(dir.path()), &rated());
    // The rating filter (minimum 2) dropped one row.
    assert_eq!(csv.interactions.len(), LOG.len() - 1);
    assert_eq!(csv.interactions.below_min_rating, 1);

    let log = string_log();
    let parquet = dir.path().join("log.parquet");
    write_parquet(&parquet, std::slice::from_ref(&log));
    same_examples(&csv, &read(&parquet, &rated()));

    // Split into several batches (row groups), the numbering still runs
    // in file order.
    let split = dir.path().join("split.parquet");
    write_parquet(&split, &[log.slice(0, 3), log.slice(3, 5)]);
    same_examples(&csv, &read(&split, &rated()));

    let arrow = dir.path().join("log.arrow");
    write_ipc_file(&arrow, &[log.slice(0, 4), log.slice(4, 4)]);
    same_examples(&csv, &read(&arrow, &rated()));

    let stream = ipc_stream(std::slice::from_ref(&log));
    let stream_file = dir.path().join("log.arrows");
    std::fs::write(&stream_file, &stream).unwrap();
    same_examples(&csv, &read(&stream_file, &rated()));
    let in_memory = read_arrow_ipc_stream(&stream, "frame", &rated(), &ReadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    same_examples(&csv, &in_memory);
    assert_eq!(in_memory.origin, "frame");
}

#[test]
fn integer_ids_read_as_their_text_and_timestamps_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("user_id,item_id,timestamp\n");
    let rows: [(u64, i64, i64); 5] = [
        (7, 300, 20),
        (3, 100, 10),
        (7, 100, 30),
        (3, 200, 5),
        (9, 300, 1),
    ];
    for (u, i, t) in rows {
        text += &format!("{u},{i},{t}\n");
    }
    let csv_path = dir.path().join("ints.csv");
    std::fs::write(&csv_path, text).unwrap();
    let csv = read(&csv_path, &GenericFormat::default());

    // Unsigned users, categorical items, timestamps as milliseconds.
    let log = batch(vec![
        (
            "user_id",
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        // Items as a categorical of integers (as pandas writes one).
        (
            "item_id",
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(
                    Int32Array::from_iter_values(rows.iter().map(|r| (r.1 / 100 - 1) as i32)),
                    Arc::new(Int64Array::from(vec![100, 200, 300])),
                )
                .unwrap(),
            ),
        ),
        (
            "timestamp",
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.2 * 1000),
            )),
        ),
    ]);
    let path = dir.path().join("ints.parquet");
    write_parquet(&path, &[log]);
    let parquet = read(&path, &GenericFormat::default());
    assert_eq!(parquet.interactions.users, csv.interactions.users);
    assert_eq!(parquet.interactions.items, csv.interactions.items);
    assert_eq!(parquet.interactions.user_keys, csv.interactions.user_keys);
    assert_eq!(parquet.catalog.keys, csv.catalog.keys);
    let ms: Vec<i64> = csv
        .interactions
        .timestamps
        .iter()
        .map(|t| t * 1000)
        .collect();
    assert_eq!(parquet.interactions.timestamps, ms);
}

/// A null inside a dictionary of integers (pandas writes a missing value of
/// a categorical of ints so) is a missing id, as a null row is: read as the
/// 0 beneath it, it became item "0" silently.
#[test]
fn a_null_in_a_dictionary_of_ints_is_a_missing_id() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 6;
    // Nullable fields, as pandas writes them (the keys have no nulls of
    // their own, so `batch` would declare the column required).
    let log = RecordBatch::try_from_iter_with_nullable(vec![
        (
            "user_id",
            Arc::new(Int64Array::from_iter_values((0..rows).map(|r| r / 3))) as ArrayRef,
            true,
        ),
        (
            "item_id",
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(
                    Int32Array::from(vec![0, 1, 2, 0, 1, 1]),
                    Arc::new(Int64Array::from(vec![Some(100), None, Some(300)])),
                )
                .unwrap(),
            ),
            true,
        ),
        (
            "timestamp",
            Arc::new(Int64Array::from_iter_values(0..rows)),
            true,
        ),
    ])
    .unwrap();
    let path = dir.path().join("nulls.parquet");
    write_parquet(&path, &[log]);
    let err = error(&path, &GenericFormat::default(), &ReadOptions::default());
    assert!(
        err.contains("row 2") && err.contains(r#"column "item_id" is empty (null)"#),
        "{err}"
    );
    let skipping = ReadOptions {
        skip_bad_lines: true,
        ..ReadOptions::default()
    };
    let ds = read_path(&path, &GenericFormat::default(), &skipping).unwrap();
    // Rows 2, 5 and 6 point at the null: three rows are left, none of
    // them item "0".
    assert_eq!(ds.interactions.items.len(), 3);
    let keys = ds.catalog.keys.clone().unwrap();
    assert!(!keys.iter().any(|k| k == "0"), "{keys:?}");
}

/// A wanted column the file holds twice was read from the first silently.
#[test]
fn a_column_the_file_holds_twice_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = string_log();
    let mut fields: Vec<_> = log.schema().fields().iter().cloned().collect();
    let mut columns = log.columns().to_vec();
    let item = log.schema().index_of("item_id").unwrap();
    fields.push(fields[item].clone());
    columns.push(columns[item].clone());
    let doubled =
        RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).unwrap();
    for (name, write) in [
        ("twice.parquet", write_parquet as fn(&Path, &[RecordBatch])),
        ("twice.arrow", write_ipc_file),
    ] {
        let path = dir.path().join(name);
        write(&path, std::slice::from_ref(&doubled));
        let err = error(&path, &GenericFormat::default(), &ReadOptions::default());
        assert!(
            err.contains(r#"column "item_id" appears 2 times (the item_col setting)"#),
            "{err}"
        );
    }
}

#[test]
fn every_string_layout_reads_alike() {
    let dir = tempfile::tempdir().unwrap();
    let expected = read(&write_csv(dir.path()), &GenericFormat::default());
    let mut users = StringDictionaryBuilder::<Int32Type>::new();
    let mut items = StringViewBuilder::new();
    for r in LOG {
        users.append_value(r.0);
        items.append_value(r.1);
    }
    let log = batch(vec![
        ("user_id", Arc::new(users.finish()) as ArrayRef),
        ("item_id", Arc::new(items.finish())),
        (
            "timestamp",
            Arc::new(LargeStringArray::from_iter_values(
                LOG.iter().map(|r| r.2.to_string()),
            )),
        ),
    ]);
    let path = dir.path().join("layouts.arrow");
    write_ipc_file(&path, &[log]);
    same_examples(&expected, &read(&path, &GenericFormat::default()));
}

#[test]
fn titles_come_from_a_parquet_title_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    write_parquet(&log, &[string_log()]);
    let titles = dir.path().join("titles.parquet");
    write_parquet(
        &titles,
        &[batch(vec![
            (
                "item_id",
                Arc::new(StringArray::from(vec!["i11", "i13", "unrated"])) as ArrayRef,
            ),
            (
                "title",
                Arc::new(StringArray::from(vec![Some("Eleven"), None, Some("X")])),
            ),
        ])],
    );
    let fmt = GenericFormat {
        titles: Some(titles),
        ..GenericFormat::default()
    };
    let ds = read(&log, &fmt);
    let keys = ds.catalog.keys.clone().unwrap();
    let title_of = |key: &str| {
        let id = keys.iter().position(|k| k == key).unwrap();
        ds.catalog.titles[id].clone()
    };
    assert_eq!(title_of("i11"), "Eleven");
    assert_eq!(title_of("i13"), "");
    assert_eq!(title_of("i10"), "");
}

#[test]
fn bad_columns_and_rows_name_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.parquet");
    write_parquet(&path, &[string_log()]);
    let fmt = GenericFormat {
        item_col: "movie".into(),
        ..GenericFormat::default()
    };
    let msg = error(&path, &fmt, &ReadOptions::default());
    assert!(
        msg.contains("log.parquet")
            && msg.contains("no column \"movie\" (the item_col setting)")
            && msg.contains("user_id, item_id, timestamp, rating"),
        "{msg}"
    );

    // A null item in row 3, and a float user id column.
    let items: Vec<Option<&str>> = vec![Some("a"), Some("b"), None, Some("a")];
    let nulls = batch(vec![
        (
            "user_id",
            Arc::new(Int8Array::from(vec![1, 1, 2, 2])) as ArrayRef,
        ),
        ("item_id", Arc::new(StringArray::from(items))),
        ("timestamp", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
    ]);
    let path = dir.path().join("nulls.parquet");
    write_parquet(&path, &[nulls]);
    let msg = error(&path, &GenericFormat::default(), &ReadOptions::default());
    assert!(
        msg.contains("nulls.parquet: row 3: column \"item_id\" is empty (null)"),
        "{msg}"
    );
    let skipping = ReadOptions {
        skip_bad_lines: true,
        ..ReadOptions::default()
    };
    let ds = read_path(&path, &GenericFormat::default(), &skipping).unwrap();
    assert_eq!(
        (ds.interactions.len(), ds.interactions.skipped_lines),
        (3, 1)
    );

    let floats = batch(vec![
        (
            "user_id",
            Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
        ),
        ("item_id", Arc::new(StringArray::from(vec!["a"]))),
        ("timestamp", Arc::new(Int64Array::from(vec![1]))),
    ]);
    let path = dir.path().join("floats.arrow");
    write_ipc_file(&path, &[floats]);
    let msg = error(&path, &GenericFormat::default(), &ReadOptions::default());
    assert!(
        msg.contains(
            "floats.arrow: column \"user_id\": expected integer or string ids, found Float64"
        ),
        "{msg}"
    );

    let ratings = batch(vec![
        (
            "user_id",
            Arc::new(UInt32Array::from(vec![1, 2])) as ArrayRef,
        ),
        ("item_id", Arc::new(UInt32Array::from(vec![5, 6]))),
        ("timestamp", Arc::new(Int64Array::from(vec![1, 2]))),
        ("rating", Arc::new(Float64Array::from(vec![4.0, f64::NAN]))),
    ]);
    let path = dir.path().join("nan.parquet");
    write_parquet(&path, &[ratings]);
    let msg = error(&path, &rated(), &ReadOptions::default());
    assert!(
        msg.contains("nan.parquet: row 2: column \"rating\": expected a number, found NaN"),
        "{msg}"
    );
}

#[test]
fn corrupt_or_misnamed_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    write_parquet(&good, &[string_log()]);
    let bytes = std::fs::read(&good).unwrap();
    let opts = ReadOptions::default();
    // Truncations, and a byte flipped in every position of the footer.
    for cut in [4, 8, bytes.len() / 2, bytes.len() - 9, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{cut}.parquet"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let msg = error(&path, &GenericFormat::default(), &opts);
        assert!(msg.contains("not a readable Parquet file"), "{cut}: {msg}");
    }
    for at in (bytes.len().saturating_sub(300)..bytes.len() - 8).step_by(7) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x5A;
        let path = dir.path().join("flipped.parquet");
        std::fs::write(&path, &flipped).unwrap();
        // Either read (the byte was padding) or refused: never a panic.
        let _ = read_path(&path, &GenericFormat::default(), &opts);
    }
    let stream = ipc_stream(&[string_log()]);
    for cut in [4, 12, stream.len() / 2, stream.len() - 3] {
        let result =
            read_arrow_ipc_stream(&stream[..cut], "frame", &GenericFormat::default(), &opts);
        assert!(result.is_err(), "{cut}");
    }
    let msg = read_arrow_ipc_stream(
        b"user_id,item_id\n",
        "frame",
        &GenericFormat::default(),
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("frame: not a readable Arrow IPC file"),
        "{msg}"
    );

    let misnamed = dir.path().join("text.parquet");
    std::fs::write(&misnamed, "user_id,item_id,timestamp\n1,2,3\n").unwrap();
    let msg = error(&misnamed, &GenericFormat::default(), &opts);
    assert!(msg.contains("magic bytes `PAR1`"), "{msg}");
}

/// The strings in column `name` of a Parquet file, and its vectors.
fn read_vectors(path: &Path, name: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let (mut keys, mut vectors) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.unwrap();
        let k = batch.column_by_name(name).unwrap();
        let k = k.as_any().downcast_ref::<StringArray>().unwrap();
        let v = batch.column_by_name("vector").unwrap();
        let v = v
            .as_any()
            .downcast_ref::<arrow_array::FixedSizeListArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            keys.push(k.value(i).to_string());
            let row = v.value(i);
            let row = row.as_any().downcast_ref::<Float32Array>().unwrap();
            vectors.push(row.values().to_vec());
        }
    }
    (keys, vectors)
}

#[test]
fn a_model_trained_on_parquet_exports_its_vectors_to_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    // 40 users over 30 items, as Parquet with integer ids.
    let (mut users, mut items, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for u in 0..40i64 {
        for s in 0..8i64 {
            users.push(1000 + u);
            items.push((u * 7 + s * 3) % 30 + 1);
            times.push(s);
        }
    }
    let log = batch(vec![
        ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
        ("item_id", Arc::new(Int64Array::from(items))),
        ("timestamp", Arc::new(Int64Array::from(times))),
    ]);
    write_parquet(&dir.path().join("log.parquet"), &[log]);
    let model = d("m.safetensors");
    // The command line names the flag that chose a missing column.
    let msg = common::fails(&["train", &d("log.parquet"), "--user-col", "who", "--quiet"]);
    assert!(
        msg.contains("log.parquet: no column \"who\" (set it with --user-col); its columns are user_id, item_id, timestamp"),
        "{msg}"
    );
    common::ok(&[
        "train",
        &d("log.parquet"),
        "--out",
        &model,
        "--epochs",
        "1",
        "--embedding-dim",
        "8",
        "--quiet",
    ]);
    let out = common::ok(&[
        "export",
        &model,
        "--items",
        &d("items.parquet"),
        "--queries",
        &d("queries.parquet"),
        "--quiet",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["items"]["rows"], 30);
    assert_eq!(summary["queries"]["rows"], 40);

    let rec = seqrec::retrieval::recommender::Recommender::load(Path::new(&model)).unwrap();
    let (keys, vectors) = read_vectors(&dir.path().join("items.parquet"), "item_id");
    assert_eq!(keys.len(), 30);
    for (key, v) in keys.iter().zip(&vectors) {
        let id = rec.item_id(key).unwrap() as usize;
        assert_eq!(v[..], rec.params.candidate_embedding[id * 8..id * 8 + 8]);
    }
    let (users, queries) = read_vectors(&dir.path().join("queries.parquet"), "user_id");
    assert_eq!(users.len(), 40);
    for (user, q) in users.iter().zip(&queries) {
        let history = rec.user_history(user).unwrap();
        assert_eq!(q[..], rec.encode(&[history])[..], "{user}");
    }
    // The top item by the exported vectors is the model's top item.
    let history = rec.user_history(&users[0]).unwrap();
    let top = rec.recommend(&[history], 1, false, false);
    let best = keys
        .iter()
        .zip(&vectors)
        .map(|(k, v)| {
            (
                k,
                v.iter().zip(&queries[0]).map(|(a, b)| a * b).sum::<f32>(),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(rec.item_id(best.0).unwrap(), top[0][0].id);

    // Nothing to export, or over the model itself, is refused.
    let msg = common::fails(&["export", &model]);
    assert!(msg.contains("nothing to export"), "{msg}");
    let msg = common::fails(&["export", &model, "--items", &model]);
    assert!(msg.contains("--items"), "{msg}");
    // The model the refused export named stays whole.
    assert!(seqrec::retrieval::recommender::Recommender::load(Path::new(&model)).is_ok());
}
