"""The codes' granularity (CMCM Appendix B): video pooled to a (t, h, w) grid, audio windows of k
positions, text untouched; checked against explicit loops over positions."""

import torch

from mmdist.models import build_model


def _coarse_model(tiny_cfg, data_cfg, grid, k):
    tiny_cfg["codebook"].update(video_grid=grid, audio_positions_per_code=k)
    torch.manual_seed(0)
    return build_model(tiny_cfg, data_cfg)


def test_video_codes_are_means_over_grid_cells(tiny_cfg, data_cfg, batch_factory):
    model = _coarse_model(tiny_cfg, data_cfg, [1, 2, 2], 1)
    t, h, w = model.codes.video_grid_in
    assert model.codes.video_grid == (1, 2, 2)
    fine, valid, _ = model.encode(batch_factory(size=3, seed=1))
    coarse, coarse_valid = model.codes.coarsen(fine, valid)
    grid = fine["video"].view(3, t, h, w, -1)
    # adaptive pooling cell (i, j) of 2 covers rows [floor(i*h/2), ceil((i+1)*h/2))
    rows = [(0, -(-h // 2)), (h // 2, h)]
    cols = [(0, -(-w // 2)), (w // 2, w)]
    for cell, (r, c) in enumerate([(r, c) for r in rows for c in cols]):
        expected = grid[:, :, r[0] : r[1], c[0] : c[1]].mean(dim=(1, 2, 3))  # [3, C]
        torch.testing.assert_close(coarse["video"][:, cell], expected)
    assert torch.equal(coarse_valid["video"], valid["video"][:, :4])
    assert torch.equal(coarse["text"], fine["text"]) and torch.equal(coarse_valid["text"], valid["text"])


def test_audio_codes_are_means_over_valid_positions_of_each_window(tiny_cfg, data_cfg, batch_factory):
    model = _coarse_model(tiny_cfg, data_cfg, None, 3)
    batch = batch_factory(size=4, seed=2)
    fine, valid, _ = model.encode(batch)
    coarse, coarse_valid = model.codes.coarsen(fine, valid)
    length = fine["audio"].shape[1]
    assert coarse["audio"].shape[1] == -(-length // 3)
    for i in range(4):
        for window in range(coarse["audio"].shape[1]):
            positions = [p for p in range(3 * window, min(3 * window + 3, length)) if valid["audio"][i, p]]
            assert bool(coarse_valid["audio"][i, window]) == bool(positions)
            if positions:
                expected = fine["audio"][i, positions].mean(dim=0)
                torch.testing.assert_close(coarse["audio"][i, window], expected, rtol=1e-5, atol=1e-6)


def test_code_outputs_have_the_coarse_shapes_and_one_ema_update(tiny_cfg, data_cfg, batch_factory):
    model = _coarse_model(tiny_cfg, data_cfg, [2, 2, 2], 2)
    batch = batch_factory(size=4, seed=3)
    out = model(batch)
    fine, valid, _ = model.encode(batch)
    assert out["code_indices"]["video"].shape == (4, 8)
    assert out["code_indices"]["audio"].shape == (4, -(-fine["audio"].shape[1] // 2))
    assert int(model.codes.quantizer.num_updates) == 1
    counts = model.codes.quantizer.usage()["counts"]
    assert int(counts["video"].sum()) == 8 * int(batch["has_video"].sum())


def test_without_continuous_the_embedding_is_f_code_alone(tiny_cfg, data_cfg, batch_factory):
    """CMCM Table 3 row (h): z = f_code(H_bar) only; with the flag on, eq. 3's sum."""
    batch = batch_factory(size=3, seed=4)
    tiny_cfg["codebook"]["with_continuous"] = False
    torch.manual_seed(0)
    codes_only = build_model(tiny_cfg, data_cfg).eval()
    out = codes_only(batch)
    fine, valid, _ = codes_only.encode(batch)
    code_embeddings, _ = codes_only.discretise(fine, valid, 3)
    torch.testing.assert_close(out["embeddings"]["audio"], code_embeddings["audio"])
    tiny_cfg["codebook"]["with_continuous"] = True
    torch.manual_seed(0)
    both = build_model(tiny_cfg, data_cfg).eval()
    assert not torch.allclose(both(batch)["embeddings"]["audio"], out["embeddings"]["audio"])
