"""Brute-force, plain-Python references for the pruning masks (loops over every row, group, window).

Deliberately written independently of the vectorised code: ordering is ``sorted`` with the key
``(-score, index)``, i.e. largest score first and, among equal scores, the lower index first.
"""

from __future__ import annotations

import math

import torch


def top_n(values: list[float], n: int) -> set[int]:
    """Indices of the ``n`` largest values (ties: lower index first)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:n])


def nm_ref(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    s = scores.double().tolist()
    rows, cols = len(s), len(s[0])
    out = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        for g in range(0, cols, m):
            for i in top_n(s[r][g : g + m], n):
                out[r, g + i] = True
    return out


def samoyeds_ref(scores: torch.Tensor, n: int, m: int, vector: int) -> torch.Tensor:
    s = scores.double().tolist()
    rows, cols = len(s), len(s[0])
    keep24 = nm_ref(scores, 2, 4)
    out = torch.zeros(rows, cols, dtype=torch.bool)
    for w0 in range(0, cols, vector):
        for r0 in range(0, rows, m):
            row_scores = []
            for r in range(r0, r0 + m):
                total = 0.0
                for g in range(w0, w0 + vector, 4):
                    total += sum(sorted(s[r][g : g + 4], reverse=True)[:2])  # what 2:4 keeps
                row_scores.append(total)
            for j in top_n(row_scores, n):
                r = r0 + j
                out[r, w0 : w0 + vector] = keep24[r, w0 : w0 + vector]
    return out


def venom_ref(scores: torch.Tensor, v: int, n: int, m: int) -> torch.Tensor:
    s = scores.double().tolist()
    rows, cols = len(s), len(s[0])
    out = torch.zeros(rows, cols, dtype=torch.bool)
    for r0 in range(0, rows, v):
        kept_cols = []  # kept dense columns of this row block, ascending
        for c0 in range(0, cols, m):
            col_scores = [sum(s[r][c0 + j] for r in range(r0, r0 + v)) for j in range(m)]
            kept_cols += sorted(c0 + j for j in top_n(col_scores, n))
        for r in range(r0, r0 + v):
            for g in range(0, len(kept_cols), 4):
                group = kept_cols[g : g + 4]
                for i in top_n([s[r][c] for c in group], 2):
                    out[r, group[i]] = True
    return out


def unstructured_ref(scores: torch.Tensor, density: float) -> torch.Tensor:
    flat = scores.double().flatten().tolist()
    k = min(len(flat), math.floor(density * len(flat) + 0.5))
    out = torch.zeros(len(flat), dtype=torch.bool)
    for i in top_n(flat, k):
        out[i] = True
    return out.view(scores.shape)


def tie_heavy(shape, seed: int, levels: int = 4, dtype=torch.float32) -> torch.Tensor:
    """Scores drawn from a few small integers (exact in every float dtype) so ties are everywhere."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, shape, generator=g).to(dtype)


def continuous(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).to(dtype)
