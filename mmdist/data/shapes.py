"""The fixed shapes of a decoded batch, from the `data` config alone (no media libraries, no Ray).

Here rather than in the pipeline so that code on a machine without Ray or PyAV (the GPU benchmark,
mmdist/benchmarks/gpu.py) builds batches of exactly the pipeline's shapes.
"""

from __future__ import annotations

import numpy as np


def audio_frame_count(cfg: dict) -> int:
    """F: spectrogram frames in the `audio.max_seconds` window (one per `hop_ms`)."""
    audio_cfg = cfg["audio"]
    return round(audio_cfg["max_seconds"] * 1000 / audio_cfg["hop_ms"])


def batch_shapes(cfg: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and per-clip shape of every training column (a batch adds a leading B)."""
    video, text = cfg["video"], cfg["text"]
    frames, candidates, tokens = audio_frame_count(cfg), text["max_candidates"], text["max_tokens"]
    return {
        "video": (np.dtype(np.uint8), (video["num_frames"], video["size"], video["size"], 3)),
        "audio": (np.dtype(np.float32), (cfg["audio"]["n_mels"], frames)),
        "audio_frame_mask": (np.dtype(bool), (frames,)),
        "text_tokens": (np.dtype(np.int64), (candidates, tokens)),
        "text_token_mask": (np.dtype(bool), (candidates, tokens)),
        "text_candidate_mask": (np.dtype(bool), (candidates,)),
        "has_video": (np.dtype(bool), ()),
        "has_audio": (np.dtype(bool), ()),
        "has_text": (np.dtype(bool), ()),
    }
