"""The fused-vs-separate cost model (bench.fusion): bytes from first principles, times from the roofline."""

from __future__ import annotations

import pytest

from samoyeds_lab.bench.fusion import FUSION_PATHS, dual_side_savings, fusion_costs
from samoyeds_lab.bench.roofline import op_bytes, roofline
from samoyeds_lab.offload.hardware import load_profile

M, K = 14336, 4096  # Mixtral-8x7B w1


@pytest.mark.parametrize("profile", ["h100_sxm", "rtx_4070_super"])
@pytest.mark.parametrize("tokens", [1, 16, 64, 512, 4096])
def test_bytes_and_times(profile, tokens):
    c = fusion_costs(M, K, tokens, profile)
    bw = load_profile(profile).memory_bandwidth
    x = tokens * K * 2
    dense_w, sp_w = M * K * 2, M * K // 2 * 2 + M * K // 2 // 4
    crows = M // 2
    sam_w = crows * K // 2 * 2 + crows * K // 2 // 4 + (K // 128) * crows
    assert [c[p].weight_bytes for p in FUSION_PATHS] == [dense_w, sp_w, sam_w, sam_w]
    for p in FUSION_PATHS:
        assert c[p].x_bytes == x and c[p].index_bytes == 4 * tokens and c[p].output_bytes == tokens * M * 2
        assert c[p].bytes == c[p].weight_bytes + x + c[p].copy_bytes + 4 * tokens + tokens * M * 2
        assert c[p].time_s == pytest.approx(c[p].gather_s + c[p].gemm_s) and c[p].profile == load_profile(profile).name
    assert c["samoyeds fused"].copy_bytes == 0 and c["samoyeds fused"].gather_s == 0
    assert c["samoyeds fused"].time_s == pytest.approx(roofline("ssmm", M, K, tokens, profile).time_s)
    assert c["samoyeds fused"].bytes == op_bytes("ssmm", M, K, tokens)["total"]
    for p in FUSION_PATHS[:3]:
        assert c[p].copy_bytes == 2 * x and c[p].gather_s == pytest.approx((2 * x + 4 * tokens) / bw)
    # the GEMM after a gather pass reads xg and no ids: never faster than its own roofline minus the ids
    assert c["2:4+gather"].gemm_s == pytest.approx(roofline("spmm", M, K, tokens, profile).time_s)
    order = [c[p].time_s for p in FUSION_PATHS]
    assert order == sorted(order, reverse=True)  # each step of sparsity helps in this model
    s = dual_side_savings(c)
    assert s["weight_side"] == sp_w - sam_w and s["activation_side"] == 2 * x
    assert s["total"] == c["2:4+gather"].bytes - c["samoyeds fused"].bytes == s["weight_side"] + s["activation_side"]
    assert s["time_ratio"] == pytest.approx(c["2:4+gather"].time_s / c["samoyeds fused"].time_s)


def test_decode_is_the_weight_byte_ratio():
    s = dual_side_savings(fusion_costs(M, K, 1, "h100_sxm"))
    assert 1.9 < s["bytes_ratio"] < 2.0 and s["activation_side"] < 1e-3 * s["weight_side"]


def test_errors():
    with pytest.raises(ValueError, match="tokens"):
        fusion_costs(M, K, 0)
    with pytest.raises(TypeError, match="tokens"):
        fusion_costs(M, K, 1.0)
    with pytest.raises(ValueError, match="profile: expected a profile of kind 'gpu'"):
        fusion_costs(M, K, 1, "host_ddr5")
    with pytest.raises(ValueError, match="m: expected a multiple"):
        fusion_costs(M + 1, K, 1)
    with pytest.raises(ValueError, match="dtype"):
        fusion_costs(M, K, 1, dtype="float32")
    with pytest.raises(ValueError, match="costs"):
        dual_side_savings({"dense+gather": None})
