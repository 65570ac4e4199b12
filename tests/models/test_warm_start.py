"""Warm start (CMCM Sec. 4.1): load what matches by name and shape, report the rest."""

from __future__ import annotations

import copy

import torch

from mmdist.models import build_model, load_matching_state_dict


def test_loads_matching_entries_and_reports_the_rest(tiny_cfg, data_cfg):
    torch.manual_seed(0)
    source = build_model(tiny_cfg, data_cfg)
    changed = copy.deepcopy(tiny_cfg)
    changed["embed_dim"] = 96  # heads and f_code change shape
    changed["codebook"]["num_codes"] = 128  # codebook state changes shape
    torch.manual_seed(1)
    target = build_model(changed, data_cfg)

    checkpoint = {name: value.to(torch.bfloat16) if value.is_floating_point() else value
                  for name, value in source.state_dict().items()}
    checkpoint["old_head.weight"] = torch.zeros(3)
    del checkpoint["encoders.text.output.bias"]
    report = load_matching_state_dict(target, checkpoint)

    own = target.state_dict()
    expected_loaded = sorted(
        name for name, value in checkpoint.items() if name in own and own[name].shape == value.shape
    )
    assert report["loaded"] == expected_loaded
    assert "encoders.video.backbone.0.0.weight" in report["loaded"]
    assert "encoders.audio.backbone.0.1.running_mean" in report["loaded"]  # buffers too
    assert report["skipped"]["old_head.weight"] == "not in model"
    reason = report["skipped"]["embedding_heads.video.linear.weight"]
    assert reason == "shape [128, 80] in checkpoint, [96, 80] in model"
    assert "codes.quantizer.embed" in report["skipped"]
    assert report["missing"] == ["encoders.text.output.bias"]
    assert set(report["loaded"]).isdisjoint(report["skipped"])

    for name in report["loaded"]:  # values copied (cast back from bf16)
        assert own[name].dtype == source.state_dict()[name].dtype
        assert torch.equal(own[name], checkpoint[name].to(own[name].dtype)), name
    fresh = target.state_dict()["embedding_heads.video.linear.weight"]
    assert fresh.shape == (96, 80)  # skipped entries keep their initialisation
