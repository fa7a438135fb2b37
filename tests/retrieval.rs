//! Top-K retrieval, ranks and metrics against brute-force references and
//! hand-computed cases; `evaluate` and `recommend` end to end.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqrec::eval::RankMetrics;
use seqrec::retrieval::{rank_of, select_top_k, top_k, Candidates, Scored, SelectScratch};

/// The reference: sort every allowed, non-excluded id by (score desc, id asc).
fn full_sort(scores: &[f32], allowed: &[bool], excluded: &[u32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..scores.len() as u32)
        .filter(|&i| allowed[i as usize] && !excluded.contains(&i))
        .collect();
    // partial_cmp, not total_cmp: -0.0 and 0.0 are the same score.
    ids.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a as usize], scores[b as usize]);
        sb.partial_cmp(&sa).unwrap().then(a.cmp(&b))
    });
    ids.truncate(k);
    ids
}

#[test]
fn top_k_equals_a_full_sort_with_ties_and_exclusions() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (n, d, queries, k) in [(300, 4, 37, 10), (1000, 8, 130, 25), (50, 3, 5, 60)] {
        // Integer-valued embeddings make many exactly tied scores.
        let cands: Vec<f32> = (0..n * d)
            .map(|_| rng.random_range(-2..=2) as f32)
            .collect();
        let q: Vec<f32> = (0..queries * d)
            .map(|_| rng.random_range(-2..=2) as f32)
            .collect();
        let allowed: Vec<bool> = (0..n).map(|i| i != 0 && i % 7 != 3).collect();
        let excluded: Vec<Vec<u32>> = (0..queries)
            .map(|_| (0..5).map(|_| rng.random_range(0..n as u32)).collect())
            .collect();
        let c = Candidates {
            embeddings: &cands,
            dim: d,
            allowed: Some(&allowed),
        };
        let got = top_k(&q, c, k, |i| &excluded[i]);
        for (qi, found) in got.iter().enumerate() {
            let scores: Vec<f32> = (0..n)
                .map(|j| (0..d).map(|t| q[qi * d + t] * cands[j * d + t]).sum())
                .collect();
            let want = full_sort(&scores, &allowed, &excluded[qi], k);
            let ids: Vec<u32> = found.iter().map(|s| s.id).collect();
            assert_eq!(ids, want, "query {qi}");
            for s in found {
                assert_eq!(s.score, scores[s.id as usize]);
            }
        }
    }
}

#[test]
fn parity_retrieval_can_return_padding() {
    // Without an allowed list (the reference's BruteForceRetrieval) id 0 is a
    // candidate like any other.
    let cands = [5.0f32, 1.0, 2.0];
    let c = Candidates {
        embeddings: &cands,
        dim: 1,
        allowed: None,
    };
    let got = top_k(&[1.0], c, 2, |_| &[]);
    assert_eq!(got[0].iter().map(|s| s.id).collect::<Vec<_>>(), vec![0, 2]);
    let allowed = [false, true, true];
    let c = Candidates {
        embeddings: &cands,
        dim: 1,
        allowed: Some(&allowed),
    };
    let got = top_k(&[1.0], c, 2, |_| &[]);
    assert_eq!(got[0].iter().map(|s| s.id).collect::<Vec<_>>(), vec![2, 1]);
}

#[test]
fn select_skips_excluded_and_returns_fewer_when_few_remain() {
    let row = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, 3.0];
    let mut out = Vec::new();
    select_top_k(&row, 3, &mut out, &mut SelectScratch::default());
    assert_eq!(
        out,
        vec![Scored { id: 3, score: 3.0 }, Scored { id: 1, score: 1.0 }]
    );
}

#[test]
fn ranks_follow_the_pessimistic_tie_rule() {
    let row = [f32::NEG_INFINITY, 0.9, 0.5, 0.5, 0.1, 0.5];
    assert_eq!(rank_of(&row, 1), Some(1));
    // 0.5 is shared by ids 2, 3 and 5: each ranks after the other two.
    assert_eq!(rank_of(&row, 2), Some(4));
    assert_eq!(rank_of(&row, 5), Some(4));
    assert_eq!(rank_of(&row, 4), Some(5));
    assert_eq!(rank_of(&row, 0), None);
}

#[test]
fn metrics_at_rank_1_k_and_k_plus_1() {
    let mut m = RankMetrics::new(&[10]);
    m.add(Some(1));
    m.add(Some(10));
    m.add(Some(11));
    m.add(None);
    let r = m.finish()[0];
    assert!((r.hr - 2.0 / 4.0).abs() < 1e-12);
    let ndcg = (1.0 + 1.0 / 11f64.log2()) / 4.0;
    assert!((r.ndcg - ndcg).abs() < 1e-12, "{} vs {ndcg}", r.ndcg);
    assert!((r.mrr - (1.0 + 0.1) / 4.0).abs() < 1e-12);
}

fn train_small_synthetic(dir: &Path) -> (String, String) {
    let data = dir.join("data");
    let model = dir.join("model.safetensors");
    ok(&[
        "--quiet",
        "synth",
        data.to_str().unwrap(),
        "--users",
        "600",
        "--items",
        "400",
        "--ratings",
        "60000",
        "--seed",
        "5",
    ]);
    ok(&[
        "--quiet",
        "train",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--epochs",
        "8",
        "--batch-size",
        "512",
        "--learning-rate",
        "0.01",
    ]);
    (
        data.to_str().unwrap().to_string(),
        model.to_str().unwrap().to_string(),
    )
}

#[test]
fn a_trained_model_beats_popularity_on_planted_structure() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = train_small_synthetic(dir.path());
    let out = ok(&["--quiet", "evaluate", &model, &data, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hr = v["model"]["seen_excluded"][0]["hr"].as_f64().unwrap();
    let ndcg = v["model"]["seen_excluded"][0]["ndcg"].as_f64().unwrap();
    let pop_hr = v["popularity"]["seen_excluded"][0]["hr"].as_f64().unwrap();
    let pop_ndcg = v["popularity"]["seen_excluded"][0]["ndcg"]
        .as_f64()
        .unwrap();
    assert_eq!(v["examples"].as_u64(), Some(600));
    // A 400-item catalogue makes popularity strong (about 0.24); the planted
    // transitions still let the model double it.
    assert!(
        hr > 2.0 * pop_hr && hr > pop_hr + 0.2,
        "HR@10 {hr} vs popularity {pop_hr}"
    );
    assert!(
        ndcg > 2.0 * pop_ndcg,
        "NDCG@10 {ndcg} vs popularity {pop_ndcg}"
    );

    // The text table has both scorers at both cut-offs.
    let table = ok(&["--quiet", "evaluate", &model, &data, "--k", "5,10,20"]);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("model") || l.starts_with("popularity"))
            .count(),
        6,
        "{table}"
    );
    assert!(table.ends_with('\n'), "{table:?}");

    // Without DATA, on the data the model records: the same report.
    let recorded = ok(&["--quiet", "evaluate", &model, "--json"]);
    assert_eq!(recorded, out);
    // A recorded folder that has gone is a clear error, not a guess.
    let moved = dir.path().join("moved");
    fs::rename(&data, &moved).unwrap();
    let out = seqrec(&["evaluate", &model]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pass DATA"), "{err}");
}

#[test]
fn recommend_by_ids_titles_user_file_and_demo() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = train_small_synthetic(dir.path());
    let out = ok(&[
        "recommend",
        &model,
        "--history",
        "5,6,7",
        "--k",
        "4",
        "--exclude-seen",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for it in items {
        assert!(!["5", "6", "7", "0"].contains(&it["id"].as_str().unwrap()));
        assert!(!it["title"].as_str().unwrap().is_empty());
    }
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));

    let title = items[0]["title"].as_str().unwrap().to_string();
    let by_title = ok(&["recommend", &model, "--titles", &title, "--json"]);
    assert!(by_title.contains("\"items\""));

    let user = ok(&["recommend", &model, "--user", "1", "--k", "3"]);
    assert!(user.contains("rank") && user.lines().count() >= 5, "{user}");

    let demo = ok(&["recommend", &model, "--demo"]);
    assert!(
        demo.contains("==> Movies the user has watched:")
            && demo.contains("==> Recommended movies for the above sequence:")
    );
    assert_eq!(
        demo.lines()
            .skip_while(|l| !l.starts_with("==> Recommended"))
            .skip(1)
            .count(),
        10
    );

    let input = dir.path().join("in.csv");
    fs::write(&input, "id,history,user\na,5 6 7,\nb,,2\n").unwrap();
    let output = dir.path().join("out.jsonl");
    ok(&[
        "recommend",
        &model,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--k",
        "2",
    ]);
    let lines: Vec<serde_json::Value> = fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], "b");
    assert_eq!(lines[1]["items"].as_array().unwrap().len(), 2);
    let csv_out = dir.path().join("out.csv");
    ok(&[
        "recommend",
        &model,
        "--input",
        input.to_str().unwrap(),
        "--output",
        csv_out.to_str().unwrap(),
        "--k",
        "2",
    ]);
    assert_eq!(fs::read_to_string(&csv_out).unwrap().lines().count(), 5);

    for (args, want) in [
        (vec!["--history", "5,99999"], "unknown item \"99999\""),
        (
            vec!["--titles", "No Such Film (1900)"],
            "no item has the title",
        ),
        (vec!["--user", "nobody"], "unknown user"),
        (vec!["--history", "5", "--k", "0"], "--k"),
        (vec![], "give exactly one of"),
        // An answer for one history goes to the terminal: --output alone
        // was ignored silently.
        (vec!["--history", "5", "--output", "x.jsonl"], "--input"),
    ] {
        let mut a = vec!["recommend", model.as_str()];
        a.extend(args);
        let out = seqrec(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && !err.contains("panicked"),
            "{a:?}: {err}"
        );
    }
    fs::write(&input, "id,history\na,5 x 7\n").unwrap();
    let out = seqrec(&[
        "recommend",
        &model,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.csv:2:") && err.contains("\"x\""), "{err}");

    // The answers never replace the questions, nor the model.
    for target in [&input, &PathBuf::from(&model)] {
        let before = fs::read(target).unwrap();
        let out = seqrec(&[
            "recommend",
            &model,
            "--input",
            input.to_str().unwrap(),
            "--output",
            target.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("is the input"),
            "{err}"
        );
        assert_eq!(fs::read(target).unwrap(), before);
    }
}

#[test]
fn evaluate_refuses_data_of_another_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = train_small_synthetic(dir.path());
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(
        other.join("ratings.dat"),
        "1::1::5::1\n1::2::5::2\n1::3::5::3\n",
    )
    .unwrap();
    fs::write(other.join("movies.dat"), "1::A::B\n3::C::D\n").unwrap();
    let out = seqrec(&["evaluate", &model, other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("trained on"), "{err}");
}

/// A hot swap replaces the model and its approximate graph together: the
/// graph served after a reload is the one built for the new file, and the
/// cache beside the file follows it.
#[test]
fn a_hot_swap_replaces_model_and_index_together() {
    use seqrec::retrieval::approx::{self, ApproxIndex, ApproxSettings, IndexChoice};
    use seqrec::serve::model::ModelSlot;
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path(), 300, 300, 20000, 2);
    let trained = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        train_one_epoch(data.to_str().unwrap(), &out, &["--seed", seed]);
        out
    };
    let (a, b) = (trained("1", "a.safetensors"), trained("2", "b.safetensors"));
    let served = dir.path().join("served.safetensors");
    fs::copy(&a, &served).unwrap();

    // A search list other than the default, kept across reloads.
    let searching = ApproxSettings::searching(Some("77".parse().unwrap()));
    let slot = ModelSlot::load(served.clone(), IndexChoice::Approx, searching).unwrap();
    let first = slot.get();
    assert_eq!(first.info["index"]["expansion_search"], 77);
    let graph = first.rec.approx_index().expect("on the graph");
    assert!(graph.is_for(first.rec.candidates(false)));
    assert_eq!(first.info["index"]["kind"], "approx");
    assert!(approx::cache_path(&served).exists());

    // The new file arrives by rename, as `seqrec train --out` writes it.
    let tmp = dir.path().join("incoming");
    fs::copy(&b, &tmp).unwrap();
    fs::rename(&tmp, &served).unwrap();
    let second = slot.reload().unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.info["index"]["expansion_search"], 77);
    let new_graph = second.rec.approx_index().expect("on the graph");
    assert!(new_graph.is_for(second.rec.candidates(false)));
    assert!(!new_graph.is_for(first.rec.candidates(false)));
    assert_eq!(
        second.info["index"]["from"], "built",
        "the old cache is not reused"
    );
    // The cache now holds the new model's graph.
    let bytes = fs::read(approx::cache_path(&served)).unwrap();
    let cache = approx::cache_path(&served);
    assert!(ApproxIndex::from_bytes(
        &bytes,
        second.rec.candidates(false),
        ApproxSettings::default(),
        &cache
    )
    .is_ok());
    // Requests still holding the first model keep its own graph.
    assert!(first
        .rec
        .approx_index()
        .unwrap()
        .is_for(first.rec.candidates(false)));
    // The next load of the same file reads the cache.
    let third = slot.reload().unwrap();
    assert_eq!(third.info["index"]["from"], "cache");
    assert_eq!(third.info["index"]["memory"], "huge-pages");
}

#[test]
fn short_histories_on_a_right_padded_unmasked_model_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (data, parity) = train_small_synthetic(dir.path());
    let stderr = |model: &str, history: &str| {
        let out = seqrec(&["--quiet", "recommend", model, "--history", history]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    let short = "5,6,7";
    let full = "1,2,3,4,5,6,7,8,9,11";
    let err = stderr(&parity, short);
    assert!(
        err.contains("warning: this history is shorter than the model's context (10 items)")
            && err.contains("--preset best"),
        "{err}"
    );
    assert!(!stderr(&parity, full).contains("warning"));

    // A file of histories: how many are short.
    let input = dir.path().join("in.csv");
    let spaced = |h: &str| h.replace(',', " ");
    let rows = format!("history\n{}\n{}\n3 4\n", spaced(short), spaced(full));
    fs::write(&input, rows).unwrap();
    let out = seqrec(&[
        "recommend",
        &parity,
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("out.jsonl").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: 2 of 3 histories are shorter"),
        "{err}"
    );

    // Left padding reads the newest item last: no warning.
    let left = dir.path().join("left.safetensors");
    train_one_epoch(&data, &left, &["--padding", "left"]);
    assert!(!stderr(left.to_str().unwrap(), short).contains("warning"));
}

#[test]
fn titles_with_terminal_escape_codes_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(
        data.join("movies.dat"),
        "1::Evil\x1b[2J Title (1999)::Drama\n2::B (2000)::C\n3::D (2001)::E\n",
    )
    .unwrap();
    let mut ratings = String::new();
    for u in 1..=6 {
        for (t, i) in [1, 2, 3, 1, 2].iter().enumerate() {
            ratings.push_str(&format!("{u}::{i}::5::{}\n", t + 1));
        }
    }
    fs::write(data.join("ratings.dat"), ratings).unwrap();
    let model = dir.path().join("m");
    let m = model.to_str().unwrap();
    let train_out = train_one_epoch(data.to_str().unwrap(), &model, &["--embedding-dim", "4"]);
    for out in [
        train_out,
        ok(&["recommend", m, "--history", "1,2", "--k", "3"]),
        ok(&["recommend", m, "--demo"]),
    ] {
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("Evil\\u{1b}[2J Title (1999)"), "{out}");
    }
}

#[test]
fn train_builds_the_index_serving_will_use_when_asked_or_past_the_threshold() {
    use seqrec::retrieval::approx::{self, ApproxIndex, ApproxSettings};
    use seqrec::retrieval::recommender::Recommender;
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path(), 300, 300, 20000, 3);
    let train = |name: &str, index: &str| {
        let out = dir.path().join(name);
        let json = train_one_epoch(data.to_str().unwrap(), &out, &["--index", index, "--json"]);
        let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
        (out, summary)
    };
    // 300 items: below auto's threshold, and exact asks for none.
    for index in ["auto", "exact"] {
        let (model, summary) = train(&format!("{index}.safetensors"), index);
        assert!(!approx::cache_path(&model).exists(), "{index}");
        assert!(summary.get("index_seconds").is_none(), "{index}");
        assert_eq!(summary["index"], serde_json::json!({"kind": "exact"}));
    }
    let (model, summary) = train("approx.safetensors", "approx");
    assert!(summary["index_seconds"].as_f64().unwrap() >= 0.0);
    let cache = approx::cache_path(&model);
    // The summary says which index, where, how big, how long it took.
    let index = &summary["index"];
    assert_eq!(index["kind"], "approx");
    assert_eq!(index["path"], cache.display().to_string());
    assert_eq!(index["items"], 300);
    assert_eq!(index["from"], "built");
    assert_eq!(index["bytes"], fs::metadata(&cache).unwrap().len());
    assert!(index["seconds"].as_f64().unwrap() >= 0.0);
    // And in text.
    let text_model = dir.path().join("text.safetensors");
    let text = train_one_epoch(data.to_str().unwrap(), &text_model, &["--index", "approx"]);
    let line = format!(
        "approximate index over 300 items written to {}",
        approx::cache_path(&text_model).display()
    );
    assert!(text.contains(&line), "{text}");
    let text = train_one_epoch(data.to_str().unwrap(), &text_model, &["--index", "exact"]);
    assert!(
        text.contains("index: exact (recommend and serve score every item"),
        "{text}"
    );
    let rec = Recommender::load(&model).unwrap();
    let bytes = fs::read(&cache).unwrap();
    assert!(
        ApproxIndex::from_bytes(
            &bytes,
            rec.candidates(false),
            ApproxSettings::default(),
            &cache
        )
        .is_ok(),
        "the cache is this model's graph"
    );
    // `recommend` reads it instead of building it again.
    let out = seqrec(&[
        "recommend",
        model.to_str().unwrap(),
        "--index",
        "approx",
        "--user",
        "1",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("built the approximate index"), "{stderr}");
    assert_eq!(fs::read(&cache).unwrap(), bytes, "left as train wrote it");

    // `evaluate` measures the graph at the search list asked for, on the
    // same cached graph.
    let model = model.to_str().unwrap();
    for list in ["25", "300"] {
        let json = ok(&[
            "--quiet",
            "evaluate",
            model,
            "--index",
            "approx",
            "--search-list",
            list,
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report["approx"]["search_list"].to_string(), list);
        let recall = report["approx"]["recall"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&recall), "{list}: {recall}");
    }
    assert_eq!(
        fs::read(&cache).unwrap(),
        bytes,
        "the same graph serves any list"
    );
    for (args, expected) in [
        (
            vec!["--index", "approx", "--search-list", "0"],
            "from 1 to 4096",
        ),
        (
            vec!["--index", "approx", "--search-list", "5000"],
            "from 1 to 4096",
        ),
        (vec!["--search-list", "50"], "only with --index approx"),
    ] {
        let mut call = vec!["evaluate", model];
        call.extend(&args);
        let out = seqrec(&call);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("--search-list") && stderr.contains(expected),
            "{stderr}"
        );
    }
}

/// `export` and `recommend --output` write only regular files, and never
/// an input: the model, its index cache, or the data the model records it
/// was trained on (`export M --items DATA/ratings.dat` replaced it).
#[test]
fn export_and_recommend_write_no_input_and_nothing_but_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path(), 60, 80, 2000, 2);
    let model = dir.path().join("m.safetensors");
    train_one_epoch(
        data.to_str().unwrap(),
        &model,
        &["--embedding-dim", "4", "--index", "approx"],
    );
    let cache = seqrec::retrieval::approx::cache_path(&model);
    let ratings = data.join("ratings.dat");
    let movies = data.join("movies.dat");
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    let input = dir.path().join("in.csv");
    fs::write(&input, "id,history\na,1 2 3\n").unwrap();
    let before: Vec<Vec<u8>> = [&model, &cache, &ratings, &movies, &input]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    let m = model.to_str().unwrap();
    let show = |p: &Path| p.display().to_string();
    let mut cases: Vec<(Vec<String>, String)> = Vec::new();
    for (flag, target, want) in [
        (
            "--items",
            show(&ratings),
            format!("is the input {}", show(&ratings)),
        ),
        (
            "--items",
            show(&cache),
            format!("is the input {}", show(&cache)),
        ),
        ("--queries", show(&movies), "is the input".to_string()),
        ("--queries", m.to_string(), "is the input".to_string()),
        (
            "--items",
            "/dev/null".into(),
            "is a character device".into(),
        ),
        ("--items", show(&fifo), "is a FIFO (named pipe)".into()),
    ] {
        cases.push((
            vec!["export".into(), m.into(), flag.into(), target.clone()],
            format!("{flag} {target}: {want}"),
        ));
    }
    for (target, want) in [
        (show(&ratings), "is the input"),
        (show(&cache), "is the input"),
        (show(&input), "is the input"),
        ("/dev/null".to_string(), "is a character device"),
        (show(&fifo), "is a FIFO (named pipe)"),
    ] {
        cases.push((
            vec![
                "recommend".into(),
                m.into(),
                "--input".into(),
                show(&input),
                "--output".into(),
                target.clone(),
            ],
            format!("--output {target}: {want}"),
        ));
    }
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, finished) = seqrec_within(&args, 60);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(finished && !out.status.success(), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    let after: Vec<Vec<u8>> = [&model, &cache, &ratings, &movies, &input]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert!(before == after, "an input changed");
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// `recommend --input` is a regular file (a FIFO was waited on, /dev/zero
/// read until a 4 GiB allocation aborted), and a FIFO at the index cache
/// is neither waited on nor replaced: the graph is built and used.
#[test]
fn recommend_reads_only_regular_files_and_never_waits_on_a_fifo_cache() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let data = synth_data(dir.path(), 60, 80, 2000, 3);
    let model = dir.path().join("m.safetensors");
    train_one_epoch(data.to_str().unwrap(), &model, &["--embedding-dim", "4"]);
    let m = model.to_str().unwrap();
    let fifo = dir.path().join("in.fifo");
    mkfifo(&fifo);
    let output = dir.path().join("out.csv");
    for (input, want) in [
        (
            "/dev/zero".to_string(),
            "--input /dev/zero: is a character device, not a regular file".to_string(),
        ),
        (
            fifo.display().to_string(),
            format!(
                "--input {}: is a FIFO (named pipe), not a regular file",
                fifo.display()
            ),
        ),
    ] {
        let args = [
            "recommend",
            m,
            "--input",
            &input,
            "--output",
            output.to_str().unwrap(),
        ];
        let (out, finished) = seqrec_within(&args, 30);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(finished && !out.status.success(), "{input}: {err}");
        assert!(err.contains(&want), "{input}: {err}");
    }
    assert!(!output.exists());

    let cache = seqrec::retrieval::approx::cache_path(&model);
    mkfifo(&cache);
    let args = [
        "recommend",
        m,
        "--index",
        "approx",
        "--history",
        "1,2,3",
        "--json",
    ];
    let (out, finished) = seqrec_within(&args, 60);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(finished && out.status.success(), "{err}");
    assert!(
        err.contains("not cached") && err.contains("is a FIFO (named pipe)"),
        "{err}"
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["items"].as_array().unwrap().len(), 10);
    assert!(fs::metadata(&cache).unwrap().file_type().is_fifo());
}
