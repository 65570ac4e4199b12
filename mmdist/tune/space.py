"""Search spaces: the `sweep.space` config -> Ray Tune domains, and sampled values -> a trial's config.

A space mirrors the training config tree; each leaf is a one-key mapping that names a distribution:

    space:
      model: {codebook: {num_codes: {choice: [512, 1024, 2048]}}}
      recipe: {cmcm_alpha: {loguniform: [0.01, 1.0]}}

Internally a space is flat: dotted config keys (`recipe.cmcm_alpha`) -> Tune domain. The dotted keys
are what the results table shows and what the best trial's Hydra overrides set.
"""

from __future__ import annotations

import copy

from ray import tune

# distribution name in the config -> how its arguments are written (for error messages)
DISTRIBUTIONS = {
    "choice": "a list of values, sampled uniformly",
    "grid": "a list of values, each tried (x num_samples)",
    "uniform": "[low, high]",
    "loguniform": "[low, high], low > 0",
    "randint": "[low, high], integers, high exclusive",
}


def flatten_space(space: dict, prefix: str = "") -> dict[str, dict]:
    """Nested `sweep.space` -> {dotted key: one-key distribution spec}. Errors name the key."""
    flat = {}
    for name, value in space.items():
        key = f"{prefix}{name}"
        if not isinstance(value, dict) or not value:
            raise ValueError(
                f"sweep.space.{key}: expected a distribution ({', '.join(DISTRIBUTIONS)}) "
                f"or a mapping of config keys, got {value!r}"
            )
        named = set(value) & set(DISTRIBUTIONS)
        if named and len(value) != 1:
            raise ValueError(f"sweep.space.{key}: a distribution has exactly one key, got {sorted(value)}")
        if named:
            flat[key] = value
        else:
            flat.update(flatten_space(value, prefix=f"{key}."))
    return flat


def to_tune_domain(key: str, spec: dict):
    """One distribution spec -> a Ray Tune domain (or grid search); errors name `sweep.space.<key>`."""
    (kind, args), = spec.items()
    where = f"sweep.space.{key}.{kind}"
    if not isinstance(args, (list, tuple)) or not args:
        raise ValueError(f"{where}: expected {DISTRIBUTIONS[kind]}, got {args!r}")
    if kind == "choice":
        return tune.choice(list(args))
    if kind == "grid":
        return tune.grid_search(list(args))
    if len(args) != 2 or not all(isinstance(bound, (int, float)) for bound in args):
        raise ValueError(f"{where}: expected {DISTRIBUTIONS[kind]}, got {args!r}")
    low, high = args
    if not low < high:
        raise ValueError(f"{where}: low must be < high, got {args!r}")
    if kind == "uniform":
        return tune.uniform(low, high)
    if kind == "loguniform":
        if low <= 0:
            raise ValueError(f"{where}: log-uniform needs low > 0, got {args!r}")
        return tune.loguniform(low, high)
    if not all(float(bound).is_integer() for bound in args):
        raise ValueError(f"{where}: expected integer bounds, got {args!r}")
    return tune.randint(int(low), int(high))


def build_param_space(space: dict, config: dict) -> dict:
    """`sweep.space` -> Tune's `param_space` {dotted key: domain}; every key must exist in `config`."""
    flat = flatten_space(space)
    if not flat:
        raise ValueError("sweep.space is empty: name at least one config key to search over")
    for key in flat:
        if not has_key(config, key):
            raise ValueError(f"sweep.space.{key}: the training config has no key {key!r}")
    return {key: to_tune_domain(key, spec) for key, spec in flat.items()}


def has_key(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def with_values(config: dict, values: dict) -> dict:
    """A copy of `config` with each dotted key set to its value (the keys exist: build_param_space checked)."""
    config = copy.deepcopy(config)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = _plain(value)
    return config


def _plain(value):
    """numpy scalars (Tune samples with numpy) -> Python scalars, so configs serialise as YAML/JSON."""
    return value.item() if hasattr(value, "item") else value
