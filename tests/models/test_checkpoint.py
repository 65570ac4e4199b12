"""Reading checkpoints safely: a pickle that would run code is refused before it runs; plain ones load.

The crafted file is a real torch checkpoint whose pickle calls `os.system` as it loads (what a hostile
file in a shared bucket would do); the test first shows that a plain `torch.load` does run it.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from mmdist.models import build_model
from mmdist.models.checkpoint import (
    EXPORT_CONFIG_FILE,
    RUN_DIR_EXPORT,
    UnsafeCheckpointError,
    load_model_state,
    load_trained,
    resolve_trained,
    write_manifest,
)
from tests.eval.conftest import write_checkpoint


class WritesMarker:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def model_states_file(folder) -> str:
    return os.path.join(folder, "step_00000000", "mp_rank_00_model_states.pt")


@pytest.fixture
def checkpoint(tmp_path, tiny_cfg, data_cfg):
    """A ZeRO-0 layout checkpoint folder of the tiny model, and the model."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    run_config = {"model": tiny_cfg, "data": data_cfg, "recipe": {"name": "mc3_vq"}}
    return write_checkpoint(tmp_path / "checkpoint", model, run_config), model


def test_crafted_pickle_runs_code_under_a_plain_load(tmp_path):
    path, marker = tmp_path / "bad.pt", tmp_path / "marker"
    torch.save({"module": {}, "extra": WritesMarker(str(marker))}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()  # the threat is real: the checks below are not vacuous


def test_crafted_checkpoint_is_refused_and_never_runs(checkpoint, tmp_path):
    folder, model = checkpoint
    marker = tmp_path / "marker"
    torch.save({"module": model.state_dict(), "extra": WritesMarker(str(marker))}, model_states_file(folder))
    write_manifest(folder, 0, 1)  # a hostile file in an otherwise complete checkpoint

    with pytest.raises(UnsafeCheckpointError, match=r"mp_rank_00_model_states\.pt holds \['posix\.system'\]") as err:
        load_model_state(folder)
    assert "was not unpickled" in str(err.value)
    with pytest.raises(UnsafeCheckpointError):
        load_trained(folder)  # what evaluation, export and load_model call
    assert not marker.exists()


def test_plain_checkpoint_loads_every_tensor(checkpoint):
    folder, model = checkpoint
    state = load_model_state(folder)
    expected = model.state_dict()
    assert list(state) == list(expected)
    for name, value in expected.items():
        assert state[name].dtype == value.dtype and torch.equal(state[name], value), name


def test_bf16_states_come_back_as_fp32(checkpoint):
    folder, model = checkpoint
    halved = {name: value.to(torch.bfloat16) if value.is_floating_point() else value for name, value in model.state_dict().items()}
    torch.save({"module": halved}, model_states_file(folder))
    state = load_model_state(folder)
    assert state["codes.quantizer.embed"].dtype == torch.float32
    assert torch.equal(state["codes.quantizer.embed"], halved["codes.quantizer.embed"].float())
    assert state["codes.quantizer.num_updates"].dtype == torch.int64


def test_a_run_dir_resolves_to_its_export_when_present_else_its_checkpoint(tmp_path, checkpoint):
    folder, _ = checkpoint
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.txt").write_text(f"{folder}\n")
    assert resolve_trained(str(run_dir)) == folder
    assert resolve_trained(folder) == folder
    assert resolve_trained("s3://bucket/checkpoint") == "s3://bucket/checkpoint"

    (run_dir / RUN_DIR_EXPORT).mkdir()
    (run_dir / RUN_DIR_EXPORT / EXPORT_CONFIG_FILE).write_text(json.dumps({}))
    assert resolve_trained(str(run_dir)) == str(run_dir / RUN_DIR_EXPORT)

    (run_dir / "checkpoint.txt").write_text("None\n")
    (run_dir / RUN_DIR_EXPORT / EXPORT_CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="checkpoint.txt names no checkpoint"):
        resolve_trained(str(run_dir))


def test_missing_folder_and_foreign_folder_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_trained(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "step_00000001").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="neither an export"):
        load_model_state(str(tmp_path / "empty"))


def test_an_incomplete_checkpoint_is_named_with_what_it_lacks(checkpoint):
    """The completeness check (mmdist.models.checkpoint.require_complete) on what a cut-short write or
    upload leaves: a truncated file, a rank's missing manifest, no manifest at all. A worker really
    killed mid-checkpoint: tests/train/test_checkpoint_faults.py."""
    from mmdist.models.checkpoint import IncompleteCheckpointError, manifest_name, require_complete_uri

    folder, _ = checkpoint
    assert require_complete_uri(folder)["world_size"] == 1
    path = model_states_file(folder)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(IncompleteCheckpointError, match=f"{folder} is an incomplete checkpoint: step_00000000/"
                       f"mp_rank_00_model_states.pt \\(rank 0\\) has {size // 2} of {size} bytes"):
        load_trained(folder)
    write_manifest(folder, 0, 2)  # as if rank 0 of 2: rank 1's part never arrived
    with pytest.raises(IncompleteCheckpointError, match="rank 1 of 2 wrote no mmdist_manifest_rank1.json"):
        require_complete_uri(folder)
    os.remove(os.path.join(folder, manifest_name(0)))
    with pytest.raises(IncompleteCheckpointError, match=r"no mmdist_manifest_rank\*\.json"):
        require_complete_uri(folder)
