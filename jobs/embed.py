"""Embed clips: `python jobs/embed.py checkpoint=<export | checkpoint | run_dir> data.path=<url> out=<dir | s3://...>`.

Writes one Parquet row per clip into `out` (ids, labels, `emb_<m>`, `present_<m>`, with a codebook
`codes_<m>` and `code_probs_<m>`: mmdist/eval/embed.py). The last line of the output is JSON:
{"checkpoint": .., "out": .., "clips": .., "dropped": {reason: count}}.
"""

import json

import hydra
from omegaconf import DictConfig
from ray.data import DataContext

from mmdist.config import check_config
from mmdist.data.pipeline import check_data_config
from mmdist.eval.job import check_eval_config, embed_clips
from mmdist.models.checkpoint import resolve_trained
from mmdist.ray_setup import init_ray
from mmdist.startup import checkpoint_config, require_dataset


@hydra.main(config_path="../configs", config_name="embed", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = check_config(cfg, "embed")  # every section, before Ray starts (mmdist/config.py)
    # then the eval and data values, the checkpoint's saved config and data.path's shards (mmdist/startup.py)
    check_eval_config(config["eval"])
    check_data_config(config["data"])
    checkpoint_config(resolve_trained(config["checkpoint"]), "checkpoint", config["storage"]["endpoint_url"])
    require_dataset(config["data"]["path"], "data.path", config["storage"])
    init_ray(config["ray"])
    DataContext.get_current().enable_progress_bars = config["data_progress_bars"]
    summary = embed_clips(config["checkpoint"], config["data"], config["storage"], config["eval"], config["out"])
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
