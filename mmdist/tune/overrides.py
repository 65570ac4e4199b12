"""Hydra command-line overrides that turn the plain training config into a given trial's config.

`config_overrides(target, defaults)` diffs two resolved configs leaf by leaf and writes one override
per difference, in Hydra's override grammar (`key=value`, `+key=value` for a key the defaults lack,
`~key` for one they have and the target does not). Lists are compared whole.
"""

from __future__ import annotations

import re

import yaml

# a string Hydra reads back unchanged without quotes (and not as a number, bool or null)
_PLAIN_STRING = re.compile(r"[A-Za-z_/.][A-Za-z0-9_\-/.:@+]*")
_NOT_STRINGS = {"true", "false", "null", "nan", "inf", "-inf", "+inf"}


def format_value(value) -> str:
    """A Python value (from a YAML config) in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest repr that round-trips: 0.1, 1e-05, inf, nan
    if isinstance(value, str):
        if _PLAIN_STRING.fullmatch(value) and value.lower() not in _NOT_STRINGS:
            return value
        return _quoted(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{format_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a Hydra override")


def _quoted(text: str) -> str:
    """Hydra's quoted string: backslashes are escapes only before a quote (or the closing quote)."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, text)
    return "'" + escaped.replace("'", "\\'") + "'"


def config_overrides(target: dict, defaults: dict, skip: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """Overrides that turn `defaults` into `target` (both resolved), leaving out the dotted keys in `skip`."""
    overrides = []
    for key, value in target.items():
        dotted = f"{prefix}{key}"
        if dotted in skip:
            continue
        if key not in defaults:
            overrides.append(f"+{dotted}={format_value(value)}")
        elif isinstance(value, dict) and isinstance(defaults[key], dict):
            overrides.extend(config_overrides(value, defaults[key], skip, prefix=f"{dotted}."))
        elif value != defaults[key] or type(value) is not type(defaults[key]):
            overrides.append(f"{dotted}={format_value(value)}")
    overrides.extend(f"~{prefix}{key}" for key in defaults if key not in target and f"{prefix}{key}" not in skip)
    return overrides


def write_overrides_file(path: str, overrides: list[str], header: str) -> None:
    """A YAML list of overrides, Hydra's own `overrides.yaml` format, under a comment header."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    with open(path, "w") as handle:
        handle.write(comment)
        handle.write(yaml.safe_dump(overrides, default_flow_style=False, sort_keys=False, width=10_000))
