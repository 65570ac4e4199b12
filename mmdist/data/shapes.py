"""The fixed shapes of a decoded batch, from the `data` config alone (no media libraries, no Ray).

Here rather than in the pipeline so that code on a machine without Ray or PyAV (the GPU benchmark,
mmdist/benchmarks/gpu.py) builds batches of exactly the pipeline's shapes.
"""

from __future__ import annotations

import numpy as np

from mmdist.contracts import BATCH_COLUMNS


def audio_frame_count(cfg: dict) -> int:
    """F: spectrogram frames in the `audio.max_seconds` window (one per `hop_ms`)."""
    audio_cfg = cfg["audio"]
    return round(audio_cfg["max_seconds"] * 1000 / audio_cfg["hop_ms"])


def batch_shapes(cfg: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and per-clip shape of every ClipBatch column (mmdist.contracts; a batch adds a leading B)."""
    video, text = cfg["video"], cfg["text"]
    sizes = {"T": video["num_frames"], "H": video["size"], "W": video["size"], "n_mels": cfg["audio"]["n_mels"],
             "F": audio_frame_count(cfg), "P": text["max_candidates"], "L": text["max_tokens"]}
    return {name: (np.dtype(column.dtype), tuple(sizes.get(dim, dim) for dim in column.dims))
            for name, column in BATCH_COLUMNS.items()}
