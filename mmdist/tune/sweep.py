"""A Ray Tune sweep over training runs: search space from `sweep.space`, ASHA early stopping on a metric
the trainer reports, MLflow + TensorBoard logging, a ranked results table and the best trial as Hydra
overrides. An interrupted sweep (Ctrl-C, a killed driver, a lost head node with remote storage) resumes
with `Tuner.restore` when it is started again with the same `run_dir` (or `sweep.storage_path`) and name.

`run_sweep(cfg, train_defaults, group_overrides, compose_evaluate)` writes into `run_dir`:
`sweep_results.csv` and `sweep_results.md` (one row per trial, best first), `best_overrides.yaml`
(rerun the best trial with `jobs/train.py`), `tune/<sweep.name>/` (Tune's experiment state and, per
trial, result.json / progress.csv / TensorBoard events), `mlruns/` (MLflow file store),
`trials/<trial_id>/` (each trial's training run_dir) and, with `sweep.final_eval.enabled`, `best_eval/`.
"""

from __future__ import annotations

import os
from typing import Callable

from omegaconf import DictConfig, OmegaConf
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from mmdist.config import ConfigError, check_config, check_section
from mmdist.config_schema.tune import Sweep
from mmdist.data.storage import ray_storage
from mmdist.ray_setup import init_ray
from mmdist.tune.overrides import config_overrides, format_value, write_overrides_file
from mmdist.train.fit import checkpoint_uri
from mmdist.tune.results import best_row, markdown_table, rank_rows, trial_row, write_csv
from mmdist.tune.space import build_param_space
from mmdist.tune.trainable import train_trial, trial_config, trial_dirname

RESULT_FILES = ("sweep_results.csv", "sweep_results.md", "best_overrides.yaml")
# plumbing that differs between any two runs: never part of "rerun the best trial"
RUN_SPECIFIC_KEYS = ("run_dir", "trainer.run_name")


def check_sweep_config(sweep: dict) -> None:
    """Keys and types by the config schema (mmdist/config_schema/), then values in range; errors name the key."""
    sweep = check_section(sweep, Sweep, "sweep")
    if sweep["mode"] not in ("max", "min"):
        raise ConfigError(f"sweep.mode must be 'max' or 'min', got {sweep['mode']!r}")
    if sweep["best_scope"] not in ("last", "all"):
        raise ConfigError(f"sweep.best_scope must be 'last' or 'all', got {sweep['best_scope']!r}")
    for key in ("num_samples", "max_concurrent"):
        if not isinstance(sweep[key], int) or sweep[key] < 1:
            raise ConfigError(f"sweep.{key} must be an integer >= 1, got {sweep[key]!r}")
    if not sweep["trial_resources"] or any(amount < 0 for amount in sweep["trial_resources"].values()):
        raise ConfigError(f"sweep.trial_resources must name resources with amounts >= 0, got {sweep['trial_resources']!r}")


def run_sweep(
    cfg: DictConfig, train_defaults: dict, group_overrides: list[str], compose_evaluate: Callable[[list[str]], dict] | None = None
) -> dict:
    """Run (or resume) the sweep `cfg` declares; returns {"rows", "best", "overrides", "restored", ...}.

    `train_defaults` is the resolved plain training config for the same config-group choices
    (`group_overrides`, e.g. ["recipe=mc3_vq", "model=tiny"]): the best trial's overrides are its
    difference from it. `compose_evaluate(overrides)`: the evaluate job's resolved config with those
    overrides (jobs/sweep.py composes it with Hydra), which `sweep.final_eval.enabled` needs."""
    resolved = check_config(cfg, "sweep")  # every section, before Ray starts (mmdist/config.py)
    sweep = resolved.pop("sweep")
    check_sweep_config(sweep)
    run_dir = os.path.abspath(resolved["run_dir"])
    os.makedirs(run_dir, exist_ok=True)
    _check_final_eval(sweep["final_eval"], compose_evaluate, resolved)
    if sweep["metric"].startswith("val_") and not resolved.get("validation", {}).get("path"):
        raise ValueError(
            f"sweep.metric={sweep['metric']} is a held-out metric: set validation.path=<held-out clips> "
            "(or search on a training metric such as r1_audio_video)"
        )
    param_space = build_param_space(sweep["space"], resolved)
    new_tune_config = tune_config(sweep, resolved["trainer"]["max_steps"])  # checks the scheduler before Ray starts

    # trials get the *unresolved* tree, so interpolations follow the sampled values;
    # run_dir is resolved here once (its ${now:} resolver exists only in this Hydra process)
    base_config = OmegaConf.to_container(cfg, resolve=False)
    del base_config["sweep"]
    base_config["run_dir"] = run_dir

    init_ray(resolved["ray"])
    # reports between two validations lack a val_* metric: ASHA skips those (it acts on results
    # that carry sweep.metric), and the trial itself fails if the metric never comes (train_trial)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if sweep["mlflow"]["enabled"] and mlflow_tracking_uri(sweep, run_dir).startswith("file:"):
        # MLflow 3 refuses its file store ("maintenance mode") unless told; the issue asks for it.
        # Set here, not with the callback: a restored sweep unpickles its callback.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, base_config=base_config, metric=sweep["metric"]),
        dict(sweep["trial_resources"]),
    )
    storage_path, filesystem = ray_storage(sweep["storage_path"] or os.path.join(run_dir, "tune"),
                                          resolved["storage"]["endpoint_url"], retries=resolved["storage"]["retries"])
    experiment_path = f"{storage_path.rstrip('/')}/{sweep['name']}"
    restored = tune.Tuner.can_restore(experiment_path, storage_filesystem=filesystem)
    if restored and not sweep["resume"]:
        raise FileExistsError(
            f"a sweep already exists at {experiment_path}: resume it (sweep.resume=true) or pick another "
            "run_dir / sweep.storage_path / sweep.name"
        )
    if restored:
        print(f"[sweep] resuming {experiment_path}")
        tuner = tune.Tuner.restore(
            experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
            storage_filesystem=filesystem,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=new_tune_config,
            run_config=run_config(sweep, storage_path, filesystem, run_dir),
        )
    result_grid = tuner.fit()

    summary = write_results(result_grid, sweep, resolved, base_config, param_space, train_defaults, group_overrides, run_dir)
    if filesystem is not None:  # remote storage: the tables outlive the head node's run_dir
        upload_files(filesystem, run_dir, experiment_path, RESULT_FILES)
    summary.update(restored=restored, experiment_path=experiment_path)
    if sweep["final_eval"]["enabled"]:
        summary["final_eval"] = final_evaluation(compose_evaluate, summary["best"], sweep["final_eval"], resolved, run_dir)
    return summary


def tune_config(sweep: dict, max_steps: int) -> tune.TuneConfig:
    return tune.TuneConfig(
        metric=sweep["metric"],
        mode=sweep["mode"],
        # the concurrency limit belongs to the search algorithm (TuneConfig's is ignored with one given)
        search_alg=BasicVariantGenerator(random_state=sweep["seed"], max_concurrent=sweep["max_concurrent"]),
        scheduler=build_scheduler(sweep["scheduler"], max_steps),
        num_samples=sweep["num_samples"],
        trial_dirname_creator=trial_dirname,
    )


def build_scheduler(scheduler: dict, max_steps: int):
    """ASHA measures progress in optimizer steps (the `step` metric), not in reports, so milestones
    mean the same whatever `trainer.report_every` is and survive a trial's restart from a checkpoint.
    Reaching max_t does not by itself stop a trial (stop_last_trials=False), so `fit` ends normally
    and writes the trial's metrics.json; a rung decision can still stop one, at any step: the table
    then reads its reports and last checkpoint from Tune's results, which never depend on fit's end."""
    if scheduler["name"] == "fifo":
        return FIFOScheduler()
    if not 1 <= scheduler["grace_period"] <= max_steps:
        raise ValueError(
            f"sweep.scheduler.grace_period must be in [1, trainer.max_steps={max_steps}], got {scheduler['grace_period']}"
        )
    return ASHAScheduler(
        time_attr="step",
        max_t=max_steps,
        grace_period=scheduler["grace_period"],
        reduction_factor=scheduler["reduction_factor"],
        brackets=scheduler["brackets"],
        stop_last_trials=False,
    )


def run_config(sweep: dict, storage_path: str, filesystem, run_dir: str) -> tune.RunConfig:
    callbacks = [TBXLoggerCallback()]  # events in each trial's folder: tensorboard --logdir <experiment>
    if sweep["mlflow"]["enabled"]:
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=mlflow_tracking_uri(sweep, run_dir),
                experiment_name=sweep["mlflow"]["experiment_name"] or sweep["name"],
            )
        )
    return tune.RunConfig(
        name=sweep["name"],
        storage_path=storage_path,
        storage_filesystem=filesystem,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=sweep["max_failures"]),
    )


def mlflow_tracking_uri(sweep: dict, run_dir: str) -> str:
    return sweep["mlflow"]["tracking_uri"] or f"file://{os.path.join(run_dir, 'mlruns')}"


def write_results(result_grid, sweep, resolved, base_config, param_space, train_defaults, group_overrides, run_dir) -> dict:
    metric, mode = sweep["metric"], sweep["mode"]
    max_steps, storage_path = resolved["trainer"]["max_steps"], resolved["trainer"]["storage_path"]
    rows = [trial_row(result, list(param_space), metric, mode, max_steps) for result in result_grid]
    for row in rows:
        row["checkpoint"] = checkpoint_uri(row["checkpoint"], storage_path)
    ranked = rank_rows(rows, metric if sweep["best_scope"] == "last" else f"{metric}_best", mode)
    write_csv(ranked, os.path.join(run_dir, "sweep_results.csv"))
    with open(os.path.join(run_dir, "sweep_results.md"), "w") as handle:
        handle.write(f"# Sweep `{sweep['name']}`: {metric} ({mode}), best first\n\n")
        handle.write(markdown_table(ranked))
    print(f"[sweep] results ({metric}, {mode}):\n{markdown_table(ranked)}")

    best = best_row(ranked, metric if sweep["best_scope"] == "last" else f"{metric}_best")
    params = {key: best[key] for key in param_space}
    best_config = OmegaConf.to_container(OmegaConf.create(trial_config(base_config, params, best["trial_id"])), resolve=True)
    overrides = list(group_overrides) + config_overrides(best_config, train_defaults, skip=RUN_SPECIFIC_KEYS)
    header = (
        f"Best trial {best['trial_id']} of sweep {sweep['name']}: {metric} = {best[metric]} ({mode}), "
        f"step {best['step']}.\n"
        "Hydra overrides (the format of Hydra's overrides.yaml). Rerun with:\n"
        "  python -c \"import sys, yaml; sys.stdout.write(chr(0).join(yaml.safe_load(open(sys.argv[1]))))\" \\\n"
        f"    {os.path.join(run_dir, 'best_overrides.yaml')} | xargs -0 python jobs/train.py run_dir=<new dir>"
    )
    write_overrides_file(os.path.join(run_dir, "best_overrides.yaml"), overrides, header)
    print(f"[sweep] best trial {best['trial_id']}: {metric} = {best[metric]}; overrides in {run_dir}/best_overrides.yaml")
    return {"rows": ranked, "best": best, "overrides": overrides, "best_config": best_config}


def final_evaluation(compose_evaluate: Callable[[list[str]], dict], best: dict, final_eval: dict, resolved: dict, run_dir: str) -> str:
    """What `jobs/evaluate.py` does (mmdist.eval.job.run_evaluation), on the best trial's checkpoint, in this
    process and on the Ray cluster this sweep used, so evaluation is distributed the same way. Returns the
    evaluation run_dir."""
    from mmdist.eval.job import check_eval_inputs, run_evaluation  # the report's plotting: not in Tune's trial actors

    if not best["checkpoint"]:
        raise RuntimeError(f"best trial {best['trial_id']} saved no checkpoint: nothing to evaluate")
    eval_dir = os.path.join(run_dir, "best_eval")
    overrides = _evaluate_overrides(best["checkpoint"], final_eval, resolved, eval_dir)
    print(f"[sweep] evaluating the best checkpoint: jobs/evaluate.py {' '.join(overrides)}", flush=True)
    config = compose_evaluate(overrides)
    check_eval_inputs(config)
    run_evaluation(config)
    return eval_dir


def _evaluate_overrides(checkpoint: str, final_eval: dict, resolved: dict, eval_dir: str) -> list[str]:
    data_path = final_eval["data_path"] or resolved.get("validation", {}).get("path") or resolved["data"]["path"]
    return [f"checkpoint={format_value(checkpoint)}", f"data.path={format_value(data_path)}",
            f"run_dir={format_value(eval_dir)}", *final_eval["overrides"]]


def _check_final_eval(final_eval: dict, compose_evaluate: Callable[[list[str]], dict] | None, resolved: dict) -> None:
    """Fail before the sweep, not after hours of it, when the evaluation cannot run: its overrides compose
    and its eval and data configs validate."""
    if not final_eval["enabled"]:
        return
    if compose_evaluate is None:
        raise ValueError("sweep.final_eval.enabled: run_sweep needs compose_evaluate (jobs/sweep.py passes it)")
    from mmdist.data.pipeline import check_data_config
    from mmdist.eval.job import check_eval_config

    config = compose_evaluate(_evaluate_overrides("<the best checkpoint>", final_eval, resolved, "<run_dir>/best_eval"))
    check_config(config, "evaluate")  # every section (mmdist/config.py), then the eval and data values
    check_eval_config(config["eval"])
    check_data_config(config["data"])


def upload_files(filesystem, local_dir: str, remote_dir: str, names: tuple[str, ...]) -> None:
    for name in names:
        with open(os.path.join(local_dir, name), "rb") as source:
            with filesystem.open_output_stream(f"{remote_dir}/{name}") as target:
                target.write(source.read())
