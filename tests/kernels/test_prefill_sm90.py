"""The Hopper prefill SSMM (kernels/ssmm_prefill_sm90.cu, samoyeds_lab.kernels.prefill) without a GPU:

- NVRTC builds for sm_90a of the default config and the wide one (256 tokens per tile), with the
  instructions the design is about in the PTX (wgmma.mma_async.sp m64n{128,256}k32, wait_group 1,
  mbarrier expect_tx / try_wait, cp.async.bulk, cp.async.mbarrier.arrive.noinc, setmaxnreg);
- ptxas resources of those builds: no spills, no stack, no static shared memory; the host's shared memory
  and burst sizes equal the kernel's (static_asserts fed by -D), within the 227 KB of sm_90;
- the CPU replay (reference/prefill_replay.py) of the kernel's grid, stages, consumers and register window
  flush is bit-exact against the dense fp32 reference on integer-valued operands, awkward shapes;
- ``ssmm_plan(..., kernel="wgmma_prefill")`` runs kernel launches only (the counting fake CuPy of
  test_plan.py), and off Hopper the kernel is a named KernelUnavailableError;
- on a Hopper GPU (gpu marker): the kernel equals the reference.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from samoyeds_lab import reference
from samoyeds_lab.formats import SENTINEL, compress_nm, compress_samoyeds
from samoyeds_lab.kernels import ops, prefill
from samoyeds_lab.kernels.build import KernelCompileError, KernelUnavailableError
from samoyeds_lab.kernels.plan import ssmm_plan
from samoyeds_lab.kernels.prefill import DEFAULT_CONFIG, WIDE_CONFIG, PrefillConfig, prefill_unsupported, pretile
from samoyeds_lab.reference.prefill_replay import emulate_consumer_kstep, replay_prefill

from ..formats.helpers import random_24_rows, random_samoyeds
from .test_compile import ptxas_usage
from .test_plan import FakeCupy, TorchCalls, TorchOps, install_recorder

CONFIGS = [pytest.param(DEFAULT_CONFIG, id="bn128-s6-k32-c2"), pytest.param(WIDE_CONFIG, id="bn256-s4-k32-c0")]
TOL = {torch.float16: 2e-2, torch.bfloat16: 6e-2}


def _int_valued(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Small integers on the nonzeros of ``t``: products and sums exact in fp32 (and in fp16/bf16 inputs)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(1, 4, t.shape, generator=g).float() * torch.where(torch.rand(t.shape, generator=g) < 0.5, -1.0, 1.0)
    return torch.where(t != 0, v, torch.zeros(()))


def _samoyeds(rows, cols, vector, dtype, seed=0, device="cpu"):
    dense = _int_valued(random_samoyeds(rows, cols, 1, 2, vector, torch.float32, seed), seed + 1)
    return compress_samoyeds(dense.to(dtype).to(device), n=1, m=2, vector=vector)


def _w24(rows, cols, dtype, seed=0, device="cpu"):
    dense = _int_valued(random_24_rows(rows, cols, torch.Generator().manual_seed(seed)), seed + 1)
    return compress_nm(dense.to(dtype).to(device))


def _x(tokens, cols, dtype, seed=5):
    return torch.randint(-3, 4, (tokens, cols), generator=torch.Generator().manual_seed(seed)).to(dtype)


def _ids(positions, tokens, seed=7):
    idx = torch.randint(0, tokens, (positions,), generator=torch.Generator().manual_seed(seed), dtype=torch.int32)
    idx[::5] = SENTINEL
    return idx


# ------------------------------------------------------------------ compile and resources (NVRTC, no GPU)
nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="NVRTC from PyPI (cuda-bindings, nvidia-cuda-nvrtc) not installed")


@pytest.mark.parametrize("config", CONFIGS)
def test_nvrtc_sm90a_build_has_the_pipeline_instructions(config):
    res = prefill.compile_prefill(config, "90a")
    assert res.cubin[:4] == b"\x7fELF"
    ptx = res.ptx
    for needle in (f"wgmma.mma_async.sp.sync.aligned.m64n{config.bn}k32.f32.f16.f16",
                   f"wgmma.mma_async.sp.sync.aligned.m64n{config.bn}k32.f32.bf16.bf16",
                   "wgmma.wait_group.sync.aligned 1", "wgmma.commit_group.sync.aligned",
                   "mbarrier.arrive.expect_tx.shared::cta.b64", "mbarrier.try_wait.parity.shared::cta.b64",
                   "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes",
                   "cp.async.mbarrier.arrive.noinc.shared::cta.b64", "setmaxnreg.dec.sync.aligned.u32",
                   "setmaxnreg.inc.sync.aligned.u32", "red.global.add.noftz.bf16 ", "fence.proxy.async.shared::cta"):
        assert needle in ptx, needle
    if config.cand >= 2:  # two candidate rows of one compressed row are adjacent dense rows: paired reductions
        assert "red.global.add.noftz.bf16x2" in ptx and "red.global.add.noftz.f16x2" in ptx
    # the window flush needs wait_group 0 only at window ends; the pipeline's steady state keeps one group
    assert ptx.count("wgmma.wait_group.sync.aligned 1") >= 2  # f16 and bf16 entries


@pytest.mark.parametrize("config", CONFIGS)
def test_ptxas_no_spills_no_stack_smem_within_sm90(config):
    res = prefill.compile_prefill(config, "90a", extra_options=(
        "--ptxas-options=-v", f"-DPF_EXPECT_SMEM={config.smem_bytes}", f"-DPF_EXPECT_TILE={config.tile_bytes}"))
    usage = ptxas_usage(res.log)
    assert set(usage) == {"ssmm_prefill_f16", "ssmm_prefill_bf16"}
    # ptxas names a wgmma pipeline it had to serialise (accumulators touched while in flight): none here
    assert "wgmma" not in res.log and "serializ" not in res.log.lower(), res.log
    for entry, u in usage.items():
        assert u["spill_stores"] == 0 and u["spill_loads"] == 0, (entry, u)
        assert u["stack"] == 0 and u["smem"] == 0, (entry, u)
        assert u["registers"] <= 65536 // prefill.THREADS, (entry, u)  # 384 threads, one CTA per SM
    assert config.smem_bytes <= 227 * 1024


def test_the_models_prefill_config_is_the_default_build():
    """bench.ssmm_model.PREFILL predicts the build that runs: same tile, stages, threads, ptxas registers."""
    from samoyeds_lab.bench import ssmm_model

    cfg = ssmm_model.PREFILL
    assert (cfg.block_m, cfg.block_n, cfg.k_per_stage, cfg.stages, cfg.threads) == (
        prefill.BLOCK_M, DEFAULT_CONFIG.bn, DEFAULT_CONFIG.k_stage, DEFAULT_CONFIG.stages, prefill.THREADS)
    res = prefill.compile_prefill(DEFAULT_CONFIG, "90a", extra_options=("--ptxas-options=-v",))
    assert {u["registers"] for u in ptxas_usage(res.log).values()} == {cfg.regs_per_thread}
    preds = ssmm_model.predict_prefill("h200", tokens=(1024, 4096))
    assert [(p.config.name, p.tokens) for p in preds[:4]] == [
        (cfg.name, 1024), (ssmm_model.TODAY.name, 1024), (cfg.name, 4096), (ssmm_model.TODAY.name, 4096)]
    assert all(p.ctas_per_sm == 1 and p.splits == 1 for p in preds[::2])
    assert all(p.as_dict()["label"].startswith("predicted") for p in preds)


def test_host_and_kernel_sizes_must_agree():
    with pytest.raises(KernelCompileError, match="disagree on the shared memory"):
        prefill.compile_prefill(DEFAULT_CONFIG, "90a", extra_options=(f"-DPF_EXPECT_SMEM={DEFAULT_CONFIG.smem_bytes + 16}",))


def test_off_hopper_the_entries_are_trap_stubs():
    res = prefill.compile_prefill(DEFAULT_CONFIG, "80", extra_options=("--ptxas-options=-v",))
    assert "wgmma" not in res.ptx and "trap" in res.ptx
    assert all(u["registers"] <= 16 for u in ptxas_usage(res.log).values())


@pytest.mark.parametrize("kwargs,match", [
    (dict(bn=64), "bn: expected 128 or 256"),
    (dict(k_stage=48), "k_stage: expected a multiple of 32"),
    (dict(stages=1), "stages"),
    (dict(cand=5), "cand"),
    (dict(bn=256, stages=12, k_stage=64), "shared memory per CTA"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrefillConfig(**kwargs)


def test_config_is_part_of_the_module_name_and_cache_key():
    assert prefill.config_from_module(DEFAULT_CONFIG.module) == DEFAULT_CONFIG
    assert prefill.config_from_module(WIDE_CONFIG.module) == WIDE_CONFIG
    assert DEFAULT_CONFIG.module != WIDE_CONFIG.module
    a = prefill.compile_prefill(DEFAULT_CONFIG, "90a")
    b = prefill.compile_prefill(WIDE_CONFIG, "90a")
    assert a.options != b.options and a.cubin != b.cubin
    with pytest.raises(ValueError, match="module: expected"):
        prefill.config_from_module("ssmm:-DPF_BN=128")


# ------------------------------------------------------------------ which weights the kernel takes
@pytest.mark.parametrize("make,config,why", [
    (lambda: _samoyeds(64, 256, 64, torch.float16), DEFAULT_CONFIG, None),
    (lambda: _w24(40, 100, torch.float16), WIDE_CONFIG, None),
    (lambda: _samoyeds(64, 256, 64, torch.float16), WIDE_CONFIG, "sel_m <= 0"),
    (lambda: compress_samoyeds(torch.zeros(64, 256, dtype=torch.float16), n=2, m=4, vector=64), DEFAULT_CONFIG,
     "SamoyedsWeight 2:4"),
    (lambda: _samoyeds(64, 256, 32, torch.float16), PrefillConfig(k_stage=64), "vector=32"),
    (lambda: compress_nm(torch.zeros(16, 64), n=1, m=4), DEFAULT_CONFIG, "NMWeight 1:4"),
])
def test_prefill_unsupported(make, config, why):
    got = prefill_unsupported(make(), config)
    assert got is None if why is None else (got is not None and why in got), got


def test_pretile_refuses_an_unsupported_weight_by_name():
    with pytest.raises(ValueError, match="weight: the prefill kernel does not take"):
        pretile(_samoyeds(64, 256, 64, torch.float16), WIDE_CONFIG)


def test_pretile_layout_of_one_burst():
    w = _w24(19, 100, torch.float16, seed=3)
    t = pretile(w, DEFAULT_CONFIG)
    assert t.dtype == torch.uint8 and tuple(t.shape) == (1, 4, DEFAULT_CONFIG.tile_bytes)
    burst = t[0, 1]  # K 32..63
    halves = burst[:4096].view(torch.int16).view(128, 2, 8)
    stored = w.values.view(torch.int16)
    for row in (0, 4, 7, 18):  # rows 4..7 have their two 8-half chunks swapped (ldmatrix swizzle)
        s = (row >> 2) & 1
        assert torch.equal(halves[row, s], stored[row, 16:24]) and torch.equal(halves[row, 1 - s], stored[row, 24:32])
    assert int(halves[19:].abs().sum()) == 0  # rows past crows: zero values
    words = burst[4096:4096 + 512].view(torch.int32).view(8, 16)
    assert (words[2:] == 0x44444444).all()  # tiles past the last: the legal padding word
    assert int(burst[4608:].sum()) == 0  # no row_index for 2:4


# ------------------------------------------------------------------ CPU replay, bit-exact vs the reference
REPLAY = [
    # (id, weight kind, rows, cols, vector, tokens, positions, dtype, config)
    ("samoyeds-200x256-v64-150pos", "samoyeds", 200, 256, 64, 40, 150, torch.float16, DEFAULT_CONFIG),
    ("samoyeds-38x96-v32-19pos-bf16", "samoyeds", 38, 96, 32, 23, 19, torch.bfloat16, DEFAULT_CONFIG),
    ("samoyeds-300x128-v128-257pos", "samoyeds", 300, 128, 128, 300, 257, torch.float16, DEFAULT_CONFIG),
    ("samoyeds-64x256-v64-k64", "samoyeds", 64, 256, 64, 9, 130, torch.bfloat16, PrefillConfig(k_stage=64, cand=2)),
    ("24-19x100-1pos", "24", 19, 100, None, 3, 1, torch.float16, DEFAULT_CONFIG),
    ("24-130x68-wide-300pos", "24", 130, 68, None, 50, 300, torch.bfloat16, WIDE_CONFIG),
]


@pytest.mark.parametrize("kind,rows,cols,vector,tokens,positions,dtype,config",
                         [pytest.param(*c[1:], id=c[0]) for c in REPLAY])
def test_replay_is_bit_exact_vs_reference(kind, rows, cols, vector, tokens, positions, dtype, config):
    w = _samoyeds(rows, cols, vector, dtype) if kind == "samoyeds" else _w24(rows, cols, dtype)
    x = _x(tokens, cols, dtype)
    idx = _ids(positions, tokens)
    has_ri = kind == "samoyeds"
    y = replay_prefill(pretile(w, config), config, x, idx, [0, positions], rows=rows, crows=w.values.shape[0],
                       cols=cols, sel_m=2 if has_ri else 1, vector=vector, has_ri=has_ri)
    ref = reference.ssmm(w, x, idx.to(torch.int64), out_dtype=torch.float32)
    assert torch.equal(y, ref), (y - ref).abs().max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config,stage", [(DEFAULT_CONFIG, 5), (PrefillConfig(k_stage=64, cand=2), 2),
                                          (PrefillConfig(bn=256, k_stage=64, cand=2, stages=3), 3)])
def test_wgmma_emulator_on_the_kernels_fragments_equals_the_compressed_rows(config, stage, dtype):
    """The layouts under the replay, proven with the warpgroup emulator: per consumer and k32 step, the A
    registers ldmatrix would load from the pre-tiled burst, the metadata registers and the B slab read through
    the kernel's descriptor give exactly (compressed rows of the stage's window) x (gathered tokens)."""
    rows, cols, vector = 280, 384, 64  # 140 compressed rows: block 1 holds rows 128..139 and zero padding
    w = _samoyeds(rows, cols, vector, dtype, seed=4)
    tiled = pretile(w, config)
    x = _x(config.bn, cols, dtype, seed=9)
    crows = w.values.shape[0]
    dense = w.to_dense().float()
    for bm in (0, 1):
        for kk in range(config.ksteps):
            k0 = stage * config.k_stage + kk * 32
            b = x[:, k0:k0 + 32]
            r = torch.arange(crows) * 2 + w.row_index[k0 // vector].long()  # dense row of each compressed row
            a_rows = torch.zeros(BLOCK, 32)
            n_valid = min(BLOCK, crows - bm * BLOCK)
            a_rows[:n_valid] = dense[r[bm * BLOCK: bm * BLOCK + n_valid], k0:k0 + 32]
            for c in (0, 1):
                d = emulate_consumer_kstep(tiled[bm, stage], config, b, c, kk)
                assert torch.equal(d, a_rows[64 * c: 64 * c + 64] @ b.float().T), (bm, kk, c)


BLOCK = prefill.BLOCK_M


def test_replay_grouped_experts_bit_exact():
    dtype, rows, cols, vector = torch.float16, 70, 128, 64
    ws = [_samoyeds(rows, cols, vector, dtype, seed=s) for s in (0, 1, 2)]
    x = _x(20, cols, dtype)
    offsets = [0, 140, 140, 175]  # an empty expert in the middle, tiles cut per expert
    idx = _ids(175, 20)
    tiled = torch.stack([pretile(w, DEFAULT_CONFIG) for w in ws])
    y = replay_prefill(tiled, DEFAULT_CONFIG, x, idx, offsets, rows=rows, crows=ws[0].values.shape[0], cols=cols,
                       sel_m=2, vector=vector, has_ri=True)
    for e, w in enumerate(ws):
        a, b = offsets[e], offsets[e + 1]
        ref = reference.ssmm(w, x, idx[a:b].to(torch.int64), out_dtype=torch.float32)
        assert torch.equal(y[a:b], ref), e


def test_replay_sees_a_wrong_flush():
    """The replay is a real check: with the window's row_index bytes of another window, it no longer matches."""
    dtype, rows, cols, vector = torch.float16, 64, 256, 64
    w = _samoyeds(rows, cols, vector, dtype)
    x, idx = _x(9, cols, dtype), _ids(130, 9)
    t = pretile(w, DEFAULT_CONFIG).clone()
    ri0 = DEFAULT_CONFIG.tile_bytes - 128
    t[:, 1, ri0:] = 1 - t[:, 1, ri0:]  # window 0 (stages 0, 1) is flushed with the bytes of its last stage
    y = replay_prefill(t, DEFAULT_CONFIG, x, idx, [0, 130], rows=rows, crows=w.values.shape[0], cols=cols, sel_m=2,
                       vector=vector, has_ri=True)
    ref = reference.ssmm(w, x, idx.to(torch.int64), out_dtype=torch.float32)
    assert not torch.equal(y, ref)
    t[:, 0, ri0:] = 1 - t[:, 0, ri0:]  # stage 0's copy is never read (no flush there): still exact
    t[:, 1, ri0:] = 1 - t[:, 1, ri0:]
    y = replay_prefill(t, DEFAULT_CONFIG, x, idx, [0, 130], rows=rows, crows=w.values.shape[0], cols=cols, sel_m=2,
                       vector=vector, has_ri=True)
    assert torch.equal(y, ref)


# ------------------------------------------------------------------ host side: op, plan, availability
@pytest.fixture
def fake_cupy(monkeypatch):
    rec = install_recorder(monkeypatch)
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(ops, "load_module", lambda module, arch: fake.RawModule())
    monkeypatch.setattr(prefill, "load_module", lambda module: fake.RawModule())
    monkeypatch.setattr(ops, "device_arch", lambda: "90a")
    monkeypatch.setattr("samoyeds_lab.kernels.plan._stream_handle", lambda device: 0)
    fake.recorder = rec
    return fake


@pytest.mark.parametrize("epilogue", ["plain", "scatter_add", "silu_mul"])
def test_plan_run_is_one_launch_and_no_host_work(fake_cupy, epilogue):
    w, x = _samoyeds(200, 256, 64, torch.float16), _x(40, 256, torch.float16)
    idx = _ids(300, 40)
    kw = {}
    if epilogue == "scatter_add":
        kw = dict(out=torch.zeros(40, 200), scale=torch.rand(300))
    elif epilogue == "silu_mul":
        kw = dict(up=torch.zeros(300, 200, dtype=torch.float16))
    plan = ssmm_plan(w, x, idx, epilogue=epilogue, kernel="wgmma_prefill", **kw)
    assert plan.launches_per_run == 1
    spec = plan.specs[0]
    assert spec.fn == "ssmm_prefill_f16" and spec.block == prefill.THREADS
    assert spec.grid == (1, 3, 1) and spec.smem == DEFAULT_CONFIG.smem_bytes  # 100 compressed rows, 300 / 128 tiles
    assert spec.args[0] is pretile(w, DEFAULT_CONFIG)  # pre-tiled once, cached on the weight
    assert spec.args[8].tolist() == [128, 128, 44]
    fake_cupy.calls.clear()
    dispatch, functions = TorchOps(), TorchCalls()
    with dispatch, functions:
        for _ in range(3):
            plan.run()
    assert fake_cupy.calls["launch"] == 3
    assert fake_cupy.host_work() == Counter(), dict(fake_cupy.host_work())
    assert dispatch.ops == [] and functions.calls == []
    assert [lau[2] for lau in fake_cupy.launched] == [(prefill.THREADS,)] * 3


def test_op_launches_with_three_warpgroups(fake_cupy, monkeypatch):
    seen = []
    monkeypatch.setattr(ops, "_launch", lambda module, fn, grid, smem, args, block=0: seen.append((module, fn, block)))
    w, x = _w24(40, 100, torch.bfloat16), _x(5, 100, torch.bfloat16)
    ops.ssmm(w, x, _ids(7, 5), backend="cupy", kernel="wgmma_prefill")
    assert seen == [(DEFAULT_CONFIG.module, "ssmm_prefill_bf16", prefill.THREADS)]


def test_explicit_prefill_refuses_an_unsupported_weight(fake_cupy):
    w = compress_samoyeds(torch.zeros(64, 256, dtype=torch.float16), n=2, m=4, vector=64)
    with pytest.raises(ValueError, match="kernel: 'wgmma_prefill' does not take SamoyedsWeight 2:4"):
        ops.ssmm(w, _x(4, 256, torch.float16), None, backend="cupy", kernel="wgmma_prefill")


def test_off_hopper_prefill_is_kernel_unavailable(fake_cupy, monkeypatch):
    monkeypatch.setattr(ops, "_arch", lambda: "80")
    w, x = _w24(40, 100, torch.float16), _x(5, 100, torch.float16)
    with pytest.raises(KernelUnavailableError, match="'wgmma_prefill' needs a Hopper GPU"):
        ops.ssmm(w, x, None, backend="cupy", kernel="wgmma_prefill")


def _rec(op, tokens, ms, device="NVIDIA H100 80GB HBM3", dtype="float16"):
    return {"op": op, "baseline": "ssmm", "device": device, "dtype": dtype, "tokens": tokens, "ms": ms,
            "baseline_ms": 1.0}


@pytest.mark.parametrize("records,tokens,want", [
    ([], 1024, "mma_sp"),
    ([_rec("ssmm_prefill", 1024, 0.7)], 1024, "wgmma_prefill"),
    ([_rec("ssmm_prefill", 1024, 1.3)], 1024, "mma_sp"),
    ([_rec("ssmm_prefill", 1024, 0.8), _rec("ssmm_wg", 1024, 0.6)], 1024, "wgmma_sp"),
    ([_rec("ssmm_prefill", 1024, 0.5), _rec("ssmm_wg", 1024, 0.6)], 2000, "wgmma_prefill"),
    ([_rec("ssmm_prefill", 4096, 0.5), _rec("ssmm_prefill", 64, 1.5)], 100, "mma_sp"),
    ([_rec("ssmm_prefill", 1024, 0.5, device="NVIDIA H200")], 1024, "mma_sp"),
    ([dict(_rec("ssmm_prefill", 1024, 0.5), status="failed")], 1024, "mma_sp"),
])
def test_auto_picks_prefill_only_from_measurements(records, tokens, want):
    assert ops.choose_ssmm_kernel(tokens, torch.float16, "NVIDIA H100 80GB HBM3", records) == want


def test_malformed_prefill_record_is_named():
    with pytest.raises(ValueError, match="records: expected ssmm_prefill records"):
        ops.choose_ssmm_kernel(8, "float16", "NVIDIA H100 80GB HBM3", [{**_rec("ssmm_prefill", 1024, 0.5), "ms": "x"}])


# ------------------------------------------------------------------ on a Hopper GPU
def _need_hopper():
    if not torch.cuda.is_available() or not ops.available():
        pytest.skip("needs a CUDA GPU with the CuPy backend")
    from samoyeds_lab.kernels.build import device_arch

    if device_arch() != "90a":
        pytest.skip(f"kernel='wgmma_prefill' needs sm_90a (Hopper); this GPU builds for sm_{device_arch()}")


GPU_CASES = [
    ("samoyeds", 512, 512, 128, 300, 1024, torch.bfloat16),
    ("samoyeds", 200, 256, 64, 40, 150, torch.float16),
    ("24", 19, 100, None, 7, 3, torch.float16),
    ("24", 300, 4096, None, 64, 257, torch.bfloat16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("kind,rows,cols,vector,tokens,positions,dtype",
                         [pytest.param(*c, id=f"{c[0]}-{c[1]}x{c[2]}-{c[5]}pos-{str(c[6])[6:]}") for c in GPU_CASES])
@pytest.mark.parametrize("epilogue", ["plain", "scatter_add"])
def test_gpu_ssmm_prefill_matches_reference(kind, rows, cols, vector, tokens, positions, dtype, epilogue):
    _need_hopper()
    w = _samoyeds(rows, cols, vector, dtype) if kind == "samoyeds" else _w24(rows, cols, dtype)
    wc = (_samoyeds(rows, cols, vector, dtype, device="cuda") if kind == "samoyeds"
          else _w24(rows, cols, dtype, device="cuda"))
    x = _x(tokens, cols, dtype)
    idx = _ids(positions, tokens)
    ref = reference.ssmm(w, x, idx.to(torch.int64), out_dtype=torch.float32)
    xc, ic = x.cuda(), idx.cuda()
    if epilogue == "plain":
        got = ops.ssmm(wc, xc, ic, backend="cupy", kernel="wgmma_prefill").float().cpu()
        torch.testing.assert_close(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * max(1.0, ref.abs().max().item()))
    else:
        out = torch.zeros(tokens, rows, dtype=torch.float32, device="cuda")
        scale = torch.rand(positions, generator=torch.Generator().manual_seed(1))
        ops.ssmm(wc, xc, ic, epilogue="scatter_add", out=out, scale=scale.cuda(), backend="cupy",
                 kernel="wgmma_prefill")
        want = torch.zeros(tokens, rows)
        valid = idx != SENTINEL
        want.index_add_(0, idx[valid].to(torch.int64), ref[valid] * scale[valid].unsqueeze(1))
        torch.testing.assert_close(out.cpu(), want, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_ssmm_prefill_plan_equals_the_op_and_reruns(dtype):
    _need_hopper()
    w = _samoyeds(256, 512, 128, dtype, device="cuda")
    x, idx = _x(200, 512, dtype).cuda(), _ids(700, 200).cuda()
    want = ops.ssmm(w, x, idx, backend="cupy", kernel="wgmma_prefill")
    plan = ssmm_plan(w, x, idx, kernel="wgmma_prefill")
    for _ in range(3):
        got = plan.run()
    torch.cuda.synchronize()
    assert torch.equal(got, want)  # plain epilogue: one writer per element, same order, bit-identical


@pytest.mark.gpu
def test_gpu_ssmm_prefill_grouped_matches_reference():
    _need_hopper()
    from samoyeds_lab.formats import TokenSelection

    dtype, rows, cols, experts = torch.bfloat16, 256, 256, 3
    ws = [_samoyeds(rows, cols, 64, dtype, seed=s, device="cuda") for s in range(experts)]
    x = _x(300, cols, dtype).cuda()
    topk = torch.rand(300, experts, generator=torch.Generator().manual_seed(2)).argsort(-1)[:, :2]
    sel = TokenSelection.from_topk(topk, experts)
    got = ops.ssmm_grouped(ws, x, sel, backend="cupy", kernel="wgmma_prefill").float().cpu()
    want = ops.ssmm_grouped([_samoyeds(rows, cols, 64, dtype, seed=s) for s in range(experts)], x.cpu(), sel,
                            backend="reference").float()
    torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype] * max(1.0, want.abs().max().item()))


def test_grouped_op_stacks_the_experts_bursts_and_cuts_tiles_per_expert(fake_cupy, monkeypatch):
    from samoyeds_lab.formats import TokenSelection

    seen = []
    monkeypatch.setattr(ops, "_launch", lambda module, fn, grid, smem, args, block=0: seen.append((grid, args)))
    ws = [_samoyeds(256, 256, 64, torch.float16, seed=s) for s in range(3)]
    topk = torch.rand(300, 3, generator=torch.Generator().manual_seed(2)).argsort(-1)[:, :2]
    sel = TokenSelection.from_topk(topk, 3)
    ops.ssmm_grouped(ws, _x(300, 256, torch.float16), sel, backend="cupy", kernel="wgmma_prefill")
    (grid, args), = seen
    offs = sel.padded_offsets.tolist()
    per = [-(-(b - a) // 128) for a, b in zip(offs[:-1], offs[1:])]
    assert grid == (1, sum(per), 1)
    assert tuple(args[0].shape) == (3, 1, 8, DEFAULT_CONFIG.tile_bytes)
    assert torch.equal(args[0][1], pretile(ws[1], DEFAULT_CONFIG))
    assert args[6].tolist() == sum(([e] * n for e, n in enumerate(per)), [])  # tile_expert
