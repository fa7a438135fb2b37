"""Types of seqrec's native module (re-exported by ``seqrec``)."""

from __future__ import annotations

import os
from typing import Any, Callable, Literal, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

#: A path, or a pandas / Polars DataFrame or pyarrow Table / RecordBatch.
Data = Union[str, os.PathLike, Any]
#: An item id as users know it (the data's item column).
ItemId = Union[int, str]
#: Oldest first.
History = Sequence[ItemId]

PRESETS: list[str]

class SeqrecError(ValueError):
    """An error from seqrec's engine, with its message as the command line
    prints it (file, line, field and cause)."""

def train(
    data: Data | None = None,
    *,
    preset: Literal["parity", "best", "sasrec"] | None = None,
    config: str | os.PathLike | None = None,
    resume: Model | str | os.PathLike | None = None,
    quiet: bool = False,
    progress: Callable[..., None] | None = None,
    # Data keywords (the CLI's data flags).
    dataset: str | None = ...,
    data_dir: str | os.PathLike | None = ...,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    rating_col: str | None = None,
    min_rating: float | None = ...,
    no_rating_filter: bool = False,
    min_sequence_len: int | None = ...,
    skip_bad_lines: bool = False,
    renumber_items: bool = False,
    delimiter: str | None = None,
    titles_file: str | os.PathLike | None = None,
    title_item_col: str = "item_id",
    title_col: str = "title",
    # Every training setting, by its config key (`seqrec train --print-config`):
    # epochs, batch_size, learning_rate, seed, threads, tower, context_len,
    # embedding_dim, padding, mask_padding, loss, validation, patience, ...
    **settings: int | float | bool | str,
) -> Model:
    """Trains a model as ``seqrec train`` does, and returns it; ``resume``
    continues a model (``seqrec train --resume``). Ctrl-C stops training
    between steps and raises KeyboardInterrupt."""

def load(path: str | os.PathLike) -> Model:
    """Loads a model file written by ``seqrec train`` or ``Model.save``."""

class Model:
    """A trained seqrec model: recommend, encode, evaluate and save."""

    def recommend(
        self,
        histories: Sequence[History] | None = None,
        k: int = 10,
        exclude_seen: bool = False,
        *,
        titles: Sequence[Sequence[str]] | None = None,
        users: Sequence[int | str] | None = None,
        allow_user_lookup: bool = False,
    ) -> Tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
        """Top ``k`` item ids and scores per history (given as item ids,
        as ``titles``, or as ``users`` of the training data, the last only
        with ``allow_user_lookup=True``), two ``(n, k)`` arrays (ids int64,
        or object arrays of str for text ids)."""
    def encode(self, histories: Sequence[History]) -> npt.NDArray[np.float32]:
        """Query vectors, ``(n, dim)``."""
    def evaluate(
        self,
        data: Data | None = None,
        *,
        k: int | Sequence[int] | None = None,
        threads: int | None = None,
        quiet: bool = False,
        **data_options: Any,
    ) -> dict[str, Any]:
        """HR/NDCG/MRR@K as ``seqrec evaluate --json`` reports them."""
    def save(self, path: str | os.PathLike) -> None:
        """Writes the model file (the CLI's format)."""
    @property
    def item_embeddings(self) -> npt.NDArray[np.float32]:
        """``(vocab_size, dim)``, a read-only view; row ``i`` is ``item_keys[i]``."""
    @property
    def item_keys(self) -> list[ItemId | None]: ...
    @property
    def dim(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def dataset(self) -> str: ...
    @property
    def best_epoch(self) -> int | None: ...
    @property
    def history(self) -> list[dict[str, float]]: ...
    @property
    def test_metrics(self) -> dict[str, Any] | None: ...
    @property
    def settings(self) -> dict[str, Any]: ...
    def _engine_recommend_seconds(
        self,
        histories: Sequence[History],
        k: int = 10,
        exclude_seen: bool = False,
        repeats: int = 100,
    ) -> float: ...
