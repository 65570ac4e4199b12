"""One training epoch of the pipeline over a dataset several times larger than the object store, in
its own process and its own Ray: `python -m tests.data.object_store_pressure SOURCE_DIR WORK_DIR`.

SOURCE_DIR holds synthetic clip shards; their clips are cycled into CLIPS clips (fresh ids) in
local shards under WORK_DIR. Ray starts with OBJECT_STORE_MB of object store; the clips are decoded
at 224 x 224 (2.4 MB a clip) so that the decoded epoch is several times that. The epoch is consumed
as the train loop consumes it (`iter_torch_batches` of a micro-batch, a short pause per step, the
producer faster than the consumer). Every Ray process of this instance is sampled for its resident
(RSS) and unique (USS) memory while it runs. The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time

import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import ray
from omegaconf import OmegaConf

from mmdist.data.pipeline import build_dataset, clip_bytes, new_stats_name
from mmdist.data.schema import CLIP_SCHEMA
from mmdist.data.storage import list_shards, read_shard, write_shard

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
OBJECT_STORE_MB = 96  # Ray's minimum is 75 MB
SHARDS, CLIPS_PER_SHARD = 16, 12
MICRO_BATCH = 8  # data.batch_size 16 over 2 train workers
STEP_S = 0.02  # the consumer's "training step"
# One epoch per pass (training's default, data.epochs_per_pass 8, would decode the world 8 times).
DATA_OVERRIDES = {
    "video.resize": 224, "video.size": 224, "decode.batch_size": 8, "batch_size": 16, "epochs_per_pass": 1,
}


def write_world(source_dir: str, out_dir: str) -> int:
    source = [row for path in list_shards(source_dir) for row in read_shard(path, pafs.LocalFileSystem()).to_pylist()]
    for shard in range(SHARDS):
        rows = [dict(source[(shard * CLIPS_PER_SHARD + i) % len(source)], clip_id=f"clip-{shard:02d}-{i:02d}")
                for i in range(CLIPS_PER_SHARD)]
        write_shard(pa.Table.from_pylist(rows, schema=CLIP_SCHEMA), os.path.join(out_dir, f"part-{shard:02d}.parquet"))
    return SHARDS * CLIPS_PER_SHARD


class MemorySampler:
    """Peak RSS and USS (MB) of this process and of every Ray worker process under it, every `period_s`."""

    def __init__(self, period_s: float = 0.25):
        self.period_s, self.workers, self.driver = period_s, {}, (0.0, 0.0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        me = psutil.Process()
        while not self.done.is_set():
            info = me.memory_full_info()
            self.driver = (max(self.driver[0], info.rss / 2**20), max(self.driver[1], info.uss / 2**20))
            for child in me.children(recursive=True):
                try:
                    if not child.name().startswith("ray::") and "default_worker.py" not in " ".join(child.cmdline()):
                        continue
                    info = child.memory_full_info()
                except psutil.Error:
                    continue
                rss, uss = self.workers.get(child.pid, (0.0, 0.0))
                self.workers[child.pid] = (max(rss, info.rss / 2**20), max(uss, info.uss / 2**20))
            self.done.wait(self.period_s)

    def stop(self) -> dict:
        self.done.set()
        self.thread.join()
        return {
            "worker_processes": len(self.workers),
            "peak_worker_rss_mb": round(max((rss for rss, _ in self.workers.values()), default=0.0), 1),
            "peak_worker_uss_mb": round(max((uss for _, uss in self.workers.values()), default=0.0), 1),
            "peak_driver_rss_mb": round(self.driver[0], 1),
            "peak_driver_uss_mb": round(self.driver[1], 1),
        }


def spilled_mb() -> tuple[float, float]:
    """(spilled, restored) MB of this Ray instance, from Ray's memory summary ("Spilled N MiB, ...")."""
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    spilled = re.search(r"Spilled (\d+) MiB", text)
    restored = re.search(r"Restored (\d+) MiB", text)
    return float(spilled.group(1)) if spilled else 0.0, float(restored.group(1)) if restored else 0.0


def main(source_dir: str, work_dir: str) -> None:
    clips = write_world(source_dir, os.path.join(work_dir, "world"))
    data_cfg = OmegaConf.load(os.path.join(CONFIG_DIR, "data", "default.yaml"))
    for key, value in {"path": os.path.join(work_dir, "world"), **DATA_OVERRIDES}.items():
        OmegaConf.update(data_cfg, key, value, merge=False)
    data_cfg = OmegaConf.to_container(data_cfg)
    storage_cfg = OmegaConf.to_container(OmegaConf.load(os.path.join(CONFIG_DIR, "storage", "default.yaml")))

    ray.init(address="local", num_cpus=4, object_store_memory=OBJECT_STORE_MB * 2**20, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    sampler = MemorySampler()
    start = time.monotonic()
    dataset = build_dataset(data_cfg, storage_cfg, train=True, seed=0, stats_name=new_stats_name())
    seen = 0
    for batch in dataset.iter_torch_batches(batch_size=MICRO_BATCH):
        seen += len(batch["has_video"])
        time.sleep(STEP_S)
    seconds = time.monotonic() - start
    memory = sampler.stop()
    spilled, restored = spilled_mb()
    ray.shutdown()
    print(json.dumps({
        "clips": clips, "seen": seen, "seconds": round(seconds, 1), "object_store_mb": OBJECT_STORE_MB,
        "decoded_mb": round(clips * clip_bytes(data_cfg) / 2**20, 1), "spilled_mb": spilled, "restored_mb": restored,
        **memory,
    }), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
