"""The decode SSMM variant (kernels/ssmm_decode.cu, samoyeds_lab.kernels.decode), checked without a GPU.

* NVRTC compiles it for sm_80 and sm_90a at the model's default config and two others; each config's
  ``-D`` defines are part of the compile options (so of the cache key);
* ptxas: no spills, no stack, no static shared memory, registers within the ceiling and never above the
  analytic model's estimate; dynamic shared memory within 227 KB and within 3 % of the model's
  ``smem_per_cta`` (the difference is the row_index chunk per k-step the model does not count); the CTAs per
  SM the real numbers allow are at least what the model assumed; ≥ 24 KB of weight in flight per SM;
* the pre-tiled operand is the shared-memory image the kernel reads (swizzle, metadata, row_index, padding);
* the block-by-block replay (samoyeds_lab.reference.decode_replay) equals the reference bit for bit on
  integer data for awkward shapes, on the launcher's own arguments;
* split-K fills whole waves; the plan of kernel="decode" is one launch and no host work (the counting fake
  CuPy of test_plan.py); kernel="auto" takes the decode kernel only where records say it is faster.
GPU-marked: the kernel equals the reference on the same cases, its plan equals the op, a re-run without a
memset gives the same answer (the last CTA resets its counters).
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from samoyeds_lab import reference
from samoyeds_lab.bench import ssmm_model
from samoyeds_lab.formats import SENTINEL, compress_nm, compress_samoyeds
from samoyeds_lab.kernels import decode, ops
from samoyeds_lab.kernels.plan import KernelPlan, ssmm_plan
from samoyeds_lab.prune import samoyeds_mask
from samoyeds_lab.reference.decode_replay import DecodeConfig, decode_replay, pretile, smem_bytes, tile_bytes


# ------------------------------------------------------------------ data
def _int_values(shape, g):
    return torch.randint(1, 4, shape, generator=g) * (torch.randint(0, 2, shape, generator=g) * 2 - 1)


def samoyeds(rows, cols, n=1, m=2, vector=64, dtype=torch.float16, seed=0, integer=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mask = samoyeds_mask(w.abs(), n, m, vector)
    vals = _int_values(w.shape, g).float() if integer else w
    return compress_samoyeds((vals * mask).to(dtype), n=n, m=m, vector=vector)


def nm24(rows, cols, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    vals = _int_values((rows, cols), g).float()
    keep = torch.rand(rows, cols // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(rows, cols // 4, 4).scatter_(-1, keep, 1.0).view(rows, cols)
    return compress_nm((vals * mask).to(dtype), n=2, m=4)


def ints(rows, cols, dtype=torch.float16, seed=1):
    return torch.randint(-3, 4, (rows, cols), generator=torch.Generator().manual_seed(seed)).to(dtype)


IDX19 = torch.tensor([3, SENTINEL, 0, 8, 8, 1, 22, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 2], dtype=torch.int32)

#: (id, weight builder, x rows, token ids, config, steps per split)
REPLAY_CASES = [
    ("1:2-v64-19tok-2splits", lambda: samoyeds(200, 256), 23, IDX19, DecodeConfig(), 4),
    ("1:2-v64-split-in-window", lambda: samoyeds(200, 256), 23, IDX19, DecodeConfig(ksteps=1, stages=4), 3),
    ("1:2-2rowblocks-bn16", lambda: samoyeds(300, 128, vector=32), 19, None, DecodeConfig(block_n=16, ksteps=2), 2),
    ("2:4-sel-v128-bf16", lambda: samoyeds(136, 384, n=2, m=4, vector=128, dtype=torch.bfloat16), 23, IDX19,
     DecodeConfig(ksteps=2, stages=4, sel_n=2, sel_m=4), 4),
    ("1:4-v32-1split", lambda: samoyeds(72, 96, n=1, m=4, vector=32), 5, torch.tensor([4, 0, SENTINEL]),
     DecodeConfig(sel_n=1, sel_m=4), 4),
    ("plain-24-ragged-19x100", lambda: nm24(19, 100), 19, None, DecodeConfig(sel_n=1, sel_m=1, ksteps=2), 2),
    ("plain-24-bm64-3splits", lambda: nm24(130, 192), 9, IDX19[:9] % 9, DecodeConfig(block_m=64, ksteps=2,
                                                                                    sel_n=1, sel_m=1), 2),
]


def _case_params():
    return [pytest.param(*c[1:], id=c[0]) for c in REPLAY_CASES]


# ------------------------------------------------------------------ the replay against the reference
@pytest.mark.parametrize("build,xrows,idx,cfg,sps", _case_params())
def test_replay_is_bit_exact_against_the_reference(build, xrows, idx, cfg, sps):
    w = build()
    x = ints(xrows, w.shape[1], w.dtype)
    y, trace = decode_replay(w, x, idx, cfg, sps)
    want = reference.ssmm(w, x, idx if idx is not None else torch.arange(xrows), out_dtype=torch.float32)
    assert torch.equal(y, want)
    assert (trace.writes == 1).all(), "every output written exactly once"
    ksteps = -(-w.shape[1] // 32)
    splits = -(-ksteps // sps)
    for rec in trace.ctas:  # each CTA covers its split's K range in whole stages; splits partition K
        assert rec["k_begin"] == rec["split"] * sps and rec["k_end"] == min(ksteps, rec["k_begin"] + sps)
        assert all(b - a <= cfg.ksteps for a, b in rec["stages"])
        assert rec["swaps"][-1] == rec["k_end"] - 1
    if splits > 1:
        assert set(trace.finalizers.values()) == {splits - 1}
    if hasattr(w, "row_index"):  # every swap fed the dense row the format says
        dense = w.dense_rows()
        win = w.vector // 32
        for (z, rb, ks, c), r in trace.swap_rows.items():
            assert r == int(dense[ks // win, c])


def test_replay_with_real_values_within_fp32_tolerance():
    w = samoyeds(200, 512, vector=128, integer=False)
    x = torch.randn(11, 512, generator=torch.Generator().manual_seed(3)).half()
    y, _ = decode_replay(w, x, None, DecodeConfig(), 8)
    torch.testing.assert_close(y, reference.ssmm(w, x, torch.arange(11), out_dtype=torch.float32), rtol=1e-5, atol=1e-4)


def test_replay_refuses_a_config_of_another_pattern():
    with pytest.raises(ValueError, match="sel_n:sel_m = 1:2"):
        decode_replay(samoyeds(64, 64), ints(3, 64), None, DecodeConfig(sel_n=2, sel_m=4), 4)
    with pytest.raises(ValueError, match="steps_per_split: expected a multiple of cfg.ksteps=4, got 6"):
        decode_replay(samoyeds(64, 64), ints(3, 64), None, DecodeConfig(), 6)


# ------------------------------------------------------------------ the pre-tiled operand
def test_pretile_is_the_shared_memory_image():
    w = samoyeds(300, 256, vector=64)
    t = pretile(w, 128)
    crows, kc = w.values.shape  # 150 compressed rows: row block 1 holds 22 of them
    assert t.shape == (2, 8, tile_bytes(128)) and t.dtype == torch.uint8
    vals = w.values.view(torch.int16)
    from samoyeds_lab.formats.sptc import mma_metadata
    words = mma_metadata(w.sptc_metadata()).to(torch.int64)
    for rb, ks, r, c in [(0, 0, 0, 0), (0, 3, 5, 1), (1, 7, 71, 0), (1, 2, 66, 1), (0, 5, 127, 1)]:
        row = rb * 128 + r
        off = r * 32 + ((c ^ ((r >> 2) & 1)) << 4)
        got = t[rb, ks, off: off + 16].clone().view(torch.int16)
        want = vals[row, ks * 16 + 8 * c: ks * 16 + 8 * c + 8] if row < crows else torch.zeros(8, dtype=torch.int16)
        assert torch.equal(got, want), (rb, ks, r, c)
    meta = t[:, :, 128 * 32: 128 * 32 + 512].clone().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    assert torch.equal(meta[0, 4].view(8, 16)[3], words[3, 4])
    assert torch.equal(meta[1, 6].view(8, 16)[:2], words[8:10, 6])
    assert (meta[1, :].view(8, 8, 16)[:, 2:] == 0x44444444).all()  # m-tiles past the compressed rows: padding
    ri = t[:, :, 128 * 32 + 512:]
    assert torch.equal(ri[0, 5], w.row_index[5 // 2, :128])
    assert torch.equal(ri[1, 6, : crows - 128], w.row_index[3, 128:]) and (ri[1, 6, crows - 128:] == 0).all()


def test_tiled_operand_is_made_once_per_weight():
    w = samoyeds(64, 128)
    a = decode.tiled_operand(w)
    assert decode.tiled_operand(w) is a
    assert decode.tiled_operand(w, 64) is not a


# ------------------------------------------------------------------ compiles and ptxas
CONFIGS = [
    pytest.param(decode.default_config(8, samoyeds(64, 64)), id="default-h100-1to8"),
    pytest.param(DecodeConfig(block_n=16, ksteps=4, stages=4), id="n16-s4-k128"),
    pytest.param(DecodeConfig(block_n=8, ksteps=2, stages=6, sel_n=2, sel_m=4), id="n8-s6-k64-2of4"),
    pytest.param(DecodeConfig(bulk=True), id="default-bulk"),
]
ARCHS = ("80", "90a")
#: Register ceiling of the decode entry points (NVRTC 13.5 measured 56-96 over CONFIGS).
REGISTER_CEILING = 128
#: ptxas uses at most the model's estimate_registers and at most this many fewer (measured: 17-32 fewer; the
#: model's 64 registers of addresses and fragments are generous for a 4-warp, all-along-M tile).
REGISTER_MARGIN = 40


def _needs_nvrtc():
    pytest.importorskip("cuda.bindings.nvrtc", reason="NVRTC from PyPI (cuda-bindings, nvidia-cuda-nvrtc) not installed")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_nvrtc_compiles_every_config(cfg, arch):
    _needs_nvrtc()
    res = decode.compile_config(cfg, arch)
    for k, v in cfg.defines().items():
        assert f"-D{k}={v}" in res.options
    assert res.cubin[:4] == b"\x7fELF" and f".target sm_{arch}" in res.ptx
    for instr in ("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32",
                  "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32",
                  "cp.async.cg.shared.global", "ldmatrix.sync.aligned.m8n8.x4.shared.b16", "ld.global.cg.f32",
                  "atom.global.add.u32", "atom.global.exch.b32", "membar.gl", "red.global.add.noftz.f16x2"):
        assert instr in res.ptx, f"{instr} missing ({cfg}, sm_{arch})"
    assert ("red.global.add.noftz.bf16x2" in res.ptx) == (arch == "90a")
    bulk = cfg.bulk and arch == "90a"  # DEC_BULK: one cp.async.bulk per stage on an mbarrier, sm_90+ only
    for instr in ("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes",
                  "mbarrier.try_wait.parity.shared::cta.b64", "mbarrier.arrive.expect_tx", "fence.proxy.async"):
        assert (instr in res.ptx) == bulk, (instr, cfg, arch)
    assert "finalize" not in res.ptx  # no separate finalize entry: the last CTA reduces
    # the register window accumulators: no shared fp32 flush (no st.shared.f32 / ld.shared.f32 at all)
    assert "st.shared.f32" not in res.ptx and "ld.shared.f32" not in res.ptx
    if cfg.sel_n > 1:
        assert "shfl.sync.bfly.b32" in res.ptx


def test_configs_have_their_own_cache_keys():
    from samoyeds_lab.kernels.build import cache_key

    keys = {cache_key(decode.SOURCE, decode.options(c.values[0]), "80", "x") for c in CONFIGS}
    assert len(keys) == len(CONFIGS)
    for c in CONFIGS:
        assert decode.config_of_module(decode.module_name(c.values[0])) == c.values[0]


def _ptxas(cfg, arch):
    from .test_compile import ptxas_usage

    return ptxas_usage(decode.compile_config(cfg, arch, extra_options=("--ptxas-options=-v",)).log)


def _model_cfg(cfg: DecodeConfig) -> ssmm_model.SsmmConfig:
    return ssmm_model.SsmmConfig(block_m=cfg.block_m, block_n=cfg.block_n, k_per_stage=cfg.k_per_stage,
                                 stages=cfg.stages, threads=cfg.threads, flush_tile=False, finalize_launch=False)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_ptxas_resources_and_the_model(cfg, arch):
    _needs_nvrtc()
    usage = _ptxas(cfg, arch)
    assert set(usage) == {"ssmm_decode_f16", "ssmm_decode_bf16"}
    dev = ssmm_model.device_limits("h100_sxm")
    mcfg = _model_cfg(cfg)
    for entry, u in usage.items():
        assert u["spill_stores"] == 0 and u["spill_loads"] == 0 and u["stack"] == 0 and u["smem"] == 0, (entry, u)
        assert u["registers"] <= REGISTER_CEILING, (entry, u)
        # the model's register estimate is an upper bound (it counts 64 + accumulators · (1 + m/n))
        est = ssmm_model.estimate_registers(mcfg, cfg.sel_n, cfg.sel_m)
        assert est - REGISTER_MARGIN <= u["registers"] <= est, (entry, u, est)
        real = ssmm_model.ctas_per_sm(ssmm_model.SsmmConfig(**{**mcfg.__dict__, "regs_per_thread": u["registers"]}),
                                      dev, cfg.sel_n, cfg.sel_m)
        assumed = ssmm_model.ctas_per_sm(mcfg, dev, cfg.sel_n, cfg.sel_m)
        # the kernel's real shared memory (row_index chunks included) gives at least the model's CTAs per SM
        by_smem = dev.smem_per_sm // (smem_bytes(cfg) + ssmm_model.CTA_RESERVED_SMEM)
        assert min(by_smem, real["regs"], real["threads"], real["hw"]) >= assumed["ctas"], (real, assumed, by_smem)
    smem = smem_bytes(cfg)
    assert smem <= 227 * 1024
    model = ssmm_model.smem_per_cta(mcfg, cfg.sel_n, cfg.sel_m)
    assert abs(smem - model) <= 0.03 * model, (smem, model)  # the model leaves out the row_index chunks
    # >= 24 KB of weight in flight per SM (stages - 1 outstanding per resident CTA)
    per_sm = decode.ctas_per_sm(cfg, dev.smem_per_sm)
    assert per_sm >= 1 and per_sm * (cfg.stages - 1) * cfg.ksteps * tile_bytes(cfg.block_m) >= 24 * 1024


def test_the_defaults_are_the_models():
    for dev, table in decode.MODEL_DEFAULTS.items():
        got = ssmm_model.choose_defaults(dev=dev)
        for rng, (bn, st, kps, split) in table.items():
            c = got[rng]["config"]
            assert (c.block_n, c.stages, c.k_per_stage, c.split_k) == (bn, st, kps, split), (dev, rng, c)
    w = samoyeds(64, 64)
    assert decode.default_config(8, w, "NVIDIA H100 80GB HBM3") == DecodeConfig(block_n=8, ksteps=4, stages=6)
    assert decode.default_config(16, w, "NVIDIA H100 80GB HBM3") == DecodeConfig(block_n=8, ksteps=4, stages=4)
    assert decode.default_config(1, w, "NVIDIA H200") == DecodeConfig(block_n=8, ksteps=2, stages=6)
    assert decode.default_config(3, nm24(8, 32)).sel_m == 1


# ------------------------------------------------------------------ split-K and waves
@pytest.mark.parametrize("ksteps,blocks,cfg,sms,per_sm,want", [
    (128, 56, DecodeConfig(), 132, 1, 2),          # Mixtral w1 (7168 compressed rows), 1-8 tokens, H100: the model's 2
    (448, 16, DecodeConfig(), 132, 1, 8),          # w2 (2048 compressed rows): 16 blocks x 8 = 128 CTAs, one wave
    (4, 10, DecodeConfig(), 132, 1, 1),            # one stage: nothing to split
    (19, 3, DecodeConfig(ksteps=2), 4, 2, 2),      # 10 stages, 8 slots: 6 CTAs in one wave
])
def test_split_fills_whole_waves(ksteps, blocks, cfg, sms, per_sm, want):
    splits, per = decode.split_for(ksteps, blocks, cfg, sms, per_sm)
    assert splits == want and per % cfg.ksteps == 0
    assert (splits - 1) * per < ksteps <= splits * per  # splits partition K
    slots = sms * per_sm
    cost = decode.split_cost(ksteps, blocks, cfg, slots, splits)[0]
    for s in range(1, 17):  # no other split count is cheaper
        assert decode.split_cost(ksteps, blocks, cfg, slots, s)[0] >= cost
    if splits > 1:  # a split grid fills its waves: the last wave is more than half full
        ctas = blocks * splits
        assert ctas % slots == 0 or ctas % slots > slots // 2 or ctas < slots, (ctas, slots)


def test_explicit_split_is_clamped_to_the_stages():
    assert decode.split_for(8, 1, DecodeConfig(), 132, 1, split_k=5) == (2, 4)
    with pytest.raises(ValueError, match="split_k"):
        decode.split_for(8, 1, DecodeConfig(), 132, 1, split_k=0)


# ------------------------------------------------------------------ the launcher, the replay on its arguments, the plan
@pytest.fixture
def fake_cupy(monkeypatch):
    from .test_launch import install_recorder
    from .test_plan import FakeCupy

    rec = install_recorder(monkeypatch)
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(ops, "load_module", lambda module, arch: fake.RawModule())
    monkeypatch.setattr(decode, "load_module", lambda module, arch: fake.RawModule())
    monkeypatch.setattr(ops, "device_arch", lambda: "90a")
    monkeypatch.setattr("samoyeds_lab.kernels.plan._stream_handle", lambda device: 0)
    ops._decode_auto.cache_clear()
    fake.recorder = rec
    return fake


@pytest.mark.parametrize("build,xrows,idx,cfg,sps", _case_params()[:4])
def test_replay_of_the_launchers_arguments(fake_cupy, build, xrows, idx, cfg, sps):
    """ops.ssmm(kernel="decode") → its recorded launch → the replay with exactly those arguments."""
    w = build()
    x = ints(xrows, w.shape[1], w.dtype)
    ops.ssmm(w, x, idx, split_k=3, backend="cupy", kernel="decode")
    (launch,) = fake_cupy.recorder.launches
    tiled, has_ri = launch.args[0], int(launch.args[1])
    per = int(launch.args[13])
    dcfg = decode.config_of_module(launch.module)
    assert launch.fn == ("ssmm_decode_bf16" if w.dtype == torch.bfloat16 else "ssmm_decode_f16")
    assert launch.smem == smem_bytes(dcfg) and has_ri == 1
    ksteps = -(-w.shape[1] // 32)
    assert launch.grid[2] == -(-ksteps // per)
    y, _ = decode_replay(w, x, idx, dcfg, per, tiled=tiled)
    want = reference.ssmm(w, x, idx if idx is not None else torch.arange(xrows), out_dtype=torch.float32)
    assert torch.equal(y, want)
    if launch.grid[2] > 1:  # counters: one per (token tile, row block), zero; the workspace holds every split
        counters, ws = launch.args[15], launch.args[14]
        assert counters.dtype == torch.int32 and counters.numel() == launch.grid[0] * launch.grid[1]
        assert (counters == 0).all() and tuple(ws.shape) == (launch.grid[2], y.shape[0], w.shape[0])


@pytest.mark.parametrize("split_k", [1, 2, 4])
@pytest.mark.parametrize("epilogue", ["plain", "silu_mul", "scatter_add"])
def test_decode_plan_is_one_launch_and_no_host_work(fake_cupy, split_k, epilogue):
    from .test_plan import TorchCalls, TorchOps

    w, x = samoyeds(64, 512, vector=128), ints(9, 512)
    idx = torch.tensor([3, SENTINEL, 0, 8, 8, 1], dtype=torch.int32)
    kw = {}
    if epilogue == "silu_mul":
        kw["up"] = ints(6, 64)
    if epilogue == "scatter_add":
        kw.update(out=torch.zeros(9, 64), scale=torch.rand(6))
    plan = ssmm_plan(w, x, idx, epilogue=epilogue, split_k=split_k, kernel="decode", **kw)
    assert isinstance(plan, KernelPlan) and plan.launches_per_run == 1  # split-K included: no finalize launch
    assert plan.specs[0].grid[2] == split_k and plan.specs[0].fn == "ssmm_decode_f16"
    assert fake_cupy.calls["get_function"] == 1
    fake_cupy.calls.clear()
    dispatch, functions = TorchOps(), TorchCalls()
    with dispatch, functions:
        for _ in range(3):
            plan.run()
    assert fake_cupy.calls["launch"] == 3
    assert fake_cupy.host_work() == Counter() and dispatch.ops == [] and functions.calls == []


def test_decode_plan_launches_what_the_op_launches(fake_cupy):
    w, x = samoyeds(96, 320, vector=64), ints(11, 320)
    idx = torch.tensor([10, 0, SENTINEL, 4, 4, 7, 2], dtype=torch.int32)
    ops.ssmm(w, x, idx, split_k=2, backend="cupy", kernel="decode")
    (r,) = fake_cupy.recorder.launches
    plan = ssmm_plan(w, x, idx, split_k=2, kernel="decode")
    plan.run()
    name, grid, block, args, smem, _ = fake_cupy.launched[0]
    assert (r.fn, r.grid, r.smem, block) == (name, grid, smem, (128,))
    assert len(args) == len(r.args) == 24
    assert int(args[2]) == x.data_ptr() and int(args[0]) == decode.tiled_operand(w).data_ptr()


# ------------------------------------------------------------------ kernel="auto"
def _rec(op, tokens, ms, base=1.0, device="NVIDIA H100 80GB HBM3", dtype="float16", status="ok"):
    return {"op": op, "baseline": "ssmm", "tokens": tokens, "ms": ms, "baseline_ms": base, "device": device,
            "dtype": dtype, "status": status}


@pytest.mark.parametrize("records,tokens,want", [
    ([], 8, False),
    ([_rec("ssmm_decode", 8, 0.5)], 8, True),
    ([_rec("ssmm_decode", 8, 1.5)], 8, False),
    ([_rec("ssmm_decode", 8, 0.5)], 64, False),                               # above MAX_TOKENS
    ([_rec("ssmm_decode", 8, 0.5, status="failed")], 8, False),
    ([_rec("ssmm_decode", 8, 0.5, device="NVIDIA A100")], 8, False),
    ([_rec("ssmm_decode", 8, 0.5, dtype="bfloat16")], 8, False),
    ([_rec("ssmm_decode", 1, 1.2), _rec("ssmm_decode", 16, 0.7)], 12, True),  # nearest recorded count (log scale)
    ([_rec("ssmm_wg", 8, 0.5)], 8, False),
])
def test_choose_decode_from_records(records, tokens, want):
    assert decode.choose_decode(tokens, torch.float16, "NVIDIA H100 80GB HBM3", records) is want


def test_auto_keeps_todays_path_without_records_and_takes_decode_with_them(fake_cupy, monkeypatch):
    w, x = samoyeds(64, 256), ints(9, 256)
    monkeypatch.setattr(ops, "_recorded_kernel_records", lambda: ())
    ops._decode_auto.cache_clear()
    ops.ssmm(w, x, None, backend="cupy")
    assert not fake_cupy.recorder.launches[-1].fn.startswith("ssmm_decode")
    monkeypatch.setattr(ops, "_recorded_kernel_records", lambda: (_rec("ssmm_decode", 8, 0.5),))
    ops._decode_auto.cache_clear()
    ops.ssmm(w, x, None, backend="cupy")
    assert fake_cupy.recorder.launches[-1].fn == "ssmm_decode_f16"
    ops.ssmm(w, ints(40, 256), None, backend="cupy")  # 40 tokens: never the decode kernel
    assert not fake_cupy.recorder.launches[-1].fn.startswith("ssmm_decode")
    ops._decode_auto.cache_clear()


def test_decode_refuses_what_it_cannot_take(fake_cupy):
    w = samoyeds(64, 64, n=16, m=32, vector=32)  # the mma_sp path takes it (16 divides 128), decode does not
    with pytest.raises(ValueError, match="kernel: 'decode' does not take this call: row selection 16:32"):
        ops.ssmm(w, ints(3, 64), None, backend="cupy", kernel="decode")


# ------------------------------------------------------------------ on a GPU
#: The replay cases the GPU runs: three decode builds in all (1:2 at 9-16 tokens, 1:4 at 1-8, plain 2:4), so the
#: compiles fit the ssmm step of scripts/gpu_validate.sh.
GPU_CASES = [pytest.param(*c[1:], id=c[0]) for c in REPLAY_CASES
             if c[0] in ("1:2-v64-19tok-2splits", "1:2-2rowblocks-bn16", "1:4-v32-1split", "plain-24-ragged-19x100")]


def _gpu_or_skip():
    if not ops.available():
        pytest.skip("needs an SM80+ GPU with CuPy")


def _to(w, device):
    import dataclasses

    fields = {f.name: getattr(w, f.name) for f in dataclasses.fields(w)}
    return type(w)(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in fields.items()})


@pytest.mark.gpu
@pytest.mark.parametrize("build,xrows,idx,cfg,sps", GPU_CASES)
@pytest.mark.parametrize("split_k", [1, 3])
def test_gpu_ssmm_decode_equals_the_reference(build, xrows, idx, cfg, sps, split_k):
    _gpu_or_skip()
    w = _to(build(), "cuda")
    x = ints(xrows, w.shape[1], w.dtype).cuda()
    i = idx.cuda() if idx is not None else None
    want = reference.ssmm(w, x, i if i is not None else torch.arange(xrows, device="cuda"), out_dtype=torch.float32)
    got = ops.ssmm(w, x, i, split_k=split_k, backend="cupy", kernel="decode")
    torch.testing.assert_close(got.float(), want.to(w.dtype).float(), rtol=0, atol=0)  # integer data: exact


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("epilogue", ["plain", "silu_mul", "scatter_add"])
def test_gpu_ssmm_decode_plan_equals_the_op_and_reruns(dtype, epilogue):
    _gpu_or_skip()
    w = _to(samoyeds(192, 512, vector=128, dtype=dtype, integer=False), "cuda")
    x = torch.randn(19, 512, generator=torch.Generator().manual_seed(2)).to(dtype).cuda()
    idx = torch.tensor([18, 0, SENTINEL, 4, 4, 7, 2, 11, 5], dtype=torch.int32, device="cuda")
    kw = {}
    if epilogue == "silu_mul":
        kw["up"] = torch.randn(9, 192, generator=torch.Generator().manual_seed(3)).to(dtype).cuda()
    if epilogue == "scatter_add":
        kw.update(out=torch.zeros(19, 192, dtype=torch.float32, device="cuda"), scale=torch.rand(9, device="cuda"))
    ref = ops.ssmm(w, x, idx, epilogue=epilogue, backend="reference",
                   **{k: (v.clone() if k == "out" else v) for k, v in kw.items()})
    want = ops.ssmm(w, x, idx, epilogue=epilogue, split_k=3, backend="cupy", kernel="decode",
                    **{k: (v.clone() if k == "out" else v) for k, v in kw.items()})
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(want.float(), ref.float(), **tol)
    plan = ssmm_plan(w, x, idx, epilogue=epilogue, split_k=3, kernel="decode", **kw)
    first = plan.run().clone()
    second = plan.run().clone()  # counters were reset by the last CTAs: no memset between runs
    torch.cuda.synchronize()
    if epilogue == "scatter_add":
        torch.testing.assert_close(second, 2 * first, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(first, want) and torch.equal(second, want)


@pytest.mark.gpu
def test_gpu_ssmm_decode_bulk_equals_the_reference():
    """The sm_90 build whose stage bursts are one cp.async.bulk each (DEC_BULK=1), split 3, 19 positions."""
    _gpu_or_skip()
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("cp.async.bulk needs sm_90+")
    w = _to(samoyeds(200, 512, vector=128), "cuda")
    x = ints(23, 512).cuda()
    idx = IDX19.cuda()
    out = torch.empty(idx.numel(), 200, dtype=torch.float16, device="cuda")
    _, specs = decode.decode_specs([w], x, idx, [0, idx.numel()], "plain", None, out, None, None, 3, gather=True,
                                   epilogues=ops.EPILOGUES, sms=ops._device_props()[1], smem_per_sm=ops._smem_per_sm(),
                                   cfg=DecodeConfig(bulk=True))
    assert specs[0].grid[2] == 3 and "DEC_BULK=1" in specs[0].module
    for _ in range(2):  # twice: the counters reset themselves
        ops._run_specs(specs)
        torch.cuda.synchronize()
        want = reference.ssmm(w, x, idx, out_dtype=torch.float32).to(torch.float16)
        assert torch.equal(out, want)
