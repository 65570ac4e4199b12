"""Validate a dataset before a long run: decode every clip with the training pipeline's decoder.

    python jobs/check_data.py data.path=s3://bucket/clips storage.endpoint_url=http://127.0.0.1:9000

The last line of the output is JSON: {"rows": .., "decoded": .., "dropped": .., "reasons": {reason: count}}.
"""

import json

import hydra
from omegaconf import DictConfig

from mmdist.config import check_config
from mmdist.data.pipeline import check_data_config, check_dataset
from mmdist.ray_setup import init_ray
from mmdist.startup import require_dataset


@hydra.main(config_path="../configs", config_name="check_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = check_config(cfg, "check_data")  # every section (mmdist/config.py), then the data values
    check_data_config(config["data"])  # and a data.path without shards fail before Ray starts
    require_dataset(config["data"]["path"], "data.path", config["storage"])
    init_ray(config["ray"])  # RAY_ADDRESS's cluster, else a fresh local Ray with more logical CPUs than cores
    summary, lines = check_dataset(config["data"], config["storage"], config["seed"], config["examples_per_reason"])
    for line in lines:
        print(line)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
