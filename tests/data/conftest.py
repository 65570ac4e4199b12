"""Fixtures of the decode / pipeline tests: the data config from configs/data/default.yaml,
made small, and media encoded in the test with PyAV / soundfile."""

import io
import pathlib

import av
import numpy as np
import pytest
import soundfile
from omegaconf import OmegaConf

DATA_YAML = pathlib.Path(__file__).resolve().parents[2] / "configs" / "data" / "default.yaml"


def load_data_cfg(**overrides) -> dict:
    """configs/data/default.yaml as a plain dict, with `section.key=value` style overrides."""
    cfg = OmegaConf.load(DATA_YAML)
    for dotted, value in overrides.items():
        OmegaConf.update(cfg, dotted.replace("__", "."), value, merge=False)
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.fixture
def data_cfg() -> dict:
    """Small sizes so decoding in tests is quick; every key still comes from the YAML."""
    return load_data_cfg(
        path="unused",
        video__num_frames=6,
        video__fps=4,
        video__resize=32,
        video__size=24,
        audio__max_seconds=1.0,
        decode__concurrency=2,
        decode__batch_size=4,
    )


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """H.264 MP4 of uint8 [T, H, W, 3] frames, written here (not with mmdist.data.media) so the
    decoder is checked against an encoder it does not share code with."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "10", "threads": "1"})
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def grey_frames(levels, height=48, width=64) -> np.ndarray:
    """uint8 [T, H, W, 3] where frame k is uniformly grey at levels[k]: its index is readable after decoding."""
    return np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), height, width, 3)).copy()


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str = "FLAC") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, sample_rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def sine(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="session")
def media():
    """The media helpers above, for tests (conftest modules are not imported by name)."""
    import types

    return types.SimpleNamespace(encode_mp4=encode_mp4, grey_frames=grey_frames, encode_audio=encode_audio, sine=sine)


# Rows of the "5 % corrupted" dataset: 60 clips, 3 of them corrupt (one per kind the issue names),
# 3 with a null modality (missing, not corrupt).
CORRUPT_ROWS = {7: ("video", "truncated"), 23: ("video", "garbage"), 41: ("audio", "empty")}
CORRUPT_REASONS = {"video_corrupt": 2, "audio_empty": 1}
NULL_ROWS = {3: "video", 4: "audio", 5: "text"}
NUM_ROWS = 60


def corrupted_rows(synthetic_dir: str) -> list[dict]:
    """The 24 synthetic clips cycled into NUM_ROWS rows with fresh ids, then damaged as CORRUPT_ROWS / NULL_ROWS say."""
    import pyarrow.fs as pafs

    from mmdist.data.storage import list_shards, read_shard

    source = [row for path in list_shards(synthetic_dir) for row in read_shard(path, pafs.LocalFileSystem()).to_pylist()]
    rows = []
    for i in range(NUM_ROWS):
        row = dict(source[i % len(source)], clip_id=f"clip-{i:03d}")
        if i in CORRUPT_ROWS:
            column, kind = CORRUPT_ROWS[i]
            if kind == "truncated":
                row[column] = row[column][: len(row[column]) // 2]
            elif kind == "garbage":
                row[column] = np.random.default_rng(i).bytes(len(row[column]))
            else:  # a valid WAV header holding no sample
                row[column] = encode_audio(np.zeros(0, np.float32), 16000, "WAV")
        if i in NULL_ROWS:
            row[NULL_ROWS[i]] = None
        rows.append(row)
    return rows


def write_rows(rows: list[dict], url: str, rows_per_shard: int = 20) -> list[str]:
    """CLIP_SCHEMA shards of `rows` under `url` (local or s3://), through the storage layer."""
    import pyarrow as pa

    from mmdist.data.schema import CLIP_SCHEMA
    from mmdist.data.storage import join_url, write_shard

    return [
        write_shard(
            pa.Table.from_pylist(rows[start : start + rows_per_shard], schema=CLIP_SCHEMA),
            join_url(url, f"part-{start:04d}.parquet"),
        )
        for start in range(0, len(rows), rows_per_shard)
    ]


@pytest.fixture(scope="session")
def corrupted(synthetic_dir, tmp_path_factory):
    """The 5 %-corrupted dataset on local disk: .dir, .rows (the rows written), and the expectations."""
    import types

    rows = corrupted_rows(synthetic_dir)
    out = str(tmp_path_factory.mktemp("corrupted") / "clips")
    write_rows(rows, out)
    return types.SimpleNamespace(
        dir=out,
        rows=rows,
        write_to=lambda url: write_rows(rows, url),
        corrupt_ids={rows[i]["clip_id"] for i in CORRUPT_ROWS},
        reasons=CORRUPT_REASONS,
        null_rows={rows[i]["clip_id"]: m for i, m in NULL_ROWS.items()},
    )
