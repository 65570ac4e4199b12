"""build_model and forward reject bad configs and batches with errors that name the key."""

from __future__ import annotations

import copy

import pytest
import torch

from mmdist.config import ConfigError
from mmdist.models import BatchError, build_model


def _broken(cfg: dict, path: str, value=None, delete: bool = False) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, leaf = path.split(".")
    node = cfg
    for parent in parents:
        node = node[parent]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return cfg


@pytest.mark.parametrize(
    ("path", "value", "delete", "message"),
    [
        ("video.channels", None, True, "model.video.channels"),
        ("video.chanels", [8], False, "model.video.chanels"),
        ("codebook.num_codes", 0, False, "model.codebook.num_codes"),
        ("codebook.enabled", "yes", False, "model.codebook.enabled"),
        ("video.blocks", [1, 1, 1], False, "model.video.blocks"),
        ("audio.kernel", 4, False, "model.audio.kernel"),
        ("text.heads", 3, False, "model.text.heads"),
        ("head", "shared", False, "model.head"),
        ("modalities", ["video"], False, "model.modalities"),
        ("modalities", ["video", "smell"], False, "model.modalities"),
        ("fac.coarse_dim", None, True, "model.fac.coarse_dim"),
        ("reconstruction_hidden_dim", None, True, "model.reconstruction_hidden_dim"),
    ],
)
def test_bad_model_config_names_the_key(tiny_cfg, data_cfg, path, value, delete, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_model(_broken(tiny_cfg, path, value, delete), data_cfg)


@pytest.mark.parametrize("path", ["audio.n_mels", "text.vocab_size", "video.num_frames", "video.size"])
def test_missing_data_key_is_named(tiny_cfg, data_cfg, path):
    with pytest.raises(ConfigError, match=r"data\." + path.replace(".", r"\.")):
        build_model(tiny_cfg, _broken(data_cfg, path, delete=True))


def test_video_smaller_than_the_network_stride_is_refused(tiny_cfg, data_cfg):
    with pytest.raises(ConfigError, match=r"data\.video\.size"):
        build_model(tiny_cfg, _broken(data_cfg, "video.size", 4))


def test_fac_with_codebook_is_refused(tiny_cfg, data_cfg):
    cfg = _broken(tiny_cfg, "head", "fac")
    with pytest.raises(ConfigError, match=r"model\.codebook\.enabled"):
        build_model(cfg, data_cfg)


def test_bad_batches_name_the_key(tiny_cfg, data_cfg, batch_factory):
    model = build_model(tiny_cfg, data_cfg)
    batch = batch_factory(size=2)
    missing = {k: v for k, v in batch.items() if k != "audio_frame_mask"}
    with pytest.raises(BatchError, match="audio_frame_mask"):
        model(missing)
    with pytest.raises(BatchError, match=r"batch\['audio'\]"):
        model({**batch, "audio": torch.zeros(2, 80, 40)})
    with pytest.raises(BatchError, match=r"batch\['video'\].*uint8"):
        model({**batch, "video": batch["video"].float()})
    tokens = batch["text_tokens"].clone()
    tokens[0, 0, 0] = 64  # vocab_size is 64
    with pytest.raises(BatchError, match=r"data\.text\.vocab_size"):
        model({**batch, "text_tokens": tokens})
