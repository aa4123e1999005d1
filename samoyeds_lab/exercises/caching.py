"""Self-checking exercises for Lab 06 (data-aware offloading): replay an expert trace through LRU and Belady.

Exercise 1 — :func:`check_lru_hits`: ``fn(trace, capacity) -> hit per access`` for a cache of ``capacity``
experts that evicts the least recently used one (a hit refreshes it). Checked against
:func:`samoyeds_lab.offload.cache.simulate_cache` (``"lru"``).

Exercise 2 — :func:`check_belady_hits`: the same for Belady's MIN, which evicts the resident whose next
use lies furthest in the future (never used again = furthest): the fewest misses any demand cache can
have, the bound on every chart of the lab. Checked against ``simulate_cache(..., "belady")``.

The traces are what a decoder asks for: token after token, layer after layer, the top-k experts of each
layer (slot ``l·E + e``, see :func:`~samoyeds_lab.offload.cache.flatten_layer_expert`), plus a few hand
traces.

Solutions: :func:`solution_lru_hits`, :func:`solution_belady_hits` (read them after trying).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .sparsity import _NO, _OK, _call, _check_seed, _not_callable

__all__ = ["check_belady_hits", "check_lru_hits", "example_traces", "solution_belady_hits", "solution_lru_hits"]


# ---------------------------------------------------------------------------------------------- solutions
def solution_lru_hits(trace: list[int], capacity: int) -> list[bool]:
    """Exercise 1: keep the residents in recency order (least recent first); a hit moves the expert to
    the end, a miss appends it after dropping the first one if the cache is full."""
    order: list[int] = []  # residents, least recently used first
    hits = []
    for x in trace:
        if x in order:
            hits.append(True)
            order.remove(x)
        else:
            hits.append(False)
            if len(order) == capacity:
                order.pop(0)
        order.append(x)
    return hits


def solution_belady_hits(trace: list[int], capacity: int) -> list[bool]:
    """Exercise 2: on a miss with a full cache, evict the resident whose next use after now is furthest
    (an expert never used again counts as infinitely far)."""
    resident: set[int] = set()
    hits = []
    for i, x in enumerate(trace):
        if x in resident:
            hits.append(True)
            continue
        hits.append(False)
        if len(resident) == capacity:
            def next_use(y: int) -> float:
                for j in range(i + 1, len(trace)):
                    if trace[j] == y:
                        return j
                return float("inf")
            resident.remove(max(resident, key=next_use))
        resident.add(x)
    return hits


# ---------------------------------------------------------------------------------------------- traces
def _decode_trace(rng: np.random.Generator, L: int, T: int, E: int, k: int) -> np.ndarray:
    """A decoder's access trace: T tokens × L layers × top-k distinct experts, Zipf-like popularity per layer."""
    from ..offload.cache import flatten_layer_expert

    topk = np.empty((L, T, k), np.int64)
    for layer in range(L):
        p = 1.0 / (1.0 + rng.permutation(E))
        p /= p.sum()
        for t in range(T):
            topk[layer, t] = rng.choice(E, size=k, replace=False, p=p)
    return flatten_layer_expert(topk, E)


@lru_cache(maxsize=4)
def _cases(seed: int) -> tuple[tuple[str, tuple[int, ...], int], ...]:
    rng = np.random.default_rng(seed)
    cases = [(label, tuple(trace), cap) for label, trace, cap in example_traces()]
    for i in range(12):
        L, E, k = (2, 4, 1) if i % 3 == 0 else (4, 8, 2)
        T = int(rng.integers(3, 13))
        trace = _decode_trace(rng, L, T, E, k)
        cap = int(rng.integers(1, min(L * E, 12) + 1))
        cases.append((f"decode trace {i}: {T} tokens × {L} layers × top-{k} of {E} experts", tuple(trace.tolist()),
                      cap))
    return tuple(cases)


def example_traces() -> list[tuple[str, list[int], int]]:
    """The hand traces tried first, as ``(label, trace, capacity)``: the lab's 2-layer trace, a cyclic
    loop one expert longer than the cache (LRU's worst case), and the classic 12-access trace."""
    return [
        ("the lab's trace", [0, 2, 1, 3, 0, 2], 2),
        ("the lab's trace", [0, 2, 1, 3, 0, 2], 3),
        ("a loop over 4 experts", [0, 1, 2, 3] * 4, 3),
        ("a classic", [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5], 3),
        ("one slot", [3, 3, 1, 3, 1, 1, 2], 1),
    ]


# ---------------------------------------------------------------------------------------------- checking
def _as_hits(got: object, n: int) -> list[bool] | None:
    """A learner's answer (list, tuple, numpy or torch 1-D of bools or 0/1) as n bools, or None."""
    if hasattr(got, "tolist") and not isinstance(got, (list, tuple)):
        got = got.tolist()
    if not isinstance(got, (list, tuple)) or len(got) != n:
        return None
    out = []
    for v in got:
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1)):
            out.append(bool(v))
        else:
            return None
    return out


def _residents_before(trace: tuple[int, ...], hit: np.ndarray, evicted: np.ndarray, i: int) -> list[int]:
    """The simulator's cache content just before access ``i`` (every miss inserts, ``evicted`` leaves)."""
    res: set[int] = set()
    for j in range(i):
        if evicted[j] >= 0:
            res.discard(int(evicted[j]))
        if not hit[j]:
            res.add(trace[j])
    return sorted(res)


def _check(fn: Callable, policy: str, name: str, *, seed: int) -> bool:
    from ..offload.cache import simulate_cache

    _not_callable("fn", fn)

    seed = _check_seed(seed)
    cases = _cases(seed)
    for case, (label, trace, cap) in enumerate(cases):
        st = simulate_cache(np.asarray(trace, np.int64), cap, policy)
        expected = st.hit.tolist()
        got, err = _call(fn, list(trace), cap)
        if err:
            print(f"{_NO} {err}")
            return False
        mine = _as_hits(got, len(trace))
        if mine is None:
            print(f"{_NO} not yet solved (case {case}: {label}, capacity {cap}): expected a list of "
                  f"{len(trace)} bools (one per access, True = hit), got {type(got).__name__}: {got!r}"[:400])
            return False
        if mine == expected:
            continue
        first = next(i for i, (a, b) in enumerate(zip(mine, expected)) if a != b)
        lo = max(0, first - 8)
        hi = min(len(trace), lo + 20)
        cols = range(lo, hi)
        print(f"{_NO} case {case}: {label}, a cache of {cap} expert(s), {len(trace)} accesses: yours "
              f"{sum(mine)} hits, expected {sum(expected)}; first difference at access {first}"
              + (f" (showing accesses {lo}…{hi - 1})" if (lo, hi) != (0, len(trace)) else "") + ":")
        width = max(3, len(str(max(trace))) + 1, len(str(hi)) + 1)
        def row(title: str, cells) -> str:
            return f"{title:>9} " + "".join(str(c).rjust(width) for c in cells)
        print(row("access", cols))
        print(row("expert", (trace[i] for i in cols)))
        print(row("yours", ("H" if mine[i] else "m" for i in cols)))
        print(row("expected", ("H" if expected[i] else "m" for i in cols)))
        print(row("mismatch", ("X" if mine[i] != expected[i] else "." for i in cols)))
        print(f"(H = hit, m = miss.) {name}'s cache just before access {first}: "
              f"{_residents_before(trace, st.hit, st.evicted, first)}; access {first} asks for expert {trace[first]}.")
        print(_hint(policy, list(trace), cap, mine, expected, first))
        return False
    print(f"{_OK} solved: your {name} hits match simulate_cache(trace, capacity, {policy!r}) on {len(cases)} "
          f"traces ({len(example_traces())} hand traces and {len(cases) - len(example_traces())} decode traces).")
    return True


def _hint(policy: str, trace: list[int], cap: int, mine: list[bool], expected: list[bool], first: int) -> str:
    from ..offload.cache import simulate_cache

    arr = np.asarray(trace, np.int64)
    infinite = [x in trace[:i] for i, x in enumerate(trace)]
    if mine == infinite:
        also = (f" (on this trace, also those of a cache of {cap + 1})"
                if infinite == simulate_cache(arr, cap + 1, policy).hit.tolist() else "")
        return (f"hint: those are the hits of a cache with room for everything{also}: a hit whenever the expert "
                f"was seen before. It holds only {cap}: when it already holds {cap}, a miss must first evict "
                "one resident.")
    if policy == "lru" and mine == simulate_cache(arr, cap, "fifo").hit.tolist():
        return ("hint: that is FIFO (evict the one loaded longest ago); LRU evicts the one *used* longest "
                "ago: a hit must move the expert to the most-recent end.")
    if policy == "belady" and mine == simulate_cache(arr, cap, "lru").hit.tolist():
        return ("hint: those are LRU's hits, which look at the past. Belady looks at the future: evict the "
                "resident whose next use comes last (or never).")
    for other in (cap + 1, cap - 1):
        if other >= 1 and mine == simulate_cache(arr, other, policy).hit.tolist():
            return (f"hint: those are the hits of a cache of {other} experts: evict when the cache already holds "
                    f"capacity = {cap} experts, before inserting the new one.")
    if policy == "lru":
        return ("hint: keep the residents ordered by last use; on a miss with a full cache drop the least "
                "recently used, then add the new expert as the most recent (a hit makes it the most recent too).")
    if mine[first] and not expected[first]:
        why = "yours hit where the expert cannot be resident"
    else:
        why = "yours missed where Belady still holds the expert"
    return (f"hint: {why}. On a miss with a full cache, find each resident's next use after the current "
            "access (never again = infinitely far) and evict the one furthest away; a miss always inserts.")


def check_lru_hits(fn: Callable[[list[int], int], object], *, seed: int = 0) -> bool:
    """Check a learner's LRU replay ``fn(trace, capacity) -> hit per access``.

    Spec: ``trace`` is a list of expert ids (ints ``>= 0``) in access order; ``capacity >= 1`` is how many
    experts the GPU holds; the cache starts empty. Return one bool per access, True if the expert was
    resident (a hit). A miss loads the expert; when the cache is full it first evicts the **least recently
    used** resident (the one whose last access is the oldest; a hit counts as a use).

    Runs :func:`example_traces` and seeded decode traces (2 × 4 and 4 × 8 experts, top-1 and top-2). On
    the first failure prints the accesses around it with yours vs expected (``H`` hit, ``m`` miss), the
    mismatch (``X``), the simulator's cache content at that point, and a hint.

    Returns
    -------
    bool
        True if every trace matches :func:`~samoyeds_lab.offload.cache.simulate_cache` (``"lru"``).
    """
    return _check(fn, "lru", "LRU", seed=seed)


def check_belady_hits(fn: Callable[[list[int], int], object], *, seed: int = 0) -> bool:
    """Check a learner's Belady (MIN) replay ``fn(trace, capacity) -> hit per access``.

    Spec: as :func:`check_lru_hits`, but on a miss with a full cache evict the resident whose **next use**
    after the current access is the furthest in the future (one never used again is the furthest; which
    of several such goes does not change the hits). A miss always inserts the expert.

    Returns
    -------
    bool
        True if every trace matches :func:`~samoyeds_lab.offload.cache.simulate_cache` (``"belady"``).
    """
    return _check(fn, "belady", "Belady", seed=seed)
