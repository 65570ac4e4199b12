"""The sweep job's config: every shipped search file composes and validates; bad settings fail
before any Ray work, naming the key; ASHA is wired to optimizer steps."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from mmdist.tune import build_param_space, check_sweep_config, run_sweep
from mmdist.tune.sweep import build_scheduler
from tests.conftest import CONFIG_DIR, load_job_cfg

SEARCHES = sorted(path.stem for path in (CONFIG_DIR / "sweep").glob("*.yaml"))
REQUIRED = {"gpu": ("sweep.storage_path=s3://b/s", "trainer.storage_path=s3://b/c", "validation.path=s3://b/v")}  # ??? there


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_file_composes_and_validates(name):
    cfg = load_job_cfg("sweep", (f"sweep={name}", "data.path=/data", *REQUIRED.get(name, ())))
    check_sweep_config(cfg["sweep"])
    space = build_param_space(cfg["sweep"]["space"], cfg)
    assert space and cfg["sweep"]["name"] == name
    build_scheduler(cfg["sweep"]["scheduler"], cfg["trainer"]["max_steps"])


def test_the_default_search_is_the_issue_default():
    cfg = load_job_cfg("sweep", ("data.path=/data",))
    assert cfg["sweep"]["name"] == "default"
    assert (cfg["sweep"]["metric"], cfg["sweep"]["mode"]) == ("val_mean_r5", "max")
    assert cfg["sweep"]["scheduler"]["name"] == "asha"
    # per-trial training on this machine: 1 worker at half a CPU, the trial itself at 0.01 CPU
    assert cfg["trainer"]["num_workers"] == 1 and cfg["trainer"]["cpus_per_worker"] == 0.5
    assert cfg["sweep"]["trial_resources"] == {"CPU": 0.01}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("metric"), "sweep.metric: missing key"),
        (lambda s: s.update(metrc="x"), "sweep.metrc: unknown key"),
        (lambda s: s.update(mode="maximize"), "sweep.mode"),
        (lambda s: s.update(best_scope="first"), "sweep.best_scope"),
        (lambda s: s.update(num_samples=0), "sweep.num_samples"),
        (lambda s: s["scheduler"].update(name="pbt"), "sweep.scheduler.name"),
        (lambda s: s["scheduler"].pop("grace_period"), "sweep.scheduler.grace_period: missing key"),
        (lambda s: s["scheduler"].update(grace_period="soon"), "sweep.scheduler.grace_period: must be int"),
        (lambda s: s["mlflow"].pop("tracking_uri"), "sweep.mlflow.tracking_uri: missing key"),
        (lambda s: s.update(trial_resources={"CPU": -1}), "sweep.trial_resources"),
    ],
)
def test_bad_sweep_settings_name_the_key(change, message):
    sweep = copy.deepcopy(load_job_cfg("sweep", ("data.path=/data",))["sweep"])
    change(sweep)
    with pytest.raises(ValueError) as error:
        check_sweep_config(sweep)
    assert message in str(error.value)


def test_asha_counts_optimizer_steps_up_to_max_steps():
    scheduler = build_scheduler({"name": "asha", "grace_period": 100, "reduction_factor": 3, "brackets": 1}, 1000)
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler._time_attr == "step" and scheduler._max_t == 1000
    # rungs at grace x factor^k below max_t: 100, 300, 900 (Ray's own bracket arithmetic)
    milestones = sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)
    assert milestones[:3] == [100, 300, 900]
    assert isinstance(build_scheduler({"name": "fifo"}, 10), FIFOScheduler)
    with pytest.raises(ValueError, match="grace_period must be in"):
        build_scheduler({"name": "asha", "grace_period": 20, "reduction_factor": 3, "brackets": 1}, 10)


def compose_sweep(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("sweep", overrides=["data.path=/data", *overrides])


def test_run_sweep_fails_before_starting_ray_on_bad_input(tmp_path, monkeypatch):
    import mmdist.tune.sweep

    def ray_started(ray_cfg):  # the suite's own Ray may already run in this process: watch the call
        raise AssertionError("run_sweep reached init_ray before refusing the bad input")

    monkeypatch.setattr(mmdist.tune.sweep, "init_ray", ray_started)
    with pytest.raises(ValueError, match="sweep.space.recipe.nope"):
        run_sweep(compose_sweep(f"run_dir={tmp_path}/a", "+sweep.space.recipe.nope={choice:[1]}", "sweep=smoke"), {}, [])
    with pytest.raises(ValueError, match="set validation.path"):
        run_sweep(compose_sweep(f"run_dir={tmp_path}/c"), {}, [])  # default metric val_mean_r5, no held-out data
    def compose_evaluate(overrides):
        return load_job_cfg("evaluate", tuple(overrides))

    with pytest.raises((KeyError, ValueError), match="eval.nope"):  # the final evaluation's config, checked before the sweep
        run_sweep(compose_sweep(f"run_dir={tmp_path}/b", "sweep=smoke", "sweep.final_eval.enabled=true",
                                "sweep.final_eval.overrides=['+eval.nope=1']"), {}, [], compose_evaluate)
    assert Path(tmp_path / "a").is_dir()  # the run_dir exists; nothing else happened
