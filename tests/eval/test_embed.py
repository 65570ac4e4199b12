"""embed_batch (the eval-mode forward), the Parquet row format, and which columns a comparison reads."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmdist.data.pipeline import batch_shapes
from mmdist.eval import embed_batch, read_embeddings, rows_to_table, table_to_rows
from mmdist.eval.embed import embedding_columns
from mmdist.models import build_model, to_clip_batch
from mmdist.models.layers import masked_pool


def random_batch(data_cfg: dict, size: int, seed: int) -> dict[str, np.ndarray]:
    """A decoded-looking batch: random media, real-looking masks, one clip without audio."""
    rng = np.random.default_rng(seed)
    batch = {}
    for name, (dtype, shape) in batch_shapes(data_cfg).items():
        if dtype == np.uint8:
            batch[name] = rng.integers(0, 256, (size, *shape), dtype=np.uint8)
        elif dtype == np.int64:
            batch[name] = rng.integers(2, 100, (size, *shape))
        elif dtype == bool:
            batch[name] = np.ones((size, *shape), dtype=bool)
        else:
            batch[name] = rng.normal(size=(size, *shape)).astype(dtype)
    batch["text_token_mask"][:, :, 6:] = False  # narrations of 6 tokens
    batch["text_candidate_mask"][:, 2:] = False
    batch["has_audio"][1] = False
    batch["clip_id"] = np.array([f"clip-{i}" for i in range(size)], dtype=object)
    return batch


def built_model(*overrides: str):
    from tests.conftest import load_job_cfg

    cfg = load_job_cfg("train", ("data.path=unused", *overrides))
    torch.manual_seed(0)
    return build_model(cfg["model"], cfg["data"]), cfg


@pytest.fixture(scope="module")
def model_and_cfg():
    return built_model()


@pytest.fixture(scope="module")
def mmv_model_and_cfg():
    """The mmv recipe's model (MMV FAC graph, tiny preset), batch norms with non-trivial running statistics."""
    model, cfg = built_model("recipe=mmv")
    assert cfg["model"]["head"] == "fac"
    with torch.no_grad():
        for module in model.fac.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model, cfg


def test_embed_batch_rows(model_and_cfg):
    model, cfg = model_and_cfg
    batch = random_batch(cfg["data"], 4, seed=0)
    model.train()
    rows = embed_batch(model, batch)  # Ray Data's numpy columns, clip ids included
    assert model.training  # the caller's mode is restored
    embed_dim, num_codes = cfg["model"]["embed_dim"], cfg["model"]["codebook"]["num_codes"]
    for m in ("video", "audio", "text"):
        assert rows[f"emb_{m}"].shape == (4, embed_dim) and rows[f"emb_{m}"].dtype == np.float32
        assert rows[f"code_probs_{m}"].shape == (4, num_codes)
        np.testing.assert_allclose(rows[f"code_probs_{m}"][rows[f"present_{m}"]].sum(axis=1), 1.0, rtol=1e-5)
    assert rows["present_audio"].tolist() == [True, False, True, True]
    assert (rows["codes_audio"][1] == -1).all()  # an absent clip has no valid position
    assert (rows["codes_text"][:, 6:] == -1).all() and (rows["codes_text"][:, :6] >= 0).all()
    # 16x56x56 through strides 4 and 8: 4x7x7 positions, pooled to the codebook's video_grid (CMCM App. B)
    assert cfg["model"]["codebook"]["video_grid"] == [3, 3, 3] and rows["codes_video"].shape[1] == 3 * 3 * 3


def test_embed_batch_is_the_eval_forward_and_leaves_state_alone(model_and_cfg):
    model, cfg = model_and_cfg
    tensors = to_clip_batch(random_batch(cfg["data"], 3, seed=1))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    first = embed_batch(model, tensors)
    second = embed_batch(model, tensors)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed (EMA or batch-norm update in evaluation)"
    # eval mode: a clip's row does not depend on the other clips of its batch
    alone = embed_batch(model, {name: value[:1] for name, value in tensors.items()})
    np.testing.assert_allclose(alone["emb_video"][0], first["emb_video"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first["codes_video"], second["codes_video"])


def test_rows_round_trip_through_parquet(tmp_path):
    rows = {
        "clip_id": np.array(["b", "a"], dtype=object),
        "label_sounding": np.array([True, None], dtype=object),
        "label_action": np.array(["cut x", None], dtype=object),
        "start_s": np.array([0.0, 2.0]),
        "present_video": np.array([True, False]),
        "emb_video": np.arange(6, dtype=np.float32).reshape(2, 3),
        "codes_video": np.array([[1, -1], [0, 3]], dtype=np.int32),
    }
    pq.write_table(rows_to_table(rows), tmp_path / "part-0.parquet")
    back = read_embeddings(str(tmp_path))
    assert back["clip_id"].tolist() == ["a", "b"]  # sorted by clip id
    np.testing.assert_array_equal(back["emb_video"], rows["emb_video"][::-1])
    np.testing.assert_array_equal(back["codes_video"], rows["codes_video"][::-1])
    assert back["label_sounding"].tolist() == [None, True]
    assert back["present_video"].dtype == bool and back["present_video"].tolist() == [False, True]
    assert table_to_rows(rows_to_table(rows))["emb_video"].shape == (2, 3)


def test_fac_rows_compare_vision_and_audio_in_s_va_and_text_in_s_vat(mmv_model_and_cfg):
    model, cfg = mmv_model_and_cfg
    tensors = to_clip_batch(random_batch(cfg["data"], 4, seed=2))
    rows = embed_batch(model, tensors)
    fine, coarse = cfg["model"]["fac"]["fine_dim"], cfg["model"]["fac"]["coarse_dim"]
    assert rows["emb_va_video"].shape == rows["emb_va_audio"].shape == (4, fine)
    assert "emb_va_text" not in rows and rows["emb_text"].shape == (4, coarse)

    # the heads called directly, layer by layer, on the encoders' pooled features
    model.eval()
    with torch.no_grad():
        encoded, valid, _ = model.encode(tensors)
        pooled = {m: masked_pool(encoded[m], valid[m], model.encoders[m].pool) for m in model.modalities}
        heads = model.fac
        video_va = heads.video_to_va(pooled["video"])
        audio_va = heads.audio_to_va(pooled["audio"])
        expected = {
            "video_va": video_va,
            "audio_va": audio_va,
            "video_vat": heads.va_to_vat_norm(heads.va_to_vat(torch.relu(video_va))),
            "audio_vat": heads.va_to_vat_norm(heads.va_to_vat(torch.relu(audio_va))),
            "text_vat": heads.text_to_vat(pooled["text"].unflatten(0, (4, -1))[:, 0]),
        }

    def vectors(*modalities):
        return [rows[column] for column in embedding_columns(rows, *modalities)]

    pairs = {
        ("video", "audio"): ("video_va", "audio_va"),
        ("audio", "video"): ("audio_va", "video_va"),
        ("video", "text"): ("video_vat", "text_vat"),
        ("text", "audio"): ("text_vat", "audio_vat"),
        ("video",): ("video_va",),  # probe and clustering of one modality: its fine vector
        ("audio",): ("audio_va",),
        ("text",): ("text_vat",),
        ("video", "audio", "text"): ("video_vat", "audio_vat", "text_vat"),  # fused: where all three meet
    }
    for modalities, names in pairs.items():
        for got, name in zip(vectors(*modalities), names):
            np.testing.assert_allclose(got, expected[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{modalities}: {name}")


def test_joint_model_rows_are_unchanged(model_and_cfg):
    model, cfg = model_and_cfg
    tensors = to_clip_batch(random_batch(cfg["data"], 3, seed=3))
    rows = embed_batch(model, tensors)
    assert not any(name.startswith("emb_va_") for name in rows)
    with torch.no_grad():
        out = model.eval()(tensors)
    for modalities in (("video", "audio"), ("audio",), ("video", "text"), ("video", "audio", "text")):
        columns = embedding_columns(rows, *modalities)
        assert columns == [f"emb_{m}" for m in modalities]
        for column, m in zip(columns, modalities):
            expected = out["embeddings"][m][:, 0] if m == "text" else out["embeddings"][m]
            np.testing.assert_allclose(rows[column], expected.numpy(), rtol=1e-5, atol=1e-6)
