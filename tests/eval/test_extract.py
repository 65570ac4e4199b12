"""The extraction job: the Ray Data actor pool (2 actors) writes the rows a plain single-process loop computes."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmdist.config import ConfigError
from mmdist.data.pipeline import ClipDecoder
from mmdist.data.synthetic import actions
from mmdist.eval import check_eval_config, embed_batch, read_embeddings
from tests.conftest import HELD_OUT_CLIPS


def single_process_rows(model, data_cfg: dict, data_path: str) -> dict[str, np.ndarray]:
    """Every shard read with pyarrow, decoded by ClipDecoder and embedded in one batch: no Ray at all."""
    shards = sorted(glob.glob(os.path.join(data_path, "*.parquet")))
    table = pa.concat_tables([pq.read_table(shard) for shard in shards])
    batch, drops = ClipDecoder(data_cfg, train=False, seed=0, keep_metadata=True).decode_table(table)
    assert not drops
    rows = embed_batch(model, batch)
    order = np.argsort(batch["clip_id"])
    return {"clip_id": batch["clip_id"][order], **{name: value[order] for name, value in rows.items()}}


@pytest.mark.slow
def test_two_actors_write_what_one_process_computes(untrained_eval, learning_worlds):
    # the job ran with eval.extract.actors = 2 (configs/eval/default.yaml) and batches of 32 over shards of 32
    assert untrained_eval.metrics["num_clips"] == HELD_OUT_CLIPS
    rows = read_embeddings(str(untrained_eval.run_dir / "embeddings"))
    reference = single_process_rows(untrained_eval.model, untrained_eval.run_config["data"], learning_worlds["held_out"])

    assert rows["clip_id"].tolist() == reference["clip_id"].tolist()
    for name, value in reference.items():
        if name.startswith(("emb_", "code_probs_")):
            np.testing.assert_allclose(rows[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        elif name.startswith(("codes_", "present_")):
            # a codeword can flip only on a near-tie of distances (float rounding across batch sizes)
            assert np.mean(rows[name] == value) > 0.99, name
    # metadata and labels travel with the rows
    assert set(rows["label_action"]) <= set(actions(6, 6)) and set(rows["label_sounding"]) == {True, False}
    assert rows["source_id"].dtype == object and np.all(rows["end_s"] > rows["start_s"])


def test_eval_config_errors_name_the_key(job_cfg):
    eval_cfg = job_cfg("evaluate", ("checkpoint=unused",))["eval"]
    del eval_cfg["retrieval"]["draws"]
    with pytest.raises(ConfigError, match="eval.retrieval.draws: missing key"):
        check_eval_config(eval_cfg)
    eval_cfg = job_cfg("evaluate", ("checkpoint=unused", "eval.chunk_size=big"))["eval"]
    with pytest.raises(ConfigError, match="eval.chunk_size: must be int, got 'big'"):
        check_eval_config(eval_cfg)
