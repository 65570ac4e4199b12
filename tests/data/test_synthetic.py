"""The synthetic "sounding actions" world: shards an independent reader (pyarrow + PyAV + soundfile)
decodes to the configured sizes, the Venn regions as specified, reproducible bytes."""

import io
import os
import subprocess
import sys

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from mmdist.data.synthetic import (
    NOUNS,
    TEMPLATES,
    VERBS,
    actions,
    generate_world,
    plan_world,
    region_quota,
    world_words,
)
from mmdist.data.synthetic_render import impact_times, verb_motion, verb_sound

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def decode_video(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [T, H, W, 3]


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    wave, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return wave, rate


@pytest.fixture(scope="module")
def rows(synthetic_dir):
    return pq.read_table(synthetic_dir).to_pylist()


def test_every_row_decodes_to_the_configured_sizes(synthetic_dir, rows, world_cfg):
    video, audio = world_cfg["video"], world_cfg["audio"]
    assert sorted(os.listdir(synthetic_dir)) == [f"shard-0000{k}.parquet" for k in range(3)]
    assert len(rows) == 24 and len({r["clip_id"] for r in rows}) == 24
    duration = video["num_frames"] / video["fps"]
    for row in rows:
        frames = decode_video(row["video"])
        assert frames.shape == (video["num_frames"], video["size"], video["size"], 3), row["clip_id"]
        with av.open(io.BytesIO(row["video"])) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            assert float(stream.average_rate) == video["fps"]
        wave, rate = decode_audio(row["audio"])
        assert rate == audio["sample_rate"] and wave.shape == (int(duration * rate),), row["clip_id"]
        assert row["end_s"] - row["start_s"] == duration


def test_regions_have_exact_proportions_and_sounding_means_region_one(rows):
    # 24 clips at 0.55 / 0.15 / 0.15 / 0.15 = 13.2 / 3.6 / 3.6 / 3.6: floors 13, 3, 3, 3 leave 2 clips,
    # which go to the largest remainders (three tied at 0.6: the earlier regions win)
    assert region_quota({"I": 0.55, "II": 0.15, "III": 0.15, "IV": 0.15}, 24).tolist() == [13, 4, 4, 3]
    assert region_quota({"I": 1, "II": 1, "III": 1, "IV": 0}, 10).tolist() == [4, 3, 3, 0]
    # the default world: 24 x 0.30 / 0.45 / 0.15 / 0.10 = 7.2 / 10.8 / 3.6 / 2.4: floors 7, 10, 3, 2 leave 2
    # clips for the largest remainders, II (0.8) and III (0.6)
    regions = [r["labels"]["region"] for r in rows]
    assert [regions.count(k) for k in (1, 2, 3, 4)] == [7, 11, 4, 2]
    for row in rows:
        labels = row["labels"]
        assert labels["sounding"] == (labels["region"] == 1)
        assert labels["action"] == f"{labels['verb']} {labels['noun']}"
        assert labels["action"] in actions(6, 6)


def test_sources_are_consecutive_clips_with_neighbouring_narrations(rows, world_cfg):
    per_source, candidates = world_cfg["world"]["clips_per_source"], world_cfg["text"]["candidates"]
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source_id"], []).append(row)
    assert len(by_source) == 24 // per_source
    for clips in by_source.values():
        clips.sort(key=lambda r: r["start_s"])
        assert [c["start_s"] for c in clips] == [2.0 * k for k in range(per_source)]
        assert len({c["labels"]["noun"] for c in clips}) == 1
        own = [c["text"][0] for c in clips]
        for k, clip in enumerate(clips):
            # nearest neighbours first, earlier before later at equal distance
            neighbours = [j for d in range(1, per_source) for j in (k - d, k + d) if 0 <= j < per_source]
            assert clip["text"] == [own[k]] + [own[j] for j in neighbours[: candidates - 1]]


def test_narrations_name_the_action_with_paraphrases(rows):
    verbs = {v.name: v for v in VERBS}
    nouns = {n.name: n for n in NOUNS}
    vocabulary = set(world_words())
    for row in rows:
        text, verb, noun = row["text"][0], verbs[row["labels"]["verb"]], nouns[row["labels"]["noun"]]
        assert any(form in text for form in verb.forms[1:] + verb.synonym[1:]), text
        assert noun.name in text.split() or noun.synonym in text.split(), text
        assert set(text.split()) <= vocabulary
    assert len({r["text"][0] for r in rows}) > 12  # templates and synonyms vary the wording
    assert len(TEMPLATES) >= 4


def colour_pixels(frames: np.ndarray, colour) -> np.ndarray:
    """How many pixels [T] are within 40 levels of `colour` on every channel."""
    return (np.abs(frames.astype(int) - np.asarray(colour)).max(-1) < 40).sum((1, 2))


def test_regions_show_and_sound_what_they_promise(rows, world_cfg):
    nouns = {n.name: n for n in NOUNS}
    floor = world_cfg["audio"]["noise_floor"]
    for row in rows:
        region, noun = row["labels"]["region"], nouns[row["labels"]["noun"]]
        frames = decode_video(row["video"])
        wave, _ = decode_audio(row["audio"])
        visible = colour_pixels(frames, noun.colour)
        rms = float(np.sqrt(np.mean(wave**2)))
        if region == 4:  # off-screen: no pixel of the object's colour
            assert visible.max() < 5, row["clip_id"]
        else:  # the object is on screen in every frame
            assert visible.min() > 20, row["clip_id"]
        if region == 3:  # silent: the noise floor only
            assert rms < 1.5 * floor, row["clip_id"]
        elif region == 2:  # the background ball's hops are heard, for a fraction of the clip
            assert rms > 2 * floor, row["clip_id"]
        else:  # the action is heard throughout
            assert rms > 4 * floor, row["clip_id"]


def test_background_source_moves_and_sounds_together(rows, world_cfg):
    """Region II: the ball's hops (frame differences in its corner) line up with audio bursts."""
    fps, rate = world_cfg["video"]["fps"], world_cfg["audio"]["sample_rate"]
    checked, correlations = 0, []
    for row in (r for r in rows if r["labels"]["region"] == 2):
        frames = decode_video(row["video"]).astype(float)
        wave, _ = decode_audio(row["audio"])
        grey = (np.abs(frames - 170).max(-1) < 30)  # ball pixels [T, H, W]
        ball_y = np.array([np.nonzero(g)[0].mean() for g in grey])  # [T]
        lift = ball_y.max() - ball_y  # > 0 while hopping
        energy = np.array([np.sqrt(np.mean(wave[int(i * rate / fps): int((i + 1) * rate / fps)] ** 2)) for i in range(len(frames))])
        correlations.append(np.corrcoef(lift, energy)[0, 1])
        checked += 1
    assert checked == 11
    # 4-6 hops of 0.3 s in 2 s overlap, and 8 fps samples them coarsely: a strong link, not a perfect one
    assert min(correlations) > 0.5 and np.mean(correlations) > 0.7, correlations
    # in every other region the ball rests (sub-pixel wobble from compression at most)
    for row in (r for r in rows if r["labels"]["region"] != 2):
        grey = np.abs(decode_video(row["video"]).astype(float) - 170).max(-1) < 30
        assert np.ptp([np.nonzero(g)[0].mean() for g in grey]) < 1.0, row["clip_id"]


@pytest.mark.parametrize("verb", [v.name for v in VERBS])
def test_verb_motion_and_sound_are_in_sync_and_distinct(verb):
    t = np.arange(16) / 8.0
    dy, dx, scale = verb_motion(verb, t, phase=0.3, amplitude=10.0, duration=2.0)
    # every verb moves: position or size changes over the clip
    assert np.ptp(dy) + np.ptp(dx) + 10 * np.ptp(scale) > 3
    ts = np.arange(32000) / 16000
    envelope, pitch = verb_sound(verb, ts, phase=0.3, duration=2.0)
    assert envelope.max() <= 1.0 and (np.ptp(envelope) > 0.3 or np.ptp(pitch) > 0.1)
    if verb in ("chop", "tap"):  # a click starts exactly when the object hits bottom (dy = 0)
        for hit in impact_times(1.5 if verb == "chop" else 2.0, 0.3, 2.0):
            bottom, _, _ = verb_motion(verb, np.array([hit]), 0.3, 10.0, 2.0)
            assert abs(bottom[0]) < 1e-9 and envelope[int(np.ceil(hit * 16000))] > 0.95


def test_verb_signatures_differ_pairwise():
    """No two verbs share both their motion and their sound (same phase and amplitude)."""
    t, ts = np.arange(16) / 8.0, np.arange(32000) / 16000
    signatures = {}
    for verb in VERBS:
        motion = np.concatenate(verb_motion(verb.name, t, 0.3, 10.0, 2.0))
        sound = np.concatenate(verb_sound(verb.name, ts, 0.3, 2.0))
        signatures[verb.name] = (motion, sound)
    names = list(signatures)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.allclose(signatures[a][0], signatures[b][0], atol=0.5), (a, b)
            assert not np.allclose(signatures[a][1], signatures[b][1], atol=0.05), (a, b)


def test_missing_modalities_are_null_and_at_most_one_per_clip(tmp_path, world_cfg):
    world_cfg["world"]["missing"] = {"video": 0.2, "audio": 0.2, "text": 0.2}
    plans = plan_world(40, 3, world_cfg)
    generate_world(str(tmp_path), 40, 3, world_cfg)
    table = pq.read_table(str(tmp_path)).to_pylist()
    for plan, row in zip(plans, table):
        nulls = [m for m in ("video", "audio", "text") if row[m] is None]
        assert nulls == ([plan.missing] if plan.missing else []), row["clip_id"]
    assert 0 < sum(p.missing is not None for p in plans) < 40


def shard_bytes(folder) -> dict:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path, world_cfg):
    world_cfg["rows_per_shard"] = 32
    for name, seed, clips in (("a", 0, 64), ("b", 0, 64), ("c", 1, 32)):
        generate_world(str(tmp_path / name), clips, seed, world_cfg)
    first = shard_bytes(tmp_path / "a")
    assert list(first) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert first == shard_bytes(tmp_path / "b")
    assert first["shard-00000.parquet"] != shard_bytes(tmp_path / "c")["shard-00000.parquet"]


def test_output_with_shards_is_refused_unless_overwrite(tmp_path, world_cfg):
    generate_world(str(tmp_path), 4, 0, world_cfg)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_world(str(tmp_path), 4, 0, world_cfg)
    world_cfg["overwrite"] = True
    assert generate_world(str(tmp_path), 2, 0, world_cfg) == [str(tmp_path / "shard-00000.parquet")]
    assert pq.read_table(str(tmp_path)).num_rows == 2


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("world", "num_verbs", 9, "world.num_verbs"),
        ("world", "region_proportions", {"I": 1.0, "V": 0.1}, "unknown region"),
        ("world", "missing", {"video": 0.6, "audio": 0.6}, "world.missing"),
    ],
)
def test_bad_world_config_is_named(world_cfg, section, key, value, message):
    world_cfg[section][key] = value
    with pytest.raises(ValueError, match=message):
        plan_world(8, 0, world_cfg)


def test_ray_workers_write_the_same_bytes_as_one_process(tmp_path, world_cfg):
    ray = pytest.importorskip("ray")
    world_cfg["rows_per_shard"] = 4
    generate_world(str(tmp_path / "local"), 12, 5, world_cfg)
    world_cfg["workers"] = 2
    ray.init(num_cpus=4, include_dashboard=False)
    try:
        urls = generate_world(str(tmp_path / "ray"), 12, 5, world_cfg)
    finally:
        ray.shutdown()
    assert urls == [str(tmp_path / "ray" / f"shard-0000{k}.parquet") for k in range(3)]
    assert shard_bytes(tmp_path / "local") == shard_bytes(tmp_path / "ray")


@pytest.mark.parametrize("workers", [0, 2])
def test_progress_bar_counts_every_clip(tmp_path, world_cfg, monkeypatch, workers):
    """The bar a terminal shows (tqdm draws only on a tty: here it draws into a buffer) ends at the
    number of clips, moved clip by clip in this process, shard by shard with Ray tasks."""
    import io

    from tqdm import tqdm

    import mmdist.data.synthetic as synthetic

    bars = []

    def recording_bar(total, description, unit):
        bars.append(tqdm(total=total, desc=description, unit=unit, file=io.StringIO(), disable=False))
        return bars[-1]

    monkeypatch.setattr(synthetic, "progress_bar", recording_bar)
    world_cfg.update(rows_per_shard=4, workers=workers)
    if workers:
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=4, include_dashboard=False)
    try:
        generate_world(str(tmp_path / "world"), 10, 5, world_cfg)
    finally:
        if workers:
            ray.shutdown()
    (bar,) = bars
    assert bar.total == 10 and bar.n == 10


def run_job(*overrides, cwd):
    # cwd: Hydra's job logging writes <job>.log into the working directory
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "jobs", "make_dataset.py"), *overrides],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, cwd=cwd, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_job_writes_to_s3_the_same_bytes_as_to_disk(tmp_path, s3_env):
    """`make_dataset.py out=s3://...` against the moto server, endpoint from AWS_ENDPOINT_URL;
    read back through the storage layer and compared with a local run and with direct decoding."""
    from mmdist.data.storage import list_shards, read_shard, resolve_filesystem

    run_job(f"out={tmp_path}/local", "num_clips=64", "seed=0", cwd=tmp_path)
    out = run_job(f"out={s3_env}/world", "num_clips=64", "seed=0", "rows_per_shard=32", cwd=tmp_path)
    assert "64 clips" in out and "2 shard(s)" in out
    fs, _ = resolve_filesystem(s3_env)
    remote = [row for path in list_shards(f"{s3_env}/world") for row in read_shard(path, fs).to_pylist()]
    local = pq.read_table(f"{tmp_path}/local").to_pylist()
    assert remote == local
    for row in remote:
        assert decode_video(row["video"]).shape == (16, 64, 64, 3)
        assert decode_audio(row["audio"])[0].shape == (32000,)


def test_job_names_a_missing_required_key(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "jobs", "make_dataset.py"), f"out={tmp_path}", "num_clips=4"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, cwd=tmp_path, timeout=300,
    )
    assert result.returncode != 0 and "seed" in result.stderr


def test_h264_encoding_is_byte_identical_across_runs(world_cfg):
    """x264 is not deterministic by default even single-threaded (media.DETERMINISTIC_X264)."""
    from mmdist.data.media import encode_video_mp4
    from mmdist.data.synthetic import render_row

    plans = plan_world(24, 11, world_cfg)
    first = [render_row(p, 11, world_cfg)["video"] for p in plans]
    for _ in range(2):
        assert [render_row(p, 11, world_cfg)["video"] for p in plans] == first
    frames = decode_video(first[0])
    again = encode_video_mp4(frames, 8, crf=world_cfg["video"]["crf"], preset=world_cfg["video"]["preset"])
    options = again[again.index(b"options:"): again.index(b"options:") + 1000]
    for fixed in (b"threads=1", b"lookahead_threads=1", b"b_adapt=0", b"scenecut=0", b"mbtree=0"):
        assert fixed in options


def spectral_flatness(wave: np.ndarray, frame: int = 400) -> float:
    """Geometric over arithmetic mean of the magnitude spectrum over the loud frames: near 1 for white
    noise, lower for a harmonic tone."""
    frames = wave[: len(wave) // frame * frame].reshape(-1, frame)
    loud = frames[np.sqrt((frames ** 2).mean(1)) > 0.05]
    spectrum = np.abs(np.fft.rfft(loud, axis=1)) + 1e-9
    return float(np.mean(np.exp(np.log(spectrum).mean(1)) / spectrum.mean(1)))


def test_background_sound_is_noise_or_another_objects_tone(world_cfg):
    """`audio.background_sound`: region II's hops as noise bursts, or as another object's tone, whose
    spectrum is like an action's (README "Reproduction": with noise, the sound's type alone tells
    sounding clips apart)."""
    from mmdist.data.synthetic_render import NOUNS, draw_clip, render_audio

    def flatness(region: int, sound: str) -> float:
        world_cfg["audio"]["background_sound"] = sound
        draw = draw_clip(np.random.default_rng(0), world_cfg, with_hops=region == 2)
        return spectral_flatness(render_audio("stir", NOUNS[0], region, draw, np.random.default_rng(1), world_cfg))

    action = flatness(1, "noise")  # measured: 0.32-0.41 over the verbs (the noise floor fills a tone's gaps)
    assert flatness(2, "noise") > 0.7 > action  # 0.84
    assert abs(flatness(2, "tonal") - action) < 0.2  # 0.27
    world_cfg["audio"]["background_sound"] = "chirp"
    with pytest.raises(ValueError, match="audio.background_sound"):
        render_audio("stir", NOUNS[0], 2, draw_clip(np.random.default_rng(0), world_cfg, with_hops=True), np.random.default_rng(1), world_cfg)
