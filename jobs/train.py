"""Train a recipe: `python jobs/train.py recipe=mc3_vq data.path=<url> run_dir=<dir> ...`."""

import hydra
from omegaconf import DictConfig

from mmdist.train import fit


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = fit(cfg)
    final = summary["final"]
    print(f"[train] done: step {final.get('step')} loss {final.get('loss')}; checkpoint {summary['checkpoint']}")


if __name__ == "__main__":
    main()
