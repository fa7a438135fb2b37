//! Fuzz targets: every reader (each format, then the sequences built from
//! what it read), the model-file loader (then a recommendation from what
//! it loaded), the approximate index's cache file (then searches of the
//! graph it gave), the config file (`--config`), and the HTTP server (raw
//! requests to `seqrec serve`). Each runs for
//! `SEQREC_FUZZ_SECONDS` (default 5) from real seed files; see harness.rs.
//!
//! Briefly (CI):  cargo test --release --test fuzz -- --nocapture
//! Longer:        SEQREC_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture --test-threads 1
//! With the real MovieLens-100K files as extra seeds, set SEQREC_ML100K.
//! A saved failure replays with SEQREC_FUZZ_REPLAY=FILE (every target
//! runs just that input).

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod http;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use seqrec::data::synth::{generate, SynthConfig};
use seqrec::data::table::{GenericFormat, Interactions, ReadOptions};
use seqrec::data::Sequences;
use seqrec::data::{delimited, movielens};

#[global_allocator]
static ALLOCATOR: harness::CountingAllocator = harness::CountingAllocator;

/// Synthetic data and a model trained on it, made once per run: real files
/// of seqrec's own making, shaped like MovieLens-1M.
struct Fixtures {
    _dir: tempfile::TempDir,
    data: PathBuf,
    model: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("synth");
        let cfg = SynthConfig {
            seed: 3,
            users: 40,
            items: 60,
            ratings: 40 * 30,
            ..SynthConfig::default()
        };
        generate(&cfg, &data, false).unwrap();
        let model = dir.path().join("m.safetensors");
        common::ok(&[
            "--quiet",
            "train",
            data.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--threads",
            "1",
        ]);
        Fixtures {
            _dir: dir,
            data,
            model,
        }
    })
}

/// The first `n` bytes of a file, cut at a line end.
fn head(path: &Path, n: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut cut = bytes.len().min(n);
    while cut < bytes.len() && cut > 0 && bytes[cut - 1] != b'\n' {
        cut -= 1;
    }
    bytes[..cut].to_vec()
}

/// The real MovieLens-100K file `name` (in the ML-1M format), when
/// SEQREC_ML100K names its folder.
fn real(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("SEQREC_ML100K")?;
    let path = Path::new(&dir).join(name);
    path.is_file().then(|| head(&path, 8 << 10))
}

fn seeds(mut written: Vec<&[u8]>, files: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if let Some(path) = std::env::var_os("SEQREC_FUZZ_REPLAY") {
        return vec![std::fs::read(path).unwrap()];
    }
    let mut all: Vec<Vec<u8>> = written.drain(..).map(<[u8]>::to_vec).collect();
    all.extend(files);
    all
}

/// Writes each input to a file named as the reader expects, and reads it.
fn file_target<T, E>(
    name: &str,
    read: impl Fn(&Path) -> Result<T, E>,
) -> impl FnMut(&[u8]) -> Result<T, E> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    move |bytes| {
        let _keep = &dir;
        std::fs::write(&path, bytes).unwrap();
        read(&path)
    }
}

/// What training does with what a ratings reader returns.
fn into_sequences(i: Interactions) -> Result<(), seqrec::data::DataError> {
    let seqs = Sequences::build(&i, 3)?;
    let (train, test) = seqs.split_last();
    assert!(train.len() + test.len() >= test.len());
    Ok(())
}

fn opts() -> ReadOptions {
    ReadOptions::default()
}

#[test]
fn fuzz_movielens_dat_ratings() {
    let f = fixtures();
    let seeds = seeds(
        vec![
            b"1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n2::1357::5::978298709\n2::3068::4::978299000\n2::1537::4::978299620\n",
        ],
        [Some(head(&f.data.join("ratings.dat"), 4 << 10)), real("ratings.dat")]
            .into_iter()
            .flatten()
            .collect(),
    );
    harness::fuzz(
        "dat_ratings",
        &seeds,
        &[b"::5::", b"\n1::"],
        file_target("ratings.dat", |p| {
            into_sequences(movielens::read_ml1m_ratings(p, &opts())?)
        }),
    );
}

#[test]
fn fuzz_movielens_dat_movies() {
    let f = fixtures();
    let seeds = seeds(
        vec![
            b"1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure|Children's|Fantasy\n73::Mis\xe9rables, Les (1995)::Drama|Musical\n",
        ],
        [Some(head(&f.data.join("movies.dat"), 4 << 10)), real("movies.dat")]
            .into_iter()
            .flatten()
            .collect(),
    );
    harness::fuzz(
        "dat_movies",
        &seeds,
        &[b"::Drama\n", b" (1995)"],
        file_target("movies.dat", |p| movielens::read_ml1m_movies(p, &opts())),
    );
}

#[test]
fn fuzz_movielens_100k_files() {
    let seeds_data = seeds(
        vec![b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t51\t2\t880606923\n196\t346\t1\t886397596\n"],
        vec![],
    );
    harness::fuzz(
        "u_data",
        &seeds_data,
        &[b"\t", b"\t5\t"],
        file_target("u.data", |p| {
            into_sequences(movielens::read_ml100k_ratings(p, &opts())?)
        }),
    );
    let seeds_item = seeds(
        vec![b"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"],
        vec![],
    );
    harness::fuzz(
        "u_item",
        &seeds_item,
        &[b"|0|1|", b"|"],
        file_target("u.item", |p| movielens::read_ml100k_items(p, &opts())),
    );
}

#[test]
fn fuzz_movielens_csv_files() {
    let ratings = seeds(
        vec![b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n1,6,4.0,964982224\n2,318,3.0,1445714835\n2,333,4.0,1445715029\n2,1704,4.5,1445715228\n"],
        vec![],
    );
    harness::fuzz(
        "csv_ratings",
        &ratings,
        &[b",4.5,", b"\n1,"],
        file_target("ratings.csv", |p| {
            into_sequences(movielens::read_movielens_csv_ratings(p, &opts())?)
        }),
    );
    let movies = seeds(
        vec![b"movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n11,\"American President, The (1995)\",Comedy|Drama|Romance\n\xef\xbb\xbf"],
        vec![],
    );
    harness::fuzz(
        "csv_movies",
        &movies,
        &[b"\"", b",\"a, b\","],
        file_target("movies.csv", |p| {
            movielens::read_movielens_csv_movies(p, &opts())
        }),
    );
}

#[test]
fn fuzz_generic_files() {
    let seeds = seeds(
        vec![
            b"user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\nu2,i2,1\nu2,i3,5\nu2,i1,9\n",
            b"user_id\titem_id\ttimestamp\trating\nalice\tbook 1\t1700000000\t5\nalice\tbook 2\t1700000100\t4\nalice\tbook 3\t1700000200\t1\n",
        ],
        vec![],
    );
    let fmt = GenericFormat::default();
    let tsv = GenericFormat {
        delimiter: Some(b'\t'),
        rating_col: Some("rating".into()),
        ..GenericFormat::default()
    };
    let mut csv_target = file_target("events.csv", |p| delimited::read_generic(p, &fmt, &opts()));
    let mut tsv_target = file_target("events.tsv", |p| delimited::read_generic(p, &tsv, &opts()));
    harness::fuzz("generic", &seeds, &[b",", b"\t", b"\""], |bytes| {
        // Each input in both dialects: the delimiter decides the fields.
        let a = csv_target(bytes).and_then(|(i, _)| into_sequences(i));
        let b = tsv_target(bytes).and_then(|(i, _)| into_sequences(i));
        a.or(b)
    });
}

/// A small log as Parquet (two row groups, a dictionary-encoded user
/// column), as an Arrow IPC file and as an Arrow IPC stream.
fn columnar_seeds() -> Vec<Vec<u8>> {
    use arrow_array::{ArrayRef, DictionaryArray, Float32Array, Int64Array, StringArray};
    use std::sync::Arc;
    let users: DictionaryArray<arrow_array::types::Int32Type> =
        vec!["a", "b", "a", "c", "b", "a"].into_iter().collect();
    let batch = arrow_array::RecordBatch::try_from_iter([
        ("user_id", Arc::new(users) as ArrayRef),
        (
            "item_id",
            Arc::new(StringArray::from(vec!["x", "y", "z", "x", "z", "y"])),
        ),
        (
            "timestamp",
            Arc::new(Int64Array::from(vec![3, 1, 2, 5, 4, 9])),
        ),
        (
            "rating",
            Arc::new(Float32Array::from(vec![5.0, 4.0, 1.0, 3.0, 2.5, 5.0])),
        ),
    ])
    .unwrap();
    let mut parquet = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(4))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut parquet, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut file = Vec::new();
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    let mut stream = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut stream, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    vec![parquet, file, stream]
}

#[test]
fn fuzz_columnar_files() {
    let written = columnar_seeds();
    let seeds = seeds(vec![], written);
    let fmt = GenericFormat {
        rating_col: Some("rating".into()),
        ..GenericFormat::default()
    };
    let mut target = file_target("events.parquet", |p| {
        seqrec::data::source::read_path(p, &fmt, &opts())
    });
    harness::fuzz(
        "columnar",
        &seeds,
        &[b"PAR1", b"ARROW1", b"\xff\xff\xff\xff"],
        |bytes| {
            // From a file (by its first bytes), and from memory as Python
            // hands a DataFrame over.
            let a = target(bytes).map(|ds| into_sequences(ds.interactions));
            let b = seqrec::data::read_arrow_ipc_stream(bytes, "frame", &fmt, &opts());
            b.map(|_| ()).or(a.map(|_| ()))
        },
    );
}

#[test]
fn fuzz_model_files() {
    let f = fixtures();
    let good = std::fs::read(&f.model).unwrap();
    // The header is where structure lives; seeds of a few shapes of it.
    let seeds = seeds(
        vec![],
        vec![good.clone(), good[..good.len().min(4096)].to_vec()],
    );
    let keys: Vec<&[u8]> = vec![
        b"\"shape\":[",
        b"\"dtype\":\"F32\"",
        b"\"data_offsets\":[",
        b"vocab_size",
        b"context_len",
        b"99999999999",
    ];
    let mut count = 0usize;
    harness::fuzz("model_file", &seeds, &keys, |bytes| {
        count += 1;
        // Every other input gets its header's length prefix set to where
        // its JSON seems to end, so mutations reach the JSON and the
        // tensors, not just the prefix.
        let fixed;
        let bytes = match last_brace(bytes) {
            Some(end) if count.is_multiple_of(2) => {
                let mut b = bytes.to_vec();
                b[..8].copy_from_slice(&(end as u64 - 7).to_le_bytes());
                fixed = b;
                &fixed[..]
            }
            _ => bytes,
        };
        let model = seqrec::checkpoint::from_bytes(bytes)?;
        let rec = seqrec::retrieval::recommender::Recommender::new(model.artifact);
        let history: Vec<u32> = (1..rec.spec.vocab_size.min(4) as u32).collect();
        let found = rec.recommend(&[&history], 5, true, false);
        assert!(found[0].len() <= 5);
        Ok::<(), seqrec::checkpoint::FormatError>(())
    });
}

/// Where a model file's header JSON likely ends: the last `}` within its
/// first 64 KiB, after the 8-byte length prefix.
fn last_brace(b: &[u8]) -> Option<usize> {
    let head = b.get(8..b.len().min(64 << 10))?;
    head.iter().rposition(|&c| c == b'}').map(|i| i + 8)
}

#[test]
fn fuzz_http_requests() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let token = "fuzz-token-7Qx";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).unwrap();
    let mut server = http::Server::start(&f.model, &token_file);
    let seeds = seeds(vec![], http::seeds(token));
    let (mut count, mut peak_rss) = (0u64, 0f64);
    harness::fuzz("http", &seeds, http::TOKENS, |bytes| {
        count += 1;
        let raw = server.exchange(bytes);
        assert!(server.is_running(), "the server stopped");
        let raw = raw.unwrap_or_else(|e| panic!("no answer and no close within 5 s: {e}"));
        let statuses = http::statuses(&raw).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            statuses
                .iter()
                .all(|&s| s < 500 || http::SERVER_REFUSALS.contains(&s)),
            "a server error: {statuses:?}\n{}",
            String::from_utf8_lossy(&raw)
        );
        if count.is_multiple_of(64) {
            peak_rss = peak_rss.max(server.rss_mib());
            assert!(peak_rss < 1024.0, "the server holds {peak_rss:.0} MiB");
            let health = server
                .exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(http::statuses(&health), Ok(vec![200]));
        }
        match statuses.first() {
            Some(200..=299) => Ok(()),
            _ => Err(()),
        }
    });
    eprintln!("fuzz http: the server's resident memory peaked at {peak_rss:.0} MiB");
}

/// A cache file (`MODEL.index`) with its graph's length and SHA-256 set
/// to match the graph again, as a forger would: the mutations then reach
/// the check of the graph itself, not just the checksum.
fn resealed(mut file: Vec<u8>) -> Vec<u8> {
    use sha2::Digest;
    const HEADER: usize = 80;
    if file.len() < HEADER {
        return file;
    }
    let len = (file.len() - HEADER) as u64;
    let sum = sha2::Sha256::digest(&file[HEADER..]);
    file[40..72].copy_from_slice(&sum);
    file[72..80].copy_from_slice(&len.to_le_bytes());
    file
}

#[test]
fn fuzz_index_cache_files() {
    use rand::{Rng, SeedableRng};
    use seqrec::retrieval::approx::{ApproxIndex, ApproxSettings, GraphMemory, IndexError};
    use seqrec::retrieval::Candidates;
    // 800 items of dimension 8 (every 5th id no item): a graph of several
    // levels, small enough to mutate fast.
    let (n, d) = (800, 8);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let table: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let allowed: Vec<bool> = (0..n).map(|i| i > 0 && i % 5 != 2).collect();
    let cands = Candidates {
        embeddings: &table,
        dim: d,
        allowed: Some(&allowed),
    };
    let good = ApproxIndex::build(cands, ApproxSettings::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let seeds = seeds(vec![], vec![good.clone(), good[..good.len() / 3].to_vec()]);
    let u32s: Vec<[u8; 4]> = [0u32, 1, 31, 32, 33, 799, 800, u32::MAX]
        .iter()
        .map(|v| v.to_le_bytes())
        .collect();
    let mut dict: Vec<&[u8]> = u32s.iter().map(|b| &b[..]).collect();
    dict.extend([&b"usearch"[..], b"\xff\x7f", b"\0\0\0\0\0\0\0\x80"]);
    let path = Path::new("fuzz.index");
    let mut count = 0usize;
    harness::fuzz("index_cache", &seeds, &dict, |bytes| {
        count += 1;
        // Most inputs resealed (past the checksum), some as they are.
        let file = if count.is_multiple_of(4) {
            bytes.to_vec()
        } else {
            resealed(bytes.to_vec())
        };
        let memory = if count.is_multiple_of(2) {
            GraphMemory::Heap
        } else {
            GraphMemory::HugePages
        };
        let s = ApproxSettings {
            memory,
            ..ApproxSettings::default()
        };
        let index = ApproxIndex::from_bytes(&file, cands, s, path)?;
        // What loads must answer: allowed ids, never more than asked.
        for q in 0..3 {
            let query = &table[(q * 101 + 7) * d..(q * 101 + 8) * d];
            let found = index.search(cands, query, 10, &[3, 4, (q * 13) as u32]);
            assert_eq!(found.len(), 10);
            assert!(found.iter().all(|s| allowed[s.id as usize]));
        }
        Ok::<(), IndexError>(())
    });
}

#[test]
fn fuzz_config_files() {
    use seqrec::train::Settings;
    let defaults = Settings::default();
    let mut written: Vec<Vec<u8>> = vec![defaults.to_toml().unwrap().into_bytes()];
    for preset in seqrec::train::PRESETS {
        let settings = defaults.preset(preset).unwrap();
        written.push(settings.to_toml().unwrap().into_bytes());
    }
    let seeds = seeds(
        vec![
            b"epochs = 3\nbatch_size = 64\npadding = \"left\"\nmask_padding = true\n",
            b"# a comment\n[table]\nkey = [1, 2, { a = \"b\" }]\n\"quoted key\" = 1e309\n",
        ],
        written,
    );
    let keys: Vec<&[u8]> = vec![
        b" = ",
        b"\"",
        b"'''",
        b"[[",
        b"]]",
        b"{ ",
        b"\\u001b",
        b"threads",
        b"learning_rate",
        b"true",
        b"1979-05-27T07:32:00Z",
    ];
    harness::fuzz(
        "config",
        &seeds,
        &keys,
        file_target("config.toml", |p| -> Result<(), String> {
            let limit = seqrec::train::config::MAX_CONFIG_BYTES;
            let text =
                seqrec::files::read_text(p, limit, "a config file").map_err(|e| e.to_string())?;
            let settings = Settings::default().overlay_toml(&text).map_err(|e| {
                // Whatever the file holds, its message is one bounded,
                // escaped line.
                let m = e.to_string();
                assert!(!m.chars().any(char::is_control), "{m:?}");
                assert!(m.len() < 4096, "{} bytes", m.len());
                m
            })?;
            settings.validate().map_err(|e| e.to_string())?;
            // What was read prints as a config that reads back the same.
            let printed = settings.to_toml().map_err(|e| e.to_string())?;
            assert_eq!(
                Settings::default().overlay_toml(&printed).unwrap(),
                settings
            );
            Ok(())
        }),
    );
}
