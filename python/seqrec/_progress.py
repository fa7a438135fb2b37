"""Training progress in a notebook or terminal: a tqdm bar per epoch when
tqdm is installed (``tqdm.auto`` picks the notebook widget), else one line
per epoch on stderr. ``seqrec.train`` calls it with ``(kind, *values)``."""

from __future__ import annotations

import sys
from typing import Any, Optional


def _epoch_line(r: dict, epochs: int) -> str:
    line = f"epoch {r['epoch']}/{epochs}  loss {r['loss']:.4f}  val_loss {r['val_loss']:.4f}"
    if "valid_hr10" in r:
        line += f"  valid HR@10 {r['valid_hr10']:.4f}  NDCG@10 {r['valid_ndcg10']:.4f}"
    if "hr10" in r:
        line += f"  HR@10 {r['hr10']:.4f}  NDCG@10 {r['ndcg10']:.4f}"
    return line + f"  {r['seconds']:.1f} s"


class Progress:
    """The default display of ``seqrec.train``'s events."""

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self._tqdm = tqdm
        self._bar: Optional[Any] = None
        self._epochs = 0

    def __call__(self, kind: str, *values: Any) -> None:
        getattr(self, "_" + kind)(*values)

    def _start(self, train_examples: int, test_examples: int, steps: int, threads: int) -> None:
        print(
            f"training: {train_examples} train / {test_examples} test examples, "
            f"{steps} steps per epoch, {threads} thread(s)",
            file=sys.stderr,
        )

    def _epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epochs = epochs
        if self._tqdm is not None:
            self._bar = self._tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=False)

    def _step(self, step: int, running_loss: float) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
            self._bar.refresh()

    def _epoch_end(self, report: dict) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        line = _epoch_line(report, self._epochs)
        if self._tqdm is not None:
            self._tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)
