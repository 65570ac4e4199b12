"""Distributed training: Ray Train workers running DeepSpeed engines over the recipe objectives."""

from mmdist.train.fit import fit
from mmdist.train.loop import train_loop_per_worker

__all__ = ["fit", "train_loop_per_worker"]
