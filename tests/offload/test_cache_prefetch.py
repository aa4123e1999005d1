"""Tests for the prefetching policies of simulate_cache ("sida", "next_layer"): hand-worked traces,
a brute-force reference under hypothesis, peak resident bytes, and bad inputs."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab.offload.cache import ALL_POLICIES, POLICIES, PREFETCH_POLICIES, simulate_cache

# ----------------------------------------------------------------------------------------------------
# Brute-force reference: an OrderedDict LRU (first = least recent) with prefetch groups applied before
# their access. w = slot weights (1 per expert, or bytes with capacity_bytes); sz = bytes for the peak.
# ----------------------------------------------------------------------------------------------------


def ref_lru_prefetch(trace, cap, pf_at=(), pf_ids=(), w=None, sz=None):
    m = max(list(trace) + [x for row in pf_ids for x in row] + [0]) + 1
    w = list(w) if w is not None else [1] * m
    sz = list(sz) if sz is not None else [1] * m
    cache: OrderedDict[int, None] = OrderedDict()
    fresh: set[int] = set()  # loaded by a prefetch, not used since
    hits, pf_hit, ev = [], [], []
    log = []  # (step, id, by_prefetch)
    loaded = [[False] * len(row) for row in pf_ids]
    peak = 0

    def used(weights):
        return sum(weights[y] for y in cache)

    def evict(i, by_pf):
        v, _ = cache.popitem(last=False)
        fresh.discard(v)
        log.append((i, v, by_pf))
        return v

    j = 0
    for i, x in enumerate(trace):
        e = -1
        while j < len(pf_at) and pf_at[j] == i:
            group: list[int] = []
            for c, y in enumerate(pf_ids[j]):
                if y < 0 or y in group:
                    continue
                group.append(y)
                if y in cache:
                    cache.move_to_end(y)
                    continue
                in_group = [g for g in group if g in cache]
                if sum(w[g] for g in in_group) + w[y] > cap:
                    continue  # dropped (it stays in `group`, so a repeat later in the row is skipped too)
                while used(w) + w[y] > cap:
                    assert next(iter(cache)) not in group  # never evicts its own group
                    e = evict(i, True)
                cache[y] = None
                fresh.add(y)
                loaded[j][c] = True
                peak = max(peak, used(sz))
            j += 1
        if x in cache:
            cache.move_to_end(x)
            hits.append(True)
            pf_hit.append(x in fresh)
            fresh.discard(x)
        else:
            hits.append(False)
            pf_hit.append(False)
            if w[x] <= cap:
                while used(w) + w[x] > cap:
                    e = evict(i, False)
                cache[x] = None
                peak = max(peak, used(sz))
        ev.append(e)
    return dict(hit=hits, prefetch_hit=pf_hit, evicted=ev, log=log, loaded=loaded, peak=peak)


def check_against_ref(s, r, sz=None, trace=None, pf_ids=None):
    assert s.hit.tolist() == r["hit"]
    assert s.prefetch_hit.tolist() == r["prefetch_hit"]
    assert s.evicted.tolist() == r["evicted"]
    assert list(zip(s.eviction_steps.tolist(), s.eviction_ids.tolist(), s.eviction_by_prefetch.tolist())) == r["log"]
    if len(r["loaded"]) and len(r["loaded"][0]):
        assert s.prefetch_loaded.tolist() == r["loaded"]
    assert s.prefetches == sum(map(sum, r["loaded"]))
    assert s.prefetch_hits == sum(r["prefetch_hit"])
    assert s.peak_resident_bytes == r["peak"]
    if sz is not None:
        assert s.bytes_loaded == sum(sz[x] for x, h in zip(trace, r["hit"]) if not h)
        assert s.bytes_prefetched == sum(
            sz[pf_ids[j][c]] for j, row in enumerate(r["loaded"]) for c, ok in enumerate(row) if ok
        )


# ----------------------------------------------------------------------------------------------------
# Hand-worked traces (cache shown most-recent first)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", PREFETCH_POLICIES)
def test_hand_trace_prefetch_hits_and_evictions(policy):
    # cap 3. a0..a2 miss: [2 1 0]. Before a3 group 0 = (3, 4, 3): load 3 evicting 0 -> [3 2 1], load 4
    # evicting 1 -> [4 3 2], the repeated 3 is skipped. a3 = 3 and a4 = 4 are prefetch hits -> [4 3 2].
    # Before a5 group 1 = (5, 0, 9): load 5 evicting 2, 0 evicting 3, 9 evicting 4 -> [9 0 5].
    # a5 = 0 and a6 = 5 are prefetch hits; 9 was a wasted prefetch.
    trace = [0, 1, 2, 3, 4, 0, 5]
    s = simulate_cache(trace, 3, policy, prefetch_at=[3, 5], prefetch_ids=[[3, 4, 3, -1], [5, 0, 9, -1]])
    assert s.hit.tolist() == [False, False, False, True, True, True, True]
    assert s.prefetch_hit.tolist() == [False, False, False, True, True, True, True]
    assert (s.hits, s.misses, s.prefetches, s.prefetch_hits) == (4, 3, 5, 4)
    assert s.prefetch_precision == pytest.approx(4 / 5)
    assert s.bytes_loaded == 3 and s.bytes_prefetched == 5
    assert s.eviction_steps.tolist() == [3, 3, 5, 5, 5]
    assert s.eviction_ids.tolist() == [0, 1, 2, 3, 4]
    assert s.eviction_by_prefetch.tolist() == [True] * 5
    assert s.evicted.tolist() == [-1, -1, -1, 1, -1, 4, -1]
    assert s.prefetch_loaded.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert s.peak_resident_bytes == 3
    assert s.policy == policy
    assert simulate_cache(trace, 3, "lru").misses == 7  # without the prefetches nothing hits


def test_hand_trace_resident_prefetch_refreshes_lru_order():
    # cap 2: [1 0]; the group names resident 0 -> [0 1] (no load); a2 = 2 evicts 1 (not 0) -> [2 0];
    # a3 = 0 hits (a plain hit, not a prefetch hit); a4 = 1 misses, evicting 2.
    s = simulate_cache([0, 1, 2, 0, 1], 2, "sida", prefetch_at=[2], prefetch_ids=[[0, -1]])
    assert s.hit.tolist() == [False, False, False, True, False]
    assert s.evicted.tolist() == [-1, -1, 1, -1, 2]
    assert (s.prefetches, s.prefetch_hits, s.bytes_prefetched) == (0, 0, 0)
    assert simulate_cache([0, 1, 2, 0, 1], 2, "lru").hits == 0


def test_hand_trace_group_larger_than_cache_drops_the_tail():
    # cap 2: group (0, 1, 2) before a0 loads 0, 1 and drops 2 (it would evict its own group).
    # a0, a1 prefetch hits ([1 0]); a2 misses and evicts 0.
    s = simulate_cache([0, 1, 2], 2, "next_layer", prefetch_at=[0], prefetch_ids=[[0, 1, 2]])
    assert s.hit.tolist() == [True, True, False]
    assert s.prefetch_loaded.tolist() == [[True, True, False]]
    assert (s.prefetches, s.prefetch_hits) == (2, 2)
    assert s.evicted.tolist() == [-1, -1, 0]
    assert s.eviction_by_prefetch.tolist() == [False]


def test_hand_trace_later_group_may_evict_earlier_group():
    # cap 2: a0 = 5, a1 = 6 -> [6 5]. Two groups before a2: (7, 8, 9) loads 7 (evicts 5) and 8
    # (evicts 6), drops 9; then (5) loads 5 evicting 7 -> [5 8]. a2 = 7 misses (evicts 8) -> [7 5];
    # a3 = 8 misses (evicts 5); a4 = 5 misses (evicts 7).
    s = simulate_cache([5, 6, 7, 8, 5], 2, "sida", prefetch_at=[2, 2], prefetch_ids=[[7, 8, 9], [5, -1, -1]])
    assert s.hit.tolist() == [False] * 5
    assert s.eviction_ids.tolist() == [5, 6, 7, 8, 5, 7]
    assert s.eviction_by_prefetch.tolist() == [True, True, True, False, False, False]
    assert s.eviction_steps.tolist() == [2, 2, 2, 2, 3, 4]
    assert (s.prefetches, s.prefetch_hits) == (3, 0)
    assert s.prefetch_precision == 0.0


def test_hand_trace_bytes():
    # sizes 4, 3, 2, 2 bytes, capacity 6. a0 = 0 -> [0] (4 B); a1 = 1 evicts 0 -> [1] (3 B).
    # Group (3, 2) before a2: load 3 -> [3 1] (5 B); load 2 evicts 1 -> [2 3] (4 B).
    # a2 = 2, a3 = 3 prefetch hits -> [3 2]; a4 = 1 evicts 2 -> [1 3] (5 B). Peak 5 B.
    sizes = [4, 3, 2, 2]
    s = simulate_cache([0, 1, 2, 3, 1], policy="sida", sizes=sizes, capacity_bytes=6,
                       prefetch_at=[2], prefetch_ids=[[3, 2]])
    assert s.hit.tolist() == [False, False, True, True, False]
    assert (s.misses, s.bytes_loaded, s.prefetches, s.bytes_prefetched, s.prefetch_hits) == (3, 10, 2, 4, 2)
    assert s.eviction_steps.tolist() == [1, 2, 4]
    assert s.eviction_ids.tolist() == [0, 1, 2]
    assert s.eviction_by_prefetch.tolist() == [False, True, False]
    assert s.peak_resident_bytes == 5
    assert s.capacity_bytes == 6 and s.capacity is None


def test_hand_trace_bytes_drop_keeps_smaller_later_ids():
    # capacity 5 B, sizes 3, 3, 2: group (0, 1, 2) loads 0 (3 B), drops 1 (3 + 3 > 5), loads 2 (3 + 2 = 5).
    s = simulate_cache([0, 2, 1], policy="sida", sizes=[3, 3, 2], capacity_bytes=5,
                       prefetch_at=[0], prefetch_ids=[[0, 1, 2]])
    assert s.prefetch_loaded.tolist() == [[True, False, True]]
    assert s.hit.tolist() == [True, True, False]
    assert s.bytes_prefetched == 5 and s.bytes_loaded == 3


def test_no_groups_equals_lru_and_policies_agree():
    rng = np.random.default_rng(7)
    trace = rng.integers(0, 13, size=301)
    empty = simulate_cache(trace, 5, "sida", prefetch_at=np.zeros(0, int), prefetch_ids=np.zeros((0, 3), int))
    lru = simulate_cache(trace, 5, "lru")
    assert empty.hit.tolist() == lru.hit.tolist() and empty.evicted.tolist() == lru.evicted.tolist()
    assert empty.prefetches == 0 and np.isnan(empty.prefetch_precision)
    at = np.sort(rng.integers(0, 301, size=40))
    ids = rng.integers(-1, 15, size=(40, 4))
    a = simulate_cache(trace, 5, "sida", prefetch_at=at, prefetch_ids=ids)
    b = simulate_cache(trace, 5, "next_layer", prefetch_at=at, prefetch_ids=ids)
    assert a.hit.tolist() == b.hit.tolist() and a.prefetch_loaded.tolist() == b.prefetch_loaded.tolist()
    assert "prefetches=" in repr(a) and "prefetches=" not in repr(lru)


def test_demand_policies_have_zero_prefetch_fields():
    for pol in POLICIES:
        s = simulate_cache([0, 1, 0], 1, pol)
        assert (s.prefetches, s.bytes_prefetched, s.prefetch_hits) == (0, 0, 0)
        assert not s.prefetch_hit.any() and s.prefetch_loaded.shape == (0, 0)
        assert not s.eviction_by_prefetch.any()
    assert set(ALL_POLICIES) == set(POLICIES) | {"sida", "next_layer"}


# ----------------------------------------------------------------------------------------------------
# Hypothesis against the brute force
# ----------------------------------------------------------------------------------------------------


@st.composite
def prefetch_cases(draw, byte_mode=False):
    trace = draw(st.lists(st.integers(0, 9), min_size=1, max_size=60))
    n = len(trace)
    g = draw(st.integers(0, 12))
    p = draw(st.integers(0, 5))
    at = sorted(draw(st.lists(st.integers(0, n - 1), min_size=g, max_size=g)))
    ids = [draw(st.lists(st.integers(-1, 11), min_size=p, max_size=p)) for _ in range(g)]
    if byte_mode:
        sizes = draw(st.lists(st.integers(0, 6), min_size=12, max_size=12))
        cap = draw(st.integers(0, 18))
        return trace, cap, at, ids, sizes
    return trace, draw(st.integers(0, 8)), at, ids, None


@settings(max_examples=300, deadline=None)
@given(case=prefetch_cases())
def test_unit_capacity_matches_reference(case):
    trace, cap, at, ids, _ = case
    g, p = len(at), (len(ids[0]) if ids else 0)
    s = simulate_cache(trace, cap, "sida", prefetch_at=np.array(at, dtype=np.int64).reshape(g),
                       prefetch_ids=np.array(ids, dtype=np.int64).reshape(g, p))
    check_against_ref(s, ref_lru_prefetch(trace, cap, at, ids))
    assert s.prefetch_hits <= s.prefetches and s.prefetch_hits <= s.hits
    assert s.peak_resident_bytes <= cap


@settings(max_examples=300, deadline=None)
@given(case=prefetch_cases(byte_mode=True))
def test_byte_capacity_matches_reference(case):
    trace, cap, at, ids, sizes = case
    g, p = len(at), (len(ids[0]) if ids else 0)
    s = simulate_cache(trace, policy="sida", sizes=sizes, capacity_bytes=cap,
                       prefetch_at=np.array(at, dtype=np.int64).reshape(g),
                       prefetch_ids=np.array(ids, dtype=np.int64).reshape(g, p))
    check_against_ref(s, ref_lru_prefetch(trace, cap, at, ids, w=sizes, sz=sizes), sizes, trace, ids)
    assert s.peak_resident_bytes <= cap


@settings(max_examples=150, deadline=None)
@given(case=prefetch_cases())
def test_unit_capacity_with_sizes_weights_bytes_only(case):
    trace, cap, at, ids, _ = case
    sizes = [3 + (i % 4) for i in range(12)]
    g, p = len(at), (len(ids[0]) if ids else 0)
    s = simulate_cache(trace, cap, "next_layer", sizes=sizes, prefetch_at=np.array(at, dtype=np.int64).reshape(g),
                       prefetch_ids=np.array(ids, dtype=np.int64).reshape(g, p))
    check_against_ref(s, ref_lru_prefetch(trace, cap, at, ids, sz=sizes), sizes, trace, ids)


@settings(max_examples=100, deadline=None)
@given(trace=st.lists(st.integers(0, 9), min_size=1, max_size=60), cap=st.integers(0, 8),
       sizes=st.lists(st.integers(0, 6), min_size=10, max_size=10))
def test_peak_resident_bytes_of_demand_policies(trace, cap, sizes):
    # LRU reference peak (unit capacity and byte capacity) and a direct replay of the eviction log.
    r = ref_lru_prefetch(trace, cap, sz=sizes)
    assert simulate_cache(trace, cap, "lru", sizes=sizes).peak_resident_bytes == r["peak"]
    rb = ref_lru_prefetch(trace, cap, w=sizes, sz=sizes)
    assert simulate_cache(trace, policy="lru", sizes=sizes, capacity_bytes=cap).peak_resident_bytes == rb["peak"]
    for pol in ("fifo", "lfu", "belady"):
        s = simulate_cache(trace, cap, pol, sizes=sizes)
        used, peak, k = 0, 0, 0
        for i, (x, h) in enumerate(zip(trace, s.hit.tolist())):
            while k < s.eviction_steps.size and s.eviction_steps[k] == i:
                used -= sizes[s.eviction_ids[k]]
                k += 1
            if not h and cap > 0:
                used += sizes[x]
                peak = max(peak, used)
        assert s.peak_resident_bytes == peak, pol
    count = [trace.count(i) for i in range(max(trace) + 1)]
    pinned = sorted(range(len(count)), key=lambda i: (-count[i], i))[:cap]
    want = sum(sizes[i] for i in pinned if count[i] > 0)
    assert simulate_cache(trace, cap, "static", sizes=sizes).peak_resident_bytes == want


def test_sparse_huge_ids_with_prefetch_are_renumbered():
    big = np.array([10**15, 3, 10**15, 2**40, 3, 10**15], dtype=np.int64)
    ids_big = np.array([[2**40, 10**12], [3, -1]], dtype=np.int64)
    dense = np.array([3, 0, 3, 2, 0, 3])  # 3 -> 0, 10**12 -> 1, 2**40 -> 2, 10**15 -> 3
    ids_dense = np.array([[2, 1], [0, -1]])
    a = simulate_cache(big, 2, "sida", prefetch_at=[1, 3], prefetch_ids=ids_big)
    b = simulate_cache(dense, 2, "sida", prefetch_at=[1, 3], prefetch_ids=ids_dense)
    assert a.hit.tolist() == b.hit.tolist() and a.prefetch_loaded.tolist() == b.prefetch_loaded.tolist()
    mapping = {-1: -1, 0: 3, 1: 10**12, 2: 2**40, 3: 10**15}
    assert a.eviction_ids.tolist() == [mapping[v] for v in b.eviction_ids.tolist()]


def test_accepts_torch_prefetch_arrays():
    torch = pytest.importorskip("torch")
    want = simulate_cache([0, 1, 2, 0], 2, "sida", prefetch_at=[2], prefetch_ids=[[2, -1]])
    got = simulate_cache(torch.tensor([0, 1, 2, 0]), 2, "sida", prefetch_at=torch.tensor([2]),
                         prefetch_ids=torch.tensor([[2, -1]], dtype=torch.int32))
    assert got.hit.tolist() == want.hit.tolist() == [False, False, True, False]


# ----------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------

T = [0, 1, 2, 0]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(policy="lru", prefetch_at=[0], prefetch_ids=[[1]]), ValueError, "prefetch_at.*only used.*'lru'"),
        (dict(policy="belady", prefetch_ids=[[1]]), ValueError, "prefetch_ids.*only used"),
        (dict(policy="sida"), ValueError, "prefetch_at.*required.*'sida'"),
        (dict(policy="next_layer", prefetch_at=[0]), ValueError, "prefetch_ids.*required"),
        (dict(policy="sida", prefetch_at=[0, 1], prefetch_ids=[[1]]), ValueError, r"prefetch_ids.*\(2, p\).*\(1, 1\)"),
        (dict(policy="sida", prefetch_at=[0], prefetch_ids=[1]), ValueError, "prefetch_ids.*2-D"),
        (dict(policy="sida", prefetch_at=[[0]], prefetch_ids=[[1]]), ValueError, "prefetch_at.*1-D"),
        (dict(policy="sida", prefetch_at=[0], prefetch_ids=[[-2]]), ValueError, "prefetch_ids.*-1.*-2"),
        (dict(policy="sida", prefetch_at=[4], prefetch_ids=[[1]]), ValueError, r"prefetch_at.*\[0, 4\).*4"),
        (dict(policy="sida", prefetch_at=[-1], prefetch_ids=[[1]]), ValueError, "prefetch_at.*-1"),
        (dict(policy="sida", prefetch_at=[2, 1], prefetch_ids=[[1], [1]]), ValueError,
         "prefetch_at.*non-decreasing.*2 then 1"),
        (dict(policy="sida", prefetch_at=[0.0], prefetch_ids=[[1]]), TypeError, "prefetch_at.*integer"),
        (dict(policy="sida", prefetch_at=[0], prefetch_ids=[[1.5]]), TypeError, "prefetch_ids.*integer"),
        (dict(policy="sida", prefetch_at=[0], prefetch_ids=[[7]], capacity=None, capacity_bytes=4,
              sizes=[1, 1, 1]), ValueError, "sizes.*prefetch_ids.*= 7"),
    ],
)
def test_bad_prefetch_inputs(kwargs, exc, match):
    kw = dict(capacity=2)
    kw.update(kwargs)
    if kw.get("capacity") is None:
        kw.pop("capacity")
    with pytest.raises(exc, match=match):
        simulate_cache(T, **kw)
