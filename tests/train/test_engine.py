"""DeepSpeed config building: what the trainer config declares reaches DeepSpeed; bad keys fail by name."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmdist.train.engine import deepspeed_config, micro_batch_size
from mmdist.config import redact


@pytest.fixture()
def trainer_cfg():
    return OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "configs/trainer/default.yaml"))


def test_micro_batch_is_global_batch_over_workers_and_accumulation():
    assert micro_batch_size(32, 2, 2) == 8
    with pytest.raises(ValueError, match="data.batch_size=30"):
        micro_batch_size(30, 4, 1)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_and_precision_reach_deepspeed(trainer_cfg, stage):
    trainer_cfg.update(zero_stage=stage, precision="bf16", grad_accum_steps=2)
    config = deepspeed_config(trainer_cfg, micro_batch=4)
    assert config["zero_optimization"]["stage"] == stage
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "bf16" not in config  # bf16 params would cast the fp32 codebook (SPEC 8.8)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["scheduler"]["params"]["warmup_num_steps"] == trainer_cfg["warmup_steps"]


def test_fp32_has_no_autocast(trainer_cfg):
    assert "torch_autocast" not in deepspeed_config(trainer_cfg, micro_batch=2)


@pytest.mark.parametrize(("key", "value"), [("zero_stage", 4), ("precision", "fp16")])
def test_bad_trainer_values_name_the_key(trainer_cfg, key, value):
    trainer_cfg[key] = value
    with pytest.raises(ValueError, match=f"trainer.{key}"):
        deepspeed_config(trainer_cfg, micro_batch=2)


def test_secrets_are_redacted_from_the_written_config():
    config = {
        "storage": {"endpoint_url": "http://127.0.0.1:9000", "aws_secret_access_key": "abc"},
        "token": "t",
        "data": {"text": {"max_tokens": 16}},  # a count of tokens, not a secret
    }
    assert redact(config) == {
        "storage": {"endpoint_url": "http://127.0.0.1:9000", "aws_secret_access_key": "***"},
        "token": "***",
        "data": {"text": {"max_tokens": 16}},
    }
