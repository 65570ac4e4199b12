"""Padding and absent modalities never leak into the outputs (training mode, batch norms included)."""

from __future__ import annotations

import copy

import torch

from mmdist.models import build_model


def _flatten(out: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in out.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, tuple):
            flat.update({f"{name}[{i}]": item for i, item in enumerate(value)})
        else:
            flat[name] = value
    return flat


def _run_twice(cfg: dict, data_cfg: dict, first: dict, second: dict) -> tuple[dict, dict]:
    """Two identical models in training mode (the EMA step makes a second call on one model differ)."""
    torch.manual_seed(0)
    model = build_model(cfg, data_cfg)
    twin = copy.deepcopy(model)
    return _flatten(model(first)), _flatten(twin(second))


def _scramble_padding(batch: dict, seed: int) -> dict:
    """Random values wherever the masks say 'not real'."""
    g = torch.Generator().manual_seed(seed)
    noisy = {key: value.clone() for key, value in batch.items()}
    absent_video = ~batch["has_video"]
    shape = noisy["video"][absent_video].shape
    noisy["video"][absent_video] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    frame_pad = ~batch["audio_frame_mask"] | ~batch["has_audio"].unsqueeze(1)  # [B, F]
    noise = torch.randn(noisy["audio"].shape, generator=g) * 10
    noisy["audio"] = torch.where(frame_pad.unsqueeze(1), noise, noisy["audio"])
    token_pad = ~batch["text_token_mask"]
    random_ids = torch.randint(0, 10_000, noisy["text_tokens"].shape, generator=g)  # out of vocab too
    noisy["text_tokens"] = torch.where(token_pad, random_ids, noisy["text_tokens"])
    return noisy


def test_padding_and_absent_modalities_do_not_change_any_output(tiny_cfg, data_cfg, batch_factory):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["reconstruction"] = True
    batch = batch_factory(size=6, seed=11)
    clean, noisy = _run_twice(cfg, data_cfg, batch, _scramble_padding(batch, seed=1))
    assert clean.keys() == noisy.keys()
    for name in clean:
        assert torch.allclose(clean[name], noisy[name], atol=1e-6), name


def test_absent_text_with_garbage_masks_is_ignored(tiny_cfg, data_cfg, batch_factory):
    """A clip without narration may still carry stale masks/tokens: has_text alone decides."""
    batch = batch_factory(size=5, seed=12)
    absent = ~batch["has_text"]
    stale = {key: value.clone() for key, value in batch.items()}
    stale["text_token_mask"][absent] = True
    stale["text_candidate_mask"][absent] = True
    stale["text_tokens"][absent] = 7
    clean, noisy = _run_twice(tiny_cfg, data_cfg, batch, stale)
    for name in clean:
        assert torch.allclose(clean[name], noisy[name], atol=1e-6), name

def test_real_tokens_and_frames_do_change_the_outputs(tiny_cfg, data_cfg, batch_factory):
    """The control for the tests above: the same comparison sees a change to real data."""
    batch = batch_factory(size=6, seed=11, all_present=True)
    changed = {key: value.clone() for key, value in batch.items()}
    changed["text_tokens"][0, 0, 0] = (changed["text_tokens"][0, 0, 0] + 1) % 64
    changed["audio"][0, :, 0] += 1.0
    clean, noisy = _run_twice(tiny_cfg, data_cfg, batch, changed)
    assert not torch.allclose(clean["embeddings.text"][0, 0], noisy["embeddings.text"][0, 0], atol=1e-6)
    assert not torch.allclose(clean["embeddings.audio"][0], noisy["embeddings.audio"][0], atol=1e-6)
    # Without the codebook's batch norm, other clips' narrations are encoded independently
    # (the text encoder uses LayerNorm, no batch statistics).
    cfg = copy.deepcopy(tiny_cfg)
    cfg["codebook"]["enabled"] = False
    clean, noisy = _run_twice(cfg, data_cfg, batch, changed)
    assert not torch.allclose(clean["embeddings.text"][0, 0], noisy["embeddings.text"][0, 0], atol=1e-6)
    assert torch.allclose(clean["embeddings.text"][1:], noisy["embeddings.text"][1:], atol=1e-6)


def test_a_batch_without_any_audio_still_runs_and_backpropagates(tiny_cfg, data_cfg, batch_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    batch = batch_factory(size=4)
    batch["has_audio"][:] = False
    batch["audio_frame_mask"][:] = False
    out = model(batch)
    assert not out["code_mask"]["audio"].any()
    assert torch.isfinite(out["embeddings"]["audio"]).all()
    loss = sum(e.sum() for e in out["embeddings"].values()) + out["commitment_loss"]
    loss.backward()  # the graph stays connected to every encoder (DeepSpeed reduces the same tensors)
    assert model.encoders["audio"].backbone[0][0].weight.grad is not None
