"""Clips of the `data` benchmark at realistic sizes, generated here with PyAV (seeded, reproducible).

`realistic`: what a video dataset holds before any preprocessing, at the small end of real footage
(SPEC Sec. 1, issue 10): H.264 at `height` x `width` (>= 256 px short side), `fps` 25-30, a keyframe
every `gop` frames, `seconds` long (8-16 s), with 16 kHz mono FLAC audio of the same length and a few
narrations. The picture is a textured background panning under a moving object plus sensor-like
noise, so the encoder spends bits on motion and texture as on real footage (the synthetic world's
flat 64 px scenes decode ~100x faster per clip than this).

`ingested`: the same clips cut once by ingest's own `mmdist.data.media.cut_clip`, at the training
frame rate and short side (`jobs/ingest.py video.fps=... video.short_side=...`): the lever that
cluster/README.md's scale note counts in decode cores per GPU node.
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import torch

from mmdist.data.media import add_h264_stream, cut_clip, encode_audio_flac
from mmdist.data.schema import CLIP_SCHEMA
from mmdist.data.storage import join_url, prepare_output, write_shard

NARRATIONS = ("C picks up the cup", "C rinses the cup under the tap", "C puts the cup down", "C wipes the table")
NOISE_TILES = 8  # pixel noise cycles through this many precomputed frames (drawing it per frame cost more than encoding)
SAMPLE_RATE = 16000


def write_realistic(out: str, cfg: dict, seed: int) -> None:
    """`cfg["num_clips"]` realistic clips (keys: num_clips, rows_per_shard, height, width, fps, seconds,
    gop, crf, preset) as clip shards under `out` (a local folder)."""
    prepare_output(out, overwrite=True)
    rows = [realistic_row(index, cfg, seed) for index in range(cfg["num_clips"])]
    _write_rows(rows, out, cfg["rows_per_shard"])


def write_ingested(source: str, out: str, cfg: dict, seed: int) -> None:
    """The realistic clips re-cut by ingest's `cut_clip` at `cfg["fps"]` and `cfg["short_side"]`."""
    import pyarrow.parquet as pq

    prepare_output(out, overwrite=True)
    table = pq.read_table(source)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmdist-bench-ingest-") as scratch:
        for row in table.to_pylist():
            video_path, audio_path = os.path.join(scratch, "clip.mp4"), os.path.join(scratch, "clip.flac")
            with open(video_path, "wb") as handle:
                handle.write(row["video"])
            with open(audio_path, "wb") as handle:
                handle.write(row["audio"])
            video, audio = cut_clip(
                video_path, 0.0, None, audio_path, sample_rate=SAMPLE_RATE, fps=cfg["fps"],
                short_side=cfg["short_side"], crf=cfg["crf"], preset=cfg["preset"],
            )
            rows.append({**row, "video": video, "audio": audio})
    _write_rows(rows, out, cfg["rows_per_shard"])


def _write_rows(rows: list[dict], out: str, rows_per_shard: int) -> None:
    for k, start in enumerate(range(0, len(rows), rows_per_shard)):
        table = pa.Table.from_pylist(rows[start : start + rows_per_shard], schema=CLIP_SCHEMA)
        write_shard(table, join_url(out, f"shard-{k:05d}.parquet"))


def realistic_row(index: int, cfg: dict, seed: int) -> dict:
    """One clip row: video, audio and narrations drawn from (seed, index)."""
    rng = np.random.default_rng([seed, index])
    frames = render_frames(rng, cfg["height"], cfg["width"], cfg["fps"] * cfg["seconds"])
    return {
        "clip_id": f"real{seed}-{index:05d}",
        "source_id": f"real{seed}-src{index:05d}",
        "start_s": 0.0,
        "end_s": float(cfg["seconds"]),
        "video": encode_h264(frames, cfg["fps"], cfg["gop"], cfg["crf"], cfg["preset"]),
        "audio": encode_audio_flac(render_audio(rng, cfg["seconds"]), SAMPLE_RATE),
        "text": [NARRATIONS[(index + k) % len(NARRATIONS)] for k in range(3)],
        "labels": None,
    }


def render_frames(rng: np.random.Generator, height: int, width: int, count: int):
    """Yield `count` uint8 [height, width, 3] frames: a smooth texture panning under a moving square."""
    grid = torch.from_numpy(rng.random((1, 3, 24, 40), dtype=np.float32))
    texture = torch.nn.functional.interpolate(grid, size=(2 * height, 2 * width), mode="bicubic", align_corners=False)
    texture = (texture[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()  # [2H, 2W, 3]
    noise = rng.normal(0, 4, size=(NOISE_TILES, height, width, 3)).astype(np.int16)  # [N, H, W, 3]
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    pan_y, pan_x, move_y, move_x = rng.uniform(20, 60, size=4)
    for k in range(count):
        top = int(height / 2 * (1 + np.sin(k / pan_y)))
        left = int(width / 2 * (1 + np.cos(k / pan_x)))
        frame = texture[top : top + height, left : left + width].astype(np.int16)
        y = int(height / 2 + height / 3 * np.sin(k / move_y * 4))
        x = int(width / 2 + width / 3 * np.cos(k / move_x * 4))
        frame[max(0, y - 24) : y + 24, max(0, x - 24) : x + 24] = colour
        frame += noise[k % NOISE_TILES]
        yield np.clip(frame, 0, 255).astype(np.uint8)


def encode_h264(frames, fps: int, gop: int, crf: int, preset: str) -> bytes:
    """H.264 MP4 with a keyframe every `gop` frames (ingest's encoder settings, mmdist.data.media)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = None
        for count, frame in enumerate(frames):
            if stream is None:
                stream = add_h264_stream(container, Fraction(fps), frame.shape[0], frame.shape[1], crf=crf, preset=preset)
                stream.codec_context.gop_size = gop  # libx264's keyint
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = count
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def render_audio(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Mono float32 [S] at 16 kHz: two drifting tones over noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    low, high = rng.uniform(200, 400), rng.uniform(800, 1600)
    wave = 0.3 * np.sin(2 * np.pi * low * t * (1 + 0.02 * np.sin(t))) + 0.2 * np.sin(2 * np.pi * high * t)
    return (wave + rng.normal(0, 0.05, t.shape)).astype(np.float32)
