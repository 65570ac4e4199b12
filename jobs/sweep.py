"""Sweep training hyperparameters with Ray Tune:
`python jobs/sweep.py sweep=<name> sweep.num_samples=N trainer.max_steps=S data.path=<url> run_dir=<dir>`.

Writes run_dir/sweep_results.csv (+ .md) and run_dir/best_overrides.yaml (see mmdist/tune/sweep.py).
Started again with the same run_dir, an interrupted sweep resumes.
"""

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mmdist.tune import run_sweep


@hydra.main(config_path="../configs", config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # the best trial is written as its difference from `jobs/train.py` with the same config groups
    train_groups = set(_group_choices(compose("train", return_hydra_config=True)))
    choices = {group: option for group, option in HydraConfig.get().runtime.choices.items() if group in train_groups}
    group_overrides = [f"{group}={option}" for group, option in choices.items()]
    train_defaults = OmegaConf.to_container(compose("train", overrides=group_overrides), resolve=True, throw_on_missing=False)
    summary = run_sweep(cfg, train_defaults, group_overrides, compose_evaluate=_compose_evaluate)
    best = summary["best"]
    print(f"[sweep] done: {len(summary['rows'])} trials; best {best['trial_id']} ({cfg.sweep.metric} = {best[cfg.sweep.metric]})")


def _compose_evaluate(overrides: list[str]) -> dict:
    """jobs/evaluate.py's config with `overrides` (the sweep's final evaluation runs its work in this process)."""
    return OmegaConf.to_container(compose("evaluate", overrides=overrides), resolve=True, throw_on_missing=True)


def _group_choices(cfg: DictConfig) -> dict:
    return {group: option for group, option in cfg.hydra.runtime.choices.items() if not group.startswith("hydra/")}


if __name__ == "__main__":
    main()
