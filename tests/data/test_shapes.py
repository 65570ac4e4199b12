"""batch_shapes: the per-clip shapes of mmdist.contracts.BATCH_COLUMNS, sized by the data config."""

from __future__ import annotations

import numpy as np

from mmdist.data.shapes import audio_frame_count, batch_shapes


def test_the_contract_dims_take_the_config_sizes():
    cfg = {"video": {"num_frames": 8, "size": 32}, "audio": {"n_mels": 40, "max_seconds": 2.0, "hop_ms": 10},
           "text": {"max_candidates": 3, "max_tokens": 6}}
    assert audio_frame_count(cfg) == 200  # 2 s of 10 ms hops
    assert batch_shapes(cfg) == {
        "video": (np.dtype(np.uint8), (8, 32, 32, 3)),
        "audio": (np.dtype(np.float32), (40, 200)),
        "audio_frame_mask": (np.dtype(bool), (200,)),
        "text_tokens": (np.dtype(np.int64), (3, 6)),
        "text_token_mask": (np.dtype(bool), (3, 6)),
        "text_candidate_mask": (np.dtype(bool), (3,)),
        "has_video": (np.dtype(bool), ()),
        "has_audio": (np.dtype(bool), ()),
        "has_text": (np.dtype(bool), ()),
    }
