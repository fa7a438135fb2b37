"""Shared data and the command line for the Python package's tests.

The data is synthetic and seeded: users walk through the catalogue in
small steps, so a model has sequential structure to learn. The CLI is the
release binary the repository builds (`cargo build --release`); set
SEQREC_BIN to use another.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def interactions(users: int = 240, items: int = 60, seed: int = 11):
    """Columns user_id, item_id, timestamp (item ids 101..), one row per pick."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, users + 1):
        length = int(rng.integers(4, 25))
        item = int(rng.integers(0, items))
        for t in range(length):
            item = (item + int(rng.integers(1, 4))) % items
            rows.append((user, 101 + item, 1_000_000 + 60 * t + user))
    return rows


def write_csv(path: Path, rows, header=("user_id", "item_id", "timestamp")) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def ratings_csv(data_dir) -> Path:
    return write_csv(data_dir / "ratings.csv", interactions())


@pytest.fixture(scope="session")
def seqrec_bin() -> Path:
    path = Path(os.environ.get("SEQREC_BIN", REPO / "target" / "release" / "seqrec"))
    if not path.exists():
        pytest.fail(f"{path}: no seqrec binary; run `cargo build --release` first")
    return path


@pytest.fixture(scope="session")
def cli(seqrec_bin):
    """Runs the CLI; returns (stdout as JSON when `--json` is given, else text)."""

    def run(*args, expect_error: bool = False):
        done = subprocess.run(
            [str(seqrec_bin), *map(str, args)], capture_output=True, text=True
        )
        if expect_error:
            assert done.returncode != 0, done.stdout
            return done.stderr
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "--json" in args else done.stdout

    return run


# The settings both sides train with: small and quick, one thread (the
# result does not depend on it, but the test should not either).
TRAIN = dict(epochs=3, seed=7, threads=1, batch_size=512, preset="best")
TRAIN_FLAGS = [
    "--epochs", "3", "--seed", "7", "--threads", "1", "--batch-size", "512",
    "--preset", "best",
]


@pytest.fixture(scope="session")
def cli_model(cli, ratings_csv, data_dir):
    """A model trained by the CLI, and its `--json` summary."""
    out = data_dir / "cli.safetensors"
    summary = cli("train", ratings_csv, "--out", out, "--quiet", "--json", *TRAIN_FLAGS)
    return out, summary


@pytest.fixture(scope="session")
def py_model(ratings_csv):
    import seqrec

    return seqrec.train(str(ratings_csv), quiet=True, **TRAIN)
