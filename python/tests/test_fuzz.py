"""A short fuzz run of the Python entry points: random arguments through
`train`, `Model.recommend`, `Model.evaluate`, `Model.encode` and `load`.
Each call must return or raise `SeqrecError` / `TypeError` whose message
holds no control character: never another exception (OverflowError,
SystemError, a pyo3 PanicException), never a crash or a hang. The run is
seeded (SEQREC_PY_FUZZ_SEED, default 1) and SEQREC_PY_FUZZ_CALLS long
(default 400); what it tried goes to target/fuzz-reports/python.txt, which
CI prints. A longer run: SEQREC_PY_FUZZ_CALLS=20000 pytest -s test_fuzz.py."""

from __future__ import annotations

import math
import os
import random

import pytest

import seqrec
from conftest import REPO, interactions, write_csv

SEED = int(os.environ.get("SEQREC_PY_FUZZ_SEED", "1"))
CALLS = int(os.environ.get("SEQREC_PY_FUZZ_CALLS", "400"))

ODD_TEXT = ["", " ", "x\x1b[2J\x07", "a\nerror: fake", "é" * 3, "z" * 5000, "101", "-1", "nan"]
ODD_NUMBERS = [0, 1, 2, 3, -1, 101, 10_000, 2**31, 2**63 - 1, 2**63, -(2**63), 2**70, 1.5, -0.0, math.nan, math.inf]


def odd_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(ODD_NUMBERS)
    if roll < 0.5:
        return rng.choice(ODD_TEXT)
    if roll < 0.6:
        return rng.choice([None, True, False, b"bytes", object(), {}, {"a": 1}])
    if roll < 0.75 and depth < 2:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return rng.choice([101, 102, 150, 159, "101", "Movie 101"])


SETTING_KEYS = [
    "epochs", "batch_size", "learning_rate", "seed", "threads", "tower", "context_len",
    "embedding_dim", "padding", "mask_padding", "loss", "negatives", "validation",
    "patience", "dropout_output", "gbce_t", "optimizer", "min_rating", "min_sequence_len",
    "user_col", "item_col", "time_col", "rating_col", "delimiter", "renumber_items",
    "skip_bad_lines", "titles_file", "dataset", "no_such_key",
]


# Values a setting could well have, so that half the calls go past the
# argument checks into the engine.
PLAUSIBLE = {
    "batch_size": [2, 64, 4096], "learning_rate": [0.0, 0.01, 10.0], "seed": [0, 2**63 - 1],
    "threads": [0, 1, 2], "tower": ["gru", "sasrec"], "context_len": [1, 2, 50],
    "embedding_dim": [1, 8], "padding": ["left", "right"], "mask_padding": [True, False],
    "loss": ["softmax", "gbce"], "negatives": [0, 1, 64], "validation": [True, False],
    "patience": [0, 1], "dropout_output": [0.0, 0.5], "gbce_t": [0.0, 1.0],
    "optimizer": ["adamw", "lazy-adamw"], "min_rating": [0, 5], "min_sequence_len": [2, 30],
    "renumber_items": [True], "skip_bad_lines": [True],
}


def setting_value(rng: random.Random, key: str):
    if key in PLAUSIBLE and rng.random() < 0.6:
        return rng.choice(PLAUSIBLE[key])
    return odd_value(rng)


def some_histories(rng: random.Random):
    if rng.random() < 0.5:
        return odd_value(rng)
    return [[rng.choice([101, 105, 110, 119, "101", 999]) for _ in range(rng.randrange(1, 15))] for _ in range(rng.randrange(1, 4))]


@pytest.fixture(scope="module")
def fuzz_data(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("fuzz") / "r.csv", interactions(users=40, items=20, seed=9))


def survives(call, tried: dict, name: str):
    tried[name] = tried.get(name, 0) + 1
    try:
        call()
        tried[name + " ok"] = tried.get(name + " ok", 0) + 1
    except (seqrec.SeqrecError, TypeError) as e:
        text = str(e)
        assert not any(c in text for c in "\x1b\x07"), f"{name}: unescaped: {text!r}"
        assert len(text) < 20_000, f"{name}: {len(text)} characters"
    except KeyboardInterrupt:  # pragma: no cover
        raise


def test_random_arguments_never_escape_as_other_errors(fuzz_data, tmp_path, monkeypatch):
    # Random names are valid file names too: whatever `save` writes lands
    # in this test's folder, not the caller's.
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED)
    model = seqrec.train(str(fuzz_data), epochs=1, seed=1, threads=1, quiet=True)
    saved = tmp_path / "m.safetensors"
    model.save(saved)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    paths = [str(saved), str(fuzz_data), "/dev/zero", str(fifo), str(tmp_path), "", "no/such/file", "x\x1b[2J"]
    tried: dict = {}

    def random_train():
        settings = {k: setting_value(rng, k) for k in rng.sample(SETTING_KEYS, rng.randrange(1, 4))}
        # One small epoch whatever else: the fuzz is of the arguments.
        settings["epochs"] = rng.choice([1, 1, 0, -1, 2**64, "1"])
        data = rng.choice([str(fuzz_data), str(fuzz_data), odd_value(rng), rng.choice(paths)])
        if data in (str(fifo), "/dev/zero"):
            settings.pop("dataset", None)
        extra = {}
        if rng.random() < 0.2:
            extra["resume"] = rng.choice([model, str(saved), odd_value(rng)])
        if rng.random() < 0.2:
            extra["config"] = rng.choice(paths + [odd_value(rng)])
        seqrec.train(data, quiet=True, **extra, **settings)

    def random_recommend():
        kwargs = {}
        if rng.random() < 0.7:
            kwargs["k"] = rng.choice([1, 5, 10_000, odd_value(rng)])
        if rng.random() < 0.3:
            kwargs["exclude_seen"] = odd_value(rng)
        source = rng.choice(["histories", "titles", "users", "none", "two"])
        if source == "histories":
            model.recommend(some_histories(rng), **kwargs)
        elif source == "titles":
            model.recommend(titles=odd_value(rng), **kwargs)
        elif source == "users":
            model.recommend(users=odd_value(rng), allow_user_lookup=odd_value(rng), **kwargs)
        elif source == "two":
            model.recommend(odd_value(rng), titles=odd_value(rng), **kwargs)
        else:
            model.recommend(**kwargs)

    def random_evaluate():
        kwargs = {k: odd_value(rng) for k in rng.sample(["k", "threads", "quiet", "user_col", "min_rating", "epochs"], rng.randrange(0, 3))}
        model.evaluate(rng.choice([None, str(fuzz_data), rng.choice(paths), odd_value(rng)]), **kwargs)

    entries = {
        "train": random_train,
        "recommend": random_recommend,
        "encode": lambda: model.encode(some_histories(rng)),
        "evaluate": random_evaluate,
        "load": lambda: seqrec.load(rng.choice(paths + [odd_value(rng)])),
        "save": lambda: model.save(rng.choice(paths[2:] + [odd_value(rng)])),
    }
    names = list(entries)
    for _ in range(CALLS):
        name = rng.choice(names)
        survives(entries[name], tried, name)
    report = f"python fuzz (seed {SEED}): {CALLS} calls, " + ", ".join(
        f"{n} {c}" for n, c in sorted(tried.items())
    )
    print(report)
    reports = REPO / "target" / "fuzz-reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "python.txt").write_text(report + "\n")
