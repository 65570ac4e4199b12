"""Under Ray's fake multi-node autoscaler (cluster/fake_multinode.yaml), a job that asks for more
than the head offers gets nodes launched and completes.

The head has 1 CPU; `ray job submit` runs `jobs/train.py` with 2 workers of 1 CPU each, which only
fit on launched `cpu_2` nodes. Compared against: Ray's state API (how many nodes the cluster has
had, and which nodes ran the train workers) and the run's own metrics.json.

The head is started with `ray start --block` in its own session and stopped by killing that
session's processes (never `ray stop`: it stops every Ray on the machine). Its temp dir is private,
so the address file `ray start` writes does not redirect other `ray.init()` calls on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

import psutil
import pytest
import ray
import yaml

from tests.cluster.conftest import free_port, train_overrides, wait_for_dashboard
from tests.conftest import REPO

pytestmark = pytest.mark.slow
RAY_CLI = os.path.join(os.path.dirname(sys.executable), "ray")


def stop_session(leader: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGKILL every process of the session `leader` started (the head, its raylet, the autoscaler
    and the fake nodes the autoscaler launched). No graceful drain: the cluster holds nothing worth
    saving and its temp dir, address file included, is private to the test."""
    def members():
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == leader.pid:
                    found.append(process)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    for process in members():
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    leader.wait(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while members() and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def fake_cluster(tmp_path):
    port, dashboard_port = free_port(), free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    config = yaml.safe_load((REPO / "cluster" / "fake_multinode.yaml").read_text())
    config["provider"]["gcs_address"] = address  # the provider's nodes join this head
    config_path = tmp_path / "fake_multinode.yaml"
    config_path.write_text(yaml.safe_dump(config))
    temp_dir = tempfile.mkdtemp(prefix="rayfake", dir="/tmp")  # short: Unix socket paths have a length limit
    env = dict(
        os.environ,
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        RAY_ADDRESS=address,                    # the head's own workers find their cluster
        RAY_API_SERVER_ADDRESS=dashboard,       # Train's placement-group cleaner asks this cluster
        RAY_AUTH_MODE="token",                  # `ray start` enables token auth; clients must use it too
        PYTHONPATH=str(REPO),
    )
    log = tmp_path / "head.log"
    with open(log, "wb") as handle:
        head = subprocess.Popen(
            [
                RAY_CLI, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                f"--autoscaling-config={config_path}", f"--temp-dir={temp_dir}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            ],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_dashboard(dashboard, timeout_s=120, process=head)
        yield types.SimpleNamespace(address=address, dashboard=dashboard, env=env, log=log)
    finally:
        stop_session(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_asking_for_more_than_the_head_gets_nodes_and_completes(fake_cluster, synthetic_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = train_overrides(
        synthetic_dir, run_dir,
        "trainer.cpus_per_worker=1",   # 2 CPUs for the workers; the head has 1
        "data.decode.num_cpus=0.5",
        f"ray.address={fake_cluster.address}",
    )
    submit = subprocess.run(
        [
            RAY_CLI, "job", "submit", "--address", fake_cluster.dashboard, "--working-dir", str(REPO),
            "--", sys.executable, "jobs/train.py", *overrides,
        ],
        env=fake_cluster.env, capture_output=True, text=True, timeout=600,
    )
    output = submit.stdout + submit.stderr
    errors = "\n".join(line for line in output.splitlines() if "Error" in line and "repeated" not in line)
    assert submit.returncode == 0 and "succeeded" in output, errors[-4000:] + output[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]
    nodes = state(fake_cluster, "nodes")
    head = [node["node_id"] for node in nodes if node["is_head_node"]]
    assert len(nodes) >= 2 and len(head) == 1  # the autoscaler launched at least one node
    workers = state(fake_cluster, "actors", "--filter", "class_name=RayTrainWorker")
    assert len(workers) == 2 and head[0] not in {actor["node_id"] for actor in workers}


def state(cluster, kind: str, *options: str) -> list[dict]:
    """`ray list <kind>` against the test cluster, as a client with its token (the CLI, not this
    process's Ray client: the token mode belongs to the environment the clients start with)."""
    listing = subprocess.run(
        [RAY_CLI, "list", kind, "--address", cluster.dashboard, "--format", "json", "--limit", "1000", *options],
        env=cluster.env, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(listing.stdout)
