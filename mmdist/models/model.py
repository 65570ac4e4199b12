"""The multimodal model: encoders, heads, the optional codebook branch and MCN decoders.

`build_model(model_cfg, data_cfg)` reads `configs/model/<preset>.yaml` (the group's content,
keys named `model.*` in errors) and the sizes it needs from the data config (`data.*`).
`model(batch) -> ModelOutput` works on the local ClipBatch (both: mmdist/contracts.py); the trainer
gathers across ranks afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mmdist.config import (
    ConfigError,
    boolean,
    check_section,
    lookup,
    non_negative_number,
    one_of,
    positive_int,
    positive_ints,
    positive_number,
)
from mmdist.config_schema.model import Model
from mmdist.contracts import MODALITIES, OWN_NARRATION, ClipBatch, ModelOutput, own_narration
from mmdist.data.text import TOKENIZERS, vocabulary_size
from mmdist.models.audio import build_audio_encoder
from mmdist.models.batch import check_batch
from mmdist.models.codes import CodeBranch
from mmdist.models.heads import Decoder, FACHeads, GatedEmbedding
from mmdist.models.layers import masked_pool
from mmdist.models.text import build_text_encoder
from mmdist.models.video import build_video_encoder


class MultimodalModel(nn.Module):
    """Encoders give fine features H^M; pooling + heads give the embeddings z^M (SPEC Sec. 2).

    With the codebook, z^M = f_high(H^M) + f_code(H_bar^M) (CMCM eq. 3), and the projected
    features and the codebook come out for the objectives to turn into the code distributions
    of CMCM eqs. 4-5 (mmdist.objectives.with_code_probs).

    Absent modalities are computed on zeroed inputs, so every rank runs the same graph and
    every parameter gets a gradient, and are flagged in `present` for the losses to mask.
    Whatever an absent or padded entry holds never reaches an output. The encoders' batch
    norms do count zeroed clips in their training statistics; the codebook's batch norm and
    EMA see only present clips and real positions.
    """

    def __init__(
        self,
        encoders: nn.ModuleDict,
        embedding_heads: nn.ModuleDict | None,
        fac: FACHeads | None,
        codes: CodeBranch | None,
        decoders: nn.ModuleDict | None,
        embed_dim: int,
        n_mels: int,
        vocab_size: int,
    ):
        super().__init__()
        self.modalities = [m for m in MODALITIES if m in encoders]
        self.encoders = encoders
        self.embedding_heads = embedding_heads
        self.fac = fac
        self.codes = codes
        self.decoders = decoders
        self.embed_dim = embed_dim
        self.n_mels = n_mels
        self.vocab_size = vocab_size

    def encode(self, batch: ClipBatch) -> tuple[dict, dict, dict]:
        """-> fine features H `[N, L, C]`, valid positions `[N, L]`, present `[B]` by modality.

        N is B for video and audio, B * P for text (every candidate narration is encoded).
        """
        present = {m: batch[f"has_{m}"] for m in self.modalities}
        fine, valid = {}, {}
        if "video" in self.modalities:
            video = batch["video"]  # uint8 [B, T, H, W, 3]
            shown = present["video"].view(-1, 1, 1, 1, 1)
            fine["video"] = self.encoders["video"](torch.where(shown, video, torch.zeros_like(video)))
            valid["video"] = present["video"].unsqueeze(1).expand(fine["video"].shape[:2])  # [B, L_v]
        if "audio" in self.modalities:
            frame_mask = batch["audio_frame_mask"] & present["audio"].unsqueeze(1)  # [B, F]
            fine["audio"], valid["audio"] = self.encoders["audio"](batch["audio"], frame_mask)
        if "text" in self.modalities:
            tokens = batch["text_tokens"]  # [B, P, L]
            real = batch["text_token_mask"] & batch["text_candidate_mask"].unsqueeze(2)
            real = real & present["text"].view(-1, 1, 1)  # [B, P, L]
            fine["text"], valid["text"] = self.encoders["text"](tokens.flatten(0, 1), real.flatten(0, 1))
        return fine, valid, present

    def forward(self, batch: ClipBatch) -> ModelOutput:
        size = check_batch(batch, self.modalities, self.n_mels, self.vocab_size)
        fine, valid, present = self.encode(batch)
        pooled = {m: masked_pool(fine[m], valid[m], self.encoders[m].pool) for m in self.modalities}  # [N, C]
        if "text" in pooled:
            pooled["text"] = pooled["text"].unflatten(0, (size, -1))  # [B, P, C_t]

        out: ModelOutput = {"present": present, "embeddings": {}}
        if "text" in self.modalities:
            out["text_candidate_mask"] = batch["text_candidate_mask"] & present["text"].unsqueeze(1)  # [B, P]
        if self.fac is not None:
            out["fac"] = self.fac(pooled)
            # The coarse space S_vat is where every modality meets text (MMV Sec. 3.1): the embeddings.
            # Vision and audio also meet in the fine space S_va (out["fac"]["<m>_va"]), where the va loss
            # and evaluation compare them (mmdist.models.heads.comparison_space).
            out["embeddings"] = {m: out["fac"][f"{m}_vat"] for m in self.modalities}
        else:
            out["embeddings"] = {m: self.embedding_heads[m](pooled[m]) for m in self.modalities}  # f_high(H)
        if self.codes is not None:
            code_embeddings, code_outputs = self.discretise(fine, valid, size)
            for m in self.modalities:
                continuous = out["embeddings"][m] if self.codes.with_continuous else 0.0
                out["embeddings"][m] = continuous + code_embeddings[m]  # CMCM eq. 3
            out.update(code_outputs)
        if self.decoders is not None:
            out["reconstruction"] = self.reconstruct(out["embeddings"], pooled)
        return out

    def discretise(self, fine: dict, valid: dict, size: int) -> tuple[dict, dict]:
        """-> f_code(H_bar) by modality (`[B, D]`, text `[B, P, D]`) and the code outputs:
        `code_features` (f^M(h) after the batch norm, `[B, L_m, D_code]`), `codebook` (`[V, D_code]`,
        the codewords the indices were chosen from), `code_indices`, `code_mask`, `commitment_loss`.
        The code distributions (CMCM eqs. 4-5) are the objectives' to compute from them
        (mmdist.objectives.with_code_probs)."""
        fine, valid = self.codes.coarsen(fine, valid)  # the codes' granularity (CMCM Appendix B)
        counted = None
        if "text" in fine and self.codes.ema_text == "own":
            # every candidate narration is quantised (eq. 3 in any slot), but only the clip's own one
            # steers the codebook: otherwise text weighs P times a clip in the EMA and dead-code counts
            candidates = fine["text"].shape[0] // size
            candidate = torch.arange(fine["text"].shape[0], device=fine["text"].device) % candidates
            counted = {"text": candidate == OWN_NARRATION}
        codes = self.codes(fine, valid, counted)
        code_embeddings = {}
        out: dict = {"code_features": {}, "codebook": codes.codebook, "code_indices": {}, "code_mask": {},
                     "commitment_loss": codes.commitment_loss}
        for m in self.modalities:
            normalised, mask, indices = codes.normalised[m], valid[m], codes.indices[m]
            code_embeddings[m] = codes.code_embedding[m]  # [B, D]
            if m == "text":  # codes describe the clip's own narration
                normalised, mask, indices = (own_narration(x.unflatten(0, (size, -1))) for x in (normalised, mask, indices))
                code_embeddings[m] = code_embeddings[m].unflatten(0, (size, -1))  # [B, P, D]
            out["code_features"][m] = normalised  # [B, L_m, D_code], 0 where not valid
            out["code_indices"][m] = indices  # [B, L_m], -1 where not valid
            out["code_mask"][m] = mask  # [B, L_m]
        return code_embeddings, out

    def reconstruct(self, embeddings: dict, pooled: dict) -> dict:
        """MCN eqs. 8-9: decode each embedding back to the pooled encoder features that fed its
        head; the target is detached (SPEC 8.5). Text: the clip's own narration."""
        out = {}
        for m in self.modalities:
            embedding, target = embeddings[m], pooled[m]
            if m == "text":
                embedding, target = own_narration(embedding), own_narration(target)
            out[m] = (self.decoders[m](embedding), target.detach())  # [B, C_m] each
        return out


def _data_sizes(data_cfg: Mapping, modalities: list[str]) -> dict:
    sizes = {}
    if "video" in modalities:
        sizes["num_frames"] = positive_int(lookup(data_cfg, "video.num_frames", "data"), "data.video.num_frames")
        sizes["size"] = positive_int(lookup(data_cfg, "video.size", "data"), "data.video.size")
    if "audio" in modalities:
        sizes["n_mels"] = positive_int(lookup(data_cfg, "audio.n_mels", "data"), "data.audio.n_mels")
    if "text" in modalities:
        tokenizer = one_of(lookup(data_cfg, "text.tokenizer", "data"), TOKENIZERS, "data.text.tokenizer")
        hashed = positive_int(lookup(data_cfg, "text.vocab_size", "data"), "data.text.vocab_size")
        sizes["vocab_size"] = vocabulary_size(tokenizer, hashed)
    return sizes


def _modalities(value) -> list[str]:
    if isinstance(value, str) or not all(m in MODALITIES for m in value) or len(set(value)) != len(value):
        raise ConfigError(f"model.modalities must list distinct names among {list(MODALITIES)}, got {value!r}")
    if len(value) < 2:
        raise ConfigError(f"model.modalities needs at least two modalities to align, got {list(value)}")
    return [m for m in MODALITIES if m in value]


def build_model(model_cfg: Mapping, data_cfg: Mapping) -> MultimodalModel:
    """Build the model of `configs/model/<preset>.yaml` for the input sizes of the data config."""
    cfg = check_section(model_cfg, Model, "model")  # every key, and each encoder's by its backbone
    modalities = _modalities(cfg["modalities"])
    sizes = _data_sizes(data_cfg, modalities)
    head = one_of(cfg["head"], ("joint", "fac"), "model.head")
    reconstruction = boolean(cfg["reconstruction"], "model.reconstruction")
    if cfg["init_checkpoint"] is not None and not isinstance(cfg["init_checkpoint"], str):
        raise ConfigError(f"model.init_checkpoint must be null or a path, got {cfg['init_checkpoint']!r}")

    encoders = nn.ModuleDict()
    if "video" in modalities:
        encoders["video"] = build_video_encoder(cfg["video"], sizes["num_frames"], sizes["size"])
        _check_reaches(encoders["video"].temporal_stride, sizes["num_frames"], "model.video", "data.video.num_frames")
        _check_reaches(encoders["video"].spatial_stride, sizes["size"], "model.video", "data.video.size")
    if "audio" in modalities:
        encoders["audio"] = build_audio_encoder(cfg["audio"], sizes["n_mels"])
    if "text" in modalities:
        encoders["text"] = build_text_encoder(cfg["text"], sizes["vocab_size"])
    widths = {m: encoders[m].out_channels for m in modalities}

    embed_dim = positive_int(cfg["embed_dim"], "model.embed_dim")
    fac_cfg = cfg["fac"]
    embedding_heads, fac = None, None
    if head == "fac":
        if "video" not in modalities:
            raise ConfigError("model.head = fac needs video in model.modalities (vision is the FAC hub)")
        fine_dim = positive_int(fac_cfg["fine_dim"], "model.fac.fine_dim")
        # In FAC mode the embeddings are the coarse S_vat vectors; model.embed_dim is the joint head's.
        embed_dim = positive_int(fac_cfg["coarse_dim"], "model.fac.coarse_dim")
        fac = FACHeads(widths, fine_dim, embed_dim)
    else:
        embedding_heads = nn.ModuleDict({m: GatedEmbedding(widths[m], embed_dim) for m in modalities})

    video_grid = None
    if "video" in modalities:  # the encoder's (t, h, w) positions
        video_grid = encoders["video"].grid(sizes["num_frames"], sizes["size"])
    codes = _build_codes(cfg["codebook"], widths, embed_dim, head, video_grid)
    decoders = None
    if reconstruction:
        hidden = positive_int(cfg["reconstruction_hidden_dim"], "model.reconstruction_hidden_dim")
        decoders = nn.ModuleDict({m: Decoder(embed_dim, hidden, widths[m]) for m in modalities})
    return MultimodalModel(
        encoders,
        embedding_heads,
        fac,
        codes,
        decoders,
        embed_dim,
        n_mels=sizes.get("n_mels", 0),
        vocab_size=sizes.get("vocab_size", 0),
    )


def _build_codes(
    cfg: Mapping, widths: Mapping[str, int], embed_dim: int, head: str, video_grid: tuple | None
) -> CodeBranch | None:
    if not boolean(cfg["enabled"], "model.codebook.enabled"):
        return None
    if head == "fac":
        raise ConfigError(
            "model.codebook.enabled = true needs model.head = joint (CMCM eq. 3 adds f_code to the joint embedding)"
        )
    decay = positive_number(cfg["decay"], "model.codebook.decay")
    if decay >= 1:
        raise ConfigError(f"model.codebook.decay must be in (0, 1), got {decay}")
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError(f"model.codebook.seed must be an integer, got {cfg['seed']!r}")
    return CodeBranch(
        widths,
        embed_dim,
        num_codes=positive_int(cfg["num_codes"], "model.codebook.num_codes"),
        dim=positive_int(cfg["dim"], "model.codebook.dim"),
        decay=decay,
        dead_after=positive_int(cfg["dead_after"], "model.codebook.dead_after"),
        commitment=non_negative_number(cfg["commitment"], "model.codebook.commitment"),
        reset_noise=non_negative_number(cfg["reset_noise"], "model.codebook.reset_noise"),
        seed=cfg["seed"],
        video_grid_in=video_grid,
        video_grid=_code_grid(cfg["video_grid"], video_grid),
        audio_positions_per_code=positive_int(cfg["audio_positions_per_code"], "model.codebook.audio_positions_per_code"),
        with_continuous=boolean(cfg["with_continuous"], "model.codebook.with_continuous"),
        ema_text=one_of(cfg["ema_text"], ("own", "all"), "model.codebook.ema_text"),
        norm_momentum=non_negative_number(cfg["norm_momentum"], "model.codebook.norm_momentum"),
        norm_eps=positive_number(cfg["norm_eps"], "model.codebook.norm_eps"),
    )


def _code_grid(value, encoder_grid: tuple | None) -> tuple | None:
    """model.codebook.video_grid: null (every encoder position) or [t, h, w], each axis capped at the
    encoder's (small test clips have fewer positions than the grid; pooling never duplicates them)."""
    if value is None or encoder_grid is None:
        return encoder_grid
    grid = positive_ints(value, "model.codebook.video_grid", 3)
    return tuple(min(g, e) for g, e in zip(grid, encoder_grid))


def _check_reaches(stride: int, size: int, model_key: str, data_key: str) -> None:
    if size < stride:
        raise ConfigError(f"{data_key} = {size} is smaller than the total stride {stride} of {model_key}")
