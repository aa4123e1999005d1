"""MoNDE placement: exact == brute force, exact <= every other policy, greedy optimal where it provably is,
threshold == crossover, budgets respected, bad inputs rejected."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab.offload.cost import crossover_tokens, layer_cost
from samoyeds_lab.offload.hardware import HardwareProfile
from samoyeds_lab.offload.placement import EXACT_MAX_EXPERTS, POLICIES, Placement, place_experts, place_layers

P_MIXTRAL = 3 * 4096 * 14336
D = 4096
GPU = HardwareProfile(name="toy gpu", kind="gpu", source="test", fp16_tflops=100, fp16_sparse_tflops=200,
                      memory_gb=80, memory_bandwidth_gbs=1000, link_bandwidth_gbs=25)
NDP = HardwareProfile(name="toy ndp", kind="near_data", source="test", fp16_tflops=1,
                      memory_gb=512, memory_bandwidth_gbs=100, link_bandwidth_gbs=25)
SYSTEMS = [(GPU, NDP), ("h100_pcie", "cxl_ndp_monde"), ("a100_sxm", "host_ddr5"), ("rtx_4090", "cxl_ndp_monde")]


def brute_force(n, P, gpu, near, *, cap=None, resident=None, concurrent=True, **kw):
    """Reference: layer_cost of every one of the 2^E masks; the minimum over those within the budget."""
    E = len(n)
    res = np.zeros(E, bool) if resident is None else np.asarray(resident)
    best = math.inf
    for bits in itertools.product([False, True], repeat=E):
        mask = np.array(bits)
        if cap is not None and np.count_nonzero(mask | res) > cap:
            continue
        t = layer_cost(n, P, gpu, near, d_model=D, on_gpu=mask, resident=res, concurrent=concurrent, **kw).total
        best = min(best, t)
    return best


instances = st.fixed_dictionaries({
    "n": st.lists(st.integers(0, 3000), min_size=1, max_size=8),
    "system": st.sampled_from(range(len(SYSTEMS))),
    "concurrent": st.booleans(),
    "cap": st.one_of(st.none(), st.integers(0, 8)),
    "overlap": st.booleans(),
})


@settings(max_examples=40, deadline=None)
@given(instances)
def test_exact_is_the_brute_force_optimum_and_beats_every_policy(inst):
    n, (gpu, near) = inst["n"], SYSTEMS[inst["system"]]
    kw = dict(d_model=D, concurrent=inst["concurrent"], max_on_gpu=inst["cap"], overlap=inst["overlap"])
    ex = place_experts(n, P_MIXTRAL, gpu, near, policy="exact", **kw)
    ref = brute_force(n, P_MIXTRAL, gpu, near, cap=inst["cap"], concurrent=inst["concurrent"],
                      overlap=inst["overlap"])
    assert ex.time == pytest.approx(ref, rel=1e-9)
    assert ex.evaluated == 2 ** int(np.count_nonzero(np.array(n) > 0))
    for policy in ("greedy", "threshold", "all_near") + (("all_gpu",) if inst["cap"] is None or inst["cap"] >= len(n)
                                                         else ()):
        p = place_experts(n, P_MIXTRAL, gpu, near, policy=policy, **kw)
        assert ex.time <= p.time * (1 + 1e-9), policy
        if inst["cap"] is not None:
            assert p.num_on_gpu <= inst["cap"], policy
        # the reported time is layer_cost of the reported mask
        lc = layer_cost(n, P_MIXTRAL, gpu, near, d_model=D, on_gpu=p.mask, concurrent=inst["concurrent"],
                        overlap=inst["overlap"])
        assert p.time == pytest.approx(lc.total, rel=1e-12) and p.cost.total == p.time
        assert p.gpu_time == pytest.approx(lc.gpu_time) and p.near_time == pytest.approx(lc.near_time)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=8), st.sampled_from(range(len(SYSTEMS))),
       st.one_of(st.none(), st.integers(0, 8)))
def test_greedy_is_optimal_for_the_separable_sequential_objective(n, system, cap):
    """concurrent=False: T = Σ T_near − Σ_{G} benefit, so the cap largest positive benefits are optimal."""
    gpu, near = SYSTEMS[system]
    g = place_experts(n, P_MIXTRAL, gpu, near, d_model=D, policy="greedy", concurrent=False, max_on_gpu=cap)
    ex = place_experts(n, P_MIXTRAL, gpu, near, d_model=D, policy="exact", concurrent=False, max_on_gpu=cap)
    assert g.time == pytest.approx(ex.time, rel=1e-9)
    # and with no budget, it is exactly the per-expert argmin
    if cap is None:
        on = layer_cost(n, P_MIXTRAL, gpu, near, d_model=D, on_gpu=np.ones(len(n), bool))
        off = layer_cost(n, P_MIXTRAL, gpu, near, d_model=D)
        wins = (np.asarray(on.gpu.total) < np.asarray(off.near.total) * (1 - 1e-12))
        assert np.array_equal(g.mask, wins & (np.array(n) > 0))


def test_greedy_can_be_beaten_when_concurrent():
    """The max objective is a partition problem: on some small instances greedy stops above the optimum."""
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(300):
        n = rng.integers(0, 400, size=6)
        g = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="greedy")
        ex = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact")
        assert ex.time <= g.time * (1 + 1e-12)
        gaps.append(g.time / ex.time)
    assert max(gaps) > 1.001  # small (≈0.5 % at most here), but greedy is not optimal


@pytest.mark.parametrize("gpu,near", SYSTEMS)
@pytest.mark.parametrize("overlap", [False, True])
def test_threshold_default_is_the_crossover_and_single_experts_switch_there(gpu, near, overlap):
    x = crossover_tokens(gpu, near, P_MIXTRAL, d_model=D, overlap=overlap)
    assert x is not None
    p = place_experts([1], P_MIXTRAL, gpu, near, d_model=D, policy="threshold", overlap=overlap)
    assert p.threshold == x
    for n in sorted({1, max(1, x - 2), max(1, x - 1), x, x + 1, x + 5, 4 * x}):
        for policy in ("threshold", "exact", "greedy"):
            q = place_experts([n], P_MIXTRAL, gpu, near, d_model=D, policy=policy, concurrent=False, overlap=overlap)
            tg = layer_cost([n], P_MIXTRAL, gpu, near, d_model=D, on_gpu=np.array([True]), overlap=overlap).total
            tm = layer_cost([n], P_MIXTRAL, gpu, near, d_model=D, on_gpu=np.array([False]), overlap=overlap).total
            if policy != "threshold" and math.isclose(tg, tm, rel_tol=1e-12):
                continue  # a tie: exact/greedy keep it near data (less GPU memory), the threshold moves it
            assert bool(q.mask[0]) == (n >= x), (policy, n, x)


def test_threshold_explicit_budget_and_resident():
    n = [5, 50, 500, 0, 80]
    p = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="threshold", threshold=60)
    assert p.mask.tolist() == [False, False, True, False, True] and p.threshold == 60
    p = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="threshold", threshold=60, max_on_gpu=1)
    assert p.mask.tolist() == [False, False, True, False, False]  # the hottest one
    res = np.array([True, False, False, False, False])
    p = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="threshold", threshold=60, resident=res,
                      max_on_gpu=2)
    assert p.mask.tolist() == [True, False, True, False, False]  # resident with tokens stays; one slot left
    # an idle threshold: near data wins for every count
    slow = HardwareProfile(name="slow gpu", kind="gpu", source="test", fp16_tflops=0.5, fp16_sparse_tflops=1,
                           memory_gb=8, memory_bandwidth_gbs=50, link_bandwidth_gbs=1)
    p = place_experts(n, P_MIXTRAL, slow, NDP, d_model=D, policy="threshold")
    assert p.threshold == math.inf and not p.mask.any()


def test_budget_in_bytes_matches_budget_in_experts():
    n = np.array([900, 800, 700, 600, 500, 400])
    for k in range(0, 7):
        by_count = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact", max_on_gpu=k)
        by_bytes = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact",
                                 gpu_budget_bytes=k * P_MIXTRAL * 2 + 1)
        assert np.array_equal(by_count.mask, by_bytes.mask) and by_count.num_on_gpu <= k
        assert by_bytes.gpu_bytes <= k * P_MIXTRAL * 2


def test_resident_experts_cost_no_transfer_and_count_against_budget():
    n = [10, 10, 10, 10]
    res = np.array([True, True, False, False])
    p = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact", resident=res)
    assert p.mask[:2].all()
    assert float(np.asarray(p.cost.gpu.transfer)[:2].sum()) == 0.0
    with pytest.raises(ValueError, match="resident"):
        place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="greedy", resident=res, max_on_gpu=1)


def test_idle_experts_never_move_and_baselines():
    n = [0, 300, 0, 2]
    for policy in ("threshold", "greedy", "exact"):
        p = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy=policy)
        assert not p.mask[0] and not p.mask[2]
    assert place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="all_gpu").mask.all()
    a = place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="all_near")
    assert not a.mask.any() and a.gpu_time == 0 and a.time == pytest.approx(a.near_time)
    # all idle: nothing to do
    z = place_experts([0, 0], P_MIXTRAL, GPU, NDP, d_model=D, policy="exact")
    assert z.time == 0 and not z.mask.any()


def test_mixtral_on_h100_and_cxl_hand_numbers():
    """One hot expert (700 tokens) and a cold one (3 tokens): the hot one moves, the cold one stays."""
    n = [700, 3]
    p = place_experts(n, P_MIXTRAL, "h100_pcie", "cxl_ndp_monde", d_model=D, policy="exact")
    assert p.mask.tolist() == [True, False]
    Pb = P_MIXTRAL * 2
    # the default link is the slower of the two profiles' links: CXL's 63 GB/s, for both paths
    t_gpu = Pb / 63e9 + max(2 * 700 * P_MIXTRAL / 756.5e12, Pb / 2000e9)
    t_near = 2 * 3 * D * 2 / 63e9 + max(Pb / 102.4e9, 2 * 3 * P_MIXTRAL / 4e12)
    assert p.time == pytest.approx(max(t_gpu, t_near), rel=1e-12)


def test_place_layers_accepts_torch_counts():
    counts = torch.tensor([[10, 0, 300, 4], [1, 1, 1, 1]])
    out = place_layers(counts, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact")
    assert len(out) == 2 and all(isinstance(p, Placement) for p in out)
    assert out[0].mask.tolist() == place_experts([10, 0, 300, 4], P_MIXTRAL, GPU, NDP, d_model=D,
                                                 policy="exact").mask.tolist()


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(policy="best"), ValueError, "policy"),
    (dict(policy=None), ValueError, "policy"),
    (dict(policy="greedy", threshold=3), ValueError, "threshold"),
    (dict(policy="threshold", threshold=-1), ValueError, "threshold"),
    (dict(policy="threshold", threshold=float("nan")), ValueError, "threshold"),
    (dict(max_on_gpu=-1), ValueError, "max_on_gpu"),
    (dict(max_on_gpu=1.5), ValueError, "max_on_gpu"),
    (dict(gpu_budget_bytes=-5), ValueError, "gpu_budget_bytes"),
    (dict(gpu_budget_bytes=float("inf")), ValueError, "gpu_budget_bytes"),
    (dict(policy="all_gpu", max_on_gpu=2), ValueError, "all_gpu"),
    (dict(resident=[1, 0, 0]), TypeError, "resident"),
    (dict(resident=np.array([True, False])), ValueError, "resident"),
    (dict(d_model=0), ValueError, "d_model"),
    (dict(efficiency=2.0), ValueError, "efficiency"),
])
def test_bad_arguments(kwargs, exc, match):
    kw = dict(d_model=D)
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        place_experts([1, 2, 3], P_MIXTRAL, GPU, NDP, **kw)


@pytest.mark.parametrize("n,exc", [([], ValueError), ([[1, 2]], ValueError), ([1, -2], ValueError),
                                   ([1, float("nan")], ValueError), ("abc", TypeError), (None, TypeError),
                                   ([1, "x"], TypeError)])
def test_bad_counts(n, exc):
    with pytest.raises(exc, match="tokens_per_expert"):
        place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D)


def test_exact_refuses_too_many_experts_naming_the_argument():
    n = np.ones(EXACT_MAX_EXPERTS + 1)
    with pytest.raises(ValueError, match=r"tokens_per_expert: policy='exact'.*m=17"):
        place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact")
    # idle experts do not count: 64 experts of which 16 have tokens is fine
    n = np.zeros(64)
    n[::4] = 7
    assert place_experts(n, P_MIXTRAL, GPU, NDP, d_model=D, policy="exact").evaluated == 2 ** 16
    for policy in POLICIES:
        if policy != "exact":
            place_experts(np.arange(64), P_MIXTRAL, GPU, NDP, d_model=D, policy=policy)


def test_place_layers_bad_counts():
    with pytest.raises(ValueError, match="counts"):
        place_layers([1, 2, 3], P_MIXTRAL, GPU, NDP, d_model=D)
    with pytest.raises(TypeError, match="counts"):
        place_layers([["a"]], P_MIXTRAL, GPU, NDP, d_model=D)


def test_placement_reads_the_near_sides_compressed_bytes():
    # a near side that reads 28% of the bytes makes near-data execution cheaper, so fewer experts go to the GPU
    from samoyeds_lab.offload.cost import layer_cost
    from samoyeds_lab.offload.placement import place_experts

    P, d = 3 * 4096 * 14336, 4096
    n = [1, 2, 3, 5, 8, 13, 40, 200]
    dense = place_experts(n, P, "h100_sxm", "host_ddr5", d_model=d, policy="greedy")
    comp = place_experts(n, P, "h100_sxm", "host_ddr5", d_model=d, policy="greedy", near_bytes=0.28 * 2 * P)
    assert comp.time <= dense.time and comp.mask.sum() <= dense.mask.sum()
    direct = layer_cost(n, P, "h100_sxm", "host_ddr5", d_model=d, on_gpu=comp.mask, near_bytes=0.28 * 2 * P)
    assert comp.time == direct.total
    thr = place_experts(n, P, "h100_sxm", "host_ddr5", d_model=d, policy="threshold", near_bytes=0.28 * 2 * P)
    assert thr.threshold >= place_experts(n, P, "h100_sxm", "host_ddr5", d_model=d, policy="threshold").threshold
