"""Sweep storage on S3 (a real moto S3 server): Tune's storage path and filesystem (mmdist.data.storage.ray_storage,
which the trainer's checkpoints use too), and the result files copied next to the experiment so that they outlive
the head node."""

from __future__ import annotations

import boto3

from mmdist.data.storage import is_remote, ray_storage
from mmdist.tune.sweep import RESULT_FILES, upload_files


def test_results_are_copied_next_to_an_s3_experiment(s3_env, tmp_path):
    bucket = s3_env.removeprefix("s3://")
    path, filesystem = ray_storage(f"{s3_env}/sweeps", None, retries=1)
    assert path == f"{bucket}/sweeps" and filesystem is not None and filesystem.type_name == "s3"
    for name in RESULT_FILES:
        (tmp_path / name).write_text(f"content of {name}\n")
    upload_files(filesystem, str(tmp_path), f"{path}/smoke", RESULT_FILES)
    client = boto3.client("s3")
    for name in RESULT_FILES:
        body = client.get_object(Bucket=bucket, Key=f"sweeps/smoke/{name}")["Body"].read().decode()
        assert body == f"content of {name}\n"


def test_local_storage_is_an_absolute_path_without_filesystem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ray_storage("runs/tune", None, retries=1) == (str(tmp_path / "runs" / "tune"), None)
    assert ray_storage(f"file://{tmp_path}/t", None, retries=1) == (f"{tmp_path}/t", None)


def test_is_remote():
    assert [is_remote(url) for url in ("s3://b/x", "gs://b", "file:///tmp/x", "/tmp/x", "runs/x")] == [
        True, True, False, False, False]
