"""A moto S3 server on 127.0.0.1 for the `data` benchmark's S3 reads (it stands for remote storage)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow.fs as pafs

# moto accepts any credentials; these exist only for the local server started here.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "mmdist-benchmark",
    "AWS_SECRET_ACCESS_KEY": "mmdist-benchmark",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free port of 127.0.0.1; returns the process and its endpoint URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=1).close()
            return server, endpoint_url
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"moto server on {endpoint_url} did not start within 60 s")


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
