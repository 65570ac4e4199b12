"""Validate a dataset before a long run: decode every clip with the training pipeline's decoder.

    python jobs/check_data.py data.path=s3://bucket/clips storage.endpoint_url=http://127.0.0.1:9000

The last line of the output is JSON: {"rows": .., "decoded": .., "dropped": .., "reasons": {reason: count}}.
"""

import json
import os

import hydra
import ray
from omegaconf import DictConfig

from mmdist.config import check_config
from mmdist.data.pipeline import check_data_config, check_dataset
from mmdist.startup import require_dataset


@hydra.main(config_path="../configs", config_name="check_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = check_config(cfg, "check_data")  # every section (mmdist/config.py), then the data values
    check_data_config(config["data"])  # and a data.path without shards fail before Ray starts
    require_dataset(config["data"]["path"], "data.path", config["storage"])
    ray_cfg = config["ray"]
    address = ray_cfg["address"] or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:  # a fresh local Ray; more logical CPUs than cores so read and decode tasks both run (ENVIRONMENT.md)
        num_cpus = ray_cfg["num_cpus"] or max(ray_cfg["min_local_cpus"], os.cpu_count() or 1)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    summary, lines = check_dataset(config["data"], config["storage"], config["seed"], config["examples_per_reason"])
    for line in lines:
        print(line)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
