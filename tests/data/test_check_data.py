"""`python jobs/check_data.py data.path=<url>`: the user's dataset check, run as a user runs it.

The issue's "done" criterion: shards with 5 % corrupted media give exactly the other 95 % and a
dropped count equal to the number corrupted, shown by the job's last output line.
"""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
# Small decode sizes keep the run short; the counts do not depend on them.
SMALL = ["data.video.num_frames=4", "data.video.resize=32", "data.video.size=24", "data.audio.max_seconds=0.5"]


def run_job(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "check_data.py"), *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_check_data_reports_exactly_the_corrupted_records(corrupted):
    result = run_job(f"data.path={corrupted.dir}", "ray.num_cpus=4", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert list(summary) == ["rows", "decoded", "dropped", "reasons"]  # the stable key layout
    assert summary == {"rows": 60, "decoded": 57, "dropped": 3, "reasons": corrupted.reasons}
    examples = "\n".join(lines[:-1])
    assert all(clip_id in examples for clip_id in corrupted.corrupt_ids)  # each bad record is named
    assert "video: present in 56 of 57 decoded clips" in examples  # one null video is missing, not dropped


def test_check_data_without_a_path_names_the_key():
    result = run_job()
    assert result.returncode != 0
    assert "data.path" in result.stderr
