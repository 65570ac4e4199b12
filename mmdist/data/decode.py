"""Decoding of one clip's encoded media into fixed-shape arrays (SPEC Sec. 1, "Decoding").

Pure functions, usable without Ray; `mmdist.data.pipeline.ClipDecoder` applies them to
Ray Data batches. Every function takes the validated `data` config (configs/data/default.yaml).

A record whose media cannot be used raises `DecodeError` with a short, stable `reason`
(`video_corrupt`, `audio_too_long`, ...): the pipeline drops the record and counts the
reason. A null modality never reaches these functions: it is a missing modality, not an error.

Both modalities start at the clip's first sample, so video frames and spectrogram frames
stay aligned in time; training randomness is the spatial crop only.

torch / torchaudio are imported on the first audio decode, not with the module: processes that
only need the config checks or the pipeline's drop ledger (the DecodeStats actor) then start in
0.8 s of CPU and 130 MB instead of 3 s and 700 MB.
"""

from __future__ import annotations

import functools
import io
import math

import av
import numpy as np
import soundfile
from av.video.reformatter import Interpolation

from mmdist.config import ConfigError, check_section
from mmdist.config_schema.data import DataAudio, DataLimits, DataText, DataVideo
from mmdist.data.media import frames_at
from mmdist.data.resample import resample
from mmdist.data.shapes import audio_frame_count
from mmdist.data.text import check_text_config



class DecodeError(ValueError):
    """A record's media cannot be decoded; `reason` is the key it is counted under."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# ---------------------------------------------------------------- config


def check_decode_config(cfg: dict) -> None:
    """Keys (the config schema) and values of the sections decoding reads: `data.video`, `data.audio`,
    `data.text`, `data.limits`."""
    for section, schema in (("video", DataVideo), ("audio", DataAudio), ("text", DataText), ("limits", DataLimits)):
        check_section(cfg.get(section), schema, f"data.{section}")
    video, audio = cfg["video"], cfg["audio"]
    for key in ("num_frames", "fps", "size"):
        _require(video[key] > 0, f"data.video.{key} must be > 0, got {video[key]}")
    _require(
        video["resize"] >= video["size"],
        f"data.video.resize={video['resize']} must be >= data.video.size={video['size']}",
    )
    _require(video["threads"] >= 0, f"data.video.threads must be >= 0 (0 = FFmpeg's choice), got {video['threads']}")
    _require(
        video["interpolation"].upper() in Interpolation.__members__,
        f"data.video.interpolation={video['interpolation']!r} is not one of {sorted(Interpolation.__members__)}",
    )
    for key in ("window_ms", "hop_ms"):
        samples = audio[key] * audio["sample_rate"] / 1000
        _require(
            samples >= 1 and samples == round(samples),
            f"data.audio.{key}={audio[key]} is {samples} samples at {audio['sample_rate']} Hz, not a whole number >= 1",
        )
    for key in ("sample_rate", "n_mels", "max_seconds", "log_floor"):
        _require(audio[key] > 0, f"data.audio.{key} must be > 0, got {audio[key]}")
    for key, value in cfg["limits"].items():
        _require(value > 0, f"data.limits.{key} must be > 0, got {value}")
    check_text_config(cfg["text"])


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# ---------------------------------------------------------------- video


def decode_video(data: bytes, cfg: dict, rng: np.random.Generator | None) -> np.ndarray:
    """Decode an encoded clip to `uint8 [T, H, W, 3]` RGB frames.

    T = `video.num_frames` frames at `video.fps` from the clip start: frame k is the frame
    on screen at time k / fps; a clip shorter than T / fps repeats its last frame. Each
    frame's short side is resized to `video.resize`, then a `video.size` square is cropped:
    at a position drawn from `rng` (training), or centred when `rng` is None (evaluation);
    one crop for the whole clip. Limits: `limits.max_video_bytes`, `max_duration_s`, `max_frames`,
    `max_frame_pixels`.
    """
    video_cfg, limits = cfg["video"], cfg["limits"]
    if len(data) > limits["max_video_bytes"]:
        raise DecodeError("video_too_large", f"{len(data)} bytes > limits.max_video_bytes={limits['max_video_bytes']}")
    if not data:
        raise DecodeError("video_empty", "0 bytes")
    times = [k / video_cfg["fps"] for k in range(video_cfg["num_frames"])]
    # FFmpeg's own bound on a picture (width x height): av.open decodes frames to probe the stream,
    # and there a 0.2 MB file declaring 8192 x 8192 frames took 130 MB before any frame was asked
    # for. With the bound, the probe and the decoder refuse larger pictures; the header check names why.
    frame_bound = {"max_pixels": str(limits["max_frame_pixels"])}
    try:
        with av.open(io.BytesIO(data), mode="r", options=frame_bound) as container:
            if not container.streams.video:
                raise DecodeError("video_corrupt", "no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = video_cfg["threads"]
            stream.codec_context.options = frame_bound
            _check_video_header(container, stream, video_cfg, limits)
            frames = _frames_at(_decode_with_limits(container, stream, video_cfg, limits), times)  # T av.VideoFrame
            return _resize_and_crop(frames, video_cfg, rng)  # [T, size, size, 3]
    except DecodeError:
        raise
    except Exception as err:  # PyAV/FFmpeg raise many types on bad bytes (InvalidDataError, IndexError, ...)
        raise DecodeError("video_corrupt", f"{type(err).__name__}: {err}") from err


def _check_video_header(container, stream, video_cfg: dict, limits: dict) -> None:
    """Reject a clip by its declared length and frame size before decoding it (a header can lie:
    decoding checks again)."""
    _check_frame_size(stream.codec_context.height, stream.codec_context.width, video_cfg, limits, "declared frame")
    seconds = None if container.duration is None else container.duration / av.time_base
    if seconds is not None and seconds > limits["max_duration_s"]:
        message = f"declared {seconds:.2f} s > limits.max_duration_s={limits['max_duration_s']}"
        raise DecodeError("video_too_long", message)
    if stream.frames and stream.frames > limits["max_frames"]:
        message = f"declared {stream.frames} frames > limits.max_frames={limits['max_frames']}"
        raise DecodeError("video_too_many_frames", message)


def _check_frame_size(height: int, width: int, video_cfg: dict, limits: dict, what: str) -> None:
    """A frame and its resize (short side to `video.resize`) both hold at most `limits.max_frame_pixels`
    pixels: a 64k x 2 frame is small, but its resize to a 64 pixel short side is 2M x 64 pixels."""
    if height <= 0 or width <= 0:  # unknown until decoded: the decoder's own bound applies
        return
    bound = limits["max_frame_pixels"]
    if height * width > bound:
        message = f"{what} {width}x{height} = {height * width} pixels > limits.max_frame_pixels={bound}"
        raise DecodeError("video_frame_too_large", message)
    resized_height, resized_width = resized_shape(height, width, video_cfg["resize"])
    if resized_height * resized_width > bound:
        message = f"{what} {width}x{height} resizes to {resized_width}x{resized_height} > limits.max_frame_pixels={bound}"
        raise DecodeError("video_frame_too_large", message)


def _decode_with_limits(container, stream, video_cfg: dict, limits: dict):
    """Yield (seconds since the first frame, frame) for every frame, enforcing the limits while decoding."""
    first_time = None
    for index, frame in enumerate(container.decode(stream)):
        if index >= limits["max_frames"]:
            raise DecodeError("video_too_many_frames", f"more than limits.max_frames={limits['max_frames']} frames")
        _check_frame_size(frame.height, frame.width, video_cfg, limits, f"decoded frame {index}")
        time = _frame_time(frame, index, stream)
        first_time = time if first_time is None else first_time
        if time - first_time > limits["max_duration_s"]:
            raise DecodeError("video_too_long", f"a frame at {time - first_time:.2f} s > limits.max_duration_s")
        yield time - first_time, frame


def _frame_time(frame, index: int, stream) -> float:
    """Presentation time in seconds; from the stream's frame rate when the container has no timestamps."""
    if frame.time is not None:
        return frame.time
    if stream.average_rate:
        return index / float(stream.average_rate)
    raise DecodeError("video_corrupt", f"frame {index} has no timestamp and the stream no frame rate")


def _frames_at(timed_frames, times: list[float]) -> list:
    """For each target time, the frame on screen then (`mmdist.data.media.frames_at`); targets after the
    last frame get the last frame (padding). Decoding stops at the first frame after the last target: the
    rest of a 10 s source cost 4x the frames a 2 s window needs (jobs/benchmark.py suite=data). The decode
    limits then apply to what was decoded."""
    chosen = list(frames_at(timed_frames, times))
    if not chosen:
        raise DecodeError("video_empty", "the video stream has no frame")
    return chosen


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to `short_side`, keeping the aspect ratio."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def crop_origin(height: int, width: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """Top-left corner of the `size` square: uniform over valid positions, or centred without rng."""
    if rng is None:
        return (height - size) // 2, (width - size) // 2
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def _resize_and_crop(frames: list, video_cfg: dict, rng: np.random.Generator | None) -> np.ndarray:
    """Convert the chosen frames to RGB at the resized shape (swscale), then crop one square for all."""
    height, width = resized_shape(frames[0].height, frames[0].width, video_cfg["resize"])
    top, left = crop_origin(height, width, video_cfg["size"], rng)
    size = video_cfg["size"]
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)  # [T, size, size, 3]
    converted = {}  # a padded clip repeats one frame: convert it once
    for k, frame in enumerate(frames):
        if id(frame) not in converted:
            rgb = frame.to_ndarray(
                width=width,
                height=height,
                format="rgb24",
                interpolation=video_cfg["interpolation"].upper(),
                threads=video_cfg["threads"],
            )  # [height, width, 3]
            converted[id(frame)] = rgb[top : top + size, left : left + size]
        out[k] = converted[id(frame)]
    return out


# ---------------------------------------------------------------- audio


def decode_audio(data: bytes, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Decode FLAC/WAV bytes to a log-mel spectrogram `float32 [n_mels, F]` and `frame_mask bool [F]`.

    Mono (channel mean), resampled to `audio.sample_rate`, the first `audio.max_seconds`
    kept; torchaudio MelSpectrogram with a `window_ms` window and `hop_ms` hop (25 ms / 10 ms:
    SPEC Sec. 1), power 2, then log(max(mel, log_floor)). Frames past the end of a shorter
    clip are zeros with frame_mask False. Limits: `limits.max_audio_bytes`, `max_duration_s`,
    `max_audio_sample_rate`, `max_audio_channels`.
    """
    audio_cfg, limits = cfg["audio"], cfg["limits"]
    if len(data) > limits["max_audio_bytes"]:
        raise DecodeError("audio_too_large", f"{len(data)} bytes > limits.max_audio_bytes={limits['max_audio_bytes']}")
    if not data:
        raise DecodeError("audio_empty", "0 bytes")
    import torch

    wave, source_rate = _read_wave(data, audio_cfg["max_seconds"], limits)  # [n]
    wave = torch.from_numpy(resample(wave, source_rate, audio_cfg["sample_rate"]))
    wave = wave[: round(audio_cfg["max_seconds"] * audio_cfg["sample_rate"])]
    hop = _samples(audio_cfg["hop_ms"], audio_cfg["sample_rate"])
    window = _samples(audio_cfg["window_ms"], audio_cfg["sample_rate"])
    num_samples = wave.shape[0]
    # MelSpectrogram reflect-pads half a window on each side: a shorter clip needs zeros first.
    wave = torch.nn.functional.pad(wave, (0, max(0, window - num_samples)))
    mel = _mel_transform(audio_cfg["sample_rate"], window, hop, audio_cfg["n_mels"])(wave)  # [n_mels, 1 + n // hop]
    log_mel = torch.log(torch.clamp(mel, min=audio_cfg["log_floor"])).numpy()
    num_frames = audio_frame_count(cfg)
    valid = min(num_frames, math.ceil(num_samples / hop))  # frames centred on a real sample
    spectrogram = np.zeros((audio_cfg["n_mels"], num_frames), dtype=np.float32)  # [n_mels, F]
    spectrogram[:, :valid] = log_mel[:, :valid]
    frame_mask = np.zeros(num_frames, dtype=bool)  # [F]
    frame_mask[:valid] = True
    return spectrogram, frame_mask


def _read_wave(data: bytes, max_seconds: float, limits: dict) -> tuple[np.ndarray, int]:
    """Mono float32 samples of the first `max_seconds` (at the file's rate) and that rate.

    The header's rate and channels are checked before reading: the read buffer is
    max_seconds x rate x channels floats (a WAV can declare a 1 MHz rate and 1024 channels)."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            _check_audio_header(sound.samplerate, sound.channels, limits)
            duration = sound.frames / sound.samplerate
            if duration > limits["max_duration_s"]:
                raise DecodeError("audio_too_long", f"{duration:.2f} s > limits.max_duration_s={limits['max_duration_s']}")
            wave = sound.read(math.ceil(max_seconds * sound.samplerate), dtype="float32", always_2d=True)  # [n, C]
            rate = sound.samplerate
    except DecodeError:
        raise
    except Exception as err:  # libsndfile: unknown format, lost sync, truncated header ...
        raise DecodeError("audio_corrupt", f"{type(err).__name__}: {err}") from err
    if wave.shape[0] == 0:
        raise DecodeError("audio_empty", "no samples")
    if not np.isfinite(wave).all():
        raise DecodeError("audio_corrupt", "non-finite samples")
    return np.ascontiguousarray(wave.mean(axis=1)), rate  # [n]


def _check_audio_header(sample_rate: int, channels: int, limits: dict) -> None:
    if sample_rate > limits["max_audio_sample_rate"]:
        message = f"declared {sample_rate} Hz > limits.max_audio_sample_rate={limits['max_audio_sample_rate']}"
        raise DecodeError("audio_rate_too_high", message)
    if channels > limits["max_audio_channels"]:
        message = f"declared {channels} channels > limits.max_audio_channels={limits['max_audio_channels']}"
        raise DecodeError("audio_too_many_channels", message)


def _samples(milliseconds: float, sample_rate: int) -> int:
    return round(milliseconds * sample_rate / 1000)


@functools.lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, window: int, hop: int, n_mels: int):
    """torchaudio's MelSpectrogram, built once per setting: its filterbank costs more than one clip's spectrogram."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=window, win_length=window, hop_length=hop, n_mels=n_mels, power=2.0
    )
