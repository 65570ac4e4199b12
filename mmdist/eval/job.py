"""`evaluate(...)`: checkpoint -> embeddings (Parquet) -> metrics.json -> report, in one run directory.

    run_dir/embeddings/*.parquet    one row per clip (mmdist.eval.embed)
    run_dir/metrics.json            sections retrieval, retrieval_action, retrieval_full_video,
                                    discovery, probe, clustering, codebook (+ run information)
    run_dir/curves.json             the discovery ROC / PR curves, point by point
    run_dir/report.md, report.html, plots/*.png

The model is rebuilt from the run config stored in the checkpoint (`mmdist_config.json`) or in an
export (`model.json`, mmdist/models/export.py), so either is evaluated without its training run directory.
`embed_clips(...)` is the extraction alone: per-clip embeddings of any clips (jobs/embed.py).
`run_evaluation(config)` is what jobs/evaluate.py and a sweep's final evaluation run once Ray is connected.
"""

from __future__ import annotations

import copy
import json
import math
import os

from mmdist.config import ConfigError, check_config, check_section
from mmdist.config_schema.train import Eval
from mmdist.data.pipeline import check_data_config
from mmdist.eval.analysis import compute_metrics
from mmdist.eval.embed import read_embeddings
from mmdist.eval.extract import extract_embeddings
from mmdist.eval.report import write_report
from mmdist.models import build_model
from mmdist.models.checkpoint import load_trained, resolve_trained
from mmdist.models.export import DECODE_SECTIONS
from mmdist.ray_setup import progress_bar
from mmdist.startup import checkpoint_config, require_dataset
from mmdist.tracking import evaluation_tracking_uri, log_evaluation

REDACTED = "***"


def check_eval_config(eval_cfg: dict) -> dict:
    """Keys and types (the config schema) and values of the `eval` config (configs/eval/default.yaml);
    errors name the key."""
    eval_cfg = check_section(eval_cfg, Eval, "eval")
    if eval_cfg["batch_size"] < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {eval_cfg['batch_size']}")
    for pair in eval_cfg["discovery"]["pairs"]:
        if len(pair) != 2:
            raise ConfigError(f"eval.discovery.pairs must hold [modality, modality] pairs, got {pair!r}")
    return eval_cfg


def resolve_checkpoint(checkpoint: str, training_run_dir: str | None) -> tuple[str, str | None]:
    """An export or checkpoint URI, or a training run directory: its export when present, else the final
    checkpoint its checkpoint.txt names (`resolve_trained`); its metrics.json gives the training curves."""
    uri = resolve_trained(checkpoint)
    if uri != checkpoint:  # a training run directory
        return uri, training_run_dir or checkpoint
    return checkpoint, training_run_dir


def eval_data_config(data_cfg: dict, trained_data_cfg: dict, from_checkpoint: bool) -> dict:
    """The data config extraction uses: the job's, with the decode sections of the training run when
    `eval.decode_from_checkpoint` (the model only understands clips decoded as in training)."""
    data_cfg = copy.deepcopy(data_cfg)
    if not from_checkpoint:
        return data_cfg
    for section in DECODE_SECTIONS:
        for key, value in trained_data_cfg[section].items():
            if value == REDACTED:  # a stored config hides values whose key looks secret (mmdist.config.redact)
                print(f"[evaluate] data.{section}.{key} is redacted in the checkpoint's config; using {data_cfg[section][key]!r}")
                continue
            data_cfg[section][key] = copy.deepcopy(value)
    return data_cfg


def model_info(model_cfg: dict, data_cfg: dict, state: dict) -> dict:
    """What the analysis needs from the model: codebook size and vectors, and the video code grid."""
    if not model_cfg["codebook"]["enabled"]:
        return {"num_codes": 0, "codebook": None, "grids": {}}
    model = build_model(model_cfg, data_cfg)
    grids = {}
    if "video" in model.encoders:
        grids["video"] = model.codes.video_grid  # (t, h, w) of the video codes
    codebook = state["codes.quantizer.embed"].float().numpy()  # [V, D_code]
    return {"num_codes": codebook.shape[0], "codebook": codebook, "grids": grids}


def code_grids(rows: dict, video_grid: dict) -> dict:
    """Position grids of every modality with codes: video (t, h, w) from the model, audio and text
    are sequences (one axis, their code width)."""
    grids = dict(video_grid)
    for m in ("audio", "text"):
        if f"codes_{m}" in rows:
            grids[m] = (rows[f"codes_{m}"].shape[1],)
    return grids


def read_history(training_run_dir: str | None) -> list[dict]:
    if training_run_dir is None:
        return []
    path = os.path.join(training_run_dir, "metrics.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"training_run_dir {training_run_dir} has no metrics.json")
    with open(path) as handle:
        return json.load(handle).get("history", [])


def json_safe(value):
    """NaN / inf become null (strict JSON); numpy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    checkpoint_uri: str,
    data_cfg: dict,
    storage_cfg: dict,
    eval_cfg: dict,
    run_dir: str,
    training_run_dir: str | None = None,
) -> dict:
    """Extract embeddings of every clip under `data.path` with an actor pool, write them as Parquet
    in `run_dir/embeddings`, compute every metric from those files, write metrics.json and the report.

    Runs on the connected Ray (the job connects with `mmdist.ray_setup.init_ray`). Returns metrics.json's dict.
    """
    check_eval_config(eval_cfg)
    checkpoint_uri, training_run_dir = resolve_checkpoint(checkpoint_uri, training_run_dir)
    state, run_config, _ = load_trained(checkpoint_uri, storage_cfg["endpoint_url"])
    model_cfg = run_config["model"]
    data_cfg = eval_data_config(data_cfg, run_config["data"], eval_cfg["decode_from_checkpoint"])
    model_facts = model_info(model_cfg, data_cfg, state)

    os.makedirs(run_dir, exist_ok=True)
    embeddings_dir = os.path.join(run_dir, "embeddings")
    bar = progress_bar(3, "evaluation: extracting embeddings", "phase")  # one bar, phase by phase
    extraction = extract_embeddings(state, model_cfg, data_cfg, storage_cfg, eval_cfg, embeddings_dir, eval_cfg["seed"])
    bar.update()
    bar.set_description("evaluation: metrics")
    rows = read_embeddings(embeddings_dir)
    model_facts["grids"] = code_grids(rows, model_facts["grids"])
    metrics, artifacts = compute_metrics(rows, eval_cfg, model_facts)
    bar.update()
    bar.set_description("evaluation: report")
    metrics = {
        "checkpoint": checkpoint_uri,
        "recipe": run_config.get("recipe", {}).get("name"),
        "data_path": data_cfg["path"],
        "embeddings": embeddings_dir,
        "dropped": extraction["dropped"],
        **metrics,
    }
    with open(os.path.join(run_dir, "metrics.json"), "w") as handle:
        json.dump(json_safe(metrics), handle, indent=1)
    with open(os.path.join(run_dir, "curves.json"), "w") as handle:
        json.dump(json_safe(artifacts.get("discovery_curves", {})), handle)
    if eval_cfg["report"]["enabled"]:
        write_report(metrics, artifacts, read_history(training_run_dir), run_dir)
    bar.update()
    bar.close()
    return json_safe(metrics)


def embed_clips(checkpoint: str, data_cfg: dict, storage_cfg: dict, eval_cfg: dict, out: str) -> dict:
    """Per-clip embedding rows (mmdist.eval.embed) of every clip under `data.path`, written as Parquet
    into `out` (local or s3://) by evaluation's extraction actor pool, decoded as the trained run did
    when `eval.decode_from_checkpoint`. `checkpoint`: an export, a checkpoint folder or a training run_dir.

    Returns `{"checkpoint": the URI read, "out", "clips": rows written, "dropped": {reason: count}}`."""
    check_eval_config(eval_cfg)
    state, run_config, uri = load_trained(checkpoint, storage_cfg["endpoint_url"])
    data_cfg = eval_data_config(data_cfg, run_config["data"], eval_cfg["decode_from_checkpoint"])
    extraction = extract_embeddings(state, run_config["model"], data_cfg, storage_cfg, eval_cfg, out, eval_cfg["seed"])
    return {"checkpoint": uri, "out": out, **extraction}


def check_eval_inputs(config: dict) -> None:
    """What jobs/evaluate.py reads, checked before Ray starts: every section of its config (the config
    schema), the eval and data values, the checkpoint's saved config (the model is rebuilt from it),
    data.path's shards and the MLflow run to log into."""
    check_config(config, "evaluate")
    check_eval_config(config["eval"])
    uri, training_run_dir = resolve_checkpoint(config["checkpoint"], config["training_run_dir"])
    checkpoint_config(uri, "checkpoint", config["storage"]["endpoint_url"])
    check_data_config(config["data"])
    require_dataset(config["data"]["path"], "data.path", config["storage"])
    evaluation_tracking_uri(config["logging"]["mlflow"], training_run_dir)


def run_evaluation(config: dict) -> dict:
    """The evaluate job's work on a connected Ray, from its resolved `config` (configs/evaluate.yaml):
    `evaluate`, the headline figures printed and, with `logging.mlflow.run_id`, the figures and report
    logged into that MLflow run. jobs/evaluate.py and a sweep's final evaluation (mmdist.tune.sweep) run
    it. Returns metrics.json's dict."""
    import ray.data

    mlflow_cfg = config["logging"]["mlflow"]
    mlflow_uri = evaluation_tracking_uri(mlflow_cfg, resolve_checkpoint(config["checkpoint"], config["training_run_dir"])[1])
    ray.data.DataContext.get_current().enable_progress_bars = config["data_progress_bars"]
    metrics = evaluate(
        config["checkpoint"], config["data"], config["storage"], config["eval"], config["run_dir"], config["training_run_dir"]
    )
    for name, values in metrics["retrieval"].items():
        print(f"[evaluate] {name}: R@1 {values['R@1']:.1f} R@5 {values['R@5']:.1f} R@10 {values['R@10']:.1f} MdR {values['MdR']:.1f}")
    for name, values in metrics["discovery"].items():
        print(f"[evaluate] discovery {name}: ROC-AUC {values['roc_auc']:.3f} PR-AUC {values['pr_auc']:.3f}")
    print(f"[evaluate] {metrics['num_clips']} clips; metrics, report and embeddings in {config['run_dir']}")
    if mlflow_cfg["run_id"]:
        log_evaluation(mlflow_cfg["run_id"], mlflow_uri, metrics, config["run_dir"])
        print(f"[evaluate] figures and report logged to MLflow run {mlflow_cfg['run_id']} ({mlflow_uri})")
    return metrics
