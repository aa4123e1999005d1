"""Tests for samoyeds_lab.offload.simulate: accesses, global / per-layer caches, SiDA and next-layer
prefetching, predictions, the latency model, and the shipped routing trace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab.offload.cache import POLICIES, flatten_layer_expert, simulate_cache
from samoyeds_lab.offload.hardware import HardwareProfile
from samoyeds_lab.offload.simulate import (
    ExpertAccesses,
    OffloadLatency,
    OffloadStats,
    expert_accesses,
    noisy_predictions,
    offload_latency,
    oracle_predictions,
    simulate_offload,
)

from .test_cache_prefetch import ref_lru_prefetch

# ----------------------------------------------------------------------------------------------------
# Pure-Python references for the batching and the prefetch groups
# ----------------------------------------------------------------------------------------------------


def ref_steps(topk, B):
    """[(batch, layer, {expert: tokens} in first-appearance order)] in inference order."""
    L, T = len(topk), len(topk[0])
    out = []
    for b in range(-(-T // B)):
        for layer in range(L):
            need: dict[int, int] = {}
            for t in range(b * B, min(T, (b + 1) * B)):
                for e in topk[layer][t]:
                    need[e] = need.get(e, 0) + 1
            out.append((b, layer, need))
    return out


def ref_groups(pred, B, policy):
    """Per step the predicted union ordered by votes (descending) then id; layer 0 empty for next_layer."""
    groups = []
    for b, layer, votes in ref_steps(pred, B):
        votes = {e: c for e, c in votes.items() if e >= 0}
        if policy == "next_layer" and layer == 0:
            votes = {}
        groups.append(sorted(votes, key=lambda e: (-votes[e], e)))
    return groups


def ref_offload_global(topk, E, B, cap, policy, pred=None, sizes=None):
    """Global cache: hits per access via simulate_cache (demand) or the brute-force prefetch LRU."""
    steps = ref_steps(topk, B)
    trace, at, ids = [], [], []
    groups = ref_groups(pred, B, policy) if pred is not None else None
    for s, (_, layer, need) in enumerate(steps):
        if groups is not None and groups[s]:
            at.append(len(trace))
            ids.append([layer * E + e for e in groups[s]])
        trace += [layer * E + e for e in need]
    if pred is None:
        return simulate_cache(trace, cap, policy).hit.tolist(), None
    p = max([len(r) for r in ids] + [0])
    ids = [r + [-1] * (p - len(r)) for r in ids]
    r = ref_lru_prefetch(trace, cap, at, ids, sz=sizes)
    return r["hit"], r


def random_topk(rng, L, T, k, E):
    return np.stack([np.stack([rng.choice(E, k, replace=False) for _ in range(T)]) for _ in range(L)])


@st.composite
def routing(draw, max_layers=3, max_tokens=12, max_e=6):
    L = draw(st.integers(1, max_layers))
    T = draw(st.integers(1, max_tokens))
    E = draw(st.integers(1, max_e))
    k = draw(st.integers(1, E))
    rows = [[draw(st.permutations(range(E)))[:k] for _ in range(T)] for _ in range(L)]
    return np.array(rows, dtype=np.int64).reshape(L, T, k), E


# ----------------------------------------------------------------------------------------------------
# expert_accesses
# ----------------------------------------------------------------------------------------------------


def test_expert_accesses_hand_example():
    # 2 layers, 5 tokens, top-2, batches of 2 tokens (the last batch has one token)
    topk = [
        [[0, 1], [1, 2], [3, 0], [3, 1], [2, 3]],  # layer 0
        [[4, 5], [5, 4], [0, 4], [1, 0], [5, 2]],  # layer 1
    ]
    a = expert_accesses(topk, 6, batch_tokens=2)
    # b0 l0: 0 1 2 (1 twice) | b0 l1: 4 5 | b1 l0: 3 0 1 (3 twice) | b1 l1: 0 4 1 | b2 l0: 2 3 | b2 l1: 5 2
    assert a.ids.tolist() == [0, 1, 2, 4, 5, 3, 0, 1, 0, 4, 1, 2, 3, 5, 2]
    assert a.counts.tolist() == [1, 2, 1, 2, 2, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1]
    assert a.layer.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    assert a.batch.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert a.offsets.tolist() == [0, 3, 5, 8, 11, 13, 15]
    assert a.flat_ids.tolist() == [0, 1, 2, 10, 11, 3, 0, 1, 6, 10, 7, 2, 3, 11, 8]
    assert a.step.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5]
    assert (a.num_layers, a.num_experts, a.num_batches, a.num_tokens, a.batch_tokens) == (2, 6, 3, 5, 2)
    assert len(a) == 15 and isinstance(a, ExpertAccesses) and "batches=3" in repr(a)


@settings(max_examples=80, deadline=None)
@given(r=routing(), B=st.integers(1, 7))
def test_expert_accesses_matches_reference(r, B):
    topk, E = r
    a = expert_accesses(topk, E, batch_tokens=B)
    ids, counts, layers = [], [], []
    for _, layer, need in ref_steps(topk.tolist(), B):
        ids += list(need)
        counts += list(need.values())
        layers += [layer] * len(need)
    assert a.ids.tolist() == ids and a.counts.tolist() == counts and a.layer.tolist() == layers
    assert int(a.counts.sum()) == topk.size


def test_batch_of_one_is_flatten_layer_expert():
    rng = np.random.default_rng(3)
    topk = random_topk(rng, 4, 50, 2, 8)
    assert expert_accesses(topk, 8).flat_ids.tolist() == flatten_layer_expert(topk, 8).tolist()


# ----------------------------------------------------------------------------------------------------
# Hand-made offload runs: 2 layers, 3 tokens, top-1, E = 4; layer 0 routes 0 1 0, layer 1 routes 2 3 2.
# Global ids in inference order: 0 6 | 1 7 | 0 6. Capacity 2 (global) = 1 per layer (per_layer).
# ----------------------------------------------------------------------------------------------------

TOPK = [[[0], [1], [0]], [[2], [3], [2]]]


def test_hand_lru_global_thrashes():
    s = simulate_offload(TOPK, 4, policy="lru", capacity=2)
    assert s.hit.tolist() == [False] * 6 and s.demand_loads == 6 and s.prefetches == 0
    assert s.gpu_bytes == 2 and s.capacities == (2,)


def test_hand_sida_global_oracle_hits_everything():
    # before each step the oracle group loads the one expert needed, evicting the LRU one:
    # [0] -> [6 0] -> [1 6] -> [7 1] -> [0 7] -> [6 0]; every access is a prefetch hit.
    s = simulate_offload(TOPK, 4, policy="sida", capacity=2, predicted=oracle_predictions(TOPK))
    assert s.hit.tolist() == [True] * 6 and s.prefetch_hit.tolist() == [True] * 6
    assert (s.hits, s.demand_loads, s.prefetches, s.prefetch_hits) == (6, 0, 6, 6)
    assert s.step_prefetch_loads.tolist() == [[1, 1], [1, 1], [1, 1]]
    assert s.step_demand_loads.tolist() == [[0, 0], [0, 0], [0, 0]]
    assert s.prefetch_load_step.tolist() == [0, 1, 2, 3, 4, 5]
    assert s.prefetch_load_expert.tolist() == [0, 2, 1, 3, 0, 2]
    assert s.prefetch_precision == 1.0


def test_hand_next_layer_global_has_no_layer_zero_prediction():
    # a0 = 0 misses -> [0]; 6 prefetched -> hit; a2 = 1 misses (evicts 0); 7 prefetched (evicts 6) -> hit;
    # a4 = 0 misses (evicts 1); 6 prefetched (evicts 7) -> hit.
    s = simulate_offload(TOPK, 4, policy="next_layer", capacity=2, predicted=oracle_predictions(TOPK))
    assert s.hit.tolist() == [False, True, False, True, False, True]
    assert s.per_layer_hit_rate.tolist() == [0.0, 1.0]
    assert (s.demand_loads, s.prefetches, s.prefetch_hits) == (3, 3, 3)
    assert s.step_demand_loads.tolist() == [[1, 0], [1, 0], [1, 0]]
    assert s.step_prefetch_loads.tolist() == [[0, 1], [0, 1], [0, 1]]


def test_hand_per_layer_one_slot_each():
    pred = oracle_predictions(TOPK)
    sida = simulate_offload(TOPK, 4, policy="sida", capacity=2, scope="per_layer", predicted=pred)
    assert sida.capacities == (1, 1) and sida.hit.all() and len(sida.stats) == 2
    nl = simulate_offload(TOPK, 4, policy="next_layer", capacity=2, scope="per_layer", predicted=pred)
    assert nl.hit.tolist() == [False, True, False, True, False, True]
    lru = simulate_offload(TOPK, 4, policy="lru", capacity=[1, 1], scope="per_layer")
    assert lru.hits == 0
    lru2 = simulate_offload(TOPK, 4, policy="lru", capacity=[2, 1], scope="per_layer")
    assert lru2.hit.tolist() == [False, False, False, False, True, False]  # layer 0 holds 0 and 1


def test_hand_wrong_prediction_is_a_wasted_prefetch():
    # predict expert 3 for every layer-0 token: per-layer cache of 1 slot, layer 0:
    # 3 loaded, a = 0 misses (evicts 3), 3 loaded again (evicts 0), a = 1 misses, ...
    pred = np.full((2, 3, 1), -1)
    pred[0] = 3
    s = simulate_offload(TOPK, 4, policy="sida", capacity=[1, 1], scope="per_layer", predicted=pred)
    assert s.hits == 0 and s.prefetches == 3 and s.prefetch_hits == 0
    assert s.prefetch_precision == 0.0


def test_hand_batched_groups_order_by_votes():
    # one layer, 3 tokens in one batch, E = 5; votes: 4 x3, 1 x2, 2 x1 -> group (4, 1, 2) with a
    # 2-slot cache loads 4 and 1, drops 2. Needs: 0 1 2 3 4 (0 1 | 2 3 | 4 0 ... first appearance).
    topk = [[[0, 1], [2, 3], [4, 0]]]
    pred = [[[4, 1], [4, 2], [4, 1]]]
    s = simulate_offload(topk, 5, policy="sida", capacity=2, batch_tokens=3, predicted=pred)
    assert s.accesses.ids.tolist() == [0, 1, 2, 3, 4]
    st0 = s.stats[0]
    assert st0.prefetch_loaded.tolist() == [[True, True, False]]
    # [1 4] -> a0 = 0 evicts 4 -> [0 1]; a1 = 1 prefetch hit; a2..a4 miss.
    assert s.hit.tolist() == [False, True, False, False, False]
    assert s.prefetch_hits == 1 and s.token_hit_rate == pytest.approx(1 / 6)


def test_hand_bytes_and_gpu_bytes():
    # per-layer sizes 10 and 20 bytes; 60 bytes global -> layer 0 experts fit 2 with one layer 1 one.
    s = simulate_offload(TOPK, 4, policy="lru", capacity_bytes=60, expert_bytes=[10, 20])
    # 0(10) 6(20) 1(10) -> 40 B; 7(20) -> 60 B; 0 hit; 6 hit.
    assert s.hit.tolist() == [False, False, False, False, True, True]
    assert s.bytes_demand == 60 and s.gpu_bytes == 60
    assert s.access_bytes.tolist() == [10, 20, 10, 20, 10, 20]
    assert s.step_demand_bytes.tolist() == [[10, 20], [10, 20], [0, 0]]
    s2 = simulate_offload(TOPK, 4, policy="lru", capacity=1, expert_bytes=np.array([[1, 2, 3, 4], [5, 6, 7, 8]]))
    assert s2.bytes_demand == 1 + 7 + 2 + 8 + 1 + 7 and s2.gpu_bytes == 8


# ----------------------------------------------------------------------------------------------------
# Against the references, and consistency between scopes and policies
# ----------------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(r=routing(), B=st.integers(1, 5), cap=st.integers(0, 10), policy=st.sampled_from(["sida", "next_layer"]),
       seed=st.integers(0, 3), q=st.sampled_from([0.0, 0.5, 1.0]))
def test_prefetch_global_matches_reference(r, B, cap, policy, seed, q):
    topk, E = r
    pred = noisy_predictions(topk, E, q, seed)
    s = simulate_offload(topk, E, policy=policy, capacity=cap, batch_tokens=B, predicted=pred)
    hits, ref = ref_offload_global(topk.tolist(), E, B, cap, policy, pred.tolist())
    assert s.hit.tolist() == hits
    assert s.prefetch_hit.tolist() == ref["prefetch_hit"]
    assert s.prefetches == sum(map(sum, ref["loaded"])) == int(s.step_prefetch_loads.sum())
    assert s.demand_loads == int(s.step_demand_loads.sum())
    assert s.gpu_bytes == ref["peak"]


@settings(max_examples=80, deadline=None)
@given(r=routing(), B=st.integers(1, 5), cap=st.integers(0, 10), policy=st.sampled_from(["lru", "fifo", "belady"]))
def test_demand_global_matches_reference(r, B, cap, policy):
    topk, E = r
    s = simulate_offload(topk, E, policy=policy, capacity=cap, batch_tokens=B)
    assert s.hit.tolist() == ref_offload_global(topk.tolist(), E, B, cap, policy)[0]


@settings(max_examples=80, deadline=None)
@given(r=routing(), B=st.integers(1, 4), policy=st.sampled_from(["lru", "sida", "next_layer", "belady"]),
       caps=st.lists(st.integers(0, 5), min_size=3, max_size=3))
def test_per_layer_is_independent_caches(r, B, policy, caps):
    topk, E = r
    L = topk.shape[0]
    caps = caps[:L]
    kw = dict(predicted=oracle_predictions(topk)) if policy in ("sida", "next_layer") else {}
    s = simulate_offload(topk, E, policy=policy, capacity=caps, scope="per_layer", batch_tokens=B, **kw)
    for layer in range(L):
        kwl = {}
        if kw:
            kwl["predicted"] = kw["predicted"][layer : layer + 1]
            if policy == "next_layer" and layer == 0:
                kwl["predicted"] = np.full_like(kwl["predicted"], -1)
        one = simulate_offload(topk[layer : layer + 1], E, policy="sida" if kw else policy, capacity=caps[layer],
                               batch_tokens=B, **kwl)
        assert s.hit[s.accesses.layer == layer].tolist() == one.hit.tolist()
        assert s.stats[layer].hit.tolist() == one.hit.tolist()


@settings(max_examples=60, deadline=None)
@given(r=routing(), B=st.integers(1, 4))
def test_huge_capacity_gives_compulsory_misses_only(r, B):
    topk, E = r
    L = topk.shape[0]
    distinct = sum(len(np.unique(topk[layer])) for layer in range(L))
    for scope in ("global", "per_layer"):
        for pol in POLICIES:
            s = simulate_offload(topk, E, policy=pol, capacity=L * E, scope=scope, batch_tokens=B)
            assert s.demand_loads == distinct, (scope, pol)
            assert s.gpu_bytes == distinct
        s = simulate_offload(topk, E, policy="sida", capacity=L * E, scope=scope, batch_tokens=B,
                             predicted=oracle_predictions(topk))
        assert s.hit.all() and s.prefetches == distinct == s.prefetch_hits


@settings(max_examples=80, deadline=None)
@given(r=routing(max_tokens=16), B=st.integers(1, 4), cap=st.integers(0, 8),
       scope=st.sampled_from(["global", "per_layer"]))
def test_belady_bounds_demand_paging(r, B, cap, scope):
    topk, E = r
    best = simulate_offload(topk, E, policy="belady", capacity=cap, scope=scope, batch_tokens=B).hits
    for pol in ("lru", "fifo", "lfu"):
        assert best >= simulate_offload(topk, E, policy=pol, capacity=cap, scope=scope, batch_tokens=B).hits, pol


def test_belady_bounds_demand_paging_larger_random_traces():
    rng = np.random.default_rng(11)
    for E, k, cap in ((8, 2, 6), (16, 4, 20), (32, 2, 9)):
        topk = random_topk(rng, 4, 300, k, E)
        for scope in ("global", "per_layer"):
            for B in (1, 4):
                best = simulate_offload(topk, E, policy="belady", capacity=cap, scope=scope, batch_tokens=B).hits
                for pol in ("lru", "fifo", "lfu"):
                    assert best >= simulate_offload(topk, E, policy=pol, capacity=cap, scope=scope,
                                                    batch_tokens=B).hits


def test_single_layer_per_layer_equals_global():
    rng = np.random.default_rng(5)
    topk = random_topk(rng, 1, 200, 2, 8)
    for pol in POLICIES:
        a = simulate_offload(topk, 8, policy=pol, capacity=3)
        b = simulate_offload(topk, 8, policy=pol, capacity=3, scope="per_layer")
        assert a.hit.tolist() == b.hit.tolist(), pol


def test_capacity_split_evenly_over_layers():
    rng = np.random.default_rng(1)
    topk = random_topk(rng, 3, 40, 2, 8)
    s = simulate_offload(topk, 8, policy="lru", capacity=8, scope="per_layer")
    assert s.capacities == (3, 3, 2)
    s = simulate_offload(topk, 8, policy="lru", capacity_bytes=100, expert_bytes=10, scope="per_layer")
    assert s.capacities == (34, 33, 33) and s.gpu_bytes <= 90


def test_static_with_profiling_popularity():
    rng = np.random.default_rng(2)
    topk = random_topk(rng, 2, 100, 2, 8)
    pop = np.zeros((2, 8))
    pop[0, 3] = pop[1, 5] = 1.0  # pin expert 3 of layer 0 and expert 5 of layer 1
    s = simulate_offload(topk, 8, policy="static", capacity=2, popularity=pop)
    hit_ids = set(s.accesses.flat_ids[s.hit].tolist())
    assert hit_ids <= {3, 13}
    n3 = int((topk[0] == 3).any(-1).sum())
    n5 = int((topk[1] == 5).any(-1).sum())
    assert s.hits == max(n3 - 1, 0) + max(n5 - 1, 0)
    sp = simulate_offload(topk, 8, policy="static", capacity=[1, 1], scope="per_layer", popularity=pop)
    assert sp.hits == s.hits


# ----------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------


def test_oracle_and_quality_one_are_the_trace():
    rng = np.random.default_rng(0)
    topk = random_topk(rng, 3, 200, 2, 8)
    assert np.array_equal(oracle_predictions(topk), topk) and oracle_predictions(topk).dtype == np.int64
    assert np.array_equal(noisy_predictions(topk, 8, 1.0, seed=4), topk)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.7])
def test_noisy_prediction_hit_rate(q):
    # expected share of true experts predicted: q + (1 - q) * (k - kq) / (E - kq) on average; for q = 0
    # exactly k / E. Tolerance: 5 standard errors of a mean over 2 * 4000 * 4 slots.
    rng = np.random.default_rng(1)
    E, k, T = 16, 4, 4000
    topk = random_topk(rng, 2, T, k, E)
    p = noisy_predictions(topk, E, q, seed=9)
    assert p.shape == topk.shape and p.dtype == np.int64
    srt = np.sort(p, -1)
    assert (srt[..., 1:] != srt[..., :-1]).all()  # distinct per token
    hit = (p[..., :, None] == topk[..., None, :]).any(-1).mean()
    if q == 0.0:
        assert hit == pytest.approx(k / E, abs=5 * np.sqrt(k / E * (1 - k / E) / p.size))
    else:
        kept = np.arange(k + 1)
        from math import comb

        pk = np.array([comb(k, j) * q**j * (1 - q) ** (k - j) for j in kept])
        expect = float((pk * (kept + (k - kept) * (k - kept) / (E - kept))).sum() / k)
        assert hit == pytest.approx(expect, abs=0.01)
    # kept experts stay in their columns: with q > 0 column 0 matches the truth at least q of the time
    assert (p[..., 0] == topk[..., 0]).mean() >= q - 0.02


def test_quality_zero_sida_is_near_random_and_oracle_is_perfect():
    # top-1 routing, one slot per layer: the prefetch makes the predicted expert the only resident one,
    # so an access hits iff its expert was predicted: hit rate q + (1 - q) / E (random fill may be right).
    rng = np.random.default_rng(4)
    E = 8
    topk = random_topk(rng, 2, 2000, 1, E)
    tol = 5 * np.sqrt(0.25 / topk.size)  # 5 standard errors of a mean of 4000 Bernoulli draws
    for q in (0.0, 0.6):
        s = simulate_offload(topk, E, policy="sida", capacity=[1, 1], scope="per_layer",
                             predicted=noisy_predictions(topk, E, q, seed=1))
        assert s.hit_rate == pytest.approx(q + (1 - q) / E, abs=tol), q
        assert s.prefetch_hits <= s.hits  # a predicted expert already resident is a plain hit
    perfect = simulate_offload(topk, E, policy="sida", capacity=[1, 1], scope="per_layer",
                               predicted=oracle_predictions(topk))
    assert perfect.hit_rate == 1.0 and perfect.demand_loads == 0
    # top-2 with two slots per layer: random predictions stay far below the oracle
    topk2 = random_topk(rng, 2, 1000, 2, 16)
    rand = simulate_offload(topk2, 16, policy="sida", capacity=4, scope="per_layer",
                            predicted=noisy_predictions(topk2, 16, 0.0, seed=2))
    assert rand.hit_rate <= 2 / 16 + 0.03
    assert simulate_offload(topk2, 16, policy="sida", capacity=4, scope="per_layer",
                            predicted=oracle_predictions(topk2)).hit_rate == 1.0


# ----------------------------------------------------------------------------------------------------
# Latency model
# ----------------------------------------------------------------------------------------------------

GPU = HardwareProfile(name="toy", kind="gpu", source="test", fp16_tflops=1.0, fp16_sparse_tflops=2.0,
                      memory_gb=1.0, memory_bandwidth_gbs=1000.0, link_bandwidth_gbs=10.0)


def test_latency_hand_computed():
    # 1e9-byte experts over 10 GB/s: 0.1 s per load. 1e10 FLOP per token at 1 TFLOP/s: 0.01 s per step
    # (HBM read 1e9 / 1e12 = 0.001 s is below). Steps s0..s5, one token, one expert each.
    kw = dict(profile_gpu=GPU, expert_flops=1e10, expert_bytes=10**9)
    pred = oracle_predictions(TOPK)
    lru = offload_latency(simulate_offload(TOPK, 4, policy="lru", capacity=2), **kw)
    assert lru.compute_s == pytest.approx(0.06) and lru.stall_s == pytest.approx(0.6)
    assert lru.total_s == pytest.approx(0.66) and lru.all_resident_s == pytest.approx(0.06)
    assert lru.slowdown == pytest.approx(11.0)
    # next_layer: demand 0.1 at s0, s2, s4; prefetch 0.1 at s1, s3, s5 hidden 0.01 behind the previous step
    nl = offload_latency(simulate_offload(TOPK, 4, policy="next_layer", capacity=2, predicted=pred), **kw)
    assert nl.stall_s == pytest.approx(0.3)
    assert nl.prefetch_hidden_s == pytest.approx(0.03) and nl.prefetch_exposed_s == pytest.approx(0.27)
    assert nl.total_s == pytest.approx(0.63)
    np.testing.assert_allclose(nl.step_exposed_s, [[0, 0.09], [0, 0.09], [0, 0.09]], atol=1e-12)
    # sida: prefetch at every step; s0 has nothing to hide behind
    sida = offload_latency(simulate_offload(TOPK, 4, policy="sida", capacity=2, predicted=pred), **kw)
    assert sida.stall_s == 0.0 and sida.prefetch_exposed_s == pytest.approx(0.1 + 5 * 0.09)
    assert sida.total_s == pytest.approx(0.61)
    pt = sida.per_token()
    assert pt["total"] == pytest.approx(0.61 / 3) and pt["all_resident"] == pytest.approx(0.02)
    assert set(pt) == {"compute", "stall", "prefetch_hidden", "prefetch_exposed", "total", "all_resident"}
    assert isinstance(sida, OffloadLatency) and "slowdown" in repr(sida)


def test_latency_link_roofline_and_overrides():
    s = simulate_offload(TOPK, 4, policy="lru", capacity=2, expert_bytes=10**9)
    slow = offload_latency(s, profile_gpu=GPU, expert_flops=1e10, link=5.0)  # GB/s
    assert slow.stall_s == pytest.approx(1.2)
    # memory-bound experts: 1e6 FLOP per token is far below the HBM read of 1 ms
    mem = offload_latency(s, profile_gpu=GPU, expert_flops=1e6)
    assert mem.compute_s == pytest.approx(0.006)
    sp = offload_latency(s, profile_gpu=GPU, expert_flops=1e10, sparse=True, efficiency=0.5)
    assert sp.compute_s == pytest.approx(0.06)
    fixed = offload_latency(s, profile_gpu=GPU, expert_flops=1e10, compute_s_per_layer=[0.2, 0.0])
    assert fixed.compute_s == pytest.approx(0.6)
    # the same replay in unit sizes needs expert_bytes here
    u = simulate_offload(TOPK, 4, policy="sida", capacity=2, predicted=oracle_predictions(TOPK))
    a = offload_latency(u, profile_gpu=GPU, expert_flops=1e10, expert_bytes=10**9)
    assert a.total_s == pytest.approx(0.61)
    # batching: tokens of a batch share one load; compute grows with the tokens routed
    s3 = simulate_offload(TOPK, 4, policy="lru", capacity=2, batch_tokens=3, expert_bytes=10**9)
    b = offload_latency(s3, profile_gpu=GPU, expert_flops=1e10)
    assert b.compute_s == pytest.approx(0.06) and b.stall_s == pytest.approx(0.4)
    assert b.step_stall_s.shape == (1, 2)


def test_latency_real_profile_and_shipped_trace():
    from samoyeds_lab.routing.ship import load_shipped_trace

    tr = load_shipped_trace("en")
    topk = tr.topk_ids.numpy()[:, :512]
    E = tr.num_experts
    eb = 3 * 4096 * 14336 * 2  # a Mixtral-sized fp16 expert
    kw = dict(profile_gpu="h100_sxm", expert_flops=2 * 3 * 4096 * 14336)
    lru = offload_latency(simulate_offload(topk, E, policy="lru", capacity=16, expert_bytes=eb), **kw)
    sida = offload_latency(simulate_offload(topk, E, policy="sida", capacity=16, expert_bytes=eb,
                                            predicted=oracle_predictions(topk)), **kw)
    full = offload_latency(simulate_offload(topk, E, policy="lru", capacity=4 * E, expert_bytes=eb), **kw)
    assert sida.stall_s == 0.0 and sida.total_s < lru.total_s
    assert full.all_resident_s == pytest.approx(lru.all_resident_s)
    assert lru.total_s >= lru.all_resident_s and sida.total_s >= sida.all_resident_s


# ----------------------------------------------------------------------------------------------------
# Shipped traces: hit rate monotone in capacity for stack policies
# ----------------------------------------------------------------------------------------------------


def test_shipped_trace_hit_rate_monotone_in_capacity():
    from samoyeds_lab.routing.ship import load_shipped_trace

    tr = load_shipped_trace("en")
    topk = tr.topk_ids.numpy()
    L, E = tr.num_layers, tr.num_experts
    for scope in ("global", "per_layer"):
        for B in (1, 8):
            for pol in ("lru", "belady"):
                rates = [simulate_offload(topk, E, policy=pol, capacity=c, scope=scope, batch_tokens=B).hit_rate
                         for c in range(0, L * E + 1, 2)]
                assert all(b >= a for a, b in zip(rates, rates[1:])), (scope, B, pol, rates)
                assert rates[0] == 0.0 and rates[-1] > 0.99
            lru = simulate_offload(topk, E, policy="lru", capacity=L * E // 2, scope=scope, batch_tokens=B)
            bel = simulate_offload(topk, E, policy="belady", capacity=L * E // 2, scope=scope, batch_tokens=B)
            assert bel.hit_rate >= lru.hit_rate
            assert bel.per_layer_hit_rate.shape == (L,)
    assert isinstance(lru, OffloadStats) and "hit_rate=" in repr(lru)


# ----------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(policy="lru"), ValueError, "capacity.*neither"),
        (dict(policy="lru", capacity=2, capacity_bytes=4, expert_bytes=1), ValueError, "capacity.*both"),
        (dict(policy="arc", capacity=2), ValueError, "policy.*'arc'"),
        (dict(policy=None, capacity=2), TypeError, "policy"),
        (dict(policy="lru", capacity=2, scope="layer"), ValueError, "scope.*'layer'"),
        (dict(policy="lru", capacity=2, batch_tokens=0), ValueError, "batch_tokens"),
        (dict(policy="lru", capacity=2, batch_tokens=1.5), TypeError, "batch_tokens"),
        (dict(policy="lru", capacity=[1, 1]), TypeError, "capacity.*global"),
        (dict(policy="lru", capacity=[1, 1, 1], scope="per_layer"), ValueError, r"capacity.*per layer \(2\)"),
        (dict(policy="lru", capacity=-1), ValueError, "capacity"),
        (dict(policy="lru", capacity_bytes=10), ValueError, "expert_bytes.*capacity_bytes"),
        (dict(policy="lru", capacity=2, expert_bytes=[1, 2, 3]), ValueError, "expert_bytes.*shape"),
        (dict(policy="lru", capacity=2, expert_bytes=-5), ValueError, "expert_bytes"),
        (dict(policy="lru", capacity=2, expert_bytes=1.5), ValueError, "expert_bytes.*whole"),
        (dict(policy="sida", capacity=2), ValueError, "predicted.*required.*'sida'"),
        (dict(policy="lru", capacity=2, predicted=np.zeros((2, 3, 1), int)), ValueError, "predicted.*only used"),
        (dict(policy="sida", capacity=2, predicted=np.zeros((2, 2, 1), int)), ValueError, r"predicted.*\(2, 3, p\)"),
        (dict(policy="sida", capacity=2, predicted=np.full((2, 3, 1), 4)), ValueError, r"predicted.*\[0, 4\).*4"),
        (dict(policy="sida", capacity=2, predicted=np.full((2, 3, 1), -2)), ValueError, "predicted.*-2"),
        (dict(policy="next_layer", capacity=2, predicted=np.zeros((2, 3, 1))), TypeError, "predicted.*integer"),
        (dict(policy="lru", capacity=2, popularity=np.ones((2, 4))), ValueError, "popularity.*static"),
        (dict(policy="static", capacity=2, popularity=np.ones(8)), ValueError, r"popularity.*\(2, 4\)"),
    ],
)
def test_simulate_offload_bad_inputs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        simulate_offload(TOPK, 4, **kwargs)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: expert_accesses([[[0, 4]]], 4), ValueError, r"topk_ids.*\[0, 4\).*4"),
        (lambda: expert_accesses([[[0, -1]]], 4), ValueError, "topk_ids.*-1"),
        (lambda: expert_accesses([[0, 1]], 4), ValueError, "topk_ids.*3-D"),
        (lambda: expert_accesses(np.zeros((1, 0, 2), int), 4), ValueError, "topk_ids.*every size"),
        (lambda: expert_accesses([[[0.0]]], 4), TypeError, "topk_ids.*integer"),
        (lambda: expert_accesses([[[0]]], 0), ValueError, "num_experts"),
        (lambda: expert_accesses([[[0]]], 4, batch_tokens=0), ValueError, "batch_tokens"),
        (lambda: noisy_predictions(TOPK, 4, 1.5), ValueError, r"quality.*\[0, 1\]"),
        (lambda: noisy_predictions(TOPK, 4, "high"), TypeError, "quality"),
        (lambda: noisy_predictions(TOPK, 4, 0.5, seed=1.0), TypeError, "seed"),
        (lambda: noisy_predictions(TOPK, 3, 0.5), ValueError, r"topk_ids.*\[0, 3\)"),
        (lambda: oracle_predictions([[[-1]]]), ValueError, "topk_ids.*-1"),
        (lambda: offload_latency("stats", profile_gpu=GPU, expert_flops=1.0), TypeError, "stats.*OffloadStats"),
    ],
)
def test_helper_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_latency_bad_inputs():
    unit = simulate_offload(TOPK, 4, policy="lru", capacity=2)
    sized = simulate_offload(TOPK, 4, policy="lru", capacity=2, expert_bytes=10)
    with pytest.raises(ValueError, match="expert_bytes.*needed"):
        offload_latency(unit, profile_gpu=GPU, expert_flops=1.0)
    with pytest.raises(ValueError, match="expert_bytes.*differs"):
        offload_latency(sized, profile_gpu=GPU, expert_flops=1.0, expert_bytes=20)
    with pytest.raises(ValueError, match="expert_flops"):
        offload_latency(sized, profile_gpu=GPU, expert_flops=0.0)
    with pytest.raises(ValueError, match="expert_flops.*shape"):
        offload_latency(sized, profile_gpu=GPU, expert_flops=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="efficiency"):
        offload_latency(sized, profile_gpu=GPU, expert_flops=1.0, efficiency=1.5)
    with pytest.raises(ValueError, match="compute_s_per_layer"):
        offload_latency(sized, profile_gpu=GPU, expert_flops=1.0, compute_s_per_layer=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="compute_s_per_layer"):
        offload_latency(sized, profile_gpu=GPU, expert_flops=1.0, compute_s_per_layer=-1.0)
    with pytest.raises(ValueError, match="profiles"):
        offload_latency(sized, profile_gpu="no_such_gpu", expert_flops=1.0)
    with pytest.raises(TypeError, match="profile_gpu"):
        offload_latency(sized, profile_gpu=3, expert_flops=1.0)
