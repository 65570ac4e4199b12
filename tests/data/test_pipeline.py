"""The Ray Data pipeline (mmdist/data/pipeline.py) on real Parquet shards, local and on a real S3 server (moto).

The pipeline's output is compared with decoding the same bytes directly with the pure functions
of mmdist/data/decode.py and text.py; dropped counts with the number of records damaged on purpose.
"""

import collections
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch

from mmdist.config import ConfigError
from mmdist.data.decode import decode_audio, decode_video
from mmdist.data.pipeline import (
    DECODE_WORKER_BROKEN_EXIT,
    ClipDecoder,
    DropLedger,
    batch_shapes,
    build_dataset,
    check_data_config,
    decode_drops,
    decode_stats,
    new_stats_name,
)
from mmdist.data.schema import CLIP_SCHEMA, SchemaError
from mmdist.data.text import tokenize
from tests.conftest import REPO

torch.set_num_threads(1)
STORAGE = {"endpoint_url": None, "retries": 2, "backoff_s": 0.1, "connect_timeout_s": 5.0, "request_timeout_s": 30.0}
# What Ray's worker processes need to reach the moto server; they do not see a test's monkeypatched env.
WORKER_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def expected_record(row: dict, cfg: dict) -> dict:
    """Direct decode of one row's bytes; zeros for a null modality (independent of ClipDecoder)."""
    shapes = batch_shapes(cfg)
    out = {name: np.zeros(shape, dtype) for name, (dtype, shape) in shapes.items()}
    if row["video"] is not None:
        out["video"], out["has_video"] = decode_video(row["video"], cfg, None), True
    if row["audio"] is not None:
        (out["audio"], out["audio_frame_mask"]), out["has_audio"] = decode_audio(row["audio"], cfg), True
    if row["text"] is not None:
        out["text_tokens"], out["text_token_mask"], out["text_candidate_mask"] = tokenize(row["text"], cfg)
        out["has_text"] = True
    return out


def collect(dataset, batch_size: int) -> dict[str, dict]:
    """clip_id -> that clip's arrays, over every batch the dataset yields."""
    clips = {}
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for i, clip_id in enumerate(batch["clip_id"]):
            assert clip_id not in clips, f"{clip_id} came out twice"
            clips[clip_id] = {name: values[i] for name, values in batch.items()}
    return clips


def test_s3_pipeline_equals_direct_decoding_and_counts_drops_exactly(local_ray, data_cfg, corrupted, s3_env):
    corrupted.write_to(f"{s3_env}/clips")
    cfg = check_data_config({**data_cfg, "path": f"{s3_env}/clips"})
    stats_name = new_stats_name()
    dataset = build_dataset(cfg, STORAGE, train=False, seed=0, stats_name=stats_name, keep_metadata=True)
    assert decode_stats(stats_name) == {}  # lazy: nothing decoded before iteration
    clips = collect(dataset, batch_size=7)

    expected_ids = {row["clip_id"] for row in corrupted.rows} - corrupted.corrupt_ids
    assert set(clips) == expected_ids  # exactly the other 95 %
    assert decode_stats(stats_name) == corrupted.reasons
    dropped = decode_drops(stats_name)
    assert {clip_id for _, clip_id in dropped} == corrupted.corrupt_ids
    assert all(shard.endswith(".parquet") and clip_id in message for (shard, clip_id), (_, message) in dropped.items())

    rows = {row["clip_id"]: row for row in corrupted.rows}
    for clip_id, clip in clips.items():
        row, want = rows[clip_id], expected_record(rows[clip_id], cfg)
        for name in batch_shapes(cfg):
            np.testing.assert_array_equal(clip[name], want[name], err_msg=f"{clip_id} {name}")
        assert (clip["source_id"], clip["start_s"], clip["end_s"]) == (row["source_id"], row["start_s"], row["end_s"])
        assert clip["label_action"] == row["labels"]["action"] and clip["label_region"] == row["labels"]["region"]
        assert clip["label_sounding"] == row["labels"]["sounding"]
    for clip_id, modality in corrupted.null_rows.items():  # missing, not dropped: zeros and has_x False
        assert not clips[clip_id][f"has_{modality}"]
        assert all(clips[clip_id][f"has_{m}"] for m in ("video", "audio", "text") if m != modality)


def test_training_batches_are_fixed_shape_tensors(local_ray, data_cfg, corrupted):
    cfg = {**data_cfg, "path": corrupted.dir, "limit": 20, "epochs_per_pass": 1}
    stats_name = new_stats_name()
    dataset = build_dataset(cfg, STORAGE, train=True, seed=3, stats_name=stats_name)
    shapes = batch_shapes(cfg)
    seen = 0
    for batch in dataset.iter_torch_batches(batch_size=6):  # no string column: torch conversion must work
        assert set(batch) == set(shapes)
        for name, (dtype, shape) in shapes.items():
            assert tuple(batch[name].shape[1:]) == shape and batch[name].numpy().dtype == dtype, name
        seen += len(batch["video"])
    dropped = sum(decode_stats(stats_name).values())
    assert seen + dropped == 20  # data.limit applies to records read, before decoding
    assert seen >= 17  # at most the 3 corrupt records can fall in the first 20 read


def test_training_pass_reads_each_clip_once_per_epoch_and_counts_drops_once(local_ray, data_cfg, corrupted):
    cfg = {**data_cfg, "path": corrupted.dir, "epochs_per_pass": 3}
    stats_name = new_stats_name()
    dataset = build_dataset(cfg, STORAGE, train=True, seed=0, stats_name=stats_name, keep_metadata=True)
    seen = collections.Counter()
    for batch in dataset.iter_batches(batch_size=5, batch_format="numpy"):
        seen.update(batch["clip_id"].tolist())
    expected_ids = {row["clip_id"] for row in corrupted.rows} - corrupted.corrupt_ids
    assert set(seen) == expected_ids
    assert set(seen.values()) == {3}
    assert decode_stats(stats_name) == corrupted.reasons  # keyed by record: not 3 times
    evaluation = build_dataset(cfg, STORAGE, train=False, seed=0, stats_name=new_stats_name(), keep_metadata=True)
    assert set(collect(evaluation, batch_size=5)) == expected_ids  # evaluation reads one epoch (collect: no repeats)


def test_clip_decoder_without_ray(data_cfg, corrupted):
    decoder = ClipDecoder(data_cfg, train=False, seed=0)
    rows = corrupted.rows[:10]  # row 7 is a truncated video, rows 3-5 lack one modality each
    batch, _ = decoder.decode_table(pa.Table.from_pylist(rows, schema=CLIP_SCHEMA))
    assert len(batch["video"]) == 9
    np.testing.assert_array_equal(batch["has_video"], [r["video"] is not None for i, r in enumerate(rows) if i != 7])
    assert (batch["video"][3] == 0).all() and (batch["audio"][3] != 0).any()  # row 3: video missing


def test_clip_decoder_train_crops_are_random_and_eval_is_not(data_cfg, corrupted):
    row = next(r for r in corrupted.rows if r["video"] is not None)
    table = pa.Table.from_pylist([row] * 6, schema=CLIP_SCHEMA)
    train = ClipDecoder(data_cfg, train=True, seed=0).decode_table(table)[0]["video"]
    evaluation = ClipDecoder(data_cfg, train=False, seed=0).decode_table(table)[0]["video"]
    assert len({clip.tobytes() for clip in train}) > 1
    assert len({clip.tobytes() for clip in evaluation}) == 1


def test_wrong_column_type_is_a_schema_error_naming_it(data_cfg):
    table = pa.table({"clip_id": ["a"], "video": ["not binary"], "audio": pa.array([None], pa.binary()),
                      "text": pa.array([None], pa.list_(pa.string()))})
    with pytest.raises(SchemaError, match="'video'"):
        ClipDecoder(data_cfg, train=False, seed=0).decode_table(table)


def test_ledger_counts_each_record_once():
    ledger = DropLedger()
    ledger.record({("s1", "a"): ("video_corrupt", "m"), ("s1", "b"): ("audio_empty", "m")})
    ledger.record({("s1", "a"): ("video_corrupt", "m")})  # the same batch again (a retry, a second epoch)
    ledger.record({("s2", "a"): ("text_empty", "m")})  # same clip id, other shard: another record
    assert ledger.counts() == {"audio_empty": 1, "text_empty": 1, "video_corrupt": 1}


def test_config_is_checked_before_any_work(data_cfg):
    with pytest.raises(ConfigError, match=r"data\.decode\.concurrency: missing key"):
        check_data_config({**data_cfg, "decode": {"num_cpus": 1.0, "batch_size": 4}})
    with pytest.raises(ConfigError, match=r"data\.shuffle: unknown key"):
        check_data_config({**data_cfg, "shuffle": True})
    with pytest.raises(ValueError, match=r"data\.decode\.concurrency"):
        check_data_config({**data_cfg, "decode": {**data_cfg["decode"], "concurrency": 0}})
    with pytest.raises(FileNotFoundError, match="data.path='/nonexistent/folder' does not exist"):
        build_dataset({**data_cfg, "path": "/nonexistent/folder"}, STORAGE, train=False, seed=0, stats_name=new_stats_name())


INTERRUPTED_IMPORT = """
import signal, sys
from mmdist.data import pipeline
assert "torch" not in sys.modules
def interrupt(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.setitimer(signal.ITIMER_REAL, {delay})
try:
    pipeline.import_decode_libraries()  # a Ray cancellation landing inside the import
    print("imported before the interrupt")
    sys.exit(0)
except KeyboardInterrupt:
    pass
signal.setitimer(signal.ITIMER_REAL, 0)
pipeline.import_decode_libraries()  # the next task in this worker
print("imported again")
"""


def test_a_worker_whose_torch_import_was_interrupted_exits_for_a_fresh_one():
    """Ray Data cancels running tasks with a KeyboardInterrupt; inside `import torch` that breaks torch
    for the rest of the process (seen in the SIGKILL test: every later decode task failed)."""
    outcomes = []
    for delay in (0.3, 0.6, 1.0, 1.5):
        run = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT.format(delay=delay)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        outcomes.append((delay, run.returncode, run.stdout.strip(), run.stderr[-300:]))
        if run.returncode == DECODE_WORKER_BROKEN_EXIT:
            assert "exiting so that Ray retries the task in a fresh worker" in run.stderr
            return
        # else: imported before the interrupt, or re-imported fine (0), or an interrupt in native code that
        # crashed the process (< 0: the worker died, which Ray handles by itself): try another moment
        assert run.returncode <= 0, outcomes
    pytest.skip(f"no delay interrupted torch's import in a way that breaks it here: {outcomes}")
