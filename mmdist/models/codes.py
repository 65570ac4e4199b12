"""CMCM's discrete branch: f^M, the modality-wise batch norm, the shared codebook and f_code.

CMCM eq. 2: h_bar = f^M(h) + sg(e_v - f^M(h)), with f^M a linear projection per modality
(CMCM Sec. 3: "single linear layers") whose output is batch-normalised per modality
(Appendix A) before quantisation. Eq. 3: z = f_high(H) + f_code(H_bar), with f_code a mean over
the valid quantised positions followed by a linear layer.

The quantiser is called once per forward on the valid positions of all modalities together
(one EMA update per step; every rank calls it, even with nothing to quantise, because its EMA
step all-reduces). Padded positions and absent clips never reach the batch norm or the codebook.
Every real narration candidate is quantised, not only the clip's own: eq. 3 must give a
narration the same embedding whichever slot it sits in (retrieval embeds captions alone).

Granularity (CMCM Appendix B): the paper encodes each video into 3 x 3 x 3 codewords (time, height,
width) and every 16 consecutive spectrogram frames into one codeword, coarser than the encoders'
last feature maps. `coarsen` average-pools the fine features to that granularity first
(`model.codebook.video_grid`, `model.codebook.audio_positions_per_code`); text keeps one code per
token. Without it the tiny video encoder gives 196 positions per clip against 50 for audio, and
the codebook's EMA follows video.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmdist.models.layers import masked_mean
from mmdist.vq import ModalityBatchNorm, VectorQuantizer


@dataclass
class CodeOutput:
    """Per modality, at the positions of the fine features `[N, L]`."""

    normalised: dict[str, torch.Tensor]  # f^M(h) after the batch norm, fp32 [N, L, D_code]; 0 where invalid
    indices: dict[str, torch.Tensor]  # codeword per position, long [N, L]; -1 where invalid
    code_embedding: dict[str, torch.Tensor]  # f_code(H_bar) [N, embed_dim]
    commitment_loss: torch.Tensor  # scalar
    codebook: torch.Tensor  # [V, D_code] the codewords the indices were chosen from (before this call's EMA step)


class CodeBranch(nn.Module):
    def __init__(
        self,
        in_dims: Mapping[str, int],
        embed_dim: int,
        num_codes: int,
        dim: int,
        decay: float,
        dead_after: int,
        commitment: float,
        reset_noise: float,
        seed: int,
        video_grid_in: Sequence[int] | None,
        video_grid: Sequence[int] | None,
        audio_positions_per_code: int,
        with_continuous: bool,
        ema_text: str,
        norm_momentum: float,
        norm_eps: float,
    ):
        super().__init__()
        self.modalities = list(in_dims)
        # (t, h, w) of the video encoder's positions, and of the codes after `coarsen`
        self.video_grid_in = tuple(video_grid_in) if video_grid_in is not None else None
        self.video_grid = tuple(video_grid) if video_grid is not None else self.video_grid_in
        self.audio_positions_per_code = audio_positions_per_code
        # False: z = f_code(H_bar) alone, without f_high(H) (CMCM Table 3 row h, "w/o cont. repr.")
        self.with_continuous = with_continuous
        # "own": only the clip's own narration (candidate 0) enters the EMA; "all": every candidate
        self.ema_text = ema_text
        self.project = nn.ModuleDict({m: nn.Linear(in_dims[m], dim) for m in self.modalities})  # f^M
        self.norm = ModalityBatchNorm(dim, self.modalities, eps=norm_eps, momentum=norm_momentum)
        self.quantizer = VectorQuantizer(
            num_codes, dim, decay, dead_after, commitment, self.modalities, seed, reset_noise=reset_noise
        )
        self.code_to_embedding = nn.ModuleDict({m: nn.Linear(dim, embed_dim) for m in self.modalities})  # f_code

    def _apply(self, fn, recurse=True):
        # `module.bfloat16()` (DeepSpeed bf16) must leave the batch norm in fp32, like the
        # quantiser keeps its codebook: quantisation runs in fp32 (SPEC Sec. 8.8).
        super()._apply(fn, recurse)
        self.norm.float()
        return self

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizer.codebook  # [V, D_code]

    def coarsen(
        self, fine: Mapping[str, torch.Tensor], valid: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Fine features and valid masks at the codes' granularity (module docstring).

        video `[N, t*h*w, C]` -> adaptive average pool to `video_grid` -> `[N, prod(video_grid), C]`;
        audio `[N, f, C]` -> mean over the valid positions of each window of `audio_positions_per_code`
        -> `[N, ceil(f / k), C]`, a window valid when any of its positions is."""
        fine, valid = dict(fine), dict(valid)
        if "video" in fine and self.video_grid != self.video_grid_in:
            x = fine["video"]
            n, length, channels = x.shape
            if length != math.prod(self.video_grid_in):
                raise ValueError(f"video features have {length} positions, not the {self.video_grid_in} grid "
                                 "the model was built for (data.video.num_frames / size)")
            grid = x.transpose(1, 2).reshape(n, channels, *self.video_grid_in)  # [N, C, t, h, w]
            fine["video"] = F.adaptive_avg_pool3d(grid, self.video_grid).flatten(2).transpose(1, 2)
            valid["video"] = valid["video"][:, :1].expand(n, fine["video"].shape[1])  # a clip's positions share its presence
        if "audio" in fine and self.audio_positions_per_code > 1:
            k, weights = self.audio_positions_per_code, valid["audio"].to(fine["audio"].dtype).unsqueeze(1)  # [N, 1, f]
            summed = F.avg_pool1d(fine["audio"].transpose(1, 2) * weights, k, k, ceil_mode=True)  # [N, C, f']
            share = F.avg_pool1d(weights, k, k, ceil_mode=True)  # [N, 1, f'] valid share of each window
            fine["audio"] = (summed / share.clamp_min(1e-6)).transpose(1, 2)
            valid["audio"] = share.squeeze(1) > 0
        return fine, valid

    def forward(
        self,
        fine: Mapping[str, torch.Tensor],
        valid: Mapping[str, torch.Tensor],
        counted: Mapping[str, torch.Tensor] | None = None,
    ) -> CodeOutput:
        """fine: modality -> H `[N, L, C]`; valid: modality -> bool `[N, L]` (present and not padded);
        counted: modality -> bool `[N]`, the items whose positions enter the codebook's EMA (default all;
        the model passes the clip's own narration only, `model.codebook.ema_text`)."""
        modalities = [m for m in self.modalities if m in fine]
        projected = {m: self.project[m](fine[m]) for m in modalities}  # [N, L, D_code]
        # Quantisation runs in fp32 (SPEC Sec. 8.8: bf16 distances lose codes).
        rows = torch.cat([projected[m][valid[m]].float() for m in modalities])  # [N_valid, D_code]
        counts = [int(valid[m].sum()) for m in modalities]
        modality_ids = torch.cat(
            [
                torch.full((count,), self.modalities.index(m), dtype=torch.long, device=rows.device)
                for m, count in zip(modalities, counts)
            ]
        )  # [N_valid]
        counted_rows = None
        if counted:
            counted_rows = torch.cat([
                (counted[m].unsqueeze(1) if m in counted else torch.ones_like(valid[m][:, :1])).expand_as(valid[m])[valid[m]]
                for m in modalities
            ])  # [N_valid]
        normalised_rows = self.norm(rows, modality_ids)
        # The code distributions (CMCM eq. 4) must see the codewords the indices saw, not the ones
        # this call's EMA step and resets leave behind.
        codebook = self.quantizer.codebook.clone() if self.training else self.quantizer.codebook
        result = self.quantizer(normalised_rows, modality_ids, counted_rows)  # one EMA update (training mode)

        out = CodeOutput(normalised={}, indices={}, code_embedding={}, commitment_loss=result.commitment_loss,
                         codebook=codebook)
        for m, normalised_m, quantized_m, indices_m in zip(
            modalities,
            normalised_rows.split(counts),
            result.quantized.split(counts),
            result.indices.split(counts),
        ):
            mask = valid[m]
            shape = (*mask.shape, normalised_m.shape[-1])
            out.normalised[m] = _scatter(normalised_m, mask, shape)  # [N, L, D_code]
            quantized = _scatter(quantized_m, mask, shape).to(projected[m].dtype)  # [N, L, D_code]
            out.code_embedding[m] = self.code_to_embedding[m](masked_mean(quantized, mask))  # [N, embed_dim]
            indices = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
            indices[mask] = indices_m.long()
            out.indices[m] = indices  # [N, L]
        return out


def _scatter(rows: torch.Tensor, mask: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Put `rows [N_valid, D]` back at the True positions of `mask [N, L]`; zeros elsewhere."""
    full = rows.new_zeros(shape)
    full[mask] = rows
    return full
