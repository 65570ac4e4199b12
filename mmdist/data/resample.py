"""Resampling a mono wave between any two sample rates (the audio decode, mmdist/data/decode.py).

torchaudio's sinc resampler is accurate and fast for the usual rates, but its kernel grows with
the reduced rate ratio; rates that would make it huge go through FFmpeg's swresample.
"""

from __future__ import annotations

import math

import av
import numpy as np

# (source / g) x (target / g), g their gcd, above which `resample` uses swresample: torchaudio's kernel
# has about that many entries. Every common rate (8-192 kHz, 11.025 / 22.05 / 44.1 / 88.2 kHz) to
# 16 kHz is far below (44.1 kHz: 441 x 160).
_SINC_KERNEL_LIMIT = 2**20


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 [n] at `source_rate` -> [~n * target / source] at `target_rate`.

    torchaudio's sinc resampler builds a [target/g, source/g + 2 * width] kernel (g = gcd of the
    rates): 76k entries for 44.1 kHz -> 16 kHz, but an 8001 Hz file took 2.6 GB and 6 s here, and
    by the same scaling a 44101 Hz file needs over 10 GB. Rate pairs above _SINC_KERNEL_LIMIT go
    through FFmpeg's swresample instead, whose polyphase filter has a fixed size.
    """
    if source_rate == target_rate:
        return wave
    import torch
    import torchaudio

    divisor = math.gcd(source_rate, target_rate)
    if (source_rate // divisor) * (target_rate // divisor) <= _SINC_KERNEL_LIMIT:
        return torchaudio.functional.resample(torch.from_numpy(wave), source_rate, target_rate).numpy()
    frame = av.AudioFrame.from_ndarray(wave[None, :], format="flt", layout="mono")  # [1, n]
    frame.sample_rate = source_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)
    chunks = [out.to_ndarray()[0] for out in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
