"""embed_batch (the eval-mode forward) and the Parquet row format."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmdist.data.pipeline import batch_shapes
from mmdist.eval import embed_batch, read_embeddings, rows_to_table, table_to_rows, to_torch_batch
from mmdist.models import build_model


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


@pytest.fixture(scope="module")
def model_and_cfg():
    from tests.conftest import load_job_cfg

    cfg = load_job_cfg("train", ("data.path=unused",))
    torch.manual_seed(0)
    return build_model(cfg["model"], cfg["data"]), cfg


def test_embed_batch_rows(model_and_cfg):
    model, cfg = model_and_cfg
    batch = random_batch(cfg["data"], 4, seed=0)
    tensors = to_torch_batch(batch)
    assert isinstance(tensors["clip_id"], np.ndarray) and tensors["video"].dtype == torch.uint8
    model.train()
    rows = embed_batch(model, tensors)
    assert model.training  # the caller's mode is restored
    embed_dim, num_codes = cfg["model"]["embed_dim"], cfg["model"]["codebook"]["num_codes"]
    for m in ("video", "audio", "text"):
        assert rows[f"emb_{m}"].shape == (4, embed_dim) and rows[f"emb_{m}"].dtype == np.float32
        assert rows[f"code_probs_{m}"].shape == (4, num_codes)
        np.testing.assert_allclose(rows[f"code_probs_{m}"][rows[f"present_{m}"]].sum(axis=1), 1.0, rtol=1e-5)
    assert rows["present_audio"].tolist() == [True, False, True, True]
    assert (rows["codes_audio"][1] == -1).all()  # an absent clip has no valid position
    assert (rows["codes_text"][:, 6:] == -1).all() and (rows["codes_text"][:, :6] >= 0).all()
    assert rows["codes_video"].shape[1] == 4 * 7 * 7  # 16x56x56 through strides 4 and 8


def test_embed_batch_is_the_eval_forward_and_leaves_state_alone(model_and_cfg):
    model, cfg = model_and_cfg
    tensors = to_torch_batch(random_batch(cfg["data"], 3, seed=1))
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
