"""The learning run (tests/conftest.py `learned_run`) exported and used: `jobs/embed.py` on its
checkpoint (evaluation's Ray Data extraction pool) and `mmdist.load_model(export).embed` on the same
held-out clips give the same rows; the export holds the checkpoint's tensors bit for bit."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch

import mmdist
from mmdist.data.pipeline import LABEL_COLUMNS, METADATA_COLUMNS
from mmdist.eval import read_embeddings
from mmdist.models.checkpoint import load_model_state
from tests.conftest import HELD_OUT_CLIPS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_job(script: str, *overrides: str) -> str:
    """A job as a user runs it, on this session's Ray (no second start-up); returns its stdout."""
    command = [sys.executable, script, *overrides, f"ray.address={ray.get_runtime_context().gcs_address}"]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_embed_job_and_load_model_give_the_same_rows(learned_run, learning_worlds, tmp_path):
    # the export of the run (a run_dir: its checkpoint.txt is followed), read back bit for bit
    export = str(tmp_path / "export")
    manifest = json.loads(subprocess.run(
        [sys.executable, "jobs/export.py", f"checkpoint={learned_run.run_dir}", f"out={export}"], cwd=REPO, check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True).stdout.strip().splitlines()[-1])
    assert manifest["recipe"] == "mc3_vq" and manifest["checkpoint"] == learned_run.summary["checkpoint"]
    checkpoint_state, exported = load_model_state(learned_run.summary["checkpoint"]), load_model_state(export)
    assert sorted(exported) == sorted(checkpoint_state)
    assert all(torch.equal(exported[name], value) for name, value in checkpoint_state.items())

    # the embed job on the DeepSpeed checkpoint (through the run_dir, which has no export)
    out = tmp_path / "embeddings"
    summary = json.loads(run_job("jobs/embed.py", f"checkpoint={learned_run.run_dir}",
                                 f"data.path={learning_worlds['held_out']}", f"out={out}").strip().splitlines()[-1])
    assert summary == {"checkpoint": learned_run.summary["checkpoint"], "out": str(out), "clips": HELD_OUT_CLIPS, "dropped": {}}
    rows = read_embeddings(str(out))
    vectors = [f"{kind}{m}" for kind in ("emb_", "present_", "codes_", "code_probs_") for m in ("video", "audio", "text")]
    assert sorted(rows) == sorted([*METADATA_COLUMNS, *LABEL_COLUMNS, *vectors])
    assert len(set(rows["clip_id"])) == HELD_OUT_CLIPS == len(rows["clip_id"])  # one row per clip

    # the same clips through load_model(export).embed, from their encoded bytes
    shards = sorted(glob.glob(os.path.join(learning_worlds["held_out"], "*.parquet")))
    clips = pa.concat_tables([pq.read_table(shard) for shard in shards]).sort_by("clip_id")
    assert clips.column("clip_id").to_pylist() == rows["clip_id"].tolist()
    model = mmdist.load_model(export)
    embedded = model.embed(video=clips.column("video").to_pylist(), audio=clips.column("audio").to_pylist(),
                           text=clips.column("text").to_pylist())
    assert sorted(embedded) == sorted(vectors)
    for name, value in embedded.items():
        if name.startswith(("emb_", "code_probs_")):
            # batches of 64 here, of up to 32 in the actor pool: float rounding only
            np.testing.assert_allclose(value, rows[name], rtol=1e-4, atol=1e-5, err_msg=name)
        elif name.startswith("present_"):
            np.testing.assert_array_equal(value, rows[name], err_msg=name)
        else:  # a codeword can flip only on a near-tie of distances
            assert np.mean(value == rows[name]) > 0.99, name
