"""What a call from Python adds to `Model.recommend`, against the engine.

Trains a small model on seeded synthetic data, then for batches of 1 and
256 histories times the same top-K two ways, in one run:

- python: `model.recommend(histories, k)` as a user calls it (item ids
  resolved from Python objects, numpy arrays built, GIL released);
- engine: the `Recommender::recommend` call alone, timed inside Rust on the
  already-resolved histories (`Model._engine_recommend_seconds`).

Each figure is the best of 5 rounds of the mean per call. Run from the
repository root after installing the package (`pip install ./python`):

    python python/bench/recommend_overhead.py [--items 3700] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import seqrec


def synthetic_csv(path: str, users: int, items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for user in range(users):
            item = int(rng.integers(items))
            for t in range(int(rng.integers(5, 40))):
                item = (item + int(rng.integers(1, 5))) % items
                f.write(f"{user},{item + 1},{t}\n")


def best_of(rounds: int, fn) -> float:
    return min(fn() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3700)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "ratings.csv")
        synthetic_csv(data, args.users, args.items, seed=1)
        model = seqrec.train(data, preset="best", epochs=1, seed=1, quiet=True)

    rng = np.random.default_rng(2)
    keys = [k for k in model.item_keys if k is not None]
    print(f"model: {model!r}; k = {args.k}; best of 5 rounds of {args.repeats} calls")
    print(f"{'batch':>5}  {'python µs/call':>14}  {'engine µs/call':>14}  {'ratio':>6}  {'overhead µs':>11}")
    for batch in (1, 256):
        histories = [
            [keys[i] for i in rng.integers(len(keys), size=int(rng.integers(3, 30)))]
            for _ in range(batch)
        ]
        model.recommend(histories, k=args.k)  # warm-up: threads, caches

        def python_round() -> float:
            started = time.perf_counter()
            for _ in range(args.repeats):
                model.recommend(histories, k=args.k)
            return (time.perf_counter() - started) / args.repeats

        def engine_round() -> float:
            return model._engine_recommend_seconds(histories, k=args.k, repeats=args.repeats)

        py = best_of(5, python_round)
        engine = best_of(5, engine_round)
        print(
            f"{batch:>5}  {py * 1e6:>14.1f}  {engine * 1e6:>14.1f}  {py / engine:>6.2f}  {(py - engine) * 1e6:>11.1f}"
        )


if __name__ == "__main__":
    main()
