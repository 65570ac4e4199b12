"""End-to-end: the ecosystem preset (model=tv_tiny: torchvision S3D, a 2-D ResNet-18 on log-mel, an
open_clip text tower on CLIP BPE ids) trains on the local Ray cluster with real DeepSpeed engines,
its video backbone loaded from a local safetensors file (model.video.weights)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mmdist.models import build_model
from mmdist.models.checkpoint import load_model_state
from mmdist.train import fit
from tests.train.test_fit import read_metrics, train_cfg

pytestmark = pytest.mark.slow
STEPS = 2


def test_tv_tiny_trains_from_a_pretrained_video_file(ray_session, synthetic_dir, tmp_path):
    cfg = train_cfg(
        synthetic_dir, tmp_path, "model=tv_tiny", "data.text.tokenizer=clip_bpe",
        f"trainer.max_steps={STEPS}", f"trainer.checkpoint_every={STEPS}",
    )
    # "pretrained" weights: another seed's initialisation, so that loading them is visible
    torch.manual_seed(123)
    pretrained = build_model(dict(cfg.model), dict(cfg.data)).encoders["video"].backbone
    weights = {name: value.detach().clone() for name, value in pretrained.named_parameters()}
    save_file(pretrained.state_dict(), tmp_path / "s3d.safetensors")
    cfg.model.video.weights = str(tmp_path / "s3d.safetensors")

    summary = fit(cfg)

    metrics = read_metrics(tmp_path)
    assert [entry["step"] for entry in metrics["history"]] == list(range(1, STEPS + 1))
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in metrics["history"])
    # the trained video backbone sits within a few optimiser steps of the file's weights (AdamW moves
    # each weight by about lr per step), and far from the run's own seed-0 initialisation
    state = load_model_state(summary["checkpoint"])
    trained = {name: state[f"encoders.video.backbone.{name}"] for name in weights}
    torch.manual_seed(cfg.seed)
    fresh = build_model(dict(cfg.model), dict(cfg.data)).encoders["video"].backbone.state_dict()
    moved = max(float((trained[name] - weights[name]).abs().max()) for name in weights)
    from_init = max(float((fresh[name] - weights[name]).abs().max()) for name in weights)
    assert moved < 3 * STEPS * cfg.trainer.lr < from_init / 10
    step_s = cfg.data.batch_size / metrics["history"][-1]["clips_per_s"]
    print(f"[tv_tiny] {step_s:.2f} s per step of {cfg.data.batch_size} clips on {cfg.trainer.num_workers} CPU workers")
