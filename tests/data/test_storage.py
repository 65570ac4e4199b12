"""Storage: URL -> filesystem, shards on local disk and on a real S3-compatible server (moto),
endpoint from config or AWS_ENDPOINT_URL, and retries of transient S3 errors."""

import os
import socket
import threading

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from mmdist.data.schema import CLIP_SCHEMA
from mmdist.data.storage import (
    is_transient,
    join_url,
    list_shards,
    parent_url,
    read_bytes,
    read_shard,
    resolve_filesystem,
    write_bytes,
    write_shard,
)
from tests.conftest import free_port
from tests.data.outage_proxy import pump


def small_table(prefix: str, rows: int = 3) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"clip_id": f"{prefix}{i}", "source_id": "src", "start_s": 2.0 * i, "end_s": 2.0 * i + 2,
             "video": bytes([i]) * 100, "audio": None, "text": [f"narration {i}"], "labels": None}
            for i in range(rows)
        ],
        schema=CLIP_SCHEMA,
    )


def test_local_urls_resolve_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve_filesystem("data/shards")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "data" / "shards")
    fs, path = resolve_filesystem(f"file://{tmp_path}/x")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/x"


def test_s3_urls_resolve_to_bucket_paths(s3_server):
    fs, path = resolve_filesystem("s3://bucket/some/prefix/", s3_server.endpoint_url)
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/some/prefix"


@pytest.mark.parametrize(
    "url, endpoint, message",
    [
        ("s3:///no-bucket", None, "has no bucket"),
        ("s3://bucket/x", "ftp://host:21", "storage.endpoint_url"),
        ("", None, "empty storage URL"),
    ],
)
def test_bad_urls_are_named(url, endpoint, message):
    with pytest.raises(ValueError, match=message):
        resolve_filesystem(url, endpoint)


def test_url_helpers():
    assert join_url("s3://b/root/", "shard-00000.parquet") == "s3://b/root/shard-00000.parquet"
    assert join_url("/data/root", "a.parquet") == "/data/root/a.parquet"
    assert parent_url("s3://b/x/clips.jsonl") == "s3://b/x"
    assert parent_url("/data/x/clips.jsonl") == "/data/x"


def test_local_shards_listed_sorted_recursive_and_only_parquet(tmp_path):
    for name in ("b/shard-1.parquet", "a/shard-2.parquet", "a/shard-0.parquet"):
        write_shard(small_table(name), str(tmp_path / name))
    (tmp_path / "a" / "notes.json").write_text("{}")
    shards = list_shards(str(tmp_path))
    assert shards == sorted(str(tmp_path / n) for n in ("a/shard-0.parquet", "a/shard-2.parquet", "b/shard-1.parquet"))
    # the write went through a temporary name: nothing else is left behind
    assert sorted(os.listdir(tmp_path / "a")) == ["notes.json", "shard-0.parquet", "shard-2.parquet"]
    assert list_shards(str(tmp_path / "missing")) == []


def test_s3_round_trip_with_endpoint_from_environment(s3_env):
    url = f"{s3_env}/world"
    write_shard(small_table("x"), f"{url}/shard-00001.parquet")
    write_shard(small_table("y"), f"{url}/shard-00000.parquet")
    shards = list_shards(url)
    assert shards == [f"{s3_env[5:]}/world/shard-00000.parquet", f"{s3_env[5:]}/world/shard-00001.parquet"]
    fs, _ = resolve_filesystem(url)
    assert read_shard(shards[1], fs).to_pylist() == small_table("x").to_pylist()
    write_bytes(f"{url}/summary.json", b'{"ok": 1}')
    assert read_bytes(f"{url}/summary.json") == b'{"ok": 1}'


def test_configured_endpoint_wins_over_the_environment(s3_env, s3_server, monkeypatch):
    # the variable points nowhere; the explicit endpoint (storage.endpoint_url) is the server
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    url = f"{s3_env}/shard-00000.parquet"
    write_shard(small_table("z"), url, s3_server.endpoint_url, retries=0)
    fs, path = resolve_filesystem(url, s3_server.endpoint_url)
    assert read_shard(path, fs).column("clip_id").to_pylist() == ["z0", "z1", "z2"]
    with pytest.raises(OSError, match="reading shard"):
        read_shard(path, resolve_filesystem(url, retries=0)[0], retries=0)


class FlakyProxy:
    """A TCP proxy to the S3 server that answers its first `failures` connections with
    `503 SlowDown`, as S3 does under load, and forwards every later one untouched."""

    SLOW_DOWN = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
        b"<Message>Please reduce your request rate.</Message></Error>"
    )

    def __init__(self, target_port: int, failures: int):
        self.target_port, self.failures_left, self.refused = target_port, failures, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.failures_left > 0:
                self.failures_left -= 1
                self.refused += 1
                client.recv(65536)
                client.sendall(
                    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(self.SLOW_DOWN), self.SLOW_DOWN)
                )
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()

    def close(self):
        self.server.close()


@pytest.fixture
def flaky(s3_server):
    proxies = []

    def make(failures):
        proxies.append(FlakyProxy(s3_server.port, failures))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def test_transient_s3_errors_are_retried(s3_env, flaky):
    proxy = flaky(failures=2)
    url = f"{s3_env}/shard-00000.parquet"
    write_shard(small_table("r"), url, proxy.endpoint_url, retries=3, backoff_s=0.01)
    assert proxy.refused == 2
    fs, path = resolve_filesystem(url)  # straight to the server
    assert read_shard(path, fs).to_pylist() == small_table("r").to_pylist()


def test_without_retries_a_transient_error_fails_naming_the_shard(s3_env, flaky):
    proxy = flaky(failures=1)
    url = f"{s3_env}/shard-00000.parquet"
    with pytest.raises(OSError, match=r"writing shard s3://.*/shard-00000\.parquet failed after 1 attempt.*SLOW_DOWN"):
        write_shard(small_table("r"), url, proxy.endpoint_url, retries=0)
    assert proxy.refused == 1


def test_not_found_and_denied_are_not_transient():
    assert is_transient(OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7"))
    assert is_transient(OSError("AWS Error UNKNOWN (HTTP status 503) during HeadObject operation"))
    assert not is_transient(OSError("AWS Error ACCESS_DENIED during PutObject operation: Access Denied"))
    assert not is_transient(FileNotFoundError("bucket/key"))
    assert not is_transient(ValueError("NETWORK_CONNECTION"))


def test_credentials_never_appear_in_errors(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit-4c1d")  # moto accepts any key
    with pytest.raises(OSError) as err:
        read_shard("no-such-bucket-4c1d/shard.parquet", resolve_filesystem(s3_env)[0])
    assert "sekrit" not in str(err.value) and "testing" not in str(err.value)
