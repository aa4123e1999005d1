"""offload.sweep: every policy replayed with the same budget, batch and sizes; numbers agree with direct
simulate_offload / offload_latency calls; bad inputs name the argument."""

import numpy as np
import pytest

from samoyeds_lab.offload.simulate import oracle_predictions, offload_latency, simulate_offload
from samoyeds_lab.offload.sweep import (
    MIXTRAL_EXPERT,
    SWEEP_POLICIES,
    BudgetSweep,
    ExpertShape,
    budget_sweep,
    policy_latencies,
)

L, T, K, E = 3, 40, 2, 6


@pytest.fixture(scope="module")
def topk():
    rng = np.random.default_rng(0)
    return np.stack([np.stack([rng.choice(E, K, replace=False) for _ in range(T)]) for _ in range(L)])


@pytest.fixture(scope="module")
def preds(topk):
    o = oracle_predictions(topk)
    nl = o.copy()
    nl[0] = -1
    return {"sida": o, "next_layer": nl}


def test_mixtral_expert_sizes():
    assert MIXTRAL_EXPERT.params == 3 * 4096 * 14336
    assert MIXTRAL_EXPERT.nbytes == 2 * 3 * 4096 * 14336  # ≈ 352 MB in fp16
    assert MIXTRAL_EXPERT.flops_per_token == 2 * MIXTRAL_EXPERT.params


@pytest.mark.parametrize("bad, err", [(dict(d_model=0), ValueError), (dict(d_ffn=-1), ValueError),
                                      (dict(d_model=1.5), TypeError), (dict(bytes_per_param=0), ValueError),
                                      (dict(bytes_per_param=float("inf")), ValueError), (dict(name=3), TypeError)])
def test_expert_shape_rejects_bad_sizes(bad, err):
    kw = dict(name="x", d_model=8, d_ffn=16) | bad
    with pytest.raises(err, match=next(iter(bad))):
        ExpertShape(**kw)


def test_budget_sweep_matches_direct_replays(topk, preds):
    caps = [0, 3, 7, L * E]
    sw = budget_sweep(topk, E, caps, predictions=preds, batch_tokens=2)
    assert isinstance(sw, BudgetSweep) and set(sw.hit_rate) == set(SWEEP_POLICIES)
    for p in SWEEP_POLICIES:
        kw = {"predicted": preds[p]} if p in preds else {}
        for i, c in enumerate(caps):
            st = simulate_offload(topk, E, policy=p, capacity=c, batch_tokens=2, **kw)
            assert sw.hit_rate[p][i] == pytest.approx(st.hit_rate)
            assert sw.bytes_loaded[p][i] == st.bytes_demand + st.bytes_prefetched
    # the whole model resident: only compulsory (first-use) misses for the demand caches
    for p in ("lru", "lfu", "fifo", "belady"):
        assert sw.hit_rate[p][-1] == pytest.approx(sw.hit_rate["belady"][-1])
    # nothing resident: no demand cache hits; an oracle prefetcher serves everything from prefetches
    assert sw.hit_rate["lru"][0] == 0 and sw.hit_rate["belady"][0] == 0
    # Belady bounds every demand-paging policy at every budget
    for p in ("lru", "lfu", "fifo"):
        assert np.all(sw.hit_rate["belady"] >= sw.hit_rate[p] - 1e-12)


def test_policy_latencies_match_offload_latency(topk, preds):
    out = policy_latencies(topk, E, 5, profile_gpu="h100_pcie", link_gbs=32.0, predictions=preds)
    assert set(out) == set(SWEEP_POLICIES)
    resident = {round(lt.all_resident_s, 15) for _, lt in out.values()}
    assert len(resident) == 1  # the same compute baseline for every policy
    st = simulate_offload(topk, E, policy="lru", capacity=5, expert_bytes=MIXTRAL_EXPERT.nbytes)
    lt = offload_latency(st, profile_gpu="h100_pcie", expert_flops=MIXTRAL_EXPERT.flops_per_token, link=32.0)
    assert out["lru"][1].total_s == pytest.approx(lt.total_s)
    # a faster link never makes a policy slower
    fast = policy_latencies(topk, E, 5, link_gbs=128.0, predictions=preds)
    for p in SWEEP_POLICIES:
        assert fast[p][1].total_s <= out[p][1].total_s + 1e-12


def test_static_uses_the_given_profile(topk):
    pop = np.zeros((L, E))
    pop[:, 0] = 1  # pin expert 0 of every layer (and then the smallest ids)
    a = budget_sweep(topk, E, [L], policies=("static",), popularity=pop).hit_rate["static"][0]
    st = simulate_offload(topk, E, policy="static", capacity=L, popularity=pop)
    assert a == pytest.approx(st.hit_rate)


@pytest.mark.parametrize("kw, match", [
    (dict(policies=("lru", "nope")), "policies"),
    (dict(policies=()), "policies"),
    (dict(capacities=[]), "capacities"),
    (dict(capacities=[-1]), "capacities"),
    (dict(policies=("sida",), predictions=None), "predictions"),
])
def test_budget_sweep_bad_inputs(topk, kw, match):
    args = dict(capacities=[1, 2]) | kw
    caps = args.pop("capacities")
    with pytest.raises(ValueError, match=match):
        budget_sweep(topk, E, caps, **args)


def test_policy_latencies_bad_inputs(topk, preds):
    with pytest.raises(ValueError, match="link_gbs"):
        policy_latencies(topk, E, 2, link_gbs=0, predictions=preds)
    with pytest.raises(TypeError, match="expert"):
        policy_latencies(topk, E, 2, expert=(4096, 14336), predictions=preds)
