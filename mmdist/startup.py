"""Start-up checks of the jobs: bad input fails before Ray starts, in one line naming the key,
the file or the line, instead of inside a Ray worker minutes later.

The checks live with what they check (recipes, data config, storage, checkpoints); this module
calls them in the order a job needs them:

    every job                      mmdist.config.check_config: every section of its config against the
                                   config schema (mmdist/config_schema/), first
    jobs/train.py, jobs/sweep.py   check_train_inputs   (mmdist.train.fit, before init_ray)
    jobs/evaluate.py               check_eval_inputs   (in mmdist.eval.job: evaluation comes after training)
    jobs/check_data.py             require_dataset
    jobs/ingest.py                 the manifest is parsed whole before any clip is cut (mmdist.data.ingest)
"""

from __future__ import annotations

import pyarrow.fs as pafs

from mmdist.config import check_config
from mmdist.data.pipeline import check_data_config
from mmdist.data.storage import join_url, read_bytes, require_shards, resolve_filesystem
from mmdist.models.checkpoint import EXPORT_CONFIG_FILE, RUN_CONFIG_FILE, parse_run_config, require_complete_uri

# Differences listed in the warm-start line before "and N more".
SHOWN_DIFFERENCES = 8


def require_dataset(url: str, key: str, storage_cfg: dict) -> list[str]:
    """The shards under the dataset URL of config key `key`; an error naming the key when there is none."""
    return require_shards(
        url, key, storage_cfg["endpoint_url"], retries=storage_cfg["retries"], backoff_s=storage_cfg["backoff_s"]
    )


def checkpoint_config(uri: str, key: str, endpoint_url: str | None) -> dict:
    """The run config saved with the export or checkpoint at `uri` (local or s3://), read without
    downloading the weights. An error names `key` when `uri` does not exist or holds no config, the
    file when the config is corrupted, and what is missing when a training checkpoint is incomplete
    (a worker killed while writing or uploading it: mmdist.models.checkpoint.require_complete)."""
    for name in (EXPORT_CONFIG_FILE, RUN_CONFIG_FILE):
        url = join_url(uri, name)
        try:
            content = read_bytes(url, endpoint_url)
        except (FileNotFoundError, IsADirectoryError):
            continue
        config = parse_run_config(content, url)
        require_complete_uri(uri, endpoint_url, name=f"{key}={uri!r}")
        return config
    filesystem, path = resolve_filesystem(uri, endpoint_url)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{key}={uri!r} does not exist")
    raise FileNotFoundError(
        f"{key}={uri!r} has neither {EXPORT_CONFIG_FILE} nor {RUN_CONFIG_FILE}: not an export or checkpoint written by mmdist"
    )


def config_differences(saved: dict, current: dict, prefix: str) -> list[str]:
    """`prefix.key (saved -> current)` for every leaf that differs between two nested configs."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        name, old, new = f"{prefix}.{key}", saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, name)
        elif old != new:
            differences.append(f"{name} ({old!r} -> {new!r})")
    return differences


def warm_start_line(uri: str, saved: dict, model_cfg: dict) -> str | None:
    """What a warm start from a checkpoint of another model will skip, in one line; None when the
    models match. The workers load every tensor whose name and shape match and list the others."""
    ignored = {"init_checkpoint"}
    differences = config_differences(
        {k: v for k, v in saved["model"].items() if k not in ignored},
        {k: v for k, v in model_cfg.items() if k not in ignored},
        "model",
    )
    if not differences:
        return None
    shown = ", ".join(differences[:SHOWN_DIFFERENCES])
    more = f" and {len(differences) - SHOWN_DIFFERENCES} more" if len(differences) > SHOWN_DIFFERENCES else ""
    recipe = (saved.get("recipe") or {}).get("name", "unknown")
    return (
        f"[warm start] model.init_checkpoint={uri} (a {recipe} run) differs from this model at {shown}{more}: "
        "its tensors of other names or shapes are skipped, and this model's tensors it lacks keep their "
        "initial values (the workers list both)"
    )


def check_train_inputs(config: dict) -> None:
    """What a training run reads, checked before Ray starts: every section of the training config (the
    config schema), the recipe's and the data config's values, that data.path (and validation.path) hold
    shards, and that model.init_checkpoint is a checkpoint written by mmdist; a warm start from another
    model prints what will be skipped."""
    from mmdist.objectives import validate_recipe

    check_config(config, "train")
    validate_recipe(config["recipe"])
    check_data_config(config["data"])
    storage_cfg = config["storage"]
    require_dataset(config["data"]["path"], "data.path", storage_cfg)
    validation = config["validation"]
    if validation["path"] and validation["every"]:
        require_dataset(validation["path"], "validation.path", storage_cfg)
    uri = config["model"]["init_checkpoint"]
    if uri:
        saved = checkpoint_config(uri, "model.init_checkpoint", storage_cfg["endpoint_url"])
        line = warm_start_line(uri, saved, config["model"])
        if line:
            print(line, flush=True)
