"""Tests for samoyeds_lab.offload.cache: textbook traces, brute-force references, properties, errors."""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab.offload import POLICIES, CacheStats, flatten_layer_expert, simulate_cache

# ----------------------------------------------------------------------------------------------------
# Brute-force pure-Python references. w[id] is the slot weight (1 for capacity in experts, the size in
# bytes for capacity_bytes). Each returns (hit list, evicted list with -1 = none / last evicted).
# ----------------------------------------------------------------------------------------------------


def ref_lru(trace, cap, w=None):
    w = w if w is not None else [1] * (max(trace) + 1)
    cache: OrderedDict[int, None] = OrderedDict()  # first = least recent
    hits, ev = [], []
    for x in trace:
        e = -1
        if x in cache:
            cache.move_to_end(x)
            hits.append(True)
        else:
            hits.append(False)
            if w[x] <= cap:
                while sum(w[y] for y in cache) + w[x] > cap:
                    e, _ = cache.popitem(last=False)
                cache[x] = None
        ev.append(e)
    return hits, ev


def ref_fifo(trace, cap, w=None):
    w = w if w is not None else [1] * (max(trace) + 1)
    q: deque[int] = deque()
    hits, ev = [], []
    for x in trace:
        e = -1
        if x in q:
            hits.append(True)
        else:
            hits.append(False)
            if w[x] <= cap:
                while sum(w[y] for y in q) + w[x] > cap:
                    e = q.popleft()
                q.append(x)
        ev.append(e)
    return hits, ev


def ref_belady(trace, cap):
    """Unit sizes; evict the resident used furthest in the future (never again = infinitely far)."""
    cache: set[int] = set()
    hits, ev = [], []
    for i, x in enumerate(trace):
        e = -1
        if x in cache:
            hits.append(True)
        else:
            hits.append(False)
            if cap > 0:
                if len(cache) == cap:

                    def next_use(y):
                        for j in range(i + 1, len(trace)):
                            if trace[j] == y:
                                return j
                        return len(trace) + y  # never again: largest id goes first (the documented tie-break)

                    e = max(cache, key=next_use)
                    cache.remove(e)
                cache.add(x)
        ev.append(e)
    return hits, ev


def ref_lfu(trace, cap, history=False):
    """Unit sizes; evict fewest uses, ties by least recent use."""
    cache: set[int] = set()
    count: dict[int, int] = {}
    last: dict[int, int] = {}
    hits, ev = [], []
    for i, x in enumerate(trace):
        e = -1
        count[x] = count.get(x, 0) + 1
        last[x] = i
        if x in cache:
            hits.append(True)
        else:
            hits.append(False)
            if cap > 0:
                if len(cache) == cap:
                    e = min(cache, key=lambda y: (count[y], last[y]))
                    cache.remove(e)
                    if not history:
                        count[e] = 0
                cache.add(x)
            elif not history:
                count[x] = 0
        ev.append(e)
    return hits, ev


def ref_static(trace, cap, popularity=None):
    m = max(trace) + 1
    score = popularity if popularity is not None else [trace.count(i) for i in range(m)]
    pinned = set(sorted(range(m), key=lambda i: (-score[i], i))[:cap])
    seen: set[int] = set()
    hits = []
    for x in trace:
        hits.append(x in pinned and x in seen)
        seen.add(x)
    return hits


BELADY_ANOMALY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]
SILBERSCHATZ = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]

# ----------------------------------------------------------------------------------------------------
# Textbook traces with known answers
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trace, cap, policy, misses",
    [
        (BELADY_ANOMALY, 3, "fifo", 9),
        (BELADY_ANOMALY, 4, "fifo", 10),  # Belady's anomaly: more frames, more faults
        (BELADY_ANOMALY, 3, "lru", 10),
        (BELADY_ANOMALY, 4, "lru", 8),
        (BELADY_ANOMALY, 3, "belady", 7),
        (BELADY_ANOMALY, 4, "belady", 6),
        (SILBERSCHATZ, 3, "fifo", 15),  # Silberschatz, Operating System Concepts, ch. 9/10
        (SILBERSCHATZ, 3, "lru", 12),
        (SILBERSCHATZ, 3, "belady", 9),
    ],
)
def test_textbook_page_faults(trace, cap, policy, misses):
    s = simulate_cache(trace, cap, policy)
    assert s.misses == misses
    assert s.hits == len(trace) - misses
    assert s.hit_rate == pytest.approx(s.hits / len(trace))
    assert s.accesses == len(trace)


def test_timeline_small_lru():
    s = simulate_cache([0, 1, 0, 2, 1], 2, "lru")
    assert s.hit.tolist() == [False, False, True, False, False]
    assert s.evicted.tolist() == [-1, -1, -1, 1, 0]
    assert s.eviction_steps.tolist() == [3, 4]
    assert s.eviction_ids.tolist() == [1, 0]
    assert s.hit.dtype == np.bool_ and s.evicted.dtype == np.int64


def test_lfu_tie_break_least_recent():
    # counts: 0 ->2, 1 ->1, 2 ->1; inserting 3 evicts among {1, 2} (count 1) the least recent: 1.
    s = simulate_cache([0, 0, 1, 2, 3], 3, "lfu")
    assert s.evicted[-1] == 1


def test_lfu_history_keeps_counts():
    # In-cache LFU forgets 1's two earlier uses after evicting it; perfect LFU remembers them.
    trace = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 1, 4]
    a = simulate_cache(trace, 2, "lfu")
    b = simulate_cache(trace, 2, "lfu", lfu_history=True)
    assert a.hit.tolist() == ref_lfu(trace, 2)[0]
    assert b.hit.tolist() == ref_lfu(trace, 2, history=True)[0]
    assert a.evicted[-1] == 1  # in-cache count of 1 is 1
    assert b.evicted[-1] == 3  # 1 and 3 both have 4 uses; 3 is less recent


def test_static_pins_most_frequent_and_first_use_misses():
    trace = [5, 0, 5, 1, 5, 0, 2]
    s = simulate_cache(trace, 2, "static")  # pins 5 (x3) and 0 (x2)
    assert s.hit.tolist() == [False, False, True, False, True, True, False]
    assert (s.evicted == -1).all() and s.eviction_ids.size == 0
    # a profile from elsewhere decides instead of the trace
    pop = np.zeros(6)
    pop[[1, 2]] = 10
    s2 = simulate_cache(trace, 2, "static", popularity=pop)
    assert s2.hit.tolist() == [False] * 7


def test_static_can_beat_demand_paging_belady():
    # documented: static bypasses the cache, so it is not bounded below by belady
    assert simulate_cache([0, 1, 0], 1, "static").misses == 2
    assert simulate_cache([0, 1, 0], 1, "belady").misses == 3


# ----------------------------------------------------------------------------------------------------
# Brute-force comparisons on random traces
# ----------------------------------------------------------------------------------------------------

traces = st.lists(st.integers(0, 9), min_size=1, max_size=80)
caps = st.integers(0, 11)


@settings(max_examples=150, deadline=None)
@given(trace=traces, cap=caps)
def test_lru_matches_reference(trace, cap):
    s = simulate_cache(trace, cap, "lru")
    h, e = ref_lru(trace, cap)
    assert s.hit.tolist() == h and s.evicted.tolist() == e


@settings(max_examples=150, deadline=None)
@given(trace=traces, cap=caps)
def test_fifo_matches_reference(trace, cap):
    s = simulate_cache(trace, cap, "fifo")
    h, e = ref_fifo(trace, cap)
    assert s.hit.tolist() == h and s.evicted.tolist() == e


@settings(max_examples=150, deadline=None)
@given(trace=traces, cap=caps)
def test_belady_matches_reference(trace, cap):
    s = simulate_cache(trace, cap, "belady")
    h, e = ref_belady(trace, cap)
    assert s.hit.tolist() == h and s.evicted.tolist() == e


@settings(max_examples=150, deadline=None)
@given(trace=traces, cap=caps, history=st.booleans())
def test_lfu_matches_reference(trace, cap, history):
    s = simulate_cache(trace, cap, "lfu", lfu_history=history)
    h, e = ref_lfu(trace, cap, history)
    assert s.hit.tolist() == h and s.evicted.tolist() == e


@settings(max_examples=100, deadline=None)
@given(trace=traces, cap=caps)
def test_static_matches_reference(trace, cap):
    assert simulate_cache(trace, cap, "static").hit.tolist() == ref_static(trace, cap)


@settings(max_examples=100, deadline=None)
@given(
    trace=traces,
    sizes=st.lists(st.integers(0, 7), min_size=10, max_size=10),
    cap=st.integers(0, 20),
)
def test_byte_capacity_lru_fifo_match_reference(trace, sizes, cap):
    for pol, ref in (("lru", ref_lru), ("fifo", ref_fifo)):
        s = simulate_cache(trace, sizes=sizes, capacity_bytes=cap, policy=pol)
        h, e = ref(trace, cap, sizes)
        assert s.hit.tolist() == h, pol
        assert s.evicted.tolist() == e, pol
        assert s.bytes_loaded == sum(sizes[x] for x, hh in zip(trace, h) if not hh)
        assert s.eviction_ids.size == s.eviction_steps.size


@settings(max_examples=150, deadline=None)
@given(trace=traces, cap=caps)
def test_belady_is_a_lower_bound(trace, cap):
    best = simulate_cache(trace, cap, "belady").misses
    for pol in ("lru", "fifo", "lfu"):
        assert best <= simulate_cache(trace, cap, pol).misses


@settings(max_examples=100, deadline=None)
@given(trace=traces)
def test_capacity_at_least_distinct_gives_compulsory_misses_only(trace):
    d = len(set(trace))
    for pol in POLICIES:
        s = simulate_cache(trace, d + 1, pol)
        assert s.misses == d, pol
        assert (s.evicted == -1).all()


@pytest.mark.parametrize("policy", POLICIES)
def test_capacity_zero_misses_everything(policy):
    s = simulate_cache([3, 3, 1, 3], 0, policy)
    assert s.misses == 4 and s.hits == 0 and s.hit_rate == 0.0


@pytest.mark.parametrize("policy", ["lru", "fifo", "belady"])
def test_large_random_trace_against_reference(policy):
    rng = np.random.default_rng(19)
    trace = rng.zipf(1.3, size=989) % 37
    ref = {"lru": ref_lru, "fifo": ref_fifo, "belady": ref_belady}[policy]
    for cap in (1, 7, 19):
        s = simulate_cache(trace, cap, policy)
        h, e = ref(trace.tolist(), cap)
        assert s.hit.tolist() == h and s.evicted.tolist() == e


def test_sparse_huge_ids_are_renumbered():
    big = np.array([10**15, 3, 10**15, 2**40, 3, 10**15], dtype=np.int64)
    dense = np.array([2, 0, 2, 1, 0, 2])
    for pol in POLICIES:
        a, b = simulate_cache(big, 2, pol), simulate_cache(dense, 2, pol)
        assert a.hit.tolist() == b.hit.tolist()
        mapping = {-1: -1, 0: 3, 1: 2**40, 2: 10**15}
        assert a.evicted.tolist() == [mapping[v] for v in b.evicted.tolist()]


def test_bytes_loaded_with_sizes_and_unit_capacity():
    sizes = [10, 20, 30]
    s = simulate_cache([0, 1, 2, 0], 2, "lru", sizes=sizes)
    assert s.misses == 4 and s.bytes_loaded == 70
    assert simulate_cache([0, 1, 2, 0], 2, "lru").bytes_loaded == 4


def test_byte_capacity_item_larger_than_cache_is_streamed():
    s = simulate_cache([0, 1, 0, 1], sizes=[5, 100], capacity_bytes=10, policy="lru")
    assert s.hit.tolist() == [False, False, True, False]
    assert (s.evicted == -1).all()


def test_accepts_torch_and_numpy_dtypes():
    torch = pytest.importorskip("torch")
    t = [1, 2, 1, 3]
    want = simulate_cache(t, 2).hit.tolist()
    assert simulate_cache(torch.tensor(t), 2).hit.tolist() == want
    for dt in (np.int8, np.uint16, np.int32, np.uint64):
        assert simulate_cache(np.array(t, dtype=dt), 2).hit.tolist() == want


def test_repr_and_type():
    s = simulate_cache([0, 1], 1)
    assert isinstance(s, CacheStats)
    assert "hit_rate=0.0000" in repr(s) and "capacity=1" in repr(s)


# ----------------------------------------------------------------------------------------------------
# flatten_layer_expert
# ----------------------------------------------------------------------------------------------------


def test_flatten_layer_expert_order():
    # layers=2, tokens=3, k=2
    topk = np.array(
        [
            [[0, 1], [2, 3], [1, 0]],  # layer 0
            [[3, 2], [0, 1], [1, 2]],  # layer 1
        ]
    )
    got = flatten_layer_expert(topk, 4)
    want = []
    for t in range(3):
        for layer in range(2):
            want += [layer * 4 + e for e in topk[layer, t]]
    assert got.tolist() == want
    assert got.dtype == np.int64


def test_flatten_layer_expert_errors():
    with pytest.raises(ValueError, match="topk_ids"):
        flatten_layer_expert(np.zeros((2, 3)), 4)
    with pytest.raises(TypeError, match="topk_ids"):
        flatten_layer_expert(np.zeros((1, 1, 1), dtype=np.float32), 4)
    with pytest.raises(ValueError, match=r"topk_ids.*\[0, 4\).*got 4"):
        flatten_layer_expert(np.full((1, 1, 1), 4), 4)
    with pytest.raises(ValueError, match="num_experts"):
        flatten_layer_expert(np.zeros((1, 1, 1), dtype=int), 0)
    with pytest.raises(TypeError, match="num_experts"):
        flatten_layer_expert(np.zeros((1, 1, 1), dtype=int), 4.0)


# ----------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(accesses=[], capacity=2), ValueError, "accesses.*empty"),
        (dict(accesses=[0, 1], capacity=-1), ValueError, "capacity.*got -1"),
        (dict(accesses=[0, 1], capacity=2.0), TypeError, "capacity"),
        (dict(accesses=[0, 1], capacity=True), TypeError, "capacity"),
        (dict(accesses=[0, 1], capacity=2, policy="arc"), ValueError, "policy.*'arc'"),
        (dict(accesses=[0, 1], capacity=2, policy=3), TypeError, "policy"),
        (dict(accesses=[0, -1], capacity=2), ValueError, "accesses.*>= 0.*-1"),
        (dict(accesses=[0.0, 1.0], capacity=2), TypeError, "accesses.*integer.*float64"),
        (dict(accesses=[True, False], capacity=2), TypeError, "accesses.*bool"),
        (dict(accesses=[[0, 1]], capacity=2), ValueError, "accesses.*1-D"),
        (dict(accesses=[0, 1]), ValueError, "capacity.*neither"),
        (dict(accesses=[0, 1], capacity=1, capacity_bytes=1, sizes=[1, 1]), ValueError, "capacity.*both"),
        (dict(accesses=[0, 1], capacity_bytes=4), ValueError, "sizes"),
        (dict(accesses=[0, 1], capacity_bytes=-4, sizes=[1, 1]), ValueError, "capacity_bytes"),
        (dict(accesses=[0, 5], capacity_bytes=4, sizes=[1, 1]), ValueError, "sizes.*length"),
        (dict(accesses=[0, 1], capacity_bytes=4, sizes=[1, -1]), ValueError, "sizes.*non-negative"),
        (dict(accesses=[0, 1], capacity_bytes=4, sizes=[1.5, 1]), TypeError, "sizes"),
        (dict(accesses=[0, 1], capacity=1, popularity=[1, 2]), ValueError, "popularity.*static"),
        (dict(accesses=[0, 1], capacity=1, policy="static", popularity=[1]), ValueError, "popularity"),
        (dict(accesses=[0, 1], capacity=1, policy="static", popularity=[1, np.nan]), ValueError, "popularity"),
        (dict(accesses=[0, 1], capacity=1, policy="lfu", lfu_history="yes"), TypeError, "lfu_history"),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        simulate_cache(**kwargs)


@settings(max_examples=80, deadline=None)
@given(trace=traces, k=st.integers(0, 11), s=st.integers(1, 5))
def test_equal_sizes_in_bytes_match_capacity_in_experts(trace, k, s):
    sizes = [s] * 10
    for pol in POLICIES:
        a = simulate_cache(trace, k, pol, sizes=sizes)
        b = simulate_cache(trace, sizes=sizes, capacity_bytes=k * s, policy=pol)
        assert a.hit.tolist() == b.hit.tolist(), pol
        assert a.evicted.tolist() == b.evicted.tolist(), pol
        assert a.bytes_loaded == b.bytes_loaded == s * a.misses


def test_pure_python_fallback_gives_the_same_answers():
    # The kernels are plain Python when numba is missing; NUMBA_DISABLE_JIT runs exactly that code path.
    import os
    import subprocess
    import sys

    code = (
        "from samoyeds_lab.offload import simulate_cache as s\n"
        f"t = {SILBERSCHATZ!r}\n"
        "print([s(t, 3, p).misses for p in ('fifo', 'lru', 'belady', 'lfu', 'static')])\n"
        "print(s(t, sizes=[2] * 8, capacity_bytes=6, policy='lru').misses)\n"
        "r = s(t, 3, 'sida', prefetch_at=[3, 9, 15], prefetch_ids=[[3, 0, 4], [0, 3, 2], [0, 1, -1]])\n"
        "print([r.misses, r.prefetches, r.prefetch_hits, r.peak_resident_bytes])\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    want = [simulate_cache(SILBERSCHATZ, 3, p).misses for p in ("fifo", "lru", "belady", "lfu", "static")]
    r = simulate_cache(SILBERSCHATZ, 3, "sida", prefetch_at=[3, 9, 15],
                       prefetch_ids=[[3, 0, 4], [0, 3, 2], [0, 1, -1]])
    want_pf = [r.misses, r.prefetches, r.prefetch_hits, r.peak_resident_bytes]
    assert out.stdout.split("\n")[:3] == [str(want), "12", str(want_pf)]


def test_flatten_layer_expert_refuses_a_token_naming_an_expert_twice():
    # a repeated id would be a second access to the same expert by one token: a free, false cache hit
    with pytest.raises(ValueError, match=r"topk_ids: expected distinct expert ids per token"):
        flatten_layer_expert(np.array([[[0, 1]], [[2, 2]]]), 4)
