"""Per-record decoding (mmdist/data/decode.py) on media encoded here with PyAV / soundfile.

Each numeric check names what it compares against: frame indices worked out from the
timestamps, a plain PyAV full-frame decode cropped by hand, a numpy log-mel spectrogram.
"""

import io
import math

import av
import numpy as np
import pytest
import torch

from mmdist.config import ConfigError
from mmdist.data.shapes import audio_frame_count
from mmdist.data.decode import (
    DecodeError,
    check_decode_config,
    crop_origin,
    decode_audio,
    decode_video,
    resized_shape,
)

torch.set_num_threads(1)


def full_frames(data: bytes) -> list[np.ndarray]:
    """Every frame as RGB at full size: the reference the decoder's output is cut from."""
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# ---------------------------------------------------------------- video: which frames


@pytest.mark.parametrize("source_fps, num_source, fps, num_frames", [(10, 20, 4, 6), (25, 30, 8, 6), (6, 12, 8, 6)])
def test_samples_the_frame_on_screen_at_each_time(data_cfg, media, source_fps, num_source, fps, num_frames):
    data_cfg["video"].update(fps=fps, num_frames=num_frames)
    levels = [10 + 8 * k for k in range(num_source)]
    clip = decode_video(media.encode_mp4(media.grey_frames(levels), source_fps), data_cfg, None)
    # Frame k shows source frame floor(k / fps * source_fps), counted by hand from the timestamps.
    expected = [levels[math.floor(k / fps * source_fps + 1e-9)] for k in range(num_frames)]
    assert clip.shape == (num_frames, 24, 24, 3) and clip.dtype == np.uint8
    np.testing.assert_allclose(clip.reshape(num_frames, -1).mean(axis=1), expected, atol=2)


def test_short_clip_repeats_its_last_frame(data_cfg, media):
    levels = [30, 60, 90, 120, 150]  # 5 frames at 10 fps: 0.5 s, T = 6 at 4 fps needs 1.25 s
    clip = decode_video(media.encode_mp4(media.grey_frames(levels), 10), data_cfg, None)
    expected = [30, 90, 150, 150, 150, 150]  # t = 0 -> frame 0, .25 -> frame 2, then past the last one (0.4 s)
    np.testing.assert_allclose(clip.reshape(6, -1).mean(axis=1), expected, atol=2)


def test_single_frame_video_fills_every_slot(data_cfg, media):
    clip = decode_video(media.encode_mp4(media.grey_frames([77]), 10), data_cfg, None)
    np.testing.assert_allclose(clip.reshape(6, -1).mean(axis=1), [77] * 6, atol=2)


def test_frame_selection_stops_decoding_after_the_last_target():
    """Targets 0, 0.25, 0.5 s over a 10 fps source (frames at 0.1 k s): frames 0, 2 and 5 are on screen
    then, and frame 6 (0.6 s) is the first that proves target 0.5 s is settled: nothing after it is pulled."""
    from mmdist.data.decode import _frames_at

    pulled = []

    def source():  # (time, frame) of a 10 s clip, recording what the selection asks for
        for k in range(100):
            pulled.append(k)
            yield k / 10, f"frame {k}"

    assert _frames_at(source(), [0.0, 0.25, 0.5]) == ["frame 0", "frame 2", "frame 5"]
    assert pulled == list(range(7))


def test_frames_at_holds_the_last_frame_for_hold_s_only():
    """Ingest's resampling (mmdist.data.media.frames_at with hold_s): 3 frames at 0, 0.1, 0.2 s shown
    for 0.1 s each, resampled at 20 fps: targets up to 0.25 s exist, none is invented after."""
    from mmdist.data.media import frames_at

    timed = [(0.0, "a"), (0.1, "b"), (0.2, "c")]
    targets = [k / 20 for k in range(10)]
    assert list(frames_at(iter(timed), targets, hold_s=0.1)) == ["a", "a", "b", "b", "c", "c"]
    assert list(frames_at(iter(timed), targets)) == ["a", "a", "b", "b"] + ["c"] * 6  # no hold: pads every target
    assert list(frames_at(iter([(0.3, "late")]), [0.0, 0.1], hold_s=0.1)) == ["late", "late"]  # before the first frame
    assert list(frames_at(iter([]), [0.0])) == []


# ---------------------------------------------------------------- video: resize and crop


def test_resized_shape_keeps_aspect_and_scales_short_side():
    assert resized_shape(48, 64, 32) == (32, 43)  # 64 * 32 / 48 = 42.67
    assert resized_shape(64, 48, 32) == (43, 32)
    assert resized_shape(100, 100, 32) == (32, 32)


def test_centre_crop_equals_a_hand_cropped_full_decode(data_cfg, media):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, 48, 64, 3), dtype=np.uint8)
    data = media.encode_mp4(frames, 4)
    data_cfg["video"].update(resize=48, size=32)  # no scaling: the crop alone is under test
    clip = decode_video(data, data_cfg, None)
    reference = full_frames(data)[:6]  # fps equal to the source's: frames 0..5
    top, left = (48 - 32) // 2, (64 - 32) // 2
    np.testing.assert_array_equal(clip, np.stack([f[top : top + 32, left : left + 32] for f in reference]))


def test_random_crop_is_the_drawn_window_and_varies(data_cfg, media):
    frames = np.random.default_rng(1).integers(0, 256, size=(8, 48, 64, 3), dtype=np.uint8)
    data = media.encode_mp4(frames, 4)
    data_cfg["video"].update(resize=48, size=32)
    reference = np.stack(full_frames(data)[:6])
    origins = set()
    for seed in range(8):
        clip = decode_video(data, data_cfg, np.random.default_rng(seed))
        top, left = crop_origin(48, 64, 32, np.random.default_rng(seed))  # the same draw, replayed
        assert 0 <= top <= 16 and 0 <= left <= 32
        np.testing.assert_array_equal(clip, reference[:, top : top + 32, left : left + 32])
        origins.add((top, left))
    assert len(origins) > 1


def test_resize_keeps_the_picture(data_cfg, media):
    # Left half red, right half blue, 48 x 96: short side 48 -> 32 gives 32 x 64, centre crop 24 starts at x = 20.
    frame = np.zeros((48, 96, 3), np.uint8)
    frame[:, :48, 0] = 255
    frame[:, 48:, 2] = 255
    clip = decode_video(media.encode_mp4(np.stack([frame] * 4), 4), data_cfg, None)
    assert clip.shape == (6, 24, 24, 3)
    left, right = clip[:, :, :8].astype(float), clip[:, :, -8:].astype(float)  # x 20..27 red side, 36..43 blue side
    assert left[..., 0].mean() > 200 and left[..., 2].mean() < 50
    assert right[..., 2].mean() > 200 and right[..., 0].mean() < 50


# ---------------------------------------------------------------- video: bad input


def test_corrupt_video_raises_with_a_reason(data_cfg, media):
    data = media.encode_mp4(media.grey_frames([10 * k for k in range(12)]), 10)
    for cut in (0.1, 0.5, 0.9):
        with pytest.raises(DecodeError) as err:
            decode_video(data[: int(len(data) * cut)], data_cfg, None)
        assert err.value.reason == "video_corrupt"
    with pytest.raises(DecodeError, match="video_corrupt"):
        decode_video(np.random.default_rng(0).bytes(5000), data_cfg, None)
    with pytest.raises(DecodeError, match="video_empty"):
        decode_video(b"", data_cfg, None)


def test_audio_only_container_is_not_a_video(data_cfg, media):
    with pytest.raises(DecodeError, match="no video stream"):
        decode_video(media.encode_audio(media.sine(440, 0.5, 16000), 16000, "WAV"), data_cfg, None)


def test_video_limits(data_cfg, media):
    data = media.encode_mp4(media.grey_frames([10 * k for k in range(20)]), 10)  # 2 s, 20 frames
    limits = data_cfg["limits"]
    with pytest.raises(DecodeError, match="video_too_large"):
        decode_video(data, {**data_cfg, "limits": {**limits, "max_video_bytes": len(data) - 1}}, None)
    with pytest.raises(DecodeError, match="video_too_long"):
        decode_video(data, {**data_cfg, "limits": {**limits, "max_duration_s": 1.5}}, None)
    with pytest.raises(DecodeError, match="video_too_many_frames"):
        decode_video(data, {**data_cfg, "limits": {**limits, "max_frames": 19}}, None)
    at_the_limits = {**data_cfg, "limits": {**limits, "max_frames": 20, "max_duration_s": 2.0}}
    assert decode_video(data, at_the_limits, None).shape[0] == 6


# ---------------------------------------------------------------- audio


def numpy_log_mel(wave: np.ndarray, sample_rate: int, n_mels: int, window: int, hop: int, floor: float) -> np.ndarray:
    """Reference log-mel: periodic Hann, centred frames (reflect padding), |rfft|^2, HTK mel triangles."""
    padded = np.pad(wave.astype(np.float64), window // 2, mode="reflect")
    count = 1 + (len(padded) - window) // hop
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    frames = np.stack([padded[i * hop : i * hop + window] * hann for i in range(count)])  # [F, window]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [F, window/2 + 1]
    hz_to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    mel_to_hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, window // 2 + 1)
    up = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    down = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    filters = np.maximum(0, np.minimum(up, down))  # [n_mels, window/2 + 1]
    return np.log(np.maximum(filters @ power.T, floor))  # [n_mels, F]


def test_log_mel_matches_a_numpy_reference(data_cfg, media):
    sample_rate = 16000
    wave = media.sine(1000, 1.0, sample_rate) + 0.1 * np.random.default_rng(0).standard_normal(sample_rate).astype(np.float32)
    data = media.encode_audio(np.clip(wave, -1, 1), sample_rate, "WAV")
    spectrogram, mask = decode_audio(data, data_cfg)
    pcm = np.round(np.clip(wave, -1, 1) * 32767) / 32768  # what 16-bit WAV stores
    reference = numpy_log_mel(pcm, sample_rate, 40, window=400, hop=160, floor=1e-6)
    assert spectrogram.shape == (40, 100) and spectrogram.dtype == np.float32
    assert mask.all()  # 1 s at a 10 ms hop fills F = 100 frames
    # float32 STFT vs float64: the quietest (lowest) band differs by up to ~5e-3 in log power.
    np.testing.assert_allclose(spectrogram, reference[:, :100], atol=1e-2)
    band_of_1khz = np.argmax(reference.mean(axis=1))
    assert np.argmax(spectrogram.mean(axis=1)) == band_of_1khz


def test_short_audio_is_padded_and_masked(data_cfg, media):
    spectrogram, mask = decode_audio(media.encode_audio(media.sine(500, 0.333, 16000), 16000), data_cfg)
    valid = math.ceil(round(0.333 * 16000) / 160)  # 34 frames are centred on a real sample
    assert audio_frame_count(data_cfg) == 100
    assert mask[:valid].all() and not mask[valid:].any()
    assert (spectrogram[:, valid:] == 0).all() and (spectrogram[:, :valid] != 0).all()


def test_tiny_audio_shorter_than_a_window(data_cfg, media):
    spectrogram, mask = decode_audio(media.encode_audio(media.sine(500, 0.005, 16000), 16000, "WAV"), data_cfg)
    assert mask.sum() == 1 and np.isfinite(spectrogram).all()


def test_long_audio_keeps_the_first_window(data_cfg, media):
    wave = media.sine(700, 3.0, 16000) * np.linspace(0.1, 1, 48000, dtype=np.float32)
    long, _ = decode_audio(media.encode_audio(wave, 16000), data_cfg)
    first_second, _ = decode_audio(media.encode_audio(wave[:16000], 16000), data_cfg)
    # Only the last frame differs: its window sees samples past 1 s in the long clip, reflection in the short one.
    np.testing.assert_allclose(long[:, :-1], first_second[:, :-1], atol=1e-5)


@pytest.mark.parametrize("rate", [8000, 8001])  # 8001: an odd rate, resampled by swresample (mmdist/data/resample.py)
def test_other_rates_and_stereo_are_converted(data_cfg, media, rate):
    reference, _ = decode_audio(media.encode_audio(media.sine(1000, 1.0, 16000), 16000), data_cfg)
    resampled, mask = decode_audio(media.encode_audio(media.sine(1000, 1.0, rate), rate), data_cfg)
    assert mask.all()
    loud = reference > reference.max() - 3  # the tone's bands, not window leakage or the resampler's filter
    np.testing.assert_allclose(resampled[loud], reference[loud], atol=0.1)
    stereo = np.stack([media.sine(1000, 1.0, 16000), np.zeros(16000, np.float32)], axis=1)
    mixed, _ = decode_audio(media.encode_audio(stereo, 16000), data_cfg)
    # Channel mean halves the amplitude: power drops by 4, log power by log 4.
    np.testing.assert_allclose(mixed[loud], reference[loud] - np.log(4), atol=0.05)


def test_bad_audio_raises_with_a_reason(data_cfg, media):
    flac = media.encode_audio(media.sine(440, 1.0, 16000), 16000)
    cases = {
        "audio_corrupt": [b"not audio at all" * 100, flac[:30], flac[: len(flac) // 2]],
        "audio_empty": [b"", media.encode_audio(np.zeros(0, np.float32), 16000, "WAV")],
    }
    for reason, blobs in cases.items():
        for blob in blobs:
            with pytest.raises(DecodeError) as err:
                decode_audio(blob, data_cfg)
            assert err.value.reason == reason, blob[:20]
    limits = data_cfg["limits"]
    with pytest.raises(DecodeError, match="audio_too_large"):
        decode_audio(flac, {**data_cfg, "limits": {**limits, "max_audio_bytes": 100}})
    with pytest.raises(DecodeError, match="audio_too_long"):
        decode_audio(flac, {**data_cfg, "limits": {**limits, "max_duration_s": 0.5}})


# ---------------------------------------------------------------- config


def test_config_errors_name_the_key(data_cfg):
    check_decode_config(data_cfg)
    bad = {**data_cfg, "video": {k: v for k, v in data_cfg["video"].items() if k != "fps"}}
    with pytest.raises(ConfigError, match=r"data\.video\.fps: missing key"):
        check_decode_config(bad)
    with pytest.raises(ConfigError, match=r"data\.audio\.nmels: unknown key"):
        check_decode_config({**data_cfg, "audio": {**data_cfg["audio"], "nmels": 40}})
    with pytest.raises(ConfigError, match=r"data\.video\.num_frames: must be int, got True"):
        check_decode_config({**data_cfg, "video": {**data_cfg["video"], "num_frames": True}})
    with pytest.raises(ValueError, match=r"data\.video\.resize"):
        check_decode_config({**data_cfg, "video": {**data_cfg["video"], "resize": 16}})
    with pytest.raises(ValueError, match=r"data\.audio\.hop_ms"):
        check_decode_config({**data_cfg, "audio": {**data_cfg["audio"], "hop_ms": 10.01}})
    with pytest.raises(ValueError, match=r"data\.video\.interpolation"):
        check_decode_config({**data_cfg, "video": {**data_cfg["video"], "interpolation": "smooth"}})
