"""The per-worker training loop: one readable function that Ray Train runs on every worker.

setup (model, DeepSpeed engine, resume) -> for each step: next batch, forward (with a codebook, the
code distributions), gather the global batch, recipe loss, backward, step -> every `report_every`
steps one `ray.train.report`, with a DeepSpeed checkpoint every `checkpoint_every` steps. It is a
function of a plain config dict so that Ray Tune can wrap it.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import ray
import ray.train
import torch

from mmdist import dist

from mmdist.config import redact
from mmdist.contracts import ClipBatch
from mmdist.data.pipeline import LABEL_COLUMNS, decode_stats
from mmdist.eval.embed import embed_batch
from mmdist.eval.validation import validation_metrics
from mmdist.models import build_model, load_matching_state_dict, to_clip_batch
from mmdist.objectives import kmeans_from_recipe, recipe_loss, with_code_probs
from mmdist.models.checkpoint import load_model_state, local_checkpoint_dir
from mmdist.models.pretrained import load_pretrained
from mmdist.train.engine import (
    build_engine,
    checkpoint_uploader,
    load_checkpoint,
    micro_batch_size,
    parse_fault,
    read_for_another_world,
    restore_engine_state,
    resume_checkpoint,
    save_checkpoint,
)
from mmdist.train.gather import gather_outputs
from mmdist.train.sync_batchnorm import convert_to_global_batchnorm
from mmdist.train.metrics import StepTimer, in_batch_recall_at_1


def say(line: str) -> None:
    """One line on the worker's stdout, which Ray streams to the driver.

    Ray Train V2 patches `print` in its workers to log through the root logger and, since a Ray
    worker's sys.stdout is a wrapper, to print as well: every progress line reached the driver twice.
    The process's own stdout is left alone by that patch."""
    print(line, file=sys.__stdout__, flush=True)


def train_loop_per_worker(config: dict, metrics_log=None, decode_stats_name: str | None = None) -> None:
    """`config`: the run's resolved config (saved in its checkpoints). `metrics_log`: the run's MetricsLog
    actor, which rank 0 sends every report to; `decode_stats_name`: the training data's DecodeStats actor,
    whose dropped-record counts rank 0 reports (mmdist.train.fit passes both; None: not reported)."""
    trainer_cfg, recipe_cfg = config["trainer"], config["recipe"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    checkpoint, saved, lines = resume_checkpoint()  # the newest complete one; cut-short ones are deleted
    for line in lines:
        say(line)
    resized = saved is not None and saved["world_size"] != world and saved["zero_stage"] > 0
    weights, engine_state = read_for_another_world(checkpoint) if resized else (None, None)
    engine, micro_batch = setup_engine(config, world, log=rank == 0, weights=weights)
    # after each k-means fit every rank takes rank 0's centroids
    kmeans = kmeans_from_recipe(recipe_cfg, dim=config["model"]["embed_dim"], seed=config["seed"], agree=dist.broadcast_)

    step, history = 0, []
    if checkpoint is not None:
        state = restore_engine_state(engine, engine_state) if resized else load_checkpoint(engine, checkpoint)
        step, history = state["step"], state["history"]
        if kmeans is not None:
            kmeans.load_state_dict(state["kmeans"])
        if rank == 0:
            say(f"[resume] from step {step} ({checkpoint.path})")
            if resized:
                say(f"[resume] the checkpoint was written by {saved['world_size']} workers under ZeRO-{saved['zero_stage']}, "
                    f"this run has {world}: weights (consolidated fp32), learning-rate schedule and step restored; "
                    "the optimizer state (AdamW moments) restarts from zero, since DeepSpeed cannot re-partition "
                    "ZeRO optimizer state across world sizes")
    metrics_log = metrics_log if rank == 0 else None
    if metrics_log is not None and history:
        metrics_log.extend.remote(history)

    batches = _batches_forever(ray.train.get_dataset_shard("train"), micro_batch, engine.device)
    timer, sums = StepTimer(), defaultdict(float)
    max_steps, report_every = trainer_cfg["max_steps"], trainer_cfg["report_every"]
    global_batch = config["data"]["batch_size"]
    validation_every = config["validation"]["every"] if config["validation"]["path"] else 0
    skips = NonFiniteSkips(trainer_cfg["nonfinite"], trainer_cfg["max_consecutive_skips"])
    upload = checkpoint_uploader(parse_fault(trainer_cfg["fault_injection"]))

    def report(metrics: dict, saving: bool) -> None:
        """One `ray.train.report`, with a checkpoint of this step when `saving`."""
        client_state = {"history": history, "kmeans": kmeans.state_dict() if kmeans is not None else None}
        checkpoint = save_checkpoint(engine, step, client_state, redact(config)) if saving else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_fn=upload, delete_local_checkpoint_after_upload=True)

    if history and step >= max_steps:
        # Resumed from a finished run's last checkpoint that Ray never registered (its report was lost
        # when the run was killed): report it once more, so that Ray Train and Tune see the finished run.
        report(history[-1], saving=True)
    while step < max_steps:
        micro = 0
        while micro < trainer_cfg["grad_accum_steps"]:
            with timer.waiting():
                batch = next(batches)
            outcome = train_step(engine, batch, recipe_cfg, step, kmeans, trainer_cfg["grad_clip"], skips)
            if outcome is None:  # skipped: nothing moved; the micro-step is done again on the next batch
                continue
            micro += 1
            loss, terms, gathered, grad_norm = outcome
            if grad_norm is not None:  # accumulation boundary: one figure per optimizer step
                sums["grad_norm"] += grad_norm * trainer_cfg["grad_accum_steps"]
            for name, value in terms.items():
                sums[name] += float(value)
            sums["loss"] += float(loss.detach())
            for name, value in in_batch_recall_at_1(gathered).items():
                sums[name] += value
            sums["micro_steps"] += 1
        step += 1
        if step % report_every and step != max_steps:
            continue

        micro_steps = sums.pop("micro_steps")
        window = timer.lap()
        metrics = {name: total / micro_steps for name, total in sums.items()}
        metrics = dist.mean_across_ranks(metrics)
        metrics.update(
            step=step,
            lr=engine.get_lr()[0],
            clips_per_s=global_batch * micro_steps / trainer_cfg["grad_accum_steps"] / window["total_s"],
            data_wait_frac=window["wait_s"] / window["total_s"],
            nonfinite_skipped=skips.total,  # micro-steps skipped for a non-finite loss or gradient, so far
        )
        metrics.update(_codebook_usage(engine.module))
        if validation_every and (step % validation_every == 0 or step == max_steps):
            validation = _validate(engine, ray.train.get_dataset_shard("val"), config["validation"]["batch_size"])
            metrics.update(validation if rank == 0 else {})
        if rank == 0 and decode_stats_name is not None:
            metrics.update(_dropped_records(decode_stats_name))
        history.append(metrics)
        if rank == 0:
            say(_progress_line(metrics, max_steps))
            if metrics_log is not None:
                metrics_log.append.remote(metrics)
        report(metrics, saving=step % trainer_cfg["checkpoint_every"] == 0 or step == max_steps)
        sums = defaultdict(float)


def _batches_forever(shard, micro_batch: int, device) -> Iterator[ClipBatch]:
    """Epoch after epoch over this worker's shard; a fixed micro-batch size (the gather needs equal b).
    Ray Data's dicts of tensors become the model's ClipBatch here, where the loop receives them."""
    epoch = 0
    while True:
        produced = 0
        for columns in shard.iter_torch_batches(batch_size=micro_batch, drop_last=True, device=device):
            produced += 1
            yield to_clip_batch(columns)
        if produced == 0:
            raise RuntimeError(
                f"the training data gave no full batch of {micro_batch} clips in epoch {epoch}: "
                "lower data.batch_size or add data"
            )
        epoch += 1




def setup_engine(config: dict, world_size: int, log: bool = False, weights: dict | None = None):
    """The model (batch norms made global, warm-started if configured, or given `weights`: a checkpoint
    of another world size) inside a DeepSpeed engine; returns (engine, micro batch size per worker)."""
    trainer_cfg = config["trainer"]
    torch.manual_seed(config["seed"])  # identical initial weights on every rank
    if trainer_cfg["torch_threads"]:
        torch.set_num_threads(trainer_cfg["torch_threads"])
    # batch-norm statistics over the global batch, like every loss (SPEC Sec. 6)
    model = convert_to_global_batchnorm(build_model(config["model"], config["data"]))
    # pretrained backbones (model.<modality>.weights) first: a warm start from a run then overrides them
    for line in load_pretrained(model, config["model"], config["storage"]["endpoint_url"]):
        if log:
            say(line)
    if config["model"]["init_checkpoint"]:
        folder = local_checkpoint_dir(config["model"]["init_checkpoint"], config["storage"]["endpoint_url"])
        report = load_matching_state_dict(model, load_model_state(folder))
        if log:
            say(f"[warm start] {len(report['loaded'])} tensors loaded, skipped: {report['skipped']}")
    if weights is not None:
        model.load_state_dict(weights)  # before DeepSpeed partitions it (ZeRO-3)
    micro_batch = micro_batch_size(config["data"]["batch_size"], world_size, trainer_cfg["grad_accum_steps"])
    if model.codes is not None:
        # one codebook EMA step per optimizer step, on every micro-batch's statistics (optimizer_step)
        model.codes.quantizer.defer_updates = True
    return build_engine(model, trainer_cfg, micro_batch), micro_batch


class NonFiniteSkips:
    """`trainer.nonfinite`: what a non-finite loss (or, without ZeRO, gradient) does. `skip` drops the
    micro-step, counted, and fails after `max_consecutive` skips in a row; `stop` fails at once. The
    error names the step and the loss terms that went non-finite."""

    def __init__(self, mode: str, max_consecutive: int):
        if mode not in ("skip", "stop"):
            raise ValueError(f"trainer.nonfinite must be 'skip' or 'stop', got {mode!r}")
        self.mode, self.max_consecutive = mode, max_consecutive
        self.total = self.consecutive = 0

    def handle(self, step: int, culprits: list[str]) -> None:
        """Record one non-finite micro-step; raises when the config says to stop."""
        self.total += 1
        self.consecutive += 1
        message = f"step {step}: non-finite {', '.join(culprits)}"
        if self.mode == "stop":
            raise FloatingPointError(f"{message} (trainer.nonfinite=stop)")
        if self.consecutive > self.max_consecutive:
            raise FloatingPointError(f"{message}: {self.consecutive} micro-steps skipped in a row "
                                     f"(trainer.max_consecutive_skips={self.max_consecutive})")
        say(f"[train] {message}: micro-step skipped ({self.total} so far)")

    def ok(self) -> None:
        self.consecutive = 0


def train_step(engine, batch: ClipBatch, recipe_cfg: dict, step: int, kmeans, grad_clip: float, skips: NonFiniteSkips):
    """One micro-step: forward, gather the global batch, recipe loss, backward, optimizer step.

    Returns (loss, loss terms, the gathered outputs, the gradient norm at an accumulation boundary
    else None), or None when the micro-step was skipped for a non-finite loss or gradient: then no
    parameter, optimizer state, buffer (batch norm statistics) or codebook / k-means statistic moved."""
    module = engine.module
    buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
    kmeans_state = kmeans.state_dict() if kmeans is not None else None
    gathered = gather_outputs(with_code_probs(engine(batch)))
    loss, terms = recipe_loss(recipe_cfg, gathered, step, kmeans)
    culprits = [name for name, value in {"loss": float(loss.detach()), **terms}.items() if not np.isfinite(value)]
    if dist.any_across_ranks(bool(culprits), engine.device):  # every rank skips together (the collectives must match)
        _restore(module, buffers, kmeans, kmeans_state)
        skips.handle(step, culprits or ["loss on another rank"])
        return None
    engine.backward(loss)
    grad_norm = gradient_norm_if_finite(engine)
    if grad_norm is not None and not np.isfinite(grad_norm):
        engine.zero_grad()
        _restore(module, buffers, kmeans, kmeans_state)
        skips.handle(step, ["gradient"])
        return None
    skips.ok()
    return loss, terms, gathered, optimizer_step(engine, grad_clip, grad_norm)


def gradient_norm_if_finite(engine) -> float | None:
    """Without ZeRO, at an accumulation boundary: the global gradient norm (gradients are whole on
    every rank after DeepSpeed's all-reduce), so that a non-finite gradient is caught before the
    optimizer step. With ZeRO the gradients are partitioned inside DeepSpeed: None (not checked)."""
    if engine.zero_optimization_stage() != 0 or not engine.is_gradient_accumulation_boundary():
        return None
    grads = [param.grad for param in engine.module.parameters() if param.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _restore(module, buffers: dict, kmeans, kmeans_state) -> None:
    for name, buffer in module.named_buffers():
        buffer.copy_(buffers[name])
    codes = getattr(module, "codes", None)
    if codes is not None:
        codes.quantizer.discard_pending_update()
    if kmeans is not None:
        kmeans.load_state_dict(kmeans_state)


def optimizer_step(engine, grad_clip: float, norm: float | None = None) -> float | None:
    """`engine.step()`; at an accumulation boundary, returns the global gradient norm before clipping.

    Without ZeRO, DeepSpeed all-reduces whole gradients in `backward`, keeps no norm and is told not
    to clip (mmdist.train.engine.deepspeed_config): the gradients are clipped to `grad_clip` here
    (0: not clipped) with `norm` when the caller measured it (gradient_norm_if_finite), else by
    torch's fused clip_grad_norm_. With ZeRO the gradients are partitioned and the optimizer clips
    and computes the global norm inside `step`. The codebook's EMA step follows the optimizer's."""
    boundary = engine.is_gradient_accumulation_boundary()
    if boundary and engine.zero_optimization_stage() == 0:
        parameters = [param for param in engine.module.parameters() if param.grad is not None]
        if norm is None:
            norm = float(torch.nn.utils.get_total_norm([param.grad for param in parameters])) if parameters else 0.0
        if grad_clip > 0 and parameters:
            torch.nn.utils.clip_grads_with_norm_(parameters, grad_clip, torch.tensor(norm))
    engine.step()
    if boundary:
        codes = getattr(engine.module, "codes", None)
        if codes is not None:
            codes.quantizer.apply_pending_update()
    if boundary and norm is None:
        norm = float(engine.get_global_grad_norm())
    return norm


def _validate(engine, shard, batch_size: int) -> dict:
    """Held-out metrics (`val_*`, mmdist.eval.validation.validation_metrics) on this worker's share of the
    validation set, embeddings gathered to rank 0. Every rank runs the same number of forwards
    (equal splits), which ZeRO-3's parameter gathers need."""
    rows, labels = defaultdict(list), defaultdict(list)
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for name, value in embed_batch(engine.module, batch).items():
            rows[name].append(value)
        for name in LABEL_COLUMNS:
            labels[name].append(batch[name])
    local = ({name: np.concatenate(parts) for name, parts in rows.items()},
             {name: np.concatenate(parts) for name, parts in labels.items()})
    gathered = dist.all_gather_objects(local)
    merged_rows = {name: np.concatenate([part[0][name] for part in gathered]) for name in local[0]}
    merged_labels = {name: np.concatenate([part[1][name] for part in gathered]) for name in local[1]}
    return validation_metrics(merged_rows, merged_labels)


def _dropped_records(stats_name: str) -> dict:
    """Records the decode pipeline dropped so far: the total and one figure per reason."""
    reasons = decode_stats(stats_name)
    return {"dropped": sum(reasons.values()), **{f"dropped_{reason}": count for reason, count in reasons.items()}}


def _codebook_usage(module) -> dict:
    codes = getattr(module, "codes", None)
    if codes is None:
        return {}
    usage = codes.quantizer.usage()
    return {f"codebook_{name}": value for name, value in usage.items() if isinstance(value, (int, float))}


def _progress_line(metrics: dict, max_steps: int) -> str:
    terms = " ".join(
        f"{name.removeprefix('loss_')}={value:.3f}" for name, value in metrics.items() if name.startswith("loss_")
    )
    recalls = " ".join(f"{name.removeprefix('r1_')}={value:.2f}" for name, value in metrics.items() if name.startswith("r1_"))
    codes = ""
    if "codebook_active_codes" in metrics:
        codes = f" codes={metrics['codebook_active_codes']:.0f} ppl={metrics['codebook_perplexity']:.1f}"
    return (
        f"[train] step {metrics['step']}/{max_steps} loss={metrics['loss']:.4f} ({terms}) R@1 {recalls}{codes} "
        f"lr={metrics['lr']:.2e} clips/s={metrics['clips_per_s']:.1f} wait={100 * metrics['data_wait_frac']:.0f}% "
        f"dropped={metrics.get('dropped', 0)}"
    )
