"""Imports run one way (issue 11): storage -> decode -> models -> objectives -> train -> eval -> tune -> jobs.

Every module under mmdist/ and jobs/ is parsed with `ast` (nothing is imported) and each of its
imports of mmdist.* is checked against the layer table below, imports inside functions included:
a lazy import against the flow is still against the flow. A module may import its own layer and
the layers before it; anything else fails, naming the file, the line and the import, unless
ALLOWED lists it with a reason.

The layers, first to last (the shared modules at the top of mmdist/ are placed by what they import):

    base        config, config_schema/, dist, ray_setup, ranks, tracking, contracts (the batch and output every
                layer passes on): no mmdist import but each other
    storage     data/: schema, storage, media, parallel, ingest, synthetic world (writes clips)
    decode      data/: text, resample, decode, shapes, pipeline (reads clips into batches)
    models      models/, vq.py (the shared codebook)
    objectives  objectives/
    measures    eval/embed, retrieval, discovery, validation: pure functions of a model's outputs that the
                training loop's held-out validation shares with evaluation (none reads a job, a report or a plot)
    train       train/, startup.py (the start-up checks fit runs before Ray starts)
    eval        the rest of eval/ (extraction job, analysis, probe, clustering, codebook, report, plots), inference.py
    tune        tune/
    jobs        jobs/, benchmarks/, mmdist/__init__.py (the public face: `mmdist.load_model`)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = ("base", "storage", "decode", "models", "objectives", "measures", "train", "eval", "tune", "jobs")

# Where each file sits: the longest matching path prefix wins. A new file without a place fails the test.
PLACES = {
    "mmdist/config.py": "base",
    "mmdist/config_schema/": "base",
    "mmdist/dist.py": "base",
    "mmdist/ray_setup.py": "base",
    "mmdist/ranks.py": "base",
    "mmdist/tracking.py": "base",
    "mmdist/contracts.py": "base",
    "mmdist/data/schema.py": "storage",
    "mmdist/data/storage.py": "storage",
    "mmdist/data/media.py": "storage",
    "mmdist/data/parallel.py": "storage",
    "mmdist/data/ingest.py": "storage",
    "mmdist/data/synthetic.py": "storage",
    "mmdist/data/synthetic_render.py": "storage",
    "mmdist/data/": "decode",
    "mmdist/vq.py": "models",
    "mmdist/models/": "models",
    "mmdist/objectives/": "objectives",
    "mmdist/eval/embed.py": "measures",
    "mmdist/eval/retrieval.py": "measures",
    "mmdist/eval/discovery.py": "measures",
    "mmdist/eval/validation.py": "measures",
    "mmdist/startup.py": "train",
    "mmdist/train/": "train",
    "mmdist/eval/": "eval",
    "mmdist/inference.py": "eval",
    "mmdist/tune/": "tune",
    "mmdist/benchmarks/": "jobs",
    "mmdist/__init__.py": "jobs",
    "jobs/": "jobs",
}

# (importing file, imported module) -> why the import against the flow is accepted. Keep it empty if you can.
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(path: str) -> str | None:
    matches = [prefix for prefix in PLACES if path == prefix or (prefix.endswith("/") and path.startswith(prefix))]
    return PLACES[max(matches, key=len)] if matches else None


def module_path(module: str, root: Path = REPO) -> str | None:
    """`mmdist.eval.job` -> `mmdist/eval/job.py` (or the package's `__init__.py`); None outside the tree."""
    parts = module.split(".")
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_modules(tree: ast.AST, path: str) -> list[tuple[int, str]]:
    """(line, module) of every mmdist import anywhere in the module, functions included.
    `from package import name` names the submodule when `name` is one, else the package."""
    package = path.rsplit("/", 1)[0].replace("/", ".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if module_path(submodule) else base))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, node.args[0].value))
    ours = [(line, module) for line, module in found if module == "mmdist" or module.startswith(("mmdist.", "jobs."))]
    return sorted(set(ours))  # `from m import a, b`: one entry


def violations(source: str, path: str) -> list[str]:
    """`path:line: <layer> module imports <module> (<layer> layer)` for each import against the flow."""
    own = layer_of(path)
    if own is None:
        return [f"{path}: no layer (add it to PLACES in tests/test_architecture.py)"]
    out = []
    for line, module in imported_modules(ast.parse(source, filename=path), path):
        target = module_path(module)
        if target is None:
            out.append(f"{path}:{line}: imports {module}, which is no module of the tree")
            continue
        theirs = layer_of(target)
        if theirs is None:
            continue  # reported for the target's own file
        if LAYERS.index(theirs) > LAYERS.index(own) and (path, module) not in ALLOWED:
            out.append(f"{path}:{line}: {own} module imports {module} ({theirs} layer, later in the flow)")
    return out


def python_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for folder in ("mmdist", "jobs") for p in (REPO / folder).rglob("*.py"))


def test_imports_run_one_way():
    found = [v for path in python_files() for v in violations((REPO / path).read_text(), path)]
    assert not found, "imports against the flow " + " -> ".join(LAYERS) + ":\n" + "\n".join(found)


def test_allowed_exceptions_are_still_imported():
    """An entry of ALLOWED whose import is gone is stale: remove it."""
    for path, module in ALLOWED:
        assert module in {m for _, m in imported_modules(ast.parse((REPO / path).read_text()), path)}, (path, module)


def test_the_checker_catches_an_import_against_the_flow():
    """A fake models module that imports the training loop inside a function, the objectives at
    the top (the issue's original violation), and the eval package relatively."""
    source = (
        "import torch\n"
        "from mmdist.objectives import code_distribution\n"
        "from mmdist import dist\n"
        "from ..eval import evaluate\n"
        "def forward():\n"
        "    from mmdist.train.loop import train_step\n"
        "    import importlib\n"
        "    return importlib.import_module('mmdist.tune.sweep')\n"
    )
    found = violations(source, "mmdist/models/fake.py")
    assert found == [
        "mmdist/models/fake.py:2: models module imports mmdist.objectives (objectives layer, later in the flow)",
        "mmdist/models/fake.py:4: models module imports mmdist.eval (eval layer, later in the flow)",
        "mmdist/models/fake.py:6: models module imports mmdist.train.loop (train layer, later in the flow)",
        "mmdist/models/fake.py:8: models module imports mmdist.tune.sweep (tune layer, later in the flow)",
    ]
    # the same imports are with the flow from the jobs layer; `from mmdist import dist` names the module
    assert violations(source, "jobs/fake.py") == []
    assert imported_modules(ast.parse("from mmdist import dist"), "mmdist/vq.py") == [(1, "mmdist.dist")]
    assert violations("x = 1\n", "mmdist/nowhere/fake.py") == [
        "mmdist/nowhere/fake.py: no layer (add it to PLACES in tests/test_architecture.py)"]


@pytest.mark.parametrize("module", ["mmdist.train.loop", "mmdist.train.fit"])
def test_training_workers_do_not_import_the_report(module):
    """A training worker imports the validation measures, not the evaluation job, its report or matplotlib."""
    code = f"import sys, {module}; print(sorted(m for m in ('matplotlib', 'mmdist.eval.job', 'mmdist.eval.report') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
