"""Helpers for tests that start their own Ray clusters on this machine.

Each cluster is this test's alone: its own ports, its own dashboard (on 127.0.0.1), and
RAY_API_SERVER_ADDRESS pointing at that dashboard, so that Ray Train V2's placement-group cleaner asks
this cluster's state API and not another Ray running on the machine (mmdist/ray_setup.py). Processes a
test starts are stopped by process group or by the Cluster object, never with `ray stop`.

Nodes use Ray's default node address, this machine's own interface: a driver given 127.0.0.1
resolves it to that address anyway (ray._private.services.resolve_ip_for_localhost), so a head bound
to 127.0.0.1 alone is unreachable. No traffic leaves the machine either way.
"""

from __future__ import annotations

import os

from ray._common.utils import get_ray_address_file

from hydra import compose, initialize_config_dir

from tests.conftest import CONFIG_DIR


def forget_cluster_address(address: str) -> None:
    """`Cluster` records its head in /tmp/ray/ray_current_cluster, where every `ray.init()` without an
    address on this machine would find it and connect (other users' runs too): remove our entry."""
    path = get_ray_address_file(None)
    try:
        with open(path) as handle:
            if handle.read().strip() == address:
                os.remove(path)
    except FileNotFoundError:
        pass


def train_overrides(data_path: str, run_dir, *extra: str) -> list[str]:
    """A tiny 2-worker training: 2 steps of batch 8, one checkpoint at the end."""
    return [
        f"data.path={data_path}", f"run_dir={run_dir}", "data.batch_size=8", "trainer.num_workers=2",
        "trainer.max_steps=2", "trainer.report_every=1", "trainer.checkpoint_every=2", "trainer.warmup_steps=1",
        *extra,
    ]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)
