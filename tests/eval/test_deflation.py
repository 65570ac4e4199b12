"""jobs/deflate.py's library (mmdist.eval.deflation) on a tiny model and the synthetic world: MMV's deflated
image network, naive and fitted, against the video network on static videos (MMV Sec. 3.2, Table 3)."""

from __future__ import annotations

import torch

from mmdist.eval.deflation import deflation_metrics
from tests.conftest import load_job_cfg
from tests.eval.conftest import write_checkpoint


def test_deflated_encoder_is_fitted_and_probed_on_still_frames(synthetic_dir, tmp_path):
    run_config = load_job_cfg("train", ("recipe=mmv", "data.path=unused", "run_dir=unused",
                                        "data.video.resize=40", "data.video.size=32"))
    torch.manual_seed(0)
    from mmdist.models import build_model

    checkpoint = write_checkpoint(tmp_path / "checkpoint", build_model(run_config["model"], run_config["data"]).eval(), run_config)
    config = load_job_cfg("deflate", (f"checkpoint={checkpoint}", f"data.path={synthetic_dir}", f"run_dir={tmp_path}/out",
                                      "deflate.steps=30"))
    metrics = deflation_metrics(config["checkpoint"], config["data"], config["storage"], config["deflate"], config["seed"])

    assert metrics["num_clips"] == 24 and 0 < metrics["num_test"] < 24
    assert metrics["fit_l1"]["last"] < metrics["fit_l1"]["first"]  # the gamma / beta fit learns on the other frames
    gap = metrics["l1_gap"]
    assert 0 < gap["fitted_deflation"] < gap["naive_deflation"]  # zero padding in time: naive is not exact (MMV 'n-def')
    assert set(metrics["probe"]) == {"video_clips", "video_static", "naive_deflation", "fitted_deflation"}
    assert all(scores["num_test"] == metrics["num_test"] - scores["unseen_test"] for scores in metrics["probe"].values())
