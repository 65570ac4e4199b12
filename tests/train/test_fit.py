"""End-to-end training on a local Ray cluster with real DeepSpeed engines (2 CPU workers, gloo).

Each run is small (a few steps of the tiny model); what they check:
- every recipe runs under every ZeRO stage, writes metrics.json and a checkpoint that loads;
- a run restarted with the same run name resumes from its checkpointed step;
- a train worker killed with SIGKILL is restarted and the run finishes;
- 2 workers x b clips give the first-step loss and gradient norm of 1 worker x 2b clips;
- mc3_vq learns the synthetic world (loss falls, in-batch retrieval well above chance).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from hydra import compose, initialize_config_dir

from mmdist.models import build_model
from mmdist.train import fit
from mmdist.models.checkpoint import load_model_state, load_run_config
from tests.conftest import HELD_OUT_CLIPS, LEARNING_STEPS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
pytestmark = pytest.mark.slow


def train_cfg(data_path: str, run_dir: Path, *overrides: str):
    base = [
        f"data.path={data_path}",
        f"run_dir={run_dir}",
        "data.batch_size=8",
        "trainer.num_workers=2",
        "trainer.max_steps=3",
        "trainer.report_every=1",
        "trainer.checkpoint_every=3",
        "trainer.warmup_steps=1",
    ]
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=base + list(overrides))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("recipe", "zero_stage", "precision"),
    # mc3_vq under ZeRO 0 (fp32) is the learning run, test_mc3_vq_learns_the_synthetic_world
    [("mc3", 1, "bf16"), ("mcn", 2, "fp32"), ("mmv", 3, "fp32"), ("cmcm", 3, "bf16")],
)
def test_recipe_runs_under_zero_stage(ray_session, synthetic_dir, tmp_path, recipe, zero_stage, precision):
    cfg = train_cfg(
        synthetic_dir, tmp_path, f"recipe={recipe}", f"trainer.zero_stage={zero_stage}", f"trainer.precision={precision}"
    )
    summary = fit(cfg)

    metrics = read_metrics(tmp_path)
    assert [entry["step"] for entry in metrics["history"]] == [1, 2, 3]
    assert metrics["final"]["step"] == 3 and torch.isfinite(torch.tensor(metrics["final"]["loss"]))
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in metrics["history"])
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "checkpoint.txt").read_text().strip() == summary["checkpoint"]
    # the checkpoint holds every tensor of the model, ZeRO-3 shards consolidated
    state = load_model_state(summary["checkpoint"])
    assert load_run_config(summary["checkpoint"])["recipe"]["name"] == recipe
    model_keys = set(build_model(dict(cfg.model), dict(cfg.data)).state_dict())
    assert model_keys == set(state)


def test_restart_resumes_from_checkpointed_step(ray_session, synthetic_dir, tmp_path):
    first = fit(train_cfg(synthetic_dir, tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every=2"))
    assert first["final"]["step"] == 4
    # same run name and storage path, a longer schedule: continue at step 5, keep steps 1-4 as they were
    second = fit(train_cfg(synthetic_dir, tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2"))
    steps = [entry["step"] for entry in second["history"]]
    assert steps == [1, 2, 3, 4, 5, 6]
    # timing figures differ between any two executions: equality proves steps 1-4 were restored, not re-run
    assert second["history"][:4] == first["history"]
    assert second["checkpoint"] != first["checkpoint"]
    # started again when already finished (as a killed sweep's trial is): nothing to train, but the run
    # still reports its final metrics and a checkpoint, which Ray Train and Tune read
    third = fit(train_cfg(synthetic_dir, tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=2"))
    assert third["history"] == second["history"] and third["final"]["step"] == 6
    assert third["checkpoint"] != second["checkpoint"]  # reported anew (Tune's result of the trial)
    assert load_run_config(third["checkpoint"])["trainer"]["max_steps"] == 6


def test_worker_killed_with_sigkill_is_restarted_and_run_finishes(ray_session, synthetic_dir, tmp_path):
    cfg = train_cfg(
        synthetic_dir,
        tmp_path,
        "trainer.max_steps=16",
        "trainer.checkpoint_every=4",
        "trainer.report_every=4",
        "trainer.max_failures=1",
    )
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(fit(cfg)))
    runner.start()
    checkpoints = tmp_path / "checkpoints" / cfg.trainer.run_name
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint_*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(checkpoints.glob("checkpoint_*")), "no checkpoint was written before the kill"
    # this test's own local Ray runs under this process: another run on the machine is left alone
    victims = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in _cmdline(p)]
    assert victims, "no Ray Train worker process found"
    victims[0].send_signal(signal.SIGKILL)
    runner.join(timeout=600)
    assert not runner.is_alive()
    assert result["final"]["step"] == 16
    assert not victims[0].is_running()


def test_two_workers_match_one_worker_on_the_first_step(ray_session, synthetic_dir, tmp_path):
    # resize == size: the crop is the whole frame, so decoding has no randomness; 8 clips = one global batch
    # (one epoch per pass: with several, the two workers' first batches may come from different epochs).
    # mc3 (no codebook): in float32 a near-tie in the codebook's argmin can flip between the two runs;
    # the codebook path is checked exactly in float64 by tests/train/test_global_batch.py
    common = [
        "recipe=mc3", "recipe.align_steps=0", "trainer.max_steps=1", "data.limit=8", "data.shuffle_files=false",
        "data.epochs_per_pass=1", "data.video.resize=56", "data.video.size=56",
    ]
    two = fit(train_cfg(synthetic_dir, tmp_path / "two", "trainer.num_workers=2", *common))["final"]
    one = fit(train_cfg(synthetic_dir, tmp_path / "one", "trainer.num_workers=1", *common))["final"]
    for term in ("loss", "loss_info_nce", "loss_consensus"):
        assert two[term] == pytest.approx(one[term], rel=1e-5), term
    # a gather that dropped the cross-rank gradient sum would halve the gradient: the norm would show it
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


def test_mc3_vq_learns_the_synthetic_world(learned_run):
    """The shared learning run (tests/conftest.py): 120 steps of mc3_vq, 2 workers, ZeRO 0, fp32."""
    history = learned_run.summary["history"]
    assert history == read_metrics(learned_run.run_dir)["history"]
    first, last = history[0], history[-1]
    assert [entry["step"] for entry in history] == list(range(20, LEARNING_STEPS + 1, 20))
    assert last["loss"] < 0.7 * first["loss"]
    chance = 1 / 32
    assert last["r1_audio_video"] > 4 * chance
    assert last["r1_text_video"] > 4 * chance
    assert last["stage"] == 1  # refine reached
    # held-out clips of another seed, reported during training (what Tune's ASHA reads)
    assert last["val_clips"] == HELD_OUT_CLIPS
    assert last["val_mean_r5"] > 2 * (100 * 5 / HELD_OUT_CLIPS)  # R@5 in percent; chance is 5 of 64 candidates
    checkpoint = learned_run.summary["checkpoint"]
    assert (learned_run.run_dir / "checkpoint.txt").read_text().strip() == checkpoint
    assert load_run_config(checkpoint)["trainer"]["zero_stage"] == 0


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile
        return ""
