//! The data pipeline against the reference: small hand-written files for every
//! rule of SPEC.md, and real MovieLens-100K for the reference's checksums.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use seqrec::data::table::{GenericFormat, ReadOptions};
use seqrec::data::{delimited, movielens, source, Sequences};
use seqrec::model::batch::batches;
use seqrec::model::{ModelOptions, Padding};
use sha2::{Digest, Sha256};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// Every example as (context, label), in the reference's order.
type Examples = Vec<(Vec<u32>, u32)>;

fn examples(dir: &Path) -> (Examples, Examples) {
    let ds = source::read_path(dir, &GenericFormat::default(), &ReadOptions::default()).unwrap();
    let seqs = Sequences::build(&ds.interactions, 3).unwrap();
    let (train, test) = seqs.split_last();
    // The reference's window: 10 items, right padding.
    let spec = ModelOptions::default().spec(ds.catalog.vocab_size());
    let collect = |set| {
        batches(&spec, &seqs, set, 7)
            .flat_map(|b| {
                (0..b.size)
                    .map(|r| (b.contexts[r * 10..(r + 1) * 10].to_vec(), b.labels[r]))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    (collect(&train), collect(&test))
}

fn digest(ex: &[(Vec<u32>, u32)]) -> String {
    let mut h = Sha256::new();
    for (ctx, label) in ex {
        let line: Vec<String> = ctx.iter().map(|c| c.to_string()).collect();
        h.update(format!("{}>{}\n", line.join(","), label));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn pad(v: &[u32]) -> Vec<u32> {
    let mut out = v.to_vec();
    out.resize(10, 0);
    out
}

#[test]
fn rules_of_the_reference_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    // User 7 appears first (file order of users), has a tie at t=100 (file
    // order kept), and a rating of 1 that the filter drops.
    // User 3 has exactly 3 kept ratings; user 5 has 2 and is skipped; user 9
    // has 3 ratings but one is below the minimum, so it is skipped too.
    let ratings = b"7::10::5::300\n3::1::4::10\n7::11::3::100\n7::12::1::50\n\
7::13::4::100\n5::20::5::1\n3::2::2::20\n5::21::5::2\n3::3::5::30\n7::14::5::400\n\
9::1::5::1\n9::2::1::2\n9::3::5::3\n";
    write(dir.path(), "ratings.dat", ratings);
    write(
        dir.path(),
        "movies.dat",
        b"1::A (1990)::Drama\n30::Z (2000)::Comedy\n",
    );
    let (train, test) = examples(dir.path());
    // User 7 sorted: 11 (t100), 13 (t100, after 11: stable), 10 (t300), 14 (t400).
    assert_eq!(
        train,
        vec![(pad(&[11]), 13), (pad(&[11, 13]), 10), (pad(&[1]), 2),]
    );
    assert_eq!(test, vec![(pad(&[11, 13, 10]), 14), (pad(&[1, 2]), 3)]);
}

#[test]
fn windows_keep_the_last_ten_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut ratings = String::new();
    for t in 1..=14 {
        ratings.push_str(&format!("1::{t}::5::{t}\n"));
    }
    write(dir.path(), "ratings.dat", ratings.as_bytes());
    write(dir.path(), "movies.dat", b"1::A::B\n");
    let (train, test) = examples(dir.path());
    assert_eq!(train.len(), 12);
    assert_eq!(train[9], ((1..=10).collect::<Vec<_>>(), 11));
    assert_eq!(train[11], ((3..=12).collect::<Vec<_>>(), 13));
    assert_eq!(test, vec![((4..=13).collect::<Vec<_>>(), 14)]);
}

#[test]
fn left_padding_puts_the_newest_item_last() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ratings.dat",
        b"1::5::5::1\n1::6::5::2\n1::7::5::3\n",
    );
    write(dir.path(), "movies.dat", b"1::A::B\n");
    let ds = source::read_path(
        dir.path(),
        &GenericFormat::default(),
        &ReadOptions::default(),
    )
    .unwrap();
    let seqs = Sequences::build(&ds.interactions, 3).unwrap();
    let (_, test) = seqs.split_last();
    let spec = ModelOptions {
        context_len: 4,
        padding: Padding::Left,
        ..ModelOptions::default()
    }
    .spec(ds.catalog.vocab_size());
    let b = batches(&spec, &seqs, &test, 8).next().unwrap();
    assert_eq!(&b.contexts[..4], &[0, 0, 5, 6]);
    assert_eq!(b.lengths, vec![2]);
}

#[test]
fn latin1_titles_and_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let movies =
        b"1::Mis\xe9rables, Les (1995)::Drama\n3952::Contender, The (2000)::Drama|Thriller\n";
    let p = write(dir.path(), "movies.dat", movies);
    let cat = movielens::read_ml1m_movies(&p, &ReadOptions::default()).unwrap();
    assert_eq!(cat.title(1), "Misérables, Les (1995)");
    assert_eq!(cat.title(3952), "Contender, The (2000)");
    assert_eq!(cat.vocab_size(), 3953);
    assert_eq!(cat.title(2), "");
    assert!(!cat.is_item[2] && cat.is_item[1] && !cat.is_item[0]);
}

#[test]
fn ml100k_native_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "u.data",
        b"196\t242\t3\t881250949\n196\t302\t3\t881250950\n196\t1\t4\t881250951\n",
    );
    write(
        dir.path(),
        "u.item",
        b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n242|Kolya (1996)|24-Jan-1997||http://y|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n302|L.A. Confidential (1997)|01-Jan-1997||z|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0\n",
    );
    let (train, test) = examples(dir.path());
    assert_eq!(train, vec![(pad(&[242]), 302)]);
    assert_eq!(test, vec![(pad(&[242, 302]), 1)]);
    let ds = source::read_path(
        dir.path(),
        &GenericFormat::default(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.catalog.title(242), "Kolya (1996)");
}

#[test]
fn movielens_csv_release_with_quoted_titles_and_half_stars() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,3.5,100\n1,3,1.5,101\n1,4,2.0,102\n1,5,4.5,103\n",
    );
    write(
        dir.path(),
        "movies.csv",
        "movieId,title,genres\n2,\"American President, The (1995)\",Comedy\n5,Amélie (2001),Romance\n"
            .as_bytes(),
    );
    let (train, test) = examples(dir.path());
    // 1.5 is below the minimum rating of 2 and dropped.
    assert_eq!(train, vec![(pad(&[2]), 4)]);
    assert_eq!(test, vec![(pad(&[2, 4]), 5)]);
    let ds = source::read_path(
        dir.path(),
        &GenericFormat::default(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.catalog.title(2), "American President, The (1995)");
    assert_eq!(ds.catalog.title(5), "Amélie (2001)");
}

#[test]
fn generic_file_with_string_ids_and_titles() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "log.tsv", b"when\twho\twhat\nx\n");
    // A malformed line is located; fix the file and read it for real.
    let fmt = GenericFormat {
        user_col: "who".into(),
        item_col: "what".into(),
        time_col: "when".into(),
        titles: Some(write(
            dir.path(),
            "items.csv",
            b"item_id,title\nsku-b,\"Boots, red\"\n",
        )),
        ..GenericFormat::default()
    };
    // Through `source`, which adds the titles a format reader leaves out.
    let err = source::read_path(&log, &fmt, &ReadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("log.tsv:2:") && msg.contains("who"), "{msg}");

    fs::write(
        &log,
        b"when\twho\twhat\n5\talice\tsku-a\n6\talice\tsku-b\n7\tbob\tsku-b\n8\talice\tsku-c\n9\tbob\tsku-a\n10\tbob\tsku-c\n",
    )
    .unwrap();
    let ds = source::read_path(&log, &fmt, &ReadOptions::default()).unwrap();
    let (inter, cat) = (ds.interactions, ds.catalog);
    assert_eq!(inter.items, vec![1, 2, 2, 3, 1, 3]);
    assert_eq!(inter.users, vec![0, 0, 1, 0, 1, 1]);
    assert_eq!(inter.user_keys, vec!["alice", "bob"]);
    assert_eq!(cat.vocab_size(), 4);
    assert_eq!(cat.key(2), "sku-b");
    assert_eq!(cat.title(2), "Boots, red");
}

#[test]
fn malformed_lines_name_file_line_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "ratings.dat",
            b"1::2::5::10\n1::2::5\n",
            "expected 4 fields",
        ),
        ("ratings.dat", b"1::2::5::10\n1::x::5::10\n", "item id"),
        ("ratings.dat", b"1::2::5::10\nu::2::5::10\n", "user id"),
        ("ratings.dat", b"1::2::5::10\n1::2::five::10\n", "rating"),
        ("ratings.dat", b"1::2::5::10\n1::2::5::noon\n", "timestamp"),
    ];
    for (name, body, want) in cases {
        let p = write(dir.path(), name, body);
        let err = movielens::read_ml1m_ratings(&p, &ReadOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("{name}:2:")), "{msg}");
        assert!(msg.contains(want), "{msg} lacks {want}");
        let skipping = ReadOptions {
            skip_bad_lines: true,
            ..ReadOptions::default()
        };
        let ok = movielens::read_ml1m_ratings(&p, &skipping).unwrap();
        assert_eq!((ok.len(), ok.skipped_lines), (1, 1));
    }
    let p = write(dir.path(), "u.data", b"1\t2\t3\t4\n1\t2\t3\n");
    let msg = movielens::read_ml100k_ratings(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("u.data:2:") && msg.contains("expected 4 fields"),
        "{msg}"
    );
    let p = write(dir.path(), "movies.dat", b"1::A::B\nnope\n");
    let msg = movielens::read_ml1m_movies(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("movies.dat:2:"), "{msg}");
    let p = write(dir.path(), "u.item", b"1|A|x\n0|B|y\n");
    let msg = movielens::read_ml100k_items(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("u.item:2:") && msg.contains("item id"),
        "{msg}"
    );
    let p = write(
        dir.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,3,4\n1,2,x,4\n",
    );
    let msg = movielens::read_movielens_csv_ratings(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ratings.csv:3:") && msg.contains("rating"),
        "{msg}"
    );
    let p = write(
        dir.path(),
        "movies.csv",
        b"movieId,title,genres\n1,A,B\nq,B,C\n",
    );
    let msg = movielens::read_movielens_csv_movies(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("movies.csv:3:"), "{msg}");
}

#[test]
fn a_missing_folder_or_unknown_layout_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let msg = source::detect(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such file or folder"), "{msg}");
    let msg = source::detect(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("no MovieLens files found"), "{msg}");
}

/// Real MovieLens-100K (`../shared/tools/get-ml100k DIR`, then
/// `SEQREC_ML100K=DIR`): the reference pipeline's exact examples.
#[test]
#[ignore = "needs MovieLens-100K: set SEQREC_ML100K to a folder written by get-ml100k"]
fn movielens_100k_matches_the_reference_checksums() {
    let dir =
        std::env::var("SEQREC_ML100K").expect("SEQREC_ML100K names the MovieLens-100K folder");
    let ds = source::read_path(
        Path::new(&dir),
        &GenericFormat::default(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.interactions.len(), 93_890);
    assert_eq!(ds.catalog.vocab_size(), 1683);
    let (train, test) = examples(Path::new(&dir));
    assert_eq!(train.len(), 92_004);
    assert_eq!(train.len().div_ceil(4096), 23);
    assert_eq!(test.len(), 943);
    assert_eq!(train[0], (pad(&[242]), 286));
    assert_eq!(
        test[0],
        (vec![845, 25, 13, 762, 67, 692, 580, 411, 108, 1118], 94)
    );
    assert_eq!(
        digest(&train),
        "96949c268ec252cd9a2b25284713044b721659410cb99599a15d6276d3d54747"
    );
    assert_eq!(
        digest(&test),
        "033702e07cff66bb86d68f23fe4df0f76cc0334c4856077084defa268ea71b1c"
    );
}

#[test]
fn huge_ids_and_tab_delimiters() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "ratings.dat",
        b"1::2::5::10\n1::4000000000::5::11\n",
    );
    let msg = movielens::read_ml1m_ratings(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ratings.dat:2:") && msg.contains("not supported"),
        "{msg}"
    );
    let log = write(dir.path(), "log.txt", b"who\twhat\twhen\na\tx\t1\n");
    let msg = delimited::read_generic(
        &log,
        &GenericFormat {
            user_col: "who".into(),
            item_col: "what".into(),
            time_col: "when".into(),
            ..GenericFormat::default()
        },
        &ReadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("set the delimiter to tab"), "{msg}");
}

#[test]
fn timestamps_beyond_64_bits_are_refused_not_saturated() {
    let dir = tempfile::tempdir().unwrap();
    for t in [
        "99999999999999999999",
        "1e30",
        "-1e19",
        "9223372036854775808.0",
    ] {
        let p = write(
            dir.path(),
            "ratings.dat",
            format!("1::2::5::10\n1::3::5::{t}\n").as_bytes(),
        );
        let msg = movielens::read_ml1m_ratings(&p, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("ratings.dat:2:") && msg.contains("64-bit range"),
            "{t}: {msg}"
        );
        let p = write(
            dir.path(),
            "ratings.csv",
            format!("userId,movieId,rating,timestamp\n1,2,5,{t}\n").as_bytes(),
        );
        let msg = movielens::read_movielens_csv_ratings(&p, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("ratings.csv:2:") && msg.contains("64-bit range"),
            "{t}: {msg}"
        );
        let p = write(
            dir.path(),
            "log.csv",
            format!("user_id,item_id,timestamp\nu,i,{t}\n").as_bytes(),
        );
        let msg = delimited::read_generic(&p, &GenericFormat::default(), &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("log.csv:2:") && msg.contains("64-bit range"),
            "{t}: {msg}"
        );
    }
    // Decimal seconds within range are still truncated to whole seconds.
    let p = write(
        dir.path(),
        "ratings.dat",
        b"1::2::5::978300760.9\n1::3::5::-12.5\n",
    );
    let ok = movielens::read_ml1m_ratings(&p, &ReadOptions::default()).unwrap();
    assert_eq!(ok.timestamps, vec![978_300_760, -12]);
}

#[test]
fn a_byte_order_mark_starts_dat_files_as_it_does_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ratings.dat",
        b"\xEF\xBB\xBF1::2::5::10\n1::3::5::11\n1::2::4::12\n",
    );
    write(
        dir.path(),
        "movies.dat",
        b"\xEF\xBB\xBF2::Two (1995)::Drama\n",
    );
    let ds = source::read_path(
        dir.path(),
        &GenericFormat::default(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.interactions.user_keys, vec!["1"]);
    assert_eq!(ds.interactions.items, vec![2, 3, 2]);
    assert_eq!(ds.catalog.title(2), "Two (1995)");
    let p = write(dir.path(), "u.data", b"\xEF\xBB\xBF7\t2\t5\t10\n");
    let ok = movielens::read_ml100k_ratings(&p, &ReadOptions::default()).unwrap();
    assert_eq!(
        (ok.user_keys.clone(), ok.items.clone()),
        (vec!["7".to_string()], vec![2])
    );
}

#[test]
fn an_unterminated_quote_is_reported_where_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "movies.csv",
        b"movieId,title,genres\n1,\"Toy Story,Animation\n2,Two,Drama\n3,Three,Drama\n",
    );
    let msg = movielens::read_movielens_csv_movies(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("movies.csv:2:") && msg.contains("never closed"),
        "{msg}"
    );
    let p = write(
        dir.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,5,10\n1,\"3,5,11\n",
    );
    let msg = movielens::read_movielens_csv_ratings(&p, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ratings.csv:3:") && msg.contains("never closed"),
        "{msg}"
    );
    // Skipping bad lines must not swallow the rest of the file silently.
    let p = write(
        dir.path(),
        "log.csv",
        b"user_id,item_id,timestamp\nu,i,1\nv,\"j,2\nw,k,3\nx,l,4\n",
    );
    let skipping = ReadOptions {
        skip_bad_lines: true,
        ..ReadOptions::default()
    };
    let msg = delimited::read_generic(&p, &GenericFormat::default(), &skipping)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("log.csv:3:") && msg.contains("never closed"),
        "{msg}"
    );
    // Closed quotes over several lines, and doubled quotes, are fine.
    let p = write(
        dir.path(),
        "movies.csv",
        b"movieId,title,genres\n1,\"Two\nLines\",Drama\n2,\"Say \"\"hi\"\"\",Comedy\n",
    );
    let cat = movielens::read_movielens_csv_movies(&p, &ReadOptions::default()).unwrap();
    assert_eq!((cat.title(1), cat.title(2)), ("Two\nLines", "Say \"hi\""));
}

#[test]
fn a_movielens_file_stands_for_its_folder() {
    let opts = ReadOptions::default();
    let generic = GenericFormat::default();
    let dir = tempfile::tempdir().unwrap();
    let ratings = write(dir.path(), "ratings.dat", b"1::2::5::10\n1::3::5::11\n");
    write(dir.path(), "movies.dat", b"2::Two (1995)::Drama\n");
    let whole = source::read_path(dir.path(), &generic, &opts).unwrap();
    for file in [ratings, dir.path().join("movies.dat")] {
        let one = source::read_path(&file, &generic, &opts).unwrap();
        assert_eq!(one.format, source::Format::MovieLensDat);
        assert_eq!(one.interactions.items, whole.interactions.items);
        assert_eq!(one.catalog.titles, whole.catalog.titles);
    }

    let csv = tempfile::tempdir().unwrap();
    write(
        csv.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,2,4.5,10\n",
    );
    let movies = write(
        csv.path(),
        "movies.csv",
        b"movieId,title,genres\n2,Two,Drama\n",
    );
    let ds = source::read_path(&movies, &generic, &opts).unwrap();
    assert_eq!(ds.format, source::Format::MovieLensCsv);
    assert_eq!(ds.catalog.title(2), "Two");

    // A generic file may be called ratings.csv too: its header says which.
    let other = tempfile::tempdir().unwrap();
    let own = write(
        other.path(),
        "ratings.csv",
        b"user_id,item_id,timestamp\nu,i,1\n",
    );
    assert_eq!(
        source::detect(&own).unwrap(),
        (source::Format::Generic, own.clone())
    );

    // A lone part of a release says to pass the folder.
    let lone = tempfile::tempdir().unwrap();
    let p = write(lone.path(), "movies.dat", b"2::Two (1995)::Drama\n");
    let msg = source::read_path(&p, &generic, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("movies.dat") && msg.contains("pass the folder"),
        "{msg}"
    );
}

/// Whether `msg` is short and free of control characters (escaped input).
fn tame(msg: &str) -> bool {
    msg.len() < 600 && !msg.chars().any(|c| c.is_control())
}

#[test]
fn input_in_messages_is_bounded_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ReadOptions::default();
    let big = "7".repeat(10_000_000);
    let evil = "\x1b]0;owned\x07\x1b[2J";

    // A 10 MB field and an escape sequence, in every reader's fields.
    for field in [big.as_str(), evil] {
        let p = write(
            dir.path(),
            "ratings.dat",
            format!("1::2::5::10\n1::{field}x::5::10\n").as_bytes(),
        );
        let msg = movielens::read_ml1m_ratings(&p, &opts)
            .unwrap_err()
            .to_string();
        assert!(tame(&msg) && msg.contains("ratings.dat:2:"), "{msg:.300}");
        let p = write(
            dir.path(),
            "ratings.csv",
            format!("userId,movieId,rating,timestamp\n1,2,5,{field}x\n").as_bytes(),
        );
        let msg = movielens::read_movielens_csv_ratings(&p, &opts)
            .unwrap_err()
            .to_string();
        assert!(tame(&msg) && msg.contains("ratings.csv:2:"), "{msg:.300}");
        let p = write(
            dir.path(),
            "log.csv",
            format!("user_id,item_id,timestamp\nu,i,{field}x\n").as_bytes(),
        );
        let msg = delimited::read_generic(&p, &GenericFormat::default(), &opts)
            .unwrap_err()
            .to_string();
        assert!(tame(&msg) && msg.contains("log.csv:2:"), "{msg:.300}");
        let p = write(dir.path(), "u.item", format!("{field}x|T|\n").as_bytes());
        let msg = movielens::read_ml100k_items(&p, &opts)
            .unwrap_err()
            .to_string();
        assert!(tame(&msg) && msg.contains("u.item:1:"), "{msg:.300}");
    }
    let p = write(
        dir.path(),
        "ratings.dat",
        format!("1::{big}::5::10\n").as_bytes(),
    );
    let msg = movielens::read_ml1m_ratings(&p, &opts)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(10000000 bytes)"), "{msg:.300}");

    // Header names: escaped, and a long header listed in part.
    let p = write(dir.path(), "log.csv", format!("{evil},b\nx,y\n").as_bytes());
    let msg = delimited::read_generic(&p, &GenericFormat::default(), &opts)
        .unwrap_err()
        .to_string();
    assert!(tame(&msg) && msg.contains("\\u{1b}]0;owned"), "{msg}");
    let wide: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
    let p = write(
        dir.path(),
        "log.csv",
        format!("{}\n", wide.join(",")).as_bytes(),
    );
    let msg = delimited::read_generic(&p, &GenericFormat::default(), &opts)
        .unwrap_err()
        .to_string();
    assert!(tame(&msg) && msg.contains("(100000 columns)"), "{msg}");

    // The command line's own wording of the header error, too.
    let p = write(
        dir.path(),
        "log.csv",
        format!("{evil},{}\nx,y\n", "h".repeat(1_000_000)).as_bytes(),
    );
    let stderr = common::fails(&["--quiet", "data", "stats", p.to_str().unwrap()]);
    assert!(
        stderr.contains("header has no column") && stderr.contains("--user-col"),
        "{stderr:.300}"
    );
    assert!(
        stderr.len() < 600
            && !stderr
                .trim_end()
                .chars()
                .any(|c| c.is_control() && c != '\n'),
        "{stderr:?}"
    );
}

/// Three users over items 1, 2, 3 and 10,000,000 (the largest id allowed).
fn sparse_release(dir: &Path) {
    let mut ratings = String::new();
    for u in 1..=3 {
        for (t, item) in [1, 2, 3, 10_000_000].iter().enumerate() {
            ratings.push_str(&format!("{u}::{item}::5::{}\n", 100 * u + t));
        }
    }
    write(dir, "ratings.dat", ratings.as_bytes());
    write(
        dir,
        "movies.dat",
        b"1::One::A\n2::Two::A\n3::Three::A\n10000000::Ten million::A\n",
    );
}

#[test]
fn sparse_item_ids_are_refused_or_renumbered_before_tables_are_sized() {
    let dir = tempfile::tempdir().unwrap();
    sparse_release(dir.path());
    let generic = GenericFormat::default();
    let msg = source::read_path(dir.path(), &generic, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("item ids go up to 10000000 but only 4 are items")
            && msg.contains("`renumber_items`"),
        "{msg}"
    );
    let renumber = ReadOptions {
        renumber_items: true,
        ..ReadOptions::default()
    };
    let ds = source::read_path(dir.path(), &generic, &renumber).unwrap();
    assert_eq!(ds.catalog.vocab_size(), 5);
    assert_eq!(ds.catalog.title(4), "Ten million");
    assert_eq!(ds.catalog.key(4), "10000000");
    assert_eq!(&ds.interactions.items[..4], &[1, 2, 3, 4]);

    // MovieLens' own gaps are left alone: ids as they are.
    let gaps = tempfile::tempdir().unwrap();
    write(
        gaps.path(),
        "ratings.dat",
        b"1::2::5::1\n1::900000::5::2\n1::2::5::3\n",
    );
    let ds = source::read_path(gaps.path(), &generic, &ReadOptions::default()).unwrap();
    assert_eq!(ds.catalog.vocab_size(), 900_001);
    assert!(ds.catalog.keys.is_none());
}

#[test]
fn train_refuses_sparse_ids_cleanly_and_trains_them_renumbered() {
    let dir = tempfile::tempdir().unwrap();
    sparse_release(dir.path());
    let model = dir.path().join("model");
    let run = |extra: &[&str]| {
        let mut args = vec!["--quiet", "train", dir.path().to_str().unwrap()];
        args.extend_from_slice(&[
            "--out",
            model.to_str().unwrap(),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--batch-size",
            "4",
            "--threads",
            "1",
        ]);
        args.extend_from_slice(extra);
        common::seqrec(&args)
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--renumber-items") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!model.exists());

    let out = run(&["--renumber-items"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained = seqrec::checkpoint::load_for_inference(&model)
        .unwrap()
        .artifact;
    assert_eq!(trained.spec.vocab_size, 5);
    assert!(trained.data.renumber_items);
    // evaluate reads the data as training did, renumbered, without the flag.
    common::ok(&[
        "--quiet",
        "evaluate",
        model.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
}

/// Data that is a device or a FIFO is named for what it is (`data stats
/// /dev/zero` said "no such file"), and never read without end or waited
/// on: the data itself, a file of a MovieLens folder, a title file.
#[test]
fn data_that_is_no_regular_file_is_refused_at_once_and_said_what_it_is() {
    use common::{mkfifo, seqrec_within};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("log.csv");
    mkfifo(&fifo);
    let ml = dir.path().join("ml");
    fs::create_dir(&ml).unwrap();
    mkfifo(&ml.join("ratings.dat"));
    let log = dir.path().join("events.csv");
    fs::write(&log, "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,3\n").unwrap();
    let titles_fifo = dir.path().join("titles.csv");
    mkfifo(&titles_fifo);
    let show = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["/dev/zero".into()],
            "/dev/zero: is a character device, not a regular file or a folder".into(),
        ),
        (
            vec![show(&fifo)],
            format!(
                "{}: is a FIFO (named pipe), not a regular file or a folder",
                show(&fifo)
            ),
        ),
        (
            vec![show(&ml)],
            format!(
                "{}: is a FIFO (named pipe), not a regular file",
                show(&ml.join("ratings.dat"))
            ),
        ),
        (
            vec![show(&log), "--titles-file".into(), "/dev/zero".into()],
            "/dev/zero: is a character device, not a regular file".into(),
        ),
        (
            vec![show(&log), "--titles-file".into(), show(&titles_fifo)],
            format!(
                "{}: is a FIFO (named pipe), not a regular file",
                show(&titles_fifo)
            ),
        ),
    ];
    for (data, want) in cases {
        let mut args = vec!["data", "stats"];
        args.extend(data.iter().map(String::as_str));
        let (out, finished) = seqrec_within(&args, 30);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(finished && !out.status.success(), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
}
