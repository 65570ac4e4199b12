"""A trained model in Python: `mmdist.load_model(path).embed(video=..., audio=..., text=...)`.

    model = mmdist.load_model("runs/exp1")    # an export, a checkpoint folder or a training run_dir; local or s3://
    rows = model.embed(video=["a.mp4", "b.mp4"], audio=["a.flac", None], text=["a man chops wood", None])
    rows["emb_video"]                          # [2, D]; with a codebook also rows["codes_video"] [2, L_v]

Media (file paths / URLs, or the bytes of MP4, FLAC, WAV; text as strings) are decoded by evaluation's
decoder (mmdist.data.pipeline.ClipDecoder, centre crops) with the trained run's video / audio / text
settings, and embedded by evaluation's `embed_batch`: a clip gets here the row that the extraction job
(jobs/evaluate.py, jobs/embed.py) writes for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import yaml

from mmdist.contracts import MODALITIES
from mmdist.data.pipeline import ClipDecoder
from mmdist.data.storage import resolve_filesystem
from mmdist.data.text import PAD_ID
from mmdist.eval.embed import embed_batch
from mmdist.eval.job import eval_data_config
from mmdist.models.checkpoint import load_trained
from mmdist.models.model import build_model
from mmdist.models.warm_start import load_state_dict_exactly

DATA_DEFAULTS = Path(__file__).resolve().parents[1] / "configs" / "data" / "default.yaml"
ARRAY_LAYOUT = {"video": ("video", np.uint8), "audio": ("audio", np.float32), "text": ("text_tokens", np.int64)}


class TrainedModel:
    """A trained model in eval mode with the decoding it was trained with. `config`: its run config
    (`model`, `data`, `recipe`); `data_cfg`: the data config inputs are decoded with."""

    def __init__(self, model: torch.nn.Module, config: dict, data_cfg: dict, source: str, endpoint_url: str | None):
        self.model, self.config, self.data_cfg, self.source = model, config, data_cfg, source
        self.endpoint_url = endpoint_url
        self.modalities = list(model.modalities)
        self.decoder = ClipDecoder(data_cfg, train=False, seed=0)

    def embed(self, video=None, audio=None, text=None, *, audio_frame_mask=None) -> dict[str, np.ndarray]:
        """Per-clip rows of the given clips, in order (`emb_<m> [N, D]`, `present_<m> [N]`, and with a
        codebook `codes_<m> [N, L_m]`, `code_probs_<m> [N, V]`: mmdist.eval.embed). One forward pass.

        Each argument is one clip or a list of N clips (a list entry None: that clip lacks the modality):
        - media: a path or URL (local, s3://) or the encoded bytes (MP4; FLAC or WAV);
        - text: a narration string, or a list of narration candidates for one clip (in a list of clips);
        - arrays (numpy or torch) in the training layout, one clip or a batch: video uint8 [T, H, W, 3],
          audio log-mel [n_mels, F] (frames past the clip's end are zeros: `audio_frame_mask` [F] or
          [N, F] says which are real, else every frame with a non-zero value is), text token ids [P, L]
          (0 pads). Their shapes must be those of the trained run's data config.
        """
        inputs = {name: value for name, value in zip(MODALITIES, (video, audio, text)) if value is not None}
        if not inputs:
            raise ValueError("embed() needs at least one of video=, audio=, text=")
        unknown = [name for name in inputs if name not in self.modalities]
        if unknown:
            raise ValueError(f"the model at {self.source} has no {', '.join(unknown)} encoder (model.modalities: {self.modalities})")
        arrays = {name: _as_numpy(value) for name, value in inputs.items() if _is_array(value)}
        media = {name: _as_list(value) for name, value in inputs.items() if name not in arrays}
        counts = {name: self._array_count(name, value) for name, value in arrays.items()}
        counts.update({name: len(value) for name, value in media.items()})
        if len(set(counts.values())) != 1:
            raise ValueError(f"embed(): every input must hold the same number of clips, got {counts}")
        count = next(iter(counts.values()))

        columns = {"clip_id": [f"input {index}" for index in range(count)]}
        for name, kind in (("video", pa.binary()), ("audio", pa.binary()), ("text", pa.list_(pa.string()))):
            values = media.get(name, [None] * count)
            columns[name] = pa.array([self._read(name, value, index) for index, value in enumerate(values)], type=kind)
        batch, drops = self.decoder.decode_table(pa.table(columns))
        if drops:
            raise ValueError("embed(): inputs that do not decode: " + "; ".join(message for _, message in drops.values()))
        for name, value in arrays.items():
            batch.update(self._array_columns(name, value.reshape(count, *value.shape[-self._clip_dims(name):]), audio_frame_mask))
        return embed_batch(self.model, batch)

    def _read(self, name: str, value, index: int):
        """One clip's entry of the clip-schema table: encoded bytes, a list of narrations, or None."""
        if value is None:
            return None
        if name == "text":
            if isinstance(value, str):
                return [value]
            if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
                return list(value)
            raise TypeError(f"text input {index}: expected a string or a list of strings, got {type(value).__name__}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, (str, os.PathLike)):
            filesystem, path = resolve_filesystem(os.fspath(value), self.endpoint_url)
            with filesystem.open_input_file(path) as handle:
                return handle.read()
        raise TypeError(f"{name} input {index}: expected a path, a URL or bytes, got {type(value).__name__}")

    def _clip_dims(self, name: str) -> int:
        return len(self.decoder.shapes[ARRAY_LAYOUT[name][0]][1])

    def _array_count(self, name: str, array: np.ndarray) -> int:
        shape = self.decoder.shapes[ARRAY_LAYOUT[name][0]][1]
        if tuple(array.shape[-len(shape):]) != shape or array.ndim not in (len(shape), len(shape) + 1):
            raise ValueError(f"{name} array: expected [{', '.join(map(str, shape))}] or [N, {', '.join(map(str, shape))}] "
                             f"(the trained run's data.{name}), got {list(array.shape)}")
        if name == "video" and array.dtype != np.uint8:
            raise TypeError(f"video array: expected uint8 RGB frames, got {array.dtype}")
        return 1 if array.ndim == len(shape) else array.shape[0]

    def _array_columns(self, name: str, array: np.ndarray, audio_frame_mask) -> dict[str, np.ndarray]:
        """The batch columns of already-decoded clips (every clip given has the modality)."""
        key, dtype = ARRAY_LAYOUT[name]
        array = np.ascontiguousarray(array, dtype=dtype)
        columns = {key: array, f"has_{name}": np.ones(len(array), dtype=bool)}
        if name == "audio":
            mask = (array != 0).any(axis=1) if audio_frame_mask is None else _as_numpy(audio_frame_mask).astype(bool)
            columns["audio_frame_mask"] = np.broadcast_to(mask, (len(array), array.shape[2])).copy()  # [N, F]
        if name == "text":
            columns["text_token_mask"] = array != PAD_ID  # [N, P, L]
            columns["text_candidate_mask"] = columns["text_token_mask"].any(axis=2)  # [N, P]
        return columns


def load_model(path: str, *, endpoint_url: str | None = None, device: str | None = None, data_cfg: dict | None = None) -> TrainedModel:
    """The trained model at `path`: an export (preferred; mmdist/models/export.py), a DeepSpeed checkpoint
    folder or a training run_dir (its export when present, else its final checkpoint); local or s3://.

    `endpoint_url` is `storage.endpoint_url` (null: AWS_ENDPOINT_URL, else AWS). Inputs are decoded with
    `data_cfg` (default: configs/data/default.yaml) whose video / audio / text sections are replaced by
    the trained run's, as evaluation does (eval.decode_from_checkpoint). `device`: default CUDA when present.
    """
    state, config, uri = load_trained(path, endpoint_url)
    if data_cfg is None:
        with open(DATA_DEFAULTS) as handle:
            data_cfg = yaml.safe_load(handle)
    data_cfg = eval_data_config(data_cfg, config["data"], from_checkpoint=True)
    model = build_model(config["model"], data_cfg)
    load_state_dict_exactly(model, state, uri)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TrainedModel(model.to(device).eval(), config, data_cfg, uri, endpoint_url)


def _is_array(value) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor))


def _as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _as_list(value) -> list:
    """Media of one clip -> [it]; a list or tuple of clips -> a list (text: a list of strings is clips)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]
