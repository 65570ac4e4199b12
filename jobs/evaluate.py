"""Evaluate a checkpoint: `python jobs/evaluate.py checkpoint=<path | s3://... | run_dir> data.path=<url> run_dir=<dir>`.

Writes run_dir/embeddings/*.parquet, run_dir/metrics.json, run_dir/report.md and report.html; with
`logging.mlflow.run_id=<a training run's id>` also logs the figures and the report into that MLflow run.
"""

import hydra
from omegaconf import DictConfig, OmegaConf
from ray.data import DataContext

from mmdist.eval import evaluate
from mmdist.eval.job import check_eval_inputs, resolve_checkpoint
from mmdist.ray_setup import init_ray
from mmdist.tracking import evaluation_tracking_uri, log_evaluation


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_eval_inputs(config)  # configs, the checkpoint's saved config, data.path's shards: before Ray starts
    mlflow_run = config["logging"]["mlflow"]["run_id"]
    mlflow_uri = evaluation_tracking_uri(config["logging"]["mlflow"], resolve_checkpoint(config["checkpoint"], config["training_run_dir"])[1])
    init_ray(config["ray"], verbose=config["verbose"])
    DataContext.get_current().enable_progress_bars = config["data_progress_bars"]
    metrics = evaluate(
        config["checkpoint"], config["data"], config["storage"], config["eval"], config["run_dir"], config["training_run_dir"]
    )
    for name, values in metrics["retrieval"].items():
        print(f"[evaluate] {name}: R@1 {values['R@1']:.1f} R@5 {values['R@5']:.1f} R@10 {values['R@10']:.1f} MdR {values['MdR']:.1f}")
    for name, values in metrics["discovery"].items():
        print(f"[evaluate] discovery {name}: ROC-AUC {values['roc_auc']:.3f} PR-AUC {values['pr_auc']:.3f}")
    print(f"[evaluate] {metrics['num_clips']} clips; metrics, report and embeddings in {config['run_dir']}")
    if mlflow_run:
        log_evaluation(mlflow_run, mlflow_uri, metrics, config["run_dir"])
        print(f"[evaluate] figures and report logged to MLflow run {mlflow_run} ({mlflow_uri})")


if __name__ == "__main__":
    main()
