"""DataFrames and Arrow tables to the Arrow IPC stream the engine reads.

pandas goes through ``pyarrow.Table.from_pandas`` (without its index),
Polars through ``DataFrame.to_arrow``; the table is written as one IPC stream
in memory, its columns as they are: the engine's reader takes every string
layout (string, large_string, string_view, dictionaries such as pandas
categoricals), so nothing is decoded or cast here.
"""

from __future__ import annotations

import sys
from typing import Any, Tuple


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DataFrame and Arrow input needs pyarrow: pip install pyarrow"
        ) from e
    return pyarrow


def _is_instance(data: Any, module: str, name: str) -> bool:
    # Only a module already imported can have made `data`: never import
    # pandas or Polars just to ask.
    mod = sys.modules.get(module)
    return mod is not None and isinstance(data, getattr(mod, name))


def _check_pandas(frame: Any) -> None:
    """What pyarrow would refuse in its own words, said in seqrec's: a
    column name given twice, a column of mixed Python types."""
    from ._seqrec import SeqrecError

    names = [str(c) for c in frame.columns]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise SeqrecError(
            f"data: the DataFrame has columns named {', '.join(map(repr, doubled))} more "
            "than once; seqrec reads columns by name, so rename all but one"
        )
    import pandas

    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        kind = pandas.api.types.infer_dtype(column, skipna=True)
        if kind.startswith("mixed"):
            types = sorted({type(v).__name__ for v in column.dropna().head(10_000)})
            raise SeqrecError(
                f"data: column {str(name)!r} mixes values of types {', '.join(types)}; "
                f"give it one type (e.g. df[{str(name)!r}].astype(str))"
            )


def _to_table(data: Any) -> Tuple[Any, str]:
    pa = _pyarrow()
    if isinstance(data, pa.Table):
        return data, "pyarrow Table"
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]), "pyarrow RecordBatch"
    if _is_instance(data, "pandas", "DataFrame"):
        _check_pandas(data)
        return pa.Table.from_pandas(data, preserve_index=False), "pandas DataFrame"
    if _is_instance(data, "polars", "DataFrame"):
        return data.to_arrow(), "polars DataFrame"
    raise TypeError(
        "data: expected a path, a pandas or Polars DataFrame or a pyarrow Table, "
        f"found a value of type {type(data).__name__}"
    )


def arrow_ipc_stream(data: Any) -> Tuple[bytes, str]:
    """The data as Arrow IPC stream bytes, and a name for it in messages."""
    pa = _pyarrow()
    table, origin = _to_table(data)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes(), origin
