"""Cost model: hand-computed examples, monotonicity, crossover consistency, layer sums, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samoyeds_lab.offload.cost import (
    LayerCost,
    PathCost,
    crossover_tokens,
    gpu_path_cost,
    hot_set_placement,
    layer_cost,
    near_data_path_cost,
)
from samoyeds_lab.offload.hardware import HardwareProfile, list_profiles, load_profile

# Mixtral-8x7B expert: 3 matrices of 4096 x 14336 = 176,160,768 parameters (~352 MB in fp16).
P_MIXTRAL = 3 * 4096 * 14336
D = 4096
REL = 1e-12

# A hand-sized toy system: GPU 100 TFLOP/s, 1000 GB/s HBM; near data 1 TFLOP/s, 100 GB/s; link 25 GB/s.
GPU = HardwareProfile(name="toy gpu", kind="gpu", source="test", fp16_tflops=100, fp16_sparse_tflops=200,
                      memory_gb=80, memory_bandwidth_gbs=1000, link_bandwidth_gbs=25)
NDP = HardwareProfile(name="toy ndp", kind="near_data", source="test", fp16_tflops=1,
                      memory_gb=512, memory_bandwidth_gbs=100, link_bandwidth_gbs=25)

HOST_NO_LINK = HardwareProfile(name="bare host", kind="host", source="test", fp16_tflops=1, memory_gb=64,
                               memory_bandwidth_gbs=50)


def ref_gpu(n, P, F, B_hbm, B_link, b=2.0, resident=False):
    """Reference: transfer + roofline compute (seconds); 0 for an idle expert."""
    if n == 0:
        return 0.0
    return (0.0 if resident else P * b / B_link) + max(2 * n * P / F, P * b / B_hbm)


def ref_near(n, P, d, F, B_int, B_link, b=2.0, b_act=2.0):
    if n == 0:
        return 0.0
    return 2 * n * d * b_act / B_link + max(P * b / B_int, 2 * n * P / F)


def test_papers_example_mixtral_expert():
    """PAPERS.md: 352 MB over 25 GB/s is ~14 ms; streaming it from 100 GB/s memory ~3.5 ms."""
    P = 176e6
    g = gpu_path_cost(1, P, GPU, link=25)
    assert g.transfer == pytest.approx(352e6 / 25e9, rel=REL)  # 14.08 ms
    assert 13.9e-3 < g.transfer < 14.2e-3
    m = near_data_path_cost(1, P, NDP, d_model=D)
    assert m.compute == pytest.approx(352e6 / 100e9, rel=REL)  # 3.52 ms, bandwidth-bound
    assert m.transfer == pytest.approx(2 * 4096 * 2 / 25e9, rel=REL)
    assert m.total < g.total  # near data wins for one token


@pytest.mark.parametrize("n", [0, 1, 19, 99, 989, 4096])
@pytest.mark.parametrize("resident", [False, True])
def test_gpu_path_matches_reference(n, resident):
    got = gpu_path_cost(n, P_MIXTRAL, GPU, resident=resident)
    want = ref_gpu(n, P_MIXTRAL, 100e12, 1000e9, 25e9, resident=resident)
    assert got.total == pytest.approx(want, rel=REL, abs=0)
    assert got.total == pytest.approx(got.transfer + got.compute, rel=REL, abs=0)


@pytest.mark.parametrize("n", [0, 1, 19, 99, 989])
def test_near_path_matches_reference(n):
    got = near_data_path_cost(n, P_MIXTRAL, NDP, d_model=D)
    assert got.total == pytest.approx(ref_near(n, P_MIXTRAL, D, 1e12, 100e9, 25e9), rel=REL, abs=0)


def test_roofline_regimes():
    # 1 token: HBM-bound (352 MB / 1000 GB/s = 0.352 ms > 2·P / 100 TFLOP/s = 3.5 µs)
    assert gpu_path_cost(1, P_MIXTRAL, GPU, resident=True).compute == pytest.approx(
        P_MIXTRAL * 2 / 1000e9, rel=REL)
    # 4096 tokens: compute-bound
    assert gpu_path_cost(4096, P_MIXTRAL, GPU, resident=True).compute == pytest.approx(
        2 * 4096 * P_MIXTRAL / 100e12, rel=REL)
    # sparse peak and efficiency
    assert gpu_path_cost(4096, P_MIXTRAL, GPU, resident=True, sparse=True).compute == pytest.approx(
        2 * 4096 * P_MIXTRAL / 200e12, rel=REL)
    assert gpu_path_cost(4096, P_MIXTRAL, GPU, resident=True, efficiency=0.5).compute == pytest.approx(
        2 * 4096 * P_MIXTRAL / 50e12, rel=REL)


def test_overlap_is_max_not_sum():
    g = gpu_path_cost(10_000, P_MIXTRAL, GPU, overlap=True)
    assert g.total == pytest.approx(max(g.transfer, g.compute), rel=REL)
    m = near_data_path_cost(10, P_MIXTRAL, NDP, d_model=D, overlap=True)
    assert m.total == pytest.approx(max(m.transfer, m.compute), rel=REL)
    assert m.total <= near_data_path_cost(10, P_MIXTRAL, NDP, d_model=D).total


def test_link_choices_agree():
    a = gpu_path_cost(5, P_MIXTRAL, GPU, link=31.5).total
    b = gpu_path_cost(5, P_MIXTRAL, GPU, link="pcie4_x16").total
    c = gpu_path_cost(5, P_MIXTRAL, GPU, link=load_profile("pcie4_x16")).total
    assert a == b == c


@pytest.mark.parametrize("kind", ["numpy", "torch", "list"])
def test_array_inputs_elementwise(kind):
    counts = [0, 1, 19, 99, 989]
    x = {"numpy": np.array(counts), "torch": torch.tensor(counts), "list": counts}[kind]
    g = gpu_path_cost(x, P_MIXTRAL, GPU)
    m = near_data_path_cost(x, P_MIXTRAL, NDP, d_model=D)
    assert isinstance(g.total, np.ndarray) and g.total.shape == (5,)
    for i, n in enumerate(counts):
        assert g.total[i] == pytest.approx(gpu_path_cost(n, P_MIXTRAL, GPU).total, rel=REL, abs=0)
        assert m.total[i] == pytest.approx(ref_near(n, P_MIXTRAL, D, 1e12, 100e9, 25e9), rel=REL, abs=0)


SYSTEMS = [(g, n) for g in ("h100_sxm", "a100_sxm", "rtx_4070_super") for n in ("cxl_ndp_monde", "host_ddr5")]


@pytest.mark.parametrize("gpu, near", SYSTEMS)
@pytest.mark.parametrize("overlap", [False, True])
def test_more_tokens_never_cheaper(gpu, near, overlap):
    n = np.arange(0, 5000)
    g = gpu_path_cost(n, P_MIXTRAL, gpu, overlap=overlap).total
    m = near_data_path_cost(n, P_MIXTRAL, near, d_model=D, overlap=overlap).total
    assert np.all(np.diff(g) >= 0) and np.all(np.diff(m) >= 0)


@pytest.mark.parametrize("gpu, near", SYSTEMS)
def test_crossover_consistent_with_paths(gpu, near):
    c = crossover_tokens(gpu, near, P_MIXTRAL, d_model=D)
    assert c is not None and c >= 1
    near_p = load_profile(near)
    near_link = near_p.link_bandwidth_gbs or load_profile(near_p.link).link_bandwidth_gbs
    kw = dict(link=min(load_profile(gpu).link_bandwidth_gbs, near_link))
    at = lambda n: (gpu_path_cost(n, P_MIXTRAL, gpu, **kw).total,  # noqa: E731
                    near_data_path_cost(n, P_MIXTRAL, near, d_model=D, **kw).total)
    g, m = at(c)
    assert g <= m
    if c > 1:
        g, m = at(c - 1)
        assert g > m


def test_crossover_hand_computed():
    # toy: GPU(n) = 14.08 ms + max(2nP/100T, 0.352 ms); near(n) = 2n·4096·2/25G + max(3.52 ms, 2nP/1T)
    # near compute-bound from n = 10; equality ~ 14.08e-3 + 0.352e-3 = n·(0.352e-3 + 6.55e-7) -> n ≈ 40.9
    c = crossover_tokens(GPU, NDP, 176e6, d_model=D)
    assert c == 41
    assert crossover_tokens(GPU, NDP, 176e6, d_model=D, max_tokens=40) is None


def test_crossover_rises_with_slower_link():
    fast = crossover_tokens(GPU, NDP, P_MIXTRAL, d_model=D, link=63)
    slow = crossover_tokens(GPU, NDP, P_MIXTRAL, d_model=D, link=16)
    assert fast < slow


def test_layer_cost_sums_and_memory():
    n = np.array([300, 2, 0, 50, 10, 1, 1, 3])
    on_gpu = np.array([True, False, False, True, False, False, False, False])
    lc = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=on_gpu, top_k=2)
    assert isinstance(lc, LayerCost) and isinstance(lc.gpu, PathCost)
    want_g = sum(ref_gpu(x, P_MIXTRAL, 100e12, 1000e9, 25e9) for x in n[on_gpu])
    want_m = sum(ref_near(x, P_MIXTRAL, D, 1e12, 100e9, 25e9) for x in n[~on_gpu])
    assert lc.gpu_time == pytest.approx(want_g, rel=REL)
    assert lc.near_time == pytest.approx(want_m, rel=REL)
    assert lc.total == pytest.approx(max(want_g, want_m), rel=REL) and lc.latency == lc.total
    assert lc.tokens == 367 / 2 and lc.throughput == pytest.approx(183.5 / lc.total, rel=REL)
    assert lc.gpu_weight_bytes == 2 * P_MIXTRAL * 2
    assert np.all(lc.gpu.total[~on_gpu] == 0) and np.all(lc.near.total[on_gpu] == 0)
    seq = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=on_gpu, concurrent=False)
    assert seq.total == pytest.approx(want_g + want_m, rel=REL)


def test_layer_default_placement_and_resident():
    n = torch.tensor([5, 5, 5, 5])
    res = np.array([True, False, False, False])
    lc = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, resident=res)
    assert lc.on_gpu.tolist() == res.tolist()
    assert lc.gpu.transfer[0] == 0  # resident: no weight move
    assert lc.gpu_weight_bytes == P_MIXTRAL * 2


def test_more_tokens_never_make_layer_cheaper():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = rng.integers(0, 200, size=8)
        place = rng.random(8) < 0.3
        base = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=place).total
        n2 = n.copy()
        n2[rng.integers(0, 8)] += rng.integers(1, 50)
        assert layer_cost(n2, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=place).total >= base
        best = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu="best").total
        best2 = layer_cost(n2, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu="best").total
        assert best2 >= best - 1e-15


def test_hot_set_beats_all_or_nothing():
    n = np.array([900, 400, 3, 2, 1, 1, 0, 0])
    best = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu="best")
    none = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=np.zeros(8, bool))
    allg = layer_cost(n, P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=n > 0)
    assert best.total <= min(none.total, allg.total)
    assert best.on_gpu[0] and not best.on_gpu[6:].any()  # hottest moved, idle never
    # sequential layers: the hot set is exactly "the experts whose GPU path is cheaper"
    seq = hot_set_placement(n, P_MIXTRAL, GPU, NDP, d_model=D, concurrent=False)
    g = gpu_path_cost(n, P_MIXTRAL, GPU).total
    m = near_data_path_cost(n, P_MIXTRAL, NDP, d_model=D).total
    assert seq.tolist() == ((g < m) & (n > 0)).tolist()
    capped = hot_set_placement(n, P_MIXTRAL, GPU, NDP, d_model=D, max_on_gpu=1)
    assert capped.sum() <= 1


def test_empty_layer():
    lc = layer_cost(np.zeros(4), P_MIXTRAL, GPU, NDP, d_model=D)
    assert lc.total == 0 and lc.throughput == math.inf


@pytest.mark.parametrize(
    "call, match, exc",
    [
        (lambda: gpu_path_cost(-1, P_MIXTRAL, GPU), "n_tokens", ValueError),
        (lambda: gpu_path_cost("x", P_MIXTRAL, GPU), "n_tokens", TypeError),
        (lambda: gpu_path_cost(1, 0, GPU), "expert_params", ValueError),
        (lambda: gpu_path_cost(1, P_MIXTRAL, GPU, efficiency=1.5), "efficiency", ValueError),
        (lambda: gpu_path_cost(1, P_MIXTRAL, GPU, link=-3), "link", ValueError),
        (lambda: gpu_path_cost(1, P_MIXTRAL, 3), "gpu", TypeError),
        (lambda: near_data_path_cost(1, P_MIXTRAL, NDP, d_model=0), "d_model", ValueError),
        (lambda: near_data_path_cost(1, P_MIXTRAL, HOST_NO_LINK, d_model=D), "link", ValueError),
        (lambda: near_data_path_cost(1, P_MIXTRAL, "host_ddr5", d_model=D, link=25, sparse=True), "fp16_sparse_tflops",
         ValueError),
        (lambda: gpu_path_cost(1, P_MIXTRAL, "host_ddr5", link=25), "gpu", ValueError),
        (lambda: crossover_tokens(NDP, GPU, P_MIXTRAL, d_model=D), "gpu", ValueError),
        (lambda: layer_cost([[1, 2]], P_MIXTRAL, GPU, NDP, d_model=D), "tokens_per_expert", ValueError),
        (lambda: layer_cost([1, 2], P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=[1, 0]), "on_gpu", TypeError),
        (lambda: layer_cost([1, 2], P_MIXTRAL, GPU, NDP, d_model=D, on_gpu=[True]), "on_gpu", ValueError),
        (lambda: layer_cost([1, 2], P_MIXTRAL, GPU, NDP, d_model=D, on_gpu="hot"), "on_gpu", ValueError),
        (lambda: layer_cost([1, 2], P_MIXTRAL, GPU, NDP, d_model=D, top_k=0), "top_k", ValueError),
        (lambda: crossover_tokens(GPU, NDP, P_MIXTRAL, d_model=D, max_tokens=0), "max_tokens", ValueError),
    ],
)
def test_bad_arguments_named(call, match, exc):
    with pytest.raises(exc, match=match):
        call()


def test_host_link_comes_from_named_link_profile():
    m = near_data_path_cost(1, P_MIXTRAL, "host_ddr5", d_model=D)
    assert m.transfer == pytest.approx(2 * D * 2 / 63e9, rel=REL)  # host_ddr5 sits behind pcie5_x16


def test_every_shipped_gpu_has_a_crossover_with_the_ndp():
    for name in list_profiles():
        if load_profile(name).kind == "gpu":
            assert crossover_tokens(name, "cxl_ndp_monde", P_MIXTRAL, d_model=D) is not None


# ------------------------------------------------------------------ compressed near data and n*
NDP_SP = HardwareProfile(name="toy sparse ndp", kind="near_data", source="test", fp16_tflops=1,
                         fp16_sparse_tflops=0.5, memory_gb=512, memory_bandwidth_gbs=100, link_bandwidth_gbs=25)


@pytest.mark.parametrize("n", [0, 1, 19, 99, 989])
def test_near_path_reads_the_compressed_bytes(n):
    W = 0.28 * 2 * P_MIXTRAL
    got = near_data_path_cost(n, P_MIXTRAL, NDP_SP, d_model=D, weight_bytes=W, sparse=True)
    want = 0.0 if n == 0 else 2 * n * D * 2 / 25e9 + max(W / 100e9, 2 * n * P_MIXTRAL / 0.5e12)
    assert got.total == pytest.approx(want, rel=REL, abs=0)
    # dense default: P·b bytes at the dense FLOP/s
    assert near_data_path_cost(n, P_MIXTRAL, NDP_SP, d_model=D).total == pytest.approx(
        ref_near(n, P_MIXTRAL, D, 1e12, 100e9, 25e9), rel=REL, abs=0)


def test_layer_cost_near_bytes_sums_the_compressed_paths():
    n = np.array([0, 1, 5, 40, 300])
    W = 0.3 * 2 * P_MIXTRAL
    lc = layer_cost(n, P_MIXTRAL, GPU, NDP_SP, d_model=D, on_gpu=np.zeros(5, bool), near_bytes=W, near_sparse=True)
    per = near_data_path_cost(n, P_MIXTRAL, NDP_SP, d_model=D, weight_bytes=W, sparse=True).total
    assert lc.near_time == pytest.approx(float(per.sum()), rel=REL)
    dense = layer_cost(n, P_MIXTRAL, GPU, NDP_SP, d_model=D, on_gpu=np.zeros(5, bool))
    assert lc.near_time != dense.near_time
    best = hot_set_placement(n, P_MIXTRAL, GPU, NDP_SP, d_model=D, near_bytes=W, near_sparse=True)
    assert layer_cost(n, P_MIXTRAL, GPU, NDP_SP, d_model=D, on_gpu="best", near_bytes=W,
                      near_sparse=True).on_gpu.tolist() == best.tolist()


def test_crossover_moves_with_compressed_bytes_hand_computed():
    # compute free on both sides: T_gpu = Pb/B_link + Pb/B_hbm (flat), T_near = 2nd·b_act/B_link + W/B_int,
    # so n* = ceil((Pb/B_link + Pb/B_hbm - W/B_int) / (2 d b_act / B_link)).
    g = HardwareProfile(name="g", kind="gpu", source="t", fp16_tflops=1e6, fp16_sparse_tflops=1e6, memory_gb=1,
                        memory_bandwidth_gbs=1000, link_bandwidth_gbs=25)
    m = HardwareProfile(name="m", kind="near_data", source="t", fp16_tflops=1e6, fp16_sparse_tflops=1e6,
                        memory_gb=1, memory_bandwidth_gbs=100, link_bandwidth_gbs=25)
    P, d = 1e6, 512
    out = {}
    for W in (2 * P, 0.28 * 2 * P):
        want = math.ceil((2 * P / 25e9 + 2 * P / 1000e9 - W / 100e9) / (2 * d * 2 / 25e9))
        for method in ("closed_form", "brute_force"):
            assert crossover_tokens(g, m, P, d_model=d, near_bytes=W, near_sparse=True, method=method,
                                    max_tokens=1 << 16) == want
        out[W] = want
    assert out[0.28 * 2 * P] > out[2 * P]  # fewer bytes near data: it pays for more tokens


def _random_profiles(rng):
    def lg(a, b):
        return float(10 ** rng.uniform(a, b))
    f = lg(-1, 3)
    g = HardwareProfile(name="g", kind="gpu", source="t", fp16_tflops=f, fp16_sparse_tflops=f * lg(0, 0.5),
                        memory_gb=80, memory_bandwidth_gbs=lg(1.5, 3.7), link_bandwidth_gbs=lg(0.5, 2.2))
    m = HardwareProfile(name="m", kind="near_data", source="t", fp16_tflops=lg(-2.5, 1.5),
                        fp16_sparse_tflops=lg(-2.5, 1.5), memory_gb=512, memory_bandwidth_gbs=lg(0.5, 2.5),
                        link_bandwidth_gbs=lg(0.5, 2.2))
    return g, m


@pytest.mark.parametrize("seed", range(40))
def test_crossover_closed_form_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    g, m = _random_profiles(rng)
    P = float(10 ** rng.uniform(5, 9))
    kw = dict(d_model=int(rng.choice([64, 1000, 4096])), bytes_per_param=float(rng.choice([0.5, 2, 4])),
              bytes_per_act=float(rng.choice([2, 4])), overlap=bool(rng.random() < 0.5),
              sparse=bool(rng.random() < 0.5), efficiency=float(rng.uniform(0.2, 1)),
              max_tokens=int(rng.choice([1, 7, 1000, 1 << 15])))
    if rng.random() < 0.5:
        kw.update(near_bytes=P * kw["bytes_per_param"] * float(rng.uniform(0.1, 1)), near_sparse=bool(rng.random() < 0.5))
    if rng.random() < 0.3:
        kw["link"] = float(rng.uniform(1, 100))
    a = crossover_tokens(g, m, P, method="closed_form", **kw)
    b = crossover_tokens(g, m, P, method="brute_force", **kw)
    assert a == b


@pytest.mark.parametrize("gpu", ["h100_pcie", "a100_sxm", "rtx_4090"])
@pytest.mark.parametrize("near", ["cxl_ndp_monde", "host_ddr5", "probed_2core_epyc"])
@pytest.mark.parametrize("overlap", [False, True])
def test_crossover_closed_form_on_shipped_profiles(gpu, near, overlap):
    for nb in (None, 0.28 * 2 * P_MIXTRAL):
        kw = dict(d_model=D, overlap=overlap, near_bytes=nb, link=16.0)
        assert crossover_tokens(gpu, near, P_MIXTRAL, **kw) == crossover_tokens(gpu, near, P_MIXTRAL,
                                                                                method="brute_force", **kw)


def test_compressed_bad_inputs():
    with pytest.raises(ValueError, match="weight_bytes"):
        near_data_path_cost(1, P_MIXTRAL, NDP, d_model=D, weight_bytes=-1)
    with pytest.raises(ValueError, match="fp16_sparse_tflops"):
        near_data_path_cost(1, P_MIXTRAL, NDP, d_model=D, sparse=True)  # the profile has no sparse rate
    with pytest.raises(ValueError, match="near_bytes"):
        crossover_tokens(GPU, NDP, P_MIXTRAL, d_model=D, near_bytes=0.0)
    with pytest.raises(ValueError, match="method"):
        crossover_tokens(GPU, NDP, P_MIXTRAL, d_model=D, method="bisect")
    with pytest.raises(TypeError, match="near_bytes"):
        layer_cost([1, 2], P_MIXTRAL, GPU, NDP, d_model=D, near_bytes="small")
