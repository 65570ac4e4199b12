"""One trial = one training run: the trial's sampled values merged into the training config, then
`mmdist.train.fit`, whose reports reach Tune through `TuneReportCallback`.

Ray Train V2 refuses `Tuner(trainer)`; a function trainable that builds and fits the `TorchTrainer`
is the supported way (ENVIRONMENT.md). The trial function itself holds almost nothing
(`sweep.trial_resources`, 0.01 CPU by default): the CPUs and GPUs belong to the train workers and
Ray Data, so trials and their workers cannot deadlock on each other's reservations.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from mmdist.train import fit
from mmdist.tune.space import with_values


def trial_config(base_config: dict, params: dict, trial_id: str) -> dict:
    """The training config of one trial: `params` (dotted key -> value) set, its own run_dir under the
    sweep's (`<run_dir>/trials/<trial_id>`) and its own Train run name, so that checkpoints of
    trials never mix and a restarted trial resumes from its own latest checkpoint."""
    config = with_values(base_config, params)
    config["run_dir"] = os.path.join(base_config["run_dir"], "trials", trial_id)
    config["trainer"]["run_name"] = f"{base_config['trainer']['run_name']}-{trial_id}"
    return config


def train_trial(params: dict, base_config: dict, metric: str) -> None:
    """The function trainable. `base_config` is the unresolved training config (interpolations such
    as `model.modalities: ${recipe.modalities}` follow the sampled values); fit resolves it."""
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(base_config, params, trial_id)
    summary = fit(OmegaConf.create(config), callbacks=[TuneReportCallback()])
    if not any(metric in report for report in summary["history"]):
        reported = sorted({name for report in summary["history"] for name in report})
        raise ValueError(
            f"sweep.metric {metric!r} was never reported by trial {trial_id}; the trainer reported: "
            f"{', '.join(reported) or 'nothing'}"
        )


def trial_dirname(trial) -> str:
    """Short trial folder names (Tune's default packs every hyperparameter into the path)."""
    return trial.trial_id
