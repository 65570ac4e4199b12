"""Strict reading of the model config: every key is required, unknown keys are errors.

Defaults live in `configs/model/*.yaml`, not here; a missing or misspelt key fails with its
full dotted name (e.g. `model.video.channels`) so that a typo can never fall back silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ModelConfigError(ValueError):
    """The model or data config lacks a key, has an unknown one, or holds a bad value."""


def section(cfg: Any, path: str, keys: Sequence[str]) -> Mapping:
    """Return `cfg` after checking it is a mapping with exactly `keys` (no more, no fewer)."""
    if not isinstance(cfg, Mapping):
        raise ModelConfigError(f"{path} must be a mapping, got {type(cfg).__name__}")
    missing = [key for key in keys if key not in cfg]
    if missing:
        raise ModelConfigError(f"missing config key(s): {', '.join(f'{path}.{key}' for key in missing)}")
    unknown = sorted(str(key) for key in cfg if key not in keys)
    if unknown:
        raise ModelConfigError(
            f"unknown config key(s): {', '.join(f'{path}.{key}' for key in unknown)}; "
            f"{path} takes {', '.join(keys)}"
        )
    return cfg


def lookup(cfg: Any, dotted: str, root: str) -> Any:
    """Read a nested key such as `video.num_frames` from `cfg`, naming `root.video.num_frames` if absent."""
    node = cfg
    walked = root
    for part in dotted.split("."):
        walked = f"{walked}.{part}"
        if not isinstance(node, Mapping) or part not in node:
            raise ModelConfigError(f"missing config key {walked}")
        node = node[part]
    return node


def positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelConfigError(f"{path} must be a positive integer, got {value!r}")
    return value


def positive_ints(value: Any, path: str, length: int | None = None) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ModelConfigError(f"{path} must be a non-empty list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ModelConfigError(f"{path} must have {length} entries (one per stage), got {len(value)}")
    return [positive_int(item, f"{path}[{i}]") for i, item in enumerate(value)]


def number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelConfigError(f"{path} must be a number, got {value!r}")
    return float(value)


def positive_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ModelConfigError(f"{path} must be a positive number, got {value!r}")
    return float(value)


def non_negative_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ModelConfigError(f"{path} must be a number >= 0, got {value!r}")
    return float(value)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ModelConfigError(f"{path} must be true or false, got {value!r}")
    return value


def one_of(value: Any, choices: Sequence[str], path: str) -> str:
    if value not in choices:
        raise ModelConfigError(f"{path} must be one of {list(choices)}, got {value!r}")
    return value
