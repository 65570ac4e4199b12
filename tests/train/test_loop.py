"""The per-worker loop's own pieces, without Ray or DeepSpeed: where it receives batches (Ray Data's
columns become the model's ClipBatch, epoch after epoch), its held-out validation (batch by batch, the
same numbers as one pass of evaluation's functions over the whole set) and its progress line.
train_step, NonFiniteSkips and optimizer_step run in a real DeepSpeed engine in test_nonfinite.py
and test_engine.py."""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from mmdist.contracts import BATCH_COLUMNS
from mmdist.data.pipeline import LABEL_COLUMNS
from mmdist.eval.embed import embed_batch
from mmdist.eval.validation import validation_metrics
from mmdist.models import build_model
from mmdist.train.loop import _batches_forever, _codebook_usage, _progress_line, _validate
from tests.models.conftest import DATA_CFG, make_batch, preset


class FakeShard:
    """The two calls the loop makes on a Ray Data shard (`get_dataset_shard`), over fixed batches."""

    def __init__(self, batches: list[dict]):
        self.batches, self.torch_calls = batches, []

    def iter_torch_batches(self, batch_size, drop_last, device):
        self.torch_calls.append((batch_size, drop_last, device))
        yield from self.batches

    def iter_batches(self, batch_size, batch_format):
        assert batch_format == "numpy"
        yield from self.batches


def numpy_columns(batch: dict, first_clip: int) -> dict:
    """A validation batch as Ray Data hands it: numpy columns, clip ids and labels included."""
    columns = {name: value.numpy() for name, value in batch.items()}
    size = len(columns["has_video"])
    columns["clip_id"] = np.array([f"clip-{first_clip + i}" for i in range(size)], dtype=object)
    for name in LABEL_COLUMNS:
        columns[name] = np.array([None] * size, dtype=object)
    columns["label_sounding"] = np.array([(first_clip + i) % 2 == 0 for i in range(size)], dtype=object)
    return columns


def test_batches_become_clip_batches_epoch_after_epoch():
    columns = dict(make_batch(size=4), path=np.array(["shard-0"] * 4, dtype=object))  # a column the model does not read
    shard = FakeShard([columns])
    batches = _batches_forever(shard, micro_batch=4, device="cpu")
    first, second = next(batches), next(batches)  # the second is the next epoch's
    assert list(first) == list(BATCH_COLUMNS) and first["video"] is columns["video"]
    assert list(second) == list(BATCH_COLUMNS)
    assert shard.torch_calls == [(4, True, "cpu")] * 2  # fixed micro-batches: the gather needs equal b


def test_no_full_batch_is_an_error_naming_the_size():
    with pytest.raises(RuntimeError, match="no full batch of 8 clips in epoch 0"):
        next(_batches_forever(FakeShard([]), micro_batch=8, device="cpu"))


def test_validation_over_batches_is_evaluation_over_the_set():
    """Rank 0 alone (no process group): the loop's batch-by-batch validation gives the numbers that
    embed_batch and validation_metrics give on the whole held-out set at once (the eval-mode forward
    makes a clip's row independent of its batch)."""
    torch.manual_seed(0)
    model = build_model(preset("tiny"), DATA_CFG)
    model.train()
    whole = numpy_columns(make_batch(size=8, seed=4), first_clip=0)
    halves = [{name: value[i:i + 4] for name, value in whole.items()} for i in (0, 4)]
    engine = types.SimpleNamespace(module=model, device=torch.device("cpu"))

    metrics = _validate(engine, FakeShard(halves), batch_size=4)

    assert model.training  # validation leaves the training mode as it found it
    expected = validation_metrics(embed_batch(model, whole), {name: whole[name] for name in LABEL_COLUMNS})
    assert metrics.keys() == expected.keys() and "val_discovery_roc_auc" in metrics and metrics["val_clips"] == 8
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_codebook_usage_is_reported_with_a_codebook_only():
    torch.manual_seed(0)
    usage = _codebook_usage(build_model(preset("tiny"), DATA_CFG))
    assert usage and all(name.startswith("codebook_") and isinstance(v, (int, float)) for name, v in usage.items())
    assert {"codebook_active_codes", "codebook_perplexity"} <= set(usage)  # the progress line shows them
    no_codes = copy.deepcopy(preset("tiny"))
    no_codes["codebook"]["enabled"] = False
    assert _codebook_usage(build_model(no_codes, DATA_CFG)) == {}


def test_progress_line():
    metrics = {"step": 20, "loss": 1.23456, "loss_info_nce": 0.5, "loss_cmcm": 0.25, "r1_audio_video": 0.125,
               "codebook_active_codes": 31.0, "codebook_perplexity": 12.34, "lr": 3e-3, "clips_per_s": 57.61,
               "data_wait_frac": 0.634, "dropped": 2}
    assert _progress_line(metrics, max_steps=40) == (
        "[train] step 20/40 loss=1.2346 (info_nce=0.500 cmcm=0.250) R@1 audio_video=0.12 codes=31 ppl=12.3 "
        "lr=3.00e-03 clips/s=57.6 wait=63% dropped=2"
    )
