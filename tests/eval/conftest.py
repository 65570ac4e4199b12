"""Fixtures of the evaluation tests.

* `untrained_eval`: the learning run's starting point (same config, same seed), saved as a
  checkpoint and evaluated on the held-out world by `jobs/evaluate.py` (2 extraction actors), which
  logs into an MLflow run (`logging.mlflow.run_id`) made for it.
* `trained_eval`: the learning run (`learned_run` in tests/conftest.py: 120 steps of mc3_vq)
  evaluated by `mmdist.eval.evaluate`; evaluation decodes as the checkpoint's run did.

`pytest tests/eval` runs alone: `learned_run` and `learning_worlds` are session fixtures of
tests/conftest.py, which pytest loads for every test under tests/, so the first test that needs the
learning run trains it (once per session, shared with tests/train and tests/jobs in the whole suite).
Only tests marked `slow` use these fixtures: `pytest tests/eval -m "not slow"` trains nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import ray
import torch

from mmdist.tracking import experiment, mlflow_client
from tests.conftest import learning_run_overrides, load_job_cfg

REPO = Path(__file__).resolve().parents[2]

def write_checkpoint(folder, model: torch.nn.Module, run_config: dict) -> str:
    """A checkpoint folder in the layout a ZeRO-0 DeepSpeed run writes (`latest`, the tag folder with
    `mp_rank_00_model_states.pt` holding {"module": state}) plus the run config and the manifest of
    its one rank: what `mmdist.models.checkpoint` reads. For models that were never trained (no engine
    needed). A test that rewrites a file afterwards calls `write_manifest(folder, 0, 1)` again."""
    from mmdist.models.checkpoint import RUN_CONFIG_FILE, write_manifest

    tag = "step_00000000"
    os.makedirs(os.path.join(folder, tag), exist_ok=True)
    torch.save({"module": model.state_dict()}, os.path.join(folder, tag, "mp_rank_00_model_states.pt"))
    with open(os.path.join(folder, "latest"), "w") as handle:
        handle.write(tag)
    with open(os.path.join(folder, RUN_CONFIG_FILE), "w") as handle:
        json.dump(run_config, handle)
    write_manifest(str(folder), rank=0, world_size=1, step=0, tag=tag, zero_stage=0)
    return str(folder)


def eval_overrides(data_path: str, run_dir: Path) -> list[str]:
    # PCA for the codebook map: t-SNE costs seconds the test budget does not have
    return [f"data.path={data_path}", f"run_dir={run_dir}", "eval.report.map_method=pca"]


@pytest.fixture(scope="session")
def untrained_eval(ray_session, learning_worlds, tmp_path_factory) -> types.SimpleNamespace:
    """.run_dir, .metrics, .model (eval mode), .run_config of the untrained model's evaluation."""
    root = tmp_path_factory.mktemp("untrained")
    run_config = load_job_cfg("train", tuple(learning_run_overrides(learning_worlds["train"], root / "unused")))
    torch.manual_seed(run_config["seed"])  # as the trainer seeds before building the model
    from mmdist.models import build_model

    model = build_model(run_config["model"], run_config["data"]).eval()
    checkpoint = write_checkpoint(root / "checkpoint", model, run_config)
    # an MLflow run for the job to log into, as a training run with logging.mlflow.enabled leaves one
    mlflow_uri = f"file://{root / 'mlruns'}"
    client = mlflow_client(mlflow_uri)
    mlflow_run = client.create_run(experiment(client, "mmdist-test")).info.run_id
    command = [
        sys.executable, "jobs/evaluate.py", f"checkpoint={checkpoint}", *eval_overrides(learning_worlds["held_out"], root / "eval"),
        f"ray.address={ray.get_runtime_context().gcs_address}",  # this session's Ray: no second start-up
        f"logging.mlflow.run_id={mlflow_run}", f"logging.mlflow.tracking_uri={mlflow_uri}",
    ]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    return types.SimpleNamespace(run_dir=root / "eval", metrics=metrics, model=model, run_config=run_config,
                                 stdout=done.stdout, stderr=done.stderr, mlflow=(mlflow_uri, mlflow_run))


@pytest.fixture(scope="session")
def trained_eval(learned_run, learning_worlds, tmp_path_factory) -> types.SimpleNamespace:
    """.run_dir, .metrics of the learning run (tests/conftest.py) evaluated on the held-out world."""
    from mmdist.eval import evaluate

    eval_dir = tmp_path_factory.mktemp("trained-eval")
    cfg = load_job_cfg("evaluate", ("checkpoint=unused", *eval_overrides(learning_worlds["held_out"], eval_dir), "eval.extract.actors=1"))
    # the training run_dir as checkpoint: its checkpoint.txt names the checkpoint, its history is plotted
    metrics = evaluate(str(learned_run.run_dir), cfg["data"], cfg["storage"], cfg["eval"], str(eval_dir))
    return types.SimpleNamespace(run_dir=eval_dir, metrics=metrics)
