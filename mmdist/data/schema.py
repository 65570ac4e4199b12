"""The clip schema (SPEC Sec. 1), defined once and checked on every write and read."""

from __future__ import annotations

import pyarrow as pa

LABELS_TYPE = pa.struct(
    [
        pa.field("action", pa.string()),
        pa.field("verb", pa.string()),
        pa.field("noun", pa.string()),
        pa.field("sounding", pa.bool_()),
        pa.field("region", pa.int8()),
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("video", pa.binary()),
        pa.field("audio", pa.binary()),
        pa.field("text", pa.list_(pa.string())),
        pa.field("labels", LABELS_TYPE),
    ]
)

REQUIRED_COLUMNS = ("clip_id", "source_id", "start_s", "end_s")


class SchemaError(ValueError):
    """A shard does not follow CLIP_SCHEMA; the message names the shard and the column."""


def validate_table(table: pa.Table, shard: str = "<in-memory>") -> pa.Table:
    """Check `table` against CLIP_SCHEMA and return it cast to the exact schema.

    Extra columns are an error (a typo in a column name must not silently drop a modality);
    missing modality / label columns are an error too: write nulls instead.
    """
    names = set(table.column_names)
    for field in CLIP_SCHEMA:
        if field.name not in names:
            raise SchemaError(f"shard {shard}: missing column {field.name!r} (expected {field.type})")
    extra = sorted(names - set(CLIP_SCHEMA.names))
    if extra:
        raise SchemaError(f"shard {shard}: unexpected column(s) {extra}; the clip schema has {CLIP_SCHEMA.names}")
    columns = []
    for field in CLIP_SCHEMA:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise SchemaError(
                    f"shard {shard}: column {field.name!r} has type {column.type}, expected {field.type}"
                ) from err
        if not field.nullable and column.null_count:
            raise SchemaError(f"shard {shard}: column {field.name!r} has {column.null_count} null value(s)")
        columns.append(column)
    ids = table.column("clip_id")
    if len(pa.compute.unique(ids)) != len(ids):
        raise SchemaError(f"shard {shard}: column 'clip_id' has duplicate values")
    return pa.Table.from_arrays(columns, schema=CLIP_SCHEMA)
