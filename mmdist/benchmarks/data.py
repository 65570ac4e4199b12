"""Benchmark suite `data`: decoded clips per CPU-second of the input pipeline, at two clip sizes.

Settings (configs/suite/data.yaml `settings`; each overrides parts of the `data` group):
- `tiny`       the synthetic world's own clips (16 frames of 64 x 64 at 8 fps, 2 s), decoded at 56 px;
- `realistic`  H.264 sources like real footage (256 x 456, 25 fps, a keyframe every 2 s, 10 s long,
               16 kHz FLAC), decoded to 16 frames at 112 px and a 40-band log-mel (data_clips.py);
- `ingested`   the realistic clips cut once by ingest's cut_clip at the training frame rate and short side.

For each setting, on the same shards:
(0) `floor`     PyAV decoding only the frames a clip needs, nothing else (data_stages.codec_floor);
(a) `loop`      one process reads the shards (pyarrow) and decodes them with ClipDecoder;
(b) `ray_local` the Ray Data pipeline (build_dataset) on local disk;
(c) `ray_s3`    the same pipeline reading from a moto S3 server started here on 127.0.0.1.
Ratios: (a) against (0) in CPU time per clip (target <= 1.5 at the realistic size), and (b), (c)
against (a) per core (target >= 0.9), in two normalisations:
- `per_reserved_core`: clips/s over the cores the decode tasks reserve (`data.decode.concurrency`
  x `num_cpus`, capped at the cores this process may use). Right on an idle machine.
- `per_busy_core`: clips per CPU-second actually consumed (user + system time of this process
  and all its descendants: Ray's GCS, raylet, read and decode workers; not the moto server,
  which stands for remote storage). Right on a shared machine, and it charges Ray's own overhead
  to the pipeline.
Where the time goes: the loop's stages (data_stages.stage_times) and what Ray adds to them
(data_stages.ray_stage_times). The 1-minute load average is printed beside each setting: the
figures are ratios because absolute rates move with the machine's load.

Timing: each variant runs one untimed warm-up pass (Ray task workers import torch once and are
then reused), then `repeats` timed passes over every clip, as the epochs of a training run
iterate one dataset; the median pass counts. Every variant decodes in evaluation mode (centre
crops), so all do identical work. The clips are generated here, seeded.

Config keys (all required): settings, seed, repeats, ray_num_cpus, out_dir (null: a temp dir),
data (the `data` group), storage (the `storage` group), and one section per setting name.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import tempfile
import time

import psutil
import pyarrow.fs as pafs
import torch
from omegaconf import OmegaConf

from mmdist.benchmarks.data_clips import write_ingested, write_realistic
from mmdist.benchmarks.data_stages import STAGES, codec_floor, ray_stage_times, stage_times
from mmdist.benchmarks.moto_s3 import MOTO_ENV, environment, start_moto, upload
from mmdist.config import ConfigError, check_section
from mmdist.config_schema.benchmarks import DataSuite
from mmdist.data.pipeline import ClipDecoder, build_dataset, check_data_config, decode_stats, new_stats_name
from mmdist.data.storage import list_shards, read_shard
from mmdist.data.synthetic import generate_world

REPO = pathlib.Path(__file__).resolve().parents[2]  # a relative world_config is read from here
SETTINGS = ("tiny", "realistic", "ingested")
TARGET_PER_CORE, TARGET_LOOP_VS_FLOOR = 0.9, 1.5


def run(cfg: dict) -> dict:
    """Generate each setting's clips, time the floor, the loop and Ray Data; print and return the figures."""
    cfg = check_section(cfg, DataSuite, "suite")  # keys and types (mmdist/config_schema/)
    for name in cfg["settings"]:
        if name not in SETTINGS:
            raise ConfigError(f"suite.settings: unknown setting {name!r} (known: {list(SETTINGS)})")
    torch.set_num_threads(1)  # the loop gets one core, as one decode task does
    scratch = tempfile.TemporaryDirectory(prefix="mmdist-bench-data-") if cfg["out_dir"] is None else None
    root = scratch.name if scratch else cfg["out_dir"]
    try:
        settings = {name: prepare(name, cfg, root) for name in cfg["settings"]}
        figures = {name: single_process_figures(setting, cfg["repeats"]) for name, setting in settings.items()}
        ray_figures = time_with_moto(settings, figures, cfg)
    finally:
        if scratch:
            scratch.cleanup()
    out = {"target_per_core": TARGET_PER_CORE, "target_loop_vs_floor": TARGET_LOOP_VS_FLOOR}
    for name, setting in settings.items():
        figures[name].update(ray_figures[name])
        figures[name]["reserved_cores"] = decode_cores(setting["data_cfg"])
        print_setting(name, setting, figures[name])
        out.update({f"{name}_{key}": value for key, value in figures[name].items()})
    return out


def prepare(name: str, cfg: dict, root: str) -> dict:
    """Write the setting's clips under `root`; returns its url, validated data config and a description."""
    section, url = cfg[name], os.path.join(root, name)
    merged = OmegaConf.to_container(OmegaConf.merge(cfg["data"], section["data"], {"path": url, "limit": None}))
    data_cfg = check_data_config(merged)
    video = data_cfg["video"]
    target = f"{video['num_frames']} x {video['size']} px @ {video['fps']} fps, {data_cfg['audio']['n_mels']} mels"
    if name == "tiny":
        world = world_config(section, cfg["storage"])
        generate_world(url, section["num_clips"], cfg["seed"], world, endpoint_url=None)
        size = world["video"]["size"]
        source = f"{size}x{size} synthetic @ {world['video']['fps']} fps, {world['video']['num_frames']} frames"
    else:
        realistic = cfg["realistic"]
        source_url = os.path.join(root, "realistic")
        if not list_shards(source_url):
            write_realistic(source_url, realistic, cfg["seed"])
        source = (
            f"{realistic['height']}x{realistic['width']} H.264 @ {realistic['fps']} fps, {realistic['seconds']} s, "
            f"GOP {realistic['gop']}"
        )
        if name == "ingested":
            write_ingested(source_url, url, section, cfg["seed"])
            source += f", cut at ingest to {section['short_side']} px @ {section['fps']} fps"
    clips = sum(read_shard(path, pafs.LocalFileSystem()).num_rows for path in list_shards(url))
    return {"url": url, "data_cfg": data_cfg, "clips": clips, "description": f"{clips} clips, {source} -> {target}"}


def world_config(section: dict, storage: dict) -> dict:
    """The make_dataset config shaping the tiny clips, written into this benchmark's folder only."""
    path = pathlib.Path(section["world_config"])
    world = OmegaConf.to_container(OmegaConf.load(path if path.is_absolute() else REPO / path), resolve=True)
    world.pop("defaults", None)
    return {**world, "rows_per_shard": section["rows_per_shard"], "workers": 0, "overwrite": True, "storage": storage}


def single_process_figures(setting: dict, repeats: int) -> dict:
    """(0) the codec floor, (a) the loop and the loop's stages, in this process on one core."""
    url, data_cfg = setting["url"], setting["data_cfg"]
    load = os.getloadavg()[0]
    floor_rate, floor_frames = codec_floor(url, data_cfg, repeats)
    loop = time_passes(lambda: decode_loop(url, data_cfg), repeats, exclude=set())
    figures = {
        "load_1min": load,
        "floor_clips_per_cpu_s": floor_rate,
        "floor_frames_per_clip": floor_frames,
        "loop_clips_per_s": loop["rate"],
        "loop_clips_per_cpu_s": loop["per_cpu_s"],
        "loop_vs_floor_time": floor_rate / loop["per_cpu_s"],
    }
    figures.update({f"stage_{stage}_ms": ms for stage, ms in stage_times(url, data_cfg).items()})
    return figures


def time_with_moto(settings: dict, figures: dict, cfg: dict) -> dict:
    """(b) and (c) of every setting in one local Ray, the shards also copied to a moto server."""
    import ray

    server, endpoint_url = start_moto()
    try:
        with environment(MOTO_ENV):
            # address="local": a fresh Ray even when a `ray start` cluster runs on this machine.
            ray.init(
                address="local", num_cpus=cfg["ray_num_cpus"], include_dashboard=False,
                runtime_env={"env_vars": MOTO_ENV},
            )
            ray.data.DataContext.get_current().enable_progress_bars = False
            try:
                return {
                    name: time_pipelines(setting, figures[name], cfg, endpoint_url, {server.pid})
                    for name, setting in settings.items()
                }
            finally:
                ray.shutdown()
    finally:
        server.kill()
        server.wait(timeout=30)


def time_pipelines(setting: dict, loop_figures: dict, cfg: dict, endpoint_url: str, exclude: set[int]) -> dict:
    """Ray Data on local disk and on S3 for one setting; CPU time skips `exclude` (the moto server)."""
    data_cfg, loop_ms = setting["data_cfg"], 1000 / loop_figures["loop_clips_per_cpu_s"]
    s3_url = upload(setting["url"], endpoint_url)
    s3_storage = {**cfg["storage"], "endpoint_url": endpoint_url}
    figures = {}
    for name, url, storage in (("ray_local", setting["url"], cfg["storage"]), ("ray_s3", s3_url, s3_storage)):
        stats_name = new_stats_name()
        dataset = build_dataset({**data_cfg, "path": url}, storage, train=False, seed=0, stats_name=stats_name)
        timed = time_passes(lambda: pipeline_pass(dataset, data_cfg, stats_name), cfg["repeats"], exclude)
        figures[f"{name}_clips_per_s"], figures[f"{name}_clips_per_cpu_s"] = timed["rate"], timed["per_cpu_s"]
        figures[f"{name}_vs_loop_per_busy_core"] = timed["per_cpu_s"] / loop_figures["loop_clips_per_cpu_s"]
        figures[f"{name}_vs_loop_per_reserved_core"] = (
            timed["rate"] / decode_cores(data_cfg) / loop_figures["loop_clips_per_s"]
        )
        stages = ray_stage_times(dataset, timed["clips"], timed["last_cpu_s"], timed["last_wall_s"], loop_ms)
        figures.update({f"{name}_{key}": value for key, value in stages.items()})
    return figures


def time_passes(one_pass, repeats: int, exclude: set[int]) -> dict:
    """Median clips per second and clips per CPU-second of `repeats` timed passes, after a warm-up pass;
    also the clips of a pass and the CPU and wall seconds of the last one."""
    one_pass()
    rates, per_cpu_s = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), cpu_seconds(exclude)
        clips = one_pass()
        cpu_s, wall_s = cpu_seconds(exclude) - cpu_start, time.perf_counter() - start
        rates.append(clips / wall_s)
        per_cpu_s.append(clips / cpu_s)
    return {"rate": statistics.median(rates), "per_cpu_s": statistics.median(per_cpu_s), "clips": clips,
            "last_cpu_s": cpu_s, "last_wall_s": wall_s}


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


def pipeline_pass(dataset, data_cfg: dict, stats_name: str) -> int:
    """(b), (c): one full pass over the dataset (an epoch: the plan runs again); returns the clips decoded."""
    clips = sum(len(batch["has_video"]) for batch in dataset.iter_batches(batch_size=data_cfg["batch_size"]))
    if decode_stats(stats_name):
        raise RuntimeError(f"generated clips failed to decode: {decode_stats(stats_name)}")
    return clips


def decode_cores(data_cfg: dict) -> float:
    """CPU cores the pipeline's decode tasks hold at once, at most the cores this process may use."""
    decode = data_cfg["decode"]
    return min(decode["concurrency"] * decode["num_cpus"], len(os.sched_getaffinity(0)))


def print_setting(name: str, setting: dict, f: dict) -> None:
    """One block of lines per setting: rates, ratios against their baselines, and the stage breakdown."""
    cores = f["reserved_cores"]
    print(f"[data] {name}: {setting['description']} (load {f['load_1min']:.1f})")
    print(f"  (0) codec floor {f['floor_clips_per_cpu_s']:7.1f} clips per CPU-s ({f['floor_frames_per_clip']:.0f} frames decoded per clip)")
    print(
        f"  (a) loop        {f['loop_clips_per_cpu_s']:7.1f} clips per CPU-s, {f['loop_clips_per_s']:6.1f} clips/s;"
        f" time per clip = {f['loop_vs_floor_time']:.2f} x (0) (target <= {TARGET_LOOP_VS_FLOOR})"
    )
    for label, key in (("(b) ray local", "ray_local"), ("(c) ray s3   ", "ray_s3")):
        print(
            f"  {label} {f[key + '_clips_per_cpu_s']:7.1f} clips per CPU-s, {f[key + '_clips_per_s']:6.1f} clips/s;"
            f" {label[:3]}/(a) per busy core = {f[key + '_vs_loop_per_busy_core']:.2f} (target {TARGET_PER_CORE}),"
            f" per reserved core ({cores:g}) = {f[key + '_vs_loop_per_reserved_core']:.2f}"
        )
    stages = " | ".join(f"{stage.replace('_', ' ')} {f[f'stage_{stage}_ms']:.2f}" for stage in STAGES)
    print(f"  loop stages, CPU ms per clip: {stages}")
    print(
        f"  Ray adds, CPU ms per clip (local): in the {f['ray_local_operators']} tasks {f['ray_local_tasks_beyond_loop_ms']:+.2f}"
        f" | consumer, executor and Ray's processes {f['ray_local_consumer_and_ray_ms']:+.2f}"
        f" (iter_batches format + re-batching {f['ray_local_iter_format_collate_ms']:.2f} ms wall);"
        f" decode tasks at once on average {f['ray_local_task_concurrency']:.2f} of {cores:g}"
    )
