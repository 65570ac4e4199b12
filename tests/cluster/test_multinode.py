"""A 2-worker training on a 3-node cluster (`ray.cluster_utils.Cluster`: a head without CPUs + two
3-CPU nodes) spreads its workers over the two nodes and finishes.

Each worker asks for 2 CPUs, so no node can hold two workers: the placement must use both nodes,
and each node keeps 1 CPU for Ray Data's read (1 CPU) and decode (0.5 CPU) tasks. Compared against: Ray's state API (the node each RayTrainWorker actor ran on) and the run's
own metrics.json."""

from __future__ import annotations

import json

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from mmdist.train import fit
from tests.cluster.conftest import compose_train, forget_cluster_address, train_overrides
from tests.conftest import free_port
from tests.ray_head import wait_for_dashboard

pytestmark = pytest.mark.slow


@pytest.fixture
def three_nodes(monkeypatch):
    dashboard_port = free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    # inherited by every raylet and worker the Cluster starts from this process
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", dashboard)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0, "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        },
    )
    forget_cluster_address(cluster.address)
    workers = [cluster.add_node(num_cpus=3) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        wait_for_dashboard(dashboard, timeout_s=60)
        ray.init(address=cluster.address)
        yield dashboard, {node.node_id for node in workers}, cluster.head_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_two_workers_land_on_two_nodes_and_finish(three_nodes, synthetic_dir, tmp_path):
    dashboard, worker_nodes, head_node = three_nodes
    cfg = compose_train(
        train_overrides(
            synthetic_dir, tmp_path,
            "trainer.cpus_per_worker=2",     # two workers cannot share a 3-CPU node
            "data.decode.num_cpus=0.5",      # decode tasks fit beside a read task in the CPU left
            "data.decode.concurrency=2",
        )
    )
    summary = fit(cfg)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]
    assert summary["checkpoint"] and metrics["final"]["step"] == 2
    train_workers = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker")], limit=100)
    nodes = {actor.node_id for actor in train_workers}
    assert len(train_workers) == 2 and nodes == worker_nodes and head_node not in nodes
