"""The GPU benchmark suite (mmdist/benchmarks/gpu.py) on a machine without CUDA: its refusal, its FLOP
count against hand counts, its peak table, and one CPU run of its step with Ray unimportable."""

import json
import pathlib
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from mmdist.benchmarks import gpu

REPO = pathlib.Path(__file__).resolve().parents[2]
SUITE_YAML = REPO / "configs" / "suite" / "gpu.yaml"


def suite_cfg() -> dict:
    return OmegaConf.to_container(OmegaConf.load(SUITE_YAML), resolve=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the suite measures instead")
def test_refuses_without_cuda_and_says_why(capsys):
    figures = gpu.run(suite_cfg())
    printed = capsys.readouterr().out
    assert set(figures) == {"skipped"}
    for words in ("skipped", "torch.cuda.is_available() is False", "nothing was measured", "jobs/gpu_check.sh"):
        assert words in printed and words in figures["skipped"]


def test_a_missing_key_is_named():
    cfg = suite_cfg()
    del cfg["peak_tflops"]
    with pytest.raises(ValueError, match="suite.peak_tflops: missing key"):
        gpu.run(cfg)


@pytest.mark.parametrize("input_grad", [False, True])
def test_flop_count_of_a_linear_layer_matches_the_hand_count(input_grad):
    batch, d_in, d_out = 8, 32, 24
    layer = torch.nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=input_grad)
    forward = gpu.count_flops(lambda: layer(x))
    assert forward == 2 * batch * d_in * d_out  # one multiply-add per (row, input, output)
    # backward: the weight gradient (2 B in out), and the input gradient (2 B in out) only when x needs one
    both = gpu.count_flops(lambda: layer(x).sum().backward())
    assert both == (6 if input_grad else 4) * batch * d_in * d_out


def test_peak_lookup_by_device_name():
    table = suite_cfg()["peak_tflops"]
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3", table) == 989
    assert gpu.peak_tflops("NVIDIA H100 PCIe", table) == 756
    assert gpu.peak_tflops("NVIDIA H200", table) == 989
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB", table) == 312
    assert gpu.peak_tflops("NVIDIA L4", table) == 121
    assert gpu.peak_tflops("NVIDIA L40S", table) == 362
    assert gpu.peak_tflops("NVIDIA A10G", table) == 70
    assert gpu.peak_tflops("Some Future GPU", table) is None


@pytest.mark.slow
def test_step_runs_without_ray_pyav_or_soundfile():
    """The tiny model through the suite's checks and two ZeRO variants on the CPU, in a process where
    importing Ray, PyAV or soundfile fails (as on the bare GPU machine)."""
    overrides = [o for o in suite_cfg()["overrides"] if not o.startswith(("model=", "data.video"))] + ["model=tiny"]
    variants = [
        {"name": "zero0", "zero_stage": 0, "channels_last_3d": False, "cudnn_benchmark": False, "compile": False},
        {"name": "zero2", "zero_stage": 2, "channels_last_3d": False, "cudnn_benchmark": False, "compile": False},
        {"name": "zero0_channels_last", "zero_stage": 0, "channels_last_3d": True, "cudnn_benchmark": False, "compile": False},
    ]
    override = {"overrides": overrides, "micro_batch": 4, "steps": 2, "warmup": 1, "variants": variants}
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "benchmarks" / "without_ray.py"), str(SUITE_YAML), json.dumps(override)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    figures, loaded = result["figures"], set(result["loaded"])
    assert not {"ray", "av", "soundfile", "open_clip"} & loaded
    assert "deepspeed" in loaded
    assert figures["flops_per_step"] > 0 and figures["loss_ok"], figures
    for name in ("zero0", "zero2", "zero0_channels_last"):
        assert "error" not in {key.removeprefix(f"{name}_") for key in figures if key.startswith(name)}, figures
        assert figures[f"{name}_step_s"] > 0
        assert figures[f"{name}_codebook_fp32"] is True
        assert figures[f"{name}_codebook_updates"] == 3  # warmup + steps: one EMA update per optimizer step
