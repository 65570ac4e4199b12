"""Independent references for the objectives: explicit Python loops over i, j (, p, v)
on float64 scalars with the `math` module, written from the papers' equations, never
from the library code. Slow on purpose; use tiny batches.
"""

from __future__ import annotations

import math

import torch


def _rows(x: torch.Tensor) -> list:
    return x.detach().double().tolist()


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(a * a for a in v))
    return [a / norm for a in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _log_sum_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def mms(sim: torch.Tensor, margin: float) -> float:
    """CMCM eq. 1 / MCN eq. 3: both retrieval directions, margin on the positive."""
    s = _rows(sim)
    n = len(s)
    rows = cols = 0.0
    for i in range(n):
        positive = math.exp(s[i][i] - margin)
        rows += -math.log(positive / (positive + sum(math.exp(s[i][k]) for k in range(n) if k != i)))
        cols += -math.log(positive / (positive + sum(math.exp(s[k][i]) for k in range(n) if k != i)))
    return rows / n + cols / n


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> float:
    """MC3 eq. 1, L_{i,j}."""
    q = [_unit(r) for r in _rows(query)]
    k = [_unit(r) for r in _rows(key)]
    n = len(q)
    total = 0.0
    for t in range(n):
        numerator = math.exp(_dot(q[t], k[t]) / temperature)
        denominator = sum(math.exp(_dot(q[t], k[l]) / temperature) for l in range(n))
        total += -math.log(numerator / denominator)
    return total / n


def mil_nce(video: torch.Tensor, text: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> float:
    """MMV eq. 2 with MIL positives and Miech et al.'s two-sided denominator."""
    v = [_unit(r) for r in _rows(video)]
    t = [[_unit(c) for c in clip] for clip in text.detach().double().tolist()]
    n, p = len(v), len(t[0])
    valid = mask.tolist() if mask is not None else [[True] * p for _ in range(n)]
    total = 0.0
    for i in range(n):
        numerator = sum(math.exp(_dot(v[i], t[i][c]) / temperature) for c in range(p) if valid[i][c])
        denominator = 0.0
        for j in range(n):
            for c in range(p):
                if valid[j][c]:
                    denominator += math.exp(_dot(v[i], t[j][c]) / temperature)  # v_i against clip j
                if valid[i][c]:
                    denominator += math.exp(_dot(v[j], t[i][c]) / temperature)  # v_j against clip i
        total += math.log(denominator) - math.log(numerator)
    return total / n


def code_distribution(features: torch.Tensor, codebook: torch.Tensor, mask: torch.Tensor | None = None) -> list:
    """CMCM eqs. 4-5: softmin of the Euclidean distance per position, mean over valid positions."""
    f = features.detach().double().tolist()
    e = _rows(codebook)
    out = []
    for b, clip in enumerate(f):
        total = [0.0] * len(e)
        count = 0
        for l, h in enumerate(clip):
            if mask is not None and not bool(mask[b, l]):
                continue
            distances = [math.sqrt(sum((x - y) ** 2 for x, y in zip(h, code))) for code in e]
            weights = [math.exp(-d) for d in distances]
            norm = sum(weights)
            total = [acc + w / norm for acc, w in zip(total, weights)]
            count += 1
        out.append([acc / count if count else 0.0 for acc in total])
    return out


def code_similarity(p_a: torch.Tensor, p_b: torch.Tensor, floor: float = 1e-8) -> list:
    """CMCM eq. 6, negative symmetric cross-entropy, probabilities floored inside the log."""
    a, b = _rows(p_a), _rows(p_b)
    return [
        [
            sum(a[i][v] * math.log(max(b[j][v], floor)) + b[j][v] * math.log(max(a[i][v], floor)) for v in range(len(a[i])))
            for j in range(len(b))
        ]
        for i in range(len(a))
    ]


def cmcm(p_a: torch.Tensor, p_b: torch.Tensor) -> float:
    """CMCM eq. 7 (A queries, B candidates)."""
    s = code_similarity(p_a, p_b)
    n = len(s)
    return sum(-(s[i][i] - _log_sum_exp(s[i])) for i in range(n)) / n


def consensus(embeddings: dict, anchor: str, alphas: dict, inverse: str = "unscaled") -> float:
    """MC3 eqs. 2-3 with K^-1(y) = 2y - 1 (unscaled) or K_i^-1(y) = 2 y^(1/alpha_i) - 1 (per_modality)."""
    e = {name: [_unit(r) for r in _rows(x)] for name, x in embeddings.items()}
    n = len(e[anchor])
    total = 0.0
    for t in range(n):
        sims = {name: _dot(e[name][t], e[anchor][t]) for name in e if name != anchor}
        y = min(((s + 1) / 2) ** alphas[name] for name, s in sims.items())
        for name, s in sims.items():
            c = 2 * y - 1 if inverse == "unscaled" else 2 * y ** (1 / alphas[name]) - 1
            total += abs(s - c)
    return total / n


def cluster(embedding: torch.Tensor, centroids: torch.Tensor, targets: torch.Tensor, margin: float) -> float:
    """MCN eq. 6 with the margin on the target logit (numerator and denominator)."""
    x, mu = _rows(embedding), _rows(centroids)
    total = 0.0
    for i, target in enumerate(targets.tolist()):
        logits = [_dot(x[i], m) - (margin if k == target else 0.0) for k, m in enumerate(mu)]
        total += -(logits[target] - _log_sum_exp(logits))
    return total / len(x)


def mse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    p, t = _rows(prediction), _rows(target)
    return sum((a - b) ** 2 for row_p, row_t in zip(p, t) for a, b in zip(row_p, row_t)) / (len(p) * len(p[0]))
