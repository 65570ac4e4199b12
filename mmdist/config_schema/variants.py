"""A section whose class depends on a value: the recipe on `recipe.name`, an encoder on its `backbone`,
the Tune scheduler on its `name`, a benchmark on its suite (the config group). Such a field is typed
`Any` and carries its `Variants` in its metadata; `mmdist.config` picks the class and checks the section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass(frozen=True)
class Variants:
    """The classes a section can take, chosen by the value of its key `key` (or, with key None, by
    the config group's choice, e.g. `suite=data`)."""

    key: str | None
    classes: dict


def one_of(variants: Variants) -> Any:
    """A field whose class depends on its own content (see `Variants`)."""
    return field(default=MISSING, metadata={"variants": variants})
