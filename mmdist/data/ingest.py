"""User data ingest: a JSON Lines manifest of clips -> clip shards (SPEC Sec. 1 "Ingest manifest").

One JSON object per line:
  video      path or URL of a media file (required)
  audio      separate audio file (optional; else the video's own audio track)
  text       a string or a list of strings (optional; the first is the clip's own narration)
  start_s    / end_s  clip bounds in seconds (optional; the whole file by default)
  clip_id    (optional; default "<source_id>:<start>-<end>")
  source_id  (optional; default the video file's name without extension)
  labels     (optional object with keys of schema.LABELS_TYPE)
Relative paths are relative to the manifest's folder.

The whole manifest is parsed before any clip is cut. An invalid line (not JSON, a missing or
unknown key, a duplicate clip_id) stops the ingest there with one line naming the manifest and the
line (ManifestError), unless `skip_invalid_entries`: then it is listed in the summary like the bad
media. Bad media (missing file, undecodable, zero-length clip) never stop the ingest: every good
entry is written, each bad one listed in the summary with its line number and reason.
Shard k holds the good entries among manifest entries [k * rows_per_shard, (k + 1) * rows_per_shard).
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import asdict, dataclass, field

import av
import pyarrow as pa
import soundfile as sf

from mmdist.data.media import ClipError, EmptyClipError, cut_clip
from mmdist.data.schema import CLIP_SCHEMA, LABELS_TYPE
from mmdist.data.storage import default_endpoint, join_url, parent_url, prepare_output, read_bytes, write_bytes, write_shard
from mmdist.data.parallel import map_tasks

MANIFEST_KEYS = ("video", "audio", "text", "start_s", "end_s", "clip_id", "source_id", "labels")
# A leading "_" keeps readers of the folder (pyarrow datasets, Ray Data) from taking it for a shard.
SUMMARY_FILE = "_ingest_summary.json"


class ManifestError(ValueError):
    """The manifest cannot be read, or a line of it is invalid (and invalid lines are not skipped)."""


@dataclass(frozen=True)
class Entry:
    """One parsed manifest line, paths resolved."""

    line: int
    video: str
    audio: str | None
    text: list[str] | None
    start_s: float | None
    end_s: float | None
    clip_id: str
    source_id: str
    labels: dict | None


@dataclass(frozen=True)
class BadEntry:
    line: int
    clip_id: str | None
    kind: str  # "invalid entry", "missing file", "undecodable", "zero length", "unreadable"
    reason: str


@dataclass
class IngestSummary:
    manifest: str
    out: str
    entries: int = 0
    written: int = 0
    shards: list[str] = field(default_factory=list)
    bad: list[BadEntry] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def format(self) -> str:
        """Human-readable report: counts, then one line per bad entry."""
        lines = [f"ingest {self.manifest} -> {self.out}: {self.written}/{self.entries} clips in {len(self.shards)} shard(s)"]
        if self.bad:
            lines.append(f"{len(self.bad)} bad entr{'y' if len(self.bad) == 1 else 'ies'}:")
            lines += [f"  line {b.line} ({b.clip_id or '?'}): {b.kind}: {b.reason}" for b in self.bad]
        return "\n".join(lines)


def resolve_media(path: str, base_url: str) -> str:
    """An absolute path / URL as is; a relative path joined to the manifest's folder."""
    if "://" in path or posixpath.isabs(path):
        return path
    return join_url(base_url, path)


def optional_seconds(obj: dict, key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key!r} must be a number of seconds, got {value!r}")
    return float(value)


def parse_text(value) -> list[str] | None:
    """A string or a list of strings -> list; absent or empty -> None (text is missing)."""
    if value is None:
        return None
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"'text' must be a string or a list of strings, got {value!r}")
    return texts or None


def parse_labels(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"'labels' must be an object, got {value!r}")
    known = [f.name for f in LABELS_TYPE]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"labels key(s) {unknown} not in the schema's labels {known}")
    try:
        pa.array([value], type=LABELS_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"labels {value!r} do not fit {LABELS_TYPE}: {err}") from err
    return value


def parse_entry(obj, line: int, base_url: str) -> Entry:
    """Check one manifest object and resolve its paths; ValueError names the offending key."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(MANIFEST_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; a manifest entry has {list(MANIFEST_KEYS)}")
    video = obj.get("video")
    if not isinstance(video, str) or not video:
        raise ValueError("'video' (path or URL of a media file) is required")
    audio = obj.get("audio")
    if audio is not None and (not isinstance(audio, str) or not audio):
        raise ValueError(f"'audio' must be a path or URL, got {audio!r}")
    start_s, end_s = optional_seconds(obj, "start_s"), optional_seconds(obj, "end_s")
    source_id = obj.get("source_id") or posixpath.splitext(posixpath.basename(video))[0]
    bounds = f"{start_s or 0:g}-{'end' if end_s is None else f'{end_s:g}'}"
    return Entry(
        line=line,
        video=resolve_media(video, base_url),
        audio=None if audio is None else resolve_media(audio, base_url),
        text=parse_text(obj.get("text")),
        start_s=start_s,
        end_s=end_s,
        clip_id=str(obj.get("clip_id") or f"{source_id}:{bounds}"),
        source_id=str(source_id),
        labels=parse_labels(obj.get("labels")),
    )


def parse_manifest(content: str, base_url: str) -> tuple[list[Entry], list[BadEntry]]:
    """All entries of a manifest; blank lines are skipped; duplicate clip ids are bad entries."""
    entries, bad, seen = [], [], set()
    for line, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            bad.append(BadEntry(line, None, "invalid entry", f"not valid JSON: {err}"))
            continue
        clip_id = obj.get("clip_id") if isinstance(obj, dict) else None
        try:
            entry = parse_entry(obj, line, base_url)
        except ValueError as err:
            bad.append(BadEntry(line, clip_id, "invalid entry", str(err)))
            continue
        if entry.clip_id in seen:
            bad.append(BadEntry(line, entry.clip_id, "invalid entry", "duplicate clip_id"))
            continue
        seen.add(entry.clip_id)
        entries.append(entry)
    return entries, bad


def clip_duration(video: bytes | None, audio: bytes | None) -> float:
    """Seconds of the cut clip: the video's frames / rate, else the audio's samples / rate."""
    if video is not None:
        with av.open(io.BytesIO(video)) as container:
            stream = container.streams.video[0]
            return stream.frames / float(stream.average_rate)
    return sf.info(io.BytesIO(audio)).duration


def ingest_entry(entry: Entry, cfg: dict, endpoint_url: str | None) -> dict:
    """The Parquet row of one entry; raises what `cut_clip` raises for bad media."""
    video_cfg = cfg["video"]
    video, audio = cut_clip(
        entry.video, entry.start_s, entry.end_s, entry.audio,
        sample_rate=cfg["audio"]["sample_rate"], fps=video_cfg["fps"], short_side=video_cfg["short_side"],
        crf=video_cfg["crf"], preset=video_cfg["preset"], endpoint_url=endpoint_url,
    )
    start = entry.start_s or 0.0
    return {
        "clip_id": entry.clip_id,
        "source_id": entry.source_id,
        "start_s": start,
        "end_s": entry.end_s if entry.end_s is not None else start + clip_duration(video, audio),
        "video": video,
        "audio": audio,
        "text": entry.text,
        "labels": entry.labels,
    }


def classify(err: Exception) -> tuple[str, str]:
    """(kind, reason) of the summary for an error raised while cutting a clip."""
    if isinstance(err, FileNotFoundError):
        return "missing file", str(err)
    if isinstance(err, EmptyClipError):
        return "zero length", str(err)
    if isinstance(err, (ClipError, av.FFmpegError)):
        return "undecodable", str(err)
    return "unreadable", f"{type(err).__name__}: {err}"


def ingest_chunk(entries: list[Entry], cfg: dict, url: str, endpoint_url: str | None) -> tuple[str | None, int, list[BadEntry]]:
    """Cut every entry of one chunk and write the good ones as the shard at `url` (one Ray task)."""
    rows, bad = [], []
    for entry in entries:
        try:
            rows.append(ingest_entry(entry, cfg, endpoint_url))
        except Exception as err:  # one bad file must not stop the others: it is reported instead
            bad.append(BadEntry(entry.line, entry.clip_id, *classify(err)))
    if not rows:
        return None, 0, bad
    storage = cfg["storage"]
    table = pa.Table.from_pylist(rows, schema=CLIP_SCHEMA)
    write_shard(table, url, endpoint_url, retries=storage["retries"], backoff_s=storage["backoff_s"])
    return url, len(rows), bad


def read_manifest(manifest: str, endpoint_url: str | None, retries: int | None) -> str:
    try:
        content = read_bytes(manifest, endpoint_url, retries=retries)
    except FileNotFoundError:
        raise ManifestError(f"manifest={manifest!r} does not exist") from None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"manifest={manifest!r} is not UTF-8 text (JSON Lines): {err}") from None


def ingest(manifest: str, out: str, cfg: dict, endpoint_url: str | None = None) -> IngestSummary:
    """Ingest the manifest at `manifest` into shards under `out`; the summary is also written
    to `<out>/_ingest_summary.json`. `cfg` is configs/ingest.yaml as a dict."""
    storage = cfg["storage"]
    endpoint_url = default_endpoint(endpoint_url or storage["endpoint_url"])
    retries, backoff_s = storage["retries"], storage["backoff_s"]
    entries, bad = parse_manifest(read_manifest(manifest, endpoint_url, retries), parent_url(manifest))
    if bad and not cfg["skip_invalid_entries"]:
        first, others = bad[0], len(bad) - 1
        more = f" (and {others} more invalid line{'s' if others > 1 else ''})" if others else ""
        raise ManifestError(
            f"{manifest} line {first.line}: {first.reason}{more}; nothing was ingested "
            "(skip_invalid_entries=true ingests the valid lines and lists the others)"
        )
    prepare_output(out, cfg["overwrite"], endpoint_url, retries=retries, backoff_s=backoff_s)
    size = int(cfg["rows_per_shard"])
    if size < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {size}")
    jobs = [
        (entries[start : start + size], cfg, join_url(out, f"part-{k:05d}.parquet"), endpoint_url)
        for k, start in enumerate(range(0, len(entries), size))
    ]
    summary = IngestSummary(manifest=manifest, out=out, entries=len(entries) + len(bad))
    for shard, written, chunk_bad in map_tasks(ingest_chunk, jobs, int(cfg["workers"]), cfg["tasks"]):
        summary.shards += [shard] if shard else []
        summary.written += written
        bad += chunk_bad
    summary.bad = sorted(bad, key=lambda b: b.line)
    write_bytes(join_url(out, SUMMARY_FILE), summary.to_json().encode(), endpoint_url, retries=retries)
    return summary
