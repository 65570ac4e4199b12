"""Decode bombs: small files that declare huge frames, sample rates or channel counts are dropped
from their header (limits.max_frame_pixels, max_audio_sample_rate, max_audio_channels), and odd
sample rates resample without torchaudio's rate-ratio-sized kernel. Media encoded here with PyAV /
soundfile; the decoder is mmdist/data/decode.py with the limits of configs/data/default.yaml."""

import io

import av
import numpy as np
import pyarrow as pa
import pytest
import soundfile

from mmdist.data.decode import DecodeError, decode_audio, decode_video
from mmdist.data.pipeline import ClipDecoder, DropLedger
from mmdist.data.resample import resample
from mmdist.data.schema import CLIP_SCHEMA


def encode_blank_h264(width: int, height: int, frames: int) -> bytes:
    """H.264 MP4 of flat frames made directly as yuv420p planes (an RGB array of 8192 x 8192
    frames would cost 200 MB in the test itself)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8, options={"preset": "ultrafast", "crf": "30", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                np.frombuffer(memoryview(plane), np.uint8)[:] = 128
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def frame_bomb() -> bytes:
    """2 frames of 8192 x 8192: 0.2 MB of H.264."""
    return encode_blank_h264(8192, 8192, 2)


def wav_bytes(rate: int, channels: int) -> bytes:
    wav = io.BytesIO()
    soundfile.write(wav, np.zeros((rate // 100, channels), np.float32), rate, format="WAV", subtype="PCM_16")
    return wav.getvalue()


def with_limits(cfg: dict, **limits) -> dict:
    return {**cfg, "limits": {**cfg["limits"], **limits}}


def test_default_limits_admit_normal_media(data_cfg):
    assert data_cfg["limits"]["max_frame_pixels"] == 3840 * 2160
    clip = decode_video(encode_blank_h264(3840, 2160, 1), data_cfg, None)  # 4K UHD: at the limit
    assert clip.shape == (6, 24, 24, 3)
    studio = io.BytesIO()  # 192 kHz, 7.1 surround: at the limits
    soundfile.write(studio, np.full((19200, 8), 0.1, np.float32), 192000, format="WAV", subtype="PCM_16")
    _, mask = decode_audio(studio.getvalue(), data_cfg)
    assert mask.sum() == 10  # 0.1 s at a 10 ms hop


def test_huge_frames_are_dropped_from_the_header(data_cfg, frame_bomb):
    bomb = frame_bomb
    assert len(bomb) < 1_000_000  # a small file ...
    with pytest.raises(DecodeError) as err:
        decode_video(bomb, data_cfg, None)
    assert err.value.reason == "video_frame_too_large"
    assert "declared frame 8192x8192 = 67108864 pixels > limits.max_frame_pixels=8294400" in str(err.value)
    # ... that decodes when allowed: the limit, not damage, dropped it
    assert decode_video(bomb, with_limits(data_cfg, max_frame_pixels=8192 * 8192), None).shape == (6, 24, 24, 3)


def test_a_thin_frame_is_bounded_by_its_resize(data_cfg):
    # 2048 x 16 = 32768 pixels, but its short side scaled to video.resize=32 makes 4096 x 32 = 131072
    thin = encode_blank_h264(2048, 16, 2)
    with pytest.raises(DecodeError, match="resizes to 4096x32 > limits.max_frame_pixels=100000") as err:
        decode_video(thin, with_limits(data_cfg, max_frame_pixels=100_000), None)
    assert err.value.reason == "video_frame_too_large"
    assert decode_video(thin, with_limits(data_cfg, max_frame_pixels=131_072), None).shape == (6, 24, 24, 3)


@pytest.mark.parametrize(
    "rate, channels, reason, message",
    [
        (1_000_000, 1, "audio_rate_too_high", "declared 1000000 Hz > limits.max_audio_sample_rate=192000"),
        (48_000, 64, "audio_too_many_channels", "declared 64 channels > limits.max_audio_channels=8"),
    ],
)
def test_huge_audio_headers_are_dropped(data_cfg, rate, channels, reason, message):
    with pytest.raises(DecodeError, match=message) as err:
        decode_audio(wav_bytes(rate, channels), data_cfg)
    assert err.value.reason == reason


def test_the_pipeline_decoder_drops_and_counts_each_bomb(data_cfg, media, frame_bomb):
    normal_video = media.encode_mp4(media.grey_frames([40, 80, 120]), 4)
    normal_audio = media.encode_audio(media.sine(440, 0.5, 16000), 16000)
    rows = [
        ("normal", normal_video, normal_audio),
        ("frame-bomb", frame_bomb, normal_audio),
        ("rate-bomb", normal_video, wav_bytes(1_000_000, 1)),
        ("channel-bomb", None, wav_bytes(48_000, 64)),
    ]
    table = pa.Table.from_pylist(
        [{"clip_id": clip_id, "video": video, "audio": audio, "text": None} for clip_id, video, audio in rows],
        schema=CLIP_SCHEMA,
    )
    batch, drops = ClipDecoder(data_cfg, train=False, seed=0).decode_table(table)
    assert len(batch["video"]) == 1 and batch["has_audio"].all()  # the normal clip, unaffected
    ledger = DropLedger()  # what the pipeline's DecodeStats actor runs; jobs/check_data.py prints its counts
    ledger.record(drops)
    assert ledger.counts() == {"audio_rate_too_high": 1, "audio_too_many_channels": 1, "video_frame_too_large": 1}
    assert {clip_id for _, clip_id in drops} == {"frame-bomb", "rate-bomb", "channel-bomb"}


@pytest.mark.parametrize("source_rate", [8001, 44101, 65535])
def test_odd_rates_resample_to_the_analytic_tone(source_rate):
    # Co-prime rates would make torchaudio build a 16000 x source_rate kernel (2.6 GB at 8001 Hz);
    # the other resampler must still give the tone itself at 16 kHz.
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(source_rate) / source_rate)).astype(np.float32)  # 1 s
    out = resample(tone, source_rate, 16000)
    assert out.dtype == np.float32 and abs(len(out) - 16000) <= 2
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(out)) / 16000)
    np.testing.assert_allclose(out[100:-100], expected[100:-100], atol=1e-3)  # edges: the filter's ramp
