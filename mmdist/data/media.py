"""Encoding media to bytes (H.264 MP4, FLAC) and cutting clips out of longer files (SPEC Sec. 1).

Encoding is deterministic: x264 runs single-threaded without lookahead decisions
(DETERMINISTIC_X264) and the MP4 muxer in bit-exact mode (no library version strings, no
creation time), so the same frames give the same bytes on every run and every worker
(checked by tests/data/test_synthetic.py).
"""

from __future__ import annotations

import io
import itertools
from fractions import Fraction
from typing import Iterable, Iterator, TypeVar

import av
import numpy as np
import soundfile as sf

from mmdist.data.storage import resolve_filesystem

# Timestamps are exact rationals turned into floats; this absorbs the rounding.
TIME_EPS = 1e-6
Frame = TypeVar("Frame")

# x264 options that make its output a function of its input. Measured here (x264 core 165, 64x64
# frames): even single-threaded, x264's lookahead decisions (adaptive B-frames, scene cuts,
# macroblock tree) changed a few clips' bytes from one run to the next; with them off, 40 runs
# of 64 clips were byte-identical. B-frames stay on, in a fixed pattern.
DETERMINISTIC_X264 = "rc-lookahead=0:mbtree=0:b-adapt=0:scenecut=0"


class ClipError(ValueError):
    """A clip cannot be cut from a file that opens: no usable stream, no frame rate."""


class EmptyClipError(ClipError):
    """The clip's time range is empty, or holds no frame / sample of the file."""


def encode_video_mp4(
    frames: Iterable[np.ndarray], fps: float, *, crf: int, preset: str
) -> bytes:
    """H.264 (yuv420p) in MP4 from `frames` uint8 [T, H, W, 3] (RGB) or any iterable of [H, W, 3].

    H and W must be even (yuv420p halves the chroma planes). Jobs pass `crf` / `preset` from
    their config (`video.crf`, `video.preset`); the keyword defaults serve tests and notebooks.
    """
    rate = Fraction(fps).limit_denominator(1001)
    buffer = io.BytesIO()
    count = 0
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = None
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"video frame {count}: expected uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
            if stream is None:
                stream = add_h264_stream(container, rate, height=frame.shape[0], width=frame.shape[1], crf=crf, preset=preset)
            elif (frame.shape[0], frame.shape[1]) != (stream.height, stream.width):
                raise ValueError(f"video frame {count}: size {frame.shape[:2]} differs from the first frame's")
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = count
            container.mux(stream.encode(picture))
            count += 1
        if stream is None:
            raise ValueError("encode_video_mp4: no frames to encode")
        container.mux(stream.encode(None))
    return buffer.getvalue()


def add_h264_stream(container, rate: Fraction, height: int, width: int, crf: int, preset: str):
    """A libx264 stream with reproducible output: one thread, no lookahead decisions."""
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {height}x{width}")
    options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": DETERMINISTIC_X264}
    stream = container.add_stream("libx264", rate=rate, options=options)
    stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
    stream.codec_context.time_base = 1 / rate
    stream.codec_context.thread_count = 1
    return stream


def encode_audio_flac(wave: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC from a mono float wave [S] in [-1, 1] (values beyond are clipped, not wrapped)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"encode_audio_flac: expected a non-empty mono wave [S], got shape {wave.shape}")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def open_media(url: str, endpoint_url: str | None):
    """A PyAV container reading `url` through the storage layer (local path, file://, s3://)."""
    fs, path = resolve_filesystem(url, endpoint_url)
    return av.open(fs.open_input_file(path), mode="r")  # PyAV reads the file through its read/seek


def frames_in_range(container, start_s: float, end_s: float | None) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time, frame) of the first video stream for start_s <= time < end_s."""
    stream = container.streams.video[0]
    if start_s > 0:
        container.seek(int(start_s * av.time_base), backward=True)
    for frame in container.decode(stream):
        if frame.time is None or frame.time < start_s - TIME_EPS:
            continue
        if end_s is not None and frame.time >= end_s - TIME_EPS:
            return
        yield frame.time, frame


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """Size after scaling the short side down to `short_side` (never up), rounded to even."""
    scale = 1.0 if short_side is None else min(1.0, short_side / min(height, width))
    return max(2, int(round(height * scale / 2)) * 2), max(2, int(round(width * scale / 2)) * 2)


def frames_at(timed: Iterable[tuple[float, Frame]], times: Iterable[float], hold_s: float | None = None) -> Iterator[Frame]:
    """For each target time of `times` (ascending, possibly endless), the source frame on screen then: the
    latest of `timed` ((time, frame), ascending) whose time is <= the target, the first frame for targets
    before it. Used by ingest (resampling a cut to a frame rate) and by decoding (a clip's T frames).

    Holds one frame back, and stops pulling source frames at the first one after the last target: no
    later frame can be on screen at a target time (decoding stops there too). After the last source
    frame, targets before its time + `hold_s` (how long it stays on screen) get it; `hold_s` None:
    every remaining target (padding a finite `times`). No source frame: nothing.
    """
    times = iter(times)
    target = next(times, None)
    previous, last_time = None, None
    for time, frame in timed:
        while target is not None and previous is not None and time > target + TIME_EPS:
            yield previous
            target = next(times, None)
        if target is None:
            return
        previous, last_time = frame, time
    while previous is not None and target is not None and (hold_s is None or target < last_time + hold_s - TIME_EPS):
        yield previous
        target = next(times, None)


def cut_video(
    url: str, start_s: float, end_s: float | None, *, fps: float | None, short_side: int | None,
    crf: int, preset: str, endpoint_url: str | None,
) -> bytes | None:
    """Re-encode the video frames of [start_s, end_s) as H.264 MP4; None when there is no video stream."""
    with open_media(url, endpoint_url) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        source_fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        if source_fps is None and fps is None:
            raise ClipError(f"{url}: the video stream has no frame rate; set a target fps")
        height, width = output_size(stream.codec_context.height, stream.codec_context.width, short_side)
        timed = (
            (time, frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
            for time, frame in frames_in_range(container, start_s, end_s)
        )
        if fps is None:
            images = (image for _, image in timed)
        else:
            # no frame is invented beyond the end of the source: the last one is held for one source frame
            targets = (start_s + k / fps for k in itertools.count())
            images = frames_at(timed, targets, hold_s=1.0 / (source_fps or fps))
        first = next(images, None)
        if first is None:
            raise EmptyClipError(f"{url}: no video frames in [{start_s}, {end_s}) s")
        return encode_video_mp4(itertools.chain([first], images), fps or source_fps, crf=crf, preset=preset)


def cut_audio(url: str, start_s: float, end_s: float | None, *, sample_rate: int, endpoint_url: str | None) -> np.ndarray | None:
    """Mono float32 samples of [start_s, end_s) at `sample_rate`; None when there is no audio stream.

    Audio that starts after `start_s` in its container is padded with leading silence so it
    stays in sync with the video cut from the same range.
    """
    with open_media(url, endpoint_url) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        if start_s > 0:
            container.seek(int(start_s * av.time_base), backward=True)
        chunks, first_time = [], None
        for frame in container.decode(stream):
            if first_time is None:
                first_time = frame.time or 0.0
            chunks.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
            if end_s is not None and frame.time is not None and frame.time > end_s:
                break
        chunks.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    if not chunks:
        return np.zeros(0, np.float32)
    wave = np.concatenate(chunks).astype(np.float32)  # [S], its first sample at first_time
    # Samples between start_s and the first decoded one: > 0 pads silence, < 0 skips samples.
    shift = int(round((first_time - start_s) * sample_rate))
    wave = np.concatenate([np.zeros(shift, np.float32), wave]) if shift > 0 else wave[-shift:]
    if end_s is not None:
        wave = wave[: int(round((end_s - start_s) * sample_rate))]
    return wave


def cut_clip(
    video_path_or_url: str,
    start_s: float | None,
    end_s: float | None,
    audio_path: str | None = None,
    *,
    sample_rate: int,
    fps: float | None,
    short_side: int | None,
    crf: int,
    preset: str,
    endpoint_url: str | None = None,
) -> tuple[bytes | None, bytes | None]:
    """(MP4 bytes, FLAC bytes) of [start_s, end_s) of a media file; the ingest building block.

    The audio comes from `audio_path` when given, else from the video file's own audio track;
    either part is None when its file has no such stream (a missing modality, SPEC Sec. 1).
    `start_s` None means 0, `end_s` None the end of the file. `fps` / `short_side` None keep the
    source frame rate / size. Raises FileNotFoundError (missing file), av.FFmpegError
    (undecodable), EmptyClipError (empty range, nothing inside it) or ClipError (no usable stream).
    """
    start = float(start_s or 0.0)
    if start < 0 or (end_s is not None and end_s <= start):
        raise EmptyClipError(f"zero-length or negative range: start_s={start_s}, end_s={end_s}")
    video = cut_video(
        video_path_or_url, start, end_s, fps=fps, short_side=short_side, crf=crf, preset=preset, endpoint_url=endpoint_url
    )
    audio_source = audio_path or video_path_or_url
    wave = cut_audio(audio_source, start, end_s, sample_rate=sample_rate, endpoint_url=endpoint_url)
    if wave is not None and wave.size == 0:
        if audio_path is not None or video is None:
            raise EmptyClipError(f"{audio_source}: no audio samples in [{start}, {end_s}) s")
        wave = None  # the video's own track simply does not cover the range: audio is missing
    if video is None and wave is None:
        raise ClipError(f"{video_path_or_url}: neither a video nor an audio stream")
    return video, None if wave is None else encode_audio_flac(wave, sample_rate)
