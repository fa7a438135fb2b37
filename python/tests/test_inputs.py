"""A DataFrame (pandas, Polars), an Arrow table and a file of the same rows
give the same examples and, from the same seed, the same model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import seqrec
from conftest import interactions, write_csv

SETTINGS = dict(epochs=2, seed=5, threads=1, quiet=True)
COLUMNS = ("user_id", "item_id", "timestamp")


@pytest.fixture(scope="module")
def rows():
    return interactions(users=120)


@pytest.fixture(scope="module")
def from_csv(rows, tmp_path_factory):
    path = write_csv(tmp_path_factory.mktemp("inputs") / "rows.csv", rows)
    return seqrec.train(str(path), **SETTINGS)


def columns(rows):
    return {name: [r[i] for r in rows] for i, name in enumerate(COLUMNS)}


def assert_same_model(a, b):
    assert a.item_keys == b.item_keys
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)
    histories = [[101, 102, 104], [150, 151]]
    np.testing.assert_array_equal(a.encode(histories), b.encode(histories))
    assert a.test_metrics == b.test_metrics
    assert a.history and [e["loss"] for e in a.history] == [e["loss"] for e in b.history]


def test_pandas(rows, from_csv):
    model = seqrec.train(pd.DataFrame(columns(rows)), **SETTINGS)
    assert_same_model(model, from_csv)
    assert model.dataset != from_csv.dataset


def test_polars(rows, from_csv):
    assert_same_model(seqrec.train(pl.DataFrame(columns(rows)), **SETTINGS), from_csv)


def test_arrow_table_and_parquet_file(rows, from_csv, tmp_path):
    import pyarrow.parquet as pq

    table = pa.table(columns(rows))
    assert_same_model(seqrec.train(table, **SETTINGS), from_csv)
    pq.write_table(table, tmp_path / "rows.parquet")
    assert_same_model(seqrec.train(str(tmp_path / "rows.parquet"), **SETTINGS), from_csv)


def test_renamed_columns_and_evaluate_on_a_dataframe(rows, from_csv):
    df = pd.DataFrame(columns(rows)).rename(columns={"user_id": "who", "item_id": "what"})
    model = seqrec.train(df, user_col="who", item_col="what", **SETTINGS)
    assert_same_model(model, from_csv)
    assert model.evaluate(df, user_col="who", item_col="what") == from_csv.evaluate()


def test_a_missing_dataframe_column_is_named(rows):
    df = pd.DataFrame(columns(rows))
    with pytest.raises(seqrec.SeqrecError, match='no column "customer"'):
        seqrec.train(df, user_col="customer", **SETTINGS)


def test_mixed_types_and_doubled_columns_are_said_in_seqrecs_words(rows):
    data = columns(rows)
    mixed = pd.DataFrame({**data, "item_id": [str(i) if n % 2 else i for n, i in enumerate(data["item_id"])]})
    with pytest.raises(seqrec.SeqrecError, match=r"^data: column 'item_id' mixes values of types int, str"):
        seqrec.train(mixed, **SETTINGS)
    doubled = pd.concat([pd.DataFrame(data), pd.DataFrame({"item_id": data["item_id"]})], axis=1)
    with pytest.raises(seqrec.SeqrecError, match=r"^data: the DataFrame has columns named 'item_id' more than once"):
        seqrec.train(doubled, **SETTINGS)
    # An Arrow table may hold a name twice too: the engine names it.
    table = pa.table(data)
    table = table.append_column("item_id", table.column("item_id"))
    with pytest.raises(seqrec.SeqrecError, match='column "item_id" appears 2 times'):
        seqrec.train(table, **SETTINGS)


@pytest.mark.parametrize("kind", ["pandas", "polars", "table", "batch"])
def test_every_frame_becomes_one_arrow_stream_of_the_same_rows(rows, kind):
    from seqrec._convert import arrow_ipc_stream

    cols = columns(rows)
    if kind == "pandas":
        data = pd.DataFrame(cols).astype({"user_id": "category"})
    elif kind == "polars":
        data = pl.DataFrame(cols).with_columns(
            pl.col("user_id").cast(str)
        )
    elif kind == "table":
        data = pa.table(cols)
    else:
        data = pa.RecordBatch.from_pydict(cols)
    stream, origin = arrow_ipc_stream(data)
    table = pa.ipc.open_stream(stream).read_all()
    assert table.column_names == list(COLUMNS) and table.num_rows == len(rows)
    # Columns pass as they are (the engine reads every string layout):
    # the pandas categorical stays a dictionary.
    assert pa.types.is_dictionary(table.schema.field("user_id").type) == (kind == "pandas")
    assert [str(u) for u in table.column("user_id").to_pylist()] == [str(u) for u in cols["user_id"]]
    assert table.column("item_id").to_pylist() == cols["item_id"]
    assert kind.split()[0] in origin.lower() or kind in ("table", "batch")


def test_a_categorical_and_string_user_column_train_the_same_model(rows, from_csv):
    cols = columns(rows)
    categorical = pd.DataFrame(cols).astype({"user_id": "category"})
    assert_same_model(seqrec.train(categorical, **SETTINGS), from_csv)
    as_text = pl.DataFrame(cols).with_columns(pl.col("user_id").cast(str))
    assert_same_model(seqrec.train(as_text, **SETTINGS), from_csv)
