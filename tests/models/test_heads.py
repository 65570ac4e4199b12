"""MMV's FAC graph as the release builds it (fac_relu, SPEC 8.6), checked against the module's own layers
applied by hand; and where two modalities are compared (comparison_space)."""

from __future__ import annotations

import copy

import pytest
import torch

from mmdist.models import build_model
from mmdist.models.heads import FACHeads, comparison_space


def batch_norm_by_hand(x: torch.Tensor, norm: torch.nn.BatchNorm1d, batch_statistics: bool) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias, with the batch's biased statistics or the running ones."""
    if batch_statistics:
        mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
    else:
        mean, var = norm.running_mean, norm.running_var
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def randomised_heads(seed: int = 0) -> FACHeads:
    """Small FAC heads whose batch norms hold non-trivial affine parameters and running statistics."""
    torch.manual_seed(seed)
    heads = FACHeads({"video": 12, "audio": 10, "text": 8}, fine_dim=16, coarse_dim=6).double()
    for module in heads.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return heads


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(5, 12, generator=g, dtype=torch.float64),
        "audio": torch.randn(5, 10, generator=g, dtype=torch.float64),
        "text": torch.randn(5, 3, 8, generator=g, dtype=torch.float64),
    }


def video_to_va_by_hand(heads: FACHeads, video: torch.Tensor, batch_statistics: bool) -> torch.Tensor:
    first, first_norm, _, second, second_norm = heads.video_to_va
    hidden = torch.relu(batch_norm_by_hand(video @ first.weight.T + first.bias, first_norm, batch_statistics))
    return batch_norm_by_hand(hidden @ second.weight.T, second_norm, batch_statistics)


@pytest.mark.parametrize("training", [False, True])
def test_fac_relu_graph_equals_the_layers_applied_by_hand(training):
    heads = randomised_heads().train(training)
    x = inputs()
    running = {name: value.clone() for name, value in heads.state_dict().items() if "running" in name}
    out = heads(x)

    video_va = video_to_va_by_hand(heads, x["video"], batch_statistics=training)
    audio_va = x["audio"] @ heads.audio_to_va.weight.T + heads.audio_to_va.bias
    torch.testing.assert_close(out["video_va"], video_va)
    torch.testing.assert_close(out["audio_va"], audio_va)
    # coarse = bn(linear(relu(va))), one linear + batch norm shared by vision and audio; the S_va outputs
    # are the vectors before the ReLU (they have negative entries), which the va loss compares
    g = heads.va_to_vat.weight
    assert (out["video_va"] < 0).any() and (out["audio_va"] < 0).any()
    torch.testing.assert_close(out["video_vat"], batch_norm_by_hand(torch.relu(video_va) @ g.T, heads.va_to_vat_norm, training))
    # audio -> S_vat is normalised with the running statistics, also in training (the release computes it
    # at evaluation only, so that audio never enters the statistics)
    torch.testing.assert_close(out["audio_vat"], batch_norm_by_hand(torch.relu(audio_va) @ g.T, heads.va_to_vat_norm, False))
    torch.testing.assert_close(out["text_vat"], x["text"] @ heads.text_to_vat.weight.T + heads.text_to_vat.bias)
    assert out["video_vat"].shape == (5, 6) and out["text_vat"].shape == (5, 3, 6)


def test_only_vision_moves_the_coarse_batch_norm_statistics():
    heads = randomised_heads().train()
    x = inputs()
    norm = heads.va_to_vat_norm
    before = norm.running_mean.clone()
    out = heads(x)
    fine = out["video_va"].detach()
    projected = torch.relu(fine) @ heads.va_to_vat.weight.T  # the vision batch the statistics saw
    expected = (1 - norm.momentum) * before + norm.momentum * projected.mean(dim=0)
    torch.testing.assert_close(norm.running_mean, expected)
    assert heads.training and norm.training  # the audio pass's eval mode does not stick
    # an audio-only change leaves every statistic alone
    state = {name: value.clone() for name, value in heads.state_dict().items()}
    heads.to_coarse(torch.randn(5, 16, dtype=torch.float64), update_statistics=False)
    for name, value in heads.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_linear_layers_before_batch_norm_have_no_bias_and_heads_are_linear_where_the_release_is():
    heads = randomised_heads()
    assert heads.video_to_va[3].bias is None and heads.va_to_vat.bias is None  # bn_after_proj: BN's offset replaces it
    assert heads.video_to_va[0].out_features == heads.video_to_va[3].in_features == 16  # mlp@fine_dim
    assert isinstance(heads.audio_to_va, torch.nn.Linear) and heads.audio_to_va.bias is not None
    assert isinstance(heads.text_to_vat, torch.nn.Linear) and heads.text_to_vat.bias is not None


def test_gradients_reach_every_head_parameter_from_the_two_losses_spaces():
    heads = randomised_heads().train()
    out = heads(inputs())
    # the mmv recipe's two terms read video_va, audio_va (NCE) and video_vat, text_vat (MIL-NCE)
    (out["video_va"].sum() + out["audio_va"].sum() + (out["video_vat"] ** 2).sum() + out["text_vat"].sum()).backward()
    for name, parameter in heads.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_comparison_space():
    assert comparison_space(("video", "audio"), has_fine_space=True) == "va"
    assert comparison_space(("audio",), has_fine_space=True) == "va"  # a modality alone: its fine vector
    assert comparison_space(("video", "text"), has_fine_space=True) == "joint"
    assert comparison_space(("video", "audio", "text"), has_fine_space=True) == "joint"
    assert comparison_space(("video", "audio"), has_fine_space=False) == "joint"


def test_model_embeddings_are_the_coarse_vectors(tiny_cfg, data_cfg, batch_factory):
    cfg = copy.deepcopy(tiny_cfg)
    cfg.update(head="fac")
    cfg["codebook"]["enabled"] = False
    torch.manual_seed(0)
    model = build_model(cfg, data_cfg).eval()
    out = model(batch_factory(size=4))
    for m in ("video", "audio", "text"):
        assert torch.equal(out["embeddings"][m], out["fac"][f"{m}_vat"])
