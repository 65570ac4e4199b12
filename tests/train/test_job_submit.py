"""`ray job submit` of jobs/train.py to a `ray start --head` cluster on 127.0.0.1, token auth left on.

What a user does (README "Running on a cluster"): start a head, then
`RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/train.py ...`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture()
def ray_head(tmp_path_factory):
    """A real head node (GCS, raylet, dashboard + job server), stopped by its process group."""
    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile_short()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    # the cluster's own processes must find this cluster, not another Ray on the machine
    # (mmdist/runtime.py explains the placement-group cleaner trap)
    env.update(RAY_ADDRESS=f"127.0.0.1:{gcs_port}", PATH=f"{bin_dir}:{env['PATH']}")
    log = open(tmp_path_factory.mktemp("ray_head") / "head.log", "w")
    head = subprocess.Popen(
        [
            str(bin_dir / "ray"), "start", "--head", "--block",
            f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            "--num-cpus=4", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            # `ray start` defaults the job agent to port 52365; when anything else holds it the
            # agent stays up without HTTP and every submit answers "No available agent"
            "--dashboard-agent-listen-port=0",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_for_job_server(bin_dir, dashboard_port, head)
        yield {"dashboard": f"http://127.0.0.1:{dashboard_port}", "env": env, "bin": bin_dir}
    finally:
        # SIGKILL at once: the cluster holds nothing worth a graceful stop (SIGTERM took 30 s)
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        _kill_leftovers(temp_dir)
        log.close()


def tempfile_short() -> str:
    # Ray puts unix sockets under its temp dir; paths over ~100 chars break them
    import tempfile

    return tempfile.mkdtemp(prefix="rayjs-", dir="/tmp")


def _wait_for_job_server(bin_dir: Path, dashboard_port: int, head: subprocess.Popen) -> None:
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dashboard_port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start exited"
        probe = subprocess.run([str(bin_dir / "ray"), "job", "list"], env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return
        time.sleep(2)
    raise TimeoutError("the Ray job server did not come up in 120 s")


def _kill_leftovers(temp_dir: str) -> None:
    """Ray daemonises a few helpers out of the process group; they all name the temp dir."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(process.info["cmdline"] or []):
            process.kill()


def test_ray_job_submit_runs_training_with_token_auth(ray_head, synthetic_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = dict(ray_head["env"], RAY_AUTH_MODE="token", RAY_API_SERVER_ADDRESS=ray_head["dashboard"])
    env.pop("RAY_ADDRESS")  # the CLI finds the job server through RAY_API_SERVER_ADDRESS
    command = [
        str(ray_head["bin"] / "ray"), "job", "submit", "--working-dir", str(REPO), "--",
        sys.executable, "jobs/train.py",
        f"data.path={synthetic_dir}", f"run_dir={run_dir}",
        "data.batch_size=8", "trainer.max_steps=2", "trainer.report_every=1", "trainer.checkpoint_every=2",
    ]
    deadline = time.monotonic() + 300
    while True:  # the job server answers before the node's job agent has registered
        submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        if "No available agent" not in submit.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]
