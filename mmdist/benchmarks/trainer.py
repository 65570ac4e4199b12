"""`python jobs/benchmark.py suite=trainer`: the cost of Ray Train + DeepSpeed around a training step.

(a) a plain single-process PyTorch loop (model, AdamW, clipping, the recipe loss) and (b) the real
`mmdist.train.loop` step (`setup_engine` + `train_step`: DeepSpeed engine, global batch norm, gather)
inside a 1-worker Ray `TorchTrainer` run the same tiny model on the same in-memory batches, decoded
once from a synthetic world. Printed: the median step times and their ratio (b)/(a) (target <= 1.05).
(c) a streaming run of `mmdist.train.fit` on the same world reports clips/s and the fraction of step
time spent waiting for data: the mean over the report windows after the first (steady state), and the
first window alone (it holds the pipeline's start-up). Target < 10 %. The same run again with
`data.epochs_per_pass` at `streaming_baseline_epochs_per_pass` (one epoch per Ray Data pass) is the baseline.
(d) start-up: fresh-process `fit` runs of `startup_steps` steps, time to the first step and after the
last, phase by phase (mmdist/benchmarks/startup.py), once per `startup_variants` entry (extra
environment variables: a lever measured against the configured run).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf

from mmdist.benchmarks.common import compose
from mmdist.benchmarks.startup import PHASES, measure_startup
from mmdist.config import check_section
from mmdist.config_schema.benchmarks import TrainerSuite

TARGET_DATA_WAIT = 0.10


def run(cfg: dict) -> dict:
    cfg = check_section(cfg, TrainerSuite, "suite")  # keys and types (mmdist/config_schema/)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mmdist.data.synthetic import generate_world
    from mmdist.ray_setup import init_ray
    from mmdist.train import fit
    from mmdist.train.metrics import MetricsLog

    work = tempfile.mkdtemp(prefix="mmdist-bench-trainer-")
    world = os.path.join(work, "world")
    train_cfg = _train_cfg(world, work, cfg)
    config = OmegaConf.to_container(train_cfg, resolve=True)
    generate_world(world, cfg["clips"], seed=cfg["seed"], cfg=OmegaConf.to_container(compose("make_dataset", []), resolve=True))
    batches = _decode_batches(world, config, cfg["batches"])

    plain = _plain_step_times(config, batches, cfg["steps"])
    init_ray(config["ray"])
    # Train V2 keeps metrics only with checkpoints: the worker hands its timings to an actor
    timings = MetricsLog.remote()
    trainer = TorchTrainer(
        _ray_deepspeed_loop,
        train_loop_config={"config": config, "batches": batches, "steps": cfg["steps"], "timings": timings},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": config["trainer"]["cpus_per_worker"]}),
        run_config=RunConfig(name="bench", storage_path=os.path.join(work, "ray")),
    )
    trainer.fit()
    wrapped = ray.get(timings.history.remote())[0]["step_times"]

    baseline_cfg = _train_cfg(world, work, cfg, streaming=True, name="streaming_baseline")
    baseline_cfg.data.epochs_per_pass = cfg["streaming_baseline_epochs_per_pass"]
    baseline = _steady(fit(baseline_cfg)["history"])
    history = fit(_train_cfg(world, work, cfg, streaming=True))["history"]
    ray.shutdown()
    steady = _steady(history)
    startup = {
        variant["name"]: measure_startup(_startup_overrides(world, cfg), variant["env"], timeout_s=600)
        for variant in cfg["startup_variants"]
    }
    plain_s, wrapped_s = _median(plain, 0, cfg["warmup"]), _median(wrapped, 0, cfg["warmup"])
    plain_cpu, wrapped_cpu = _median(plain, 1, cfg["warmup"]), _median(wrapped, 1, cfg["warmup"])
    figures = {
        "plain_step_s": plain_s,
        "ray_deepspeed_step_s": wrapped_s,
        "overhead_ratio": wrapped_s / plain_s,
        "plain_step_cpu_s": plain_cpu,
        "ray_deepspeed_step_cpu_s": wrapped_cpu,
        "overhead_ratio_cpu": wrapped_cpu / plain_cpu,
        "target_overhead_ratio": 1.05,
        "streaming_clips_per_s": statistics.mean(window["clips_per_s"] for window in steady),
        "streaming_data_wait_frac": statistics.mean(window["data_wait_frac"] for window in steady),
        "streaming_first_window_data_wait_frac": history[0]["data_wait_frac"],
        "streaming_epochs_per_pass": train_cfg.data.epochs_per_pass,
        "baseline_epochs_per_pass": cfg["streaming_baseline_epochs_per_pass"],
        "baseline_clips_per_s": statistics.mean(window["clips_per_s"] for window in baseline),
        "baseline_data_wait_frac": statistics.mean(window["data_wait_frac"] for window in baseline),
        "target_data_wait_frac": TARGET_DATA_WAIT,
        "global_batch": config["data"]["batch_size"],
        "torch_threads": config["trainer"]["torch_threads"],
    }
    print(
        f"[trainer] plain {plain_s * 1e3:.1f} ms/step, Ray Train + DeepSpeed {wrapped_s * 1e3:.1f} ms/step: "
        f"overhead ratio {figures['overhead_ratio']:.3f} wall, {figures['overhead_ratio_cpu']:.3f} CPU time "
        f"(target <= 1.05); streaming run "
        f"{figures['streaming_clips_per_s']:.1f} clips/s, waiting for data {100 * figures['streaming_data_wait_frac']:.0f}% "
        f"of step time after the first window (target < {100 * TARGET_DATA_WAIT:.0f}%), "
        f"{100 * figures['streaming_first_window_data_wait_frac']:.0f}% in the first (load {os.getloadavg()[0]:.1f})"
    )
    print(
        f"[trainer] streaming, {figures['streaming_epochs_per_pass']} epochs per Ray Data pass vs "
        f"{figures['baseline_epochs_per_pass']} (baseline, same run): data wait {100 * figures['streaming_data_wait_frac']:.1f}% vs "
        f"{100 * figures['baseline_data_wait_frac']:.1f}%, clips/s ratio "
        f"{figures['streaming_clips_per_s'] / figures['baseline_clips_per_s']:.2f}"
    )
    for name, phases in startup.items():
        figures.update({f"startup_{name}_{phase}_s": value for phase, value in phases.items() if phase != "merged"})
        shown = " | ".join(f"{phase} {phases[phase]:.1f}" for phase in PHASES if phases.get(phase) is not None)
        merged = f" (no Ray event closed {phases['merged']}: their time is in the next phase)" if phases["merged"] else ""
        print(f"[trainer] start-up, {name}: {phases['total']:.1f} s for {cfg['startup_steps']} steps: {shown}{merged}")
    return figures


def _startup_overrides(world: str, cfg: dict) -> list[str]:
    steps = cfg["startup_steps"]
    return [
        f"recipe={cfg['recipe']}", f"data.path={world}", f"data.batch_size={cfg['batch_size']}",
        f"trainer.max_steps={steps}", "trainer.report_every=1", f"trainer.checkpoint_every={steps}",
    ]


def _steady(history: list[dict]) -> list[dict]:
    return history[1:] or history  # the first window holds the pipeline's start-up


def _train_cfg(world: str, work: str, cfg: dict, streaming: bool = False, name: str | None = None):
    name = name or ("streaming" if streaming else "fixed")
    overrides = [
        f"recipe={cfg['recipe']}",
        f"data.path={world}",
        f"data.batch_size={cfg['batch_size']}",
        f"run_dir={work}/{name}",
        f"trainer.torch_threads={cfg['torch_threads']}",
        f"trainer.max_steps={cfg['streaming_steps']}",
        f"trainer.report_every={cfg['streaming_report_every'] if streaming else cfg['streaming_steps']}",
        f"trainer.checkpoint_every={cfg['streaming_steps']}",
        f"trainer.num_workers={cfg['streaming_workers'] if streaming else 1}",
    ]
    return compose("train", overrides)


def _decode_batches(world: str, config: dict, count: int) -> list[dict]:
    """`count` global batches decoded once, in memory, as the pipeline would give them."""
    from mmdist.data.pipeline import ClipDecoder

    decoder = ClipDecoder(config["data"], train=False, seed=config["seed"])
    table = pq.read_table(world)
    size = config["data"]["batch_size"]
    batches = []
    for start in range(0, count * size, size):
        batch, drops = decoder.decode_table(table.slice(start % (table.num_rows - size + 1), size))
        assert not drops
        batches.append({name: torch.from_numpy(value) for name, value in batch.items()})
    return batches


def _plain_step_times(config: dict, batches: list[dict], steps: int) -> list[float]:
    """A bare PyTorch loop: no Ray, no DeepSpeed, no gather."""
    from mmdist.models import build_model
    from mmdist.objectives import recipe_loss, with_code_probs

    torch.manual_seed(config["seed"])
    torch.set_num_threads(config["trainer"]["torch_threads"])
    model = build_model(config["model"], config["data"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["trainer"]["lr"])
    times = []
    for step in range(steps):
        begin = _clocks()
        loss, _ = recipe_loss(config["recipe"], with_code_probs(model(batches[step % len(batches)])), step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["trainer"]["grad_clip"])
        optimizer.step()
        times.append(_elapsed(begin))
    return times


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(begin: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process: every thread, Ray's own included)."""
    wall, cpu = _clocks()
    return wall - begin[0], cpu - begin[1]


def _median(times: list, index: int, warmup: int) -> float:
    return statistics.median(sample[index] for sample in times[warmup:])


def _ray_deepspeed_loop(args: dict) -> None:
    """Runs in the Ray Train worker: the training loop's own setup and step on in-memory batches."""
    import ray

    from mmdist.objectives import kmeans_from_recipe
    from mmdist.train.loop import NonFiniteSkips, setup_engine, train_step

    config, batches = args["config"], args["batches"]
    engine, _ = setup_engine(config, world_size=1)
    trainer_cfg = config["trainer"]
    skips = NonFiniteSkips(trainer_cfg["nonfinite"], trainer_cfg["max_consecutive_skips"])
    kmeans = kmeans_from_recipe(config["recipe"], dim=config["model"]["embed_dim"], seed=config["seed"])
    times = []
    for step in range(args["steps"]):
        begin = _clocks()
        train_step(engine, batches[step % len(batches)], config["recipe"], step, kmeans, trainer_cfg["grad_clip"], skips)
        times.append(_elapsed(begin))
    ray.get(args["timings"].append.remote({"step": 0, "step_times": times}))
