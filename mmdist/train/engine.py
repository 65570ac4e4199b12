"""DeepSpeed engine set-up and checkpoints, on the process group Ray Train created.

Precision: `trainer.precision: bf16` uses DeepSpeed's `torch_autocast` mode (fp32 master weights and
buffers, bf16 matmuls). DeepSpeed's `bf16` mode would cast every buffer, the VQ codebook included, to
bf16, and SPEC 8.8 asks for fp32 quantisation; autocast also runs on CPU with ZeRO 0-3 (checked here).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch

from mmdist.models.checkpoint import RUN_CONFIG_FILE, deepspeed_weights_only

PRECISIONS = ("fp32", "bf16")


def micro_batch_size(global_batch: int, world_size: int, grad_accum_steps: int) -> int:
    """Clips per worker per forward: `data.batch_size` is the global batch of one optimizer step."""
    per_step = world_size * grad_accum_steps
    if global_batch % per_step:
        raise ValueError(
            f"data.batch_size={global_batch} is not divisible by trainer.num_workers x "
            f"trainer.grad_accum_steps = {world_size} x {grad_accum_steps}"
        )
    return global_batch // per_step


def deepspeed_config(trainer_cfg: dict, micro_batch: int) -> dict:
    """The DeepSpeed JSON config a trainer config declares (ZeRO stage, precision, clipping, schedule)."""
    stage = trainer_cfg["zero_stage"]
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"trainer.zero_stage must be 0, 1, 2 or 3, got {stage!r}")
    precision = trainer_cfg["precision"]
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {PRECISIONS}, got {precision!r}")
    if not isinstance(trainer_cfg["warmup_steps"], int) or trainer_cfg["warmup_steps"] < 1:
        # DeepSpeed's WarmupCosineLR refuses 0 (inside the workers, after Ray has started)
        raise ValueError(f"trainer.warmup_steps must be an integer >= 1, got {trainer_cfg['warmup_steps']!r}")
    if trainer_cfg["nonfinite"] not in ("skip", "stop"):  # read in the workers: checked here, before Ray starts
        raise ValueError(f"trainer.nonfinite must be 'skip' or 'stop', got {trainer_cfg['nonfinite']!r}")
    zero: dict[str, Any] = {"stage": stage}
    if trainer_cfg["offload_optimizer"]:
        zero["offload_optimizer"] = {"device": "cpu"}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": trainer_cfg["grad_accum_steps"],
        # ZeRO 0: mmdist.train.loop.optimizer_step clips with torch's fused clip_grad_norm_, whose return
        # value is the norm it reports (one pass over the gradients instead of DeepSpeed's per-tensor
        # loop plus ours). ZeRO 1-3 partition the gradients: their optimizer clips and keeps the norm.
        "gradient_clipping": trainer_cfg["grad_clip"] if stage > 0 else 0.0,
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # progress is ours: one line per report
        "wall_clock_breakdown": False,
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": max(trainer_cfg["max_steps"], 1),
                "warmup_num_steps": trainer_cfg["warmup_steps"],
                "warmup_min_ratio": trainer_cfg["warmup_min_ratio"],
                "cos_min_ratio": trainer_cfg["min_lr_ratio"],
            },
        },
    }
    if precision == "bf16":
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return config


def build_engine(model: torch.nn.Module, trainer_cfg: dict, micro_batch: int):
    """`deepspeed.initialize` with a torch AdamW (no JIT op build on CPU, see ENVIRONMENT.md)."""
    import deepspeed

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= trainer_cfg["weight_decay_min_ndim"] else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": trainer_cfg["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=trainer_cfg["lr"],
        betas=tuple(trainer_cfg["betas"]),
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(trainer_cfg, micro_batch)
    )
    if trainer_cfg["zero_stage"] == 0 and engine.dp_world_size == 1:
        # one data-parallel rank: nothing to average, yet DeepSpeed would flatten every gradient,
        # all-reduce it with itself and copy it back at each step
        engine.enable_backward_allreduce = False
    return engine


def save_checkpoint(engine, step: int, client_state: dict, run_config: dict):
    """Write a DeepSpeed checkpoint on every rank and return it as a `ray.train.Checkpoint`.

    Each rank writes into its own temporary folder; Ray Train merges the folders of all ranks into
    one checkpoint directory in the run's storage (local or s3://). Rank 0 adds the run's config
    (secrets redacted), so evaluation and warm start can rebuild the model from the folder alone.
    """
    from ray.train import Checkpoint

    folder = tempfile.mkdtemp(prefix=f"mmdist-ckpt-{step}-")
    engine.save_checkpoint(folder, tag=f"step_{step:08d}", client_state=dict(client_state, step=step))
    if engine.global_rank == 0:
        with open(os.path.join(folder, RUN_CONFIG_FILE), "w") as handle:
            json.dump(run_config, handle, indent=1)
    return Checkpoint.from_directory(folder)


def load_checkpoint(engine, checkpoint) -> dict:
    """Restore engine state (model, optimizer, scheduler) from a reported checkpoint; returns client state.

    Every file is read weights-only (mmdist.models.checkpoint.deepspeed_weights_only): a checkpoint that
    would run code as it unpickles raises UnsafeCheckpointError instead of resuming."""
    with checkpoint.as_directory() as folder, deepspeed_weights_only(folder):
        path, client_state = engine.load_checkpoint(folder, tag=None)
    if path is None:
        raise RuntimeError(f"no DeepSpeed checkpoint found in {checkpoint.path}")
    return client_state
