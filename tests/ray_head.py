"""A `ray start --head --block` cluster of a test's own, and `ray job submit` against it.

The head runs in its own session, on free ports, with a private short temp dir (Ray puts Unix
sockets there: paths over ~100 characters break them, and the address file it writes there does not
redirect other `ray.init()` calls on the machine). It is stopped by SIGKILL to every process of that
session and any process naming its temp dir (Ray daemonises a few helpers out of the session), never
with `ray stop`, which stops every Ray on the machine. Token authentication stays on, as on a real
cluster: clients get RAY_AUTH_MODE=token.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from tests.conftest import REPO, free_port

RAY_CLI = str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def ray_head(log_path: Path, *args: str, node_ip: str = "127.0.0.1", port: int | None = None, env: dict | None = None):
    """Yields .address (GCS host:port; `port` or a free one), .dashboard (http URL of the dashboard +
    job server) and .env (the environment for clients and for the head's own processes)."""
    port, dashboard_port = port or free_port(), free_port()
    address, dashboard = f"{node_ip}:{port}", f"http://127.0.0.1:{dashboard_port}"
    temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
    head_env = dict(os.environ, **(env or {}))
    head_env.update(
        RAY_ADDRESS=address,               # the head's own workers find this cluster, not another Ray here
        RAY_API_SERVER_ADDRESS=dashboard,  # Train's placement-group cleaner asks this cluster (mmdist/ray_setup.py)
        RAY_AUTH_MODE="token",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    command = [
        RAY_CLI, "start", "--head", "--block", f"--port={port}", f"--node-ip-address={node_ip}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        # `ray start` puts the job agent on 52365 by default; when anything else holds that port the
        # agent stays up without HTTP and every submit answers "No available agent"
        "--dashboard-agent-listen-port=0",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", *args,
    ]
    with open(log_path, "wb") as log:
        head = subprocess.Popen(command, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_dashboard(dashboard, timeout_s=120, process=head)
        yield types.SimpleNamespace(address=address, dashboard=dashboard, env=head_env)
    finally:
        _kill_session(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(cluster, *entrypoint: str, timeout_s: float = 600, working_dir: bool = True) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir <repo> -- <entrypoint>`, waiting for the job; retried while the
    job server answers before the node's job agent has registered. `working_dir=False` submits without
    a runtime-env package (the cluster's processes find the repo through PYTHONPATH)."""
    package = ["--working-dir", str(REPO)] if working_dir else []
    command = [RAY_CLI, "job", "submit", "--address", cluster.dashboard, *package, "--", *entrypoint]
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(2)


def wait_for_dashboard(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Ray head exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered (401 under token authentication): it is up
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"no Ray dashboard at {url} after {timeout_s} s")


def _kill_session(leader: subprocess.Popen, temp_dir: str) -> None:
    """SIGKILL, no graceful drain: the cluster holds nothing worth saving (a SIGTERM'd head took 30 s)."""
    def members() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if os.getsid(process.pid) == leader.pid or temp_dir in " ".join(process.info["cmdline"] or []):
                    found.append(process)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    for process in members():
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    leader.wait(timeout=30)
    deadline = time.monotonic() + 30
    while members() and time.monotonic() < deadline:
        time.sleep(0.2)
