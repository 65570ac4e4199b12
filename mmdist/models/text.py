"""Text encoder f_fine^t: token embedding + a small transformer (SPEC Sec. 2).

Positions are sinusoidal, so the encoder takes any narration length. Each token's output goes
through a linear layer and a ReLU, as the word branch of MIL-NCE / MCN (`Sentence_Maxpool`:
linear + ReLU per word, then pooling), which gives non-negative fine features H^t like the
video and audio ResNets' (the MCN decoders end in a ReLU and reconstruct pooled H).

`model.text.backbone` picks the network: `transformer` (this module, for the hashed word ids) or
`open_clip` (CLIP's text tower, for CLIP BPE ids: `mmdist.models.clip_text`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mmdist.config import ConfigError, non_negative_number, one_of, positive_int

BACKBONES = ("transformer", "open_clip")


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Transformer position code (Vaswani et al. 2017, Sec. 3.5) -> `[length, dim]`."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # [L, 1]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class TextEncoder(nn.Module):
    """token ids `[N, L]` + token mask `[N, L]` -> H^t `[N, L, C]` (mask unchanged).

    N is clips x candidate narrations: the model flattens `[B, P, L]` before calling.
    """

    IGNORED_WEIGHT_PREFIXES: tuple[str, ...] = ()  # a weights file holds this whole encoder (mmdist.models.pretrained)

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        layers: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        out_channels: int,
        pool: str,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff_dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # No nested-tensor fast path: it changes padded outputs between train and eval.
        self.transformer = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.output = nn.Linear(dim, out_channels)
        self.scale = math.sqrt(dim)
        self.out_channels = out_channels
        self.pool = pool

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Padded ids never reach the embedding, so their values (even out of range) do not matter.
        tokens = tokens.masked_fill(~mask, 0)
        x = self.embedding(tokens) * self.scale  # [N, L, dim]
        x = x + sinusoidal_positions(tokens.shape[1], x.shape[-1], x.device).to(x.dtype)
        # A row with no token (absent narration) would make attention divide by zero: let it
        # attend to its first slot; the row stays masked everywhere downstream.
        attend = mask.clone()
        attend[:, 0] |= ~mask.any(dim=1)
        x = self.transformer(x, src_key_padding_mask=~attend)  # [N, L, dim]
        return F.relu(self.output(x)), mask  # [N, L, C]

    def pretrained_module(self) -> nn.Module:
        return self


def build_text_encoder(cfg: Mapping, vocab_size: int, path: str = "model.text") -> nn.Module:
    """Build the encoder of `model.text.backbone` for `vocab_size` token ids, checking every key."""
    backbone = cfg.get("backbone") if isinstance(cfg, Mapping) else None
    if backbone == "open_clip":
        from mmdist.models.clip_text import build_clip_text_encoder

        return build_clip_text_encoder(cfg, vocab_size, path)
    one_of(backbone, BACKBONES, f"{path}.backbone")
    dim = positive_int(cfg["dim"], f"{path}.dim")
    heads = positive_int(cfg["heads"], f"{path}.heads")
    if dim % heads or dim % 2:
        raise ConfigError(f"{path}.dim ({dim}) must be even and divisible by {path}.heads ({heads})")
    if cfg["pool"] not in ("mean", "max"):
        raise ConfigError(f"{path}.pool must be 'mean' or 'max', got {cfg['pool']!r}")
    dropout = non_negative_number(cfg["dropout"], f"{path}.dropout")
    if dropout >= 1:
        raise ConfigError(f"{path}.dropout must be in [0, 1), got {dropout}")
    return TextEncoder(
        vocab_size=vocab_size,
        dim=dim,
        layers=positive_int(cfg["layers"], f"{path}.layers"),
        heads=heads,
        ff_dim=positive_int(cfg["ff_dim"], f"{path}.ff_dim"),
        dropout=dropout,
        out_channels=positive_int(cfg["out_channels"], f"{path}.out_channels"),
        pool=cfg["pool"],
    )
