"""The demo (`make demo`): synthetic world -> mc3_vq training with 2 DeepSpeed workers -> metrics."""

import os

import hydra
from omegaconf import DictConfig, OmegaConf

from mmdist.config import check_config
from mmdist.data.synthetic import generate_world
from mmdist.eval import evaluate
from mmdist.tracking import log_evaluation
from mmdist.train.fit import fit


@hydra.main(config_path="../configs", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # resolved once: run_dir's ${now:...} would give another second when read again later
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_dir = os.path.abspath(cfg.run_dir)
    check_config(cfg, "demo")  # every section, before anything runs (mmdist/config.py)
    world = cfg.world
    world_cfg = OmegaConf.to_container(hydra.compose("make_dataset", overrides=list(world.overrides)), resolve=True)
    data_dir = os.path.join(run_dir, "data")
    for split, clips, seed in (("train", world.train_clips, world.seed), ("val", world.val_clips, world.seed + 1)):
        generate_world(os.path.join(data_dir, split), num_clips=clips, seed=seed, cfg=world_cfg)
        print(f"[demo] {split}: {clips} synthetic clips in {data_dir}/{split}")
    summary = fit(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "world"]))  # the training config
    config = OmegaConf.to_container(cfg, resolve=True)
    val_data = dict(config["data"], path=os.path.join(data_dir, "val"))
    eval_dir = os.path.join(run_dir, "eval")
    metrics = evaluate(summary["checkpoint"], val_data, config["storage"], config["eval"], eval_dir, training_run_dir=run_dir)
    print("[demo] held-out retrieval (R@1 / R@5 / MdR):")
    for pair, values in metrics["retrieval"].items():
        print(f"  {pair:>14}: {values['R@1']:5.1f} / {values['R@5']:5.1f} / {values['MdR']}")
    for pair, values in metrics["discovery"].items():
        print(f"[demo] sounding-action discovery {pair}: ROC-AUC {values['roc_auc']:.3f}, PR-AUC {values['pr_auc']:.3f}")
    print(f"[demo] training metrics: {run_dir}/metrics.json; curves: tensorboard --logdir {run_dir}/tensorboard")
    if "mlflow" in summary:  # logging.mlflow.enabled: the evaluation joins the training run
        record = summary["mlflow"]
        log_evaluation(record["run_id"], record["tracking_uri"], metrics, eval_dir)
        print(f"[demo] MLflow run {record['run_id']} (training and evaluation) in {record['tracking_uri']}")
    print(f"[demo] evaluation report: {eval_dir}/report.html (and report.md, metrics.json)")


if __name__ == "__main__":
    main()
