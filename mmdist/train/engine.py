"""DeepSpeed engine set-up and checkpoints, on the process group Ray Train created.

Precision: `trainer.precision: bf16` uses DeepSpeed's `torch_autocast` mode (fp32 master weights and
buffers, bf16 matmuls). DeepSpeed's `bf16` mode would cast every buffer, the VQ codebook included, to
bf16, and SPEC 8.8 asks for fp32 quantisation; autocast also runs on CPU with ZeRO 0-3 (checked here).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from typing import Any

import torch

from mmdist.models.checkpoint import (
    MANIFEST_PREFIX,
    IncompleteCheckpointError,
    RUN_CONFIG_FILE,
    deepspeed_weights_only,
    latest_tag,
    load_model_state,
    read_manifests,
    require_complete,
    write_manifest,
)

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
    one checkpoint directory in the run's storage (local or s3://), through `checkpoint_uploader`.
    Rank 0 adds the run's config (secrets redacted), so evaluation and warm start can rebuild the
    model from the folder alone. Each rank's manifest (mmdist.models.checkpoint.write_manifest),
    written last, lists its files: a folder missing any part of any rank is refused on resume and
    by evaluation.
    """
    from ray.train import Checkpoint

    folder = tempfile.mkdtemp(prefix=f"mmdist-ckpt-{step}-")
    tag = f"step_{step:08d}"
    engine.save_checkpoint(folder, tag=tag, client_state=dict(client_state, step=step))
    if engine.global_rank == 0:
        with open(os.path.join(folder, RUN_CONFIG_FILE), "w") as handle:
            json.dump(run_config, handle, indent=1)
    write_manifest(folder, engine.global_rank, engine.world_size, step=step, tag=tag,
                   zero_stage=engine.zero_optimization_stage())
    return Checkpoint.from_directory(folder)


def parse_fault(spec: str | None) -> dict | None:
    """`trainer.fault_injection` ("rank=1 step=4 files=2", tests only) as {"rank": 1, "step": 4, "files": 2}."""
    if not spec:
        return None
    fault = dict(item.split("=", 1) for item in spec.split())
    if set(fault) != {"rank", "step", "files"}:
        raise ValueError(f"trainer.fault_injection must be 'rank=R step=S files=N', got {spec!r}")
    return {key: int(value) for key, value in fault.items()}


def checkpoint_uploader(fault: dict | None = None):
    """`ray.train.report(checkpoint_upload_fn=...)`: copies a rank's checkpoint folder into the run's
    storage file by file, its manifest last, and returns the stored checkpoint (what Ray's own upload,
    one `pyarrow.fs.copy_files` of the folder, returns, but in an order that makes the manifest mean
    "this rank's files are all there"). `fault` (parse_fault, tests only): that rank SIGKILLs itself
    once it has uploaded that many files of that step's checkpoint, a real kill in mid-upload."""

    def upload(checkpoint, checkpoint_dir_name: str):
        import pyarrow.fs as pafs
        import ray.train

        storage = ray.train.get_context().get_storage()
        filesystem = storage.storage_filesystem
        destination = storage.build_checkpoint_path_from_name(checkpoint_dir_name)
        filesystem.create_dir(destination)
        names = []
        for root, _, files in os.walk(checkpoint.path):
            names += [os.path.relpath(os.path.join(root, name), checkpoint.path) for name in files]
        names.sort(key=lambda name: (name.startswith(MANIFEST_PREFIX), name))
        kill_after = _files_before_kill(fault, checkpoint.path)
        for count, name in enumerate(names, start=1):
            filesystem.create_dir(os.path.dirname(f"{destination}/{name}"))
            pafs.copy_files(os.path.join(checkpoint.path, name), f"{destination}/{name}",
                            destination_filesystem=filesystem, use_threads=False, chunk_size=64 * 2**20)
            if count == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        return ray.train.Checkpoint(filesystem=filesystem, path=destination)

    return upload


def _files_before_kill(fault: dict | None, folder: str) -> int | None:
    if fault is None:
        return None
    manifests = [name for name in os.listdir(folder) if name.startswith(MANIFEST_PREFIX)]
    with open(os.path.join(folder, manifests[0])) as handle:
        manifest = json.load(handle)
    if (manifest["rank"], manifest["step"]) != (fault["rank"], fault["step"]):
        return None
    if fault["files"] == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # written locally, nothing uploaded
    return fault["files"]


def resume_checkpoint() -> tuple[Any, dict | None, list[str]]:
    """(checkpoint, its rank-0 manifest, lines to log) a starting worker group resumes from, the same on
    every rank: the newest complete checkpoint folder (by step) in the run's storage; (None, None, ...)
    for a fresh run. Call on every rank before the first report.

    Ray Train hands back the last checkpoint it registered (`ray.train.get_checkpoint`), and registers
    one once its controller has collected every rank's report of it. A worker killed around a
    checkpoint leaves two things Ray does not know:
    - a folder some rank did not finish (Ray deletes only folders it registered): rank 0 deletes it.
      A folder Ray registered is never deleted here, complete or not (one written before manifests
      existed has none: it is not resumed from, and if Ray would resume from such a one, the run fails
      naming it);
    - a complete folder whose reports the controller had not collected from every rank when one died
      (it polls every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default): it is resumed from when it
      is the newest."""
    import pyarrow.fs as pafs
    import ray.train
    from ray.train import CheckpointConsistencyMode
    from ray.train.collective import broadcast_from_rank_zero

    context = ray.train.get_context()
    storage = context.get_storage()
    filesystem = storage.storage_filesystem
    choice, lines = None, []
    if context.get_world_rank() == 0:
        registered = {entry.checkpoint.path.rstrip("/") for entry in
                      ray.train.get_all_reported_checkpoints(CheckpointConsistencyMode.COMMITTED, timeout_s=300)}
        listing = filesystem.get_file_info(pafs.FileSelector(storage.experiment_fs_path, allow_not_found=True))
        folders = sorted(info.path.rstrip("/") for info in listing
                         if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"))
        for path in folders:
            manifests, gaps = read_manifests(filesystem, path)
            if not gaps:
                if choice is None or manifests[0]["step"] >= choice[1]["step"]:
                    choice = (path, manifests[0])
            elif path not in registered:
                filesystem.delete_dir(path)
                lines.append(f"[resume] removed {path}, a checkpoint cut short while written or uploaded: {gaps[0]}")
            else:
                lines.append(f"[resume] ignored {path}: {gaps[0]}")
        latest = ray.train.get_checkpoint()
        if choice is None and latest is not None:  # Ray would resume from it, but nothing complete is there
            try:
                require_complete(filesystem, latest.path, latest.path)
            except IncompleteCheckpointError as err:
                choice = str(err)  # raised on every rank below
        elif choice is not None and choice[0] not in registered:
            lines.append(f"[resume] {choice[0]} (step {choice[1]['step']}) is complete but was not registered by Ray "
                         f"Train (a worker died before its controller collected every rank's report); resuming from it")
    choice = broadcast_from_rank_zero(choice)
    if isinstance(choice, str):
        raise IncompleteCheckpointError(choice)
    if choice is None:
        return None, None, lines
    return ray.train.Checkpoint(filesystem=filesystem, path=choice[0]), choice[1], lines


def load_checkpoint(engine, checkpoint) -> dict:
    """Restore engine state (model, optimizer, scheduler) from a reported checkpoint; returns client state.

    Every file is read weights-only (mmdist.models.checkpoint.deepspeed_weights_only): a checkpoint that
    would run code as it unpickles raises UnsafeCheckpointError instead of resuming."""
    with checkpoint.as_directory() as folder, deepspeed_weights_only(folder):
        path, client_state = engine.load_checkpoint(folder, tag=None)
    if path is None:
        raise RuntimeError(f"no DeepSpeed checkpoint found in {checkpoint.path}")
    return client_state


def read_for_another_world(checkpoint) -> tuple[dict, dict]:
    """What a run resumes from when its world size differs from the checkpoint's under ZeRO 1-3:
    (the consolidated fp32 model state, parameters and buffers; what DeepSpeed saved beside the
    module on rank 0: the LR scheduler, its step counters and our client state).

    DeepSpeed 0.19 refuses to load ZeRO optimizer partitions into another data-parallel world size
    (`DeepSpeedEngine._load_zero_checkpoint`: "Automatic adjustment of ZeRO's optimizer state
    partitioning with a new world size is not currently supported"); the weights are consolidated
    instead (ZeRO-3 shards through deepspeed.utils.zero_to_fp32) and the optimizer state restarts."""
    with checkpoint.as_directory() as folder:
        weights = load_model_state(folder)
        tag_dir = os.path.join(folder, latest_tag(folder))
        names = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
        path = next(os.path.join(tag_dir, name) for name in names if os.path.exists(os.path.join(tag_dir, name)))
        with deepspeed_weights_only(folder):
            saved = torch.load(path, map_location="cpu")
    saved.pop("module", None)
    return weights, saved


def restore_engine_state(engine, saved: dict) -> dict:
    """The LR schedule and step counters of `read_for_another_world` into a fresh engine; returns the
    saved state (our client state is in it: step, history, kmeans)."""
    engine.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    # the optimizer's learning rate of that iteration (a restored optimizer state would carry it)
    engine.lr_scheduler.step(engine.lr_scheduler.last_batch_iteration)
    engine.global_steps, engine.global_samples = saved["global_steps"], saved["global_samples"]
    return saved
