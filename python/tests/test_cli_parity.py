"""Python and the command line are one engine: the same model file from
the same seed, and the same numbers from recommend and evaluate."""

from __future__ import annotations

import numpy as np

import seqrec


def test_training_from_python_writes_the_cli_model_byte_for_byte(py_model, cli_model, tmp_path):
    cli_file, _ = cli_model
    ours = tmp_path / "py.safetensors"
    py_model.save(ours)
    assert ours.read_bytes() == cli_file.read_bytes()


def test_training_reports_the_cli_summary(py_model, cli_model):
    _, summary = cli_model
    metrics = py_model.test_metrics
    for key in ("test", "popularity", "test_all_items", "train_examples", "test_examples"):
        assert metrics[key] == summary[key], key
    # The learning rate of each epoch, and the figures the file keeps.
    for ours, theirs in zip(py_model.history, summary["epochs"], strict=True):
        for key in ("epoch", "loss", "val_loss", "learning_rate", "valid_hr10", "valid_ndcg10"):
            assert ours.get(key) == theirs.get(key), key


def test_recommend_gives_the_cli_answer(cli_model, cli):
    path, _ = cli_model
    model = seqrec.load(path)
    histories = [[101, 104, 106, 109], [130, 131], [150, 152, 155, 157, 160, 101, 103]]
    for exclude_seen in (False, True):
        ids, scores = model.recommend(histories, k=7, exclude_seen=exclude_seen)
        assert ids.shape == scores.shape == (3, 7)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        for row, history in enumerate(histories):
            flags = ["--exclude-seen"] if exclude_seen else []
            answer = cli("recommend", path, "--history", ",".join(map(str, history)),
                         "--k", "7", "--json", *flags)
            assert [int(i["id"]) for i in answer["items"]] == ids[row].tolist()
            # The CLI prints each f32 score in its shortest form: read back
            # as an f32 it is the same number exactly.
            assert [np.float32(i["score"]) for i in answer["items"]] == scores[row].tolist()


def test_ids_given_as_text_are_the_same_items(cli_model):
    model = seqrec.load(cli_model[0])
    as_ints = model.recommend([[101, 104, 106]], k=5)
    as_text = model.recommend([["101", " 104", "106"]], k=5)
    np.testing.assert_array_equal(as_ints[0], as_text[0])
    np.testing.assert_array_equal(as_ints[1], as_text[1])


def test_evaluate_gives_the_cli_report(cli_model, cli, ratings_csv):
    path, _ = cli_model
    model = seqrec.load(path)
    assert model.evaluate(str(ratings_csv)) == cli("evaluate", path, ratings_csv, "--json")
    assert model.evaluate(str(ratings_csv), k=[1, 5, 50]) == cli(
        "evaluate", path, ratings_csv, "--k", "1,5,50", "--json"
    )
    # Without data: the model's recorded training data, as the CLI does.
    assert model.evaluate(k=10) == cli("evaluate", path, "--k", "10", "--json")
