"""Connecting to Ray: an existing cluster, or a local one started for this process."""

from __future__ import annotations

import os
import socket

import ray


def init_ray(ray_cfg: dict) -> None:
    """Connect to `ray.address` (or RAY_ADDRESS, which `ray job submit` sets), else start a local Ray.

    Locally, more logical CPUs than cores lets Ray Data's decode tasks run beside the train workers
    on a 2-core machine (ENVIRONMENT.md: the 2-CPU deadlock). The local Ray gets its dashboard on a
    known port, and its processes are told that port: Ray Train V2's placement-group cleaner finds
    "the" cluster through the state API, and with a second Ray on the machine (a `ray start`
    cluster) it would ask the wrong one, find no controller and remove our workers' placement group.
    """
    if ray.is_initialized():
        return
    address = ray_cfg["address"] or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    port = _free_port()
    ray.init(
        address="local",  # never attach to a `ray start` cluster that happens to run on this machine
        num_cpus=ray_cfg["num_cpus"] or max(4, os.cpu_count() or 1),
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
