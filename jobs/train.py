"""Train a recipe: `python jobs/train.py recipe=mc3_vq data.path=<url> run_dir=<dir> ...`."""

import os

import hydra
from omegaconf import DictConfig

from mmdist.train.fit import fit


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    summary = fit(cfg)
    final = summary["final"]
    print(f"[train] done: step {final.get('step')} loss {final.get('loss')}; checkpoint {summary['checkpoint']}")
    run_dir = os.path.abspath(cfg.run_dir)
    if cfg.logging.tensorboard:
        print(f"[train] curves: tensorboard --logdir {run_dir}/tensorboard")
    if "mlflow" in summary:
        print(f"[train] MLflow run {summary['mlflow']['run_id']} in {summary['mlflow']['tracking_uri']}")


if __name__ == "__main__":
    main()
