"""Fixtures of the evaluation tests.

* `ray_session`: one local Ray for the session, started as the jobs start it.
* `worlds`: a 160-clip training world and a 64-clip held-out world of another seed.
* `untrained_eval`: the trained model's starting point (same config, same seed), saved as a
  checkpoint and evaluated on the held-out world by `jobs/evaluate.py` (2 extraction actors).
* `trained_eval`: a 120-step mc3_vq run (`mmdist.train.fit`) evaluated by `mmdist.eval.evaluate`.

Frames are decoded smaller than the defaults (32 x 32 crops of 40 x 40: a quarter of the pixels)
so that 120 training steps fit the test budget; evaluation decodes as the checkpoint's run did.
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

from mmdist.runtime import init_ray
from tests.conftest import load_job_cfg

REPO = Path(__file__).resolve().parents[2]
HELD_OUT_CLIPS = 64


@pytest.fixture(autouse=True)
def one_thread():
    """The machine is shared: keep torch to one intra-op thread in tests."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ray_session():
    init_ray({"address": None, "num_cpus": 4})
    yield
    ray.shutdown()


def write_checkpoint(folder, model: torch.nn.Module, run_config: dict) -> str:
    """A checkpoint folder in the layout a ZeRO-0 DeepSpeed run writes (`latest`, the tag folder with
    `mp_rank_00_model_states.pt` holding {"module": state}) plus the run config: what
    `mmdist.models.checkpoint` reads. For models that were never trained (no engine needed)."""
    from mmdist.models.checkpoint import RUN_CONFIG_FILE

    tag = "step_00000000"
    os.makedirs(os.path.join(folder, tag), exist_ok=True)
    torch.save({"module": model.state_dict()}, os.path.join(folder, tag, "mp_rank_00_model_states.pt"))
    with open(os.path.join(folder, "latest"), "w") as handle:
        handle.write(tag)
    with open(os.path.join(folder, RUN_CONFIG_FILE), "w") as handle:
        json.dump(run_config, handle)
    return str(folder)


def train_overrides(data_path: str, run_dir: Path) -> list[str]:
    return [
        f"data.path={data_path}", f"run_dir={run_dir}", "recipe=mc3_vq", "seed=0",
        "data.video.resize=40", "data.video.size=32", "data.batch_size=32",
        "trainer.num_workers=1", "trainer.cpus_per_worker=1", "trainer.max_steps=120", "trainer.report_every=40",
        "trainer.checkpoint_every=120", "trainer.warmup_steps=10", "trainer.lr=3e-3", "recipe.align_steps=60",
    ]


def eval_overrides(data_path: str, run_dir: Path) -> list[str]:
    # PCA for the codebook map: t-SNE costs seconds the test budget does not have
    return [f"data.path={data_path}", f"run_dir={run_dir}", "eval.report.map_method=pca"]


@pytest.fixture(scope="session")
def worlds(tmp_path_factory) -> dict[str, str]:
    from mmdist.data.synthetic import generate_world

    root = tmp_path_factory.mktemp("eval-worlds")
    cfg = load_job_cfg("make_dataset", ("rows_per_shard=32",))
    generate_world(str(root / "train"), num_clips=160, seed=1, cfg=cfg)
    generate_world(str(root / "held_out"), num_clips=HELD_OUT_CLIPS, seed=2, cfg=cfg)  # another seed: unseen clips
    return {"train": str(root / "train"), "held_out": str(root / "held_out")}


@pytest.fixture(scope="session")
def untrained_eval(ray_session, worlds, tmp_path_factory) -> types.SimpleNamespace:
    """.run_dir, .metrics, .model (eval mode), .run_config of the untrained model's evaluation."""
    root = tmp_path_factory.mktemp("untrained")
    run_config = load_job_cfg("train", tuple(train_overrides(worlds["train"], root / "unused")))
    torch.manual_seed(run_config["seed"])  # as the trainer seeds before building the model
    from mmdist.models import build_model

    model = build_model(run_config["model"], run_config["data"]).eval()
    checkpoint = write_checkpoint(root / "checkpoint", model, run_config)
    command = [
        sys.executable, "jobs/evaluate.py", f"checkpoint={checkpoint}", *eval_overrides(worlds["held_out"], root / "eval"),
        f"ray.address={ray.get_runtime_context().gcs_address}",  # this session's Ray: no second start-up
    ]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    return types.SimpleNamespace(run_dir=root / "eval", metrics=metrics, model=model, run_config=run_config, stdout=done.stdout)


@pytest.fixture(scope="session")
def trained_eval(ray_session, worlds, tmp_path_factory) -> types.SimpleNamespace:
    """.run_dir, .metrics of a 120-step mc3_vq run evaluated on the held-out world."""
    from hydra import compose, initialize_config_dir

    from mmdist.eval import evaluate
    from mmdist.train import fit

    train_dir, eval_dir = tmp_path_factory.mktemp("trained"), tmp_path_factory.mktemp("trained-eval")
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        fit(compose("train", overrides=train_overrides(worlds["train"], train_dir)))
    cfg = load_job_cfg("evaluate", ("checkpoint=unused", *eval_overrides(worlds["held_out"], eval_dir), "eval.extract.actors=1"))
    # the training run_dir as checkpoint: its checkpoint.txt names the checkpoint, its history is plotted
    metrics = evaluate(str(train_dir), cfg["data"], cfg["storage"], cfg["eval"], str(eval_dir))
    return types.SimpleNamespace(run_dir=eval_dir, metrics=metrics)
