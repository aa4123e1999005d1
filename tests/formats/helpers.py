"""Random matrices that already follow each pattern (shared by the format and reference tests)."""

from __future__ import annotations

import torch


def random_24_rows(rows: int, cols: int, g: torch.Generator, fill: float = 1.0) -> torch.Tensor:
    """fp32 ``[rows, cols]`` with exactly 2 (or fewer, by ``fill``) nonzeros per group of 4."""
    w = torch.randn(rows, cols // 4, 4, generator=g)
    keep = torch.rand(rows, cols // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True)
    mask &= torch.rand(rows, cols // 4, 4, generator=g) < fill
    return (w * mask).reshape(rows, cols)


def random_samoyeds(rows, cols, n=1, m=2, vector=128, dtype=torch.float16, seed=0, fill=1.0):
    """A dense matrix in the Samoyeds pattern: n of m rows per window kept, 2:4 inside kept rows."""
    g = torch.Generator().manual_seed(seed)
    dense = random_24_rows(rows, cols, g, fill).view(rows // m, m, cols // vector, vector)
    keep = torch.rand(rows // m, m, cols // vector, generator=g).argsort(1)[:, :n]
    rowmask = torch.zeros(rows // m, m, cols // vector, dtype=torch.bool).scatter_(1, keep, True)
    return (dense * rowmask.unsqueeze(-1)).reshape(rows, cols).to(dtype)


def random_venom(rows, cols, v=4, n=4, m=8, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randn(rows // v, v, cols // m, m, generator=g)
    keep = torch.rand(rows // v, cols // m, m, generator=g).argsort(-1)[..., :n]
    colmask = torch.zeros(rows // v, cols // m, m, dtype=torch.bool).scatter_(-1, keep, True)
    blocks = blocks * colmask.unsqueeze(1)
    # 2:4 inside the kept columns of each row
    kept = torch.gather(blocks, -1, keep.sort(-1).values.unsqueeze(1).expand(-1, v, -1, -1)).reshape(rows, -1)
    kept24 = kept * (random_24_rows(rows, kept.shape[1], g) != 0)
    out = torch.zeros_like(blocks)
    out.scatter_(-1, keep.sort(-1).values.unsqueeze(1).expand(-1, v, -1, -1), kept24.view(rows // v, v, cols // m, n))
    return out.reshape(rows, cols).to(dtype)
