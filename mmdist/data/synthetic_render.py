"""Pixels and samples of the synthetic "sounding actions" world (SPEC Sec. 7).

The world is built so that each label has one clean cue per modality and no cue leaks into
another label:

* a **verb** fixes how the object moves (trajectory, rate) and, when the action sounds, the
  time course of its sound (click rhythm, amplitude modulation, pitch contour), in sync;
* a **noun** fixes the object's colour and shape and the timbre of its sound (base pitch +
  harmonic profile);
* the **scene** (background colour, static grey clutter, a small grey ball in a corner) is
  per source video, shared by its neighbouring clips and unrelated to the labels;
* region II adds the non-action source of MC3 Fig. 2: the grey ball hops at random times and
  each hop makes a noise burst that swells and fades with it, so audio and video agree on
  something the narration never mentions; the action itself is then silent.

Time is local to the clip (t = 0 at its first frame / sample); a per-clip random phase,
position, size, amplitude, pitch jitter and noise keep clips of one class apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verb:
    name: str  # the class name, as in labels.verb
    forms: tuple[str, str, str]  # base, third person, -ing: "chop", "chops", "chopping"
    synonym: tuple[str, str, str]  # the paraphrase's forms


@dataclass(frozen=True)
class Noun:
    name: str
    synonym: str
    colour: tuple[int, int, int]
    shape: str
    base_hz: float
    harmonics: tuple[float, ...]  # amplitude of harmonics 1, 2, 3, ...


# Verbs 1-6 are the default world; 7-8 exist for bigger configs (num_verbs: 8).
VERBS = (
    Verb("chop", ("chop", "chops", "chopping"), ("cut", "cuts", "cutting")),
    Verb("stir", ("stir", "stirs", "stirring"), ("mix", "mixes", "mixing")),
    Verb("shake", ("shake", "shakes", "shaking"), ("jiggle", "jiggles", "jiggling")),
    Verb("slide", ("slide", "slides", "sliding"), ("push", "pushes", "pushing")),
    Verb("lower", ("lower", "lowers", "lowering"), ("put down", "puts down", "putting down")),
    Verb("squeeze", ("squeeze", "squeezes", "squeezing"), ("press", "presses", "pressing")),
    Verb("tap", ("tap", "taps", "tapping"), ("knock", "knocks", "knocking")),
    Verb("toss", ("toss", "tosses", "tossing"), ("flip", "flips", "flipping")),
)

# Base pitches step by a fifth (x1.5) so timbres stay apart in a log-mel spectrogram.
NOUNS = (
    Noun("carrot", "root", (255, 140, 0), "triangle", 220.0, (1.0, 0.5, 0.33, 0.25, 0.2)),
    Noun("apple", "fruit", (220, 30, 30), "circle", 330.0, (1.0,)),
    Noun("cup", "mug", (40, 80, 235), "square", 495.0, (1.0, 0.0, 0.33, 0.0, 0.2)),
    Noun("bottle", "flask", (30, 200, 60), "bar", 742.5, (1.0, 0.7, 0.0, 0.4)),
    Noun("sponge", "pad", (245, 225, 40), "diamond", 1113.75, (1.0, 0.0, 0.0, 0.6)),
    Noun("bowl", "dish", (210, 40, 210), "ring", 1670.6, (1.0, 0.3)),
    Noun("lid", "cover", (40, 215, 225), "cross", 2506.0, (1.0, 0.0, 0.5)),
    Noun("pan", "skillet", (150, 90, 30), "ellipse", 3759.0, (1.0,)),
)

BALL_COLOUR = (170, 170, 170)
HOP_S = 0.3  # a background hop lasts this long, with a noise burst as loud as the ball is high


@dataclass(frozen=True)
class Scene:
    """What a source video looks like whatever happens in it."""

    background: tuple[float, float, float]
    clutter: tuple[tuple[int, int, int, int, int], ...]  # (y0, x0, y1, x1, grey level)
    ball_centre: tuple[float, float]  # (y, x) of the resting background ball


@dataclass(frozen=True)
class ClipDraw:
    """Per-clip randomness, shared by frames and audio so that both stay in sync."""

    phase: float  # radians
    amplitude: float  # factor on motion_amplitude
    offset: tuple[float, float]  # (dy, dx) of the resting position, pixels
    size: float  # factor on object_radius
    pitch: float  # factor on the noun's base pitch
    gain: float  # peak amplitude of the action sound
    hops: tuple[float, ...]  # start times of background hops (region II only)


def draw_scene(rng: np.random.Generator, size: int, ball_radius: float, hop_px: float) -> Scene:
    background = tuple(float(v) for v in rng.uniform(15, 60, size=3))
    clutter = []
    for _ in range(2):
        height, width = rng.integers(size // 10, size // 5, size=2)
        y0, x0 = rng.integers(0, size - height), rng.integers(0, size - width)
        clutter.append((int(y0), int(x0), int(y0 + height), int(x0 + width), int(rng.integers(70, 110))))
    corner_y, corner_x = rng.integers(0, 2, size=2)
    margin = ball_radius + 2
    ball = (size - margin if corner_y else margin + hop_px, size - margin if corner_x else margin)
    return Scene(background, tuple(clutter), (float(ball[0]), float(ball[1])))


def draw_clip(rng: np.random.Generator, cfg: dict, with_hops: bool) -> ClipDraw:
    video, audio = cfg["video"], cfg["audio"]
    duration = video["num_frames"] / video["fps"]
    jitter = video["position_jitter"]
    low, high = audio["background_hops"]
    hops = np.sort(rng.uniform(0.0, duration - HOP_S, size=int(rng.integers(low, high + 1)))) if with_hops else ()
    return ClipDraw(
        phase=float(rng.uniform(0, 2 * np.pi)),
        amplitude=float(rng.uniform(0.8, 1.2)),
        offset=(float(rng.uniform(-jitter, jitter)), float(rng.uniform(-jitter, jitter))),
        size=float(rng.uniform(0.85, 1.15)),
        pitch=float(2 ** rng.uniform(-0.05, 0.05)),
        gain=float(rng.uniform(*audio["action_gain"])),
        hops=tuple(float(h) for h in hops),
    )


# ---- verbs: motion (frames) and sound (envelope, pitch contour) ---------------------------

def strokes(t: np.ndarray, rate_hz: float, phase: float) -> np.ndarray:
    """Stroke angle: the object is at the top at angle 0 and hits bottom at angle pi."""
    return 2 * np.pi * rate_hz * t + phase


def impact_times(rate_hz: float, phase: float, duration: float) -> np.ndarray:
    """Times in [0, duration) where strokes(t) = pi (mod 2 pi): the object hits bottom."""
    first = ((np.pi - phase) % (2 * np.pi)) / (2 * np.pi * rate_hz)
    return np.arange(first, duration, 1.0 / rate_hz)


def verb_motion(verb: str, t: np.ndarray, phase: float, amplitude: float, duration: float):
    """(dy, dx, scale) [T] of the object at frame times `t`; y grows downwards.

    Periodic motions stay at or below 2 Hz: at the default 8 fps every period spans at least
    4 frames (a 4 Hz motion would alias to a phase-dependent flicker or to nothing).
    """
    zeros, ones, u = np.zeros_like(t), np.ones_like(t), t / duration
    if verb == "chop":  # big vertical strokes, 1.5 per second
        return -amplitude * 0.5 * (1 + np.cos(strokes(t, 1.5, phase))), zeros, ones
    if verb == "tap":  # small vertical strokes, 2 per second
        return -amplitude * 0.2 * (1 + np.cos(strokes(t, 2.0, phase))), zeros, ones
    if verb == "stir":  # a circle per second
        angle = strokes(t, 1.0, phase)
        return 0.6 * amplitude * np.sin(angle), 0.6 * amplitude * np.cos(angle), ones
    if verb == "shake":  # fast horizontal oscillation
        return zeros, 0.5 * amplitude * np.sin(strokes(t, 2.0, phase)), ones
    if verb == "slide":  # left to right across the clip
        return zeros, amplitude * (2 * u - 1), ones
    if verb == "lower":  # top to bottom across the clip
        return amplitude * (2 * u - 1), zeros, ones
    if verb == "squeeze":  # size pulses once a second
        return zeros, zeros, 1 + 0.35 * np.sin(strokes(t, 1.0, phase))
    if verb == "toss":  # one arc up and back down
        return amplitude * (0.6 - 2.4 * u * (1 - u)), zeros, ones
    raise KeyError(f"unknown verb {verb!r}; known: {[v.name for v in VERBS]}")


def verb_sound(verb: str, t: np.ndarray, phase: float, duration: float):
    """(envelope, pitch factor) [S] of the verb's sound at sample times `t`, in sync with its motion."""
    ones, u = np.ones_like(t), t / duration
    if verb in ("chop", "tap"):  # a decaying click at each impact
        rate, decay_s = (1.5, 0.06) if verb == "chop" else (2.0, 0.025)
        envelope = np.zeros_like(t)
        for hit in impact_times(rate, phase, duration):
            after = t >= hit
            envelope[after] += np.exp(-(t[after] - hit) / decay_s)
        return np.minimum(envelope, 1.0), ones
    if verb == "stir":  # loudest on the right of the circle
        return 0.55 + 0.45 * np.cos(strokes(t, 1.0, phase)), ones
    if verb == "shake":  # tremolo, loudest at the right end of the shake
        return (0.5 + 0.5 * np.sin(strokes(t, 2.0, phase))) ** 2, ones
    if verb == "slide":  # rising octave
        return ones, 2.0**u
    if verb == "lower":  # falling octave
        return ones, 2.0 ** (1 - u)
    if verb == "squeeze":  # vibrato with the size pulse
        return ones, 1 + 0.12 * np.sin(strokes(t, 1.0, phase))
    if verb == "toss":  # pitch rises and falls with the arc
        return ones, 2.0 ** (np.sin(np.pi * u))
    raise KeyError(f"unknown verb {verb!r}; known: {[v.name for v in VERBS]}")


# ---- nouns: shape (frames) and timbre (audio) ----------------------------------------------

def shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of `shape` of size `radius` on pixel offsets (dy, dx) from its centre."""
    y, x = dy / radius, dx / radius
    if shape == "circle":
        return x**2 + y**2 <= 1
    if shape == "square":
        return (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)
    if shape == "triangle":  # apex up
        return (y <= 0.8) & (np.abs(x) <= (y + 1) * 0.55)
    if shape == "bar":
        return (np.abs(x) <= 0.4) & (np.abs(y) <= 1)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1
    if shape == "ring":
        return (x**2 + y**2 <= 1) & (x**2 + y**2 >= 0.3)
    if shape == "cross":
        return ((np.abs(x) <= 0.3) & (np.abs(y) <= 1)) | ((np.abs(y) <= 0.3) & (np.abs(x) <= 1))
    if shape == "ellipse":
        return x**2 + (y / 0.55) ** 2 <= 1
    raise KeyError(f"unknown shape {shape!r}")


def tone(noun: Noun, pitch: np.ndarray, sample_rate: int) -> np.ndarray:
    """The noun's harmonic tone following the instantaneous frequency `pitch` [S] (Hz)."""
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate  # [S]
    wave = np.zeros_like(phase)
    for k, weight in enumerate(noun.harmonics, start=1):
        if weight and k * pitch.max() < 0.45 * sample_rate:  # no partial above Nyquist: no aliasing
            wave += weight * np.sin(k * phase)
    return wave / np.abs(wave).max()


# ---- whole clips ---------------------------------------------------------------------------

def ball_height(t: np.ndarray, hops: tuple[float, ...], hop_px: float) -> np.ndarray:
    """How high [T or S] the background ball is above its resting place (pixels; `hop_px` at the top)."""
    height = np.zeros_like(t)
    for start in hops:
        v = (t - start) / HOP_S
        inside = (v >= 0) & (v <= 1)
        height[inside] = np.maximum(height[inside], hop_px * 4 * v[inside] * (1 - v[inside]))
    return height


def render_frames(
    verb: str, noun: Noun, region: int, scene: Scene, draw: ClipDraw, rng: np.random.Generator, cfg: dict
) -> np.ndarray:
    """Frames uint8 [T, H, W, 3]: scene, the acting object (not in region IV), hopping ball (II)."""
    video = cfg["video"]
    count, size, fps = video["num_frames"], video["size"], video["fps"]
    t = np.arange(count) / fps  # [T]
    image = np.empty((count, size, size, 3), np.float32)
    image[:] = np.asarray(scene.background, np.float32)
    for y0, x0, y1, x1, level in scene.clutter:
        image[:, y0:y1, x0:x1] = level
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)  # [H, W]
    ball_y = scene.ball_centre[0] - ball_height(t, draw.hops, video["ball_hop_px"])  # [T]
    radius = video["object_radius"] * draw.size
    dy, dx, scale = verb_motion(verb, t, draw.phase, video["motion_amplitude"] * draw.amplitude, count / fps)
    for i in range(count):
        ball = (rows - ball_y[i]) ** 2 + (cols - scene.ball_centre[1]) ** 2 <= video["ball_radius"] ** 2
        image[i][ball] = BALL_COLOUR
        if region == 4:  # off-screen action: the camera shows the scene only
            continue
        r = radius * scale[i]
        centre_y = np.clip(size / 2 + draw.offset[0] + dy[i], r, size - r)
        centre_x = np.clip(size / 2 + draw.offset[1] + dx[i], r, size - r)
        image[i][shape_mask(noun.shape, rows - centre_y, cols - centre_x, r)] = noun.colour
    image += rng.normal(0.0, video["noise_std"], size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_audio(
    verb: str, noun: Noun, region: int, draw: ClipDraw, rng: np.random.Generator, cfg: dict
) -> np.ndarray:
    """Mono wave float32 [S]: the action's sound (regions I, IV), ball hops (II), noise floor."""
    audio, video = cfg["audio"], cfg["video"]
    sample_rate, duration = audio["sample_rate"], video["num_frames"] / video["fps"]
    t = np.arange(int(round(duration * sample_rate))) / sample_rate  # [S]
    wave = rng.normal(0.0, audio["noise_floor"], size=t.shape)
    if region in (1, 4):
        envelope, pitch = verb_sound(verb, t, draw.phase, duration)
        wave += draw.gain * envelope * tone(noun, noun.base_hz * draw.pitch * pitch, sample_rate)
    if region == 2:  # a sound that swells and fades with each hop of the ball: in sync with the ball
        envelope = ball_height(t, draw.hops, 1.0)  # the ball's height as a fraction of its hop
        if audio["background_sound"] == "noise":
            source = rng.uniform(-1, 1, size=t.shape)
        elif audio["background_sound"] == "tonal":
            # another object's harmonic tone: the same kind of sound as an action, so that telling
            # sounding clips apart needs audio-visual correspondence, not the sound's type
            others = [n for n in NOUNS if n.name != noun.name]
            other = others[int(rng.integers(len(others)))]
            source = tone(other, np.full_like(t, other.base_hz * draw.pitch), sample_rate)
        else:
            raise ValueError(f"audio.background_sound must be 'noise' or 'tonal', got {audio['background_sound']!r}")
        wave += audio["background_gain"] * envelope * source
    return wave.astype(np.float32)
