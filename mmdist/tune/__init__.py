"""Hyperparameter sweeps: Ray Tune over `mmdist.train.fit` (search spaces in configs/sweep/)."""

from mmdist.tune.overrides import config_overrides, format_value
from mmdist.tune.results import rank_rows, trial_row
from mmdist.tune.space import build_param_space, flatten_space, with_values
from mmdist.tune.sweep import check_sweep_config, run_sweep
from mmdist.tune.trainable import train_trial, trial_config

__all__ = [
    "build_param_space",
    "check_sweep_config",
    "config_overrides",
    "flatten_space",
    "format_value",
    "rank_rows",
    "run_sweep",
    "train_trial",
    "trial_config",
    "trial_row",
    "with_values",
]
