"""The synthetic "sounding actions" world (SPEC Sec. 7): plan, render, encode, write shards.

Structure. Clips are cut from longer **source videos** of `clips_per_source` consecutive clips
(clip k of a source spans [k * D, (k + 1) * D) seconds, D = num_frames / fps). A source is one
person handling one object: its noun and scene are fixed, each clip's verb is drawn afresh.
A clip's `text` holds its own narration first, then the narrations of its temporal neighbours in
the same source, nearest first (k-1, k+1, k-2, ...): the MIL-NCE candidates of MMV eq. 2, which
share the noun but usually not the verb, as real temporally close narrations do.

Regions (MC3 Fig. 2), drawn in exact proportions (largest remainder) then shuffled:
  I   object visible, its sound audible, narrated                   sounding = True
  II  object visible and narrated but silent; a background ball hops with noise bursts
  III object visible and narrated, silent (noise floor only)
  IV  action audible and narrated, not visible (the scene without the object)
`sounding` is True in region I only: the action is "both visible and audible" (MC3 Sec. 5).

Determinism: the plan comes from `seed` alone; each clip's pixels and samples come from
generators seeded by (seed, clip index), each source's scene by (seed, source index). A shard is
a pure function of its slice of the plan, so any number of workers writes identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mmdist.contracts import MODALITIES
from mmdist.data.media import encode_audio_flac, encode_video_mp4
from mmdist.data.schema import CLIP_SCHEMA
from mmdist.data.storage import default_endpoint, join_url, prepare_output, write_shard
from mmdist.data.synthetic_render import NOUNS, VERBS, Noun, Verb, draw_clip, draw_scene, render_audio, render_frames
from mmdist.data.parallel import map_tasks
from mmdist.ray_setup import progress_bar

__all__ = [
    "VERBS", "NOUNS", "TEMPLATES", "REGIONS", "Verb", "Noun", "ClipPlan",
    "verbs", "nouns", "actions", "world_words", "narrate", "plan_world", "render_shard", "generate_world",
]

# Paraphrase templates; {verb} is the third-person form, {verb_ing} the -ing form.
TEMPLATES = (
    "C {verb} the {noun}",
    "C is {verb_ing} the {noun}",
    "the camera wearer {verb} a {noun}",
    "{verb_ing} the {noun}",
    "C {verb} the {noun} with one hand",
    "someone {verb} the {noun}",
)
REGIONS = {"I": 1, "II": 2, "III": 3, "IV": 4}


def verbs(num_verbs: int) -> tuple[Verb, ...]:
    """The world's verb classes (the first `num_verbs` of VERBS)."""
    if not 1 <= num_verbs <= len(VERBS):
        raise ValueError(f"world.num_verbs must be in 1..{len(VERBS)}, got {num_verbs}")
    return VERBS[:num_verbs]


def nouns(num_nouns: int) -> tuple[Noun, ...]:
    """The world's noun classes (the first `num_nouns` of NOUNS)."""
    if not 1 <= num_nouns <= len(NOUNS):
        raise ValueError(f"world.num_nouns must be in 1..{len(NOUNS)}, got {num_nouns}")
    return NOUNS[:num_nouns]


def actions(num_verbs: int, num_nouns: int) -> list[str]:
    """Every action class name, "verb noun", as in labels.action."""
    return [f"{v.name} {n.name}" for v in verbs(num_verbs) for n in nouns(num_nouns)]


def world_words() -> list[str]:
    """Every word a narration of any world size can contain, sorted (a closed text vocabulary)."""
    words = {w for template in TEMPLATES for w in template.split() if "{" not in w}
    for verb in VERBS:
        words.update(w for form in verb.forms + verb.synonym for w in form.split())
    for noun in NOUNS:
        words.update((noun.name, noun.synonym))
    return sorted(words)


def narrate(verb: Verb, noun: Noun, rng: np.random.Generator, synonym_prob: float) -> str:
    """One narration of the action: a random template, each word swapped for its synonym with `synonym_prob`."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    verb_forms = verb.synonym if rng.random() < synonym_prob else verb.forms
    noun_word = noun.synonym if rng.random() < synonym_prob else noun.name
    return template.format(verb=verb_forms[1], verb_ing=verb_forms[2], noun=noun_word)


@dataclass(frozen=True)
class ClipPlan:
    """Everything about one clip except its pixels and samples."""

    index: int
    source: int
    position: int  # clip number within its source
    verb: Verb
    noun: Noun
    region: int
    text: tuple[str, ...]  # own narration, then temporal neighbours'
    missing: str | None  # the modality left null, if any


def region_quota(proportions: dict, num_clips: int) -> np.ndarray:
    """Clip counts per region 1-4 summing to num_clips, by the largest remainder."""
    unknown = sorted(set(proportions) - set(REGIONS))
    if unknown:
        raise ValueError(f"world.region_proportions: unknown region(s) {unknown}; use {list(REGIONS)}")
    weights = np.array([float(proportions.get(name, 0.0)) for name in REGIONS])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"world.region_proportions must be >= 0 with a positive sum, got {dict(proportions)}")
    exact = weights / weights.sum() * num_clips
    counts = np.floor(exact).astype(int)
    # Rounded so that float noise cannot break a tie: equal remainders go to the earlier region.
    remainder_order = np.argsort(-np.round(exact - counts, 9), kind="stable")
    counts[remainder_order[: num_clips - counts.sum()]] += 1
    return counts


def draw_missing(rng: np.random.Generator, missing: dict, num_clips: int) -> list[str | None]:
    """Which modality each clip lacks: at most one per clip, with the configured probabilities."""
    probs = [float(missing.get(m, 0.0)) for m in MODALITIES]
    if min(probs) < 0 or sum(probs) >= 1:
        raise ValueError(f"world.missing probabilities must be >= 0 and sum below 1, got {dict(missing)}")
    choice = rng.choice(4, size=num_clips, p=[1 - sum(probs), *probs])
    return [None if c == 0 else MODALITIES[c - 1] for c in choice]


def temporal_candidates(narrations: list[str], position: int, count: int) -> tuple[str, ...]:
    """The clip's own narration, then its neighbours' nearest first, `count` at most."""
    picked = [narrations[position]]
    for distance in range(1, len(narrations)):
        for neighbour in (position - distance, position + distance):
            if 0 <= neighbour < len(narrations) and len(picked) < count:
                picked.append(narrations[neighbour])
    return tuple(picked)


def plan_world(num_clips: int, seed: int, cfg: dict) -> list[ClipPlan]:
    """The labels, narrations and missing modalities of every clip, from `seed` alone."""
    world, text = cfg["world"], cfg["text"]
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    per_source = int(world["clips_per_source"])
    if per_source < 1 or text["candidates"] < 1:
        raise ValueError("world.clips_per_source and text.candidates must be >= 1")
    verb_set, noun_set = verbs(world["num_verbs"]), nouns(world["num_nouns"])
    rng = np.random.default_rng(seed)
    num_sources = -(-num_clips // per_source)
    source_nouns = rng.integers(len(noun_set), size=num_sources)
    clip_verbs = rng.integers(len(verb_set), size=num_clips)
    regions = np.repeat(np.arange(1, 5), region_quota(world["region_proportions"], num_clips))
    rng.shuffle(regions)
    missing = draw_missing(rng, world["missing"], num_clips)
    narrations = [
        narrate(verb_set[v], noun_set[source_nouns[i // per_source]], rng, text["synonym_prob"])
        for i, v in enumerate(clip_verbs)
    ]
    plans = []
    for i in range(num_clips):
        source, position = divmod(i, per_source)
        same_source = narrations[source * per_source : (source + 1) * per_source]
        plans.append(
            ClipPlan(
                index=i, source=source, position=position,
                verb=verb_set[clip_verbs[i]], noun=noun_set[source_nouns[source]], region=int(regions[i]),
                text=temporal_candidates(same_source, position, text["candidates"]), missing=missing[i],
            )
        )
    return plans


def render_row(plan: ClipPlan, seed: int, cfg: dict) -> dict:
    """One Parquet row: the clip rendered, encoded and labelled."""
    video_cfg, audio_cfg = cfg["video"], cfg["audio"]
    duration = video_cfg["num_frames"] / video_cfg["fps"]
    scene = draw_scene(np.random.default_rng([seed, 0, plan.source]), video_cfg["size"],
                       video_cfg["ball_radius"], video_cfg["ball_hop_px"])
    draw_rng, frame_rng, audio_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 1, plan.index]).spawn(3))
    draw = draw_clip(draw_rng, cfg, with_hops=plan.region == 2)
    video = audio = None
    if plan.missing != "video":
        frames = render_frames(plan.verb.name, plan.noun, plan.region, scene, draw, frame_rng, cfg)  # [T, H, W, 3]
        video = encode_video_mp4(frames, video_cfg["fps"], crf=video_cfg["crf"], preset=video_cfg["preset"])
    if plan.missing != "audio":
        wave = render_audio(plan.verb.name, plan.noun, plan.region, draw, audio_rng, cfg)  # [S]
        audio = encode_audio_flac(wave, audio_cfg["sample_rate"])
    return {
        "clip_id": f"syn{seed}-{plan.index:07d}",
        "source_id": f"syn{seed}-src{plan.source:06d}",
        "start_s": plan.position * duration,
        "end_s": (plan.position + 1) * duration,
        "video": video,
        "audio": audio,
        "text": None if plan.missing == "text" else list(plan.text),
        "labels": {
            "action": f"{plan.verb.name} {plan.noun.name}",
            "verb": plan.verb.name,
            "noun": plan.noun.name,
            "sounding": plan.region == 1,
            "region": plan.region,
        },
    }


def render_shard(plans: list[ClipPlan], seed: int, cfg: dict, url: str, endpoint_url: str | None, on_clip=None) -> str:
    """Render the clips of one shard and write it to `url` (one Ray task when workers > 0).
    `on_clip()` after each clip: the progress bar of an in-process run."""
    rows = []
    for plan in plans:
        rows.append(render_row(plan, seed, cfg))
        if on_clip is not None:
            on_clip()
    table = pa.Table.from_pylist(rows, schema=CLIP_SCHEMA)
    storage = cfg["storage"]
    return write_shard(table, url, endpoint_url, retries=storage["retries"], backoff_s=storage["backoff_s"])


def generate_world(out: str, num_clips: int, seed: int, cfg: dict, endpoint_url: str | None = None) -> list[str]:
    """Write a seeded world of `num_clips` clips as Parquet shards under `out`; returns the shard URLs.

    `cfg` is the make_dataset config (configs/make_dataset.yaml) as a dict. Shard k holds clips
    [k * rows_per_shard, (k + 1) * rows_per_shard). `workers` 0 renders in this process, > 0 as
    Ray tasks (at most that many at once). An `out` that already holds shards is refused unless
    `overwrite` is set, which deletes them first.
    """
    storage = cfg["storage"]
    # Resolved here, not in the tasks: a Ray worker on another node may not share our environment.
    endpoint_url = default_endpoint(endpoint_url or storage["endpoint_url"])
    prepare_output(out, cfg["overwrite"], endpoint_url, retries=storage["retries"], backoff_s=storage["backoff_s"])
    plans = plan_world(num_clips, seed, cfg)
    rows_per_shard = int(cfg["rows_per_shard"])
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    workers = int(cfg["workers"])
    with progress_bar(num_clips, "rendering clips", "clip") as bar:
        # in this process the bar moves clip by clip, with Ray tasks shard by shard
        on_clip = bar.update if workers == 0 else None
        jobs = [
            (plans[start : start + rows_per_shard], seed, cfg, join_url(out, f"shard-{k:05d}.parquet"), endpoint_url, on_clip)
            for k, start in enumerate(range(0, num_clips, rows_per_shard))
        ]
        on_done = None if workers == 0 else (lambda index: bar.update(len(jobs[index][0])))
        return map_tasks(render_shard, jobs, workers, cfg["tasks"], on_done=on_done)
