"""Benchmark: how long pruning + compressing one expert-sized weight takes on this machine (CPU)."""

from __future__ import annotations

import torch

from ..formats import compress_nm, compress_samoyeds
from .timing import environment_record, time_cpu


def bench_formats(rows: int = 14336, cols: int = 4096, *, repeat: int = 5, seed: int = 0) -> list[dict]:
    """Time compressing a ``rows × cols`` fp16 expert weight (already pruned) into each format.

    Also times the magnitude mask alone and the full prune + compress
    (:func:`samoyeds_lab.prune.sparsify`) for the Samoyeds 1:2 / V=128 pattern. Returns one record per
    measurement (median of ``repeat`` runs after one warm-up) plus the Samoyeds/dense byte ratio.
    """
    from ..prune import prune_mask, sparsify

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g).to(torch.float16)
    env = environment_record()
    records = []
    m_sam = prune_mask(w, "samoyeds", n=1, m=2, vector=128)
    m_24 = prune_mask(w, "2:4")
    w_sam = w * m_sam
    w_24 = w * m_24
    cases = {
        "compress_samoyeds(1:2, V=128)": lambda: compress_samoyeds(w_sam, 1, 2, 128),
        "compress_nm(2:4)": lambda: compress_nm(w_24, 2, 4),
        "prune_mask(samoyeds, magnitude)": lambda: prune_mask(w, "samoyeds", n=1, m=2, vector=128),
        "sparsify(samoyeds, magnitude)": lambda: sparsify(w, "samoyeds", n=1, m=2, vector=128),
    }
    for name, fn in cases.items():
        t = time_cpu(fn, repeat=repeat)
        records.append({**env, "op": name, "m": rows, "k": cols, "dtype": "float16", **t})
    sw = compress_samoyeds(w_sam, 1, 2, 128)
    records.append({**env, "op": "bytes_ratio(samoyeds 1:2 V=128 / dense fp16)", "m": rows, "k": cols,
                    "dtype": "float16", "ratio": sw.nbytes / (rows * cols * 2)})
    return records
