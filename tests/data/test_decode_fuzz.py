"""Decoder fuzz: a few hundred mutated MP4 / FLAC / WAV files through the pipeline's ClipDecoder.

Every file must be decoded or dropped with a DecodeError reason: none may raise, crash or hang
the process, and memory must stay bounded. The run happens in a subprocess (tests/data/fuzz_decode.py)
that reports each case before and after decoding it, so a crash or a hang fails this test naming
the mutation instead of taking the suite with it.
"""

import collections
import json
import os
import pathlib
import select
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SEED, CASES_PER_SOURCE = 0, 100
CASE_TIMEOUT_S = 20.0  # one case decodes in ~10 ms here; generous for a loaded shared machine
STARTUP_TIMEOUT_S = 180.0  # imports (torch) and the warm-up decode before the first line
RSS_GROWTH_BOUND_MB = 256  # the resampling bomb the fuzz found grew it by ~700 MB on one 65535 Hz WAV
DROP_REASONS = {
    "video_corrupt", "video_empty", "video_too_large", "video_too_long", "video_too_many_frames",
    "video_frame_too_large", "audio_corrupt", "audio_empty", "audio_too_large", "audio_too_long",
    "audio_rate_too_high", "audio_too_many_channels",
}


def read_records(process: subprocess.Popen, timeout_s: float, startup_timeout_s: float | None = None):
    """Yield the child's JSON lines; raise if it says nothing for `timeout_s` (one case hangs), or
    for `startup_timeout_s` before its first line."""
    pending, last = b"", None
    fd = process.stdout.fileno()
    while True:
        wait_s = timeout_s if last is not None or startup_timeout_s is None else startup_timeout_s
        ready, _, _ = select.select([fd], [], [], wait_s)
        if not ready:
            process.kill()
            raise AssertionError(f"the decoder hung: no answer within {wait_s} s after {last}")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            last = json.loads(line)
            yield last


def test_mutated_media_is_decoded_or_dropped_never_a_crash(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.log", "w+b") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.data.fuzz_decode", str(SEED), str(CASES_PER_SOURCE)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr,
        )
        try:
            records = list(read_records(process, CASE_TIMEOUT_S, STARTUP_TIMEOUT_S))
        finally:
            process.kill()
            returncode = process.wait()
            process.stdout.close()
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")[-3000:]
    begun = {r["case"]: r for r in records if "mutation" in r}
    results = [r for r in records if "outcome" in r]
    assert records and "peak_rss_mb" in records[-1], (
        f"the fuzz process died (exit {returncode}) during {begun.get(len(results), 'start-up')}\n{log}"
    )

    assert len(results) == 3 * CASES_PER_SOURCE
    failures = [(begun[r["case"]], r) for r in results if r["outcome"] not in DROP_REASONS | {"decoded"}]
    assert not failures, failures[:5]
    outcomes = collections.Counter((begun[r["case"]]["source"], r["outcome"] == "decoded") for r in results)
    for source in ("mp4", "flac", "wav"):  # the mutations reach both paths of every format
        assert outcomes[(source, True)] > 0 and outcomes[(source, False)] > 0, outcomes
    baseline = records[0]["baseline_rss_mb"]
    grown = [(begun[r["case"]], r) for r in results if r["peak_rss_mb"] - baseline > RSS_GROWTH_BOUND_MB]
    assert not grown, f"peak RSS grew by more than {RSS_GROWTH_BOUND_MB} MB from {baseline:.0f} MB at {grown[0]}"


def test_a_silent_child_is_reported_as_a_hang():
    """The hang detection itself: a child that reports one case and then stalls."""
    script = "import json, time; print(json.dumps({'case': 0}), flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        with pytest.raises(AssertionError, match=r"hung: no answer within 1.0 s after \{'case': 0\}"):
            list(read_records(process, timeout_s=1.0))
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
