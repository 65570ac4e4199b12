"""Hydra overrides for the best trial: values written in Hydra's grammar and read back by Hydra's own
parser, and a config diff that Hydra's compose turns back into the target config."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mmdist.tune.overrides import config_overrides, format_value, write_overrides_file
from tests.conftest import CONFIG_DIR

VALUES = [
    0.1, 1e-05, 3.0e-3, -0.5, 1024, 0, -3, True, False, None,
    "mc3_vq", "s3://bucket/clips-v2/part_1", "/tmp/a b/c", "it's", "back\\slash", "quote\\'d", "ends\\", "true", "null", "1.5", "", "a=b",
    ["video", "audio"], [], [1, 2.5, "x y"], {"video": 0.5, "text": 1.0}, {"a": [1, {"b": None}]},
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(value) for value in VALUES])
def test_values_read_back_unchanged_by_hydras_parser(value):
    override = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])[0]
    parsed = override.value()
    assert parsed == value and type(parsed) is type(value)


def test_special_floats_read_back():
    parser = OverridesParser.create()
    assert parser.parse_overrides([f"k={format_value(math.inf)}"])[0].value() == math.inf
    assert math.isnan(parser.parse_overrides([f"k={format_value(math.nan)}"])[0].value())


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_diff_overrides_recompose_the_target_config():
    defaults = compose_train(["recipe=mc3_vq"])
    target = copy.deepcopy(defaults)
    target["data"]["path"] = "s3://bucket/my clips"
    target["recipe"]["cmcm_alpha"] = 0.37
    target["recipe"]["consensus_alphas"]["video"] = 0.8123456789
    target["model"]["codebook"]["num_codes"] = 2048
    target["model"]["modalities"] = ["video", "audio"]
    target["trainer"]["lr"] = 3e-3
    target["trainer"]["storage_path"] = "/ckpt"       # null in the defaults
    target["data"]["limit"] = 64
    target["trainer"]["new_knob"] = {"a": 1}           # absent from the defaults: +key
    del target["trainer"]["log_level"]                # absent from the target: ~key
    target["run_dir"] = "/elsewhere"                   # skipped: run-specific

    overrides = config_overrides(target, defaults, skip=("run_dir",))
    assert not any(line.startswith("run_dir") for line in overrides)
    assert "+trainer.new_knob={a:1}" in overrides and "~trainer.log_level" in overrides
    recomposed = compose_train(["recipe=mc3_vq", *overrides])
    recomposed["run_dir"] = target["run_dir"]
    assert recomposed == target


def test_no_difference_gives_no_overrides_and_int_float_differences_count():
    defaults = compose_train([])
    assert config_overrides(defaults, defaults) == []
    target = copy.deepcopy(defaults)
    target["recipe"]["cmcm_alpha"] = 1  # equal to 1.0 but an int: Hydra would keep the type it is given
    defaults["recipe"]["cmcm_alpha"] = 1.0
    assert config_overrides(target, defaults) == ["recipe.cmcm_alpha=1"]


def test_overrides_file_is_a_yaml_list_under_a_comment(tmp_path):
    lines = ["recipe=mc3_vq", "data.path='/tmp/a b'", "model.modalities=[video,audio]"]
    path = tmp_path / "best_overrides.yaml"
    write_overrides_file(str(path), lines, "first line\n\nthird line")
    text = path.read_text()
    assert text.startswith("# first line\n#\n# third line\n")
    assert yaml.safe_load(text) == lines
