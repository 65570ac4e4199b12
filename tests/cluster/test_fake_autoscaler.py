"""Under Ray's fake multi-node autoscaler (cluster/fake_multinode.yaml), a job that asks for more
than the head offers gets nodes launched and completes.

The head has 1 CPU; `ray job submit` runs `jobs/train.py` with 2 workers of 1 CPU each, which only
fit on launched `cpu_2` nodes. Compared against: Ray's state API (how many nodes the cluster has
had, and which nodes ran the train workers) and the run's own metrics.json.

The head is a `ray start --head --block` of the test's own (tests/ray_head.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ray
import yaml

from tests.cluster.conftest import train_overrides
from tests.conftest import REPO, free_port
from tests.ray_head import RAY_CLI, ray_head, submit

pytestmark = pytest.mark.slow


@pytest.fixture
def fake_cluster(tmp_path):
    """A 1-CPU head whose autoscaler (cluster/fake_multinode.yaml) launches fake nodes on this machine.
    Nodes use this machine's own interface: a driver given 127.0.0.1 resolves it to that address anyway
    (ray._private.services.resolve_ip_for_localhost). No traffic leaves the machine either way."""
    node_ip, port = ray.util.get_node_ip_address(), free_port()
    config = yaml.safe_load((REPO / "cluster" / "fake_multinode.yaml").read_text())
    config["provider"]["gcs_address"] = f"{node_ip}:{port}"  # the provider's nodes join this head
    config_path = tmp_path / "fake_multinode.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "PYTHONPATH": str(REPO)}
    with ray_head(
        tmp_path / "head.log", "--num-cpus=1", f"--autoscaling-config={config_path}", node_ip=node_ip, port=port, env=env
    ) as cluster:
        yield cluster


def test_job_asking_for_more_than_the_head_gets_nodes_and_completes(fake_cluster, synthetic_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = train_overrides(
        synthetic_dir, run_dir,
        "trainer.cpus_per_worker=1",   # 2 CPUs for the workers; the head has 1
        "data.decode.num_cpus=0.5",
        f"ray.address={fake_cluster.address}",
    )
    # No --working-dir here: fake nodes share the head's session folder, and a fake node's runtime-env
    # agent deletes the unpacked package when its own last user of it ends (ray packaging.delete_package),
    # under the head's workers that still run in it. A worker then starting there has no working
    # directory, and torch's MKL aborts at import ("Cannot load libtorch_cpu.so"; the TrainController
    # died so in 2 of 3 runs). Real nodes have their own disks; tests/train/test_job_submit.py covers
    # --working-dir on one node.
    done = submit(fake_cluster, sys.executable, str(REPO / "jobs" / "train.py"), *overrides, working_dir=False)
    output = done.stdout + done.stderr
    errors = "\n".join(line for line in output.splitlines() if "Error" in line and "repeated" not in line)
    assert done.returncode == 0 and "succeeded" in output, errors[-4000:] + output[-3000:]

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
