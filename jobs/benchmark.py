"""Benchmarks (never timed tests): `python jobs/benchmark.py suite=<name>` prints each suite's figures
as ratios against a baseline measured in the same run. Suites live in `mmdist/benchmarks/<name>.py`."""

import importlib
import json

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mmdist.config import check_config


@hydra.main(config_path="../configs", config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    suite = HydraConfig.get().runtime.choices["suite"]
    config = check_config(cfg, "benchmark", suite=suite)  # every key of the suite (mmdist/config.py)
    module = importlib.import_module(f"mmdist.benchmarks.{suite}")
    figures = module.run(config["suite"])
    print(json.dumps({"suite": suite, **figures}, default=str))
    if cfg.out:
        with open(cfg.out, "w") as handle:
            json.dump({"suite": suite, **figures}, handle, indent=1, default=str)


if __name__ == "__main__":
    main()
