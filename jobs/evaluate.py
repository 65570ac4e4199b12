"""Evaluate a checkpoint: `python jobs/evaluate.py checkpoint=<path | s3://... | run_dir> data.path=<url> run_dir=<dir>`.

Writes run_dir/embeddings/*.parquet, run_dir/metrics.json, run_dir/report.md and report.html.
"""

import hydra
from omegaconf import DictConfig, OmegaConf
from ray.data import DataContext

from mmdist.eval import evaluate
from mmdist.runtime import init_ray


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    init_ray(config["ray"])
    DataContext.get_current().enable_progress_bars = config["data_progress_bars"]
    metrics = evaluate(
        config["checkpoint"], config["data"], config["storage"], config["eval"], config["run_dir"], config["training_run_dir"]
    )
    for name, values in metrics["retrieval"].items():
        print(f"[evaluate] {name}: R@1 {values['R@1']:.1f} R@5 {values['R@5']:.1f} R@10 {values['R@10']:.1f} MdR {values['MdR']:.1f}")
    for name, values in metrics["discovery"].items():
        print(f"[evaluate] discovery {name}: ROC-AUC {values['roc_auc']:.3f} PR-AUC {values['pr_auc']:.3f}")
    print(f"[evaluate] {metrics['num_clips']} clips; metrics, report and embeddings in {config['run_dir']}")


if __name__ == "__main__":
    main()
