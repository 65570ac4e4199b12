"""Reproduce one paper's ablation table: `python jobs/reproduce.py study=<cmcm|mc3|mcn|mmv> [study.scale=tiny|gpu]`.

Generates the study's synthetic worlds (train and held-out, seeded; reused when present), runs every
(row, seed) of `configs/study/<name>.yaml` as a Ray Tune trial (train, then evaluate on held-out
clips) and writes run_dir/study.md, study.csv and claims.json (mmdist/tune/study.py). Started again
with the same run_dir, it runs only the trials that have no evaluation yet.
"""

import os

import hydra
from omegaconf import DictConfig, OmegaConf

from mmdist.config import check_config
from mmdist.data.synthetic import generate_world
from mmdist.tune.study import run_study


def compose_row(overrides: list[str]) -> dict:
    """The unresolved training config of one row: `jobs/train.py` composed with the row's overrides,
    checked against the config schema before any trial starts."""
    cfg = hydra.compose("train", overrides=overrides)
    check_config(cfg, "train")
    return OmegaConf.to_container(cfg, resolve=False)


@hydra.main(config_path="../configs", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = check_config(cfg, "reproduce")  # every section, before anything runs (mmdist/config.py)
    run_dir, world = os.path.abspath(config["run_dir"]), config["world"]
    world_cfg = OmegaConf.to_container(hydra.compose("make_dataset", overrides=list(world["overrides"])), resolve=True)
    paths = {}
    for split, clips, seed in (("train", world["train_clips"], world["seed"]), ("test", world["test_clips"], world["seed"] + 1)):
        paths[split] = os.path.join(world["dir"] or os.path.join(run_dir, "worlds"), split)
        if not os.path.isdir(paths[split]) or not os.listdir(paths[split]):
            generate_world(paths[split], num_clips=clips, seed=seed, cfg=world_cfg)
        print(f"[reproduce] {split}: {clips} synthetic clips (seed {seed}) in {paths[split]}")
    settings = {"run_dir": run_dir, "train_path": paths["train"], "test_path": paths["test"], "ray": config["ray"]}
    summary = run_study(config["study"], compose_row, settings)
    held = sum(claim["verdict"] == "holds" for claim in summary["claims"])
    print(f"[reproduce] {held} of {len(summary['claims'])} claims hold; tables in {run_dir}/study.md")


if __name__ == "__main__":
    main()
