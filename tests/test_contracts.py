"""The contracts of mmdist/contracts.py hold where the layers meet: the pipeline writes a ClipBatch the
model accepts, the model returns a ModelOutput, and text's per-clip vector is the own narration's."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from mmdist.contracts import BATCH_COLUMNS, MODALITIES, ClipBatch, ModelOutput, clip_vectors, columns_of, own_narration
from mmdist.data.pipeline import ClipDecoder
from mmdist.data.schema import CLIP_SCHEMA
from mmdist.data.shapes import batch_shapes
from mmdist.models import build_model, to_clip_batch
from mmdist.objectives import with_code_probs
from tests.conftest import REPO, load_job_cfg
from tests.models.conftest import DATA_CFG, make_batch, preset


def test_the_batch_columns_are_the_clip_batch_keys():
    assert list(ClipBatch.__annotations__) == list(BATCH_COLUMNS)
    assert {column.modality for column in BATCH_COLUMNS.values()} == set(MODALITIES)
    assert {m: columns_of(m)[0] for m in MODALITIES} == {"video": "video", "audio": "audio", "text": "text_tokens"}
    assert all(f"has_{m}" in columns_of(m) for m in MODALITIES)
    assert ModelOutput.__required_keys__ == {"present", "embeddings"}


def test_the_data_layer_reads_the_contracts_without_torch():
    code = "import sys, mmdist.data.shapes, mmdist.data.schema, mmdist.contracts; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_own_narration_is_candidate_0_of_tensors_and_arrays():
    text = torch.arange(2 * 3 * 4).reshape(2, 3, 4)  # [B, P, D]
    assert torch.equal(own_narration(text), text[:, 0])
    assert np.array_equal(own_narration(text.numpy()), text.numpy()[:, 0])
    assert torch.equal(clip_vectors("text", text), text[:, 0])
    flat = text[:, 0]  # one vector per clip already: unchanged, as any other modality's
    assert clip_vectors("text", flat) is flat and clip_vectors("video", flat) is flat


def test_what_the_decoder_writes_is_a_clip_batch_the_model_reads():
    """ClipDecoder (the pipeline's map_batches function, here without Ray) -> to_clip_batch -> the model."""
    cfg = load_job_cfg("train", ("data.path=unused", "data.video.resize=40", "data.video.size=32"))
    clips = {"clip_id": ["a", "b", "c"], "video": [None] * 3, "audio": [None] * 3,
             "text": [["the ball hops", "a cup"], ["someone cuts the onion"], None]}
    table = pa.table({name: pa.array(values, type=CLIP_SCHEMA.field(name).type) for name, values in clips.items()})
    columns, drops = ClipDecoder(cfg["data"], train=False, seed=0).decode_table(table)
    assert not drops
    assert list(columns) == list(BATCH_COLUMNS)
    for name, (dtype, shape) in batch_shapes(cfg["data"]).items():
        assert columns[name].dtype == dtype and columns[name].shape == (3, *shape), name

    torch.manual_seed(0)
    model = build_model(cfg["model"], cfg["data"]).eval()
    with torch.no_grad():
        out = model(to_clip_batch(columns))
    assert out["present"]["text"].tolist() == [True, True, False] and not out["present"]["video"].any()
    assert own_narration(out["text_candidate_mask"]).tolist() == [True, True, False]


@pytest.mark.parametrize("variant", ["codebook", "fac", "reconstruction"])
def test_the_model_returns_a_model_output(variant):
    cfg = copy.deepcopy(preset("tiny"))
    if variant == "fac":
        cfg.update(head="fac")
        cfg["codebook"]["enabled"] = False
    if variant == "reconstruction":
        cfg.update(reconstruction=True)
        cfg["codebook"]["enabled"] = False
    torch.manual_seed(0)
    model = build_model(cfg, DATA_CFG)
    out = model(make_batch(size=4))
    declared = set(ModelOutput.__annotations__) | ModelOutput.__required_keys__
    assert ModelOutput.__required_keys__ <= set(out) <= declared
    assert list(out["embeddings"]) == list(out["present"]) == [m for m in MODALITIES if m in model.modalities]
    assert out["embeddings"]["text"].shape[:2] == (4, 3) and clip_vectors("text", out["embeddings"]["text"]).dim() == 2
    if variant == "codebook":
        probs = with_code_probs(out)  # what the gather and the recipe receive
        assert {"code_probs", "code_indices", "code_mask"} <= set(probs) <= declared
        assert not {"code_features", "codebook"} & set(probs)
    if variant == "fac":
        assert set(out["fac"]) == {"video_va", "audio_va", "video_vat", "audio_vat", "text_vat"}
    if variant == "reconstruction":
        assert set(out["reconstruction"]) == set(model.modalities)
