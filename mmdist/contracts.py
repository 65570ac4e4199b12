"""What flows between the layers, defined once: the modalities, a batch of clips, a model's output.

    a shard's row (mmdist/data/schema.py: encoded video, audio, narrations)
      -> ClipBatch     decoded, fixed-shape columns (mmdist/data/pipeline.py writes them as numpy
                       arrays, Ray Data's format); `mmdist.models.batch.to_clip_batch` makes them the
                       model's tensors where a loop receives a batch
      -> ModelOutput   `MultimodalModel.forward` (mmdist/models/model.py); the objectives replace the
                       codebook branch's features by `code_probs` (with_code_probs), the trainer gathers
                       it over ranks (train/gather.py), the recipe reads it (objectives/recipes.py),
                       evaluation turns it into per-clip rows (eval/embed.py)

Both are TypedDicts rather than dataclasses: Ray Data hands batches as dicts, and DeepSpeed walks dicts
of tensors, not other types, to cast inputs (`engine._cast_inputs_half`) and to hook ZeRO-3's backward
(`deepspeed.runtime.zero.utils.apply_to_tensors_only`, which warns about and skips any other type), as
does the cross-rank gather. A TypedDict is that dict with its keys and types declared, for a reader and
a type checker. Shapes are in the comments: B clips, and for text P candidate narrations of L tokens.

Text holds up to P candidate narrations per clip: candidate 0 is the clip's own narration, the others
temporally close ones (SPEC Sec. 1; MIL-NCE's bag of positives). Wherever one text vector per clip is
meant (losses other than MIL-NCE, codes, reconstruction, retrieval), it is the own narration:
`own_narration` and `clip_vectors` say so in one place.

Nothing here imports torch at run time: the data layer (decode workers without torch) reads
MODALITIES and BATCH_COLUMNS from here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, TypedDict

if TYPE_CHECKING:
    from torch import Tensor

MODALITIES = ("video", "audio", "text")  # in this order wherever modalities are listed

OWN_NARRATION = 0  # the candidate that is the clip's own narration


class Column(NamedTuple):
    """One ClipBatch key: its modality, numpy dtype name and per-clip dims (a name is a size from
    the data config, resolved by mmdist.data.shapes.batch_shapes; an int is fixed)."""

    modality: str
    dtype: str
    dims: tuple[str | int, ...]


# Every ClipBatch key, in the order the pipeline writes them. T frames of H x W pixels, n_mels x F
# spectrogram frames, P candidate narrations of L tokens.
BATCH_COLUMNS: dict[str, Column] = {
    "video": Column("video", "uint8", ("T", "H", "W", 3)),
    "audio": Column("audio", "float32", ("n_mels", "F")),
    "audio_frame_mask": Column("audio", "bool", ("F",)),
    "text_tokens": Column("text", "int64", ("P", "L")),
    "text_token_mask": Column("text", "bool", ("P", "L")),
    "text_candidate_mask": Column("text", "bool", ("P",)),
    "has_video": Column("video", "bool", ()),
    "has_audio": Column("audio", "bool", ()),
    "has_text": Column("text", "bool", ()),
}


class ClipBatch(TypedDict):
    """B decoded clips, as the model reads them (torch tensors; numpy arrays before `to_clip_batch`).

    A missing modality's entries are zeros and its `has_<m>` False; padded frames, tokens and
    narrations are zeros and False in their masks. The same keys as BATCH_COLUMNS."""

    video: Tensor  # uint8 [B, T, H, W, 3] RGB frames
    audio: Tensor  # float32 [B, n_mels, F] log-mel spectrogram
    audio_frame_mask: Tensor  # bool [B, F] frames inside the clip
    text_tokens: Tensor  # int64 [B, P, L] token ids; candidate 0 is the clip's own narration
    text_token_mask: Tensor  # bool [B, P, L] real tokens
    text_candidate_mask: Tensor  # bool [B, P] real narrations
    has_video: Tensor  # bool [B]
    has_audio: Tensor  # bool [B]
    has_text: Tensor  # bool [B]


class _EveryModelOutput(TypedDict):
    """The keys every ModelOutput has (the others depend on the model's config)."""

    present: dict[str, Tensor]  # bool [B]: the clip has the modality
    embeddings: dict[str, Tensor]  # [B, D]; text [B, P, D], one per candidate narration


class ModelOutput(_EveryModelOutput, total=False):
    """What `MultimodalModel.forward` returns for a ClipBatch; every dict is keyed by modality
    (the model's, in MODALITIES order) unless said otherwise. D: the embedding width.

    Without a codebook, head or decoders the keys that need them are absent. `with_code_probs`
    (mmdist.objectives) replaces `code_features` and `codebook` by `code_probs` on each rank before
    the gather, so the gathered output (train/gather.py: B becomes the global batch) has `code_probs`
    and neither of them; `code_indices` and `code_mask` stay local (evaluation only)."""

    text_candidate_mask: Tensor  # bool [B, P] real narrations of clips with text (text models)
    # head: fac (MMV): "<m>_va" [B, D_fine] for video and audio (the fine space S_va), "<m>_vat" [B, D]
    # (text [B, P, D]) for every modality (the coarse S_vat, which `embeddings` repeats)
    fac: dict[str, Tensor]
    code_features: dict[str, Tensor]  # [B, L_m, D_code] f^M(h) after the batch norm, 0 where invalid
    codebook: Tensor  # [V, D_code] the codewords the indices were chosen from
    code_probs: dict[str, Tensor]  # [B, V] CMCM eqs. 4-5 (with_code_probs)
    code_indices: dict[str, Tensor]  # int [B, L_m], -1 where invalid (text: own narration)
    code_mask: dict[str, Tensor]  # bool [B, L_m] valid positions
    commitment_loss: Tensor  # scalar, already a mean
    reconstruction: dict[str, tuple[Tensor, Tensor]]  # MCN: (decoded, detached target) [B, C_m]


def own_narration(values):
    """`[B, P, ...]` -> `[B, ...]`: the clip's own narration among its candidates (tensor or array)."""
    return values[:, OWN_NARRATION]


def clip_vectors(modality: str, vectors):
    """One vector per clip: a text output with a candidate axis (`[B, P, D]`) gives the own narration's,
    anything else (`[B, D]`) is returned as it is."""
    return own_narration(vectors) if modality == "text" and vectors.ndim == 3 else vectors


def columns_of(modality: str) -> tuple[str, ...]:
    """The ClipBatch keys a modality's encoder reads, the modality's data first."""
    return tuple(name for name, column in BATCH_COLUMNS.items() if column.modality == modality)
