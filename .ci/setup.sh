#!/usr/bin/env bash
# Creates (once) and refreshes the project's virtualenv. The venv lives outside the checkout,
# keyed by the dependency list, so a fresh clone reuses the 4.6 GB torch install of the last one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
key=$(sha256sum "$repo/pyproject.toml" | cut -c1-12)
venv=${MMDIST_VENV:-$HOME/.cache/mmdist/venv-$key}
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "[setup] creating $venv (first run installs torch 2.11 + torchaudio 2.11, Ray, DeepSpeed: ~5-8 min)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q -U pip wheel "setuptools<80"
    # torchaudio 2.11 is the last torchaudio and loads only against torch 2.11 (../shared/ENVIRONMENT.md);
    # installed first so DeepSpeed's source build finds it.
    "$venv/bin/pip" install -q "torch==2.11.0" "torchaudio==2.11.0" "torchvision==0.26.0"
    "$venv/bin/pip" install -q --no-build-isolation "deepspeed==0.19.*"
    "$venv/bin/pip" install -q -e "$repo[test]"
    touch "$venv/.complete"
fi
# Re-point the editable install at this checkout (CI clones to a new folder each run).
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$repo" >/dev/null
echo "$venv"
