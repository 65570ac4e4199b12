"""Where a run's figures go besides metrics.json: TensorBoard events and an MLflow run (`logging` config).

The driver writes both (`RunTracker`), from the reports rank 0 sends to the run's `MetricsLog` actor
(mmdist.train.metrics): one writer wherever the workers run, a resumed run's history comes back with
its checkpoint, and the training loop knows neither tool. Ray Tune sweeps log their trials through
Tune's own TensorBoard / MLflow callbacks instead (mmdist.tune.sweep).

    <run_dir>/tensorboard/      event files: `tensorboard --logdir <run_dir>/tensorboard`
    <run_dir>/mlflow_run.json   {"tracking_uri", "experiment_id", "run_id", "trainer_run_name"}
    <run_dir>/mlruns/           the MLflow file store (unless logging.mlflow.tracking_uri names a server)

Started again in the same run_dir with the same `trainer.run_name` (a resume), a run logs into the
same MLflow run and purges its earlier TensorBoard events from the first step it logs again, so each
curve shows the resumed history once.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Callable

RECORD_FILE = "mlflow_run.json"
LOSS_TAG = "loss/total"
# report figure prefix -> TensorBoard / MLflow group; the rest go under train/
GROUPS = {"loss_": "loss", "r1_": "r1", "val_": "val", "codebook_": "codebook", "dropped_": "dropped"}
TOTALS = {"loss": "loss/total", "dropped": "dropped/total"}


def metric_tag(name: str) -> str:
    """The TensorBoard tag and MLflow key of a report figure: 'loss_info_nce' -> 'loss/info_nce'."""
    if name in TOTALS:
        return TOTALS[name]
    for prefix, group in GROUPS.items():
        if name.startswith(prefix):
            return f"{group}/{name.removeprefix(prefix)}"
    return f"train/{name}"


def scalars(report: dict) -> dict[str, float]:
    """The plottable figures of one report by tag (numbers; `step` is the x axis, not a figure)."""
    return {
        metric_tag(name): float(value)
        for name, value in report.items()
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class RunTracker:
    """TensorBoard events and (when `logging.mlflow.enabled`) an MLflow run for one training run."""

    def __init__(self, logging_cfg: dict, run_dir: str, config: dict):
        if not isinstance(logging_cfg["every_s"], (int, float)) or logging_cfg["every_s"] <= 0:
            raise ValueError(f"logging.every_s must be a number of seconds > 0, got {logging_cfg['every_s']!r}")
        self._tensorboard_dir = os.path.join(run_dir, "tensorboard") if logging_cfg["tensorboard"] else None
        self._writer = None
        self._logged: dict[int, dict] = {}  # step -> the report as logged (a restarted worker group re-reports)
        mlflow_cfg = logging_cfg["mlflow"]
        self.mlflow = MlflowRun.open(mlflow_cfg, run_dir, config) if mlflow_cfg["enabled"] else None

    def log(self, history: list[dict]) -> None:
        """Log the reports of `history` (sorted by step) that are new or changed since the last call."""
        fresh = [report for report in history if self._logged.get(int(report["step"])) != report]
        if not fresh:
            return
        if self._tensorboard_dir is not None:
            if self._writer is None:
                from tensorboardX import SummaryWriter

                # a step logged again (resume, restart) hides what an earlier writer logged from there on
                self._writer = SummaryWriter(self._tensorboard_dir, purge_step=int(fresh[0]["step"]))
            for report in fresh:
                for tag, value in scalars(report).items():
                    self._writer.add_scalar(tag, value, int(report["step"]))
            self._writer.flush()
        if self.mlflow is not None:
            self.mlflow.log_reports(fresh)
        self._logged.update({int(report["step"]): report for report in fresh})

    def close(self, artifacts: tuple[str, ...] = (), failed: bool = False) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.mlflow is not None:
            self.mlflow.finish(artifacts, failed)


@contextmanager
def following(fetch: Callable[[], list[dict]], tracker: RunTracker, every_s: float):
    """While the body runs, hand `fetch()` (the run's history so far) to `tracker` every `every_s` seconds.
    A failed hand-over is reported once and does not stop training."""
    stop = threading.Event()

    def follow() -> None:
        warned = False
        while not stop.wait(every_s):
            try:
                tracker.log(fetch())
            except Exception as error:  # noqa: BLE001 - a tracking server down must not stop the run
                if not warned:
                    print(f"[train] logging to TensorBoard / MLflow failed, retrying: {error!r}", flush=True)
                    warned = True

    thread = threading.Thread(target=follow, name="mmdist-tracking", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class MlflowRun:
    """An MLflow run through `MlflowClient` (no process-global active run: trials and tests share a process)."""

    def __init__(self, client, run_id: str, record: dict, logged_through: int):
        self.client, self.run_id, self.record = client, run_id, record
        self._logged_through = logged_through  # steps up to here are in the run already (a resumed run)

    @classmethod
    def open(cls, mlflow_cfg: dict, run_dir: str, config: dict) -> "MlflowRun":
        """The run recorded in `run_dir` when this is the same training run again, else a new one with
        the (redacted) config as parameters. Writes `run_dir/mlflow_run.json`."""
        from mlflow.entities import Param

        from mmdist.config import redact

        uri = tracking_uri(mlflow_cfg["tracking_uri"], run_dir)
        client = mlflow_client(uri)
        trainer_run_name = config["trainer"]["run_name"]
        path = os.path.join(run_dir, RECORD_FILE)
        previous = read_record(path)
        if previous and previous["tracking_uri"] == uri and previous["trainer_run_name"] == trainer_run_name:
            run_id = previous["run_id"]
            client.update_run(run_id, status="RUNNING")
            steps = [metric.step for metric in client.get_metric_history(run_id, LOSS_TAG)]
            return cls(client, run_id, previous, max(steps, default=0))
        experiment_id = experiment(client, mlflow_cfg["experiment_name"])
        run = client.create_run(
            experiment_id, run_name=mlflow_cfg["run_name"],
            tags={"mmdist.run_dir": run_dir, "mmdist.recipe": str(config.get("recipe", {}).get("name"))},
        )
        run_id = run.info.run_id
        params = [Param(key, str(value)[:6000]) for key, value in flatten(redact(config)).items()]
        client.log_batch(run_id, params=params)
        record = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id, "trainer_run_name": trainer_run_name}
        with open(path, "w") as handle:
            json.dump(record, handle, indent=1)
        return cls(client, run_id, record, 0)

    def log_reports(self, reports: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(tag, value, now, int(report["step"]))
            for report in reports if int(report["step"]) > self._logged_through
            for tag, value in scalars(report).items()
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, artifacts: tuple[str, ...], failed: bool) -> None:
        for path in artifacts:
            if os.path.isfile(path):
                self.client.log_artifact(self.run_id, path)
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def evaluation_tracking_uri(mlflow_cfg: dict, training_run_dir: str | None) -> str | None:
    """The tracking URI of the run `logging.mlflow.run_id` (None when no run is named); an error naming
    the keys when there is none to be found. Jobs call it before the evaluation, not after."""
    if not mlflow_cfg["run_id"]:
        return None
    record = read_record(os.path.join(training_run_dir, RECORD_FILE)) if training_run_dir else None
    uri = mlflow_cfg["tracking_uri"] or (record or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError(
            f"logging.mlflow.run_id={mlflow_cfg['run_id']}: set logging.mlflow.tracking_uri (the training run's, "
            f"in its run_dir/{RECORD_FILE}) or evaluate a training run_dir that has that file"
        )
    return uri


def log_evaluation(run_id: str, uri: str, metrics: dict, eval_dir: str) -> None:
    """Evaluation figures (under `eval/`) and the report into MLflow run `run_id`, at the last step
    the training run logged."""
    from mlflow.entities import Metric

    client = mlflow_client(uri)
    step = max((metric.step for metric in client.get_metric_history(run_id, LOSS_TAG)), default=0)
    now = int(time.time() * 1000)
    figures = [Metric(key, value, now, step) for key, value in evaluation_figures(metrics).items()]
    client.log_batch(run_id, metrics=figures)
    for name in ("metrics.json", "report.html", "report.md"):
        path = os.path.join(eval_dir, name)
        if os.path.isfile(path):
            client.log_artifact(run_id, path, artifact_path="eval")


def evaluation_figures(metrics: dict) -> dict[str, float]:
    """The numbers of an evaluation's metrics.json as MLflow keys: retrieval.video->audio.R@1 ->
    'eval/retrieval/video_to_audio/R1' (MLflow keys allow letters, digits, _ - . / space and colon)."""
    figures = {}
    for key, value in flatten(metrics, separator="/").items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            name = re.sub(r"[^\w./\- ]", "_", key.replace("->", "_to_").replace("@", ""))
            figures[f"eval/{name}"] = float(value)
    return figures


def flatten(tree: dict, prefix: str = "", separator: str = ".") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are leaves."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name, separator))
        else:
            flat[name] = value
    return flat


def tracking_uri(configured: str | None, run_dir: str) -> str:
    return configured or f"file://{os.path.join(os.path.abspath(run_dir), 'mlruns')}"


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    if uri.startswith("file:"):
        # MLflow 3 refuses its file store ("maintenance mode") unless told; a file store needs no server
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return MlflowClient(tracking_uri=uri)


def experiment(client, name: str) -> str:
    """The id of experiment `name`, created when missing (another run may create it at the same time)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id


def read_record(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)
