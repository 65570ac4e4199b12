"""`python jobs/benchmark.py suite=gpu`: the `base` model's training step on one GPU, without Ray.

The step is the trainer's (mmdist.train.loop.setup_engine / train_step): global batch norms, the
codebook's deferred EMA update, a DeepSpeed engine over torch AdamW, forward in bf16 autocast
(`trainer.precision: bf16`: fp32 master weights, fp32 codebook), the recipe loss, backward, the
optimizer step (ZeRO 0 clips with torch's clip_grad_norm_). It is written out here because
mmdist.train.loop imports Ray, which a bare GPU machine does not have; this module imports nothing
from Ray (tests/benchmarks/test_gpu.py imports it with Ray blocked). Batches are random, of the
pipeline's exact shapes (mmdist.data.shapes), on the GPU: the input pipeline is suite=data's subject.

Per variant (a ZeRO stage x an option set: channels_last_3d, cuDNN benchmark mode, torch.compile):
median step time after `warmup` steps, clips/s, peak GPU memory (torch.cuda.max_memory_allocated),
and MFU = model FLOPs of one step (forward + backward, counted by torch.utils.flop_counter's
FlopCounterMode on the eager model) / step time / the GPU's dense bf16 peak, looked up by device
name in `peak_tflops` (printed). Checks: every floating buffer of the codebook is still fp32 after
bf16 steps, and the loss of one bf16 forward matches fp32 (same weights, batch and dropout) within
`loss_tolerance` (relative). Without CUDA the suite prints why and measures nothing.
"""

from __future__ import annotations

import copy
import gc
import os
import statistics
import time

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from mmdist.benchmarks.common import compose
from mmdist.config import check_section
from mmdist.config_schema.benchmarks import GpuSuite
from mmdist.data.shapes import batch_shapes
from mmdist.models import build_model
from mmdist.objectives import kmeans_from_recipe, recipe_loss, with_code_probs
from mmdist.ray_setup import free_port
from mmdist.train.engine import build_engine
from mmdist.train.gather import gather_outputs
from mmdist.train.sync_batchnorm import convert_to_global_batchnorm


def run(cfg: dict) -> dict:
    cfg = check_section(cfg, GpuSuite, "suite")  # keys and types (mmdist/config_schema/)
    if not torch.cuda.is_available():
        message = no_cuda_message()
        print(message)
        return {"skipped": message}
    return measure(cfg, torch.device("cuda", 0))


def no_cuda_message() -> str:
    return (
        f"[gpu] skipped: suite=gpu measures a CUDA GPU and torch {torch.__version__} sees none on this machine "
        "(torch.cuda.is_available() is False); nothing was measured. On a GPU machine: bash jobs/gpu_check.sh"
    )


def measure(cfg: dict, device: torch.device) -> dict:
    """Every check and variant on `device` (a CUDA device; the CPU only in tests, with a tiny model)."""
    config = OmegaConf.to_container(compose("train", list(cfg["overrides"])), resolve=True)
    init_single_process_group(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(name, cfg["peak_tflops"])
    batch = random_batch(config["data"], cfg["micro_batch"], device, cfg["seed"])
    torch.manual_seed(cfg["seed"])
    model = build_model(config["model"], config["data"]).to(device)
    flops = count_flops(lambda: step_loss(model, batch, config, kmeans=None).backward())
    figures = {"device": name, "peak_bf16_tflops": peak, "model": config["model"]["name"],
               "micro_batch": cfg["micro_batch"], "flops_per_step": flops}
    figures.update(loss_check(model, batch, config, cfg["seed"], device, cfg["loss_tolerance"]))
    del model
    print(f"[gpu] {name}: dense bf16 peak {peak if peak else 'unknown (add it to suite.peak_tflops)'} TFLOPS; "
          f"model {figures['model']}, {cfg['micro_batch']} clips per step, {flops / 1e12:.3f} TFLOP per step (fwd + bwd)")
    print(f"[gpu] bf16 vs fp32 loss: {figures['loss_bf16']:.5f} vs {figures['loss_fp32']:.5f}, relative difference "
          f"{figures['loss_rel_diff']:.2e} (tolerance {cfg['loss_tolerance']}): {'ok' if figures['loss_ok'] else 'FAILED'}; "
          + ", ".join(f"{key.removeprefix('loss_rel_diff_loss_')} {value:.1e}" for key, value in figures.items()
                      if key.startswith("loss_rel_diff_")))
    baseline = None
    for variant in cfg["variants"]:
        result = measure_variant(config, batch, variant, cfg, device)
        if "error" not in result:
            result["clips_per_s"] = cfg["micro_batch"] / result["step_s"]
            result["mfu"] = flops / result["step_s"] / (peak * 1e12) if peak else None
            baseline = baseline or result["step_s"]
            result["step_vs_first"] = result["step_s"] / baseline
        figures.update({f"{variant['name']}_{key}": value for key, value in result.items()})
        print_variant(variant, result)
    return figures


def init_single_process_group(device: torch.device) -> None:
    """A one-rank process group (DeepSpeed needs one; Ray Train makes it in the trainer)."""
    if torch.distributed.is_initialized():
        return
    port = free_port()
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def peak_tflops(device_name: str, table: list) -> float | None:
    """The dense bf16 peak of the first `[substring, TFLOPS]` row whose substring is in the device name."""
    for substring, tflops in table:
        if substring.lower() in device_name.lower():
            return float(tflops)
    return None


def count_flops(step) -> int:
    """FLOPs of the matrix products and convolutions `step()` runs (torch's FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def random_batch(data_cfg: dict, size: int, device: torch.device, seed: int) -> dict:
    """A batch of the pipeline's shapes and dtypes: random pixels, log-mels and word ids, every modality present."""
    generator = torch.Generator().manual_seed(seed)
    batch = {}
    for name, (dtype, shape) in batch_shapes(data_cfg).items():
        full = (size, *shape)
        if name == "video":
            batch[name] = torch.randint(0, 256, full, generator=generator, dtype=torch.uint8)
        elif name == "audio":
            batch[name] = torch.randn(full, generator=generator) * 3 - 2  # the log-mel's scale
        elif name == "text_tokens":
            batch[name] = torch.randint(2, data_cfg["text"]["vocab_size"], full, generator=generator)
        else:
            batch[name] = torch.ones(full, dtype=torch.bool)
    return {name: value.to(device) for name, value in batch.items()}


def step_loss(model, batch: dict, config: dict, kmeans, step: int = 0) -> torch.Tensor:
    """Forward, gather (the identity on one rank) and the recipe loss: the loss of one training step."""
    loss, _ = recipe_loss(config["recipe"], gather_outputs(with_code_probs(model(batch))), step, kmeans)
    return loss


def loss_check(model, batch: dict, config: dict, seed: int, device: torch.device, tolerance: float) -> dict:
    """The loss of one forward in fp32 and in bf16 autocast, from copies of the same model and dropout seed."""
    losses, terms = {}, {}
    for precision in ("fp32", "bf16"):
        replica = copy.deepcopy(model).train()
        torch.manual_seed(seed)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, terms[precision] = recipe_loss(config["recipe"], gather_outputs(with_code_probs(replica(batch))), 0, None)
        losses[precision] = float(loss)
    difference = abs(losses["bf16"] - losses["fp32"]) / max(abs(losses["fp32"]), 1e-12)
    by_term = {  # which term moves: a VQ code flipped by bf16 rounding moves the code terms
        f"loss_rel_diff_{name}": abs(terms["bf16"][name] - value) / max(abs(value), 1e-12)
        for name, value in terms["fp32"].items() if name.startswith("loss_")
    }
    return {"loss_fp32": losses["fp32"], "loss_bf16": losses["bf16"], "loss_rel_diff": difference,
            "loss_ok": difference <= tolerance, **by_term}


def measure_variant(config: dict, batch: dict, variant: dict, cfg: dict, device: torch.device) -> dict:
    """Median step time, peak memory and the codebook dtype check of one variant; {"error": ...} if it fails."""
    torch.backends.cudnn.benchmark = bool(variant["cudnn_benchmark"])
    trainer_cfg = {**config["trainer"], "zero_stage": variant["zero_stage"], "precision": "bf16"}
    engine = None
    try:
        torch.manual_seed(cfg["seed"])
        model = convert_to_global_batchnorm(build_model(config["model"], config["data"])).to(device)
        if model.codes is not None:
            model.codes.quantizer.defer_updates = True  # one EMA update per optimizer step, as the trainer
        if variant["channels_last_3d"] and variant["zero_stage"] > 0:
            raise ValueError("channels_last_3d needs ZeRO 0: ZeRO 1-3 keep the weights in flat buffers")
        codes = model.codes
        if variant["compile"]:
            model = torch.compile(model)
        engine = build_engine(model, trainer_cfg, cfg["micro_batch"])
        if variant["channels_last_3d"]:
            # after the engine: DeepSpeed broadcasts each weight viewed as bytes, which needs a contiguous
            # last dimension; ZeRO 0's optimizer holds the Parameter objects, whose data .to() replaces
            engine.module.to(memory_format=torch.channels_last_3d)
        kmeans = kmeans_from_recipe(config["recipe"], dim=config["model"]["embed_dim"], seed=cfg["seed"])
        times = []
        for step in range(cfg["warmup"] + cfg["steps"]):
            if step == cfg["warmup"]:
                synchronize(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            train_step(engine, batch, config, step, kmeans, codes, trainer_cfg)
            synchronize(device)
            times.append(time.perf_counter() - start)
        result = {"step_s": statistics.median(times[cfg["warmup"]:])}
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        if codes is not None:
            result["codebook_fp32"] = all(
                buffer.dtype == torch.float32 for buffer in codes.quantizer.buffers() if buffer.is_floating_point()
            )
            result["codebook_updates"] = int(codes.quantizer.num_updates)
        return result
    except Exception as err:  # one variant failing (torch.compile on a new stack, say) must not hide the others
        return {"error": f"{type(err).__name__}: {err}"[:500]}
    finally:
        torch.backends.cudnn.benchmark = False
        del engine
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def train_step(engine, batch: dict, config: dict, step: int, kmeans, codes, trainer_cfg: dict) -> None:
    """mmdist.train.loop.train_step + optimizer_step on one rank, without accumulation."""
    loss = step_loss(engine, batch, config, kmeans, step)
    engine.backward(loss)
    if trainer_cfg["zero_stage"] == 0 and trainer_cfg["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(engine.module.parameters(), trainer_cfg["grad_clip"])
    engine.step()
    if codes is not None:
        codes.quantizer.apply_pending_update()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_variant(variant: dict, result: dict) -> None:
    label = f"[gpu] {variant['name']:<22} ZeRO {variant['zero_stage']}"
    if "error" in result:
        print(f"{label}: failed: {result['error']}")
        return
    mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a"
    memory = f"{result['peak_memory_gib']:.2f} GiB" if result["peak_memory_gib"] is not None else "n/a"
    codebook = "" if "codebook_fp32" not in result else f", codebook fp32: {result['codebook_fp32']}"
    print(
        f"{label}: {1e3 * result['step_s']:.1f} ms/step ({result['step_vs_first']:.2f} x the first variant), "
        f"{result['clips_per_s']:.0f} clips/s, MFU {mfu}, peak memory {memory}{codebook}"
    )
