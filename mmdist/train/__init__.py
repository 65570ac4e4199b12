"""Distributed training: Ray Train workers running DeepSpeed engines over the recipe objectives.

On a machine without Ray (a bare GPU machine running the GPU benchmark, mmdist/benchmarks/gpu.py)
the package still imports, offering its Ray-free modules (`engine`, `gather`, `sync_batchnorm`) only.
"""

try:
    from mmdist.train.fit import fit
    from mmdist.train.loop import train_loop_per_worker
except ModuleNotFoundError as err:
    if err.name != "ray" and not (err.name or "").startswith("ray."):
        raise

__all__ = ["fit", "train_loop_per_worker"]
