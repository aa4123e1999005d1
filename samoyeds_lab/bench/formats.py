"""Benchmark: how long pruning + compressing one expert-sized weight takes on this machine (CPU)."""

from __future__ import annotations

import torch

from .._checks import check_alloc, check_divisible, check_int, check_positive_int
from ..formats import compress_nm, compress_samoyeds
from .timing import environment_record, time_cpu

#: The Samoyeds window width the benchmark compresses with (``cols`` must be a multiple of it).
VECTOR = 128
#: Bytes held per weight element at the peak (fp32 draw, fp16 weight, two masks, two pruned copies, workspace).
_BYTES_PER_ELEMENT = 16


def check_formats_args(rows: object, cols: object, repeat: object, seed: object = 0) -> tuple[int, int, int]:
    """Check :func:`bench_formats`'s sizes before anything is allocated (the CLI calls it first)."""
    rows = check_positive_int("rows", rows)
    cols = check_positive_int("cols", cols)
    repeat = check_positive_int("repeat", repeat)
    check_int("seed", seed, lo=0)
    check_divisible("cols", cols, VECTOR, "vector")
    check_alloc("rows", (rows, cols), _BYTES_PER_ELEMENT, what="weight and its pruned copies")
    return rows, cols, repeat


def bench_formats(rows: int = 14336, cols: int = 4096, *, repeat: int = 5, seed: int = 0) -> list[dict]:
    """Time compressing a ``rows × cols`` fp16 expert weight (already pruned) into each format.

    Also times the magnitude mask alone and the full prune + compress
    (:func:`samoyeds_lab.prune.sparsify`) for the Samoyeds 1:2 / V=128 pattern. Returns one record per
    measurement (median of ``repeat`` runs after one warm-up) plus the Samoyeds/dense byte ratio.
    ``rows``, ``cols`` and ``repeat`` are positive ints, ``cols`` a multiple of 128; a weight too large for
    this machine's memory is refused before anything is allocated.
    """
    from ..prune import prune_mask, sparsify

    rows, cols, repeat = check_formats_args(rows, cols, repeat, seed)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g).to(torch.float16)
    env = environment_record()
    records = []
    m_sam = prune_mask(w, "samoyeds", n=1, m=2, vector=VECTOR)
    m_24 = prune_mask(w, "2:4")
    w_sam = w * m_sam
    w_24 = w * m_24
    cases = {
        "compress_samoyeds(1:2, V=128)": lambda: compress_samoyeds(w_sam, 1, 2, VECTOR),
        "compress_nm(2:4)": lambda: compress_nm(w_24, 2, 4),
        "prune_mask(samoyeds, magnitude)": lambda: prune_mask(w, "samoyeds", n=1, m=2, vector=VECTOR),
        "sparsify(samoyeds, magnitude)": lambda: sparsify(w, "samoyeds", n=1, m=2, vector=VECTOR),
    }
    for name, fn in cases.items():
        t = time_cpu(fn, repeat=repeat)
        records.append({**env, "op": name, "m": rows, "k": cols, "dtype": "float16", **t})
    sw = compress_samoyeds(w_sam, 1, 2, VECTOR)
    records.append({**env, "op": "bytes_ratio(samoyeds 1:2 V=128 / dense fp16)", "m": rows, "k": cols,
                    "dtype": "float16", "ratio": sw.nbytes / (rows * cols * 2)})
    return records
