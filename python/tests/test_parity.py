"""What the command line does, Python does too: continue a model, recommend
for known users and by titles, stop on Ctrl-C, and check every argument."""

from __future__ import annotations

import _thread
import os
import stat
import threading

import numpy as np
import pytest

import seqrec
from conftest import interactions, write_csv

QUICK = dict(seed=3, threads=1, batch_size=256, preset="best", quiet=True)


def test_resume_goes_on_as_one_longer_run(ratings_csv, tmp_path):
    straight = seqrec.train(str(ratings_csv), epochs=2, **QUICK)
    first = seqrec.train(str(ratings_csv), epochs=1, **QUICK)
    path = tmp_path / "first.safetensors"
    first.save(path)
    loaded = seqrec.load(path)
    # From the Model in memory, from a loaded one (its file read again,
    # moments and all) and from the file's path: the same second epoch.
    for resume in (first, loaded, path, str(path)):
        again = seqrec.train(str(ratings_csv), resume=resume, epochs=1, quiet=True)
        np.testing.assert_array_equal(again.item_embeddings, straight.item_embeddings)
        assert len(again.history) == 2
        assert again.settings["epochs"] == 2


def test_resume_refuses_a_changed_file_other_data_and_wrong_types(ratings_csv, tmp_path):
    path = tmp_path / "m.safetensors"
    seqrec.train(str(ratings_csv), epochs=1, **QUICK).save(path)
    loaded = seqrec.load(path)
    seqrec.train(str(ratings_csv), epochs=1, **{**QUICK, "seed": 4}).save(path)
    with pytest.raises(seqrec.SeqrecError, match="changed since the model was loaded"):
        seqrec.train(str(ratings_csv), resume=loaded, epochs=1, quiet=True)
    other = write_csv(tmp_path / "other.csv", interactions(users=50, items=30, seed=2))
    with pytest.raises(seqrec.SeqrecError, match="resume: .*catalogue differs"):
        seqrec.train(str(other), resume=path, epochs=1, quiet=True)
    with pytest.raises(seqrec.SeqrecError, match="resume: the model was trained with"):
        seqrec.train(str(ratings_csv), resume=path, embedding_dim=8, epochs=1, quiet=True)
    with pytest.raises(TypeError, match="^resume: expected a seqrec.Model or a model file's path"):
        seqrec.train(str(ratings_csv), resume=3, quiet=True)


@pytest.fixture(scope="module")
def titled_model(ratings_csv, tmp_path_factory):
    titles = tmp_path_factory.mktemp("titles") / "titles.csv"
    write_csv(titles, [(i, f"Movie {i}") for i in range(101, 161)], header=("item_id", "title"))
    return seqrec.train(str(ratings_csv), titles_file=str(titles), epochs=1, **QUICK)


def test_recommend_by_titles_is_by_their_ids(titled_model):
    by_ids = titled_model.recommend([[101, 102, 103], [150]], k=5)
    by_titles = titled_model.recommend(titles=[["movie 101", "Movie 102", "MOVIE 103"], ["Movie 150"]], k=5)
    for a, b in zip(by_ids, by_titles):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(seqrec.SeqrecError, match=r'^titles\[0\]\[1\]: no item has the title "Nope"'):
        titled_model.recommend(titles=[["Movie 101", "Nope"]])
    with pytest.raises(TypeError, match=r"^titles\[0\]\[0\]: expected a title"):
        titled_model.recommend(titles=[[101]])
    with pytest.raises(TypeError, match="exactly one of histories, titles or users"):
        titled_model.recommend([[101]], titles=[["Movie 101"]])


def test_recommend_for_known_users_follows_the_servers_rule(py_model):
    with pytest.raises(seqrec.SeqrecError, match="^users: .*allow_user_lookup=True"):
        py_model.recommend(users=[1])
    # User 1's whole known history, oldest first.
    history = [item for user, item, _ in interactions() if user == 1]
    by_user = py_model.recommend(users=[1, "1"], k=7, exclude_seen=True, allow_user_lookup=True)
    by_history = py_model.recommend([history, history], k=7, exclude_seen=True)
    for a, b in zip(by_user, by_history):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(seqrec.SeqrecError, match=r'^users\[1\]: unknown user "99999"'):
        py_model.recommend(users=[1, 99999], allow_user_lookup=True)
    with pytest.raises(TypeError, match=r"^users\[0\]: expected a user id"):
        py_model.recommend(users=[1.5], allow_user_lookup=True)


def test_ctrl_c_stops_training_between_steps(ratings_csv):
    # From the progress callable (on the training thread) and from another
    # thread while training runs quietly: either way the run stops long
    # before its 2,000 epochs and raises KeyboardInterrupt.
    ended = []

    def progress(kind, *values):
        if kind == "epoch_end":
            ended.append(values)
            if len(ended) == 2:
                _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        seqrec.train(str(ratings_csv), epochs=2000, seed=1, threads=1, progress=progress)
    assert 2 <= len(ended) < 2000
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        seqrec.train(str(ratings_csv), epochs=2000, seed=1, threads=1, quiet=True)
    timer.join()


def test_an_error_in_the_progress_callable_stops_training(ratings_csv):
    ended = []

    def progress(kind, *values):
        if kind == "epoch_end":
            ended.append(values)
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        seqrec.train(str(ratings_csv), epochs=50, seed=1, threads=1, progress=progress)
    assert len(ended) == 1


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: m.recommend([[2**63]]), seqrec.SeqrecError, r'^histories\[0\]\[0\]: unknown item "9223372036854775808"'),
        (lambda m: m.recommend([[101]], k=2**70), seqrec.SeqrecError, "^k: expected 1 to 10000"),
        (lambda m: m.recommend([[101]], k="5"), TypeError, "^k: expected an int"),
        (lambda m: m.evaluate(threads=-1), seqrec.SeqrecError, "^threads: expected 0 to 1024, found -1"),
        (lambda m: m.evaluate(threads=10**6), seqrec.SeqrecError, "^threads: expected 0 to 1024"),
        (lambda m: m.evaluate(threads=1.5), TypeError, "^threads: expected an int"),
        (lambda m: m.evaluate(k=2**70), seqrec.SeqrecError, "^k: expected 1 to 10000"),
        (lambda m: m.evaluate(k="10"), TypeError, "^k: expected a list of cut-offs"),
    ],
)
def test_every_argument_is_checked_by_name(py_model, call, error, message):
    with pytest.raises(error, match=message):
        call(py_model)


def test_training_threads_are_bounded(ratings_csv):
    with pytest.raises(seqrec.SeqrecError, match="threads: expected 0 .* to 1024, found 1000000"):
        seqrec.train(str(ratings_csv), threads=10**6, quiet=True)
    with pytest.raises(seqrec.SeqrecError, match="epochs: .* out of range"):
        seqrec.train(str(ratings_csv), epochs=2**70, quiet=True)


def test_a_config_file_sits_between_the_preset_and_the_keywords(ratings_csv, tmp_path, cli):
    config = tmp_path / "run.toml"
    config.write_text('epochs = 2\nembedding_dim = 16\nlearning_rate = 0.01\n')
    model = seqrec.train(str(ratings_csv), config=config, preset="best", learning_rate=0.02, quiet=True, seed=5, threads=1)
    settings = model.settings
    assert (settings["epochs"], settings["embedding_dim"]) == (2, 16)
    assert settings["learning_rate"] == pytest.approx(0.02)
    assert settings["padding"] == "left"  # the preset's
    # The CLI reads the same file the same way.
    printed = cli("train", ratings_csv, "--preset", "best", "--config", config, "--learning-rate", "0.02", "--seed", "5", "--threads", "1", "--print-config")
    assert "embedding_dim = 16" in printed and "epochs = 2" in printed
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 2\nbogus = 1\n")
    with pytest.raises(seqrec.SeqrecError, match="bad.toml: not a valid seqrec config: bogus"):
        seqrec.train(str(ratings_csv), config=bad, quiet=True)
    with pytest.raises(seqrec.SeqrecError, match="^config: /dev/zero: is a character device"):
        seqrec.train(str(ratings_csv), config="/dev/zero", quiet=True)
    with pytest.raises(TypeError, match="^config: expected a path"):
        seqrec.train(str(ratings_csv), config=3, quiet=True)


def test_save_writes_only_a_regular_file_and_never_the_training_data(tmp_path):
    data = write_csv(tmp_path / "ratings.csv", interactions(users=40, items=20, seed=4))
    model = seqrec.train(str(data), epochs=1, **QUICK)
    before = data.read_bytes()
    with pytest.raises(seqrec.SeqrecError, match="is the input"):
        model.save(data)
    assert data.read_bytes() == before
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(seqrec.SeqrecError, match="FIFO"):
        model.save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(seqrec.SeqrecError, match="folder"):
        model.save(tmp_path)
