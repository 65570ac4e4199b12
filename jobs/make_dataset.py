"""Write the synthetic "sounding actions" world (SPEC Sec. 7) as clip shards.

    python jobs/make_dataset.py out=<path | s3://bucket/prefix> num_clips=<N> seed=<S> [workers=4 ...]
"""

import hydra
from omegaconf import DictConfig

from mmdist.config import check_config
from mmdist.data.synthetic import generate_world


@hydra.main(config_path="../configs", config_name="make_dataset", version_base="1.3")
def main(cfg: DictConfig) -> None:
    options = check_config(cfg, "make_dataset")  # every section, resolved (mmdist/config.py)
    shards = generate_world(cfg.out, cfg.num_clips, cfg.seed, options, endpoint_url=cfg.storage.endpoint_url)
    print(f"wrote {cfg.num_clips} clips (seed {cfg.seed}) in {len(shards)} shard(s) under {cfg.out}")


if __name__ == "__main__":
    main()
