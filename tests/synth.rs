//! `seqrec synth`: reproducible files in the MovieLens-1M format that the
//! readers accept, ML-like shape, and sequential structure that the reported
//! ceiling measures.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use clap::Parser;
use seqrec::data::movielens::{read_ml1m_movies, read_ml1m_ratings};
use seqrec::data::synth::{generate, SynthConfig, SynthError, SynthSummary};
use seqrec::data::table::ReadOptions;
use seqrec::data::Sequences;

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        users: 200,
        items: 300,
        ratings: 200 * 60,
        ..SynthConfig::default()
    }
}

/// Enough users for empirical hit rates to sit within a few points of
/// their expectations.
fn medium() -> SynthConfig {
    SynthConfig {
        seed: 11,
        users: 1500,
        items: 1000,
        ratings: 1500 * 60,
        ..SynthConfig::default()
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sequences(dir: &Path) -> Sequences {
    let inter = read_ml1m_ratings(&dir.join("ratings.dat"), &ReadOptions::default()).unwrap();
    Sequences::build(&inter, 3).unwrap()
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    generate(&small(5), &a, false).unwrap();
    // One thread against the default pool: per-user random streams make the
    // output independent of scheduling.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| generate(&small(5), &b, false)).unwrap();
    generate(&small(6), &c, false).unwrap();
    for f in ["ratings.dat", "movies.dat", "synth.json"] {
        assert!(read(&a.join(f)) == read(&b.join(f)), "{f} differs");
    }
    assert!(read(&a.join("ratings.dat")) != read(&c.join("ratings.dat")));
    assert!(read(&a.join("synth.json")) != read(&c.join("synth.json")));
}

#[test]
fn files_parse_and_match_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/nested");
    let cfg = small(1);
    let s = generate(&cfg, &dir, false).unwrap();

    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let on_disk: SynthSummary = serde_json::from_slice(&read(&dir.join("synth.json"))).unwrap();
    assert_eq!(
        on_disk,
        SynthSummary {
            seconds: 0.0,
            ..s.clone()
        }
    );
    assert_eq!(s.seed, cfg.seed);
    assert_eq!(s.config.users, cfg.users);

    let inter = read_ml1m_ratings(&dir.join("ratings.dat"), &ReadOptions::default()).unwrap();
    assert_eq!(inter.lines_read, cfg.ratings);
    assert_eq!(s.ratings_written, cfg.ratings);
    assert_eq!(inter.len(), s.ratings_kept);
    assert_eq!(inter.below_min_rating, s.ratings_low);
    assert_eq!(s.ratings_kept + s.ratings_low, cfg.ratings);
    assert!(s.ratings_low > 0, "some rating-1 noise lines are expected");
    assert_eq!(inter.user_keys.len(), cfg.users);

    let catalog = read_ml1m_movies(&dir.join("movies.dat"), &ReadOptions::default()).unwrap();
    assert_eq!(catalog.num_items(), cfg.items);
    assert_eq!(catalog.vocab_size(), s.vocab_size);
    assert_eq!(s.vocab_size, s.max_item_id as usize + 1);
    // ML-1M's ratio of largest id to item count: ids have gaps.
    assert_eq!(s.max_item_id, 300 * 3952 / 3706);
    assert!(catalog.title(s.max_item_id).starts_with("Story "));
    let rated_ids = inter.items.iter().copied();
    assert!(rated_ids.clone().all(|i| catalog.is_item[i as usize]));
    let mut distinct: Vec<u32> = rated_ids.collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), s.items_rated);

    let seqs = Sequences::build(&inter, 3).unwrap();
    assert_eq!(seqs.len(), cfg.users, "every user keeps at least 3 ratings");
    let (_, test) = seqs.split_last();
    assert_eq!(test.len(), s.test_examples);
    let mut lengths: Vec<usize> = (0..seqs.len()).map(|u| seqs.get(u).len()).collect();
    lengths.sort_unstable();
    assert_eq!(lengths[0], s.kept_length.min);
    assert_eq!(lengths[lengths.len() / 2], s.kept_length.median);
    assert_eq!(*lengths.last().unwrap(), s.kept_length.max);

    // Without the filter every user has at least the minimum number of lines.
    let all = read_ml1m_ratings(
        &dir.join("ratings.dat"),
        &ReadOptions {
            min_rating: None,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    let mut per_user = vec![0usize; cfg.users];
    for &u in &all.users {
        per_user[u as usize] += 1;
    }
    assert!(per_user.iter().all(|&n| n >= cfg.min_user_ratings));
}

#[test]
fn lines_are_by_user_in_time_order_with_some_ties() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small(2);
    generate(&cfg, tmp.path(), false).unwrap();
    let text = String::from_utf8(read(&tmp.path().join("ratings.dat"))).unwrap();
    let mut last: Option<(u64, i64)> = None;
    let mut ties = 0;
    let mut ratings_seen = [0usize; 6];
    for line in text.lines() {
        let f: Vec<&str> = line.split("::").collect();
        assert_eq!(f.len(), 4, "{line}");
        let user: u64 = f[0].parse().unwrap();
        let rating: usize = f[2].parse().unwrap();
        let ts: i64 = f[3].parse().unwrap();
        ratings_seen[rating] += 1;
        if let Some((u, t)) = last {
            assert!(user == u || user == u + 1, "users are written in order");
            if user == u {
                assert!(ts >= t, "time goes forward within a user: {line}");
                ties += (ts == t) as usize;
            }
        } else {
            assert_eq!(user, 1);
        }
        last = Some((user, ts));
    }
    assert_eq!(last.unwrap().0, cfg.users as u64);
    assert!(ties > 0, "same-second ratings are expected");
    assert_eq!(ratings_seen[0], 0);
    assert!(ratings_seen[1..].iter().all(|&n| n > 0), "{ratings_seen:?}");
}

#[test]
fn ceiling_lies_between_popularity_and_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = generate(&small(3), tmp.path(), false).unwrap();
    assert!(s.popularity_hr10 > 0.0);
    assert!(
        s.ceiling_hr10 > 3.0 * s.popularity_hr10,
        "ceiling {} vs popularity {}",
        s.ceiling_hr10,
        s.popularity_hr10
    );
    assert!(s.ceiling_hr10 < 1.0);
    assert!(s.ceiling_ndcg10 > s.popularity_ndcg10);
    assert!(s.ceiling_ndcg10 <= s.ceiling_hr10);

    // Without order in the data, the oracle can do no better than popularity.
    let no_structure = SynthConfig {
        noise_prob: 1.0,
        ..small(3)
    };
    let s = generate(&no_structure, tmp.path(), false).unwrap();
    assert!(
        s.ceiling_hr10 - s.popularity_hr10 < 0.02,
        "ceiling {} vs popularity {}",
        s.ceiling_hr10,
        s.popularity_hr10
    );
}

#[test]
fn item_popularity_is_long_tailed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = medium();
    generate(&cfg, tmp.path(), false).unwrap();
    let seqs = sequences(tmp.path());
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &i in &seqs.items {
        *counts.entry(i).or_default() += 1;
    }
    let mut by_count: Vec<usize> = counts.values().copied().collect();
    by_count.sort_unstable_by(|a, b| b.cmp(a));
    let top_tenth: usize = by_count[..cfg.items / 10].iter().sum();
    let share = top_tenth as f64 / seqs.items.len() as f64;
    assert!(share > 0.25, "top 10% of items hold {share:.3} of ratings");
    let median = by_count[by_count.len() / 2];
    assert!(
        by_count[0] > 5 * median,
        "most popular {} vs median {median}",
        by_count[0]
    );
}

#[test]
fn user_lengths_are_long_tailed_with_the_ml1m_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        users: 2000,
        ratings: 2000 * 1_000_209 / 6040,
        ..SynthConfig::default()
    };
    let s = generate(&cfg, tmp.path(), false).unwrap();
    let l = &s.kept_length;
    // ML-1M after the filter: median ~96, mean ~156, a long right tail.
    assert!((70..=125).contains(&l.median), "median {}", l.median);
    assert!(l.mean > 1.3 * l.median as f64, "mean {}", l.mean);
    assert!(l.max > 8 * l.median, "max {}", l.max);
}

#[test]
fn the_previous_item_predicts_the_next_far_better_than_popularity() {
    let tmp = tempfile::tempdir().unwrap();
    let s = generate(&medium(), tmp.path(), false).unwrap();
    let seqs = sequences(tmp.path());

    // Bigram and popularity counts from the training part (all but the last).
    let mut successors: HashMap<u32, HashMap<u32, usize>> = HashMap::new();
    let mut popularity: HashMap<u32, usize> = HashMap::new();
    for u in 0..seqs.len() {
        let seq = seqs.get(u);
        let train = &seq[..seq.len() - 1];
        for &i in train {
            *popularity.entry(i).or_default() += 1;
        }
        for w in train.windows(2) {
            *successors.entry(w[0]).or_default().entry(w[1]).or_default() += 1;
        }
    }
    let top_10 = |counts: &HashMap<u32, usize>| -> Vec<u32> {
        let mut v: Vec<(u32, usize)> = counts.iter().map(|(&i, &c)| (i, c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().take(10).map(|(i, _)| i).collect()
    };
    let popular = top_10(&popularity);

    let (mut bigram_top1, mut bigram_top10, mut popular_top10) = (0, 0, 0);
    for u in 0..seqs.len() {
        let seq = seqs.get(u);
        let (prev, label) = (seq[seq.len() - 2], seq[seq.len() - 1]);
        let ranked = successors.get(&prev).map(top_10).unwrap_or_default();
        bigram_top1 += (ranked.first() == Some(&label)) as usize;
        bigram_top10 += ranked.contains(&label) as usize;
        popular_top10 += popular.contains(&label) as usize;
    }
    let n = seqs.len() as f64;
    let (bigram_top1, bigram_top10, popular_top10) = (
        bigram_top1 as f64 / n,
        bigram_top10 as f64 / n,
        popular_top10 as f64 / n,
    );
    // Its single guess beats popularity's ten.
    assert!(
        bigram_top1 > 2.0 * popular_top10,
        "bigram HR@1 {bigram_top1:.3} vs popularity HR@10 {popular_top10:.3}"
    );
    assert!(
        bigram_top10 > 4.0 * popular_top10,
        "bigram HR@10 {bigram_top10:.3} vs popularity HR@10 {popular_top10:.3}"
    );
    // The measured hit rates agree with the generator's expectations: the
    // popularity baseline's within sampling error, and no model (the bigram
    // one included) beats the ceiling beyond it.
    assert!(
        (popular_top10 - s.popularity_hr10).abs() < 0.04,
        "popularity measured {popular_top10:.3}, expected {:.3}",
        s.popularity_hr10
    );
    assert!(
        bigram_top10 < s.ceiling_hr10 + 0.05,
        "bigram HR@10 {bigram_top10:.3} vs ceiling {:.3}",
        s.ceiling_hr10
    );
    assert!(
        bigram_top10 > 0.6 * s.ceiling_hr10,
        "bigram HR@10 {bigram_top10:.3} should approach the ceiling {:.3}",
        s.ceiling_hr10
    );
    // The oracle's hits on these labels: a sample of the ceiling, within
    // four standard errors of it (a label paired with another user's state
    // would fall far below).
    let c = s.ceiling_hr10;
    let se = (c * (1.0 - c) / n).sqrt();
    assert!(
        (s.oracle_test_hr10 - c).abs() < 4.0 * se,
        "oracle on the test labels {:.3}, ceiling {c:.3} (se {se:.3})",
        s.oracle_test_hr10
    );
    // Measured the same way as the bigram model, the oracle ranks better.
    assert!(
        s.oracle_test_hr10 > bigram_top10,
        "oracle {:.3} vs bigram {bigram_top10:.3}",
        s.oracle_test_hr10
    );
}

#[test]
fn bad_configs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(SynthConfig, &str)> = vec![
        (
            SynthConfig {
                users: 0,
                ..small(1)
            },
            "users",
        ),
        (
            SynthConfig {
                items: 0,
                ..small(1)
            },
            "items",
        ),
        (
            SynthConfig {
                ratings: 200 * 20 - 1,
                ..small(1)
            },
            "ratings",
        ),
        (
            SynthConfig {
                max_item_id: Some(299),
                ..small(1)
            },
            "max_item_id",
        ),
        (
            SynthConfig {
                min_user_ratings: 2,
                ratings: 1000,
                ..small(1)
            },
            "min_user_ratings",
        ),
        (
            SynthConfig {
                noise_prob: 1.5,
                ..small(1)
            },
            "noise_prob",
        ),
        (
            SynthConfig {
                stay_prob: f64::NAN,
                ..small(1)
            },
            "stay_prob",
        ),
        (
            SynthConfig {
                length_sigma: -1.0,
                ..small(1)
            },
            "length_sigma",
        ),
        (
            SynthConfig {
                cluster_size: 0,
                ..small(1)
            },
            "cluster_size",
        ),
        (
            SynthConfig {
                follow_window: 0,
                ..small(1)
            },
            "follow_window",
        ),
    ];
    // The library names the setting; the command line names the flag (below).
    for (cfg, field) in cases {
        let err = generate(&cfg, tmp.path(), false).unwrap_err();
        assert!(
            matches!(&err, SynthError::Setting { field: f, .. } if *f == field),
            "expected a {field} error, got {err:?}"
        );
        assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
    }
    assert!(
        fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing is written for a bad config"
    );

    let file = tmp.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    assert!(generate(&small(1), &file, false).is_err());
}

#[test]
fn command_line_rejects_zero_users_and_writes_a_small_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let cli = seqrec::cli::Cli::try_parse_from(["seqrec", "synth", dir, "--users", "0"]).unwrap();
    let err = seqrec::cli::run(cli).unwrap_err().to_string();
    assert!(err.contains("--users"), "{err}");

    let cli = seqrec::cli::Cli::try_parse_from([
        "seqrec",
        "--quiet",
        "synth",
        dir,
        "--users",
        "30",
        "--items",
        "40",
        "--ratings",
        "900",
        "--seed",
        "4",
    ])
    .unwrap();
    seqrec::cli::run(cli).unwrap();
    let s: SynthSummary = serde_json::from_slice(&read(&tmp.path().join("synth.json"))).unwrap();
    assert_eq!(
        (s.users, s.items, s.ratings_written, s.seed),
        (30, 40, 900, 4)
    );
}

fn synth_cli(dir: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["seqrec", "--quiet", "synth", dir.to_str().unwrap()];
    args.extend(["--users", "30", "--items", "40", "--ratings", "900"]);
    args.extend_from_slice(extra);
    seqrec::cli::run(seqrec::cli::Cli::try_parse_from(args).unwrap())
}

#[test]
fn synth_never_writes_over_files_it_did_not_write_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    // A real dataset: ratings.dat and movies.dat, no synth.json.
    let real = tmp.path().join("ml");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("ratings.dat"), b"1::1::5::978300760\n").unwrap();
    fs::write(real.join("movies.dat"), b"1::Toy Story (1995)::Animation\n").unwrap();
    let err = synth_cli(&real, &[]).unwrap_err().to_string();
    assert!(
        err.contains("did not write") && err.contains("ratings.dat") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read(&real.join("ratings.dat")), b"1::1::5::978300760\n");

    // Any other file, its name escaped in the message.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("notes\x1b[31m.txt"), b"mine").unwrap();
    let err = synth_cli(&other, &[]).unwrap_err().to_string();
    assert!(
        err.contains("notes\\u{1b}[31m.txt") && !err.contains('\x1b'),
        "{err}"
    );

    // Its own earlier output is rewritten freely, a new folder is made.
    let own = tmp.path().join("own");
    synth_cli(&own, &["--seed", "1"]).unwrap();
    synth_cli(&own, &["--seed", "2"]).unwrap();
    let s: SynthSummary = serde_json::from_slice(&read(&own.join("synth.json"))).unwrap();
    assert_eq!(s.seed, 2);

    // --force writes over them; other files stay.
    synth_cli(&real, &["--force"]).unwrap();
    assert!(read(&real.join("ratings.dat")).len() > 100);
    synth_cli(&other, &["--force"]).unwrap();
    assert_eq!(read(&other.join("notes\x1b[31m.txt")), b"mine");
}

/// Even `--force` replaces only regular files: a FIFO or a link to a
/// device named ratings.dat is refused before the data is made, and left;
/// a synth.json that is a FIFO is not waited on.
#[test]
fn synth_replaces_only_regular_files_even_when_forced() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = |path: &Path| {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path it is given.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fifo(&out.join("ratings.dat"));
    let err = synth_cli(&out, &["--force"]).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "out_dir {}: is a FIFO (named pipe); seqrec writes only regular files (it would replace this one), give a file name",
            out.join("ratings.dat").display()
        )
    );
    assert!(fs::metadata(out.join("ratings.dat"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(!out.join("movies.dat").exists());

    let linked = tmp.path().join("linked");
    fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink("/dev/null", linked.join("movies.dat")).unwrap();
    let err = synth_cli(&linked, &["--force"]).unwrap_err().to_string();
    assert!(err.contains("is a character device"), "{err}");
    assert!(fs::symlink_metadata(linked.join("movies.dat"))
        .unwrap()
        .is_symlink());

    // A folder of synth's own files but a FIFO as synth.json: refused as
    // not synth's, at once.
    let own = tmp.path().join("own");
    synth_cli(&own, &[]).unwrap();
    fs::remove_file(own.join("synth.json")).unwrap();
    fifo(&own.join("synth.json"));
    let err = synth_cli(&own, &[]).unwrap_err().to_string();
    assert!(err.contains("did not write"), "{err}");
}
