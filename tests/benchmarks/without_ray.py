"""Run the GPU suite's measurement on the CPU with Ray, PyAV, soundfile and open_clip made unimportable, as on a bare
GPU machine; print the figures and the modules that got imported as one JSON line (tests/benchmarks/test_gpu.py)."""

import importlib.abc
import json
import sys

BLOCKED = ("ray", "av", "soundfile", "open_clip")  # none is on the GPU image (KINDS.md)


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a bare GPU machine lacks it)", name=name)
        return None


sys.meta_path.insert(0, Block())

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from mmdist.benchmarks import gpu  # noqa: E402

torch.set_num_threads(1)
cfg = OmegaConf.to_container(OmegaConf.load(sys.argv[1]), resolve=True)
cfg.update(json.loads(sys.argv[2]))
figures = gpu.measure(cfg, torch.device("cpu"))
print(json.dumps({"figures": figures, "loaded": sorted({name.split(".")[0] for name in sys.modules})}, default=str))
