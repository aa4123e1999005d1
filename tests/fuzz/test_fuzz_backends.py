"""The same bad input gets the same error on every backend (issue 16).

Two families of backends take the same arguments:

* the kernel ops (``spmm``, ``ssmm``, ``ssmm_grouped``, ``dense_mm``): ``"reference"``, ``"cpu"``, ``"auto"``
  and ``"cupy"``. Every argument is validated before a backend is picked, so even ``"cupy"`` on a machine
  without a GPU answers a bad argument with the argument's error, not with "cupy cannot run here";
  :func:`test_kernel_ops_on_cuda_tensors` repeats the cases with CUDA tensors where a GPU is present;
* the expert paths: ``SwiGLUExperts.forward`` with ``"dense"``, ``"grouped"`` and ``"samoyeds"``,
  ``MoEBlock.forward`` with each backend, and ``HybridExecutor.forward`` (the MoNDE split, dense and
  compressed near side).

Each bad input runs through every backend; the test asserts one error class and one message for all of
them, and that the message names the argument. The good input runs through every backend too (and gives
the same answer), so a backend that fails everything cannot pass.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from samoyeds_lab import kernels as K
from samoyeds_lab.formats import TokenSelection
from samoyeds_lab.kernels.build import KernelUnavailableError
from samoyeds_lab.moe import MoEBlock, SwiGLUExperts
from samoyeds_lab.offload.hybrid import HybridExecutor
from samoyeds_lab.prune import sparsify

NAN = float("nan")
_g = torch.Generator().manual_seed(16)
R, C, T = 32, 64, 5
W32 = torch.randn(R, C, generator=_g)
WEIGHTS = {"2:4": sparsify(W32, "2:4"), "samoyeds": sparsify(W32, "samoyeds", vector=32)}
X = torch.randn(T, C, generator=_g)
IDX = torch.tensor([0, 1, 3, 4], dtype=torch.int32)
SEL = TokenSelection.from_topk(torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0], [0, 1]]), 2, pad_to=1)
KERNEL_BACKENDS = ("reference", "cpu", "auto", "cupy")


def _nan(t: torch.Tensor, i: int = 0) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[i] = NAN
    return t


def _outcome(fn: Callable[[], object]) -> tuple[str, str] | object:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the error is what we compare
        return (type(exc).__name__, str(exc))


# ---------------------------------------------------------------------------------------------- kernel ops
def _inputs(device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    w = W32.to(device, dtype)
    sel = TokenSelection.from_topk(torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0], [0, 1]], device=device), 2, pad_to=1)
    return dict(W32=w, X=X.to(device, dtype), IDX=IDX.to(device), SEL=sel,
                WEIGHTS={"2:4": sparsify(w, "2:4"), "samoyeds": sparsify(w, "samoyeds", vector=32)})


CPU_INPUTS = _inputs()


def _op_call(op: str, weight_kind: str, backend: str, inputs: dict = CPU_INPUTS, **bad):
    w = inputs["WEIGHTS"][weight_kind]
    X, IDX, SEL, W32 = inputs["X"], inputs["IDX"], inputs["SEL"], inputs["W32"]
    if op == "spmm":
        a = dict(weight=w, x=X)
        a.update(bad)
        return lambda: K.spmm(a.pop("weight"), a.pop("x"), backend=backend, **a)
    if op == "ssmm":
        a = dict(weight=w, x=X, token_idx=IDX)
        a.update(bad)
        return lambda: K.ssmm(a.pop("weight"), a.pop("x"), a.pop("token_idx"), backend=backend, **a)
    if op == "ssmm_grouped":
        a = dict(weights=[w, w], x=X, selection=SEL)
        a.update(bad)
        return lambda: K.ssmm_grouped(a.pop("weights"), a.pop("x"), a.pop("selection"), backend=backend, **a)
    a = dict(weight=W32, x=X, token_idx=IDX)
    a.update(bad)
    return lambda: K.dense_mm(a.pop("weight"), a.pop("x"), a.pop("token_idx"), backend=backend, **a)


#: (op, label, bad kwargs, the argument the message must name)
KERNEL_CASES = [
    ("spmm", "x None", dict(x=None), "x"),
    ("spmm", "x wrong width", dict(x=torch.zeros(T, C + 4)), "x"),
    ("spmm", "x int", dict(x=torch.zeros(T, C, dtype=torch.int32)), "x"),
    ("spmm", "x 3-D", dict(x=torch.zeros(1, T, C)), "x"),
    ("spmm", "x NaN", dict(x=_nan(X)), "x"),
    ("spmm", "split_k 0", dict(split_k=0), "split_k"),
    ("spmm", "split_k -3", dict(split_k=-3), "split_k"),
    ("spmm", "split_k 1.5", dict(split_k=1.5), "split_k"),
    ("spmm", "weight None", dict(weight=None), "weight"),
    ("spmm", "weight a list", dict(weight=[[1.0]]), "weight"),
    ("ssmm", "token_idx out of range", dict(token_idx=torch.tensor([0, T], dtype=torch.int32)), "token_idx"),
    ("ssmm", "token_idx -2", dict(token_idx=torch.tensor([-2], dtype=torch.int32)), "token_idx"),
    ("ssmm", "token_idx float", dict(token_idx=torch.tensor([0.0])), "token_idx"),
    ("ssmm", "token_idx 2-D", dict(token_idx=torch.zeros(1, 2, dtype=torch.int32)), "token_idx"),
    ("ssmm", "token_idx a list", dict(token_idx=[0, 1]), "token_idx"),
    ("ssmm", "x wrong width", dict(x=torch.zeros(T, C - 4)), "x"),
    ("ssmm", "epilogue 'gelu'", dict(epilogue="gelu"), "epilogue"),
    ("ssmm", "silu_mul without up", dict(epilogue="silu_mul"), "up"),
    ("ssmm", "silu_mul up wrong shape", dict(epilogue="silu_mul", up=torch.zeros(3, R)), "up"),
    ("ssmm", "x inf", dict(x=X.index_fill(0, torch.tensor([2]), float("inf"))), "x"),
    ("ssmm", "scatter_add without out", dict(epilogue="scatter_add"), "out"),
    ("ssmm", "scatter_add out wrong width", dict(epilogue="scatter_add", out=torch.zeros(T, R + 1)), "out"),
    ("ssmm", "scatter_add scale NaN",
     dict(epilogue="scatter_add", out=torch.zeros(T, R), scale=_nan(torch.ones(len(IDX)))), "scale"),
    ("ssmm", "scatter_add scale wrong length",
     dict(epilogue="scatter_add", out=torch.zeros(T, R), scale=torch.ones(2)), "scale"),
    ("ssmm", "kernel 'tensor_core'", dict(kernel="tensor_core"), "kernel"),
    ("ssmm", "split_k True", dict(split_k=True), "split_k"),
    ("ssmm_grouped", "weights empty", dict(weights=[]), "weights"),
    ("ssmm_grouped", "one weight for two experts", dict(weights=[WEIGHTS["samoyeds"]]), "weights"),
    ("ssmm_grouped", "selection None", dict(selection=None), "selection"),
    ("ssmm_grouped", "routing_weights NaN", dict(epilogue="scatter_add", out=torch.zeros(T, R),
                                                 routing_weights=_nan(torch.ones(T, 2))), "routing_weights"),
    ("ssmm_grouped", "padded 'yes'", dict(padded="yes"), "padded"),
    ("ssmm_grouped", "gather 1", dict(gather=1), "gather"),
    ("dense_mm", "weight 1-D", dict(weight=torch.zeros(C)), "weight"),
    ("dense_mm", "weight int", dict(weight=torch.zeros(R, C, dtype=torch.int64)), "weight"),
    ("dense_mm", "token_idx out of range", dict(token_idx=torch.tensor([T], dtype=torch.int32)), "token_idx"),
    ("dense_mm", "x wrong width", dict(x=torch.zeros(T, C + 1)), "x"),
]


def _kernel_params():
    for op, label, bad, name in KERNEL_CASES:
        kinds = ("dense",) if op == "dense_mm" else ("2:4", "samoyeds")
        for kind in kinds:
            if op == "ssmm_grouped" and kind == "2:4":
                continue  # the grouped op takes Samoyeds operands only
            yield pytest.param(op, kind, bad, name, id=f"{op}[{kind}]: {label}")


@pytest.mark.parametrize("op, kind, bad, name", list(_kernel_params()))
def test_kernel_ops_give_one_error_on_every_backend(op, kind, bad, name):
    kind = "samoyeds" if kind == "dense" else kind
    got = {b: _outcome(_op_call(op, kind, b, **bad)) for b in KERNEL_BACKENDS}
    first = got["reference"]
    assert isinstance(first, tuple), f"reference accepted the bad input: {first!r}"
    cls, msg = first
    assert cls in ("TypeError", "ValueError", "FormatError"), first
    assert name in msg, f"the message does not name {name!r}: {msg}"
    for b, o in got.items():
        assert o == first, f"backend {b!r} answers {o!r}, the reference {first!r}"


@pytest.mark.parametrize("op, kind", [("spmm", "2:4"), ("spmm", "samoyeds"), ("ssmm", "2:4"),
                                      ("ssmm", "samoyeds"), ("ssmm_grouped", "samoyeds"), ("dense_mm", "samoyeds")])
def test_kernel_ops_good_input_same_answer_on_every_cpu_backend(op, kind):
    """The good input runs on reference / cpu / auto with one answer; "cupy" refuses the CPU tensors
    (or says it cannot run here) — the only difference between backends is whether they can run."""
    ref = _op_call(op, kind, "reference")()
    for b in ("cpu", "auto"):
        torch.testing.assert_close(_op_call(op, kind, b)(), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises((ValueError, KernelUnavailableError), match="backend"):
        _op_call(op, kind, "cupy")()


@pytest.mark.gpu
@pytest.mark.parametrize("op, kind, bad, name", list(_kernel_params()))
def test_kernel_ops_on_cuda_tensors(op, kind, bad, name):
    """With a GPU: the same bad inputs on CUDA tensors, "cupy" against the reference on the same device."""
    if not K.available():
        pytest.skip("needs an SM80+ NVIDIA GPU with CuPy")
    kind = "samoyeds" if kind == "dense" else kind

    def cuda(v):  # the bad value on the GPU, in the kernels' dtype where it is a float tensor
        if isinstance(v, torch.Tensor):
            return v.to("cuda", torch.float16) if v.is_floating_point() else v.cuda()
        return [cuda(u) for u in v] if isinstance(v, list) else v

    inputs = _inputs("cuda", torch.float16)
    badc = {k: cuda(v) for k, v in bad.items()}
    got = {b: _outcome(_op_call(op, kind, b, inputs, **badc)) for b in ("reference", "auto", "cupy")}
    first = got["reference"]
    assert isinstance(first, tuple) and name in first[1], first
    assert all(o == first for o in got.values()), got


# ---------------------------------------------------------------------------------------------- expert paths
E, H, I, KK = 4, 64, 64, 2
_ge = torch.Generator().manual_seed(61)
torch.manual_seed(61)
EXPERTS = SwiGLUExperts(E, H, I)
EXPERTS.sparsify("samoyeds", vector=32)  # every backend computes on the same pruned weights
XE = torch.randn(T, H, generator=_ge)
IDS = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0], [0, 2]])
WTS = torch.full((T, KK), 0.5)
ON_GPU = [True, False, True, False]


def _expert_paths() -> dict[str, Callable[..., torch.Tensor]]:
    paths: dict[str, Callable[..., torch.Tensor]] = {
        f"SwiGLUExperts/{b}": (lambda b: lambda x, i, w: EXPERTS(x, i, w, backend=b))(b)
        for b in ("dense", "grouped", "samoyeds")
    }
    for fmt in ("dense", "compressed"):
        def hybrid(x, i, w, fmt=fmt):
            with HybridExecutor(EXPERTS, near_format=fmt) as hx:
                return hx.forward(x, i, w, ON_GPU).output
        paths[f"HybridExecutor/near {fmt}"] = hybrid
    return paths


PATHS = _expert_paths()

#: (label, x, topk_ids, topk_weights, the argument the message must name)
EXPERT_CASES = [
    ("x None", None, IDS, WTS, "x"),
    ("x 1-D", XE[0], IDS, WTS, "x"),
    ("x wrong hidden", torch.zeros(T, H + 1), IDS, WTS, "x"),
    ("x int", torch.zeros(T, H, dtype=torch.int64), IDS, WTS, "x"),
    ("x fp16 with fp32 experts", XE.half(), IDS, WTS, "x"),
    ("x NaN", _nan(XE, 7), IDS, WTS, "x"),
    ("x inf", XE.index_fill(0, torch.tensor([1]), float("inf")), IDS, WTS, "x"),
    ("topk_ids a list", XE, IDS.tolist(), WTS, "topk_ids"),
    ("topk_ids float", XE, IDS.float(), WTS, "topk_ids"),
    ("topk_ids out of range", XE, IDS + 1, WTS, "topk_ids"),
    ("topk_ids negative", XE, IDS - 1, WTS, "topk_ids"),
    ("duplicate ids per token", XE, torch.tensor([[0, 0]] * T), WTS, "topk_ids"),
    ("topk_ids rows differ from x", XE, IDS[:3], WTS[:3], "topk_ids"),
    ("topk_ids 1-D", XE, IDS[:, 0], WTS[:, 0], "topk_ids"),
    ("topk_weights NaN", XE, IDS, _nan(WTS, 3), "topk_weights"),
    ("topk_weights -inf", XE, IDS, WTS.index_fill(0, torch.tensor([2]), -float("inf")), "topk_weights"),
    ("topk_weights int", XE, IDS, torch.ones(T, KK, dtype=torch.int64), "topk_weights"),
    ("topk_weights shape differs", XE, IDS, WTS[:, :1], "topk_weights"),
]


@pytest.mark.parametrize("label, x, i, w, name", EXPERT_CASES, ids=[c[0] for c in EXPERT_CASES])
def test_expert_paths_give_one_error_on_every_backend(label, x, i, w, name):
    got = {p: _outcome(lambda f=f: f(x, i, w)) for p, f in PATHS.items()}
    first = got["SwiGLUExperts/dense"]
    assert isinstance(first, tuple), f"the dense path accepted the bad input ({label})"
    assert first[0] in ("TypeError", "ValueError"), first
    assert first[1].startswith(name) or f"{name}:" in first[1] or f"{name}," in first[1], first
    for p, o in got.items():
        assert o == first, f"{p} answers {o!r}; SwiGLUExperts/dense {first!r}"


def test_expert_paths_good_input_same_answer():
    ref = PATHS["SwiGLUExperts/dense"](XE, IDS, WTS)
    for p, f in PATHS.items():
        torch.testing.assert_close(f(XE, IDS, WTS), ref, rtol=1e-4, atol=1e-5, msg=p)


@pytest.mark.parametrize("label, x, name", [
    ("x None", None, "x"), ("x wrong hidden", torch.zeros(2, 3, H + 1), "x"),
    ("x int", torch.zeros(2, H, dtype=torch.int64), "x"), ("x NaN", _nan(XE, 4), "x"),
    ("x fp16 with fp32 weights", XE.half(), "x"),
])
def test_moe_block_gives_one_error_on_every_backend(label, x, name):
    torch.manual_seed(3)
    block = MoEBlock(H, I, E, KK)
    block.sparsify("samoyeds", vector=32)
    got = {}
    for b in ("dense", "grouped", "samoyeds"):
        block.backend = b
        got[b] = _outcome(lambda: block(x))
    first = got["dense"]
    assert isinstance(first, tuple) and name in first[1], first
    assert all(o == first for o in got.values()), got


def test_nonfinite_x_is_caught_after_an_in_place_write_and_in_inference_mode():
    """The ops check x's values once per tensor version (the expert paths call them several times on the
    same activations): an in-place NaN after a clean call, or an inference tensor, is still refused."""
    w = WEIGHTS["samoyeds"]
    x = X.clone()
    for b in ("reference", "cpu"):
        K.ssmm(w, x, IDX, backend=b)
    x[1, 3] = NAN
    for b in ("reference", "cpu", "auto"):
        with pytest.raises(ValueError, match="x: expected finite"):
            K.ssmm(w, x, IDX, backend=b)
    with torch.inference_mode():
        xi = X.clone()
        K.ssmm(w, xi, IDX, backend="cpu")
        xi[0, 0] = float("inf")
        with pytest.raises(ValueError, match="x: expected finite"):
            K.ssmm(w, xi, IDX, backend="cpu")
