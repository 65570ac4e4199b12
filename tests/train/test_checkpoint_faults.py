"""A worker killed while a checkpoint is being written (issue 12, item 2), with real Ray, DeepSpeed,
files and a moto S3 server.

`trainer.fault_injection` makes rank 1 SIGKILL itself while step 2's checkpoint is on its way to
storage: after writing it locally, before uploading anything (local storage, ZeRO-3), or after
uploading its optimizer shard, before its manifest (S3, ZeRO-1). The run fails (max_failures=0) and leaves the step-2 folder partial; then:
- evaluation pointed at that folder fails before Ray starts, naming the folder and what is missing;
- the run started again resumes from step 1 (the last complete checkpoint), deletes the partial
  folder and finishes. The local case resumes with 1 worker under ZeRO-3 (a node lost for good:
  the checkpoint of 2 workers is consolidated, mmdist.train.engine.read_for_another_world).
"""

from __future__ import annotations

import glob
import json
import os
import re
import types

import pyarrow.fs as pafs
import pytest
import torch
from hydra import compose, initialize_config_dir

from mmdist.data.storage import resolve_filesystem
from mmdist.eval.job import check_eval_inputs
from mmdist.models.checkpoint import IncompleteCheckpointError, deepspeed_weights_only, local_checkpoint_dir, read_manifests
from mmdist.train import fit
from tests.conftest import CONFIG_DIR, load_job_cfg
from tests.test_entry_points import assert_fails_with_one_line, run_job

pytestmark = pytest.mark.slow

CASES = {
    # storage, ZeRO stage, files rank 1 uploads before it is killed, workers of the run started again
    "local": types.SimpleNamespace(storage="local", zero_stage=3, files=0, resume_workers=1),
    "s3": types.SimpleNamespace(storage="s3", zero_stage=1, files=1, resume_workers=2),
}


def overrides(data_path: str, run_dir, storage_path: str, case, *extra: str) -> list[str]:
    return [
        f"data.path={data_path}", f"run_dir={run_dir}", f"trainer.storage_path={storage_path}",
        "data.batch_size=8", "trainer.max_steps=2", "trainer.report_every=1", "trainer.checkpoint_every=1",
        "trainer.warmup_steps=1", f"trainer.zero_stage={case.zero_stage}", "trainer.max_failures=0", *extra,
    ]


def checkpoint_folders(storage_path: str, endpoint_url: str | None) -> dict[str, list[str]]:
    """{checkpoint folder URI: what it lacks} under the run's storage (run name mmdist)."""
    filesystem, root = resolve_filesystem(f"{storage_path}/mmdist", endpoint_url)
    scheme = "s3://" if storage_path.startswith("s3://") else ""
    listing = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return {
        f"{scheme}{info.path}": read_manifests(filesystem, info.path)[1]
        for info in listing if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_")
    }


def stored_history(uri: str, endpoint_url: str | None) -> list[dict]:
    """The metrics history a checkpoint holds (our client state in DeepSpeed's model states file)."""
    folder = local_checkpoint_dir(uri, endpoint_url)
    path = sorted(glob.glob(os.path.join(folder, "step_*", "*model_states.pt")))[0]
    with deepspeed_weights_only(folder):
        return torch.load(path, map_location="cpu")["history"]


def train(case, args: list[str], run_dir) -> dict | None:
    """One training run: in this process on the test session's Ray (local storage), or as the job in a
    subprocess with its own Ray (S3: the workers need the AWS variables, which the session's Ray predates;
    moto refuses unsigned requests). Returns the run's summary, or None when it failed."""
    if case.storage == "local":
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=args)
        try:
            return fit(cfg)
        except Exception as err:  # the kill: Ray Train reports the worker group's death, nothing else
            assert "The actor died unexpectedly" in str(err), repr(err)
            return None
    result = run_job("train.py", *args)
    if result.returncode != 0:
        assert "The actor died unexpectedly" in result.stdout + result.stderr, result.stderr[-3000:]
        return None
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_worker_killed_while_writing_a_checkpoint(request, synthetic_dir, tmp_path, name):
    case = CASES[name]
    endpoint_url = None
    if case.storage == "local":
        request.getfixturevalue("ray_session")
        storage_path = str(tmp_path / "checkpoints")
    else:
        storage_path = f"{request.getfixturevalue('s3_env')}/checkpoints"
        endpoint_url = request.getfixturevalue("s3_server").endpoint_url
    fault = f"trainer.fault_injection='rank=1 step=2 files={case.files}'"

    assert train(case, overrides(synthetic_dir, tmp_path / "killed", storage_path, case, fault), tmp_path / "killed") is None
    folders = checkpoint_folders(storage_path, endpoint_url)
    complete = [uri for uri, gaps in folders.items() if not gaps]
    partial = [uri for uri, gaps in folders.items() if gaps]
    assert len(complete) == 1 and len(partial) == 1, folders
    # rank 1's manifest never arrived; rank 0's may not have either (Ray stops rank 0 when rank 1 dies)
    gap = folders[partial[0]][0]
    assert gap in ("rank 1 of 2 wrote no mmdist_manifest_rank1.json", "no mmdist_manifest_rank*.json (each rank writes its manifest last)"), gap
    step_one = stored_history(complete[0], endpoint_url)
    assert [entry["step"] for entry in step_one] == [1]

    # evaluation of the partial folder: one line naming it and what it lacks, before Ray starts
    eval_cfg = load_job_cfg("evaluate", (f"data.path={synthetic_dir}", f"checkpoint={partial[0]}"))
    with pytest.raises(IncompleteCheckpointError, match=re.escape(f"checkpoint='{partial[0]}' is an incomplete checkpoint: {gap}")):
        check_eval_inputs(eval_cfg)
    if case.storage == "local":  # the job itself, once (its S3 case is the same check)
        result = run_job("evaluate.py", f"checkpoint={partial[0]}", f"data.path={synthetic_dir}", f"run_dir={tmp_path}/eval")
        assert_fails_with_one_line(result, f"checkpoint='{partial[0]}' is an incomplete checkpoint: {gap}")

    # started again (same run name and storage): resumes from step 1, never from the partial step 2
    again = overrides(synthetic_dir, tmp_path / "again", storage_path, case, f"trainer.num_workers={case.resume_workers}")
    summary = train(case, again, tmp_path / "again")
    assert summary is not None
    assert [entry["step"] for entry in summary["history"]] == [1, 2]
    assert summary["history"][0] == step_one[0]  # restored, not re-run (timing figures differ between runs)
    folders = checkpoint_folders(storage_path, endpoint_url)
    assert partial[0] not in folders  # the partial folder is gone
    assert all(not gaps for gaps in folders.values()), folders
    assert summary["checkpoint"] in folders and summary["checkpoint"] != partial[0]
    assert stored_history(summary["checkpoint"], endpoint_url) == summary["history"]
