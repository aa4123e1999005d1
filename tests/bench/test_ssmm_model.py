"""The analytic SSMM launch model (:mod:`samoyeds_lab.bench.ssmm_model`), checked against numbers worked out
by hand from the kernel's layout and the datasheets (every time it gives is a prediction).

Hand-computed for today's kernel (128 × 64 × 32 tile, 2 stages, fp32 flush tile, Samoyeds 1:2 V=128):

* stage = A 128·16·2 = 4096 B + metadata 128·32/8 = 512 B + B 64·32·2 = 4096 B = 8704 B;
  shared/CTA = 2·8704 + 64·4 + 64·(256+4)·4 = 84 224 B (≈ 84 KB, 66.6 KB of it the flush tile);
* CTAs/SM on Hopper: 228 KiB // (84 224 + 1 KiB reserved) = 2 → 264 slots on 132 SMs;
* Mixtral w1 (14336 × 4096) at 8 tokens: 7168 compressed rows / 128 = 56 row blocks, 1 token tile,
  split-K = ceil(2·132 / 56) = 5 → 280 CTAs: 280 / 264 = 1.06 waves, quantised to 2 (factor 2 / 1.06);
* weight bytes in flight per SM: 264 resident CTAs · (2 - 1) stages · 4608 B / 132 = 9216 B (the ≈ 9 KB);
* Little's law at 800 ns (assumed): H100 3.35 TB/s · 800 ns / 132 = 20 303 B, H200 4.8 TB/s → 29 091 B
  (inside the 20–35 KB the issue quotes).
"""

from __future__ import annotations

import math

import pytest

from samoyeds_lab.bench import ssmm_model as M
from samoyeds_lab.kernels.launch import smem_bytes

W1, W2 = M.MIXTRAL["w1"], M.MIXTRAL["w2"]


def test_today_stage_and_shared_memory_by_hand():
    sb = M.stage_bytes(M.TODAY)
    assert (sb["values"], sb["meta"], sb["tokens"], sb["total"]) == (4096, 512, 4096, 8704)
    assert M.smem_per_cta(M.TODAY) == 2 * 8704 + 64 * 4 + 64 * (256 + 4) * 4 == 84224
    assert M.smem_per_cta(M.TODAY) == smem_bytes("ssmm", 1, 2)  # the launcher's layout
    assert M.stage_bytes(M.TODAY, tokens_loaded=8)["tokens"] == 8 * 32 * 2


@pytest.mark.parametrize("dev", ["h100_sxm", "h200"])
def test_today_two_ctas_per_sm_from_shared_memory(dev):
    lim = M.ctas_per_sm(M.TODAY, M.device_limits(dev))
    assert lim["smem"] == (228 * 1024) // (84224 + 1024) == 2
    assert lim["ctas"] == 2


@pytest.mark.parametrize("dev,need", [("h100_sxm", 3.35e12 * 800e-9 / 132), ("h200", 4.8e12 * 800e-9 / 132)])
def test_littles_law_bytes_per_sm(dev, need):
    d = M.device_limits(dev)
    assert d.littles_law_bytes_per_sm == pytest.approx(need)
    assert 20e3 <= need <= 35e3  # the range the issue quotes for HBM3 / HBM3e
    assert M.device_limits(dev, dram_latency_s_assumed=400e-9).littles_law_bytes_per_sm == pytest.approx(need / 2)


def test_today_decode_w1_grid_waves_and_in_flight():
    p = M.predict(M.TODAY, *W1, 8, "h100_sxm")
    assert (p.splits, p.grid, p.slots) == (5, 56 * 1 * 5, 264)
    assert p.waves == pytest.approx(280 / 264) and p.quantised_waves == 2
    assert p.wave_factor == pytest.approx(2 / (280 / 264))
    assert p.weight_bytes_in_flight_per_sm == 264 * 1 * 4608 / 132 == 9216
    assert p.bytes_in_flight_per_sm == 264 * (4608 + 8 * 64) / 132
    assert p.bound == "memory" and p.limiter == "smem"
    assert p.memory_fraction == pytest.approx(min(1, p.bytes_in_flight_per_sm / p.littles_law_bytes_per_sm) * 0.9)
    assert any("latency-bound" in n for n in p.notes)


@pytest.mark.parametrize("grid,slots,want", [
    (280, 264, (280 / 264, 2, 2 / (280 / 264))), (264, 264, (1.0, 1, 1.0)), (529, 264, (529 / 264, 3, 3 / (529 / 264))),
    (100, 264, (100 / 264, 1, 1.0)), (1, 1, (1.0, 1, 1.0))])
def test_wave_factor(grid, slots, want):
    got = M.wave_factor(grid, slots)
    assert got[1] == want[1] and got[0] == pytest.approx(want[0]) and got[2] == pytest.approx(want[2])


def test_predicted_time_is_the_formula():
    d = M.device_limits("h200")
    p = M.predict(M.TODAY, *W2, 1, d)
    from samoyeds_lab.bench.roofline import op_bytes

    b = op_bytes("ssmm", *W2, 1, "bfloat16")
    ws = p.splits * 1 * W2[0] * 4
    mblocks = W2[0] // 2 // 128
    hbm = b["weight"] + b["activation"] + b["index"] + ws  # 1 token tile: the weight is read once
    sm = b["weight"] + (b["activation"] + b["index"]) * mblocks + ws
    t_mem = max(hbm / (d.hbm_bytes_per_s * p.memory_fraction), sm / (min(132, p.grid) * d.sm_bytes_per_s_assumed))
    assert p.t_memory_s == pytest.approx(t_mem) and p.sm_bytes == sm
    t_cmp = 2 * (W2[0] // 2) * W2[1] * 64 / (d.sparse_flops * d.mma_sp_fraction_assumed * min(1, p.grid / 132))
    assert p.t_compute_s == pytest.approx(t_cmp)
    t_fin = (ws + b["output"]) / (d.hbm_bytes_per_s * 0.9) + d.launch_gap_s_assumed
    assert p.predicted_s == pytest.approx(max(t_mem, t_cmp) * p.wave_factor + t_fin)
    dense = max(op_bytes("dense", *W2, 1, "bfloat16")["total"] / (d.hbm_bytes_per_s * 0.9),
                2 * W2[0] * W2[1] / d.dense_flops)
    assert p.predicted_ratio_vs_dense == pytest.approx(dense / p.predicted_s)


def _deeper(stages):
    return M.SsmmConfig(block_n=8, stages=stages, split_k=2, flush_tile=False, finalize_launch=False)


@pytest.mark.parametrize("dev", ["h100_sxm", "h200"])
@pytest.mark.parametrize("shape", [W1, W2])
@pytest.mark.parametrize("tokens", [1, 8])
def test_more_stages_more_in_flight_never_slower(dev, shape, tokens):
    preds = [M.predict(_deeper(s), *shape, tokens, dev) for s in (2, 3, 4, 6, 8)]
    assert len({p.ctas_per_sm for p in preds}) == 1  # the register limit holds the CTAs per SM constant here
    fly = [p.bytes_in_flight_per_sm for p in preds]
    assert fly == sorted(fly) and fly[0] < fly[-1]
    times = [p.predicted_s for p in preds]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(times, times[1:]))
    frac = [p.memory_fraction for p in preds]
    assert frac == sorted(frac) and frac[-1] <= 0.9


def test_few_busy_sms_cannot_stream_hbm():
    # 16 row blocks of w2 (2048 compressed rows) x 1 tile x split 1 = 16 CTAs: 16 SMs at the assumed per-SM rate
    cfg = M.SsmmConfig(block_n=8, stages=8, k_per_stage=128, split_k=1, flush_tile=False, finalize_launch=False)
    d = M.device_limits("h100_sxm")
    p = M.predict(cfg, *W2, 1, d)
    assert p.grid == 16
    from samoyeds_lab.bench.roofline import op_bytes

    b = op_bytes("ssmm", *W2, 1, "bfloat16")
    sm = b["weight"] + (b["activation"] + b["index"]) * 16 + b["output"]
    hbm_term = b["total"] / (d.hbm_bytes_per_s * p.memory_fraction)
    assert p.t_memory_s == pytest.approx(sm / (16 * d.sm_bytes_per_s_assumed)) and p.t_memory_s > hbm_term
    more = M.predict(cfg, *W2, 1, M.device_limits("h100_sxm", sm_bytes_per_s_assumed=2 * d.sm_bytes_per_s_assumed))
    assert more.t_memory_s == pytest.approx(max(hbm_term, sm / (32 * d.sm_bytes_per_s_assumed)))


def test_token_tiles_reread_a_weight_larger_than_l2():
    # w1's Samoyeds weight (~33 MB) exceeds half of the 50 MB L2. Today's kernel at 4096 tokens: 64 token tiles,
    # 56 row blocks, 264 slots -> 264 // 56 = 4 tiles of a row block resident together -> 64 / 4 = 16 HBM reads
    from samoyeds_lab.bench.roofline import op_bytes

    b = op_bytes("ssmm", *W1, 4096, "bfloat16")
    p = M.predict(M.TODAY, *W1, 4096)
    assert p.hbm_bytes == 16 * b["weight"] + b["activation"] + b["index"] + b["output"]
    assert p.sm_bytes == 64 * b["weight"] + (b["activation"] + b["index"]) * 56 + b["output"]
    # a big enough L2 serves the re-reads: HBM sees the weight once, the SMs still load it per tile
    big = M.device_limits("h100_sxm", l2_bytes=4 * b["weight"])
    q = M.predict(M.TODAY, *W1, 4096, big)
    assert q.hbm_bytes == b["total"] and q.sm_bytes == p.sm_bytes
    # at decode every tile of a row block is resident together: one read
    assert M.predict(M.TODAY, *W1, 8).hbm_bytes < b["weight"] * 1.1 + 5 * 8 * W1[0] * 4 * 2


def test_compute_bound_at_prefill_when_feeding_is_cheap_and_padding_counted():
    fast = M.device_limits("h100_sxm", sm_bytes_per_s_assumed=1e13, l2_bytes=1 << 30)
    p = M.predict(M.TODAY, *W1, 4096, fast)
    assert p.bound == "compute"
    assert M.predict(M.TODAY, *W1, 4096, "h100_sxm").bound == "memory"  # the SMs' feed, not HBM, at 64-token tiles
    # 65 tokens compute two whole 64-token tiles
    a, b = M.predict(M.TODAY, *W1, 64, "h100_sxm"), M.predict(M.TODAY, *W1, 65, "h100_sxm")
    assert b.t_compute_s > 1.9 * a.t_compute_s * min(1, a.grid / 132) / min(1, b.grid / 132) * 0.99


def test_candidates_and_defaults():
    cands = M.decode_candidates()
    assert len(cands) == 3 * 3 * 8 * 3
    assert all(not c.flush_tile and not c.finalize_launch for c in cands)
    picked = M.choose_defaults(cands, dev="h100_sxm")
    assert set(picked) == set(M.TOKEN_RANGES)
    for rng, v in picked.items():
        assert v["score"] >= 1.0
        for p in v["predictions"]:
            today = M.predict(M.TODAY, p.m, p.k, p.tokens, "h100_sxm")
            assert p.predicted_s <= today.predicted_s  # a candidate with its choice of stages beats today's
            assert p.tokens in M.TOKEN_RANGES[rng]


def test_prediction_is_labelled_predicted_and_table():
    p = M.predict(M.TODAY, *W1, 8)
    d = p.as_dict()
    assert d["label"].startswith("predicted") and d["config"]["stages"] == 2
    t = M.table([p])
    assert "predicted" in t and "14336x4096" in t


def test_report_names_every_device_and_range():
    text = M.report(("h100_sxm", "h200"), tokens=(8,))
    assert text.count("today's ssmm.cu config (predicted)") == 2
    for rng in M.TOKEN_RANGES:
        assert f"tokens {rng}: default decode" in text
    assert "no GPU measurement" in text


def test_config_that_fits_nowhere_is_named():
    big = M.SsmmConfig(block_n=256, k_per_stage=128, stages=6)
    with pytest.raises(ValueError, match="cfg: expected a config that fits one CTA per SM"):
        M.predict(big, *W1, 8)
    kept = M.sweep([big, M.TODAY], {"w1": W1}, (8,))
    assert kept and all(p.config is M.TODAY for p in kept)


@pytest.mark.parametrize("kw,err,what", [
    (dict(block_m=20), ValueError, "block_m: expected a multiple of 16"),
    (dict(block_n=12), ValueError, "block_n: expected a multiple of 8"),
    (dict(k_per_stage=48), ValueError, "k_per_stage: expected a multiple of 32"),
    (dict(stages=1), ValueError, "stages"),
    (dict(split_k=0), ValueError, "split_k"),
    (dict(threads=100), ValueError, "threads: expected a multiple of 32"),
    (dict(regs_per_thread=300), ValueError, "regs_per_thread"),
    (dict(path="tma"), ValueError, "path: expected 'mma_sp' or 'wgmma_sp'"),
    (dict(stages=2.0), TypeError, "stages"),
])
def test_bad_configs_are_named(kw, err, what):
    with pytest.raises(err, match=what):
        M.SsmmConfig(**kw)


@pytest.mark.parametrize("args,err,what", [
    (("cfg", *W1, 8), TypeError, "cfg: expected an SsmmConfig"),
    ((M.TODAY, *W1, 0), ValueError, "tokens"),
    ((M.TODAY, 0, 4096, 8), ValueError, "m"),
    ((M.TODAY, 14336, 16, 8), ValueError, "k"),
    ((M.TODAY, *W1, 8, 3), TypeError, "dev: expected a DeviceLimits"),
])
def test_bad_predict_arguments_are_named(args, err, what):
    with pytest.raises(err, match=what):
        M.predict(*args)


def test_bad_devices_are_named():
    with pytest.raises(ValueError, match="name: expected one of"):
        M.device_limits("a100_sxm")
    with pytest.raises(ValueError, match="dram_latency_s_assumed"):
        M.device_limits("h200", dram_latency_s_assumed=0.0)
    with pytest.raises(ValueError, match="mma_sp_fraction_assumed"):
        M.device_limits("h200", mma_sp_fraction_assumed=1.5)
    with pytest.raises(ValueError, match="configs: expected at least one"):
        M.choose_defaults([])


def test_h200_needs_more_in_flight_than_h100():
    a, b = (M.predict(M.TODAY, *W1, 8, d) for d in ("h100_sxm", "h200"))
    assert b.littles_law_bytes_per_sm > a.littles_law_bytes_per_sm
    assert b.predicted_ratio_vs_dense < a.predicted_ratio_vs_dense  # latency-bound: faster HBM helps dense more
    assert math.isclose(a.bytes_in_flight_per_sm, b.bytes_in_flight_per_sm)
