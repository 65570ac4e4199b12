"""Search spaces: sweep.space config -> Ray Tune domains, and sampled values -> a trial's training config.

Compared against: the composed configs/sweep files, distribution properties of many draws (a
log-uniform sample splits at the geometric mean, a uniform one does not), and OmegaConf's own
interpolation resolution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from ray.tune.search.sample import Categorical, Float, Integer

from mmdist.tune.space import build_param_space, flatten_space, with_values
from mmdist.tune.trainable import trial_config
from tests.conftest import load_job_cfg

DEFAULT_KEYS = {
    "model.codebook.num_codes",
    "recipe.cmcm_alpha",
    "recipe.consensus_alphas.video",
    "recipe.consensus_alphas.text",
}


def sweep_cfg(name: str = "default") -> dict:
    return load_job_cfg("sweep", (f"sweep={name}", "data.path=/data"))


def test_default_space_names_the_issue_hyperparameters():
    cfg = sweep_cfg()
    space = build_param_space(cfg["sweep"]["space"], cfg)
    assert set(space) == DEFAULT_KEYS
    assert space["model.codebook.num_codes"].categories == [512, 1024, 2048]
    assert space["recipe.cmcm_alpha"].categories == [0.0, 0.1, 1.0]
    for key in ("recipe.consensus_alphas.video", "recipe.consensus_alphas.text"):
        assert isinstance(space[key], Float) and (space[key].lower, space[key].upper) == (0.25, 2.0)
    # the recipe the sweep trains has every key it searches over
    assert cfg["recipe"]["name"] == "mc3_vq"


def test_log_alpha_space_draws_log_uniform_alpha():
    cfg = sweep_cfg("log_alpha")
    alpha = build_param_space(cfg["sweep"]["space"], cfg)["recipe.cmcm_alpha"]
    draws = np.asarray(alpha.sample(size=4000, random_state=np.random.default_rng(0)))
    assert draws.min() >= 0.01 and draws.max() <= 1.0
    # log-uniform on [0.01, 1]: half the mass below the geometric mean 0.1 (a uniform draw: 9 %)
    assert abs(float(np.mean(draws < 0.1)) - 0.5) < 0.03
    # and each decade equally likely: mean of log10 is the midpoint -1
    assert abs(float(np.mean(np.log10(draws))) + 1.0) < 0.03


def test_every_distribution_kind_maps_to_its_tune_domain():
    config = {"a": {"b": 1, "c": 2.0, "d": 3, "e": "x", "f": 0.5}}
    space = {
        "a": {
            "b": {"choice": [1, 2]},
            "c": {"uniform": [0.0, 4.0]},
            "d": {"randint": [1, 5]},
            "e": {"grid": ["x", "y"]},
            "f": {"loguniform": [0.1, 1.0]},
        }
    }
    domains = build_param_space(space, config)
    assert isinstance(domains["a.b"], Categorical)
    assert isinstance(domains["a.c"], Float) and (domains["a.c"].lower, domains["a.c"].upper) == (0.0, 4.0)
    assert isinstance(domains["a.d"], Integer) and (domains["a.d"].lower, domains["a.d"].upper) == (1, 5)
    assert domains["a.e"] == {"grid_search": ["x", "y"]}
    draws = domains["a.d"].sample(size=500, random_state=np.random.default_rng(1))
    assert set(draws) == {1, 2, 3, 4}  # high is exclusive
    uniform = np.asarray(domains["a.c"].sample(size=4000, random_state=np.random.default_rng(2)))
    assert abs(float(np.mean(uniform < 2.0)) - 0.5) < 0.03


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"recipe": {"nope": {"choice": [1]}}}, "sweep.space.recipe.nope: the training config has no key"),
        ({"recipe": {"cmcm_alpha": {"choice": [1], "uniform": [0, 1]}}}, "exactly one key"),
        ({"recipe": {"cmcm_alpha": {"loguniform": [0.0, 1.0]}}}, "sweep.space.recipe.cmcm_alpha.loguniform: log-uniform needs low > 0"),
        ({"recipe": {"cmcm_alpha": {"uniform": [1.0, 0.5]}}}, "low must be < high"),
        ({"recipe": {"cmcm_alpha": {"uniform": [1.0]}}}, "expected [low, high]"),
        ({"recipe": {"cmcm_alpha": 0.3}}, "sweep.space.recipe.cmcm_alpha: expected a distribution"),
        ({"model": {"codebook": {"num_codes": {"randint": [1.5, 4]}}}}, "integer bounds"),
        ({}, "sweep.space is empty"),
    ],
)
def test_bad_spaces_are_refused_naming_the_key(space, message):
    with pytest.raises(ValueError) as error:
        build_param_space(space, sweep_cfg())
    assert message in str(error.value)


def test_flatten_keeps_dotted_keys_and_specs():
    flat = flatten_space({"a": {"b": {"choice": [1]}, "c": {"d": {"uniform": [0, 1]}}}})
    assert flat == {"a.b": {"choice": [1]}, "a.c.d": {"uniform": [0, 1]}}


def test_with_values_sets_nested_keys_on_a_copy():
    config = {"recipe": {"cmcm_alpha": 0.1, "consensus_alphas": {"video": 0.5}}, "model": {"codebook": {"num_codes": 256}}}
    updated = with_values(config, {"recipe.consensus_alphas.video": np.float64(0.75), "model.codebook.num_codes": np.int64(1024)})
    assert updated["recipe"]["consensus_alphas"]["video"] == 0.75
    assert type(updated["model"]["codebook"]["num_codes"]) is int  # numpy scalars become YAML-able
    assert config["recipe"]["consensus_alphas"]["video"] == 0.5 and config["model"]["codebook"]["num_codes"] == 256


def test_trial_config_keeps_interpolations_live_and_separates_trials():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=["data.path=/data", "run_dir=/runs/s"])
    base = OmegaConf.to_container(cfg, resolve=False)
    del base["sweep"]
    params = {"recipe.modalities": ["video", "audio"], "recipe.cmcm_alpha": 1.0}
    first = OmegaConf.to_container(OmegaConf.create(trial_config(base, params, "t1")), resolve=True)
    second = trial_config(base, params, "t2")
    # model.modalities is ${recipe.modalities} in the recipe file: it follows the sampled value
    assert first["model"]["modalities"] == ["video", "audio"]
    assert first["recipe"]["cmcm_alpha"] == 1.0
    assert first["run_dir"] == "/runs/s/trials/t1" and second["run_dir"] == "/runs/s/trials/t2"
    assert first["trainer"]["run_name"] != second["trainer"]["run_name"]
    assert base["run_dir"] == "/runs/s" and math.isclose(base["recipe"]["cmcm_alpha"], 0.1)
