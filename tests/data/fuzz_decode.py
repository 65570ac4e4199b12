"""The decoder fuzz run, in its own process: `python -m tests.data.fuzz_decode SEED CASES_PER_SOURCE`.

Small real clips (an H.264 MP4, a FLAC, a stereo 44.1 kHz WAV) are mutated with a seeded numpy
generator (bit flips, truncations, header field edits, cut / duplicated / random byte ranges)
and each mutated file goes through `ClipDecoder.decode_table`, the pipeline's per-batch decode,
as a one-row clip table. One JSON object per line on stdout, so the parent test can tell a hang
or a crash from the last line it read:

    {"baseline_rss_mb": ...}                                  after the clean clips were decoded once
    {"case": i, "source": "mp4", "mutation": "..."}           before each case
    {"case": i, "outcome": "decoded" | <drop reason> | "raised", "seconds", "error", "peak_rss_mb"}
    {"peak_rss_mb": ...}                                      at the end

Address space is capped (baseline + ADDRESS_SPACE_HEADROOM) so that a decode bomb fails its case
instead of taking the machine's memory.
"""

from __future__ import annotations

import io
import json
import resource
import sys
import time

import numpy as np
import pyarrow as pa
import soundfile
import torch

from mmdist.data.media import encode_audio_flac, encode_video_mp4
from mmdist.data.pipeline import ClipDecoder
from mmdist.data.schema import CLIP_SCHEMA
from tests.data.conftest import load_data_cfg

ADDRESS_SPACE_HEADROOM = 4 << 30
# Integers a header edit writes: zero, one, the signed / unsigned extremes, powers of two.
EXTREMES = [0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 20, 1 << 24]
MP4_BOXES = [b"mvhd", b"tkhd", b"mdhd", b"hdlr", b"stsd", b"avc1", b"avcC", b"stts", b"ctts", b"stss",
             b"stsc", b"stsz", b"stco", b"elst", b"mdat", b"moov", b"trak"]
WAV_FIELDS = [(4, 4), (16, 4), (20, 2), (22, 2), (24, 4), (28, 4), (32, 2), (34, 2), (40, 4)]  # (offset, bytes)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def sources() -> dict[str, bytes]:
    """The clean clips: 12 frames of a moving pattern (64 x 48, 10 fps), 1 s of tone and noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:48, :64]
    frames = np.stack([np.stack([(x * 4 + 9 * k) % 256, (y * 5) % 256, (x + y + 20 * k) % 256], -1)
                       for k in range(12)]).astype(np.uint8)  # [12, 48, 64, 3]
    tone = 0.4 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) + 0.05 * rng.standard_normal(16000)
    stereo = 0.3 * rng.standard_normal((22050, 2))  # 0.5 s at 44.1 kHz: the resampling path
    wav = io.BytesIO()
    soundfile.write(wav, stereo.astype(np.float32), 44100, format="WAV", subtype="PCM_16")
    return {"mp4": encode_video_mp4(frames, 10, crf=20, preset="veryfast"), "flac": encode_audio_flac(tone, 16000), "wav": wav.getvalue()}


def mutate(data: bytes, source: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One mutated copy of `data` and a description of the mutation."""
    buf = bytearray(data)
    kind = rng.choice(["bit_flips", "header_bit_flips", "truncate", "header_field", "cut", "duplicate", "random_range"])
    if kind in ("bit_flips", "header_bit_flips"):
        span = len(buf) if kind == "bit_flips" else min(len(buf), 512)
        positions = rng.integers(0, span, size=int(rng.integers(1, 17)))
        for position in positions:
            buf[position] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf), f"{kind} at {sorted(positions.tolist())}"
    if kind == "truncate":
        keep = int(rng.integers(0, len(buf)))
        return bytes(buf[:keep]), f"truncate to {keep} of {len(buf)} bytes"
    if kind == "header_field":
        offset, width, order = _header_field(buf, source, rng)
        value = int(rng.choice(EXTREMES)) & ((1 << (8 * width)) - 1)
        buf[offset : offset + width] = value.to_bytes(width, order)
        return bytes(buf), f"header_field {width} bytes at {offset} = {value:#x} ({order})"
    start = int(rng.integers(0, len(buf)))
    length = int(rng.integers(1, max(2, len(buf) // 4)))
    if kind == "cut":
        return bytes(buf[:start] + buf[start + length :]), f"cut {length} bytes at {start}"
    if kind == "duplicate":
        return bytes(buf[: start + length] + buf[start : start + length] + buf[start + length :]), f"duplicate {length} bytes at {start}"
    buf[start : start + length] = rng.bytes(len(buf[start : start + length]))
    return bytes(buf), f"random_range {length} bytes at {start}"


def _header_field(buf: bytearray, source: str, rng: np.random.Generator) -> tuple[int, int, str]:
    """(offset, width, byte order) of an integer field: WAV fmt / data fields, FLAC STREAMINFO, or
    one of the first words after an MP4 box's type."""
    if source == "wav":
        offset, width = WAV_FIELDS[int(rng.integers(len(WAV_FIELDS)))]
        return offset, width, "little"
    if source == "flac":  # "fLaC", block header (4), STREAMINFO (34): sizes, rate, channels, total samples
        return int(rng.integers(8, 40)), int(rng.choice([1, 2, 4])), "big"
    present = [box for box in MP4_BOXES if box in buf]
    box = present[int(rng.integers(len(present)))]
    return buf.index(box) + 4 + 4 * int(rng.integers(0, 8)), 4, "big"


def one_row(source: str, data: bytes) -> pa.Table:
    row = {"clip_id": "fuzz", "source_id": "fuzz", "start_s": 0.0, "end_s": 1.0, "text": None, "labels": None,
           "video": data if source == "mp4" else None, "audio": None if source == "mp4" else data}
    return pa.Table.from_pylist([row], schema=CLIP_SCHEMA)


def outcome(decoder: ClipDecoder, table: pa.Table) -> str:
    batch, drops = decoder.decode_table(table)
    if drops:
        return next(iter(drops.values()))[0]
    if len(batch["has_video"]) != 1 or not np.isfinite(batch["audio"]).all():
        return f"bad output: {len(batch['has_video'])} rows, finite audio {np.isfinite(batch['audio']).all()}"
    return "decoded"


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def main(seed: int, cases_per_source: int) -> None:
    torch.set_num_threads(1)
    cfg = load_data_cfg(path="unused", video__num_frames=6, video__fps=4, video__resize=32, video__size=24,
                        audio__max_seconds=1.0)
    decoder = ClipDecoder(cfg, train=False, seed=0)
    clean = sources()
    for source, data in clean.items():  # warm-up: imports, filterbanks, codecs; each must decode
        assert outcome(decoder, one_row(source, data)) == "decoded", source
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    address_space = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (address_space + ADDRESS_SPACE_HEADROOM, hard))
    emit({"baseline_rss_mb": rss_mb()})
    rng = np.random.default_rng(seed)
    case = 0
    for source, data in clean.items():
        for _ in range(cases_per_source):
            mutated, mutation = mutate(data, source, rng)
            emit({"case": case, "source": source, "mutation": mutation})
            start = time.perf_counter()
            try:
                result, error = outcome(decoder, one_row(source, mutated)), None
            except Exception as err:  # the test fails on these: a mutated file must decode or drop
                result, error = "raised", f"{type(err).__name__}: {err}"[:500]
            seconds = round(time.perf_counter() - start, 4)
            emit({"case": case, "outcome": result, "seconds": seconds, "error": error, "peak_rss_mb": rss_mb()})
            case += 1
    emit({"peak_rss_mb": rss_mb()})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
