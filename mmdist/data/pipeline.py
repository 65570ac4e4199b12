"""The Ray Data streaming pipeline: Parquet shards -> decoded, fixed-shape batches (SPEC Sec. 1, 10).

    read_parquet(shards, filesystem)      one row per clip (encoded media), streamed, one block per shard
      -> limit(data.limit)                optional quick subset, before any decoding
      -> (V2 reader only) repartition     streaming split: V2 packs small shards into one read block
      -> map_batches(decode_task)         ClipDecoder in tasks: decode, drop + count bad records;
                                          fused with the read (one task per shard, no encoded bytes
                                          in the object store), one output block per decode.batch_size
      -> batches of fixed shapes          `batch_shapes(cfg)`; no string column unless keep_metadata

Nothing is materialised: Ray Data's streaming executor keeps a bounded number of blocks in
flight, so memory does not grow with the dataset.

Dropped records are counted exactly by a named actor (`DecodeStats`): each decoder reports a
batch's drops, keyed by (shard, clip_id), and waits for the acknowledgement before it returns the batch.
So once a consumer has seen the last batch every drop is recorded, and a retried batch
overwrites its own entries instead of counting twice.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import sys
import uuid
import warnings
from typing import Iterator

import numpy as np
import pyarrow as pa
import ray

from mmdist.config import ConfigError, check_section
from mmdist.config_schema.data import Data
from mmdist.contracts import MODALITIES
from mmdist.data.decode import DecodeError, check_decode_config, decode_audio, decode_video
from mmdist.data.schema import CLIP_SCHEMA, LABELS_TYPE, SchemaError
from mmdist.data.shapes import batch_shapes
from mmdist.data.storage import dataset_filesystem, require_shards
from mmdist.data.text import tokenize

METADATA_COLUMNS = ("clip_id", "source_id", "start_s", "end_s")
LABEL_COLUMNS = tuple(f"label_{field.name}" for field in LABELS_TYPE)  # keep_metadata: the labels struct, flattened
SHARD_COLUMN = "path"  # added by read_parquet(include_paths=True): names the shard in messages


def check_data_config(cfg: dict) -> dict:
    """Validate the whole `data` config (keys and types: the config schema; values); errors name the key. Returns cfg."""
    cfg = check_section(cfg, Data, "data")
    check_decode_config(cfg)
    if cfg["batch_size"] < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg['batch_size']}")
    if cfg["epochs_per_pass"] < 1:
        raise ConfigError(f"data.epochs_per_pass must be >= 1, got {cfg['epochs_per_pass']}")
    if cfg["limit"] is not None and cfg["limit"] < 1:
        raise ConfigError(f"data.limit must be >= 1 or null, got {cfg['limit']}")
    for key, smallest in (("concurrency", 1), ("batch_size", 1)):
        if cfg["decode"][key] < smallest:
            raise ConfigError(f"data.decode.{key} must be >= {smallest}, got {cfg['decode'][key]}")
    if cfg["decode"]["num_cpus"] <= 0:
        raise ConfigError(f"data.decode.num_cpus must be > 0, got {cfg['decode']['num_cpus']}")
    return cfg


# ---------------------------------------------------------------- drop counting


class DropLedger:
    """Dropped records of one dataset: (shard, clip_id) -> (reason, message). Plain Python; Ray wraps it."""

    def __init__(self):
        self._drops: dict[tuple[str, str], tuple[str, str]] = {}

    def record(self, drops: dict[tuple[str, str], tuple[str, str]]) -> None:
        self._drops.update(drops)  # keyed by record: a retried batch or a second epoch overwrites, never adds

    def counts(self) -> dict[str, int]:
        return dict(sorted(collections.Counter(reason for reason, _ in self._drops.values()).items()))

    def drops(self) -> dict[tuple[str, str], tuple[str, str]]:
        return dict(self._drops)


DecodeStats = ray.remote(num_cpus=0)(DropLedger)


def new_stats_name(prefix: str = "mmdist-decode-stats") -> str:
    """A fresh name for a dataset's DecodeStats actor (`build_dataset(stats_name=...)`)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def decode_stats(name: str) -> dict[str, int]:
    """`{reason: count}` of the records dropped so far by the pipeline whose stats actor is `name`."""
    return ray.get(ray.get_actor(name).counts.remote())


def decode_drops(name: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(shard, clip_id) -> (reason, message) of every dropped record (for reports and debugging)."""
    return ray.get(ray.get_actor(name).drops.remote())


# ---------------------------------------------------------------- the decoder


class ClipDecoder:
    """Decoding of a pyarrow batch of clip rows into a dict of fixed-shape arrays (`decode_table`).

    The pipeline runs it in tasks through `decode_task`, which keeps one per worker process and
    reports the drops; inference and the benchmarks call it directly, without Ray.

    A null modality gives zeros and `has_<modality>` False; a non-null modality that fails to
    decode drops the whole record (returned with its DecodeError reason). Training draws random
    crops from a generator seeded by `seed` and this process, so crops change from epoch to epoch;
    evaluation is deterministic.
    """

    def __init__(self, data_cfg: dict, train: bool, seed: int, keep_metadata: bool = False):
        check_decode_config(data_cfg)
        self.cfg = data_cfg
        self.keep_metadata = keep_metadata
        self.rng = np.random.default_rng([seed, os.getpid(), id(self) % 2**32]) if train else None
        self.shapes = batch_shapes(data_cfg)

    def decode_table(self, table: pa.Table) -> tuple[dict[str, np.ndarray], dict]:
        """The batch of the records that decode, and the others: {(shard, clip_id): (reason, message)}."""
        shards = _shard_names(table)
        _check_columns(table, self.keep_metadata, sorted(set(shards)))
        clip_ids = table.column("clip_id").to_pylist()
        videos, audios, texts = (table.column(name).to_pylist() for name in MODALITIES)
        kept, decoded, drops = [], [], {}
        for row, clip_id in enumerate(clip_ids):
            try:
                decoded.append(self.decode_record(videos[row], audios[row], texts[row]))
                kept.append(row)
            except DecodeError as err:
                drops[(shards[row], clip_id)] = (err.reason, f"shard {shards[row]}, clip {clip_id}: {err}")
        batch = self._stack(decoded)
        if self.keep_metadata:
            batch.update(_metadata(table.take(pa.array(kept, type=pa.int64()))))
        return batch, drops

    def decode_record(self, video: bytes | None, audio: bytes | None, text: list | None) -> dict[str, np.ndarray]:
        """One clip's arrays; cheap modalities first so a bad record costs little. Raises DecodeError."""
        out = {"has_video": video is not None, "has_audio": audio is not None, "has_text": text is not None}
        if text is not None:
            out["text_tokens"], out["text_token_mask"], out["text_candidate_mask"] = tokenize(text, self.cfg)
            if not out["text_candidate_mask"].any():
                raise DecodeError("text_empty", f"no words in any of {len(text)} narration(s)")
        if audio is not None:
            out["audio"], out["audio_frame_mask"] = decode_audio(audio, self.cfg)
        if video is not None:
            out["video"] = decode_video(video, self.cfg, self.rng)
        return out

    def _stack(self, records: list[dict]) -> dict[str, np.ndarray]:
        """[B, ...] arrays; a missing modality's entries are zeros of the fixed shape."""
        batch = {}
        for name, (dtype, shape) in self.shapes.items():
            out = np.zeros((len(records), *shape), dtype=dtype)  # [B, *shape]
            for i, record in enumerate(records):
                if name in record:
                    out[i] = record[name]
            batch[name] = out
        return batch


_decode_imports_attempted = False


def import_decode_libraries() -> None:
    """Import torch and torchaudio (audio decoding) in this task worker, or end the worker if it cannot.

    Ray Data cancels running tasks by raising KeyboardInterrupt in them (when a Train worker dies, a
    split is torn down). Landing inside `import torch` it leaves torch half-initialised, and every
    later import in that reused worker process fails ("function 'conv1d' already has a docstring",
    "SystemError ... bad call flags"): each decode task it got would fail the whole dataset. Such a
    worker exits instead; Ray Data retries a task whose worker died, in a fresh process."""
    global _decode_imports_attempted
    attempted_before, _decode_imports_attempted = _decode_imports_attempted, True
    try:
        import torch  # noqa: F401
        import torchaudio  # noqa: F401
    except Exception as err:
        if not attempted_before:
            raise
        print(
            f"[decode] an earlier torch import in this worker was interrupted ({type(err).__name__}: {err}); "
            "exiting so that Ray retries the task in a fresh worker",
            file=sys.stderr, flush=True,
        )
        os._exit(DECODE_WORKER_BROKEN_EXIT)


DECODE_WORKER_BROKEN_EXIT = 75  # EX_TEMPFAIL: the task itself is fine, this process is not


@functools.lru_cache(maxsize=4)
def _process_decoder(cfg_json: str, train: bool, seed: int, keep_metadata: bool) -> ClipDecoder:
    """One decoder per worker process and setting (Ray reuses task workers: its setup is paid once)."""
    return ClipDecoder(json.loads(cfg_json), train, seed, keep_metadata)


def decode_task(
    table: pa.Table, cfg_json: str, train: bool, seed: int, keep_metadata: bool, stats, batch_size: int
) -> Iterator[dict]:
    """The `map_batches` function of the pipeline: decode a read block with this process's ClipDecoder,
    yielding one output block per `batch_size` rows, and report drops.

    Tasks rather than an actor pool: task workers outlive a dataset, so a second pass or a second
    dataset in the same Ray job does not pay the decoder processes' start-up (torch imports) again.
    A generator over the whole read block (map_batches batch_size=None) is what lets Ray Data fuse
    the read and the decode into one task: the encoded bytes never cross the object store.
    """
    import_decode_libraries()
    decoder = _process_decoder(cfg_json, train, seed, keep_metadata)
    for start in range(0, table.num_rows, batch_size):
        batch, drops = decoder.decode_table(table.slice(start, batch_size))
        if drops:  # recorded, and acknowledged, before the batch leaves: once it has left, its drops are counted
            ray.get(stats.record.remote(drops))
        if len(batch["has_video"]):
            yield batch


def _shard_names(table: pa.Table) -> list[str]:
    """Each row's shard (a batch can span shards once small blocks are combined)."""
    if SHARD_COLUMN in table.column_names:
        return table.column(SHARD_COLUMN).to_pylist()
    return ["<unknown shard>"] * table.num_rows


def _check_columns(table: pa.Table, keep_metadata: bool, shards: list[str]) -> None:
    """The columns the decoder reads exist with CLIP_SCHEMA's types (a wrong shard is an error, not a drop)."""
    needed = ["clip_id", *MODALITIES] + (list(METADATA_COLUMNS[1:]) + ["labels"] if keep_metadata else [])
    for name in needed:
        expected = CLIP_SCHEMA.field(name).type
        if name not in table.column_names:
            raise SchemaError(f"shard(s) {shards}: missing column {name!r} (expected {expected})")
        actual = table.schema.field(name).type
        compatible = actual.equals(expected) or (pa.types.is_large_binary(actual) and name in ("video", "audio"))
        if not compatible:
            raise SchemaError(f"shard(s) {shards}: column {name!r} has type {actual}, expected {expected}")


def _metadata(table: pa.Table) -> dict[str, np.ndarray]:
    """Evaluation columns: ids, bounds and the labels struct flattened to label_<field> (None when null)."""
    out = {name: np.asarray(table.column(name).to_pylist(), dtype=object) for name in ("clip_id", "source_id")}
    out.update({name: table.column(name).to_numpy().astype(np.float64) for name in ("start_s", "end_s")})
    labels = table.column("labels").combine_chunks()  # struct; flatten() applies the struct's own nulls
    for name, values in zip(LABEL_COLUMNS, labels.flatten()):
        out[name] = np.array(values.to_pylist(), dtype=object)
    return out


# ---------------------------------------------------------------- the dataset


def build_dataset(
    data_cfg: dict,
    storage_cfg: dict,
    train: bool,
    seed: int,
    stats_name: str,
    keep_metadata: bool = False,
) -> ray.data.Dataset:
    """The lazy, streaming dataset of decoded clips under `data.path` (batches: `batch_shapes`).

    `stats_name` names the DecodeStats actor counting dropped records (read it with
    `decode_stats(name)`, from any process of the Ray job: a Train worker, the driver). Pass
    a name unique to the run and split when runs share a cluster (Tune trials): `new_stats_name()`.
    An existing actor of that name is reused, so counts add up over rebuilds of the same run.
    """
    check_data_config(data_cfg)
    endpoint_url, retries = storage_cfg["endpoint_url"], storage_cfg["retries"]
    filesystem = dataset_filesystem(data_cfg["path"], storage_cfg)
    shards = require_shards(data_cfg["path"], "data.path", endpoint_url, retries=retries, backoff_s=storage_cfg["backoff_s"])
    # The plan holds this handle (a decode_task argument): the actor lives as long as the dataset.
    stats = DecodeStats.options(name=stats_name, get_if_exists=True).remote()

    columns = ["clip_id", *MODALITIES] + (list(METADATA_COLUMNS[1:]) + ["labels"] if keep_metadata else [])
    # Training reads `epochs_per_pass` epochs in one pass (a union of that many reads, each with its own
    # shard order): Ray Train's streaming_split starts the plan afresh on every pass, and a start is a
    # wait of a second or more before the first batch (README, Benchmarks).
    epochs = data_cfg["epochs_per_pass"] if train else 1
    shuffle_seeds = [seed + epoch for epoch in range(epochs)]
    epoch_datasets = [
        _decoded_epoch(data_cfg, shards, filesystem, columns, train, seed, shuffle_seed, keep_metadata, stats)
        for shuffle_seed in shuffle_seeds
    ]
    dataset = epoch_datasets[0].union(*epoch_datasets[1:]) if epochs > 1 else epoch_datasets[0]
    # One output block per decoded batch, leaving as soon as it is decoded, instead of one block per read
    # block (a whole shard: 256 clips before the first batch). Ray Data closes a block once it holds
    # more than this many bytes and slices one only above 1.5x it: a full batch is 1.1x.
    dataset.context.target_max_block_size = int(0.9 * data_cfg["decode"]["batch_size"] * clip_bytes(data_cfg))
    return dataset


def _decoded_epoch(
    data_cfg: dict, shards: list[str], filesystem, columns: list[str], train: bool, seed: int, shuffle_seed: int,
    keep_metadata: bool, stats,
) -> ray.data.Dataset:
    """One epoch over the shards: read (files in an order drawn from `shuffle_seed` when training with
    shuffle_files) fused with decode_task."""
    shuffle = ray.data.FileShuffleConfig(seed=shuffle_seed) if train and data_cfg["shuffle_files"] else None
    decode = data_cfg["decode"]
    # one read task per shard: more concurrency than shards only draws Ray Data's warning
    read_tasks = min(decode["concurrency"], len(shards))
    fused = data_cfg["limit"] is None and not data_cfg["ray_parquet_v2"]  # else blocks reach decode_task split up
    dataset = _read_parquet(shards, filesystem, shuffle, data_cfg["ray_parquet_v2"], read_tasks, decode["num_cpus"])
    dataset = dataset.select_columns([*columns, SHARD_COLUMN])  # projection: labels stay unread in training
    if data_cfg["limit"] is not None:
        dataset = dataset.limit(data_cfg["limit"])
    if data_cfg["ray_parquet_v2"]:  # V2 packs small shards into one read block: split it to reach every decode task
        dataset = dataset.repartition(target_num_rows_per_block=decode["batch_size"])
    return dataset.map_batches(
        decode_task,
        fn_kwargs={
            "cfg_json": json.dumps(data_cfg, sort_keys=True),
            "train": train,
            "seed": seed,
            "keep_metadata": keep_metadata,
            "stats": stats,
            "batch_size": decode["batch_size"],
        },
        batch_size=None,  # the whole read block: fusable with the read (decode_task slices it)
        batch_format="pyarrow",
        # `concurrency=` is deprecated since Ray 2.51; the read's size when fused (fusion needs them equal)
        compute=ray.data.TaskPoolStrategy(size=read_tasks if fused else decode["concurrency"]),
        num_cpus=decode["num_cpus"],
    )


def clip_bytes(cfg: dict) -> int:
    """Bytes of one decoded clip in a batch (`batch_shapes`)."""
    return sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in batch_shapes(cfg).values())


def _read_parquet(shards: list[str], filesystem, shuffle, use_v2: bool, tasks: int, num_cpus: float) -> ray.data.Dataset:
    """read_parquet with Ray Data's V1 or V2 Parquet datasource (a DataContext flag read at call time).

    Why V1 by default: with Ray 2.60 on this project's machines, V2's file listing took 7-14 s per
    pass over 3 small shards where V1 took 0.2 s; V1 also gives one read task per shard.
    The read takes the decode's concurrency and CPUs and one block per shard (no split): Ray Data
    fuses two map operators only when those match, and fused, read + decode run as one task.

    Ray Data's own retries of I/O errors are off in this dataset's context (its `retried_io_errors`,
    up to 10 attempts with up to 32 s of back-off, not configurable): the filesystem retries every
    read with the `storage` config's budget (mmdist.data.storage.dataset_filesystem), and an error
    that outlasts it ends the read instead of starting Ray's second budget.
    """
    context = ray.data.DataContext.get_current()
    previous = context.use_datasource_v2, context.retried_io_errors
    with warnings.catch_warnings():  # Ray warns about any non-default list (its regex deprecation)
        warnings.simplefilter("ignore")
        context.use_datasource_v2, context.retried_io_errors = use_v2, []
    try:
        return ray.data.read_parquet(
            shards,
            filesystem=filesystem,
            include_paths=True,
            shuffle=shuffle,
            override_num_blocks=len(shards),
            concurrency=tasks,
            num_cpus=num_cpus,
        )
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            context.use_datasource_v2, context.retried_io_errors = previous


# ---------------------------------------------------------------- the dataset check


def check_dataset(data_cfg: dict, storage_cfg: dict, seed: int, examples_per_reason: int) -> tuple[dict, list[str]]:
    """Stream every clip under `data.path` through the evaluation pipeline (centre crops).

    Returns the summary `{"rows", "decoded", "dropped", "reasons": {reason: count}}` (the JSON
    line of jobs/check_data.py, a stable contract) and human-readable lines: how often each
    modality is present, and up to `examples_per_reason` dropped records per reason.
    """
    stats_name = new_stats_name("mmdist-check-data")
    dataset = build_dataset(data_cfg, storage_cfg, train=False, seed=seed, stats_name=stats_name)
    decoded, present = 0, collections.Counter()
    for batch in dataset.iter_batches(batch_size=data_cfg["batch_size"], batch_format="numpy"):
        decoded += len(batch["has_video"])
        for modality in MODALITIES:
            present[modality] += int(batch[f"has_{modality}"].sum())
    drops = decode_drops(stats_name)
    reasons = dict(sorted(collections.Counter(reason for reason, _ in drops.values()).items()))
    summary = {"rows": decoded + len(drops), "decoded": decoded, "dropped": len(drops), "reasons": reasons}
    lines = [f"{name}: present in {present[name]} of {decoded} decoded clips" for name in MODALITIES]
    shown = collections.Counter()
    for reason, message in sorted(drops.values()):
        if shown[reason] < examples_per_reason:
            lines.append(f"dropped ({reason}): {message}")
            shown[reason] += 1
    return summary, lines
