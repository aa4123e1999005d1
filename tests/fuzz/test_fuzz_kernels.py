"""Fuzz: bad inputs to every public entry point of ``samoyeds_lab.kernels`` (reference / cpu backends here).

Every case must raise the named error class with a message naming the argument; see
``tests/fuzz/harness.py``. The cross-backend "same error everywhere" check is ``test_fuzz_backends.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab import kernels as K
from samoyeds_lab.formats import SENTINEL, TokenSelection
from samoyeds_lab.prune import sparsify

from .harness import case, ids, run_case

_g = torch.Generator().manual_seed(0)
R, C, T = 16, 64, 4
W32 = torch.randn(R, C, generator=_g)
W24 = sparsify(W32, "2:4")                      # NMWeight fp32 (the CPU kernels take it)
WS = sparsify(W32, "samoyeds", vector=32)       # SamoyedsWeight fp32
WV = sparsify(W32, "venom", v=16)                  # VenomWeight (reference only)
X = torch.randn(T, C, generator=_g)
IDX = torch.tensor([0, 1, 3], dtype=torch.int32)
SEL = TokenSelection.from_topk(torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0]]), 2, pad_to=1)
OUT = torch.zeros(T, R)


def _nan(t: torch.Tensor, i: int = 0) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[i] = float("nan")
    return t


def _spmm(**kw):
    a = dict(weight=W24, x=X)
    a.update(kw)
    return lambda: K.spmm(a.pop("weight"), a.pop("x"), **a)


def _ssmm(**kw):
    a = dict(weight=WS, x=X, token_idx=IDX)
    a.update(kw)
    return lambda: K.ssmm(a.pop("weight"), a.pop("x"), a.pop("token_idx"), **a)


def _grouped(**kw):
    a = dict(weights=[WS, WS], x=X, selection=SEL)
    a.update(kw)
    return lambda: K.ssmm_grouped(a.pop("weights"), a.pop("x"), a.pop("selection"), **a)


def _dense(**kw):
    a = dict(weight=W32, x=X, token_idx=None)
    a.update(kw)
    return lambda: K.dense_mm(a.pop("weight"), a.pop("x"), a.pop("token_idx"), **a)


CASES = []
for fn, entry in ((_spmm, "kernels.spmm"), (_ssmm, "kernels.ssmm"), (_dense, "kernels.dense_mm")):
    CASES += [
        case(entry, "weight None", fn(weight=None), TypeError, "weight"),
        case(entry, "weight a str", fn(weight="W"), TypeError, "weight"),
        case(entry, "weight a 3-D tensor", fn(weight=torch.zeros(2, R, C)), ValueError, "weight"),
        case(entry, "x None", fn(x=None), TypeError, "x"),
        case(entry, "x a list", fn(x=[[1.0] * C]), TypeError, "x"),
        case(entry, "x 1-D", fn(x=torch.zeros(C)), ValueError, "x"),
        case(entry, "x wrong K", fn(x=torch.zeros(T, C - 1)), ValueError, "x"),
        case(entry, "x int dtype", fn(x=torch.zeros(T, C, dtype=torch.int32)), TypeError, "x"),
        case(entry, "x bool dtype", fn(x=torch.zeros(T, C, dtype=torch.bool)), TypeError, "x"),
        case(entry, "split_k=-3", fn(split_k=-3), ValueError, "split_k"),
        case(entry, "split_k=0", fn(split_k=0), ValueError, "split_k"),
        case(entry, "split_k=2.5", fn(split_k=2.5), TypeError, "split_k"),
        case(entry, "split_k=True", fn(split_k=True), TypeError, "split_k"),
        case(entry, "backend 'gpu'", fn(backend="gpu"), ValueError, "backend"),
        case(entry, "backend None", fn(backend=None), ValueError, "backend"),
        case(entry, "backend 'cupy' here", fn(backend="cupy"), (K.KernelUnavailableError, ValueError), "backend"),
    ]
CASES += [
    case("kernels.dense_mm", "weight int dtype", _dense(weight=torch.zeros(R, C, dtype=torch.int64)), TypeError,
         "weight"),
    case("kernels.dense_mm", "weight empty list", _dense(weight=[]), TypeError, "weight"),
    case("kernels.dense_mm", "token_idx out of range", _dense(token_idx=torch.tensor([0, T])), ValueError,
         "token_idx"),
    case("kernels.dense_mm", "token_idx negative", _dense(token_idx=torch.tensor([-2])), ValueError, "token_idx"),
    case("kernels.dense_mm", "token_idx float", _dense(token_idx=torch.tensor([0.0])), TypeError, "token_idx"),
    case("kernels.dense_mm", "token_idx 2-D", _dense(token_idx=torch.zeros(1, 1, dtype=torch.int64)), ValueError,
         "token_idx"),
    case("kernels.dense_mm", "token_idx a list", _dense(token_idx=[0, 1]), TypeError, "token_idx"),
    case("kernels.spmm", "backend 'cpu' with a venom weight", _spmm(weight=WV, backend="cpu"), ValueError,
         "backend"),
    # ssmm: ids and epilogues
    case("kernels.ssmm", "token_idx out of range", _ssmm(token_idx=torch.tensor([0, T])), ValueError, "token_idx"),
    case("kernels.ssmm", "token_idx -2 (not SENTINEL)", _ssmm(token_idx=torch.tensor([-2])), ValueError,
         "token_idx"),
    case("kernels.ssmm", "token_idx float", _ssmm(token_idx=torch.tensor([0.0])), TypeError, "token_idx"),
    case("kernels.ssmm", "token_idx 2-D", _ssmm(token_idx=torch.zeros(1, 2, dtype=torch.int32)), ValueError,
         "token_idx"),
    case("kernels.ssmm", "token_idx a list", _ssmm(token_idx=[0, 1]), TypeError, "token_idx"),
    case("kernels.ssmm", "epilogue 'gelu'", _ssmm(epilogue="gelu"), ValueError, "epilogue"),
    case("kernels.ssmm", "epilogue None", _ssmm(epilogue=None), ValueError, "epilogue"),
    case("kernels.ssmm", "silu_mul without up", _ssmm(epilogue="silu_mul"), TypeError, "up"),
    case("kernels.ssmm", "silu_mul up wrong shape", _ssmm(epilogue="silu_mul", up=torch.zeros(3, R + 1)),
         ValueError, "up"),
    case("kernels.ssmm", "silu_mul up wrong dtype", _ssmm(epilogue="silu_mul", up=torch.zeros(3, R).half()),
         TypeError, "up"),
    case("kernels.ssmm", "up with plain", _ssmm(up=torch.zeros(3, R)), ValueError, "up"),
    case("kernels.ssmm", "scatter_add without out", _ssmm(epilogue="scatter_add"), TypeError, "out"),
    case("kernels.ssmm", "scatter_add out wrong cols", _ssmm(epilogue="scatter_add", out=torch.zeros(T, R + 1)),
         ValueError, "out"),
    case("kernels.ssmm", "scatter_add out int dtype",
         _ssmm(epilogue="scatter_add", out=torch.zeros(T, R, dtype=torch.int32)), TypeError, "out"),
    case("kernels.ssmm", "scatter_add out non-contiguous",
         _ssmm(epilogue="scatter_add", out=torch.zeros(R, T).T), ValueError, "out"),
    case("kernels.ssmm", "scatter_idx out of range",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scatter_idx=torch.tensor([0, 1, T])), ValueError,
         "scatter_idx"),
    case("kernels.ssmm", "scatter_idx wrong length",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scatter_idx=torch.tensor([0, 1])), ValueError,
         "scatter_idx"),
    case("kernels.ssmm", "scatter_idx float",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scatter_idx=torch.tensor([0.0, 1.0, 2.0])), TypeError,
         "scatter_idx"),
    case("kernels.ssmm", "scale wrong length",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scale=torch.ones(2)), ValueError, "scale"),
    case("kernels.ssmm", "scale NaN",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scale=_nan(torch.ones(3))), ValueError, "scale"),
    case("kernels.ssmm", "scale inf",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scale=torch.tensor([1.0, float("inf"), 1.0])), ValueError,
         "scale"),
    case("kernels.ssmm", "scale bool",
         _ssmm(epilogue="scatter_add", out=OUT.clone(), scale=torch.ones(3, dtype=torch.bool)), TypeError, "scale"),
    case("kernels.ssmm", "out with plain", _ssmm(out=OUT.clone()), ValueError, "out"),
    case("kernels.ssmm", "scale with silu_mul", _ssmm(epilogue="silu_mul", up=torch.zeros(3, R), scale=torch.ones(3)),
         ValueError, "scale"),
    case("kernels.ssmm", "kernel 'tc'", _ssmm(kernel="tc"), ValueError, "kernel"),
    case("kernels.ssmm", "kernel None", _ssmm(kernel=None), ValueError, "kernel"),
    case("kernels.ssmm", "backend 'cpu' with a dense tensor weight", _ssmm(weight=W32, backend="cpu"), ValueError,
         "backend"),
    # ssmm_grouped
    case("kernels.ssmm_grouped", "weights None", _grouped(weights=None), TypeError, "weights"),
    case("kernels.ssmm_grouped", "weights a weight, not a list", _grouped(weights=WS), TypeError, "weights"),
    case("kernels.ssmm_grouped", "weights [None, None]", _grouped(weights=[None, None]), TypeError, "weights"),
    case("kernels.ssmm_grouped", "weights 3 for 2 experts", _grouped(weights=[WS, WS, WS]), ValueError, "weights"),
    case("kernels.ssmm_grouped", "weights of two formats", _grouped(weights=[WS, W24]), ValueError, "weights"),
    case("kernels.ssmm_grouped", "selection None", _grouped(selection=None), TypeError, "selection"),
    case("kernels.ssmm_grouped", "selection a tensor", _grouped(selection=torch.zeros(4, 2, dtype=torch.int64)),
         TypeError, "selection"),
    case("kernels.ssmm_grouped", "x None", _grouped(x=None), TypeError, "x"),
    case("kernels.ssmm_grouped", "x wrong K", _grouped(x=torch.zeros(T, C + 1)), ValueError, "x"),
    case("kernels.ssmm_grouped", "x int dtype", _grouped(x=torch.zeros(T, C, dtype=torch.int16)), TypeError, "x"),
    case("kernels.ssmm_grouped", "x too few rows", _grouped(x=torch.zeros(T - 1, C)), ValueError, "x"),
    case("kernels.ssmm_grouped", "gather=False x rows != positions", _grouped(gather=False), ValueError, "x"),
    case("kernels.ssmm_grouped", "padded 'yes'", _grouped(padded="yes"), TypeError, "padded"),
    case("kernels.ssmm_grouped", "gather 1", _grouped(gather=1), TypeError, "gather"),
    case("kernels.ssmm_grouped", "routing_weights with plain", _grouped(routing_weights=torch.ones(T, 2)),
         ValueError, "routing_weights"),
    case("kernels.ssmm_grouped", "routing_weights wrong size",
         _grouped(epilogue="scatter_add", out=OUT.clone(), routing_weights=torch.ones(T, 3)), ValueError,
         "routing_weights"),
    case("kernels.ssmm_grouped", "routing_weights NaN",
         _grouped(epilogue="scatter_add", out=OUT.clone(), routing_weights=_nan(torch.ones(T, 2))), ValueError,
         "routing_weights"),
    case("kernels.ssmm_grouped", "routing_weights int",
         _grouped(epilogue="scatter_add", out=OUT.clone(), routing_weights=torch.ones(T, 2, dtype=torch.int64)),
         TypeError, "routing_weights"),
    case("kernels.ssmm_grouped", "routing_weights a list",
         _grouped(epilogue="scatter_add", out=OUT.clone(), routing_weights=[1.0] * 8), TypeError, "routing_weights"),
    case("kernels.ssmm_grouped", "epilogue 'relu'", _grouped(epilogue="relu"), ValueError, "epilogue"),
    case("kernels.ssmm_grouped", "split_k=-3", _grouped(split_k=-3), ValueError, "split_k"),
    case("kernels.ssmm_grouped", "split_k 'auto'", _grouped(split_k="auto"), TypeError, "split_k"),
    case("kernels.ssmm_grouped", "backend 'torch'", _grouped(backend="torch"), ValueError, "backend"),
    case("kernels.ssmm_grouped", "kernel 'wmma'", _grouped(kernel="wmma"), ValueError, "kernel"),
    # choose_ssmm_kernel
    case("kernels.choose_ssmm_kernel", "tokens -1", lambda: K.choose_ssmm_kernel(-1, "float16", "H100"),
         ValueError, "tokens"),
    case("kernels.choose_ssmm_kernel", "tokens '8'", lambda: K.choose_ssmm_kernel("8", "float16", "H100"),
         TypeError, "tokens"),
    case("kernels.choose_ssmm_kernel", "dtype float32", lambda: K.choose_ssmm_kernel(8, torch.float32, "H100"),
         ValueError, "dtype"),
    case("kernels.choose_ssmm_kernel", "device 0", lambda: K.choose_ssmm_kernel(8, "float16", 0), TypeError,
         "device"),
    case("kernels.choose_ssmm_kernel", "records a str", lambda: K.choose_ssmm_kernel(8, "float16", "H100", "abc"),
         TypeError, "records"),
    case("kernels.choose_ssmm_kernel", "records [None]", lambda: K.choose_ssmm_kernel(8, "float16", "H100", [None]),
         TypeError, "records"),
    case("kernels.choose_ssmm_kernel", "records with a bad ms",
         lambda: K.choose_ssmm_kernel(8, "float16", "H100", [dict(op="ssmm_wg", baseline="ssmm", device="H100",
                                                                   dtype="float16", baseline_ms=1.0, ms="x",
                                                                   tokens=8)]),
         ValueError, "records"),
    # cpu_choice
    case("kernels.cpu_choice", "weight None", lambda: K.cpu_choice(None, 8), TypeError, "weight"),
    case("kernels.cpu_choice", "weight a venom weight", lambda: K.cpu_choice(WV, 8), ValueError, "weight"),
    case("kernels.cpu_choice", "tokens -1", lambda: K.cpu_choice(WS, -1), ValueError, "tokens"),
    case("kernels.cpu_choice", "tokens 2.0", lambda: K.cpu_choice(WS, 2.0), TypeError, "tokens"),
    case("kernels.cpu_choice", "dtype int32", lambda: K.cpu_choice(WS, 8, torch.int32), TypeError, "dtype"),
    case("kernels.cpu_choice", "records a dict", lambda: K.cpu_choice(WS, 8, records={"a": 1}), TypeError,
         "records"),
    # compile_source / nvrtc_options
    case("kernels.compile_source", "name 'gemm'", lambda: K.compile_source("gemm", "sm_80"), ValueError, "name"),
    case("kernels.compile_source", "name None", lambda: K.compile_source(None, "sm_80"), TypeError, "name"),
    case("kernels.compile_source", "name a missing .cu", lambda: K.compile_source(Path("/nonexistent/x.cu"), "sm_80"),
         FileNotFoundError, "name"),
    case("kernels.compile_source", "arch sm_70", lambda: K.compile_source("spmm", "sm_70"), ValueError, "arch"),
    case("kernels.compile_source", "arch None", lambda: K.compile_source("spmm", None), ValueError, "arch"),
    case("kernels.compile_source", "extra_options a str", lambda: K.compile_source("spmm", "sm_80",
                                                                                   extra_options="-DX=1"),
         TypeError, "extra_options"),
    case("kernels.compile_source", "extra_options [1]", lambda: K.compile_source("spmm", "sm_80", extra_options=(1,)),
         TypeError, "extra_options"),
    case("kernels.nvrtc_options", "arch sm_75", lambda: K.nvrtc_options("sm_75"), ValueError, "arch"),
    case("kernels.nvrtc_options", "arch 'hopper'", lambda: K.nvrtc_options("hopper"), ValueError, "arch"),
    case("kernels.nvrtc_options", "arch (9,)", lambda: K.nvrtc_options((9,)), ValueError, "arch"),
    case("kernels.nvrtc_options", "arch True", lambda: K.nvrtc_options(True), ValueError, "arch"),
    # the records' dataclasses
    case("kernels.CpuChoice", "mode 'fast'", lambda: K.CpuChoice("fast", "why"), ValueError, "mode"),
    case("kernels.CpuChoice", "reason None", lambda: K.CpuChoice("kernel", None), TypeError, "reason"),
    case("kernels.CpuPath", "isa 'sse'", lambda: K.CpuPath("sse", "why", "cpu"), ValueError, "isa"),
    case("kernels.CpuPath", "reason 3", lambda: K.CpuPath("avx2", 3, "cpu"), TypeError, "reason"),
    case("kernels.CpuPath", "compile_s -1", lambda: K.CpuPath("avx2", "why", "cpu", compile_s=-1.0), ValueError,
         "compile_s"),
]

EXEMPT = {
    "kernels.available": "takes no arguments (a yes/no probe of this machine)",
    "kernels.cpu_path": "takes no arguments (reads the CPU and SAMOYEDS_LAB_CPU_ISA, which has its own test)",
}


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_any_out_of_range_token_id_is_named(v):
    if 0 <= v < T or v == SENTINEL:
        return
    for fn in (lambda: K.ssmm(WS, X, torch.tensor([0, v]), backend="reference"),
               lambda: K.ssmm(WS, X, torch.tensor([0, v]), backend="cpu")):
        with pytest.raises(ValueError, match="token_idx"):
            fn()


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=0))
def test_any_nonpositive_split_k_is_named(v):
    with pytest.raises(ValueError, match="split_k"):
        K.spmm(W24, X, split_k=v, backend="reference")


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 3, SENTINEL]), min_size=0, max_size=6),
       st.sampled_from(["reference", "cpu"]))
def test_valid_random_ids_never_raise(idx, backend):
    y = K.ssmm(WS, X, torch.tensor(idx, dtype=torch.int32), backend=backend)
    assert y.shape == (len(idx), R) and bool(torch.isfinite(y).all())
