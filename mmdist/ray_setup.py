"""Connecting to Ray (an existing cluster, or a local one started for this process), how much of
Ray's, Ray Data's and DeepSpeed's own logging reaches the console, and the jobs' progress bars.

Quiet (the default, `verbose: false` in the job configs): those libraries log at WARNING on the
console, in the driver and in every worker of the job; their INFO lines (Ray Data's execution plan
and "execution finished" per epoch, Ray Train's per-report "Reporting training result", DeepSpeed's
start-up) stay out. A few one-off notices that the libraries emit at WARNING about things that are
fine here are switched off where they come from (`quiet_worker`). `verbose: true` leaves every
library at its own defaults.
"""

from __future__ import annotations

import logging
import os
import socket

QUIET_LEVEL = logging.WARNING
# Environment of every worker process of a quiet job (set in the driver too; a value the user set wins).
QUIET_ENV = {
    "RAY_DATA_LOG_LEVEL": "WARNING",  # Ray Data re-reads it whenever it configures its loggers
    # Ray Train V2 sends each print of a train worker to the root logger *and* to the worker's stdout
    # wrapper: every print reached the console twice (DeepSpeed's op-build notice, for one)
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}

# How often Ray Train's controller polls its workers. Each step of a run's wind-down waits for a poll:
# at Ray's 2 s, a 3-step run spent ~8 s between its last step and fit's return (suite=trainer).
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def init_ray(ray_cfg: dict, verbose: bool = False) -> None:
    """Connect to `ray.address` (or RAY_ADDRESS, which `ray job submit` sets), else start a local Ray.

    Locally, more logical CPUs than cores lets Ray Data's decode tasks run beside the train workers
    on a 2-core machine (ENVIRONMENT.md: the 2-CPU deadlock). The local Ray gets its dashboard on a
    known port, and its processes are told that port: Ray Train V2's placement-group cleaner finds
    "the" cluster through the state API, and with a second Ray on the machine (a `ray start`
    cluster) it would ask the wrong one, find no controller and remove our workers' placement group.
    """
    import ray  # imported here: `free_port` serves processes without Ray (the GPU benchmark, the tests' moto server)

    if ray.is_initialized():
        return
    address = ray_cfg["address"] or os.environ.get("RAY_ADDRESS")
    runtime_env = {} if verbose else quiet_runtime_env(local=not address)
    level = logging.INFO if verbose else QUIET_LEVEL
    if not verbose:
        quiet_driver(local=not address)
    poll_s = ray_cfg["train_health_check_s"]  # null: Ray Train's own 2 s
    if poll_s is not None and TRAIN_POLL_ENV not in os.environ:
        runtime_env = {**runtime_env, "env_vars": {**runtime_env.get("env_vars", {}), TRAIN_POLL_ENV: str(poll_s)}}
    if address:
        ray.init(address=address, runtime_env=runtime_env or None, logging_level=level)
        return
    port = free_port()
    env_vars = {**runtime_env.pop("env_vars", {}), "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    ray.init(
        address="local",  # never attach to a `ray start` cluster that happens to run on this machine
        num_cpus=ray_cfg["num_cpus"] or max(ray_cfg["min_local_cpus"], os.cpu_count() or 1),
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        runtime_env={**runtime_env, "env_vars": env_vars},
        logging_level=level,
    )


def connect_ray() -> None:
    """`ray.init()` with Ray's own defaults unless this process is connected already: the cluster named
    by RAY_ADDRESS, else a local Ray. For library calls that fan work out as Ray tasks without a job's
    `ray` config (mmdist.data.parallel.map_tasks: the synthetic world, ingest)."""
    import ray

    if not ray.is_initialized():
        ray.init()


def quiet_runtime_env(local: bool) -> dict:
    """The job's runtime_env of a quiet run: `QUIET_ENV` and `quiet_worker` as every worker's setup hook.

    Variables already in this process's environment are left out: in a `ray job submit` job they
    come from the job's own runtime_env, which Ray refuses to merge with a second value."""
    env_vars = {key: value for key, value in QUIET_ENV.items() if key not in os.environ}
    if local and "DS_ACCELERATOR" not in os.environ and not _has_cuda():
        # what DeepSpeed detects anyway on a machine without a GPU, said explicitly: no
        # "Setting accelerator to CPU ... unable to detect it" warning from every worker
        env_vars["DS_ACCELERATOR"] = "cpu"
    return {"env_vars": env_vars, "worker_process_setup_hook": "mmdist.ray_setup.quiet_worker"}


def quiet_driver(local: bool) -> None:
    """This process's share of quiet mode (Ray's own loggers follow `ray.init(logging_level=...)`)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if local:
        # a local Ray turns token authentication on by default and says so at WARNING on every start;
        # the job started it, nothing to act on (RAY_AUTH_MODE=token cannot say it instead: Ray reads
        # its auth mode when imported, before this runs)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(QUIET_LEVEL)  # configured at `import ray.data`, before this
    _consume_log_once("ray_data_progress_manager_disabled")


def quiet_worker() -> None:
    """`worker_process_setup_hook` of a quiet job: runs in every worker process before its first task.

    Each line switched off here was seen on the console of `jobs/demo.py`, once per worker or per report:
    - Ray Train V2 logs "Reporting training result N: TrainingReport(...)" (every metric) per rank per
      report at INFO, from a logger named after its file instead of `ray.train.*`, so
      `LoggingConfig(log_level=...)` does not reach it;
    - Ray Data's "Progress bars disabled" notice (`trainer.data_progress_bars: false` is deliberate:
      the progress of a training run is its one line per report);
    - DeepSpeed's WarmupCosineLR warns from its own constructor that the learning rate is read before
      the first step (its default `last_batch_iteration=-1`: nothing a config can change);
    - torch's cpp_extension warns at import, on a machine with a CUDA toolkit but no GPU, that it found
      no CUDA runtime: DeepSpeed imports it to build its CPU ops.
    """
    import ray

    train_context = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution", "context.py")
    logging.getLogger(train_context).setLevel(QUIET_LEVEL)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # DeepSpeed's logger is created (level WARNING) when deepspeed is imported; a filter added before stays
    logging.getLogger("DeepSpeed").addFilter(_drop_scheduler_notice)
    _consume_log_once("ray_data_progress_manager_disabled")


def progress_bar(total: int, description: str, unit: str):
    """A tqdm bar on stderr for one long phase (world generation, extraction). It draws only on a
    terminal (`disable=None`): logs, tests and `ray job submit` output get no bar lines, and the bar
    is erased when done (the job prints one line about the phase instead)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=None, leave=False, dynamic_ncols=True)


def _drop_scheduler_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Attempting to get learning rate from scheduler before it has started")


def _consume_log_once(key: str) -> None:
    """Ray's `log_once(key)` is true once per process: taking it here keeps that notice from printing."""
    from ray.util.debug import log_once

    log_once(key)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now (the local Ray's dashboard, moto servers, process groups)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
