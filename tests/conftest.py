"""Fixtures shared by every test area.

* `s3_server` (session): a real S3-compatible HTTP server (`moto` in server mode) on 127.0.0.1.
* `s3_env`: the standard AWS variables pointed at that server, and a fresh bucket: `s3://<bucket>`.
* `world_cfg`: the make_dataset job config, composed by Hydra exactly as the job composes it;
  `job_cfg(name, overrides)` does the same for any job config.
* `synthetic_dir` (session): a small synthetic world on local disk (24 clips, seed 0, 3 shards).
"""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys
import time
import types
import urllib.request
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


def load_job_cfg(config_name: str, overrides: tuple[str, ...] = ()) -> dict:
    """A job's config as a plain dict, composed by Hydra from configs/ (defaults list included).

    Required keys the caller did not override stay "???".
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.fixture(scope="session")
def job_cfg():
    """`load_job_cfg(config_name, overrides=())`: any job's composed config as a dict."""
    return load_job_cfg


@pytest.fixture
def world_cfg() -> dict:
    """configs/make_dataset.yaml (+ storage: default) as a dict; a fresh copy per test."""
    return load_job_cfg("make_dataset")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float, log: pathlib.Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer {url} within {timeout_s} s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """`python -m moto.server` on a free port; yields .endpoint_url and .create_bucket(name=None) -> name.

    Sets no environment variable: tests that want the AWS variables use `s3_env`.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    endpoint_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint_url}/moto-api/", process, timeout_s=60, log=log)

        def create_bucket(name: str | None = None) -> str:
            import boto3

            name = name or f"test-{uuid.uuid4().hex[:12]}"
            client = boto3.client(
                "s3", endpoint_url=endpoint_url, region_name=REGION,
                aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
            client.create_bucket(Bucket=name)
            return name

        yield types.SimpleNamespace(endpoint_url=endpoint_url, port=port, create_bucket=create_bucket)
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> str:
    """AWS_ENDPOINT_URL + fake credentials + region for this test, and a fresh bucket: `s3://<bucket>`."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probing (slow timeouts)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    return f"s3://{s3_server.create_bucket()}"


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> str:
    """A local synthetic world: 24 clips, seed 0, 3 shards of 8, default config otherwise."""
    from mmdist.data.synthetic import generate_world

    out = str(tmp_path_factory.mktemp("synthetic") / "world")
    cfg = load_job_cfg("make_dataset", ("rows_per_shard=8",))
    generate_world(out, num_clips=24, seed=0, cfg=cfg)
    return out
