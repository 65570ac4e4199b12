"""Ingest: a manifest of user clips -> shards, with every good entry written and every bad one
listed with its reason. Media are made here with PyAV / soundfile directly, so the cut is
checked against what was put in, not against mmdist's own encoder."""

import io
import json
import os
import subprocess
import sys

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from mmdist.data.ingest import SUMMARY_FILE, ingest, parse_manifest
from mmdist.data.storage import list_shards, read_shard, resolve_filesystem, write_bytes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FPS, LEVEL_STEP, SOURCE_S = 10, 6, 4
TRACK_RATE, RATE = 44100, 16000


def write_source_mp4(path, with_audio=True, seconds=SOURCE_S):
    """H.264 at 10 fps where frame k is grey level 6 k; AAC stereo silent before 2 s, a 440 Hz tone after."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = 96, 72, "yuv420p"
        if with_audio:
            audio = container.add_stream("aac", rate=TRACK_RATE, layout="stereo")
        for k in range(seconds * FPS):
            frame = av.VideoFrame.from_ndarray(np.full((72, 96, 3), LEVEL_STEP * k, np.uint8), format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if with_audio:
            t = np.arange(seconds * TRACK_RATE) / TRACK_RATE
            wave = np.where(t >= 2.0, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
            for start in range(0, len(wave), 1024):
                chunk = np.ascontiguousarray(np.stack([wave[start:start + 1024]] * 2))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = TRACK_RATE, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))


def ramp(seconds=5):
    """A mono wave whose sample n is a known function of n: any shift in the cut shows."""
    n = np.arange(seconds * RATE)
    return (0.9 * ((n % 4000) / 4000.0) - 0.45).astype(np.float32)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    write_source_mp4(folder / "source.mp4")
    write_source_mp4(folder / "silent.mp4", with_audio=False, seconds=1)
    soundfile.write(folder / "ramp.wav", ramp(), RATE, subtype="PCM_16")
    (folder / "corrupt.mp4").write_bytes(os.urandom(4096))
    return folder


def manifest_lines(media_dir):
    labels = {"action": "wave hand", "verb": "wave", "noun": "hand", "sounding": True, "region": 1}
    return [
        json.dumps({"video": "source.mp4", "start_s": 1.0, "end_s": 3.0, "text": "C waves", "labels": labels}),
        json.dumps({"video": "source.mp4", "audio": "ramp.wav", "start_s": 1.0, "end_s": 2.5,
                    "text": ["own", "neighbour"], "clip_id": "with-audio", "source_id": "session-1"}),
        json.dumps({"video": "silent.mp4"}),
        json.dumps({"video": "missing.mp4", "start_s": 0, "end_s": 1}),
        json.dumps({"video": "corrupt.mp4", "end_s": 1}),
        json.dumps({"video": "source.mp4", "start_s": 2.0, "end_s": 2.0}),
        json.dumps({"video": "source.mp4", "start_s": 10.0, "end_s": 12.0}),
        "{not json",
        json.dumps({"video": "source.mp4", "captions": "x"}),
        json.dumps({"video": "source.mp4", "clip_id": "with-audio"}),
        json.dumps({"video": "source.mp4", "labels": {"colour": "red"}}),
        "",
        json.dumps({"video": str(media_dir / "source.mp4"), "start_s": 0, "end_s": 1, "clip_id": "absolute"}),
    ]


@pytest.fixture
def ingest_cfg(job_cfg):
    return job_cfg("ingest")


def decode_frames(data):
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def frame_indices(frames):
    """Which source frame each decoded frame shows (grey level / step)."""
    return [int(round(f.mean() / LEVEL_STEP)) for f in frames]


def run_ingest(media_dir, cfg, out, **overrides):
    manifest = media_dir / "clips.jsonl"
    manifest.write_text("\n".join(manifest_lines(media_dir)) + "\n")
    cfg.update(rows_per_shard=4, skip_invalid_entries=True, **overrides)  # the manifest's invalid lines are listed
    return ingest(str(manifest), str(out), cfg)


def test_good_entries_written_and_bad_ones_listed_with_reasons(media_dir, tmp_path, ingest_cfg):
    summary = run_ingest(media_dir, ingest_cfg, tmp_path / "out")
    bad = {b.line: (b.kind, b.reason) for b in summary.bad}
    assert sorted(bad) == [4, 5, 6, 7, 8, 9, 10, 11]
    assert bad[4][0] == "missing file" and "missing.mp4" in bad[4][1]
    assert bad[5][0] == "undecodable"
    assert bad[6][0] == "zero length" and "start_s=2.0, end_s=2.0" in bad[6][1]
    assert bad[7][0] == "zero length" and "no video frames" in bad[7][1]
    assert bad[8][0] == "invalid entry" and "not valid JSON" in bad[8][1]
    assert bad[9][0] == "invalid entry" and "'captions'" in bad[9][1]
    assert bad[10] == ("invalid entry", "duplicate clip_id")
    assert bad[11][0] == "invalid entry" and "'colour'" in bad[11][1]
    assert (summary.entries, summary.written) == (12, 4)
    # manifest entries 1-4 -> part 0 (3 good), 5-7 + 13 -> part 1 (1 good)
    assert [os.path.basename(s) for s in summary.shards] == ["part-00000.parquet", "part-00001.parquet"]
    on_disk = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert on_disk["written"] == 4 and [b["line"] for b in on_disk["bad"]] == sorted(bad)
    assert "line 5 (corrupt:0-1): undecodable" in summary.format() and "line 8 (?): invalid entry" in summary.format()

    rows = {r["clip_id"]: r for r in pq.read_table(str(tmp_path / "out")).to_pylist()}
    assert sorted(rows) == ["absolute", "silent:0-end", "source:1-3", "with-audio"]

    clip = rows["source:1-3"]
    assert (clip["source_id"], clip["start_s"], clip["end_s"]) == ("source", 1.0, 3.0)
    assert clip["text"] == ["C waves"] and clip["labels"]["verb"] == "wave" and clip["labels"]["region"] == 1
    frames = decode_frames(clip["video"])
    assert frames.shape == (20, 72, 96, 3)
    assert frame_indices(frames) == list(range(10, 30))
    # the video's own track: silent for the first second of the clip, the tone for the second
    wave, rate = soundfile.read(io.BytesIO(clip["audio"]), dtype="float32")
    assert rate == RATE and wave.shape == (2 * RATE,)
    onset = np.argmax(np.abs(wave) > 0.1) / RATE
    assert abs(onset - 1.0) < 0.03
    assert np.abs(wave[: int(0.95 * RATE)]).max() < 0.02 and np.sqrt(np.mean(wave[RATE + 800:] ** 2)) > 0.3

    clip = rows["with-audio"]
    assert (clip["source_id"], clip["text"], clip["labels"]) == ("session-1", ["own", "neighbour"], None)
    assert frame_indices(decode_frames(clip["video"])) == list(range(10, 25))
    wave, _ = soundfile.read(io.BytesIO(clip["audio"]), dtype="float32")
    np.testing.assert_allclose(wave, ramp()[RATE: int(2.5 * RATE)], atol=2 / 32768)  # sample-exact cut

    clip = rows["silent:0-end"]  # no audio track: audio is missing, not an error; end from the file
    assert clip["audio"] is None and clip["text"] is None and (clip["start_s"], clip["end_s"]) == (0.0, 1.0)
    assert len(decode_frames(clip["video"])) == 10
    assert frame_indices(decode_frames(rows["absolute"]["video"])) == list(range(0, 10))


def test_frame_rate_and_size_follow_the_config(media_dir, tmp_path, ingest_cfg):
    ingest_cfg["video"].update(fps=5, short_side=36)
    ingest_cfg["audio"]["sample_rate"] = 8000
    run_ingest(media_dir, ingest_cfg, tmp_path / "out")
    rows = {r["clip_id"]: r for r in pq.read_table(str(tmp_path / "out")).to_pylist()}
    frames = decode_frames(rows["source:1-3"]["video"])
    # 5 fps from 1.0 s: source frames at 1.0, 1.2, ... 2.8 s; 72x96 scaled to a short side of 36
    assert frames.shape == (10, 36, 48, 3) and frame_indices(frames) == list(range(10, 30, 2))
    wave, rate = soundfile.read(io.BytesIO(rows["source:1-3"]["audio"]))
    assert (rate, wave.shape) == (8000, (16000,))


def test_manifest_paths_resolve_relative_to_the_manifest():
    entries, bad = parse_manifest('{"video": "a/b.mp4"}\n{"video": "s3://x/y.mp4", "text": []}\n', "s3://bucket/in")
    assert bad == []
    assert [e.video for e in entries] == ["s3://bucket/in/a/b.mp4", "s3://x/y.mp4"]
    assert entries[0].source_id == "b" and entries[1].text is None


def test_job_ingests_from_s3_to_s3_the_same_clips_as_locally(media_dir, tmp_path, s3_env, ingest_cfg):
    """`jobs/ingest.py` with manifest and media on the S3 server, endpoint from AWS_ENDPOINT_URL."""
    lines = [line for line in manifest_lines(media_dir) if "absolute" not in line]
    for name in ("source.mp4", "silent.mp4", "ramp.wav", "corrupt.mp4"):
        write_bytes(f"{s3_env}/in/{name}", (media_dir / name).read_bytes())
    write_bytes(f"{s3_env}/in/clips.jsonl", "\n".join(lines).encode())
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "jobs", "ingest.py"), f"manifest={s3_env}/in/clips.jsonl",
         f"out={s3_env}/out", "rows_per_shard=4", "skip_invalid_entries=true"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3/11 clips" in result.stdout and "missing file" in result.stdout
    fs, _ = resolve_filesystem(s3_env)
    remote = [row for path in list_shards(f"{s3_env}/out") for row in read_shard(path, fs).to_pylist()]

    local_manifest = tmp_path / "clips.jsonl"
    local_manifest.write_text("\n".join(lines))
    for name in ("source.mp4", "silent.mp4", "ramp.wav", "corrupt.mp4"):
        (tmp_path / name).write_bytes((media_dir / name).read_bytes())
    ingest(str(local_manifest), str(tmp_path / "out"), {**ingest_cfg, "rows_per_shard": 4, "skip_invalid_entries": True})
    local = pq.read_table(str(tmp_path / "out")).to_pylist()
    assert [r["clip_id"] for r in remote] == ["source:1-3", "with-audio", "silent:0-end"]
    assert remote == local
