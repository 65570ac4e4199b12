"""Text encoder f_fine^t as CLIP's text tower (`model.text.backbone: open_clip`).

open_clip's `TextTransformer`, built from the config's sizes (ViT-B-32's `text_cfg`: context 77,
width 512, 8 heads, 12 layers, projection 512; set `quick_gelu: true` for OpenAI's weights), no
weights downloaded. It reads CLIP BPE ids (`data.text.tokenizer: clip_bpe`). Each token's output
goes through the final LayerNorm and the tower's own projection, then a ReLU: the per-token "linear +
ReLU" of the in-house encoder's word branch (`mmdist.models.text`), here with CLIP's pretrained
projection, so the fine features H^t are non-negative as the MCN decoders expect.

Attention is causal (CLIP's mask), and padding sits after the tokens, so a token never sees
padding: no key-padding mask is needed, and an absent narration (all padding) stays finite.

Pretrained weights (`model.text.weights`): the tower's keys (`token_embedding.weight`,
`positional_embedding`, `transformer.*`, `ln_final.*`, `text_projection`), which is also how an
open_clip CLIP checkpoint names them; its image tower and logit scale are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, TextTransformer
from torch import nn

from mmdist.config import ConfigError, boolean, one_of, positive_int, positive_number



class TokenTextTransformer(TextTransformer):
    """open_clip's TextTransformer (same parameters and key names) whose forward gives every token's
    projected feature instead of the pooled end token, for any length up to the context.

    A subclass, not a caller reaching into the tower: DeepSpeed ZeRO-3 gathers a module's own
    parameters (positional_embedding, text_projection) only when that module's forward runs."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # [N, L, width]
        causal = self.attn_mask[:length, :length].to(x.dtype)  # [L, L], -inf above the diagonal
        x = self.ln_final(self.transformer(x, attn_mask=causal))  # [N, L, width]
        return x @ self.text_projection.to(x.dtype)  # [N, L, C]


class ClipTextEncoder(nn.Module):
    """token ids `[N, L]` + token mask `[N, L]` -> H^t `[N, L, C]` (mask unchanged), L <= context length."""

    # the rest of an open_clip CLIP checkpoint: the image tower and the contrastive temperature
    IGNORED_WEIGHT_PREFIXES = ("visual.", "logit_scale", "logit_bias")

    def __init__(self, vocab_size: int, context_length: int, width: int, heads: int, layers: int, mlp_ratio: float,
                 quick_gelu: bool, out_channels: int, pool: str):
        super().__init__()
        self.backbone = TokenTextTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=heads,
            layers=layers,
            mlp_ratio=mlp_ratio,
            output_dim=out_channels,
            act_layer=QuickGELU if quick_gelu else nn.GELU,
        )
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.out_channels = out_channels
        self.pool = pool

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(
                f"{length} tokens per narration (data.text.max_tokens) exceed model.text.context_length="
                f"{self.context_length} (the tower's positional embeddings)"
            )
        tokens = tokens.masked_fill(~mask, 0)  # padded ids never reach the embedding
        return F.relu(self.backbone(tokens)), mask  # [N, L, C]

    def pretrained_module(self) -> nn.Module:
        return self.backbone


def build_clip_text_encoder(cfg: Mapping, vocab_size: int, path: str = "model.text") -> ClipTextEncoder:
    width = positive_int(cfg["width"], f"{path}.width")
    heads = positive_int(cfg["heads"], f"{path}.heads")
    if width % heads:
        raise ConfigError(f"{path}.width ({width}) must be divisible by {path}.heads ({heads})")
    return ClipTextEncoder(
        vocab_size=vocab_size,
        context_length=positive_int(cfg["context_length"], f"{path}.context_length"),
        width=width,
        heads=heads,
        layers=positive_int(cfg["layers"], f"{path}.layers"),
        mlp_ratio=positive_number(cfg["mlp_ratio"], f"{path}.mlp_ratio"),
        quick_gelu=boolean(cfg["quick_gelu"], f"{path}.quick_gelu"),
        out_channels=positive_int(cfg["out_channels"], f"{path}.out_channels"),
        pool=one_of(cfg["pool"], ("mean", "max"), f"{path}.pool"),
    )
