"""The demo (`make demo`): synthetic world -> mc3_vq training with 2 DeepSpeed workers -> metrics."""

import json
import os

import hydra
from omegaconf import DictConfig, OmegaConf

from mmdist.data.synthetic import generate_world
from mmdist.train import fit


@hydra.main(config_path="../configs", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = os.path.abspath(cfg.run_dir)
    world = cfg.world
    world_cfg = OmegaConf.to_container(hydra.compose("make_dataset", overrides=list(world.overrides)), resolve=True)
    data_dir = os.path.join(run_dir, "data")
    for split, clips, seed in (("train", world.train_clips, world.seed), ("val", world.val_clips, world.seed + 1)):
        generate_world(os.path.join(data_dir, split), num_clips=clips, seed=seed, cfg=world_cfg)
        print(f"[demo] {split}: {clips} synthetic clips in {data_dir}/{split}")
    summary = fit(cfg)
    final = summary["final"]
    print("[demo] final training metrics:")
    print(json.dumps({key: round(value, 4) for key, value in final.items()}, indent=1))
    print(f"[demo] run directory: {run_dir}")


if __name__ == "__main__":
    main()
