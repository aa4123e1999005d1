"""CPU kernels (kernels/cpu_sparse.c via samoyeds_lab.kernels.cpu) against the pure-torch reference.

Every ISA path that can run on this machine is forced (the portable one always runs), over awkward shapes
(1, 19, 99 rows; K not a multiple of 32 for 2:4), 0 / 1 / many tokens, SENTINEL-padded ids, every epilogue and
dtype. Products are exact in fp32 (bf16/fp16 products of two values are exact); only the summation order
differs from the reference, so fp32 results agree to ~1e-5 relative, and 16-bit outputs to their rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samoyeds_lab import kernels as K
from samoyeds_lab import reference
from samoyeds_lab.formats import SENTINEL, TokenSelection, compress_nm, compress_samoyeds, compress_venom
from samoyeds_lab.kernels import cpu

from ..formats.helpers import random_24_rows, random_samoyeds, random_venom

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
RUNNABLE = cpu.available_isas()  # the CPU has it and the compiler builds it (portable: wherever a compiler is)
#: fp32 products compared relative to the output's scale (summation order only)
RTOL32 = 2e-5
OUT_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=2e-3, atol=2e-3),
           torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


def _w24(rows, cols, dtype, seed=0):
    return compress_nm(random_24_rows(rows, cols, torch.Generator().manual_seed(seed)).to(dtype))


def _ws(rows, cols, dtype, n=1, m=2, vector=128, seed=0):
    return compress_samoyeds(random_samoyeds(rows, cols, n, m, vector, dtype, seed), n, m, vector)


def _close32(y, ref):
    scale = float(ref.abs().max()) if ref.numel() else 1.0
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert float((y - ref).abs().max() if y.numel() else 0.0) <= RTOL32 * max(scale, 1.0) * 4


WEIGHTS = [
    ("2:4 1x32", lambda dt: _w24(1, 32, dt)),
    ("2:4 19x100 (K % 32 = 4)", lambda dt: _w24(19, 100, dt)),
    ("2:4 99x260", lambda dt: _w24(99, 260, dt, seed=3)),
    ("2:4 64x4100 (K-blocks)", lambda dt: _w24(64, 4100, dt, seed=4)),
    ("samoyeds 1:2 V=128 2x128", lambda dt: _ws(2, 128, dt)),
    ("samoyeds 1:2 V=128 98x384", lambda dt: _ws(98, 384, dt, seed=1)),
    ("samoyeds 1:2 V=32 38x96 (lone units)", lambda dt: _ws(38, 96, dt, vector=32, seed=2)),
    ("samoyeds 2:4 V=64 20x192", lambda dt: _ws(20, 192, dt, n=2, m=4, vector=64, seed=5)),
    ("samoyeds 1:3 V=96 99x288", lambda dt: _ws(99, 288, dt, n=1, m=3, vector=96, seed=6)),
    ("samoyeds 1:2 V=128 64x8448 (K-blocks)", lambda dt: _ws(64, 8448, dt, seed=7)),
]


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,make", WEIGHTS, ids=[w[0] for w in WEIGHTS])
@pytest.mark.parametrize("tokens", [1, 3, 6, 9, 17])  # token blocks of 4 and every remainder; fp32 tiles from 4
def test_kernel_matches_reference(isa, dtype, name, make, tokens):
    w = make(dtype)
    g = torch.Generator().manual_seed(tokens)
    x = torch.randn(tokens + 2, w.shape[1], generator=g).to(dtype)
    idx = torch.randint(0, tokens + 2, (tokens,), generator=g)
    ref = reference.ssmm(w, x, idx, out_dtype=torch.float32)
    _close32(cpu.kernel_gemm(w, x, idx, isa=isa), ref)
    _close32(cpu.kernel_gemm(w, x, None, isa=isa), reference.spmm(w, x, out_dtype=torch.float32))


@pytest.mark.parametrize("isa", RUNNABLE + ["none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,make", WEIGHTS[1:3] + WEIGHTS[5:8], ids=[w[0] for w in WEIGHTS[1:3] + WEIGHTS[5:8]])
def test_dense_tiles_match_reference(isa, dtype, name, make):
    # tile-by-tile decompression (C where a path is built, pure torch with isa="none"), then torch's GEMM
    w = make(dtype)
    x = torch.randn(5, w.shape[1]).to(dtype)
    ref = reference.spmm(w, x, out_dtype=torch.float32)
    y = cpu.dense_tiles(w, x, isa=isa)
    # the tile GEMM runs in the weight's dtype (fp16 in fp32): outputs carry that rounding
    tol = OUT_TOL[torch.bfloat16 if dtype == torch.bfloat16 else torch.float32]
    torch.testing.assert_close(y, ref, **tol)


def test_dense_tiles_cover_many_tiles_exactly():
    # 600 compressed rows = 3 tiles (the last partial); decompression itself is exact
    w = _ws(1200, 256, torch.float32, seed=9)
    x = torch.randn(3, 256)
    torch.testing.assert_close(cpu.dense_tiles(w, x), reference.spmm(w, x, out_dtype=torch.float32), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cpu.dense_tiles(w, x, isa="none"), reference.spmm(w, x, out_dtype=torch.float32),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", RUNNABLE)
def test_zero_tokens_and_threads(isa):
    w = _ws(64, 256, torch.bfloat16)
    x = torch.randn(4, 256).bfloat16()
    assert cpu.kernel_gemm(w, x, torch.zeros(0, dtype=torch.int64), isa=isa).shape == (0, 64)
    ref = reference.spmm(w, x, out_dtype=torch.float32)
    for t in (1, 2, 3):
        _close32(cpu.kernel_gemm(w, x, isa=isa, threads=t), ref)


@pytest.mark.parametrize("layout", ["pair", "lanes"])
def test_layouts_are_permutations_of_the_values(layout):
    w = _ws(38, 96, torch.bfloat16, vector=32, seed=2)
    nat, other = cpu.cpu_operand(w, layout="natural"), cpu.cpu_operand(w, layout=layout)
    assert other.layout == layout and nat.nbytes == other.nbytes
    assert torch.equal(torch.sort(nat.vals.float(), 1).values, torch.sort(other.vals.float(), 1).values)
    # the operand the kernel reads is the format's bytes: values + 2 bits per value + row-index bytes
    assert nat.nbytes == w.values.numel() * 2 + w.values.numel() // 4 + w.row_index.numel()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lanes_layout_words_and_slots(dtype):
    # metadata byte j of the lanes layout = p0(2j) | p0(2j+1) << 2 | p1(2j) << 4 | p1(2j+1) << 6; bf16
    # values interleave the unit's halves; fp16 / fp32 values keep their order
    w = _ws(20, 64, dtype, vector=32, seed=5)
    nat, lanes = cpu.cpu_operand(w, layout="natural"), cpu.cpu_operand(w, layout="lanes")
    for c in range(nat.crows):
        for u in range(nat.upr):
            a, b = int(nat.meta[c, u]) & 0xFFFFFFFF, int(lanes.meta[c, u]) & 0xFFFFFFFF
            for g in range(8):
                p0, p1 = (a >> 2 * g) & 3, (a >> (16 + 2 * g)) & 3
                byte = (b >> 8 * (g >> 1)) & 0xFF
                assert ((byte >> 2 * (g & 1)) & 3, (byte >> (4 + 2 * (g & 1))) & 3) == (p0, p1)
    nv, lv = nat.vals.view(nat.crows, -1, 16), lanes.vals.view(nat.crows, -1, 16)
    if dtype == torch.bfloat16:
        assert torch.equal(lv[..., 0::2], nv[..., :8]) and torch.equal(lv[..., 1::2], nv[..., 8:])
    else:
        assert torch.equal(lv, nv)


def test_layout_is_checked():
    with pytest.raises(ValueError, match="layout: expected one of 'natural', 'pair', 'lanes', got 'x'"):
        cpu.cpu_operand(_ws(8, 128, torch.bfloat16), layout="x")
    with pytest.raises(ValueError, match="isa: expected one of .*got 'sse'"):
        cpu.layout_for("sse", torch.bfloat16)
    assert cpu.layout_for("avx2", torch.float16) == "lanes"
    assert cpu.layout_for("avx512", torch.bfloat16, torch.bfloat16) == "pair"
    assert cpu.layout_for("avx512", torch.bfloat16, torch.float32) == "natural"
    assert cpu.layout_for("portable", torch.bfloat16) == "natural"


# ------------------------------------------------------------------------------------- through the ops
@pytest.mark.parametrize("isa", RUNNABLE + ["none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("epilogue", ["plain", "silu_mul", "scatter_add"])
def test_ops_cpu_backend_epilogues(monkeypatch, isa, dtype, epilogue):
    monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", isa)
    g = torch.Generator().manual_seed(11)
    w = _ws(98, 384, dtype, seed=1)
    x = torch.randn(7, 384, generator=g).to(dtype)
    idx = torch.tensor([3, SENTINEL, 0, 6, 6, SENTINEL, 1], dtype=torch.int32)
    kw = {}
    if epilogue == "silu_mul":
        kw["up"] = torch.randn(7, 98, generator=g).to(dtype)
    res = {}
    for backend in ("cpu", "reference"):
        if epilogue == "scatter_add":
            kw["out"] = torch.zeros(7, 98, dtype=torch.float32)
            kw["scale"] = torch.linspace(0.5, 1.5, 7)
        res[backend] = K.ssmm(w, x, idx, epilogue=epilogue, backend=backend, **kw)
    tol = OUT_TOL[dtype] if isa != "none" else OUT_TOL[torch.bfloat16]
    torch.testing.assert_close(res["cpu"].float(), res["reference"].float(), **tol)
    if epilogue == "plain":
        assert bool((res["cpu"][1] == 0).all()) and bool((res["cpu"][5] == 0).all())  # SENTINEL rows


def test_auto_runs_the_cpu_kernel_and_says_so():
    w = _ws(64, 256, torch.bfloat16)
    choice = K.cpu_choice(w, 1, torch.bfloat16)
    assert choice.mode in ("kernel", "dense") and choice.reason
    if cpu.cpu_path().isa != "none":
        assert choice.mode == "kernel" or "recorded" in choice.reason
    x = torch.randn(3, 256).bfloat16()
    torch.testing.assert_close(K.spmm(w, x).float(), reference.spmm(w, x).float(), **OUT_TOL[torch.bfloat16])


def _two_records():
    """Records of this CPU's path: the kernel faster at 1 token, the dense tiles at 256 (skips without a path)."""
    path = cpu.cpu_path()
    if path.isa == "none":
        pytest.skip("no CPU kernel builds here")
    base = dict(op="gemm", cpu=path.cpu, isa=path.isa, kind="samoyeds", dtype="bfloat16",
                threads=torch.get_num_threads(), date="2026-12-02")
    return [dict(base, tokens=1, kernel_ms=1.0, tiles_ms=5.0), dict(base, tokens=256, kernel_ms=70.0, tiles_ms=50.0)]


def test_cpu_choice_follows_records():
    w = _ws(64, 256, torch.bfloat16)
    recs = _two_records()
    assert cpu.cpu_choice(w, 2, records=recs).mode == "kernel"
    far = cpu.cpu_choice(w, 200, records=recs)
    assert far.mode == "dense" and "50.00 ms" in far.reason and "256 tokens" in far.reason
    other = [dict(r, cpu="another CPU") for r in recs]
    far_other = cpu.cpu_choice(w, 200, records=other)  # the same path on another CPU: used, and said so
    assert far_other.mode == "dense" and "another CPU" in far_other.reason
    mixed = recs[:1] + other[1:]  # this CPU's own record wins over another CPU's
    assert cpu.cpu_choice(w, 200, records=mixed).mode == "kernel"
    assert cpu.cpu_choice(w, 200, records=[dict(r, isa="other") for r in recs]).mode == "kernel"


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grouped_cpu_matches_reference(padded, dtype):
    g = torch.Generator().manual_seed(0)
    E, T = 4, 11
    ws = [_ws(64, 256, dtype, seed=e) for e in range(E)]
    x = torch.randn(T, 256, generator=g).to(dtype)
    ids = torch.stack([torch.randperm(E, generator=g)[:2] for _ in range(T)])
    sel = TokenSelection.from_topk(ids, E, pad_to=8 if padded else 1)
    rw = torch.rand(T, 2, generator=g)
    for backend in ("cpu", "auto"):
        a = K.ssmm_grouped(ws, x, sel, padded=padded, backend=backend)
        b = K.ssmm_grouped(ws, x, sel, padded=padded, backend="reference")
        torch.testing.assert_close(a.float(), b.float(), **OUT_TOL[dtype])
        oa, ob = torch.zeros(T, 64), torch.zeros(T, 64)
        K.ssmm_grouped(ws, x, sel, padded=padded, epilogue="scatter_add", out=oa, routing_weights=rw, backend=backend)
        K.ssmm_grouped(ws, x, sel, padded=padded, epilogue="scatter_add", out=ob, routing_weights=rw, backend="reference")
        torch.testing.assert_close(oa, ob, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["2:4", "samoyeds"]), st.integers(1, 6), st.integers(1, 5), st.sampled_from([32, 64, 96]),
       st.integers(0, 6), st.sampled_from(DTYPES), st.integers(0, 2**16))
def test_hypothesis_round_trip(kind, groups, kunits, vector, tokens, dtype, seed):
    # random shapes and ids (SENTINEL included): the CPU backend equals the reference
    if kind == "2:4":
        rows, cols = groups * 3, kunits * 28
        w = _w24(rows, cols, dtype, seed)
    else:
        rows, cols = groups * 2, kunits * vector
        w = _ws(rows, cols, dtype, vector=vector, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, cols, generator=g).to(dtype)
    idx = torch.randint(0, 4, (tokens,), generator=g)
    if tokens:
        idx[0] = SENTINEL
    a = K.ssmm(w, x, idx, backend="cpu")
    b = K.ssmm(w, x, idx, backend="reference")
    torch.testing.assert_close(a.float(), b.float(), **OUT_TOL[dtype])


# ------------------------------------------------------------------------------------- errors
def test_cpu_backend_refuses_what_it_cannot_run():
    v = compress_venom(random_venom(16, 64, dtype=torch.float16), v=4, n=4, m=8)
    x = torch.randn(2, 64).half()
    with pytest.raises(ValueError, match="backend: 'cpu' does not support this call: weight format VenomWeight"):
        K.ssmm(v, x, None, backend="cpu")
    with pytest.raises(ValueError, match=r"backend: 'cpu' does not support this call: vector=16 \(the CPU kernels need"):
        K.ssmm(compress_samoyeds(random_samoyeds(8, 64, 1, 2, 16, torch.float16), 1, 2, 16), x, None, backend="cpu")
    nm = compress_nm(torch.zeros(4, 8).half(), 1, 4)
    with pytest.raises(ValueError, match="NMWeight 1:4"):
        K.spmm(nm, torch.randn(2, 8).half(), backend="cpu")
    # auto keeps the reference for formats the kernels do not take
    torch.testing.assert_close(K.ssmm(v, x, None), reference.spmm(v, x))


@pytest.mark.parametrize("backend", ["cpu", "reference", "auto"])
def test_bad_input_same_error_on_every_backend(backend):
    w = _ws(8, 128, torch.bfloat16)
    x = torch.randn(3, 128).bfloat16()
    with pytest.raises(ValueError, match=r"token_idx: expected ids in \[0, 3\)"):
        K.ssmm(w, x, torch.tensor([0, 5]), backend=backend)
    with pytest.raises(ValueError, match=r"x: expected shape \[tokens, 128\]"):
        K.ssmm(w, torch.randn(3, 64).bfloat16(), None, backend=backend)
    with pytest.raises(TypeError, match="token_idx: expected dtype"):
        K.ssmm(w, x, torch.tensor([0.0]), backend=backend)
    with pytest.raises(ValueError, match="up: expected"):
        K.ssmm(w, x, None, epilogue="silu_mul", up=torch.randn(2, 8).bfloat16(), backend=backend)
    with pytest.raises(ValueError, match="backend: expected one of"):
        K.ssmm(w, x, None, backend="gpu")


def test_kernel_gemm_named_errors():
    w = _ws(8, 128, torch.float32)
    with pytest.raises(ValueError, match="isa: expected one of"):
        cpu.kernel_gemm(w, torch.randn(1, 128), isa="sse2")
    with pytest.raises(ValueError, match="isa: no CPU kernel"):
        cpu.kernel_gemm(w, torch.randn(1, 128), isa="none")
    with pytest.raises(ValueError, match="weight: weight format"):
        cpu.cpu_operand(torch.randn(4, 4))


def test_auto_summary_names_the_dense_tile_token_counts():
    recs = _two_records()
    assert cpu.auto_summary(recs) == ("auto (recorded bf16 measurements of this CPU): samoyeds: kernel, dense tiles "
                                      "at 256 tokens")
    assert "no recorded" in cpu.auto_summary([])


@pytest.mark.skipif("portable" not in RUNNABLE, reason="no C compiler builds the portable path here")
def test_forced_isa_env(monkeypatch):
    monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", "portable")
    assert cpu.cpu_path().isa == "portable" and "forced" in cpu.cpu_path().reason
    monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", "none")
    assert cpu.cpu_path().isa == "none"
    assert K.cpu_choice(_ws(8, 128, torch.float32), 1).mode == "dense"
    monkeypatch.setenv("SAMOYEDS_LAB_CPU_ISA", "avx9000")
    with pytest.raises(ValueError, match="SAMOYEDS_LAB_CPU_ISA: expected one of"):
        cpu.cpu_path()


@pytest.mark.skipif("portable" not in RUNNABLE, reason="no C compiler builds the portable path here")
def test_build_is_cached_on_disk_across_processes(tmp_path):
    # a fresh cache directory: the first process compiles (well under 30 s), the second loads the cached build
    env = dict(os.environ, SAMOYEDS_LAB_CACHE=str(tmp_path), SAMOYEDS_LAB_CPU_ISA="portable")
    code = "from samoyeds_lab.kernels import cpu; p = cpu.cpu_path(); print(p.isa, p.cached, p.compile_s)"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    isa1, cached1, s1 = first.stdout.split()
    isa2, cached2, _ = second.stdout.split()
    assert (isa1, cached1, isa2, cached2) == ("portable", "False", "portable", "True")
    assert float(s1) < 30
    assert list((tmp_path / "cpu").glob("cpu_sparse_portable_*.so"))


def test_gradients_take_the_reference_and_cpu_says_why():
    w = _ws(8, 128, torch.float32)
    x = torch.randn(3, 128, requires_grad=True)
    y = K.ssmm(w, x, None)  # auto: the reference, so x gets its gradient
    y.sum().backward()
    torch.testing.assert_close(x.grad, w.to_dense().sum(0).expand(3, -1))
    with pytest.raises(ValueError, match="backend: 'cpu' kernels are not differentiable"):
        K.ssmm(w, x, None, backend="cpu")
    with torch.no_grad():
        _close32(K.ssmm(w, x, None, backend="cpu"), reference.spmm(w, x.detach(), out_dtype=torch.float32))


def test_auto_says_when_it_takes_dense_tiles(monkeypatch, caplog):
    import logging

    from samoyeds_lab.kernels import ops

    monkeypatch.setattr(cpu, "cpu_choice", lambda w, t, dt=None: cpu.CpuChoice("dense", "dense tiles: test reason"))
    ops._said.discard("dense tiles: test reason")
    w = _ws(8, 128, torch.float32)
    x = torch.randn(2, 128)
    with caplog.at_level(logging.INFO, logger="samoyeds_lab.kernels"):
        y = K.ssmm(w, x, None)
        K.ssmm(w, x, None)
    assert [r.getMessage() for r in caplog.records].count("backend='auto' runs dense: dense tiles: test reason") == 1
    torch.testing.assert_close(y, reference.spmm(w, x), rtol=1e-4, atol=1e-4)


def test_missing_source_or_compiler_falls_back_to_dense_tiles(monkeypatch, tmp_path):
    # no kernel source (a non-editable install) or no compiler: a named reason, the dense tiles, same answers
    monkeypatch.setattr(cpu, "SOURCE", tmp_path / "missing.c")
    cpu.build.cache_clear()
    cpu._cpu_path.cache_clear()
    monkeypatch.setenv("SAMOYEDS_LAB_CACHE", str(tmp_path))
    try:
        with pytest.raises(cpu.CpuKernelError, match="cannot be read"):
            cpu.build("portable")
        path = cpu.cpu_path()
        assert path.isa == "none" and "cannot be read" in path.reason
        w = _ws(8, 128, torch.float32)
        x = torch.randn(2, 128)
        torch.testing.assert_close(K.ssmm(w, x, None), reference.spmm(w, x), rtol=1e-4, atol=1e-4)
        monkeypatch.setattr(cpu, "_compiler", lambda: None)
        with pytest.raises(cpu.CpuKernelError, match="no C compiler found"):
            cpu.build("portable")
    finally:
        cpu.build.cache_clear()
        cpu._cpu_path.cache_clear()
        cpu._cached_choice.cache_clear()


@pytest.mark.parametrize("fn", [cpu.kernel_gemm, cpu.dense_tiles], ids=["kernel_gemm", "dense_tiles"])
def test_direct_entry_points_name_the_bad_argument(fn):
    w = _ws(8, 128, torch.float32)
    x = torch.randn(3, 128)
    cases = [
        ((w, torch.randn(3, 64)), ValueError, r"x: expected shape \[tokens, 128\]"),
        ((w, torch.randn(3, 128, 1)), ValueError, "x: expected a 2-D tensor"),
        ((w, torch.randn(3, 128).to(torch.float64)), TypeError, "x: expected dtype"),
        ((w, x, torch.tensor([0, 3])), ValueError, r"idx: expected row ids in \[0, 3\)"),
        ((w, x, torch.tensor([-1])), ValueError, r"idx: expected row ids in \[0, 3\) \(no SENTINEL\)"),
        ((w, x, torch.tensor([0.5])), TypeError, "idx: expected dtype"),
        ((torch.randn(8, 128), x), ValueError, "weight: weight format Tensor"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fn(*args)
    with pytest.raises(ValueError, match="isa: expected one of"):
        fn(w, x, isa="sse2")
    if fn is cpu.kernel_gemm:
        with pytest.raises(ValueError, match="threads: expected an int >= 1"):
            fn(w, x, threads=0)


def test_cpu_choice_names_the_bad_argument():
    w = _ws(8, 128, torch.float32)
    with pytest.raises(ValueError, match="tokens: expected an int >= 0"):
        cpu.cpu_choice(w, -1)
    with pytest.raises(TypeError, match="dtype: expected"):
        cpu.cpu_choice(w, 1, torch.int8)
    with pytest.raises(ValueError, match="weight: weight format"):
        cpu.cpu_choice(torch.randn(4, 4), 1)
