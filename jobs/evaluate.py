"""Evaluate a checkpoint: `python jobs/evaluate.py checkpoint=<path | s3://... | run_dir> data.path=<url> run_dir=<dir>`.

Writes run_dir/embeddings/*.parquet, run_dir/metrics.json, run_dir/report.md and report.html; with
`logging.mlflow.run_id=<a training run's id>` also logs the figures and the report into that MLflow run.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from mmdist.eval.job import check_eval_inputs, run_evaluation
from mmdist.ray_setup import init_ray


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_eval_inputs(config)  # configs, the checkpoint's saved config, data.path's shards, MLflow: before Ray starts
    init_ray(config["ray"], verbose=config["verbose"])
    run_evaluation(config)


if __name__ == "__main__":
    main()
