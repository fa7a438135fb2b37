//! The training options beyond the reference: each changes what it should,
//! and leaves parity alone when off. (Their maths is checked against finite
//! differences in gradcheck.rs.)

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

use seqrec::checkpoint as io;
use seqrec::data::table::{GenericFormat, ReadOptions};
use seqrec::data::{source, Sequences};

fn synthetic(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    ok(&[
        "--quiet",
        "synth",
        data.to_str().unwrap(),
        "--users",
        "300",
        "--items",
        "200",
        "--ratings",
        "30000",
        "--seed",
        "2",
    ]);
    data
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "--quiet",
        "train",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--embedding-dim",
        "8",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn every_option_changes_the_model_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let base = dir.path().join("base");
    train(&data, &base, &[]);
    let base_bytes = fs::read(&base).unwrap();
    let options: [&[&str]; 17] = [
        &["--padding", "left"],
        &["--mask-padding"],
        &["--shuffle"],
        &["--remove-accidental-hits"],
        &["--logq-correction"],
        &["--negatives", "32"],
        &["--shared-embeddings"],
        &["--dropout-input", "0.2"],
        &["--dropout-output", "0.2"],
        &["--warmup-steps", "5", "--lr-schedule", "cosine"],
        &["--validation"],
        &["--sequence-training", "--padding", "left"],
        &["--sequence-training", "--mask-padding", "--full-softmax"],
        &[
            "--sequence-training",
            "--mask-padding",
            "--exclude-history-in-loss",
        ],
        &[
            "--loss",
            "gbce",
            "--negatives",
            "32",
            "--negative-alpha",
            "0",
        ],
        &[
            "--tower",
            "sasrec",
            "--heads",
            "2",
            "--tower-dropout",
            "0.1",
        ],
        &[
            "--tower",
            "sasrec",
            "--sequence-training",
            "--blocks",
            "1",
            "--activation",
            "gelu",
        ],
    ];
    for opt in options {
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        train(&data, &a, opt);
        train(&data, &b, opt);
        let bytes = fs::read(&a).unwrap();
        assert_eq!(bytes, fs::read(&b).unwrap(), "{opt:?} is not deterministic");
        let ma = io::load(&a).unwrap();
        let mb = io::load(&base).unwrap();
        assert_ne!(
            ma.artifact.params, mb.artifact.params,
            "{opt:?} changed nothing"
        );
    }
    // Options off is the reference, byte for byte.
    let again = dir.path().join("again");
    train(&data, &again, &["--preset", "parity"]);
    assert_eq!(fs::read(&again).unwrap(), base_bytes);
}

/// SASRec trained at every step: the model file says so, reads back, and
/// every consumer (evaluate, recommend) uses it; the same seed gives the same
/// file.
#[test]
fn a_sequence_trained_sasrec_model_trains_evaluates_and_recommends() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let flags = [
        "--preset",
        "sasrec",
        "--context-len",
        "20",
        "--epochs",
        "3",
        "--embedding-dim",
        "16",
        "--heads",
        "2",
    ];
    train(&data, &a, &flags);
    train(&data, &b, &flags);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let model = io::load(&a).unwrap();
    assert_eq!(
        model.artifact.spec.tower.kind(),
        seqrec::model::QueryTower::Sasrec
    );
    assert!(model.config.sequence_training && model.config.exclude_history_in_loss);
    // The SASRec tower's one tensor and no GRU tensor.
    let names: Vec<&str> = seqrec::model::Params::tensor_defs(&model.artifact.spec)
        .iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        ["query_embedding", "sasrec_weights", "candidate_embedding"]
    );
    assert_eq!(model.artifact.params.tower.len(), 1);
    let report = ok(&["--quiet", "evaluate", a.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let hr = v["model"]["seen_excluded"][0]["hr"]
        .as_f64()
        .unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&hr), "{report}");
    let recs = ok(&[
        "--quiet",
        "recommend",
        a.to_str().unwrap(),
        "--user",
        "1",
        "--k",
        "5",
    ]);
    assert!(recs.lines().count() >= 5, "{recs}");
}

#[test]
fn shared_embeddings_save_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let m = dir.path().join("m");
    train(&data, &m, &["--shared-embeddings"]);
    let model = io::load(&m).unwrap();
    assert_eq!(
        model.artifact.params.query_embedding,
        model.artifact.params.candidate_embedding
    );
    assert!(model.artifact.spec.shared_embeddings);
}

#[test]
fn early_stopping_keeps_the_best_epoch_and_never_reads_test() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let m = dir.path().join("m");
    // With a learning rate of 0 nothing improves after the first epoch: the
    // run stops after 1 + patience epochs.
    let out = train(
        &data,
        &m,
        &[
            "--validation",
            "--patience",
            "2",
            "--epochs",
            "10",
            "--learning-rate",
            "0",
        ],
    );
    let model = io::load(&m).unwrap();
    assert_eq!(model.history.len(), 3, "{out}");
    assert!(model.history.iter().all(|e| e.valid_ndcg10.is_some()));

    // The validation split is each user's second-to-last item, disjoint from
    // train and test; test is the same as without validation.
    let ds = source::read_path(&data, &GenericFormat::default(), &ReadOptions::default()).unwrap();
    let seqs = Sequences::build(&ds.interactions, 3).unwrap();
    let (train2, test2) = seqs.split_last();
    let (train3, valid3, test3) = seqs.split_last_two();
    assert_eq!(test2.label_pos, test3.label_pos);
    assert_eq!(train3.len() + valid3.len(), train2.len());
    for p in &valid3.label_pos {
        assert!(!train3.label_pos.contains(p) && !test3.label_pos.contains(p));
        let s = seqs.sequence_of(*p);
        assert_eq!(
            *p + 2,
            seqs.offsets[s + 1],
            "validation is the second-to-last item"
        );
    }

    let err = String::from_utf8_lossy(
        &seqrec(&["train", data.to_str().unwrap(), "--patience", "2"]).stderr,
    )
    .into_owned();
    assert!(
        err.contains("patience") && err.contains("validation"),
        "{err}"
    );
}

#[test]
fn plot_and_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let (m, png, log) = (
        dir.path().join("m"),
        dir.path().join("curves.png"),
        dir.path().join("log.jsonl"),
    );
    train(
        &data,
        &m,
        &[
            "--epochs",
            "3",
            "--eval-every",
            "1",
            "--plot",
            png.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
    );
    let bytes = fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000);
    let lines: Vec<serde_json::Value> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        assert!(l["val_loss"].as_f64().unwrap() > 0.0 && l["hr10"].as_f64().is_some());
    }
}

#[test]
fn bad_option_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let d = data.to_str().unwrap();
    for (args, want) in [
        (vec!["--dropout-input", "1.5"], "dropout_input"),
        (vec!["--min-lr-ratio", "2"], "min_lr_ratio"),
        (vec!["--preset", "fastest"], "unknown preset"),
        (vec!["--lr-schedule", "exponential"], "lr-schedule"),
        (
            vec!["--loss", "gbce"],
            "gbce and bce learn against sampled negatives",
        ),
        (
            vec!["--loss", "bce"],
            "gbce and bce learn against sampled negatives",
        ),
        (vec!["--full-softmax", "--negatives", "5"], "full_softmax"),
        (vec!["--exclude-history-in-loss"], "exclude_history_in_loss"),
        (vec!["--sequence-training"], "right padding and no mask"),
        (vec!["--tower", "sasrec", "--heads", "3"], "heads"),
        (vec!["--gbce-t", "1.5"], "gbce_t"),
    ] {
        let mut a = vec!["train", d, "--out", "/nonexistent/m"];
        a.extend(args);
        let out = seqrec(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && !err.contains("panicked"),
            "{a:?}: {err}"
        );
    }
}

#[test]
fn a_config_file_overrides_only_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let cfg = dir.path().join("c.toml");
    fs::write(&cfg, "epochs = 1\n").unwrap();
    let m = dir.path().join("m");
    ok(&[
        "--quiet",
        "train",
        data.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--preset",
        "best",
        "--config",
        cfg.to_str().unwrap(),
        "--embedding-dim",
        "8",
    ]);
    let model = io::load(&m).unwrap();
    let (t, spec) = (model.config, model.artifact.spec);
    assert_eq!((t.epochs, t.batch_size, spec.dim), (1, 256, 8));
    assert!(
        spec.mask_padding && spec.shared_embeddings && t.validation,
        "the preset's keys survive the file"
    );
}

#[test]
fn divergence_and_degenerate_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let m = dir.path().join("m");
    fs::write(&m, b"previous model").unwrap();
    let err = fails(&[
        "train",
        data.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--learning-rate",
        "1e30",
        "--epochs",
        "2",
    ]);
    assert!(err.contains("diverged"), "{err}");
    assert_eq!(
        fs::read(&m).unwrap(),
        b"previous model",
        "a failed run leaves the old file"
    );
    let err = fails(&[
        "train",
        data.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    assert!(err.contains("batch_size"), "{err}");
    let err = fails(&[
        "train",
        data.to_str().unwrap(),
        "--out",
        "/no/such/folder/m",
    ]);
    assert!(
        err.contains("--out") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn resume_keeps_the_model_s_maths_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path());
    let m = dir.path().join("m");
    train(&data, &m, &["--epochs", "1"]);
    let d = data.to_str().unwrap();
    let ms = m.to_str().unwrap();
    let err = fails(&["train", d, "--resume", ms, "--mask-padding", "--out", ms]);
    assert!(err.contains("mask_padding"), "{err}");
    let err = fails(&[
        "train",
        d,
        "--resume",
        ms,
        "--embedding-dim",
        "16",
        "--out",
        ms,
    ]);
    assert!(err.contains("embedding_dim"), "{err}");
    let other = dir.path().join("other");
    ok(&[
        "--quiet",
        "synth",
        other.to_str().unwrap(),
        "--users",
        "300",
        "--items",
        "200",
        "--ratings",
        "30000",
        "--seed",
        "9",
    ]);
    let err = fails(&[
        "train",
        other.to_str().unwrap(),
        "--resume",
        ms,
        "--out",
        ms,
    ]);
    assert!(
        err.contains("not the data the model was trained on"),
        "{err}"
    );
    // Resuming without --epochs trains the default five more.
    let out = ok(&[
        "--quiet",
        "train",
        d,
        "--resume",
        ms,
        "--out",
        ms,
        "--batch-size",
        "256",
    ]);
    assert!(out.contains("epoch 6/6"), "{out}");
}
