"""Parts of the `data` benchmark suite (mmdist/benchmarks/data*.py) that need no Ray: the realistic
clips it generates, its codec floor and its stage breakdown, and its config checks."""

import io
import pathlib

import av
import numpy as np
import pyarrow as pa
import pytest
import soundfile
from omegaconf import OmegaConf

from mmdist.benchmarks import data as suite
from mmdist.benchmarks.data_clips import SAMPLE_RATE, encode_h264, realistic_row, write_realistic
from mmdist.benchmarks.data_stages import STAGES, codec_floor_clip, stage_times
from mmdist.data.schema import validate_table
from tests.conftest import load_job_cfg

REPO = pathlib.Path(__file__).resolve().parents[2]


SMALL = {"num_clips": 2, "rows_per_shard": 2, "height": 64, "width": 96, "fps": 25, "seconds": 2, "gop": 10,
         "crf": 23, "preset": "veryfast"}


def data_cfg(**video) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "data" / "default.yaml"))
    cfg["video"].update(video)
    return {**cfg, "path": "unused"}


def test_realistic_clip_has_the_declared_size_rate_gop_and_audio():
    row = realistic_row(0, SMALL, seed=0)
    with av.open(io.BytesIO(row["video"])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 50 and (frames[0].height, frames[0].width) == (64, 96)
    assert [k for k, frame in enumerate(frames) if frame.key_frame] == [0, 10, 20, 30, 40]
    assert abs(frames[-1].time - 49 / 25) < 1e-6
    wave, rate = soundfile.read(io.BytesIO(row["audio"]))
    assert rate == SAMPLE_RATE and len(wave) == 2 * SAMPLE_RATE
    validate_table(pa.Table.from_pylist([row]))  # the clip schema, as ingest writes it


def test_codec_floor_decodes_up_to_the_first_frame_past_the_last_target():
    # 4 targets at 4 fps: the last at 0.75 s; a 10 fps source shows frames at 0.0 .. 0.7, and 0.8 ends it
    frames = (np.full((32, 48, 3), 8 * k, np.uint8) for k in range(30))
    clip = encode_h264(frames, fps=10, gop=10, crf=23, preset="veryfast")
    assert codec_floor_clip(clip, {"num_frames": 4, "fps": 4, "threads": 1}) == 9


def test_stage_breakdown_covers_every_stage(tmp_path):
    write_realistic(str(tmp_path / "clips"), SMALL, seed=0)
    stages = stage_times(str(tmp_path / "clips"), data_cfg(resize=48, size=32))
    assert list(stages) == list(STAGES)
    assert all(value >= 0 for value in stages.values())
    assert stages["decode_video"] > 0 and stages["audio"] > 0


def test_unknown_setting_and_missing_key_are_named():
    cfg = load_job_cfg("benchmark", ("suite=data",))["suite"]
    with pytest.raises(ValueError, match="'huge'"):
        suite.run({**cfg, "settings": ["huge"]})
    realistic = {key: value for key, value in cfg["realistic"].items() if key != "gop"}
    with pytest.raises(ValueError, match="suite.realistic.gop: missing key"):
        suite.run({**cfg, "settings": ["realistic"], "realistic": realistic})
