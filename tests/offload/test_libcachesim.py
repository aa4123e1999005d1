"""simulate_cache against libCacheSim (PyPI ``libcachesim``), an independent C implementation of the same
policies: the hit/miss of every single access must agree, for unit sizes (LRU, FIFO, LFU, Belady) and for
byte capacities with unequal sizes (LRU, FIFO), on random, Zipf and real routing traces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab.offload import flatten_layer_expert, simulate_cache
from samoyeds_lab.routing.ship import load_shipped_trace

lcs = pytest.importorskip("libcachesim", reason="libcachesim (the test extra) is not installed")

UNIT_POLICIES = {"lru": lcs.LRU, "fifo": lcs.FIFO, "lfu": lcs.LFU, "belady": lcs.Belady}
NEVER = 1 << 62  # libCacheSim's "no next access" for Belady


def libcachesim_hits(trace, policy, *, capacity=None, sizes=None, capacity_bytes=None) -> np.ndarray:
    """Per-access hit of ``trace`` in a libCacheSim cache (ids shifted by one: libCacheSim's id 0 is special)."""
    trace = np.asarray(trace, dtype=np.int64)
    cache = UNIT_POLICIES[policy](cache_size=capacity if capacity is not None else capacity_bytes)
    nxt = np.full(trace.size, NEVER, np.int64)
    last: dict[int, int] = {}
    for i in range(trace.size - 1, -1, -1):  # Belady reads each request's next access time
        nxt[i] = last.get(int(trace[i]), NEVER)
        last[int(trace[i])] = i
    hits = np.empty(trace.size, bool)
    for i, x in enumerate(trace):
        size = 1 if sizes is None else int(sizes[x])
        req = lcs.Request(obj_size=size, op=lcs.ReqOp.OP_GET, obj_id=int(x) + 1, clock_time=i,
                          next_access_vtime=int(nxt[i]))
        hits[i] = bool(cache.get(req))
    return hits


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=200), st.integers(1, 10),
       st.sampled_from(sorted(UNIT_POLICIES)))
def test_unit_sizes_agree_access_by_access(trace, capacity, policy):
    ours = simulate_cache(trace, capacity, policy).hit
    assert np.array_equal(ours, libcachesim_hits(trace, policy, capacity=capacity))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=200),
       st.lists(st.integers(1, 6), min_size=10, max_size=10), st.integers(1, 30), st.sampled_from(["lru", "fifo"]))
def test_byte_capacities_agree_access_by_access(trace, sizes, capacity_bytes, policy):
    ours = simulate_cache(trace, policy=policy, sizes=sizes, capacity_bytes=capacity_bytes).hit
    assert np.array_equal(ours, libcachesim_hits(trace, policy, sizes=sizes, capacity_bytes=capacity_bytes))


@pytest.mark.parametrize("policy", sorted(UNIT_POLICIES))
@pytest.mark.parametrize("capacity", [4, 9, 20])
def test_real_routing_trace_agrees(policy, capacity):
    """The tiny MoE's held-out English routing, one global cache over (layer, expert) ids."""
    tr = load_shipped_trace("en")
    acc = flatten_layer_expert(tr.topk_ids[:, :600], tr.num_experts)
    ours = simulate_cache(acc, capacity, policy)
    theirs = libcachesim_hits(acc, policy, capacity=capacity)
    assert np.array_equal(ours.hit, theirs), f"{policy}: {ours.hits} vs {int(theirs.sum())} hits"


def test_zipf_trace_agrees():
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, 201) ** 1.1
    acc = rng.choice(200, size=5000, p=p / p.sum())
    for policy in sorted(UNIT_POLICIES):
        assert np.array_equal(simulate_cache(acc, 16, policy).hit, libcachesim_hits(acc, policy, capacity=16)), policy
