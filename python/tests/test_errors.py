"""Bad input raises SeqrecError (a ValueError) with seqrec's message, or a
TypeError naming the argument; nothing panics."""

from __future__ import annotations

import pytest

import seqrec
from conftest import write_csv


def test_a_missing_column_names_the_column_the_file_and_the_setting(ratings_csv, cli):
    with pytest.raises(seqrec.SeqrecError) as e:
        seqrec.train(str(ratings_csv), user_col="customer", quiet=True)
    message = str(e.value)
    assert message.startswith(f'{ratings_csv}:1: header has no column "customer"')
    assert "user_col" in message and "user_id, item_id, timestamp" in message
    assert isinstance(e.value, ValueError)
    # The CLI says the same, naming its flag where Python names the keyword.
    cli_message = cli("train", ratings_csv, "--user-col", "customer", expect_error=True)
    assert cli_message.startswith(f'error: {ratings_csv}:1: header has no column "customer"')


def test_a_malformed_line_is_named_by_file_and_line(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [(1, 101, 5), (1, 102, 6), (1, "x", "yesterday")])
    with pytest.raises(seqrec.SeqrecError, match=rf"^{path}:4: "):
        seqrec.train(str(path), quiet=True)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(seqrec.SeqrecError, match="nothing.csv: no such file"):
        seqrec.train(str(tmp_path / "nothing.csv"), quiet=True)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(epochz=3), "^epochz: unknown key"),
        (dict(epochs=0), "^invalid setting: epochs"),
        (dict(tower="transformer"), "transformer"),
        (dict(preset="fastest"), '^preset: unknown preset "fastest"'),
        (dict(min_sequence_len=1), "^min_sequence_len: expected at least 2"),
        (dict(delimiter="::"), "^delimiter: expected one ASCII character"),
    ],
)
def test_a_bad_setting_is_named(ratings_csv, settings, message):
    with pytest.raises(seqrec.SeqrecError, match=message):
        seqrec.train(str(ratings_csv), quiet=True, **settings)


def test_a_setting_of_the_wrong_type_is_a_type_error(ratings_csv):
    with pytest.raises(TypeError, match="^epochs: expected an int"):
        seqrec.train(str(ratings_csv), epochs=[3], quiet=True)
    with pytest.raises(TypeError, match="^user_col"):
        seqrec.train(str(ratings_csv), user_col=3, quiet=True)
    with pytest.raises(TypeError, match="^data: expected a path"):
        seqrec.train({"user_id": [1]}, quiet=True)


def test_no_data_at_all_says_what_to_give():
    with pytest.raises(seqrec.SeqrecError, match="no data given"):
        seqrec.train(quiet=True)


def test_bad_histories_name_the_history_and_item(py_model):
    with pytest.raises(seqrec.SeqrecError, match=r'^histories\[1\]\[2\]: unknown item "999"'):
        py_model.recommend([[101], [102, 103, 999]])
    with pytest.raises(seqrec.SeqrecError, match=r"^histories\[0\]: expected at least one item"):
        py_model.recommend([[]])
    with pytest.raises(seqrec.SeqrecError, match=r'unknown item "-5"'):
        py_model.encode([[-5]])
    with pytest.raises(TypeError, match=r"^histories\[0\]\[0\]"):
        py_model.recommend([[1.5]])
    with pytest.raises(TypeError, match="found a str"):
        py_model.recommend("101,102")


@pytest.mark.parametrize("k", [0, -1, 10_001, 2**62])
def test_k_is_bounded(py_model, k):
    with pytest.raises(seqrec.SeqrecError, match="^k: expected 1 to 10000"):
        py_model.recommend([[101]], k=k)


def test_evaluate_refuses_other_data_and_bad_cutoffs(py_model, tmp_path):
    other = write_csv(tmp_path / "other.csv", [(u, 500 + t, t) for u in range(5) for t in range(5)])
    with pytest.raises(seqrec.SeqrecError, match="other.csv: "):
        py_model.evaluate(str(other))
    with pytest.raises(seqrec.SeqrecError, match=r"^k\[1\]: expected 1 to 10000, found 0"):
        py_model.evaluate(k=[10, 0])
    with pytest.raises(seqrec.SeqrecError, match="^k: expected at least one cut-off"):
        py_model.evaluate(k=[])
    with pytest.raises(TypeError, match="epochs"):
        py_model.evaluate(epochs=3)


def test_loading_a_file_that_is_no_model_names_it(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_bytes(b"not a model")
    with pytest.raises(seqrec.SeqrecError, match=f"^{path}: not a usable seqrec model"):
        seqrec.load(path)
    with pytest.raises(seqrec.SeqrecError, match="cannot read the model file"):
        seqrec.load(tmp_path / "absent.safetensors")
