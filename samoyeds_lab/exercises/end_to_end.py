r"""Self-checking exercises for Lab 08 (end to end): the offloaded way's hot set and its time per token.

Exercise 1 — :func:`check_hot_set`: ``fn(popularity, budget) -> slot ids``. ``popularity`` is a float
array ``[layers, experts]`` (how often each expert was used on a *profiling* trace); a GPU that holds
``budget`` experts pins the ``budget`` slots with the highest popularity, ties to the smaller slot id
``l·E + e``. Checked against the ``"static"`` policy of :func:`samoyeds_lab.offload.cache.simulate_cache`,
the one the offloaded way of Lab 08 replays.

Exercise 2 — :func:`check_offload_time`: ``fn(accesses_per_token, hit_rate, expert_bytes, link_gbs,
compute_ms) -> ms per token`` of an offloaded MoE without prefetching: every miss stalls while the
expert's weights cross the link, then the step computes::

    ms/token = compute_ms + accesses_per_token · (1 − hit_rate) · expert_bytes / (link_gbs · 1e9) · 1e3

Checked against :func:`samoyeds_lab.offload.simulate.offload_latency` of
:func:`~samoyeds_lab.offload.simulate.simulate_offload` replays (demand policies, seeded routing traces,
Mixtral-8x7B-sized and smaller experts).

Solutions: :func:`solution_hot_set`, :func:`solution_offload_time` (read them after trying).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .sparsity import _NO, _OK, _call, _check_trials_seed, _not_callable, _side_by_side

__all__ = ["check_hot_set", "check_offload_time", "example_popularity", "offload_cases", "solution_hot_set",
           "solution_offload_time"]


# ---------------------------------------------------------------------------------------------- solutions
def solution_hot_set(popularity: np.ndarray, budget: int) -> list[int]:
    """Exercise 1: sort the slots by (−popularity, slot id) and keep the first ``budget``."""
    flat = np.asarray(popularity, dtype=np.float64).reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    return sorted(order[:budget])


def solution_offload_time(accesses_per_token: float, hit_rate: float, expert_bytes: float, link_gbs: float,
                          compute_ms: float) -> float:
    """Exercise 2: the compute plus one expert transfer per miss (``1 − hit_rate`` of the accesses)."""
    misses_per_token = accesses_per_token * (1.0 - hit_rate)
    stall_ms = misses_per_token * expert_bytes / (link_gbs * 1e9) * 1e3
    return compute_ms + stall_ms


# ---------------------------------------------------------------------------------------------- exercise 1
def example_popularity() -> np.ndarray:
    """The first case :func:`check_hot_set` tries: 4 layers × 8 experts of integer counts with ties, budget 9
    (the GPU budget of Lab 08's offloaded way: 9 of 32 experts)."""
    rng = np.random.default_rng(8)
    return rng.integers(0, 10, size=(4, 8)).astype(np.float64)


def _reference_hot_set(popularity: np.ndarray, budget: int) -> set[int]:
    """The slots the simulator's ``static`` policy pins: replay every slot twice; the second visit hits
    exactly the pinned ones (a pinned slot misses only on its first, cold load)."""
    from ..offload.cache import simulate_cache

    m = popularity.size
    trace = np.concatenate([np.arange(m), np.arange(m)])
    st = simulate_cache(trace, budget, "static", popularity=popularity.reshape(-1))
    return set(np.flatnonzero(st.hit[m:]).tolist())


def _hot_set_cases(trials: int, seed: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    cases = [(example_popularity(), 9), (example_popularity(), 1), (np.zeros((2, 4)), 3)]
    for _ in range(trials):
        L, E = int(rng.integers(1, 5)), int(rng.integers(2, 9))
        high = int(rng.choice([3, 6, 1000]))  # few distinct values: many ties
        pop = rng.integers(0, high, size=(L, E)).astype(np.float64)
        cases.append((pop, int(rng.integers(1, L * E + 1))))
    return cases


def _as_ids(got: object) -> list[int] | None:
    """A learner's answer (set, list, tuple, numpy or torch 1-D) as a list of ints, or None."""
    if hasattr(got, "tolist") and not isinstance(got, (list, tuple, set, frozenset)):
        got = got.tolist()  # numpy / torch
    if not isinstance(got, (list, tuple, set, frozenset)):
        return None
    out = []
    for v in got:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            if isinstance(v, float) and v.is_integer():
                out.append(int(v))
                continue
            return None
        out.append(int(v))
    return out


def _slot_mask(slots: set[int], L: int, E: int) -> np.ndarray:
    return np.isin(np.arange(L * E), sorted(slots)).reshape(L, E)


def check_hot_set(fn: Callable[[np.ndarray, int], object], *, trials: int = 30, seed: int = 0) -> bool:
    """Check a learner's static hot set ``fn(popularity, budget) -> slot ids``.

    Spec: ``popularity`` is a float ``numpy.ndarray [layers, experts]``; slot ``l·E + e`` is expert ``e`` of
    layer ``l``; ``budget`` is an int in ``1 … layers·E``. Return the ``budget`` slot ids (a set, list or
    1-D array of ints) with the highest popularity; ties go to the smaller slot id. Do not modify
    ``popularity``.

    Runs :func:`example_popularity` (budgets 9 and 1), an all-tied case, then ``trials`` random arrays with
    many ties. On the first failure prints the popularity grid, yours vs expected (``1`` pinned) and the
    mismatch mask, the share of the profiled accesses each set would keep on the GPU, and a hint.

    Returns
    -------
    bool
        True if every case matches.
    """
    _not_callable("fn", fn)

    trials, seed = _check_trials_seed(trials, seed)
    cases = _hot_set_cases(trials, seed)
    for case, (pop, budget) in enumerate(cases):
        L, E = pop.shape
        expected = _reference_hot_set(pop, budget)
        given = pop.copy()
        got, err = _call(fn, given, budget)
        if err:
            print(f"{_NO} {err}")
            return False
        if not np.array_equal(given, pop):
            print(f"{_NO} not yet solved: your function modified popularity in place (case {case}); "
                  "sort a copy (or sort indices).")
            return False
        ids = _as_ids(got)
        if ids is None:
            print(f"{_NO} not yet solved: expected slot ids l·E + e as ints (a set, list or 1-D array), "
                  f"got {type(got).__name__}: {got!r}"[:300])
            return False
        bad = [i for i in ids if not 0 <= i < L * E]
        if bad or len(set(ids)) != len(ids) or len(ids) != budget:
            why = (f"slot id {bad[0]} is outside 0 … {L * E - 1}" if bad else
                   f"{len(ids) - len(set(ids))} duplicate id(s)" if len(set(ids)) != len(ids) else
                   f"{len(ids)} id(s) for a budget of {budget}")
            print(f"{_NO} not yet solved (case {case}, {L}×{E} slots, budget {budget}): {why}; expected "
                  f"exactly {budget} distinct slot ids in 0 … {L * E - 1}.")
            return False
        mine = set(ids)
        if mine == expected:
            continue
        ym, em = _slot_mask(mine, L, E), _slot_mask(expected, L, E)
        print(f"{_NO} mismatch in case {case} ({L} layers × {E} experts, budget {budget}): "
              f"{len(mine - expected)} slot(s) differ. Rows are layers, columns experts (slot = l·{E} + e):")
        print(_side_by_side([
            ("popularity", [" ".join(f"{v:4.0f}" for v in row) for row in pop.tolist()]),
            ("yours", [" ".join("1" if v else "." for v in row) for row in ym.tolist()]),
            ("expected", [" ".join("1" if v else "." for v in row) for row in em.tolist()]),
            ("mismatch", [" ".join("X" if v else "." for v in row) for row in (ym != em).tolist()]),
        ], gap=4))
        total = float(pop.sum()) or 1.0
        print(f"yours keep {float(pop[ym].sum()) / total:.1%} of the profiled accesses on the GPU, the expected "
              f"set {float(pop[em].sum()) / total:.1%}.")
        a, b = min(mine - expected), min(expected - mine)
        flat = pop.reshape(-1)
        if flat[a] < flat[b]:
            print(f"hint: slot {a} (popularity {flat[a]:g}) is pinned but slot {b} ({flat[b]:g}) is not: "
                  "keep the highest popularity.")
        else:
            print(f"hint: slots {a} and {b} tie at popularity {flat[b]:g}: ties go to the smaller slot id "
                  "(sort by (-popularity, id)).")
        return False
    print(f"{_OK} solved: your hot set matches the simulator's static policy on {len(cases)} cases "
          f"(the 4×8 example and {len(cases) - 1} more, most with ties).")
    return True


# ---------------------------------------------------------------------------------------------- exercise 2
#: (d_model, d_ffn, GPU profile, link GB/s or None = the profile's): the expert shapes and machines replayed.
_OFFLOAD_SETUPS = (
    (4096, 14336, "h100_sxm", None),  # Mixtral-8x7B, H100 SXM, its PCIe 5 link (64 GB/s)
    (4096, 14336, "a100_sxm", 32.0),  # the same on an A100 behind PCIe 4
    (2048, 1408, "rtx_4090", 25.0),  # a small expert on a desktop GPU
)


def _skewed_trace(rng: np.random.Generator, L: int, T: int, E: int, k: int) -> np.ndarray:
    """Top-k routing with a Zipf-like expert popularity that differs per layer (distinct ids per token)."""
    out = np.empty((L, T, k), np.int64)
    for l in range(L):
        p = 1.0 / (1.0 + rng.permutation(E))
        p /= p.sum()
        for t in range(T):
            out[l, t] = rng.choice(E, size=k, replace=False, p=p)
    return out


@lru_cache(maxsize=4)
def offload_cases(seed: int = 0) -> tuple[dict, ...]:
    """The cases :func:`check_offload_time` runs: seeded routing traces replayed through
    :func:`~samoyeds_lab.offload.simulate.simulate_offload` (demand policies) and timed by
    :func:`~samoyeds_lab.offload.simulate.offload_latency`.

    Each case is a dict: the five inputs (``accesses_per_token``, ``hit_rate``, ``expert_bytes``,
    ``link_gbs``, ``compute_ms``), the expected ``ms_per_token`` and a ``label``.
    """
    from ..offload.hardware import load_profile
    from ..offload.simulate import offload_latency, simulate_offload

    rng = np.random.default_rng(seed)
    runs = [("lru", 9, 1, 0), ("static", 9, 1, 0), ("lfu", 12, 1, 1), ("belady", 16, 4, 1),
            ("lru", 32, 1, 2), ("static", 2, 8, 2), ("lru", 1, 1, 0)]
    L, T, E, k = 4, 64, 8, 2
    cases = []
    for policy, capacity, batch, setup in runs:
        d, f, prof, link = _OFFLOAD_SETUPS[setup]
        gpu = load_profile(prof)
        link_gbs = float(link if link is not None else gpu.link_bandwidth_gbs)
        S = 3 * d * f * 2  # fp16 gate + up + down
        trace = _skewed_trace(rng, L, T, E, k)
        st = simulate_offload(trace, E, policy=policy, capacity=capacity, expert_bytes=S, batch_tokens=batch)
        lat = offload_latency(st, profile_gpu=gpu, expert_flops=6.0 * d * f, link=link_gbs)
        cases.append(dict(
            accesses_per_token=st.num_accesses / T, hit_rate=st.hit_rate, expert_bytes=S, link_gbs=link_gbs,
            compute_ms=lat.compute_s / T * 1e3, ms_per_token=lat.total_s / T * 1e3,
            label=f"{policy}, {capacity}/{L * E} experts on the GPU, {batch} token(s)/step, {d}×{f} expert, "
                  f"{prof}, {link_gbs:g} GB/s"))
    return tuple(cases)


_INPUTS = ("accesses_per_token", "hit_rate", "expert_bytes", "link_gbs", "compute_ms")


def check_offload_time(fn: Callable[..., object]) -> bool:
    """Check ``fn(accesses_per_token, hit_rate, expert_bytes, link_gbs, compute_ms) -> ms per token``.

    Spec (no prefetching; a miss loads the whole expert over the link and the step waits for it)::

        ms/token = compute_ms + accesses_per_token · (1 − hit_rate) · expert_bytes / (link_gbs · 1e9) · 1e3

    ``accesses_per_token``: expert accesses (a step needs each of its experts once) per token;
    ``hit_rate``: the share of them already on the GPU; ``expert_bytes``: one expert's weights;
    ``link_gbs``: host→GPU GB/s (1e9 B/s); ``compute_ms``: the expert compute per token, all resident.
    Compared with the offload simulator's latency model on :func:`offload_cases` (relative 1e-6).

    Returns
    -------
    bool
    """
    _not_callable("fn", fn)
    cases = offload_cases()
    for i, c in enumerate(cases):
        args = [c[k] for k in _INPUTS]
        got, err = _call(fn, *args)
        if err:
            print(f"{_NO} {err}")
            return False
        try:
            mine = float(got)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            print(f"{_NO} not yet solved: expected a number (ms per token), got {type(got).__name__}: {got!r}"[:300])
            return False
        exp = c["ms_per_token"]
        if abs(mine - exp) <= 1e-6 * abs(exp):
            continue
        stall = exp - c["compute_ms"]
        print(f"{_NO} case {i}: {c['label']}")
        for k, v in zip(_INPUTS, args):
            print(f"  {k:<18} = {v:.6g}")
        print(f"  {'ms per token':<18}   yours {mine:12.6g}   expected {exp:12.6g}   X")
        print(f"  (expected = {c['compute_ms']:.4g} ms compute + {stall:.4g} ms waiting for demand loads)")
        per_miss = c["expert_bytes"] / (c["link_gbs"] * 1e9) * 1e3
        if np.isfinite(mine) and abs(mine - c["compute_ms"]) <= 1e-6 * exp:
            print("hint: that is the compute alone; every miss also waits for the expert to cross the link.")
        elif np.isfinite(mine) and abs(mine - (c["compute_ms"] + c["accesses_per_token"] * c["hit_rate"] * per_miss)) \
                <= 1e-6 * max(abs(mine), 1e-30):
            print("hint: the misses cross the link, not the hits: use (1 − hit_rate).")
        else:
            print("hint: a miss moves expert_bytes at link_gbs·1e9 bytes/s; there are "
                  "accesses_per_token·(1 − hit_rate) misses per token; seconds → ms is ×1e3; add the compute.")
        return False
    print(f"{_OK} solved: your time per token matches the offload simulator's latency model on {len(cases)} replays.")
    return True
