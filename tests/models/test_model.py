"""The model's output contract (shapes, keys), the codebook branch (CMCM eqs. 2-5), FAC, MCN decoders."""

from __future__ import annotations

import copy
import time

import torch

from mmdist.models import build_model
from mmdist.models.layers import masked_mean
from mmdist.objectives import code_distribution, with_code_probs


def _with(cfg: dict, **changes) -> dict:
    cfg = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


def test_tiny_outputs_have_the_documented_shapes(tiny_cfg, data_cfg, batch_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    batch = batch_factory(size=5)
    raw = model(batch)
    out = with_code_probs(raw)  # the objectives compute eqs. 4-5
    size, candidates, tokens = 5, 3, 6
    embed_dim, num_codes = tiny_cfg["embed_dim"], tiny_cfg["codebook"]["num_codes"]
    # the model hands the objectives its projected features and the codebook the indices saw
    assert raw["codebook"].shape == (num_codes, tiny_cfg["codebook"]["dim"]) and "code_probs" not in raw
    for m in ("video", "audio", "text"):
        assert raw["code_features"][m].shape == (*raw["code_mask"][m].shape, tiny_cfg["codebook"]["dim"])
    assert "code_features" not in out and "codebook" not in out
    assert model.embed_dim == embed_dim
    assert out["embeddings"]["video"].shape == (size, embed_dim)
    assert out["embeddings"]["audio"].shape == (size, embed_dim)
    assert out["embeddings"]["text"].shape == (size, candidates, embed_dim)
    for m in ("video", "audio", "text"):
        assert torch.equal(out["present"][m], batch[f"has_{m}"])
        assert out["code_probs"][m].shape == (size, num_codes)
        assert out["code_indices"][m].dtype == torch.long
        assert out["code_indices"][m].shape == out["code_mask"][m].shape
        assert out["code_mask"][m].dtype == torch.bool
    # Video 8x32x32: stem strides (2, 4, 4), stage (2, 2, 2) -> 2 x 4 x 4 positions.
    assert out["code_mask"]["video"].shape == (size, 2 * 4 * 4)
    assert out["code_mask"]["audio"].shape == (size, 40 // 4)
    assert out["code_mask"]["text"].shape == (size, tokens)
    assert torch.equal(out["text_candidate_mask"], batch["text_candidate_mask"] & batch["has_text"].unsqueeze(1))
    assert out["commitment_loss"].dim() == 0 and out["commitment_loss"] >= 0
    assert "fac" not in out and "reconstruction" not in out


def test_code_outputs_follow_the_masks(tiny_cfg, data_cfg, batch_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg).eval()
    batch = batch_factory(size=6, seed=3)
    out = with_code_probs(model(batch))  # the objectives compute eqs. 4-5
    # Valid code positions, worked out from the input masks by hand.
    expected_audio = torch.zeros(6, 10, dtype=torch.bool)
    for i in range(6):
        frames = int(batch["audio_frame_mask"][i].sum())
        expected_audio[i, : -(-frames // 4)] = bool(batch["has_audio"][i])  # ceil(frames / 4)
    assert torch.equal(out["code_mask"]["audio"], expected_audio)
    assert torch.equal(out["code_mask"]["text"], batch["text_token_mask"][:, 0] & batch["has_text"].unsqueeze(1))
    assert torch.equal(out["code_mask"]["video"], batch["has_video"].unsqueeze(1).expand(6, 32))
    for m in ("video", "audio", "text"):
        indices, mask = out["code_indices"][m], out["code_mask"][m]
        assert (indices[~mask] == -1).all()
        assert ((indices[mask] >= 0) & (indices[mask] < tiny_cfg["codebook"]["num_codes"])).all()
        probs = out["code_probs"][m]
        present_rows = mask.any(dim=1)
        assert torch.allclose(probs[present_rows].sum(dim=1), torch.ones(int(present_rows.sum())), atol=1e-5)


def test_code_probs_match_a_loop_over_positions(tiny_cfg, data_cfg, batch_factory):
    """CMCM eqs. 4-5 from the model's own normalised features, recomputed position by position."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg).eval()
    batch = batch_factory(size=4, seed=5)
    out = with_code_probs(model(batch))  # the objectives compute eqs. 4-5
    fine, valid, _ = model.encode(batch)
    codes = model.codes(fine, valid)
    codebook = model.codes.codebook.double()
    normalised, mask = codes.normalised["audio"].double(), valid["audio"]
    for i in range(4):
        if not mask[i].any():
            continue
        total = torch.zeros(codebook.shape[0], dtype=torch.float64)
        for l in range(mask.shape[1]):
            if mask[i, l]:
                distance = (normalised[i, l] - codebook).norm(dim=1)  # Euclidean, not squared
                total += torch.softmax(-distance, dim=0)
                assert codes.indices["audio"][i, l] == distance.argmin()
        assert torch.allclose(out["code_probs"]["audio"][i].double(), total / mask[i].sum(), atol=1e-5)


def test_training_code_probs_use_the_codebook_the_indices_saw(tiny_cfg, data_cfg, batch_factory):
    """Issue 9, deviation 3: in a training forward the EMA step and resets move the codebook after the
    indices were chosen; eqs. 4-5 must use the codewords from before that step."""
    torch.manual_seed(0)
    tiny_cfg["codebook"]["dead_after"] = 1  # resets on the first update: the codebook moves a lot
    model = build_model(tiny_cfg, data_cfg)
    batch = batch_factory(size=4, seed=5)
    before = model.codes.codebook.clone()
    fine, valid, _ = model.encode(batch)
    codes = model.codes(fine, valid)  # one EMA update
    after = model.codes.codebook.clone()
    assert not torch.allclose(before, after)
    mask = valid["audio"]
    expected = code_distribution(codes.normalised["audio"], before, mask)
    moved = code_distribution(codes.normalised["audio"], after, mask)
    torch.testing.assert_close(codes.codebook, before, rtol=0, atol=0)
    # the full forward, from the same state, gives the distribution of the pre-update codebook
    torch.manual_seed(0)
    again = build_model(tiny_cfg, data_cfg)
    out = with_code_probs(again(batch))  # the objectives compute eqs. 4-5
    torch.testing.assert_close(out["code_probs"]["audio"], expected)
    assert not torch.allclose(out["code_probs"]["audio"], moved)


def test_embedding_is_f_high_plus_f_code(tiny_cfg, data_cfg, batch_factory):
    """CMCM eq. 3: z = f_high(H) + f_code(H_bar), with both poolings recomputed by hand."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg).eval()
    batch = batch_factory(size=4, seed=1)
    out = model(batch)
    fine, valid, _ = model.encode(batch)
    codes = model.codes(fine, valid)
    codebook = model.codes.codebook
    for i in range(4):
        rows = valid["audio"][i].nonzero().squeeze(1).tolist() or list(range(valid["audio"].shape[1]))
        pooled = sum(fine["audio"][i, l] for l in rows) / len(rows)
        quantized = [codebook[codes.indices["audio"][i, l]] for l in rows if valid["audio"][i, l]]
        pooled_code = sum(quantized) / len(quantized) if quantized else torch.zeros(codebook.shape[1])
        expected = model.embedding_heads["audio"](pooled) + model.codes.code_to_embedding["audio"](pooled_code)
        assert torch.allclose(out["embeddings"]["audio"][i], expected, atol=1e-5)


def test_gradient_flows_from_code_probs_into_the_encoders(tiny_cfg, data_cfg, batch_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    out = with_code_probs(model(batch_factory(size=4)))  # the objectives compute eqs. 4-5
    weights = torch.randn(tiny_cfg["codebook"]["num_codes"], generator=torch.Generator().manual_seed(1))
    loss = sum((out["code_probs"][m] * weights).sum() for m in ("video", "audio", "text"))
    loss.backward()
    first_layers = {
        "video": model.encoders["video"].backbone[0][0].weight,
        "audio": model.encoders["audio"].backbone[0][0].weight,
        "text": model.encoders["text"].embedding.weight,
    }
    for m, weight in first_layers.items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, m
        assert model.codes.project[m].weight.grad.abs().sum() > 0, m
        assert model.embedding_heads[m].linear.weight.grad is None  # code_probs bypass f_high
    assert not model.codes.codebook.requires_grad  # updated by EMA only (SPEC 8.3)


def test_one_ema_update_per_training_forward_and_none_in_eval(tiny_cfg, data_cfg, batch_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    quantizer = model.codes.quantizer
    batch = batch_factory(size=6, seed=2)
    for step in range(1, 3):
        model(batch)
        assert int(quantizer.num_updates) == step
    # Only present clips and real positions reach the EMA: counts per modality, by hand.
    counts = quantizer.usage()["counts"]
    frames = batch["audio_frame_mask"].sum(dim=1)
    assert int(counts["video"].sum()) == int(batch["has_video"].sum()) * 32
    assert int(counts["audio"].sum()) == int(((frames + 3) // 4 * batch["has_audio"]).sum())
    real_tokens = batch["text_token_mask"] & batch["text_candidate_mask"].unsqueeze(2)
    real_tokens = real_tokens & batch["has_text"].view(-1, 1, 1)  # [B, P, L]
    # model.codebook.ema_text = own: only the clip's own narration (candidate 0) is counted
    assert int(counts["text"].sum()) == int(real_tokens[:, 0].sum()) < int(real_tokens.sum())

    model.eval()
    codebook = quantizer.codebook.clone()
    model(batch)
    assert int(quantizer.num_updates) == 2
    assert torch.equal(quantizer.codebook, codebook)


def test_every_candidate_enters_the_ema_with_ema_text_all(tiny_cfg, data_cfg, batch_factory):
    tiny_cfg["codebook"]["ema_text"] = "all"
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    batch = batch_factory(size=6, seed=2)
    model(batch)
    real_tokens = batch["text_token_mask"] & batch["text_candidate_mask"].unsqueeze(2) & batch["has_text"].view(-1, 1, 1)
    assert int(model.codes.quantizer.usage()["counts"]["text"].sum()) == int(real_tokens.sum())


def test_no_codebook_no_code_outputs(tiny_cfg, data_cfg, batch_factory):
    model = build_model(_with(tiny_cfg, codebook__enabled=False), data_cfg)
    out = model(batch_factory(size=3))
    assert model.codes is None
    for key in ("code_features", "codebook", "code_probs", "code_indices", "code_mask", "commitment_loss"):
        assert key not in out
    assert with_code_probs(out) is out


def test_two_modalities_only(tiny_cfg, data_cfg, batch_factory):
    model = build_model(_with(tiny_cfg, modalities=["video", "text"]), data_cfg)
    batch = batch_factory(size=3)
    for key in ("audio", "audio_frame_mask", "has_audio"):
        del batch[key]
    out = with_code_probs(model(batch))  # the objectives compute eqs. 4-5
    assert set(out["embeddings"]) == set(out["code_probs"]) == set(out["present"]) == {"video", "text"}
    assert "audio" not in model.encoders


def test_fac_head_shapes_and_shared_coarse_projection(tiny_cfg, data_cfg, batch_factory):
    cfg = _with(tiny_cfg, head="fac", codebook__enabled=False)
    torch.manual_seed(0)
    model = build_model(cfg, data_cfg).eval()
    out = model(batch_factory(size=4))
    fine_dim, coarse_dim = cfg["fac"]["fine_dim"], cfg["fac"]["coarse_dim"]
    fac = out["fac"]
    assert fac["video_va"].shape == (4, fine_dim) and fac["audio_va"].shape == (4, fine_dim)
    assert fac["video_vat"].shape == (4, coarse_dim) and fac["text_vat"].shape == (4, 3, coarse_dim)
    # g_va->vat (ReLU, linear, batch norm) is shared by vision and audio (MMV Sec. 3.1; by hand: test_heads.py)
    assert torch.equal(fac["video_vat"], model.fac.to_coarse(fac["video_va"]))
    assert torch.equal(fac["audio_vat"], model.fac.to_coarse(fac["audio_va"]))
    assert model.embed_dim == coarse_dim
    assert out["embeddings"]["text"].shape == (4, 3, coarse_dim)
    assert torch.equal(out["embeddings"]["video"], fac["video_vat"])
    # Vision head non-linear (MLP with BN + ReLU), audio and text linear (MMV Sec. 4.2).
    assert any(isinstance(layer, torch.nn.BatchNorm1d) for layer in model.fac.video_to_va)
    assert isinstance(model.fac.audio_to_va, torch.nn.Linear) and isinstance(model.fac.text_to_vat, torch.nn.Linear)


def test_reconstruction_targets_are_the_detached_pooled_features(tiny_cfg, data_cfg, batch_factory):
    cfg = _with(tiny_cfg, reconstruction=True)
    torch.manual_seed(0)
    model = build_model(cfg, data_cfg).eval()
    batch = batch_factory(size=4, seed=4)
    out = model(batch)
    fine, valid, _ = model.encode(batch)
    for m in ("video", "audio", "text"):
        prediction, target = out["reconstruction"][m]
        width = model.encoders[m].out_channels
        assert prediction.shape == target.shape == (4, width)
        assert not target.requires_grad and prediction.requires_grad
        assert (prediction >= 0).all()  # the decoder ends in a ReLU (MCN authors' code)
    expected_audio = masked_mean(fine["audio"], valid["audio"])
    assert torch.allclose(out["reconstruction"]["audio"][1], expected_audio, atol=1e-6)
    own_text = fine["text"].unflatten(0, (4, -1))[:, 0]  # [B, L, C]
    own_mask = valid["text"].unflatten(0, (4, -1))[:, 0]
    for i in range(4):
        rows = own_mask[i] if own_mask[i].any() else torch.ones_like(own_mask[i])
        assert torch.allclose(out["reconstruction"]["text"][1][i], own_text[i][rows].max(dim=0).values)


def test_bf16_model_keeps_quantisation_in_fp32(tiny_cfg, data_cfg, batch_factory):
    model = build_model(tiny_cfg, data_cfg).bfloat16()
    out = with_code_probs(model(batch_factory(size=3)))  # the objectives compute eqs. 4-5
    assert out["embeddings"]["video"].dtype == torch.bfloat16
    assert model.codes.codebook.dtype == torch.float32
    assert out["code_probs"]["audio"].dtype == torch.float32
    assert torch.isfinite(out["code_probs"]["text"]).all()


def test_tiny_forward_backward_is_fast(tiny_cfg, batch_factory):
    """The tiny preset's budget: 16 clips of 16x56x56 video, 40x200 mel, 4x12 tokens, < 0.5 s on one core."""
    data_cfg = {"video": {"num_frames": 16, "size": 56}, "audio": {"n_mels": 40},
                "text": {"tokenizer": "hashed", "vocab_size": 4096}}
    torch.manual_seed(0)
    model = build_model(tiny_cfg, data_cfg)
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 500_000
    batch = batch_factory(size=16, frames=16, side=56, mel_frames=200, candidates=4, tokens=12, vocab_size=4096)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        out = model(batch)
        sum(e.sum() for e in out["embeddings"].values()).backward()
        timings.append(time.perf_counter() - start)
    # min of 3 (the first pays one-off allocation); generous for a shared CI core.
    assert min(timings) < 0.5, timings


def test_base_preset_runs_one_forward(load_preset, data_cfg, batch_factory):
    cfg = load_preset("base")
    torch.manual_seed(0)
    model = build_model(cfg, data_cfg).eval()
    with torch.no_grad():
        out = with_code_probs(model(batch_factory(size=2, frames=8, side=32)))  # the objectives compute eqs. 4-5
    assert out["embeddings"]["video"].shape == (2, cfg["embed_dim"])
    assert out["embeddings"]["text"].shape == (2, 3, cfg["embed_dim"])
    assert out["code_probs"]["audio"].shape == (2, cfg["codebook"]["num_codes"])
    assert all(torch.isfinite(e).all() for e in out["embeddings"].values())



def test_outputs_are_finite_in_eval_without_grad(tiny_cfg, data_cfg, batch_factory):
    """Inference takes PyTorch's fast attention path, where an all-padded narration would give NaN."""
    model = build_model(tiny_cfg, data_cfg).eval()
    batch = batch_factory(size=4)
    batch["has_text"][1] = False  # an absent narration: every token of the row is padding
    with torch.no_grad():
        out = model(batch)
    for name, value in out["embeddings"].items():
        assert torch.isfinite(value).all(), name
