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


def grouped_one_thread(ex, x, ids, w):
    """The one-device grouped forward on one torch thread (the summation order a 1-thread near side uses)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ex.forward_grouped(x, ids, w)
    finally:
        torch.set_num_threads(old)


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
    ref = grouped_one_thread(experts, x, ids, w)
    old = torch.get_num_threads()
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
        with pytest.raises(TypeError, match="x"):
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


# ------------------------------------------------------------------ compressed near-data experts
from samoyeds_lab.offload.hybrid import compressed_bytes, compressed_ops  # noqa: E402

SHAPES = {"samoyeds": (5, 128, 256, dict(n=1, m=2, vector=128)), "2:4": (5, 40, 72, {})}


def sparse_experts(pattern, dtype=torch.float32):
    e, h, i, kw = SHAPES[pattern]
    ex = make_experts(e, h, i, seed=7)
    ex.sparsify(pattern=pattern, **kw)
    return ex.to(dtype)


def sparse_routing(E_, H_, T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(E_, generator=g)[:2] for _ in range(T)])
    w = torch.rand(T, 2, generator=g)
    return torch.randn(T, H_, generator=g), ids, w / w.sum(1, keepdim=True)


@pytest.mark.parametrize("pattern", ["samoyeds", "2:4"])
@pytest.mark.parametrize("T", [1, 19, 99])
@pytest.mark.parametrize("workers", [1, 2])
def test_compressed_near_side_equals_dense_on_pruned_weights(pattern, T, workers):
    ex = sparse_experts(pattern)
    E_, H_ = ex.num_experts, ex.hidden
    x, ids, w = sparse_routing(E_, H_, T, seed=T)
    ref = ex.forward_grouped(x, ids, w)  # dense matmuls on the same pruned weights
    rng = np.random.default_rng(T)
    masks = [np.zeros(E_, bool), np.ones(E_, bool)] + [rng.random(E_) < 0.5 for _ in range(3)]
    with HybridExecutor(ex, near_workers=workers) as hx, \
            HybridExecutor(ex, near_workers=workers, near_backend="reference") as href:
        assert hx.near_format == "compressed"
        for mask in masks:
            r = hx(x, ids, w, mask)
            assert r.near_format == "compressed"
            # fp32: the same products, summed in another order by the kernels
            torch.testing.assert_close(r.output, ref, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(r.output, href(x, ids, w, mask).output, rtol=1e-5, atol=1e-6)
            active = r.tokens_per_expert > 0
            assert (r.near_s > 0) == bool((~mask & active).any())


def test_compressed_near_side_bf16():
    ex = sparse_experts("samoyeds", torch.bfloat16)
    x, ids, w = sparse_routing(ex.num_experts, ex.hidden, 33, seed=1)
    xb = x.bfloat16()
    ref32 = make_experts(*SHAPES["samoyeds"][:3], seed=7)  # fp32 copy of the pruned bf16 weights
    ref32.load_state_dict({k: v.bfloat16().float() for k, v in ex.state_dict().items()})
    want = ref32.forward_grouped(xb.float(), ids, w)
    with HybridExecutor(ex) as hx:
        got = hx(xb, ids, w, np.zeros(ex.num_experts, bool)).output
    assert got.dtype == torch.bfloat16
    # bf16 inputs/weights, fp32 products, bf16 intermediate h (as forward_samoyeds): ~1e-2 relative
    torch.testing.assert_close(got.float(), want, rtol=3e-2, atol=3e-2)


def test_dense_near_format_on_sparsified_experts_is_the_old_path():
    ex = sparse_experts("samoyeds")
    x, ids, w = sparse_routing(ex.num_experts, ex.hidden, 40, seed=2)
    ref = grouped_one_thread(ex, x, ids, w)
    with HybridExecutor(ex, near_format="dense") as hx:
        r = hx(x, ids, w, np.array([True, False, False, True, False]))
    assert r.near_format == "dense" and torch.equal(r.output, ref)


def test_compressed_bytes_calibration_and_paths():
    ex = sparse_experts("samoyeds")
    from samoyeds_lab.kernels import cpu as ck

    ops = compressed_ops(ex)
    assert len(ops) == ex.num_experts and all(len(t) == 3 for t in ops)
    W = compressed_bytes(ex)
    assert W == sum(ck.cpu_operand(op).nbytes for op in ops[0])
    assert W < 0.35 * 3 * ex.hidden * ex.intermediate * 4  # ~28% of the fp32 bytes... plus metadata
    cal = calibrate_host(ex, threads=(1,), probe_tokens=32, repeats=2)
    assert cal.has_compressed and cal.compressed_bytes == W
    fast, near = cal.profiles(1, 1, compressed=True)
    assert near.sparse_flops == pytest.approx(cal.sparse_flops[1])
    assert near.memory_bandwidth == pytest.approx(cal.sparse_stream_bandwidth[1])
    kw = cal.cost_kwargs(compressed=True)
    assert kw["near_bytes"] == W and kw["near_sparse"] and kw["bytes_per_param"] == 4
    n = [3, 0, 12, 1, 7]
    lc = layer_cost(n, cal.expert_params, fast, near, d_model=ex.hidden, on_gpu=np.zeros(5, bool), **kw)
    assert lc.near_time > 0
    sw = measure_paths(ex, [1, 5], repeats=1)
    assert sw.near_format == "compressed" and (sw.near_s > 0).all()
    assert measure_paths(ex, [1], repeats=1, near_format="dense").near_format == "dense"
    dense_cal = calibrate_host(make_experts(E, H, I, seed=1), threads=(1,), probe_tokens=8, repeats=1)
    assert not dense_cal.has_compressed
    with pytest.raises(ValueError, match="compressed"):
        dense_cal.profiles(1, 1, compressed=True)
    with pytest.raises(ValueError, match="compressed"):
        dense_cal.cost_kwargs(compressed=True)


def test_compressed_bad_inputs(experts):
    with pytest.raises(ValueError, match="near_format"):
        HybridExecutor(experts, near_format="compressed")  # never sparsified
    with pytest.raises(ValueError, match="near_format"):
        HybridExecutor(experts, near_format="sparse")
    with pytest.raises(ValueError, match="near_backend"):
        HybridExecutor(experts, near_backend="cuda")
    with pytest.raises(ValueError, match="near_format"):
        measure_paths(experts, [1], near_format="compressed")
    with pytest.raises(ValueError, match="experts"):
        compressed_bytes(experts)
    assert compressed_ops(experts) is None
    with HybridExecutor(experts) as hx:
        assert hx.near_format == "dense"  # auto: dense experts stay dense
    ex = sparse_experts("samoyeds")
    with torch.no_grad():
        ex.w_gate.mul_(2.0)  # stale operands
    with pytest.raises(ValueError, match="experts"):
        HybridExecutor(ex)


def test_check_placements_runs_checks_and_compares(experts):
    from samoyeds_lab.offload.hybrid import check_placements

    x, ids, w = routing(32, seed=9)
    ref = experts.forward_grouped(x, ids, w)

    class Cost:
        total, gpu_time, near_time = 2e-3, 1e-3, 2e-3

    masks = [np.zeros(6, bool), np.ones(6, bool)]
    with HybridExecutor(experts) as hx:
        checks = check_placements(hx, x, ids, w, [("near", masks[0], Cost()), ("fast", masks[1], Cost())],
                                  reference=ref, repeats=2, warmup=0)
        assert [c.label for c in checks] == ["near", "fast"]
        assert all(c.modelled_s == 2e-3 and c.ratio == c.timing.total_s / 2e-3 and "ratio" in c.line() for c in checks)
        with pytest.raises(AssertionError, match="placement 'near' gave another output"):
            check_placements(hx, x, ids, w, [("near", masks[0], Cost())], reference=ref + 1, repeats=1, warmup=0)
    with pytest.raises(TypeError, match="executor: expected a HybridExecutor"):
        check_placements(object(), x, ids, w, [])
