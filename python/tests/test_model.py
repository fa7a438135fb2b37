"""The Model: save/load, embeddings, encode, settings, progress and the GIL."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import seqrec


def test_save_and_load_give_the_same_model(py_model, tmp_path):
    path = tmp_path / "m.safetensors"
    py_model.save(path)
    loaded = seqrec.load(path)
    np.testing.assert_array_equal(loaded.item_embeddings, py_model.item_embeddings)
    assert loaded.item_keys == py_model.item_keys
    assert loaded.settings == py_model.settings
    assert loaded.best_epoch == py_model.best_epoch
    # Seconds are not saved; every figure that is, is the same.
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(loaded.history) == strip(py_model.history)
    histories = [[101, 102, 103], [140, 141, 142, 143]]
    for a, b in zip(loaded.recommend(histories), py_model.recommend(histories)):
        np.testing.assert_array_equal(a, b)
    again = tmp_path / "again.safetensors"
    loaded.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert loaded.test_metrics is None


def test_item_embeddings_are_a_read_only_view_of_the_model(py_model):
    emb = py_model.item_embeddings
    assert emb.shape == (py_model.vocab_size, py_model.dim)
    assert emb.dtype == np.float32
    assert not emb.flags.owndata and emb.base is py_model
    with pytest.raises(ValueError):
        emb[1, 0] = 1.0
    keys = py_model.item_keys
    assert keys[0] is None and sorted(k for k in keys if k is not None) == list(range(101, 161))


def test_scores_are_query_times_item_embedding(py_model):
    histories = [[101, 103, 105, 107], [120, 121]]
    queries = py_model.encode(histories)
    assert queries.shape == (2, py_model.dim) and queries.dtype == np.float32
    ids, scores = py_model.recommend(histories, k=5)
    rows = [py_model.item_keys.index(i) for i in ids[0]]
    expected = queries[0] @ py_model.item_embeddings[rows].T
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.filterwarnings("ignore:histories shorter")
def test_a_row_shorter_than_k_is_padded(tmp_path):
    from conftest import write_csv

    # Three items: at most two left once a history's own are excluded.
    rows = [(u, 101 + (u + t) % 3, t) for u in range(1, 30) for t in range(4)]
    model = seqrec.train(str(write_csv(tmp_path / "tiny.csv", rows)), epochs=1, quiet=True)
    ids, scores = model.recommend([[101]], k=5, exclude_seen=True)
    assert ids[0].tolist()[2:] == [-1, -1, -1] and sorted(ids[0, :2]) == [102, 103]
    assert np.isnan(scores[0, 2:]).all() and not np.isnan(scores[0, :2]).any()


def test_text_item_ids_come_back_as_text(tmp_path):
    from conftest import interactions, write_csv

    rows = [(u, f"movie-{i}", t) for u, i, t in interactions(users=60)]
    model = seqrec.train(str(write_csv(tmp_path / "text.csv", rows)), epochs=1, quiet=True)
    # Default settings pad on the right unmasked: short histories warn, as
    # the CLI warns.
    with pytest.warns(UserWarning, match="shorter than the model's context"):
        ids, _ = model.recommend([["movie-101", "movie-102"]], k=3)
    assert ids.dtype == object and all(i.startswith("movie-") for i in ids[0])
    assert set(model.item_keys[1:]) == {f"movie-{i}" for i in range(101, 161)}


def test_settings_are_the_cli_keys_with_the_preset_and_keywords(py_model):
    s = py_model.settings
    assert (s["epochs"], s["seed"], s["batch_size"]) == (3, 7, 512)
    assert s["padding"] == "left" and s["mask_padding"] is True  # preset best


def test_quiet_prints_nothing_and_default_shows_each_epoch(ratings_csv, capfd):
    seqrec.train(str(ratings_csv), epochs=2, quiet=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    seqrec.train(str(ratings_csv), epochs=2)
    out, err = capfd.readouterr()
    assert out == ""
    assert "epoch 1/2" in err and "epoch 2/2" in err and "train / " in err


def test_a_progress_callable_gets_every_epoch(ratings_csv):
    events = []
    seqrec.train(str(ratings_csv), epochs=2, progress=lambda kind, *v: events.append((kind, v)))
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds.count("epoch_start") == 2
    assert [v[0]["epoch"] for k, v in events if k == "epoch_end"] == [1, 2]


def test_an_error_in_the_progress_callable_is_raised(ratings_csv):
    def broken(kind, *values):
        raise RuntimeError("display broke")

    with pytest.raises(RuntimeError, match="display broke"):
        seqrec.train(str(ratings_csv), epochs=1, progress=broken)


def test_training_releases_the_gil(ratings_csv):
    done = threading.Event()
    counted = 0

    def train():
        seqrec.train(str(ratings_csv), epochs=40, batch_size=256, threads=1, quiet=True)
        done.set()

    worker = threading.Thread(target=train)
    worker.start()
    while not done.is_set():
        counted += 1
    worker.join()
    # Holding the GIL for the whole run would leave this loop a few
    # switches at most; released, it spins all along.
    assert counted > 10_000
