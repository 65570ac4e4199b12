#!/usr/bin/env bash
# The GPU check of issue 10, prepared to run in one go on a lent GPU machine (torch 2.11, Python 3.12,
# no network, no Ray): install the carried wheels, run `jobs/benchmark.py suite=gpu`, leave the figures
# in $OUT (gpu.json, gpu.log, versions.txt). Two steps (README, Benchmarks):
#   1. here, with network:   bash jobs/gpu_check.sh --prepare    # wheels into .whl/ (gitignored)
#   2. there, through the session's device tool, carrying .whl:   bash jobs/gpu_check.sh
# Extra arguments of step 2 go to the suite, e.g. `bash jobs/gpu_check.sh suite.micro_batch=32`.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the GPU image lacks of the suite's imports (DeepSpeed and its pydantic / hjson, Hydra); the
# versions this project's virtualenv pins. DeepSpeed ships no wheel on PyPI: `pip wheel` builds its
# pure-Python one (ops compile just in time), which runs on any Python 3.
PURE="hjson==3.1.0 annotated-types==0.8.0 typing-inspection==0.4.5 pydantic==2.14.4 hydra-core==1.3.8 omegaconf==2.3.1"
BINARY="pydantic-core==2.50.5"
SDIST_ONLY="antlr4-python3-runtime==4.9.3 deepspeed==0.19.8"

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .whl
    platforms="--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
        -d .whl $PURE $BINARY
    python3 -m pip wheel -q --no-deps -w .whl $SDIST_ONLY
    ls -l .whl
    exit 0
fi

OUT=${OUT:-$PWD/outputs/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    python3 -c "import sys, torch, deepspeed; print(sys.version.split()[0], 'torch', torch.__version__, 'deepspeed', deepspeed.__version__, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/versions.txt"
python3 jobs/benchmark.py suite=gpu out="$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
