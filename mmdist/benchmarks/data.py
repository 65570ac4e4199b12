"""Benchmark suite `data`: decoded clips per second of the input pipeline, per CPU core.

(a) `loop`      one process reads the shards (pyarrow) and decodes them with ClipDecoder;
(b) `ray_local` the Ray Data pipeline (build_dataset) on the same shards on local disk;
(c) `ray_s3`    the same pipeline reading the shards from a moto S3 server started here on 127.0.0.1.
Each pipeline figure is normalised per CPU core and divided by the loop's (one core); target >= 0.9.
Two normalisations, because "cores used" has two meanings:
- `per_reserved_core`: clips/s over the cores the decode tasks reserve (`data.decode.concurrency`
  x `num_cpus`, capped at the cores this process may use). Right on an idle machine.
- `per_busy_core`: clips per CPU-second actually consumed (user + system time of this process
  and all its descendants: Ray's GCS, raylet, read and decode workers; not the moto server,
  which stands for remote storage). Right on a shared machine, where reserved cores are not
  all ours, and it charges Ray's own overhead to the pipeline.

Timing: each variant builds its dataset once and runs one untimed warm-up pass (Ray task
workers import torch once and are then reused), then `repeats` timed passes over every clip,
as the epochs of a training run iterate one dataset; the median pass counts. All variants decode in evaluation mode (centre crops),
so they do identical work. The clips are generated here (mmdist.data.synthetic), seeded.

Config keys (all required): num_clips, rows_per_shard, seed, repeats, world_config (path of the
make_dataset config whose world / video / audio / text sections shape the clips; relative paths
start at the repository root), data (the
`data` config group), storage (the `storage` group), ray_num_cpus, out_dir (null: a temp dir).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import psutil
import pyarrow.fs as pafs
import torch
from omegaconf import OmegaConf

from mmdist.benchmarks.common import require_keys
from mmdist.data.pipeline import ClipDecoder, build_dataset, check_data_config, decode_stats
from mmdist.data.storage import list_shards, read_shard
from mmdist.data.synthetic import generate_world

REPO = pathlib.Path(__file__).resolve().parents[2]  # a relative world_config is read from here
REQUIRED_KEYS = ("num_clips", "rows_per_shard", "seed", "repeats", "world_config", "data", "storage", "ray_num_cpus", "out_dir")
# moto accepts any credentials; these exist only for the local server started here.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "mmdist-benchmark",
    "AWS_SECRET_ACCESS_KEY": "mmdist-benchmark",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def run(cfg: dict) -> dict:
    """Generate the clips, time the three variants, print and return the figures."""
    require_keys(cfg, REQUIRED_KEYS, "data")
    torch.set_num_threads(1)  # the loop gets one core, as one decode task does
    scratch = tempfile.TemporaryDirectory(prefix="mmdist-bench-data-") if cfg["out_dir"] is None else None
    try:
        local_url = os.path.join(scratch.name if scratch else cfg["out_dir"], "clips")
        generate_world(local_url, cfg["num_clips"], cfg["seed"], world_config(cfg), endpoint_url=None)
        data_cfg = check_data_config({**cfg["data"], "path": local_url, "limit": None})
        loop = time_passes(lambda: decode_loop(local_url, data_cfg), cfg["repeats"], exclude=set())
        local, s3 = time_with_moto(data_cfg, cfg, local_url)
    finally:
        if scratch:
            scratch.cleanup()

    cores = decode_cores(data_cfg)
    figures = {"clips": cfg["num_clips"], "reserved_cores": cores, "target_per_core": 0.9}
    for name, (rate, per_cpu_s) in (("loop", loop), ("ray_local", local), ("ray_s3", s3)):
        figures[f"{name}_clips_per_s"], figures[f"{name}_clips_per_cpu_s"] = rate, per_cpu_s
    for name in ("ray_local", "ray_s3"):
        figures[f"{name}_vs_loop_per_reserved_core"] = figures[f"{name}_clips_per_s"] / cores / loop[0]
        figures[f"{name}_vs_loop_per_busy_core"] = figures[f"{name}_clips_per_cpu_s"] / loop[1]
    print(f"(a) loop      {loop[0]:7.1f} clips/s, {loop[1]:7.1f} clips per CPU-second")
    for label, name in (("(b) ray local", "ray_local"), ("(c) ray s3   ", "ray_s3")):
        rate, per_cpu_s = figures[f"{name}_clips_per_s"], figures[f"{name}_clips_per_cpu_s"]
        print(
            f"{label} {rate:7.1f} clips/s, {per_cpu_s:7.1f} clips per CPU-second;"
            f" {label[:3]}/(a) per reserved core ({cores:g}) = {figures[name + '_vs_loop_per_reserved_core']:.2f},"
            f" per busy core = {figures[name + '_vs_loop_per_busy_core']:.2f} (target 0.9)"
        )
    return figures


def time_with_moto(data_cfg: dict, cfg: dict, local_url: str) -> tuple:
    """(b) and (c), with the shards also copied to a moto server that lives for the measurement."""
    server, endpoint_url = start_moto()
    try:
        with environment(MOTO_ENV):
            return time_pipelines(data_cfg, cfg, upload(local_url, endpoint_url), endpoint_url, {server.pid})
    finally:
        server.kill()
        server.wait(timeout=30)


def time_pipelines(data_cfg: dict, cfg: dict, s3_url: str, endpoint_url: str, exclude: set[int]) -> tuple:
    """(b) and (c) in one local Ray; its workers get the moto credentials. CPU time skips `exclude`."""
    import ray

    # address="local": a fresh Ray even when a `ray start` cluster runs on this machine.
    ray.init(address="local", num_cpus=cfg["ray_num_cpus"], include_dashboard=False, runtime_env={"env_vars": MOTO_ENV})
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        local_dataset = build_dataset(data_cfg, cfg["storage"], train=False, seed=0)
        local = time_passes(lambda: pipeline_pass(local_dataset, data_cfg), cfg["repeats"], exclude)
        s3_storage = {**cfg["storage"], "endpoint_url": endpoint_url}
        s3_dataset = build_dataset({**data_cfg, "path": s3_url}, s3_storage, train=False, seed=0)
        s3 = time_passes(lambda: pipeline_pass(s3_dataset, data_cfg), cfg["repeats"], exclude)
    finally:
        ray.shutdown()
    return local, s3


def world_config(cfg: dict) -> dict:
    """The make_dataset config shaping the clips, written into this benchmark's folder only."""
    path = pathlib.Path(cfg["world_config"])
    world = OmegaConf.to_container(OmegaConf.load(path if path.is_absolute() else REPO / path), resolve=True)
    world.pop("defaults", None)
    return {**world, "rows_per_shard": cfg["rows_per_shard"], "workers": 0, "overwrite": True, "storage": cfg["storage"]}


def time_passes(one_pass, repeats: int, exclude: set[int]) -> tuple[float, float]:
    """Median clips per second and clips per CPU-second of `repeats` timed passes, after a warm-up pass."""
    one_pass()
    rates, per_cpu_s = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), cpu_seconds(exclude)
        clips = one_pass()
        rates.append(clips / (time.perf_counter() - start))
        per_cpu_s.append(clips / (cpu_seconds(exclude) - cpu_start))
    return statistics.median(rates), statistics.median(per_cpu_s)


def cpu_seconds(exclude: set[int]) -> float:
    """User + system CPU time of this process and its descendants (Ray's processes), minus `exclude`.

    A process that exits during a pass takes its time with it; Ray's task workers persist.
    """
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        if process.pid in exclude:
            continue
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def decode_loop(url: str, data_cfg: dict) -> int:
    """(a): read each shard and decode it in this process, batch by batch; returns the clips decoded."""
    decoder = ClipDecoder(data_cfg, train=False, seed=0)
    filesystem, batch_size, clips = pafs.LocalFileSystem(), data_cfg["decode"]["batch_size"], 0
    for path in list_shards(url):
        table = read_shard(path, filesystem)
        for start in range(0, table.num_rows, batch_size):
            batch, _ = decoder.decode_table(table.slice(start, batch_size))
            clips += len(batch["has_video"])
    return clips


def pipeline_pass(dataset, data_cfg: dict) -> int:
    """(b), (c): one full pass over the dataset (an epoch: the plan runs again); returns the clips decoded."""
    clips = sum(len(batch["has_video"]) for batch in dataset.iter_batches(batch_size=data_cfg["batch_size"]))
    if decode_stats(dataset.decode_stats_name):
        raise RuntimeError(f"generated clips failed to decode: {decode_stats(dataset.decode_stats_name)}")
    return clips


def decode_cores(data_cfg: dict) -> float:
    """CPU cores the pipeline's decode tasks hold at once, at most the cores this process may use."""
    decode = data_cfg["decode"]
    return min(decode["concurrency"] * decode["num_cpus"], len(os.sched_getaffinity(0)))


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free port of 127.0.0.1; returns the process and its endpoint URL."""
    import socket

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
