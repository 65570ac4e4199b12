"""mmdist/tracking.py on real files: TensorBoard event files (read back record by record, as
TensorBoard reads them) and an MLflow file store (read back with MLflow's own client).

`read_scalars` is also what the training-job test (tests/train/test_job_submit.py) reads a real
run's events with: the `tensorboard` package (EventAccumulator) is not a dependency of mmdist.
"""

from __future__ import annotations

import glob
import math
import os
import struct

import pytest

from mmdist.tracking import (
    RECORD_FILE, RunTracker, evaluation_figures, evaluation_tracking_uri, log_evaluation, metric_tag, mlflow_client,
    read_record,
)


def read_scalars(logdir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the event files under `logdir`, oldest file first, a later
    value of a step replacing an earlier one. Records are TFRecord frames: u64 length, u32 CRC of it,
    the Event protobuf, u32 CRC of that; both CRCs are checked."""
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto.event_pb2 import Event

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data, offset = open(path, "rb").read(), 0
        while offset < len(data):
            header = data[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[offset + 8 : offset + 12])[0] == masked(header), path
            body = data[offset + 12 : offset + 12 + length]
            assert struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])[0] == masked(body), path
            offset += 16 + length
            event = Event.FromString(body)
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def mlflow_cfg(**overrides) -> dict:
    return {"enabled": True, "tracking_uri": None, "experiment_name": "mmdist-test", "run_name": "demo", **overrides}


def logging_cfg(mlflow: bool = True) -> dict:
    return {"tensorboard": True, "every_s": 10, "mlflow": mlflow_cfg(enabled=mlflow)}


RUN_CONFIG = {"trainer": {"run_name": "mmdist", "lr": 0.003, "betas": [0.9, 0.98]}, "recipe": {"name": "mc3_vq"},
              "storage": {"aws_secret_access_key": "hunter2"}}


def reports(steps) -> list[dict]:
    return [{"step": s, "loss": 10.0 / s, "loss_info_nce": 8.0 / s, "r1_audio_video": s / 100, "lr": 1e-3,
             "val_mean_r5": 40.0 + s, "stage": 1.0} for s in steps]


def test_tags_group_the_figures():
    assert [metric_tag(n) for n in ("loss", "loss_cmcm", "r1_audio_video", "val_mean_r5", "codebook_perplexity",
                                    "dropped", "dropped_corrupt_video", "lr", "clips_per_s")] == [
        "loss/total", "loss/cmcm", "r1/audio_video", "val/mean_r5", "codebook/perplexity",
        "dropped/total", "dropped/corrupt_video", "train/lr", "train/clips_per_s"]


def test_reports_reach_tensorboard_and_mlflow(tmp_path):
    tracker = RunTracker(logging_cfg(), str(tmp_path), RUN_CONFIG)
    tracker.log(reports([10, 20]))
    tracker.log(reports([10, 20, 30]))  # the driver hands over the whole history each time
    tracker.close()

    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["loss/total"] == pytest.approx({10: 1.0, 20: 0.5, 30: 10 / 30})
    assert scalars["val/mean_r5"] == pytest.approx({10: 50.0, 20: 60.0, 30: 70.0})
    assert "step" not in str(sorted(scalars))

    record = read_record(str(tmp_path / RECORD_FILE))
    assert record["tracking_uri"] == f"file://{tmp_path}/mlruns" and record["trainer_run_name"] == "mmdist"
    client = mlflow_client(record["tracking_uri"])
    history = client.get_metric_history(record["run_id"], "loss/total")
    assert len(history) == 3 and {m.step: m.value for m in history} == pytest.approx({10: 1.0, 20: 0.5, 30: 10 / 30})
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "demo"
    assert run.data.params["trainer.lr"] == "0.003" and run.data.params["recipe.name"] == "mc3_vq"
    assert run.data.params["storage.aws_secret_access_key"] == "***"  # parameters are the redacted config


def test_resumed_run_continues_its_mlflow_run_without_repeating_steps(tmp_path):
    first = RunTracker(logging_cfg(), str(tmp_path), RUN_CONFIG)
    first.log(reports([10, 20]))
    first.close()
    # the same run_dir and trainer.run_name again (a resume): the history restored from the checkpoint
    # comes back first, then the new steps
    second = RunTracker(logging_cfg(), str(tmp_path), RUN_CONFIG)
    second.log(reports([10, 20, 30, 40]))
    second.close()
    assert second.mlflow.run_id == first.mlflow.run_id
    client = second.mlflow.client
    steps = [m.step for m in client.get_metric_history(first.mlflow.run_id, "loss/total")]
    assert sorted(steps) == [10, 20, 30, 40]
    assert read_scalars(tmp_path / "tensorboard")["loss/total"] == pytest.approx({10: 1.0, 20: 0.5, 30: 1 / 3, 40: 0.25})
    # another trainer.run_name in that run_dir is another training run: another MLflow run
    third = RunTracker(logging_cfg(), str(tmp_path), {**RUN_CONFIG, "trainer": {"run_name": "other"}})
    third.close()
    assert third.mlflow.run_id != first.mlflow.run_id


def test_tensorboard_only_writes_no_mlflow_files(tmp_path):
    tracker = RunTracker(logging_cfg(mlflow=False), str(tmp_path), RUN_CONFIG)
    tracker.log(reports([1]))
    tracker.close()
    assert tracker.mlflow is None and not (tmp_path / RECORD_FILE).exists() and not (tmp_path / "mlruns").exists()
    assert read_scalars(tmp_path / "tensorboard")["loss/total"] == {1: 10.0}


def test_evaluation_joins_the_training_run(tmp_path):
    tracker = RunTracker(logging_cfg(), str(tmp_path), RUN_CONFIG)
    tracker.log(reports([10, 20]))
    tracker.close()
    metrics = {"retrieval": {"video->audio": {"R@1": 12.5, "MdR": 3.0}}, "num_clips": 64, "recipe": "mc3_vq",
               "discovery": {"audio-video": {"roc_auc": 0.8, "pr_auc": float("nan")}}, "codebook": {"table": [{"code": 1}]}}
    figures = evaluation_figures(metrics)
    assert figures == {"eval/retrieval/video_to_audio/R1": 12.5, "eval/retrieval/video_to_audio/MdR": 3.0,
                       "eval/num_clips": 64.0, "eval/discovery/audio-video/roc_auc": 0.8}

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "report.html").write_text("<html></html>")
    run_id = tracker.mlflow.run_id
    uri = evaluation_tracking_uri({"run_id": run_id, "tracking_uri": None}, str(tmp_path))  # from the run_dir's record
    log_evaluation(run_id, uri, metrics, str(eval_dir))
    client = mlflow_client(uri)
    (point,) = client.get_metric_history(run_id, "eval/retrieval/video_to_audio/R1")
    assert point.value == 12.5 and point.step == 20  # at the training run's last step
    assert [a.path for a in client.list_artifacts(run_id, "eval")] == ["eval/report.html"]
    assert not math.isnan(client.get_run(run_id).data.metrics["eval/discovery/audio-video/roc_auc"])


def test_evaluation_without_a_tracking_uri_names_the_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert evaluation_tracking_uri({"run_id": None, "tracking_uri": None}, None) is None
    with pytest.raises(ValueError, match="logging.mlflow.tracking_uri"):
        evaluation_tracking_uri({"run_id": "abc", "tracking_uri": None}, str(tmp_path))


def test_bad_hand_over_interval_is_named(tmp_path):
    with pytest.raises(ValueError, match="logging.every_s"):
        RunTracker({**logging_cfg(), "every_s": 0}, str(tmp_path), RUN_CONFIG)
