"""Hybrid execution: the output equals the one-device computation for every placement; timings and the
calibrated profiles are well-formed; bad inputs are rejected. (No assertion on speed: the machine is shared.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samoyeds_lab.offload.cost import layer_cost
from samoyeds_lab.offload.hardware import HardwareProfile
from samoyeds_lab.offload.hybrid import (
    HostCalibration,
    HybridExecutor,
    HybridTiming,
    PathSweep,
    calibrate_host,
    make_experts,
    measure_paths,
    time_hybrid,
)
from samoyeds_lab.offload.placement import place_experts

E, H, I = 6, 40, 72  # awkward small sizes


@pytest.fixture(scope="module")
def experts():
    return make_experts(E, H, I, seed=3)


def routing(T, k=2, seed=0, skew=1.0):
    g = torch.Generator().manual_seed(seed)
    prior = torch.exp(-skew * torch.arange(E, dtype=torch.float64))
    ids = torch.stack([torch.multinomial(prior, k, generator=g) for _ in range(T)])
    w = torch.rand(T, k, generator=g)
    return torch.randn(T, H, generator=g), ids, w / w.sum(1, keepdim=True)


@pytest.mark.parametrize("T", [1, 19, 99])
@pytest.mark.parametrize("workers", [1, 2])
def test_output_equals_one_device_for_every_placement(experts, T, workers):
    x, ids, w = routing(T, seed=T)
    ref = experts.forward_grouped(x, ids, w)
    dense = experts.forward_dense(x, ids, w)
    rng = np.random.default_rng(T)
    masks = [np.zeros(E, bool), np.ones(E, bool)] + [rng.random(E) < 0.5 for _ in range(4)]
    with HybridExecutor(experts, near_workers=workers) as hx:
        for mask in masks:
            r = hx(x, ids, w, mask, resident=rng.random(E) < 0.3)
            # fp32: the same matmuls on the same rows, added in the same (expert) order as forward_grouped
            torch.testing.assert_close(r.output, ref, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(r.output, dense, rtol=1e-5, atol=1e-6)
            assert r.tokens_per_expert.tolist() == torch.bincount(ids.reshape(-1), minlength=E).tolist()
            assert r.total_s > 0 and r.fast_s >= 0 and r.near_s >= 0
            active = r.tokens_per_expert > 0
            assert (r.fast_s > 0) == bool((mask & active).any())
            assert (r.near_s > 0) == bool((~mask & active).any())


def test_bitwise_equal_to_grouped_at_one_thread(experts):
    x, ids, w = routing(64, seed=5)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = experts.forward_grouped(x, ids, w)
    finally:
        torch.set_num_threads(old)
    with HybridExecutor(experts) as hx:
        r = hx(x, ids, w, np.array([True, False, True, False, False, True]))
    assert torch.equal(r.output, ref)
    assert torch.get_num_threads() == old  # the executor restores the thread count


def test_calibration_profiles_and_model(experts):
    cal = calibrate_host(experts, threads=(1, 2), probe_tokens=64, repeats=2)
    assert isinstance(cal, HostCalibration) and set(cal.flops) == {1, 2}
    assert cal.expert_params == 3 * H * I and cal.bytes_per_param == 4 and cal.hidden == H
    for d in (cal.flops, cal.stream_bandwidth, cal.copy_bandwidth):
        assert all(np.isfinite(v) and v > 0 for v in d.values())
    fast, near = cal.profiles(2, 1)
    assert isinstance(fast, HardwareProfile) and fast.kind == "gpu" and near.kind == "near_data"
    assert fast.flops == pytest.approx(cal.flops[2]) and near.flops == pytest.approx(cal.flops[1])
    assert near.link_bandwidth == pytest.approx(cal.copy_bandwidth[1])
    # the profiles drive the cost model and the placement
    n = [5, 0, 30, 2, 9, 1]
    p = place_experts(n, cal.expert_params, fast, near, d_model=H, policy="exact", bytes_per_param=4, bytes_per_act=4)
    assert p.time == pytest.approx(layer_cost(n, cal.expert_params, fast, near, d_model=H, on_gpu=p.mask,
                                              bytes_per_param=4, bytes_per_act=4).total)
    with pytest.raises(ValueError, match="fast_threads"):
        cal.profiles(3, 1)


def test_time_hybrid_and_path_sweep(experts):
    x, ids, w = routing(32)
    with HybridExecutor(experts) as hx:
        t = time_hybrid(hx, x, ids, w, np.arange(E) % 2 == 0, repeats=3, warmup=1)
    assert isinstance(t, HybridTiming) and len(t.samples) == 3
    assert t.total_s == pytest.approx(float(np.median([s[0] for s in t.samples])))
    sw = measure_paths(experts, [1, 3, 17], fast_threads=1, near_threads=1, repeats=2)
    assert isinstance(sw, PathSweep) and sw.n_tokens.tolist() == [1, 3, 17]
    assert (sw.fast_s > 0).all() and (sw.near_s > 0).all()
    wins = np.nonzero(sw.fast_s <= sw.near_s)[0]
    assert sw.crossover == (int(sw.n_tokens[wins[0]]) if wins.size else None)


def test_bad_inputs(experts):
    x, ids, w = routing(8)
    with pytest.raises(TypeError, match="experts"):
        HybridExecutor("nope")
    with pytest.raises(ValueError, match="device"):
        HybridExecutor(experts, device="tpu")
    with pytest.raises(ValueError, match="near_workers"):
        HybridExecutor(experts, near_workers=0)
    with HybridExecutor(experts) as hx:
        with pytest.raises(TypeError, match="on_gpu"):
            hx(x, ids, w, [1, 0, 0, 0, 0, 0])
        with pytest.raises(ValueError, match="on_gpu"):
            hx(x, ids, w, np.zeros(E + 1, bool))
        with pytest.raises(ValueError, match="x"):
            hx(x[:, :-1], ids, w, np.zeros(E, bool))
        with pytest.raises(TypeError, match="x"):
            hx(x.double(), ids, w, np.zeros(E, bool))
        with pytest.raises(ValueError, match="x"):
            hx(x.half(), ids, w, np.zeros(E, bool))
        with pytest.raises(ValueError, match="topk_ids"):
            hx(x, ids[:-1], w, np.zeros(E, bool))
        with pytest.raises(TypeError, match="resident"):
            hx(x, ids, w, np.zeros(E, bool), resident=[0] * E)
        with pytest.raises(TypeError, match="executor"):
            time_hybrid(None, x, ids, w, np.zeros(E, bool))
        with pytest.raises(ValueError, match="repeats"):
            time_hybrid(hx, x, ids, w, np.zeros(E, bool), repeats=0)
    with pytest.raises(ValueError, match="n_tokens"):
        measure_paths(experts, [0, 1])
    with pytest.raises(ValueError, match="n_tokens"):
        measure_paths(experts, [1.5])
    with pytest.raises(ValueError, match="threads"):
        calibrate_host(experts, threads=(0,))
    with pytest.raises(ValueError, match="probe_tokens"):
        calibrate_host(experts, probe_tokens=0)
