"""Expert-cache simulator throughput (``samoyeds-lab bench cache``): accesses replayed per second.

The offloading labs sweep every policy over every budget while a slider moves, so the replay loops must be
fast: the target is at least 10 M accesses/s for ``lru`` and ``belady`` on a 2-core CPU. The trace is
synthetic and seeded — Zipf-distributed ids (exponent ``alpha``) over ``ids`` experts, the skew real routing
shows — and every policy replays the same trace at the same capacity. ``sida`` adds one prefetch group of
``prefetch_width`` predicted ids before every ``group``-th access (predictions = the true next ids, so the
cost measured is the replay's, not a predictor's).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_alloc, check_choice, check_float, check_int, check_positive_int
from ..offload.cache import HAVE_NUMBA, simulate_cache
from .timing import environment_record, time_cpu

__all__ = ["zipf_trace", "bench_cache", "CACHE_POLICIES"]

CACHE_POLICIES = ("lru", "fifo", "lfu", "belady", "static", "sida")


def zipf_trace(n: int, ids: int, *, alpha: float = 1.1, seed: int = 0) -> np.ndarray:
    """``int64[n]`` ids in ``[0, ids)`` with P(rank r) ∝ r^-alpha, ranks shuffled over the ids."""
    n = check_positive_int("n", n)
    ids = check_positive_int("ids", ids)
    alpha = check_float("alpha", alpha, lo=0.0, lo_open=True)
    seed = check_int("seed", seed, lo=0)
    check_alloc("n", (n,), 8 * 3, what="trace")  # the ids, the draw and the result, int64 each
    check_alloc("ids", (ids,), 8 * 3, what="id distribution")
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, ids + 1) ** alpha
    p /= p.sum()
    perm = rng.permutation(ids)
    return perm[rng.choice(ids, size=n, p=p)].astype(np.int64)


def bench_cache(n: int = 10_000_000, ids: int = 2048, capacity: int = 64, *, policies=CACHE_POLICIES,
                repeat: int = 5, alpha: float = 1.1, group: int = 8, prefetch_width: int = 4,
                seed: int = 0) -> list[dict]:
    """Median wall time of :func:`~samoyeds_lab.offload.cache.simulate_cache` per policy on one Zipf trace.

    Returns one record per policy with ``accesses_per_s`` (= ``n / median_s``), the hit rate and the
    environment stamp; the first call per policy (numba compilation) is the warm-up and is not timed.
    """
    n = check_positive_int("n", n)
    ids = check_positive_int("ids", ids)
    capacity = check_positive_int("capacity", capacity)
    repeat = check_positive_int("repeat", repeat)
    group = check_positive_int("group", group)
    prefetch_width = check_positive_int("prefetch_width", prefetch_width)
    if isinstance(policies, str):
        raise TypeError(f"policies: expected a sequence of policy names, got a str ({policies!r})")
    policies = list(policies)
    if not policies:
        raise ValueError("policies: expected at least one policy, got none")
    for pol in policies:
        check_choice("policies", pol, CACHE_POLICIES)
    # the trace and the prefetch groups (n / group rows of prefetch_width ids, twice), int64
    check_alloc("n", (n * 3 + 2 * (n // group + 1) * prefetch_width,), 8, what="trace and prefetch groups")
    acc = zipf_trace(n, ids, alpha=alpha, seed=seed)
    starts = np.arange(0, n, group, dtype=np.int64)
    nxt = np.minimum(starts[:, None] + np.arange(prefetch_width), n - 1)
    pf_ids = acc[nxt]
    env = environment_record()
    out = []
    for pol in policies:
        kw = {"prefetch_at": starts, "prefetch_ids": pf_ids} if pol == "sida" else {}
        stats = simulate_cache(acc, capacity, pol, **kw)
        t = time_cpu(lambda: simulate_cache(acc, capacity, pol, **kw), repeat=repeat, warmup=0)
        out.append({**env, "op": f"simulate_cache({pol})", "accesses": n, "ids": ids, "capacity": capacity,
                    "zipf_alpha": alpha, "numba": HAVE_NUMBA, "hit_rate": stats.hit_rate,
                    "accesses_per_s": n / t["median_s"], **t})
    return out
