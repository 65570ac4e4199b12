"""Where the decode loop's CPU time goes, stage by stage, and the codec floor it is compared with.

All timings are CPU time of this process (`time.process_time`), one core (torch at 1 thread):

- `codec_floor_clip`: PyAV decoding only the frames one clip needs (up to the last target time of
  `data.video`) with FFmpeg's threads as configured, nothing else: no RGB conversion, no resize, no
  audio. No loader can decode a clip's video for less with this codec on this CPU.
- `stage_times`: the loop's work split into read (Parquet), decode video (the floor), resize + crop
  (`decode_video` minus the floor), audio (`decode_audio`), text (`tokenize`) and batch assembly
  (`ClipDecoder.decode_table` minus the three decoders), each from the library's own functions.
- `ray_stage_times`: what Ray Data adds per clip, from its own stats of the last pass: CPU in the
  fused read + decode tasks beyond the loop's, and the rest (the consumer's `iter_batches`,
  the streaming executor, the object store and Ray's own processes).
"""

from __future__ import annotations

import io
import time

import av
import pyarrow.fs as pafs

from mmdist.contracts import MODALITIES
from mmdist.data.decode import decode_audio, decode_video
from mmdist.data.pipeline import ClipDecoder
from mmdist.data.storage import list_shards, read_shard
from mmdist.data.text import tokenize

STAGES = ("read", "decode_video", "resize_crop", "audio", "text", "batch_assembly")


def codec_floor_clip(data: bytes, video_cfg: dict) -> int:
    """Decode the frames of one encoded clip up to the last target time; returns the frames decoded."""
    last = (video_cfg["num_frames"] - 1) / video_cfg["fps"]
    decoded = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = video_cfg["threads"]
        for frame in container.decode(stream):
            decoded += 1
            if frame.time is not None and frame.time > last:
                break
    return decoded


def read_tables(url: str) -> list:
    filesystem = pafs.LocalFileSystem()
    return [read_shard(path, filesystem) for path in list_shards(url)]


def codec_floor(url: str, data_cfg: dict, repeats: int) -> tuple[float, float]:
    """(clips per CPU-second, frames decoded per clip) of the floor over every clip's video, best of `repeats`."""
    videos = [video for table in read_tables(url) for video in table.column("video").to_pylist() if video]
    best, frames = float("inf"), 0
    for _ in range(repeats):
        start = time.process_time()
        frames = sum(codec_floor_clip(video, data_cfg["video"]) for video in videos)
        best = min(best, time.process_time() - start)
    return len(videos) / best, frames / len(videos)


def stage_times(url: str, data_cfg: dict) -> dict[str, float]:
    """CPU milliseconds per clip of each loop stage (STAGES), over every clip once."""
    seconds = dict.fromkeys(STAGES, 0.0)
    start = time.process_time()
    tables = read_tables(url)
    seconds["read"] = time.process_time() - start
    clips = sum(table.num_rows for table in tables)
    decoder = ClipDecoder(data_cfg, train=False, seed=0)
    for table in tables:
        start = time.process_time()
        decoder.decode_table(table)
        whole = time.process_time() - start
        parts = 0.0
        for row in table.select(list(MODALITIES)).to_pylist():
            parts += _timed(seconds, "text", tokenize, row["text"], data_cfg) if row["text"] is not None else 0.0
            parts += _timed(seconds, "audio", decode_audio, row["audio"], data_cfg) if row["audio"] else 0.0
            if row["video"]:
                video = _timed(seconds, "resize_crop", decode_video, row["video"], data_cfg, None)
                floor = _timed(seconds, "decode_video", codec_floor_clip, row["video"], data_cfg["video"])
                seconds["resize_crop"] -= floor  # decode_video = the floor's decoding + selection, RGB, resize, crop
                parts += video
        seconds["batch_assembly"] += max(0.0, whole - parts)
    return {stage: 1000 * value / clips for stage, value in seconds.items()}


def _timed(seconds: dict, stage: str, function, *args) -> float:
    start = time.process_time()
    function(*args)
    elapsed = time.process_time() - start
    seconds[stage] += elapsed
    return elapsed


def ray_stage_times(dataset, clips: int, pass_cpu_s: float, pass_wall_s: float, loop_cpu_ms: float) -> dict[str, float]:
    """CPU milliseconds per clip that Ray Data adds to the loop's, from the dataset's last execution.

    `tasks_beyond_loop`: CPU of the (fused) read + decode tasks minus the loop's CPU per clip (block
    building, serialisation into the object store, task set-up). `consumer_and_ray`: the remainder of
    the pass's CPU (`pass_cpu_s`, every process): iter_batches' fetch, format and re-batching, the
    streaming executor, the raylet, GCS and object store. `iter_format_collate`: the part of the
    consumer's wall time spent converting and re-batching blocks, from Ray's iterator stats.
    `task_concurrency`: the tasks' summed wall time over the pass's, how many ran at once on average.
    """
    summary = dataset._get_stats_summary()  # Ray Data's own per-operator stats (no public structured API)
    task_cpu = sum(op.cpu_time.sum for op in summary.operators_stats if op.cpu_time is not None)
    task_wall = sum(op.wall_time.sum for op in summary.operators_stats if op.wall_time is not None)
    iterator = summary.iter_stats
    convert = sum(timer.get() for timer in (iterator.format_time, iterator.collate_time, iterator.finalize_batch_time))
    per_clip = 1000 / clips
    return {
        "tasks_ms": task_cpu * per_clip,
        "tasks_beyond_loop_ms": task_cpu * per_clip - loop_cpu_ms,
        "consumer_and_ray_ms": (pass_cpu_s - task_cpu) * per_clip,
        "iter_format_collate_ms": convert * per_clip,
        "task_concurrency": task_wall / pass_wall_s,
        "operators": " -> ".join(op.operator_name for op in summary.operators_stats),
    }
