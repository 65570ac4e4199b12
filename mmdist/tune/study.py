"""Reproduction studies: one paper's ablation table as a grid of training runs, each evaluated on
held-out clips, aggregated over seeds beside the paper's numbers, with one line per claim.

A study (`configs/study/<name>.yaml`) names its rows (Hydra overrides of the training config), the
paper's figures per row, the metrics to read from each trial's evaluation `metrics.json`, and its
claims. `run_study` runs every (row, seed) as a Ray Tune trial (`grid_search`, trials in parallel as
`study.max_concurrent` and the cluster allow): `mmdist.train.fit`, then `mmdist.eval.evaluate` on the
study's held-out world. Rows with `warm_start: <row>` run in a second wave, initialised from that
row's final checkpoint of the same seed (CMCM Sec. 4.1 trains after a baseline).

Writes into `run_dir`: `study.md`, `study.csv` (a row per ablation row: mean and spread over seeds
of each metric, the paper's figure beside it), `claims.json`, `trials/<row>-s<seed>/` (each trial's
training run_dir, with `eval/metrics.json`) and `tune/` (Tune's experiment state).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable

import numpy as np
from omegaconf import OmegaConf
from ray import tune

from mmdist.config import ConfigError, check_section
from mmdist.config_schema.tune import Study
from mmdist.eval import evaluate
from mmdist.ray_setup import init_ray
from mmdist.train import fit

CLAIM_KINDS = {"above": ("row", "others", "metric"), "at_least": ("row", "metric", "value"),
               "below": ("row", "metric", "value")}


def check_study(study: dict) -> None:
    """Keys and types by the config schema (mmdist/config_schema/); rows, metrics and claims refer to
    what exists. Errors name the key."""
    study = check_section(study, Study, "study")
    if study["scale"] not in study["scales"]:
        raise ConfigError(f"study.scale must be one of {sorted(study['scales'])}, got {study['scale']!r}")
    if not study["seeds"] or not all(isinstance(seed, int) for seed in study["seeds"]):
        raise ConfigError(f"study.seeds must be a non-empty list of integers, got {study['seeds']!r}")
    for name, row in study["rows"].items():
        if row["warm_start"] is not None and row["warm_start"] not in study["rows"]:
            raise ConfigError(f"study.rows.{name}.warm_start: no row named {row['warm_start']!r}")
        if row["warm_start"] is not None and study["rows"][row["warm_start"]]["warm_start"] is not None:
            raise ConfigError(f"study.rows.{name}.warm_start: row {row['warm_start']!r} is itself warm-started")
        for metric in row["paper"] or {}:
            if metric not in study["metrics"]:
                raise ConfigError(f"study.rows.{name}.paper.{metric}: not among study.metrics {sorted(study['metrics'])}")
    for index, claim in enumerate(study["claims"]):
        kind = claim.get("kind")
        if kind not in CLAIM_KINDS or set(claim) != {"kind", "text", *CLAIM_KINDS[kind]}:
            raise ConfigError(f"study.claims[{index}]: kind must be one of {sorted(CLAIM_KINDS)} with the keys "
                             f"text + {CLAIM_KINDS.get(kind, '...')}, got {sorted(claim)}")
        rows = [claim["row"], *claim.get("others", [])]
        for row in rows:
            if row not in study["rows"]:
                raise ConfigError(f"study.claims[{index}]: no row named {row!r}")
        if claim["metric"] not in study["metrics"]:
            raise ConfigError(f"study.claims[{index}].metric: {claim['metric']!r} is not among study.metrics")


def metric_value(metrics: dict, spec: dict) -> float:
    """One study metric from an evaluation metrics.json: the mean of the values at `spec["mean_of"]`
    (dotted paths, e.g. `retrieval.video->audio.R@1`); NaN when a path is absent or null."""
    values = []
    for path in spec["mean_of"]:
        node = metrics
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        values.append(float("nan") if node is None else float(node) * spec.get("scale", 1.0))
    return float(np.mean(values))


def aggregate(trial_metrics: dict[str, list[dict]], study: dict) -> dict[str, dict[str, dict]]:
    """{row: [metrics.json per seed]} -> {row: {metric: {mean, std, n, values}}} (std over seeds, ddof 1)."""
    table = {}
    for row, runs in trial_metrics.items():
        table[row] = {}
        for name, spec in study["metrics"].items():
            values = [metric_value(run, spec) for run in runs]
            finite = [v for v in values if math.isfinite(v)]
            table[row][name] = {
                "mean": float(np.mean(finite)) if finite else float("nan"),
                "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan"),
                "n": len(finite),
                "values": values,
            }
    return table


def judge_claims(table: dict, study: dict) -> list[dict]:
    """Each claim of the study against the means over seeds: holds / does not hold, with the figures.
    "above" compares in the metric's direction (`higher_is_better`); a claim on a missing row or
    metric value "cannot be judged"."""
    verdicts = []
    for claim in study["claims"]:
        metric, spec = claim["metric"], study["metrics"][claim["metric"]]
        better = (lambda a, b: a > b) if spec.get("higher_is_better", True) else (lambda a, b: a < b)
        mean = table.get(claim["row"], {}).get(metric, {}).get("mean", float("nan"))
        if claim["kind"] == "above":
            others = {row: table.get(row, {}).get(metric, {}).get("mean", float("nan")) for row in claim["others"]}
            figures = {claim["row"]: mean, **others}
            verdict = all(better(mean, value) for value in others.values())
        else:
            figures = {claim["row"]: mean, "threshold": claim["value"]}
            verdict = mean >= claim["value"] if claim["kind"] == "at_least" else mean < claim["value"]
        judged = all(math.isfinite(value) for value in figures.values())
        verdicts.append({
            "text": claim["text"],
            "metric": metric,
            "verdict": ("holds" if verdict else "does not hold") if judged else "cannot be judged",
            "figures": figures,
        })
    return verdicts


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def markdown(table: dict, verdicts: list[dict], study: dict, seeds: list[int]) -> str:
    metrics = list(study["metrics"])
    lines = [
        f"# Study `{study['name']}`: {study['paper']}",
        "",
        f"Scale `{study['scale']}`, seeds {seeds}. Each cell: mmdist mean ± std over seeds (paper's figure in brackets).",
        "",
        "| row | " + " | ".join(metrics) + " |",
        "| --- | " + " | ".join("---" for _ in metrics) + " |",
    ]
    for row, spec in study["rows"].items():
        cells = []
        for name in metrics:
            cell = table.get(row, {}).get(name, {})
            text = f"{_fmt(cell.get('mean'))} ± {_fmt(cell.get('std'), 2)}"
            paper = (spec["paper"] or {}).get(name)
            cells.append(text + (f" [{paper}]" if paper is not None else ""))
        lines.append(f"| {spec['label']} | " + " | ".join(cells) + " |")
    lines += ["", "## Claims", ""]
    for verdict in verdicts:
        figures = ", ".join(f"{key} {_fmt(value)}" for key, value in verdict["figures"].items())
        lines.append(f"- **{verdict['verdict']}**: {verdict['text']} ({verdict['metric']}: {figures})")
    return "\n".join(lines) + "\n"


def write_tables(table: dict, verdicts: list[dict], study: dict, seeds: list[int], run_dir: str) -> str:
    text = markdown(table, verdicts, study, seeds)
    with open(os.path.join(run_dir, "study.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(run_dir, "study.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "label", "metric", "mean", "std", "n", "paper", "values"])
        for row, spec in study["rows"].items():
            for name in study["metrics"]:
                cell = table.get(row, {}).get(name, {"mean": float("nan"), "std": float("nan"), "n": 0, "values": []})
                writer.writerow([row, spec["label"], name, cell["mean"], cell["std"], cell["n"],
                                 (spec["paper"] or {}).get(name, ""), json.dumps(cell["values"])])
    with open(os.path.join(run_dir, "claims.json"), "w") as handle:
        json.dump(verdicts, handle, indent=1)
    return text


def trial_dir(run_dir: str, row: str, seed: int) -> str:
    return os.path.join(run_dir, "trials", f"{row}-s{seed}")


def study_trial(params: dict, row_configs: dict, study_cfg: dict) -> None:
    """One (row, seed): train, then evaluate the final checkpoint on the held-out world."""
    row, seed = params["row"], params["seed"]
    config = OmegaConf.create(row_configs[row])
    directory = trial_dir(study_cfg["run_dir"], row, seed)
    config.seed = seed
    config.run_dir = directory
    config.trainer.run_name = f"{study_cfg['name']}-{row}-s{seed}"
    warm_start = params.get("warm_start")
    if warm_start:
        config.model.init_checkpoint = warm_start[str(seed)]
    summary = fit(config)
    resolved = OmegaConf.to_container(config, resolve=True)
    # the row's own `eval` section (e.g. eval.similarity=dot for the MMS recipes), on the held-out world
    evaluate(summary["checkpoint"], dict(resolved["data"], path=study_cfg["test_path"], limit=None),
             resolved["storage"], resolved["eval"], os.path.join(directory, "eval"), directory)


def run_study(study: dict, compose_row: Callable[[list[str]], dict], settings: dict) -> dict:
    """Run (or finish) the study. `compose_row(overrides)` returns the unresolved training config of
    one row; `settings` holds run_dir, train_path, test_path, ray."""
    check_study(study)
    run_dir = os.path.abspath(settings["run_dir"])
    os.makedirs(run_dir, exist_ok=True)
    common = list(study["common"]) + list(study["scales"][study["scale"]])
    row_configs = {
        name: compose_row(common + [f"data.path={settings['train_path']}"] + list(row["overrides"]))
        for name, row in study["rows"].items()
    }
    study_cfg = {"run_dir": run_dir, "name": study["name"], "test_path": settings["test_path"]}
    init_ray(settings["ray"])
    seeds = list(study["seeds"])
    first = [name for name, row in study["rows"].items() if row["warm_start"] is None]
    second = [name for name in study["rows"] if name not in first]
    for wave, rows in enumerate((first, second)):
        todo = [row for row in rows if any(not _evaluated(run_dir, row, seed) for seed in seeds)]
        if not todo:
            continue
        space = {"row": tune.grid_search(todo), "seed": tune.grid_search(seeds)}
        if wave == 1:
            # one grid per source row keeps warm_start a plain value of the trial's params
            for source in sorted({study["rows"][row]["warm_start"] for row in todo}):
                rows_here = [row for row in todo if study["rows"][row]["warm_start"] == source]
                checkpoints = {str(seed): _final_checkpoint(run_dir, source, seed) for seed in seeds}
                _tune(dict(space, row=tune.grid_search(rows_here), warm_start=checkpoints),
                      row_configs, study_cfg, study, run_dir, f"wave{wave}-{source}")
        else:
            _tune(space, row_configs, study_cfg, study, run_dir, f"wave{wave}")

    trial_metrics = {row: [_read_eval(run_dir, row, seed) for seed in seeds] for row in study["rows"]}
    table = aggregate(trial_metrics, study)
    verdicts = judge_claims(table, study)
    text = write_tables(table, verdicts, study, seeds, run_dir)
    print(text, flush=True)
    return {"table": table, "claims": verdicts, "markdown": text}


def _tune(space: dict, row_configs: dict, study_cfg: dict, study: dict, run_dir: str, name: str) -> None:
    trainable = tune.with_resources(
        tune.with_parameters(study_trial, row_configs=row_configs, study_cfg=study_cfg), {"CPU": 0.01}
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=study["max_concurrent"],
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(name=name, storage_path=os.path.join(run_dir, "tune"),
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    results = tuner.fit()
    failed = [result for result in results if result.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} study trial(s) failed; first error: {failed[0].error}")


def _evaluated(run_dir: str, row: str, seed: int) -> bool:
    return os.path.exists(os.path.join(trial_dir(run_dir, row, seed), "eval", "metrics.json"))


def _read_eval(run_dir: str, row: str, seed: int) -> dict:
    path = os.path.join(trial_dir(run_dir, row, seed), "eval", "metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def _final_checkpoint(run_dir: str, row: str, seed: int) -> str:
    path = os.path.join(trial_dir(run_dir, row, seed), "checkpoint.txt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"row {row!r} seed {seed} has no final checkpoint ({path}): it must finish "
                                "before the rows warm-started from it")
    with open(path) as handle:
        return handle.read().strip()
