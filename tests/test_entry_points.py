"""Bad input at every entry point fails at start-up, before Ray starts, with one line naming the
key, the file or the line (mmdist/startup.py, mmdist/data/ingest.py, mmdist/data/storage.py).

Most cases call the start-up check a job runs (no Ray, no subprocess); one subprocess per job
shows the job runs it before Ray: it fails in seconds and never prints Ray's start-up line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmdist.data.ingest import ManifestError, ingest
from mmdist.data.storage import join_url, list_shards, write_bytes
from mmdist.models.checkpoint import RUN_CONFIG_FILE, load_run_config, manifest_name
from mmdist.eval.job import check_eval_inputs
from mmdist.startup import check_train_inputs, checkpoint_config
from tests.conftest import REPO, load_job_cfg
from tests.eval.conftest import write_checkpoint

NO_RAY = "Started a local Ray instance"


def run_job(script: str, *overrides: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
    )


def assert_fails_with_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    """A non-zero exit whose error output has `message` on one line, and no Ray started."""
    assert result.returncode != 0, result.stdout[-2000:]
    lines = [line for line in result.stderr.splitlines() if message in line]
    assert lines, result.stderr[-3000:]
    assert NO_RAY not in result.stderr + result.stdout


def train_config(data_path: str, *overrides: str) -> dict:
    return load_job_cfg("train", (f"data.path={data_path}", "run_dir=unused", *overrides))


# ---------------------------------------------------------------- the recipe


def test_unknown_recipe_group_is_named_by_hydra(synthetic_dir):
    result = run_job("train.py", "recipe=nope", f"data.path={synthetic_dir}")
    assert_fails_with_one_line(result, "Could not find 'recipe/nope'")
    assert "mc3_vq" in result.stderr  # the available recipes are listed


def test_unknown_recipe_name_fails_before_ray(synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match=r"recipe.name must be one of \['cmcm', 'mc3', 'mc3_vq', 'mcn', 'mmv'\], got 'nope'"):
        check_train_inputs(train_config(synthetic_dir, "recipe.name=nope"))
    result = run_job("train.py", "recipe.name=nope", f"data.path={synthetic_dir}", f"run_dir={tmp_path}/run")
    assert_fails_with_one_line(result, "recipe.name must be one of")


# ---------------------------------------------------------------- data.path: missing, empty, local and s3


def test_missing_or_empty_local_data_paths_are_named(synthetic_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data.path='{tmp_path}/nope' does not exist"):
        check_train_inputs(train_config(f"{tmp_path}/nope"))
    with pytest.raises(FileNotFoundError, match=f"data.path='{tmp_path}/missing.parquet' does not exist"):
        check_train_inputs(train_config(f"{tmp_path}/missing.parquet"))  # a missing single shard
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no shards here")
    with pytest.raises(FileNotFoundError, match=r"data.path='.*/empty' holds no \*.parquet shard"):
        check_train_inputs(train_config(f"{tmp_path}/empty"))
    with pytest.raises(FileNotFoundError, match=r"notes.txt' is a file but not a \*.parquet shard"):
        check_train_inputs(train_config(f"{tmp_path}/empty/notes.txt"))
    with pytest.raises(FileNotFoundError, match=f"validation.path='{tmp_path}/held-out' does not exist"):
        check_train_inputs(train_config(synthetic_dir, f"validation.path={tmp_path}/held-out"))
    one_shard = list_shards(synthetic_dir)[0]
    check_train_inputs(train_config(one_shard))  # a single shard is a dataset


def test_missing_or_empty_s3_data_paths_are_named(s3_env, synthetic_dir):
    with pytest.raises(FileNotFoundError, match=f"data.path='{s3_env}/clips' does not exist"):
        check_train_inputs(train_config(f"{s3_env}/clips"))  # an empty bucket: no such prefix
    with pytest.raises(FileNotFoundError, match=f"data.path='{s3_env}' holds no"):
        check_train_inputs(train_config(s3_env))
    with pytest.raises(FileNotFoundError, match="data.path='s3://no-such-bucket-here/clips' does not exist"):
        check_train_inputs(train_config("s3://no-such-bucket-here/clips"))
    write_bytes(f"{s3_env}/clips/README", b"shards are elsewhere")
    with pytest.raises(FileNotFoundError, match=f"data.path='{s3_env}/clips' holds no"):
        check_train_inputs(train_config(f"{s3_env}/clips"))
    with open(list_shards(synthetic_dir)[0], "rb") as shard:
        write_bytes(f"{s3_env}/clips/part-0.parquet", shard.read())
    check_train_inputs(train_config(f"{s3_env}/clips"))
    check_train_inputs(train_config(f"{s3_env}/clips/part-0.parquet"))


def test_check_data_job_names_an_empty_folder_before_ray(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_job("check_data.py", f"data.path={tmp_path}/empty")
    assert_fails_with_one_line(result, f"data.path='{tmp_path}/empty' holds no *.parquet shard")


# ---------------------------------------------------------------- the ingest manifest


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"video": "a.mp4", "start_s": 0', "line 2: not valid JSON: Expecting ',' delimiter"),
        ('{"start_s": 0, "end_s": 1}', "line 2: 'video' (path or URL of a media file) is required"),
        ('{"video": "a.mp4", "caption": "x"}', "line 2: unknown key(s) ['caption']"),
    ],
)
def test_an_invalid_manifest_line_stops_ingest_before_any_clip(tmp_path, job_cfg, bad_line, message):
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("\n".join([json.dumps({"video": "a.mp4"}), bad_line, json.dumps({"video": "b.mp4"})]) + "\n")
    with pytest.raises(ManifestError) as err:
        ingest(str(manifest), str(tmp_path / "out"), job_cfg("ingest"))
    assert str(err.value).startswith(f"{manifest} {message}") and "\n" not in str(err.value)
    assert "skip_invalid_entries=true" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing cut, nothing written


def test_ingest_job_names_the_manifest_line_and_a_missing_manifest(tmp_path):
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text('{"video": "a.mp4"}\n\n{"end_s": 1}\n{not json\n')
    result = run_job("ingest.py", f"manifest={manifest}", f"out={tmp_path}/out", cwd=tmp_path)
    assert_fails_with_one_line(result, f"{manifest} line 3: 'video' (path or URL of a media file) is required (and 1 more")
    result = run_job("ingest.py", f"manifest={tmp_path}/nope.jsonl", f"out={tmp_path}/out", cwd=tmp_path)
    assert_fails_with_one_line(result, f"manifest='{tmp_path}/nope.jsonl' does not exist")


# ---------------------------------------------------------------- checkpoints: warm start and evaluation


@pytest.fixture(scope="module")
def mmv_checkpoint(tmp_path_factory) -> str:
    """A checkpoint of the tiny mmv model (weights and saved run config, as training writes them)."""
    import torch

    from mmdist.models import build_model

    config = load_job_cfg("train", ("recipe=mmv", "data.path=unused", "run_dir=unused"))
    torch.manual_seed(0)
    model = build_model(config["model"], config["data"])
    return write_checkpoint(tmp_path_factory.mktemp("mmv") / "checkpoint", model, config)


def test_warm_start_from_another_recipe_says_what_is_skipped(synthetic_dir, mmv_checkpoint, capsys):
    from mmdist.models import build_model, load_matching_state_dict
    from mmdist.models.checkpoint import load_model_state

    config = train_config(synthetic_dir, "recipe=cmcm", f"model.init_checkpoint={mmv_checkpoint}")
    check_train_inputs(config)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[warm start] model.init_checkpoint={mmv_checkpoint} (a mmv run) differs from this model at")
    for difference in ("model.head ('fac' -> 'joint')", "model.codebook.enabled (False -> True)", "model.embed_dim (256 -> 128)"):
        assert difference in line
    # what the line announces happens when the workers load it: some tensors load, the others are skipped
    report = load_matching_state_dict(build_model(config["model"], config["data"]), load_model_state(mmv_checkpoint))
    assert report["loaded"] and report["skipped"] and report["missing"]
    check_train_inputs(train_config(synthetic_dir, "recipe=mmv", f"model.init_checkpoint={mmv_checkpoint}"))
    assert capsys.readouterr().out == ""  # the same model: nothing to say


def test_warm_start_from_a_missing_or_foreign_folder_fails_before_ray(synthetic_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model.init_checkpoint='{tmp_path}/nope' does not exist"):
        check_train_inputs(train_config(synthetic_dir, f"model.init_checkpoint={tmp_path}/nope"))
    with pytest.raises(FileNotFoundError, match=f"model.init_checkpoint='{tmp_path}' has neither model.json nor {RUN_CONFIG_FILE}"):
        check_train_inputs(train_config(synthetic_dir, f"model.init_checkpoint={tmp_path}"))


def corrupt_copy(checkpoint: str, folder, content: bytes) -> str:
    import shutil

    shutil.copytree(checkpoint, folder)
    (folder / RUN_CONFIG_FILE).write_bytes(content)
    return str(folder)


def test_a_checkpoint_without_or_with_a_corrupted_config_is_named(mmv_checkpoint, synthetic_dir, tmp_path):
    eval_cfg = load_job_cfg("evaluate", (f"data.path={synthetic_dir}", "checkpoint=unused"))
    truncated = corrupt_copy(mmv_checkpoint, tmp_path / "truncated", open(f"{mmv_checkpoint}/{RUN_CONFIG_FILE}", "rb").read()[:100])
    for check in (lambda: check_eval_inputs({**eval_cfg, "checkpoint": truncated}), lambda: load_run_config(truncated)):
        with pytest.raises(ValueError, match=f"{truncated}/{RUN_CONFIG_FILE} is not valid JSON .*: the checkpoint's config is corrupted"):
            check()
    no_model = corrupt_copy(mmv_checkpoint, tmp_path / "no-model", b'{"data": {}}')
    with pytest.raises(ValueError, match=f"{RUN_CONFIG_FILE} has no model section"):
        check_eval_inputs({**eval_cfg, "checkpoint": no_model})
    weights_only = tmp_path / "weights-only"
    corrupt_copy(mmv_checkpoint, weights_only, b"")
    os.remove(weights_only / RUN_CONFIG_FILE)
    with pytest.raises(FileNotFoundError, match=f"checkpoint='{weights_only}' has neither"):
        check_eval_inputs({**eval_cfg, "checkpoint": str(weights_only)})
    check_eval_inputs({**eval_cfg, "checkpoint": mmv_checkpoint})  # the intact one passes


def test_evaluate_job_names_a_corrupted_checkpoint_config_before_ray(mmv_checkpoint, synthetic_dir, tmp_path):
    broken = corrupt_copy(mmv_checkpoint, tmp_path / "broken", b"{not json")
    result = run_job("evaluate.py", f"checkpoint={broken}", f"data.path={synthetic_dir}", f"run_dir={tmp_path}/eval")
    assert_fails_with_one_line(result, f"{broken}/{RUN_CONFIG_FILE} is not valid JSON")


def test_s3_checkpoint_config_is_read_without_the_weights(s3_env, mmv_checkpoint):
    uri = f"{s3_env}/runs/checkpoint"
    with pytest.raises(FileNotFoundError, match=f"checkpoint='{uri}' does not exist"):
        checkpoint_config(uri, "checkpoint", None)
    saved = open(os.path.join(mmv_checkpoint, RUN_CONFIG_FILE), "rb").read()
    write_bytes(join_url(uri, RUN_CONFIG_FILE), saved)
    manifest = {"rank": 0, "world_size": 1, "files": {RUN_CONFIG_FILE: len(saved)}}  # weights left out: not read
    write_bytes(join_url(uri, manifest_name(0)), json.dumps(manifest).encode())
    assert checkpoint_config(uri, "checkpoint", None)["recipe"]["name"] == "mmv"
    write_bytes(join_url(uri, RUN_CONFIG_FILE), saved[:50])
    with pytest.raises(ValueError, match=f"{uri}/{RUN_CONFIG_FILE} is not valid JSON"):
        checkpoint_config(uri, "checkpoint", None)
