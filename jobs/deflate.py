"""Deflate a trained video encoder into an image encoder and evaluate it on still frames (MMV Sec. 3.2):
`python jobs/deflate.py checkpoint=<export | checkpoint | run_dir> data.path=<clips> run_dir=<dir>`.

Writes run_dir/metrics.json (mmdist/eval/deflation.py): the L1 gap to the video network on static videos,
naive and fitted, and a linear probe on the frames' features against the video encoder's on the clips.
Runs in this process (no Ray): at most `deflate.max_clips` clips are decoded.
"""

import json
import os

import hydra
from omegaconf import DictConfig

from mmdist.config import check_config
from mmdist.data.pipeline import check_data_config
from mmdist.eval.deflation import deflation_metrics
from mmdist.models.checkpoint import resolve_trained
from mmdist.startup import checkpoint_config, require_dataset


@hydra.main(config_path="../configs", config_name="deflate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = check_config(cfg, "deflate")  # every section (mmdist/config.py), then the data values
    check_data_config(config["data"])
    checkpoint_config(resolve_trained(config["checkpoint"]), "checkpoint", config["storage"]["endpoint_url"])
    require_dataset(config["data"]["path"], "data.path", config["storage"])
    metrics = deflation_metrics(config["checkpoint"], config["data"], config["storage"], config["deflate"], config["seed"])
    os.makedirs(config["run_dir"], exist_ok=True)
    with open(os.path.join(config["run_dir"], "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=1)
    gap, probe = metrics["l1_gap"], metrics["probe"]
    print(f"[deflate] L1 gap to the video network on static videos: naive {gap['naive_deflation']:.4f}, "
          f"fitted {gap['fitted_deflation']:.4f}")
    for name, scores in probe.items():
        print(f"[deflate] probe {name}: top-1 {scores['top1']:.1f} % ({scores['num_test']} test clips)")
    print(f"[deflate] {metrics['num_clips']} clips; metrics in {config['run_dir']}/metrics.json")


if __name__ == "__main__":
    main()
