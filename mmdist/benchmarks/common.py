"""What the benchmark suites share: job configs composed by Hydra and the peak-memory measurement."""

from __future__ import annotations

import ctypes
import gc
import time
from pathlib import Path
from typing import Callable, Mapping


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose(name: str, overrides: list[str]):
    """A job config composed from configs/, inside a Hydra job (jobs/benchmark.py) or outside one."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(name, overrides=overrides)
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return hydra_compose(name, overrides=overrides)


def pin_mmap_threshold() -> None:
    """Make glibc serve allocations >= 64 KiB with fresh mmap pages (visible in RSS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; also disables its dynamic growth
    except OSError:
        pass


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def timed_peak(fn: Callable) -> tuple[float, int]:
    """Wall seconds of one call and the bytes by which it raised the peak resident set size
    (VmHWM reset through /proc/self/clear_refs just before): one call gives both figures."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    del result
    return seconds, max(0, peak - before) * 1024
