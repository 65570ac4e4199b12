"""Memory under a dataset larger than the object store (issue 12, item 7).

A training epoch of the pipeline (224 x 224 clips: ~450 MB decoded) through a Ray whose object
store holds 96 MB, consumed as the train loop consumes it, in its own process
(tests/data/object_store_pressure.py: its own Ray, so the store can be that small). Ray Data's
streaming executor must hold back the decode tasks instead of materialising the epoch: it
completes, every clip arrives, worker memory stays near its start-up size and little is spilled.

Why USS and not RSS for the bounds: RSS counts the shared pages of torch's libraries and of the
object store that a process touched (a decode worker here: ~960 MB RSS for ~450 MB of its own).
"""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_S = 400  # ~35 s here (Ray start-up, 192 clips decoded at 224 x 224); generous for a loaded machine
# Measured here (2 cores, Ray 2.60): streaming, 0 MB spilled, peak USS 458 MB (decode worker) and 456 MB
# (consumer). Control: the same epoch `materialize()`d first spilled 447 MB (restored 773 MB), decode
# worker USS 604 MB. The spill bound is what catches a materialised epoch; the USS bounds are a guard
# against a process that keeps a large part of it (~410 MB is a worker's size after torch + PyAV imports).
WORKER_USS_BOUND_MB = 640
DRIVER_USS_BOUND_MB = 640


def test_an_epoch_several_times_the_object_store_completes_with_bounded_memory(synthetic_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tests.data.object_store_pressure", synthetic_dir, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(summary))
    assert summary["seen"] == summary["clips"]
    assert summary["decoded_mb"] >= 4 * summary["object_store_mb"]
    assert summary["worker_processes"] >= 2  # the sampler did see Ray's workers
    assert summary["peak_worker_uss_mb"] < WORKER_USS_BOUND_MB, summary
    assert summary["peak_driver_uss_mb"] < DRIVER_USS_BOUND_MB, summary
    # Spilling, if any, stays within one object store's worth (the materialised control: 447 MB).
    assert summary["spilled_mb"] <= summary["object_store_mb"], summary
