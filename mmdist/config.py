"""The one config check of every job, value helpers, and `redact` (secrets never reach a written config).

    check_config(cfg, job)            a composed job config against its schema (mmdist/config_schema/):
                                      every section, at start-up, before Ray starts; returns it resolved
    check_section(cfg, schema, path)  one section, for library entry points that take a section
                                      (build_model, build_dataset, recipe_loss, ...)

A strict pass over the schema's fields names an unknown key and refuses a value of another type,
including what OmegaConf would convert silently (`"yes"` or `1` for a bool, `true` for an int, a number
for a string); then the config is merged into the schema's structured config (OmegaConf, as Hydra's
ConfigStore schemas are), which names a missing key. Every error is a `ConfigError` whose one line
starts with the full key, e.g. `trainer.lr_warmup: unknown key (trainer takes: num_workers, use_gpu, ...)`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from mmdist.config_schema.jobs import JOBS
from mmdist.config_schema.variants import Variants

SECRET_WORDS = {"secret", "password", "token", "credential", "credentials"}  # whole words of a key


class ConfigError(ValueError):
    """A config key is unknown, missing or holds a value of the wrong type or range; the message names it."""


# ---------------------------------------------------------------- the check


def check_config(cfg: Any, job: str, suite: str | None = None) -> dict:
    """Check every section of `job`'s composed config (configs/<job>.yaml) and return it as a resolved
    plain dict. `suite`: the benchmark job's suite (its config group choice)."""
    config = _plain(cfg, "")
    check_section(config, JOBS[job], "", choice=suite)
    return config


def check_section(cfg: Any, schema: type | Variants, path: str, choice: str | None = None) -> dict:
    """Check `cfg`, the section at `path` (`""` for a whole job), against a schema class (or the
    variant of `schema` its discriminating key selects); returns it as a plain dict."""
    cfg = _plain(cfg, path)
    schema = _variant(cfg, schema, path, choice)
    _check_types(cfg, schema, path, choice)  # unknown keys and exact types, variants included
    try:
        merged = OmegaConf.merge(_structured(schema), cfg)
    except ConfigKeyError as error:
        raise ConfigError(_unknown_key(error, path)) from None
    except OmegaConfBaseException as error:
        raise ConfigError(f"{_join(path, error.full_key)}: {_first_line(error)}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{_join(path, missing[0])}: missing key (its value belongs in configs/)")
    return cfg


@functools.cache
def _structured(schema: type) -> DictConfig:
    """The schema's structured config, built once per process (merge copies it)."""
    return OmegaConf.structured(schema)


def _plain(cfg: Any, path: str) -> Any:
    if isinstance(cfg, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            raise ConfigError(f"{_join(path, error.full_key)}: missing value (??? in configs/: set it on the command line)") from None
    return cfg


def _variant(cfg: Any, schema: type | Variants, path: str, choice: str | None) -> type:
    if not isinstance(schema, Variants):
        return schema
    if schema.key is None:  # chosen by the config group (benchmark suites)
        value, where = choice, f"{path} (the config group)"
    else:
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{path}: must be a mapping, got {cfg!r}")
        value, where = cfg.get(schema.key), _join(path, schema.key)
    if value not in schema.classes:
        raise ConfigError(f"{where} must be one of {sorted(schema.classes)}, got {value!r}")
    return schema.classes[value]


def _check_types(value: Any, kind: Any, path: str, choice: str | None = None) -> None:
    """The strict pass: `value` is exactly of `kind` (a schema class, typing form or scalar type)."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        names = [spec.name for spec in dataclasses.fields(kind)]
        for key in value:
            if key not in names:
                raise ConfigError(f"{_join(path, str(key))}: unknown key ({path or 'the config'} takes: {', '.join(names)})")
        hints = typing.get_type_hints(kind)
        for spec in dataclasses.fields(kind):
            if spec.name not in value:
                continue  # the merge names missing keys
            child, key = value[spec.name], _join(path, spec.name)
            variants = spec.metadata.get("variants")
            if variants is not None:
                check_section(child, variants, key, choice)
            else:
                _check_types(child, hints[spec.name], key)
        return
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return
    if origin is typing.Union:  # Optional[X]
        if value is not None:
            _check_types(value, next(arg for arg in args if arg is not type(None)), path)
        return
    if origin in (list, Sequence):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: must be a list, got {value!r}")
        for index, item in enumerate(value):
            _check_types(item, args[0], f"{path}[{index}]")
        return
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a mapping, got {value!r}")
        for key, item in value.items():
            _check_types(item, args[1], _join(path, str(key)))
        return
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[kind]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, accepted):
        raise ConfigError(f"{path}: must be {'a number' if kind is float else kind.__name__}, got {value!r}")


def _unknown_key(error: ConfigKeyError, path: str) -> str:
    key = _join(path, error.full_key)
    owner = error.object_type
    if dataclasses.is_dataclass(owner):
        parent = key.rpartition(".")[0] or "the config"
        known = ", ".join(spec.name for spec in dataclasses.fields(owner))
        return f"{key}: unknown key ({parent} takes: {known})"
    return f"{key}: {_first_line(error)}"


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0]


def _join(path: str, key: str) -> str:
    if not key:
        return path
    return key if not path else f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


# ---------------------------------------------------------------- values (ranges a type cannot say)


def positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{path} must be a positive integer, got {value!r}")
    return value


def positive_ints(value: Any, path: str, length: int | None = None) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{path} must be a non-empty list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{path} must have {length} entries (one per stage), got {len(value)}")
    return [positive_int(item, f"{path}[{i}]") for i, item in enumerate(value)]


def number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path} must be a number, got {value!r}")
    return float(value)


def positive_number(value: Any, path: str) -> float:
    if number(value, path) <= 0:
        raise ConfigError(f"{path} must be a positive number, got {value!r}")
    return float(value)


def non_negative_number(value: Any, path: str) -> float:
    if number(value, path) < 0:
        raise ConfigError(f"{path} must be a number >= 0, got {value!r}")
    return float(value)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    return value


def one_of(value: Any, choices: Sequence[str], path: str) -> str:
    if value not in choices:
        raise ConfigError(f"{path} must be one of {list(choices)}, got {value!r}")
    return value


def lookup(cfg: Any, dotted: str, root: str) -> Any:
    """Read a nested key such as `video.num_frames` from `cfg`, naming `root.video.num_frames` if absent."""
    node = cfg
    walked = root
    for part in dotted.split("."):
        walked = f"{walked}.{part}"
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing config key {walked}")
        node = node[part]
    return node


# ---------------------------------------------------------------- secrets


def redact(value, key: str = ""):
    """Replace values whose key names a secret (AWS keys, tokens, passwords) by '***'."""
    if isinstance(value, dict):
        return {name: redact(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    # by whole words: aws_secret_access_key, session_token are secrets; data.text.max_tokens is not
    if value is not None and SECRET_WORDS & set(key.lower().split("_")):
        return "***"
    return value
