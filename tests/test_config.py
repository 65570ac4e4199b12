"""The one config schema (mmdist/config.py, mmdist/config_schema/): every section of every job's
composed config is checked at start-up; an unknown key, a missing one and a value of the wrong type
fail in one line that names the full key.

Configs are composed in-process with Hydra's compose API, once per job; each case edits the composed
dict and checks it, as the job does before Ray starts (no subprocess).
"""

from __future__ import annotations

import copy
import dataclasses
import typing

import pytest

from mmdist.config import ConfigError, check_config
from mmdist.config_schema.benchmarks import SUITES
from mmdist.config_schema.jobs import JOBS
from mmdist.config_schema.variants import Variants
from tests.conftest import load_job_cfg

# every job (configs/<job>.yaml) and benchmark suite, with the values its config leaves to the command line
CASES = {
    "train": ("train", ("data.path=/d",)),
    "sweep": ("sweep", ("data.path=/d",)),
    "demo": ("demo", ()),
    "evaluate": ("evaluate", ("checkpoint=/c", "data.path=/d")),
    "embed": ("embed", ("checkpoint=/c", "data.path=/d", "out=/o")),
    "export": ("export", ("checkpoint=/c", "out=/o")),
    "check_data": ("check_data", ("data.path=/d",)),
    "deflate": ("deflate", ("checkpoint=/c", "data.path=/d")),
    "ingest": ("ingest", ("manifest=/m", "out=/o")),
    "make_dataset": ("make_dataset", ("out=/o", "num_clips=4", "seed=0")),
    "reproduce": ("reproduce", ()),
    **{f"benchmark suite={suite}": ("benchmark", (f"suite={suite}",)) for suite in SUITES.classes},
}
UNKNOWN = "not_a_key"


@pytest.fixture(scope="module")
def composed() -> dict:
    return {case: load_job_cfg(job, overrides) for case, (job, overrides) in CASES.items()}


def check(case: str, config: dict) -> dict:
    job, overrides = CASES[case]
    return check_config(config, job, suite=overrides[0].removeprefix("suite=") if job == "benchmark" else None)


def sections(value, schema, path: str, suite: str | None = None):
    """(path, schema class) of every section of a config: each mapping the schema types by a class."""
    if isinstance(schema, Variants):
        schema = schema.classes[suite if schema.key is None else value[schema.key]]
    if dataclasses.is_dataclass(schema):
        yield path, schema
        hints = typing.get_type_hints(schema)
        for spec in dataclasses.fields(schema):
            kind = spec.metadata.get("variants", hints[spec.name])
            yield from sections(value[spec.name], kind, f"{path}.{spec.name}".lstrip("."), suite)
        return
    origin, args = typing.get_origin(schema), typing.get_args(schema)
    if origin is typing.Union and value is not None:
        yield from sections(value, next(arg for arg in args if arg is not type(None)), path, suite)
    elif origin is list:
        for index, item in enumerate(value):
            yield from sections(item, args[0], f"{path}[{index}]", suite)
    elif origin is dict:
        for key, item in value.items():
            yield from sections(item, args[1], f"{path}.{key}", suite)


def node(config: dict, path: str):
    for part in path.replace("[", ".[").split(".") if path else []:
        config = config[int(part[1:-1])] if part.startswith("[") else config[part]
    return config


@pytest.mark.parametrize("case", list(CASES))
def test_every_section_of_every_job_names_an_unknown_key(composed, case):
    job, overrides = CASES[case]
    config = composed[case]
    check(case, config)  # the shipped config is valid
    suite = overrides[0].removeprefix("suite=") if job == "benchmark" else None
    found = list(sections(config, JOBS[job], "", suite))
    assert len(found) >= 2
    for path, schema in found:
        broken = copy.deepcopy(config)
        node(broken, path)[UNKNOWN] = 1
        key = f"{path}.{UNKNOWN}".lstrip(".")
        with pytest.raises(ConfigError) as error:
            check(case, broken)
        message = str(error.value)
        assert message.startswith(f"{key}: unknown key ("), message
        assert "\n" not in message and dataclasses.fields(schema)[0].name in message  # the known keys are listed


@pytest.mark.parametrize(
    ("case", "key", "value", "message"),
    [
        ("train", "trainer.lr", "fast", "trainer.lr: must be a number, got 'fast'"),
        ("train", "trainer.use_gpu", "yes", "trainer.use_gpu: must be bool, got 'yes'"),
        ("train", "trainer.max_steps", 1.5, "trainer.max_steps: "),
        ("train", "trainer.max_steps", True, "trainer.max_steps: must be int, got True"),
        ("train", "validation.path", 3, "validation.path: must be str, got 3"),
        ("train", "model.codebook.enabled", 1, "model.codebook.enabled: must be bool, got 1"),
        ("train", "model.video.channels", [40, "wide"], "model.video.channels[1]: "),
        ("train", "recipe.consensus_alphas", {"video": "half", "text": 1.0}, "recipe.consensus_alphas.video: "),
        ("train", "ray.num_cpus", "four", "ray.num_cpus: "),
        ("sweep", "sweep.scheduler.grace_period", "soon", "sweep.scheduler.grace_period: "),
        ("evaluate", "eval.retrieval", 5, "eval.retrieval: "),
        ("evaluate", "logging.mlflow.run_id", 7, "logging.mlflow.run_id: must be str, got 7"),
        ("ingest", "video.crf", "high", "video.crf: "),
        ("make_dataset", "world.region_proportions.I", "most", "world.region_proportions.I: "),
        ("reproduce", "study.rows.f.overrides", "recipe=mcn", "study.rows.f.overrides: must be a list, got 'recipe=mcn'"),
        ("sweep", "sweep.trial_resources", 1, "sweep.trial_resources: must be a mapping, got 1"),
        ("benchmark suite=gpu", "suite.variants[0].compile", "no", "suite.variants[0].compile: must be bool, got 'no'"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key(composed, case, key, value, message):
    config = copy.deepcopy(composed[case])
    parent, _, leaf = key.rpartition(".")
    node(config, parent)[leaf] = value
    with pytest.raises(ConfigError) as error:
        check(case, config)
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


def test_missing_keys_and_variants_are_named(composed):
    config = copy.deepcopy(composed["train"])
    del config["trainer"]["lr"]
    with pytest.raises(ConfigError, match=r"^trainer\.lr: missing key"):
        check_config(config, "train")
    config = copy.deepcopy(composed["train"])
    config["recipe"]["name"] = "mc4"
    with pytest.raises(ConfigError, match=r"^recipe\.name must be one of \['cmcm', 'mc3', 'mc3_vq', 'mcn', 'mmv'\], got 'mc4'"):
        check_config(config, "train")
    config = copy.deepcopy(composed["train"])
    config["model"]["audio"]["backbone"] = "resnet2d"  # the 1-D ResNet's keys are not the 2-D one's
    with pytest.raises(ConfigError, match=r"^model\.audio\.(arch: missing key|stem_channels: unknown key)"):
        check_config(config, "train")
    config = copy.deepcopy(composed["train"])
    config["recipe"]["lambda_va"] = 1.0  # an mmv key in the mc3_vq recipe
    with pytest.raises(ConfigError, match=r"^recipe\.lambda_va: unknown key"):
        check_config(config, "train")


def test_a_required_value_left_unset_is_named():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("export", overrides=["out=/o"])
    with pytest.raises(ConfigError, match=r"^checkpoint: missing value \(\?\?\? in configs/"):
        check_config(cfg, "export")
