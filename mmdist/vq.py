"""The codebook shared by all modalities (CMCM eq. 2 and Appendix A, SPEC Sec. 4).

`VectorQuantizer` replaces each row by its nearest codeword (straight-through),
keeps the codewords as an exponential moving average of the rows assigned to
them, and re-initialises codewords that nobody used for `dead_after` updates.
`ModalityBatchNorm` is the modality-wise batch norm the model applies *before*
calling the quantiser (Appendix A: "input fine-grained representations are
modality-wise batch normalized"); the quantiser quantises exactly what it is given.

Distributed: the per-code counts and sums are all-reduced before every EMA step
and the reset choice is drawn from a generator seeded by (seed, update number), so
all ranks hold bit-identical codebooks without any broadcast (SPEC 8.8).
Precision: distances, EMA and state are at least fp32 even under bf16 autocast or
after `module.bfloat16()` (SPEC 8.8: bf16 distances lose codes).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from mmdist import dist
from mmdist.contracts import MODALITIES


class VQResult(NamedTuple):
    quantized: torch.Tensor  # [N, D] straight-through: forward = codeword, backward = identity
    indices: torch.Tensor  # [N] long
    commitment_loss: torch.Tensor  # scalar, already multiplied by beta


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """|x - e|^2 for every row and codeword as |x|^2 - 2 x.e + |e|^2 (one matmul, SPEC Sec. 4).

    x [N, D], codebook [V, D] -> [N, V], clamped at 0 (the expansion can dip below by rounding).
    """
    x_sq = x.pow(2).sum(dim=1, keepdim=True)  # [N, 1]
    e_sq = codebook.pow(2).sum(dim=1, keepdim=True).t()  # [1, V]
    # one [N, V] buffer: the matmul writes onto the broadcast |e|^2, |x|^2 is added in place
    return torch.addmm(e_sq, x, codebook.t(), alpha=-2.0).add_(x_sq).clamp_min_(0.0)


def perplexity(counts) -> float:
    """exp(entropy) of the code-usage distribution `counts` [V]: V for uniform use, 1 when one codeword
    takes all, 0 when nothing was counted. A tensor (training's codebook usage) or an array (evaluation's
    counts, mmdist.eval.codebook: computed in float64)."""
    if not isinstance(counts, torch.Tensor):
        counts = torch.as_tensor(counts, dtype=torch.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or fp64 when the caller works in fp64 (tests): never below fp32."""
    return torch.promote_types(dtype, torch.float32)


class VectorQuantizer(nn.Module):
    """Shared EMA codebook (CMCM eq. 2, Appendix A eqs. 9-10).

    forward(x [N, D], modality_ids [N] | None) -> VQResult. In training mode every
    call performs exactly one EMA update (or, with `defer_updates`, adds its statistics
    to the one update `apply_pending_update` makes), with statistics summed over all ranks:
        N_v <- g N_v + (1 - g) |H_v|,   m_v <- g m_v + (1 - g) sum(H_v),   e_v = m_v / N_v
    from N_v = 1, m_v ~ N(0, 1) (eq. 9). A codeword unused for `dead_after`
    consecutive updates is reset to a randomly chosen codeword activated in this
    update, plus `reset_noise` * N(0, 1) so the two can split, with its EMA state
    restarted (N_v = 1, m_v = e_v). The codebook is a buffer: it gets no gradient.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        decay: float = 0.99,
        dead_after: int = 100,
        commitment: float = 0.25,
        modalities: Sequence[str] = MODALITIES,
        seed: int = 0,
        reset_noise: float = 0.01,
    ):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer: num_codes ({num_codes}) and dim ({dim}) must be >= 1")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must be in [0, 1), got {decay}")
        if dead_after < 1:
            raise ValueError(f"VectorQuantizer: dead_after must be >= 1, got {dead_after}")
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.dead_after = decay, dead_after
        self.commitment, self.reset_noise, self.seed = commitment, reset_noise, seed
        self.modalities = tuple(modalities)

        # Same seed on every rank -> the same initial codebook everywhere (eq. 9).
        init = torch.randn(num_codes, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("ema_sum", init.clone())  # m [V, D]
        self.register_buffer("ema_count", torch.ones(num_codes))  # N [V]
        self.register_buffer("embed", init)  # e = m / N [V, D]
        self.register_buffer("idle_updates", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_resets", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_resets", torch.zeros((), dtype=torch.long))
        # Global counts of the last update, one row per modality + one for rows without an id.
        self.register_buffer("last_counts", torch.zeros(len(self.modalities) + 1, num_codes))
        # False: every training call is one EMA update (SPEC Sec. 4). True (the trainer): calls only sum
        # their statistics and `apply_pending_update` makes the one update of an optimizer step.
        self.defer_updates = False
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def codebook(self) -> torch.Tensor:
        """The codewords e [V, D] (a buffer, no gradient)."""
        return self.embed

    def _apply(self, fn, recurse=True):
        # `module.bfloat16()` / `.half()` (DeepSpeed bf16) must not lower the codebook state.
        super()._apply(fn, recurse)
        for name, buf in self._buffers.items():
            if buf is not None and buf.is_floating_point() and buf.dtype != _working_dtype(buf.dtype):
                self._buffers[name] = buf.float()
        return self

    def forward(
        self, x: torch.Tensor, modality_ids: torch.Tensor | None = None, counted: torch.Tensor | None = None
    ) -> VQResult:
        """`counted [N]` bool (None: all): the rows whose statistics enter the EMA update; the others
        are quantised all the same (the model keeps neighbouring narrations out of the codebook's EMA)."""
        self._check_inputs(x, modality_ids)
        with torch.autocast(device_type=x.device.type, enabled=False):
            work = _working_dtype(x.dtype)
            rows = x.to(work)  # [N, D]
            codebook = self.embed.to(work)  # [V, D]
            indices = squared_distances(rows, codebook).argmin(dim=1)  # [N]
            chosen = codebook[indices]  # [N, D], the pre-update codewords
            global_rows = rows.shape[0]
            if self.training:
                global_rows = self._ema_update(rows.detach(), indices, modality_ids, counted)
            quantized = rows + (chosen - rows).detach()  # eq. 2: x + sg(e_v - x)
            # beta |f(h) - sg(e)|^2, a mean over the GLOBAL batch's rows: scaled by W / (global rows) so
            # that DeepSpeed's gradient averaging gives the single-process gradient (mmdist.dist).
            # The sum keeps the graph connected when this rank has no rows (a zero gradient).
            squared_error = (rows - chosen.detach()).pow(2).sum()
            commitment = self.commitment * squared_error * dist.world_size() / (max(global_rows, 1) * self.dim)
        return VQResult(quantized.to(x.dtype), indices, commitment)

    def _check_inputs(self, x: torch.Tensor, modality_ids: torch.Tensor | None) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer: expected x of shape [N, {self.dim}], got {list(x.shape)}")
        if modality_ids is None:
            return
        if modality_ids.shape != (x.shape[0],):
            raise ValueError(
                f"VectorQuantizer: modality_ids must have shape [{x.shape[0]}], got {list(modality_ids.shape)}"
            )
        if modality_ids.numel() and (modality_ids.min() < 0 or modality_ids.max() >= len(self.modalities)):
            raise ValueError(
                f"VectorQuantizer: modality_ids must index {self.modalities}, got values in "
                f"[{int(modality_ids.min())}, {int(modality_ids.max())}]"
            )

    @torch.no_grad()
    def _ema_update(
        self, rows: torch.Tensor, indices: torch.Tensor, modality_ids: torch.Tensor | None, counted: torch.Tensor | None
    ) -> int:
        """Statistics of all ranks for this call (of the `counted` rows), applied now or, with
        `defer_updates`, summed until `apply_pending_update`; returns the global number of rows quantised."""
        num_groups, num_codes = self.last_counts.shape
        all_rows = float(rows.shape[0])
        groups = modality_ids if modality_ids is not None else torch.full_like(indices, num_groups - 1)
        if counted is not None:
            rows, indices, groups = rows[counted], indices[counted], groups[counted]
        counts = torch.zeros(num_groups, num_codes, dtype=rows.dtype, device=rows.device)
        counts.index_put_((groups, indices), torch.ones_like(indices, dtype=rows.dtype), accumulate=True)
        sums = torch.zeros(num_codes, self.dim, dtype=rows.dtype, device=rows.device)
        sums.index_add_(0, indices, rows)  # [V, D]
        # One collective for both statistics and the row count; after it every rank holds identical bytes.
        packed = dist.all_reduce_sum_(torch.cat([counts.flatten(), sums.flatten(), rows.new_tensor([all_rows])]))
        global_rows = int(packed[-1])
        counts = packed[: counts.numel()].view(num_groups, num_codes)
        sums = packed[counts.numel() : -1].view(num_codes, self.dim)
        if self.defer_updates:
            if self._pending is not None:
                counts, sums = counts + self._pending[0], sums + self._pending[1]
            self._pending = (counts, sums)
        else:
            self._apply_statistics(counts, sums)
        return global_rows

    @torch.no_grad()
    def apply_pending_update(self) -> bool:
        """One EMA step on the statistics summed since the last one (`defer_updates`); False if none.

        The trainer calls it once per optimizer step, so that with gradient accumulation the codebook
        moves once per step on the statistics of every micro-batch, like one update on the whole batch."""
        if self._pending is None:
            return False
        counts, sums = self._pending
        self._pending = None
        self._apply_statistics(counts, sums)
        return True

    def discard_pending_update(self) -> None:
        """Forget the statistics summed since the last update (a skipped optimizer step)."""
        self._pending = None

    @torch.no_grad()
    def _apply_statistics(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """The EMA step (eq. 10) and dead-code resets from global `counts [groups, V]`, `sums [V, D]`."""
        code_counts = counts.sum(dim=0)  # |H_v| [V]
        g = self.decay
        self.ema_count.mul_(g).add_(code_counts.to(self.ema_count.dtype), alpha=1 - g)
        self.ema_sum.mul_(g).add_(sums.to(self.ema_sum.dtype), alpha=1 - g)
        self.embed.copy_(self.ema_sum / self.ema_count.unsqueeze(1))  # eq. 10
        used = code_counts > 0
        self.idle_updates.add_(1).masked_fill_(used, 0)
        self.num_updates.add_(1)
        self.last_counts.copy_(counts)
        self._reset_dead_codes(used)

    def _reset_dead_codes(self, used: torch.Tensor) -> None:
        dead = (self.idle_updates >= self.dead_after).nonzero().squeeze(1)  # [n_dead]
        activated = used.nonzero().squeeze(1)  # [n_active]
        if dead.numel() == 0 or activated.numel() == 0:
            self.last_resets.zero_()
            return
        # Seeded by the update number: identical on every rank, and reproducible after a
        # restart from a checkpoint (the counter is a buffer, a generator object is not).
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.num_updates))
        pick = torch.randint(activated.numel(), (dead.numel(),), generator=generator)
        noise = torch.randn(dead.numel(), self.dim, generator=generator, dtype=self.embed.dtype)
        fresh = self.embed[activated[pick.to(activated.device)]] + self.reset_noise * noise.to(self.embed.device)
        self.embed[dead] = fresh
        self.ema_sum[dead] = fresh
        self.ema_count[dead] = 1.0
        self.idle_updates[dead] = 0
        self.last_resets.fill_(dead.numel())
        self.num_resets.add_(dead.numel())

    @torch.no_grad()
    def usage(self) -> dict:
        """Usage of the last training update (global over ranks) and totals so far.

        Keys: active_codes (codes used in the last update), perplexity (exp of the usage
        entropy; V when usage is uniform, 1 when one code takes everything), resets
        (total re-initialisations so far), resets_last_update, updates,
        active_codes_<modality>, and counts: {modality: LongTensor [V]} per-code uses.
        """
        counts = self.last_counts
        code_counts = counts.sum(dim=0)
        report = {
            "active_codes": int((code_counts > 0).sum()),
            "perplexity": perplexity(code_counts),
            "resets": int(self.num_resets),
            "resets_last_update": int(self.last_resets),
            "updates": int(self.num_updates),
            "counts": {name: counts[i].round().long().cpu() for i, name in enumerate(self.modalities)},
        }
        for i, name in enumerate(self.modalities):
            report[f"active_codes_{name}"] = int((counts[i] > 0).sum())
        return report


class ModalityBatchNorm(nn.Module):
    """One BatchNorm1d per modality, applied to the rows of `x` by modality id (CMCM App. A).

    x [N, D], modality_ids [N] indexing `modalities` -> [N, D]. `affine=False` by
    default: the normalised rows then have the zero-mean unit-variance scale the
    codebook is initialised at (m ~ N(0, 1)), and the projection f^M in front of
    this module already learns any scale.
    """

    def __init__(self, dim: int, modalities: Sequence[str], eps: float, momentum: float, affine: bool = False):
        super().__init__()
        self.modalities = tuple(modalities)
        self.norms = nn.ModuleDict(
            {name: nn.BatchNorm1d(dim, eps=eps, momentum=momentum, affine=affine) for name in self.modalities}
        )

    def forward(self, x: torch.Tensor, modality_ids: torch.Tensor) -> torch.Tensor:
        if modality_ids.shape != (x.shape[0],):
            raise ValueError(f"ModalityBatchNorm: modality_ids must have shape [{x.shape[0]}], "
                             f"got {list(modality_ids.shape)}")
        if modality_ids.numel() and (modality_ids.min() < 0 or modality_ids.max() >= len(self.modalities)):
            raise ValueError(f"ModalityBatchNorm: modality_ids must index {self.modalities}")
        parts = []  # (rows [n_m], normalised [n_m, D]) per modality present
        for i, name in enumerate(self.modalities):
            rows = (modality_ids == i).nonzero().squeeze(1)
            # distributed, every rank runs every norm even on no rows: the trainer turns them into
            # GlobalBatchNorm, a collective, and a rank that skipped it would hang the others
            if rows.numel() or dist.is_distributed():
                parts.append((rows, self.norms[name](x[rows])))
        # batch_norm may compute in fp32 under autocast; assemble in the dtype it produced
        out = x.new_zeros(x.shape, dtype=parts[0][1].dtype if parts else x.dtype)
        for rows, normalised in parts:
            out = out.index_put((rows,), normalised)
        return out
