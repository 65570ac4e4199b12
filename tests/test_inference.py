"""`mmdist.load_model(path).embed(...)` on media, paths and arrays gives evaluation's per-clip rows.

The reference is evaluation's decode + forward without Ray (tests/eval/test_extract.py
`single_process_rows`: ClipDecoder over the shards, then `embed_batch`); the Ray extraction pool
against `embed` on a trained run is tests/jobs/test_embed_job.py.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import mmdist
from mmdist.data.pipeline import ClipDecoder
from mmdist.models import build_model
from mmdist.models.checkpoint import RUN_DIR_EXPORT
from mmdist.models.export import export_model
from tests.conftest import load_job_cfg
from tests.eval.conftest import write_checkpoint
from tests.eval.test_extract import single_process_rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny mc3_vq model (untrained, seeded) saved as a checkpoint and exported; small frames as in
    the learning run (tests/conftest.py)."""
    root = tmp_path_factory.mktemp("inference")
    run_config = load_job_cfg("train", ("data.path=unused", "recipe=mc3_vq", "data.video.resize=40", "data.video.size=32"))
    torch.manual_seed(3)
    model = build_model(run_config["model"], run_config["data"]).eval()
    checkpoint = write_checkpoint(root / "checkpoint", model, run_config)
    export = str(root / "export")
    export_model(checkpoint, export)
    return type("Trained", (), {"model": model, "run_config": run_config, "checkpoint": checkpoint, "export": export, "root": root})


@pytest.fixture(scope="module")
def clips(synthetic_dir) -> pa.Table:
    """Every clip of the small synthetic world (24), sorted by clip_id."""
    shards = sorted(glob.glob(os.path.join(synthetic_dir, "*.parquet")))
    return pa.concat_tables([pq.read_table(shard) for shard in shards]).sort_by("clip_id")


def assert_same_rows(rows: dict, reference: dict, exact: bool = True) -> None:
    assert sorted(rows) == sorted(name for name in reference if name != "clip_id")
    for name, value in rows.items():
        if exact:
            np.testing.assert_array_equal(value, reference[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_media_give_evaluations_rows(trained, clips, synthetic_dir):
    reference = single_process_rows(trained.model, trained.run_config["data"], synthetic_dir)
    assert reference["clip_id"].tolist() == clips.column("clip_id").to_pylist()

    model = mmdist.load_model(trained.export)
    rows = model.embed(video=clips.column("video").to_pylist(), audio=clips.column("audio").to_pylist(),
                       text=clips.column("text").to_pylist())
    assert rows["emb_video"].shape == (24, 128) and rows["codes_video"].shape[0] == 24
    assert_same_rows(rows, reference)


def test_paths_arrays_and_single_clips_give_the_same_rows(trained, clips, tmp_path):
    model = mmdist.load_model(trained.export)
    few = clips.slice(0, 3)
    videos, audios, texts = (few.column(name).to_pylist() for name in ("video", "audio", "text"))
    from_bytes = model.embed(video=videos, audio=audios, text=texts)

    paths = {}
    for index, (video, audio) in enumerate(zip(videos, audios)):
        paths.setdefault("video", []).append(tmp_path / f"clip{index}.mp4")
        paths.setdefault("audio", []).append(str(tmp_path / f"clip{index}.flac"))
        paths["video"][-1].write_bytes(video)
        open(paths["audio"][-1], "wb").write(audio)
    assert_same_rows(model.embed(video=paths["video"], audio=paths["audio"], text=texts), from_bytes)

    decoded, _ = ClipDecoder(model.data_cfg, train=False, seed=0).decode_table(few)
    from_arrays = model.embed(video=decoded["video"], audio=torch.from_numpy(decoded["audio"]),
                              audio_frame_mask=decoded["audio_frame_mask"], text=decoded["text_tokens"])
    assert_same_rows(from_arrays, from_bytes)
    # without the frame mask, the frames past a clip's end are found by their zeros
    assert_same_rows(model.embed(video=decoded["video"], audio=decoded["audio"], text=decoded["text_tokens"]), from_bytes)

    one = model.embed(video=videos[1], audio=audios[1], text=[texts[1]])  # one clip (its narration candidates): rows of one
    np.testing.assert_allclose(one["emb_audio"], from_bytes["emb_audio"][1:2], rtol=1e-5, atol=1e-6)
    one_array = model.embed(video=decoded["video"][1])
    np.testing.assert_allclose(one_array["emb_video"], from_bytes["emb_video"][1:2], rtol=1e-5, atol=1e-6)
    assert one_array["present_video"].tolist() == [True] and one_array["present_audio"].tolist() == [False]


def test_missing_modalities_are_not_present(trained, clips):
    model = mmdist.load_model(trained.export)
    few = clips.slice(0, 2)
    rows = model.embed(video=[None, few.column("video")[1].as_py()], text=["someone cuts the dish", None])
    assert rows["present_video"].tolist() == [False, True]
    assert rows["present_text"].tolist() == [True, False]
    assert rows["present_audio"].tolist() == [False, False]
    assert (rows["codes_text"][1] == -1).all() and (rows["codes_text"][0] >= 0).any()


def test_checkpoint_folder_and_run_dir_load_the_same_model(trained, clips, tmp_path):
    videos = clips.slice(0, 2).column("video").to_pylist()
    from_export = mmdist.load_model(trained.export).embed(video=videos)
    from_checkpoint = mmdist.load_model(trained.checkpoint)
    assert from_checkpoint.source == trained.checkpoint
    assert_same_rows(from_checkpoint.embed(video=videos), from_export)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.txt").write_text(trained.checkpoint)
    assert mmdist.load_model(str(run_dir)).source == trained.checkpoint
    export_model(str(run_dir), str(run_dir / RUN_DIR_EXPORT))
    assert mmdist.load_model(str(run_dir)).source == str(run_dir / RUN_DIR_EXPORT)  # the export is preferred


def test_bad_inputs_are_named(trained, clips):
    model = mmdist.load_model(trained.export)
    videos = clips.slice(0, 2).column("video").to_pylist()
    with pytest.raises(ValueError, match=r"same number of clips, got \{'video': 2, 'text': 1\}"):
        model.embed(video=videos, text="one narration")
    with pytest.raises(ValueError, match=r"clip input 1: video_corrupt"):
        model.embed(video=[videos[0], b"not an mp4"])
    with pytest.raises(ValueError, match=r"video array: expected \[16, 32, 32, 3\] or \[N, 16, 32, 32, 3\]"):
        model.embed(video=np.zeros((2, 8, 32, 32, 3), np.uint8))
    with pytest.raises(TypeError, match="video array: expected uint8"):
        model.embed(video=np.zeros((16, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="at least one of"):
        model.embed()
    with pytest.raises(FileNotFoundError):
        model.embed(video="/nonexistent/clip.mp4")


def test_a_modality_the_model_lacks_is_an_error(tmp_path, clips):
    run_config = load_job_cfg("train", ("data.path=unused", "recipe=mc3", "recipe.modalities=[video,audio]",
                                        "data.video.resize=40", "data.video.size=32"))
    checkpoint = write_checkpoint(tmp_path / "checkpoint", build_model(run_config["model"], run_config["data"]), run_config)
    model = mmdist.load_model(checkpoint)
    with pytest.raises(ValueError, match=r"no text encoder \(model.modalities: \['video', 'audio'\]\)"):
        model.embed(text="someone cuts the dish")
    assert sorted(model.embed(audio=clips.column("audio")[0].as_py())) == ["emb_audio", "emb_video", "present_audio", "present_video"]
