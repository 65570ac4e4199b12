"""Time to the first training step of a short `fit` run, phase by phase (the `trainer` suite's start-up).

`python -m mmdist.benchmarks.startup '<json>'` runs, in a fresh process as `jobs/train.py` would:
imports, `init_ray`, `mmdist.train.fit` of a few steps, `ray.shutdown`; it prints one JSON line of
phase durations. The phases inside `fit` come from Ray's own task timeline (`ray.timeline()`: every
actor method and task with its start and end), so the training code carries no timers:

  imports            interpreter start -> mmdist.train, Ray, torch imported (the driver)
  ray_init           mmdist.ray_setup.init_ray: a local Ray with its dashboard
  driver_setup       fit() -> TrainController.__init__: input checks, dataset planning (incl. Parquet
                     metadata tasks, `dataset_planning`), the metrics actor, the trainer
  train_controller   TrainController.__init__ -> the first RayTrainWorker.__init__ (controller process,
                     placement group)
  worker_actors      -> RayTrainWorker.run_train_fn: worker processes, train context, torch process group
  worker_imports     RayTrainWorker.run_train_fn itself: unpickling the loop function imports
                     mmdist.train.loop and everything it imports in each worker
  deepspeed_init     -> the loop's first get_dataset_shard: model build and deepspeed.initialize
                     (DeepSpeed's import and its shm_comm op load included)
  first_batch        -> the end of step 1's report: Ray Data's executor and decode
                     workers start, the first blocks decode, step 1 runs
  steps              first report -> last report
  shutdown           last report -> fit returns (checkpoint, controller and workers torn down),
                     then ray.shutdown; `process_exit` is the interpreter's exit (measured by the caller)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

PHASES = ("imports", "ray_init", "driver_setup", "train_controller", "worker_actors", "worker_imports",
          "deepspeed_init", "first_batch", "steps", "shutdown", "process_exit")


def measure_startup(overrides: list[str], env: dict[str, str], timeout_s: float) -> dict:
    """Run this module in a fresh process (environment + `env`); its phases plus `process_exit` and `total`."""
    # task events are flushed to the GCS every second by default; fit kills its actors when it returns
    env = {"RAY_task_events_report_interval_ms": "100", **env}
    with tempfile.TemporaryDirectory(prefix="mmdist-bench-startup-") as run_dir:  # fresh: an old one would resume
        overrides = [*overrides, f"run_dir={run_dir}"]
        start = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "mmdist.benchmarks.startup", json.dumps(overrides)],
            capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **env},
        )
        end = time.time()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"start-up run failed ({done.returncode}): {done.stderr[-3000:]}")
    phases = json.loads(lines[-1])
    phases["process_exit"] = end - phases.pop("returned_at")
    phases["total"] = end - start
    return phases


def phases_from_timeline(events: list[dict], fit_start: float, fit_end: float) -> dict:
    """Phase durations (seconds) inside fit from Ray's chrome-trace events (`ray.timeline()`).

    Ray reports task events asynchronously and may lose some of a process it killed: a phase whose
    closing event is missing is None, and its time goes to the next phase (listed under `merged`)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        if event.get("ph") == "X":
            begin = event["ts"] / 1e6
            spans.setdefault(event.get("cat", ""), []).append((begin, begin + event["dur"] / 1e6))

    def first(name: str, end: bool = False) -> float | None:
        return min(span[1] if end else span[0] for span in spans[name]) if name in spans else None

    # every report of step k leaves these calls (rank 0's metrics and drop counts, Ray Train's report barrier)
    reports = sorted(
        span[1] for name in ("task::MetricsLog.append", "task::DropLedger.counts",
                             "task::SynchronizationActor.broadcast_from_rank_zero")
        for span in spans.get(name, [])
    )
    boundaries = [  # (phase, the time it ends)
        ("driver_setup", first("task::TrainController.__init__")),
        ("train_controller", first("task::RayTrainWorker.__init__")),
        ("worker_actors", first("task::RayTrainWorker.run_train_fn")),
        ("worker_imports", first("task::RayTrainWorker.run_train_fn", end=True)),
        ("deepspeed_init", first("task::DatasetManager.get_dataset_shard")),
        ("first_batch", reports[0] if reports else None),
        ("steps", reports[-1] if reports else None),
        ("fit_teardown", fit_end),
    ]
    phases, merged, previous = {}, [], fit_start
    for phase, ends in boundaries:
        phases[phase] = None if ends is None else ends - previous
        if ends is None:
            merged.append(phase)
        previous = previous if ends is None else ends
    planning = spans.get("task::_fetch_parquet_file_info", [])
    phases["dataset_planning"] = max(e for _, e in planning) - min(b for b, _ in planning) if planning else None
    phases["merged"] = merged
    return phases


def main(overrides: list[str]) -> None:
    started = _process_start()
    import ray
    from omegaconf import OmegaConf

    from mmdist.benchmarks.common import compose
    from mmdist.ray_setup import init_ray
    from mmdist.train import fit

    imported = time.time()
    cfg = compose("train", overrides)
    init_ray(OmegaConf.to_container(cfg.ray, resolve=True), verbose=bool(cfg.verbose))
    ray_ready = time.time()
    fit(cfg)
    fit_end = time.time()
    phases = phases_from_timeline(ray.timeline(), ray_ready, fit_end)
    shutdown_start = time.time()
    ray.shutdown()
    phases.update(
        imports=imported - started,
        ray_init=ray_ready - imported,
        shutdown=phases.pop("fit_teardown") + time.time() - shutdown_start,  # the timeline call left out
        returned_at=time.time(),
    )
    print(json.dumps(phases), flush=True)


def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
