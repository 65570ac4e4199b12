"""The sweep's results table: one row per trial (hyperparameters, metric, progress), ranked, as CSV and Markdown.

Rows are plain dicts so that ranking and writing are pure functions; `trial_row` is the one place
that reads a Ray Tune `Result`.
"""

from __future__ import annotations

import csv
import math

STATUS_DONE = "done"                 # ran to trainer.max_steps
STATUS_STOPPED = "stopped early"     # ASHA stopped it at a rung
STATUS_ERROR = "error"


def trial_row(result, param_keys: list[str], metric: str, mode: str, max_steps: int) -> dict:
    """One trial as a row: trial_id, status, each hyperparameter, step reached, the metric's last and
    best reported values, the loss, and the URI of its last checkpoint (empty if none was saved)."""
    history = result.metrics_dataframe
    last = result.metrics or {}
    step = int(last.get("step", 0) or 0)
    if result.error is not None:
        status = STATUS_ERROR
    else:
        status = STATUS_DONE if step >= max_steps else STATUS_STOPPED
    row = {"trial_id": last.get("trial_id") or _trial_id_from_path(result.path), "status": status}
    row.update({key: (result.config or {}).get(key) for key in param_keys})
    row["step"] = step
    row[metric] = _last_value(history, metric)
    row[f"{metric}_best"] = _best_value(history, metric, mode)
    row["loss"] = _last_value(history, "loss")
    row["checkpoint"] = _last_value(history, "checkpoint_path", default="")
    return row


def rank_rows(rows: list[dict], column: str, mode: str) -> list[dict]:
    """Best first by `column` (mode "max" or "min"); rows without a finite value go last, in order."""
    if mode not in ("max", "min"):
        raise ValueError(f"sweep.mode must be 'max' or 'min', got {mode!r}")
    sign = -1.0 if mode == "max" else 1.0
    scored = [row for row in rows if _finite(row.get(column))]
    unscored = [row for row in rows if not _finite(row.get(column))]
    return sorted(scored, key=lambda row: sign * float(row[column])) + unscored


def best_row(ranked: list[dict], column: str) -> dict:
    if not ranked or not _finite(ranked[0].get(column)):
        statuses = ", ".join(f"{row['trial_id']}: {row['status']}" for row in ranked) or "no trials"
        raise RuntimeError(
            f"no trial reported a finite {column!r} ({statuses}); check sweep.metric against the "
            "metrics the trainer reports and the trials' errors in the Tune output"
        )
    return ranked[0]


def write_csv(rows: list[dict], path: str) -> None:
    columns = _columns(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in columns})


def markdown_table(rows: list[dict]) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in columns) + " |")
    return "\n".join(lines) + "\n"


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


def _cell(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _reported(history, column: str) -> list:
    if history is None or column not in history:
        return []
    return [value for value in history[column].tolist() if value is not None and value == value]  # NaN != NaN


def _last_value(history, column: str, default=math.nan):
    values = _reported(history, column)
    return values[-1] if values else default


def _best_value(history, column: str, mode: str) -> float:
    values = [float(value) for value in _reported(history, column) if _finite(value)]
    if not values:
        return math.nan
    return max(values) if mode == "max" else min(values)


def _trial_id_from_path(path: str | None) -> str:
    return (path or "").rstrip("/").rsplit("/", 1)[-1]
