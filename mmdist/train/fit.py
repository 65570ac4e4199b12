"""The driver side of a training run: Ray Data input, a `TorchTrainer`, and the run directory.

`fit(cfg)` is what `jobs/train.py` calls. It writes into `run_dir`:
`metrics.json` (`final`: the last report, flat; `history`: every report, each with `step` and `loss`),
`config.yaml` (the resolved config, secrets redacted), `checkpoint.txt` (the final checkpoint's URI),
`tensorboard/` (TensorBoard events of every report) and, with `logging.mlflow.enabled`, `mlflow_run.json`
(the MLflow run's id and tracking URI; `mlruns/` is the default file store): mmdist.tracking.
"""

from __future__ import annotations

import functools
import json
import os

import ray
from omegaconf import DictConfig, OmegaConf
from ray.data import DataContext, ExecutionOptions
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mmdist.config import redact
from mmdist.data.pipeline import build_dataset, new_stats_name
from mmdist.data.storage import is_remote, ray_storage
from mmdist.ray_setup import init_ray
from mmdist.startup import check_train_inputs
from mmdist.tracking import RunTracker, following
from mmdist.train.engine import deepspeed_config, micro_batch_size
from mmdist.train.loop import train_loop_per_worker
from mmdist.train.metrics import MetricsLog

def fit(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Train as `cfg` declares; returns {"final": ..., "history": ..., "checkpoint": uri}.

    `callbacks` are Ray Train user callbacks (a Tune trial passes `TuneReportCallback`)."""
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_train_inputs(config)  # recipe, data, shards, warm-start checkpoint: fail before Ray starts
    trainer_cfg = config["trainer"]
    run_dir = os.path.abspath(config["run_dir"])
    os.makedirs(run_dir, exist_ok=True)
    write_resolved_config(config, os.path.join(run_dir, "config.yaml"))

    # the DeepSpeed config is built in the workers; building it here first fails bad trainer keys
    # before Ray starts, naming the key
    deepspeed_config(trainer_cfg, micro_batch_size(config["data"]["batch_size"], trainer_cfg["num_workers"], trainer_cfg["grad_accum_steps"]))
    tracker = RunTracker(config["logging"], run_dir, config)  # TensorBoard events, MLflow run (mmdist.tracking)
    try:
        init_ray(config["ray"], verbose=config["verbose"])
        # one progress line per report is ours; Ray Data's bars would interleave with it
        DataContext.get_current().enable_progress_bars = trainer_cfg["data_progress_bars"]
        summary = _train(config, run_dir, callbacks, tracker)
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close(artifacts=(os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "metrics.json")))
    return summary


def _train(config: dict, run_dir: str, callbacks: list | None, tracker: RunTracker) -> dict:
    trainer_cfg = config["trainer"]
    stats_name = new_stats_name()  # rank 0 reports the dropped-record counts of the training data
    datasets = {"train": build_dataset(config["data"], config["storage"], train=True, seed=config["seed"], stats_name=stats_name)}
    validation = config["validation"]
    if validation["path"] and validation["every"]:
        val_data_cfg = dict(config["data"], path=validation["path"], limit=validation["limit"])
        datasets["val"] = build_dataset(val_data_cfg, config["storage"], train=False, seed=config["seed"],
                                        stats_name=new_stats_name(), keep_metadata=True)

    # Why an actor of ours and not Ray's record of the run: Ray Train V2 hands the driver nothing before
    # `trainer.fit()` returns (TensorBoard and MLflow follow the run while it trains), and its
    # `Result.metrics_dataframe` holds one row per *kept checkpoint* (ray/train/v2/api/result.py builds it
    # from `best_checkpoints`), not every report: metrics.json's history would lose the reports between
    # checkpoints and those of checkpoints past `trainer.keep_checkpoints` (measured with Ray 2.60: 6 reports,
    # checkpoints at the 3rd and 6th, num_to_keep=1 -> one row, step 6).
    metrics_log = MetricsLog.remote()
    # the run's actors are arguments of the loop, not config: the config is saved inside every checkpoint
    train_loop = functools.partial(train_loop_per_worker, metrics_log=metrics_log, decode_stats_name=stats_name)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=scaling_config(trainer_cfg),
        run_config=run_config(trainer_cfg, config["storage"], run_dir, callbacks),
        datasets=datasets,
        dataset_config=ingest_config(),
    )
    with following(lambda: ray.get(metrics_log.history.remote()), tracker, config["logging"]["every_s"]):
        result = trainer.fit()
    history = ray.get(metrics_log.history.remote())
    ray.kill(metrics_log)
    tracker.log(history)
    checkpoint = checkpoint_uri(result.checkpoint.path, trainer_cfg["storage_path"]) if result.checkpoint else None
    summary = {"final": history[-1] if history else {}, "history": history, "checkpoint": checkpoint}
    if tracker.mlflow is not None:
        summary["mlflow"] = tracker.mlflow.record
    with open(os.path.join(run_dir, "metrics.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    with open(os.path.join(run_dir, "checkpoint.txt"), "w") as handle:
        handle.write(f"{checkpoint}\n")
    return summary


def ingest_config() -> DataConfig:
    """Ray Train's default ingest options, built here: Ray's own default copies the deprecated
    `ExecutionOptions.exclude_resources` and so printed a RayDeprecationWarning in every run."""
    options = DataContext.get_current().execution_options
    return DataConfig(execution_options=ExecutionOptions(
        resource_limits=options.resource_limits, preserve_order=options.preserve_order,
        verbose_progress=options.verbose_progress,
    ))


def scaling_config(trainer_cfg: dict) -> ScalingConfig:
    resources = {"CPU": trainer_cfg["cpus_per_worker"]}
    if trainer_cfg["use_gpu"]:
        resources["GPU"] = 1
    return ScalingConfig(
        num_workers=trainer_cfg["num_workers"], use_gpu=trainer_cfg["use_gpu"], resources_per_worker=resources
    )


def run_config(trainer_cfg: dict, storage_cfg: dict, run_dir: str, callbacks: list | None = None) -> RunConfig:
    """Checkpoints go to `trainer.storage_path` (local folder or s3://). Re-running with the same
    `trainer.run_name` and storage path resumes from the latest checkpoint (Ray Train V2 restoration)."""
    storage_path, filesystem = ray_storage(trainer_cfg["storage_path"] or os.path.join(run_dir, "checkpoints"),
                                           storage_cfg["endpoint_url"])
    return RunConfig(
        name=trainer_cfg["run_name"],
        storage_path=storage_path,
        storage_filesystem=filesystem,
        failure_config=FailureConfig(max_failures=trainer_cfg["max_failures"]),
        checkpoint_config=CheckpointConfig(num_to_keep=trainer_cfg["keep_checkpoints"]),
        logging_config=LoggingConfig(log_level=trainer_cfg["log_level"]),
        callbacks=callbacks,
    )


def write_resolved_config(config: dict, path: str) -> None:
    with open(path, "w") as handle:
        handle.write(OmegaConf.to_yaml(OmegaConf.create(redact(config))))


def checkpoint_uri(path: str, storage_path: str | None) -> str:
    """Ray reports a checkpoint's path inside its filesystem (`bucket/prefix/...` for S3): put the
    scheme of `trainer.storage_path` back so that evaluation and warm starts can open it anywhere."""
    if path and storage_path and is_remote(storage_path):
        scheme = storage_path.split("://", 1)[0]
        if not path.startswith(f"{scheme}://"):
            return f"{scheme}://{path}"
    return path
