"""A moto S3 server on 127.0.0.1 for the `data` benchmark's S3 reads (it stands for remote storage) and the
tests' `s3_server` fixture."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow.fs as pafs

from mmdist.ray_setup import free_port

# moto accepts any credentials; these exist only for the local server started here.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "mmdist-benchmark",
    "AWS_SECRET_ACCESS_KEY": "mmdist-benchmark",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def start_moto(log_path: str | None = None, timeout_s: float = 60) -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free port of 127.0.0.1, its output in `log_path` (None: discarded); returns
    the process and its endpoint URL once the server answers."""
    port = free_port()
    with open(log_path or os.devnull, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
        )
    endpoint_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=1).close()
            return server, endpoint_url
        except OSError:
            time.sleep(0.1)
    exited = server.poll()
    server.kill()
    server.wait(timeout=30)
    output = open(log_path).read()[-2000:] if log_path else ""
    state = f"exited with {exited}" if exited is not None else f"did not answer within {timeout_s} s"
    raise RuntimeError(f"moto server on {endpoint_url} {state}: {output}")


def upload(local_url: str, endpoint_url: str) -> str:
    """Copy the shards into a fresh bucket of the moto server; returns their s3:// URL."""
    import boto3

    bucket = f"mmdist-bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint_url).create_bucket(Bucket=bucket)
    s3 = pafs.S3FileSystem(endpoint_override=endpoint_url.split("://")[1], scheme="http")
    pafs.copy_files(local_url, f"{bucket}/clips", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    return f"s3://{bucket}/clips"


@contextlib.contextmanager
def environment(variables: dict):
    """Set environment variables for the block (the driver's S3 clients read them), then restore."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
