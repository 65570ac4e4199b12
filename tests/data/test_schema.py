"""The clip schema is checked on write and on read, with errors naming the shard and the column."""

import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mmdist.data.schema import CLIP_SCHEMA, SchemaError, validate_table
from mmdist.data.storage import list_shards, read_shard, write_shard


def good_rows():
    return [
        {
            "clip_id": "a", "source_id": "s", "start_s": 0.0, "end_s": 2.0,
            "video": b"v", "audio": None, "text": ["C cuts the carrot"],
            "labels": {"action": "chop carrot", "verb": "chop", "noun": "carrot", "sounding": True, "region": 1},
        },
        {
            "clip_id": "b", "source_id": "s", "start_s": 2.0, "end_s": 4.0,
            "video": None, "audio": b"a", "text": None, "labels": None,
        },
    ]


def test_valid_table_comes_back_with_the_exact_schema():
    # region as a plain int64 column, as pyarrow infers it from Python ints
    table = pa.Table.from_pylist(good_rows())
    assert not table.schema.equals(CLIP_SCHEMA)
    checked = validate_table(table)
    assert checked.schema.equals(CLIP_SCHEMA)
    assert checked.to_pylist() == good_rows()


@pytest.mark.parametrize(
    "change, column, words",
    [
        (lambda t: t.drop_columns(["audio"]), "audio", "missing column"),
        (lambda t: t.append_column("vidoe", pa.array([b"", b""])), "vidoe", "unexpected column"),
        (lambda t: t.set_column(2, "start_s", pa.array(["zero", "two"])), "start_s", "has type string"),
        (lambda t: t.set_column(0, "clip_id", pa.array(["a", None])), "clip_id", "1 null value"),
        (lambda t: t.set_column(0, "clip_id", pa.array(["a", "a"])), "clip_id", "duplicate"),
        (lambda t: t.set_column(6, "text", pa.array([1, 2])), "text", "has type int64"),
    ],
)
def test_schema_errors_name_shard_and_column(change, column, words):
    table = change(pa.Table.from_pylist(good_rows(), schema=CLIP_SCHEMA))
    with pytest.raises(SchemaError) as err:
        validate_table(table, shard="s3://bucket/shard-00007.parquet")
    message = str(err.value)
    assert "s3://bucket/shard-00007.parquet" in message
    assert repr(column) in message
    assert words in message


def test_write_shard_refuses_a_bad_table_and_writes_nothing(tmp_path):
    table = pa.Table.from_pylist(good_rows(), schema=CLIP_SCHEMA).drop_columns(["labels"])
    url = str(tmp_path / "out" / "shard-00000.parquet")
    with pytest.raises(SchemaError, match=r"shard-00000\.parquet: missing column 'labels'"):
        write_shard(table, url)
    assert not os.path.exists(tmp_path / "out")


def test_read_shard_validates_what_another_writer_wrote(tmp_path):
    # a shard written by plain pyarrow, with a typo in a column name
    table = pa.Table.from_pylist(good_rows(), schema=CLIP_SCHEMA).rename_columns(
        [n if n != "labels" else "label" for n in CLIP_SCHEMA.names]
    )
    path = str(tmp_path / "foreign.parquet")
    pq.write_table(table, path)
    with pytest.raises(SchemaError, match=r"foreign\.parquet: missing column 'labels'"):
        read_shard(path, pafs.LocalFileSystem())


def test_read_shard_names_a_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(OSError, match="broken.parquet"):
        read_shard(str(path), pafs.LocalFileSystem())


def test_round_trip_keeps_every_value_and_nulls(tmp_path):
    url = str(tmp_path / "shard-00000.parquet")
    write_shard(pa.Table.from_pylist(good_rows(), schema=CLIP_SCHEMA), url)
    [path] = list_shards(str(tmp_path))
    table = read_shard(path, pafs.LocalFileSystem())
    assert table.schema.equals(CLIP_SCHEMA)
    assert table.to_pylist() == good_rows()
