"""Launch plans (:mod:`samoyeds_lab.kernels.plan`): the timed region is kernel launches only.

A fake ``cupy`` module (injected into ``sys.modules``) counts every call a plan could make: kernel
launches, ``RawModule.get_function``, ``cupy.asarray`` / ``array`` / ``from_dlpack`` / ``asnumpy``,
stream and device synchronisation, runtime copies. torch is watched by a ``TorchDispatchMode`` (any aten
op: an allocation, a copy, a ``.item()`` read) and a ``TorchFunctionMode`` (any torch call at all). The plan
is built on CPU tensors with the op-level CuPy helpers replaced as in :mod:`tests.kernels.test_launch`.

Launches per run: 1 (the main kernel) without split-K; 2 (main + ``*_finalize``) with split-K > 1; 0 for a
call with nothing to compute.
"""

from __future__ import annotations

import sys
import types
from collections import Counter

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from samoyeds_lab import tiles
from samoyeds_lab.formats import SENTINEL, compress_nm, compress_samoyeds
from samoyeds_lab.kernels import ops
from samoyeds_lab.kernels.launch import finalize_blocks
from samoyeds_lab.prune import samoyeds_mask
from samoyeds_lab.kernels.plan import KernelPlan, dense_mm_plan, spmm_plan, ssmm_plan

from .test_launch import install_recorder, zero_24, zero_samoyeds


# ------------------------------------------------------------------ a CuPy that counts
class FakeCupy(types.ModuleType):
    """Just enough of CuPy's surface for the plan and the ops; every entry point counts its calls."""

    def __init__(self):
        super().__init__("cupy")
        self.calls: Counter = Counter()
        self.launched: list[tuple] = []
        fake = self

        class Kernel:
            def __init__(self, name):
                self.name = name

            def __setattr__(self, key, value):
                if key == "max_dynamic_shared_size_bytes":
                    fake.calls["set_attribute"] += 1
                object.__setattr__(self, key, value)

            def __call__(self, grid, block, args, shared_mem=0, stream=None):
                fake.calls["launch"] += 1
                fake.launched.append((self.name, tuple(grid), tuple(block), tuple(args), shared_mem, stream))

        class RawModule:
            def __init__(self, *a, **k):
                fake.calls["RawModule"] += 1

            def get_function(self, name):
                fake.calls["get_function"] += 1
                return Kernel(name)

        class Stream:
            def __init__(self, *a, **k):
                fake.calls["Stream"] += 1

            def synchronize(self):
                fake.calls["synchronize"] += 1

            def begin_capture(self, *a, **k):
                fake.calls["begin_capture"] += 1

            def end_capture(self, *a, **k):
                fake.calls["end_capture"] += 1

        class ExternalStream(Stream):
            def __init__(self, handle, *a, **k):
                fake.calls["ExternalStream"] += 1

        class Device:
            def __init__(self, *a, **k):
                self.id = 0

            def synchronize(self):
                fake.calls["synchronize"] += 1

        def counter(name):
            def f(*a, **k):
                fake.calls[name] += 1
                return a[0] if a else None
            return f

        runtime = types.SimpleNamespace(**{n: counter(n) for n in (
            "memcpy", "memcpyAsync", "deviceSynchronize", "streamSynchronize", "getDeviceProperties")})
        self.cuda = types.SimpleNamespace(Stream=Stream, ExternalStream=ExternalStream, Device=Device, runtime=runtime)
        self.RawModule = RawModule
        for n in ("asarray", "array", "from_dlpack", "asnumpy", "ascontiguousarray", "fromDlpack", "empty", "zeros"):
            setattr(self, n, counter(n))

    def host_work(self) -> Counter:
        """Every counted call that is not a kernel launch."""
        return Counter({k: v for k, v in self.calls.items() if k != "launch" and v})


class TorchOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class TorchCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def fake_cupy(monkeypatch):
    """The fake CuPy in ``sys.modules``, ``ops`` launching through it (plans) or into a recorder (ops)."""
    rec = install_recorder(monkeypatch)
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(ops, "load_module", lambda module, arch: fake.RawModule())
    monkeypatch.setattr(ops, "device_arch", lambda: "90a")
    monkeypatch.setattr("samoyeds_lab.kernels.plan._stream_handle", lambda device: 0)
    fake.recorder = rec
    return fake


# ------------------------------------------------------------------ the calls under test
def _samoyeds(rows=64, cols=256, vector=64, dtype=torch.float16, device="cpu"):
    g = torch.Generator().manual_seed(rows * 7 + cols)
    w = torch.randn(rows, cols, generator=g)
    dense = (w * samoyeds_mask(w.abs(), 1, 2, vector)).to(dtype).to(device)
    return compress_samoyeds(dense, n=1, m=2, vector=vector)


def _x(rows, cols, dtype=torch.float16, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)


IDX = torch.tensor([3, SENTINEL, 0, 8, 8, 1], dtype=torch.int32)


def _cases():
    """(id, build plan, expected launches per run)."""
    w = zero_samoyeds(64, 256, vector=64)
    x = torch.zeros(9, 256, dtype=torch.float16)
    return [
        ("ssmm-plain-split1", lambda: ssmm_plan(w, x, IDX, split_k=1), 1),
        ("ssmm-plain-split2", lambda: ssmm_plan(w, x, IDX, split_k=2), 2),
        ("ssmm-plain-split4", lambda: ssmm_plan(w, x, IDX, split_k=4), 2),
        ("ssmm-silu-split2", lambda: ssmm_plan(w, x, IDX, epilogue="silu_mul",
                                               up=torch.zeros(6, 64, dtype=torch.float16), split_k=2), 2),
        ("ssmm-scatter-split1", lambda: ssmm_plan(w, x, IDX, epilogue="scatter_add", out=torch.zeros(9, 64),
                                                  scale=torch.rand(6), split_k=1), 1),
        ("ssmm-nogather", lambda: ssmm_plan(w, x, None, split_k=3), 2),
        ("ssmm-24", lambda: ssmm_plan(zero_24(40, 96), torch.zeros(5, 96, dtype=torch.float16), None, split_k=1), 1),
        ("spmm-24-split2", lambda: spmm_plan(zero_24(40, 96), torch.zeros(5, 96, dtype=torch.float16), split_k=2), 2),
        ("spmm-samoyeds", lambda: spmm_plan(w, x, split_k=1), 1),
        ("dense-split2", lambda: dense_mm_plan(torch.zeros(40, 96, dtype=torch.bfloat16),
                                               torch.zeros(9, 96, dtype=torch.bfloat16), IDX, split_k=2), 2),
        ("dense-empty", lambda: dense_mm_plan(torch.zeros(40, 96, dtype=torch.bfloat16),
                                              torch.zeros(9, 96, dtype=torch.bfloat16), IDX[:0]), 0),
    ]


CASES = [pytest.param(build, n, id=name) for name, build, n in _cases()]


@pytest.mark.parametrize("build,per_run", CASES)
def test_run_is_kernel_launches_only(fake_cupy, build, per_run):
    plan = build()
    assert isinstance(plan, KernelPlan) and plan.launches_per_run == per_run
    # building did the host work: one function handle per launch, nothing fetched twice
    assert fake_cupy.calls["get_function"] == per_run
    assert fake_cupy.calls["launch"] == 0
    fake_cupy.calls.clear()
    dispatch, functions = TorchOps(), TorchCalls()
    runs = 3
    with dispatch, functions:
        for _ in range(runs):
            got = plan.run()
    assert got is plan.out
    assert fake_cupy.calls["launch"] == runs * per_run
    assert fake_cupy.host_work() == Counter(), f"host work inside run(): {dict(fake_cupy.host_work())}"
    assert dispatch.ops == [] and functions.calls == [], (dispatch.ops, functions.calls)
    names = [lau[0] for lau in fake_cupy.launched]
    assert names == [s.fn for s in plan.specs] * runs


def test_the_op_itself_does_host_work_per_call(fake_cupy, monkeypatch):
    """The counter catches what the plan avoids: the op wraps every tensor for CuPy on every call."""
    monkeypatch.setattr(ops, "_cp", _ORIG_CP)
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    ops.ssmm(w, x, IDX, split_k=2, backend="cupy")
    first = fake_cupy.calls["from_dlpack"]
    ops.ssmm(w, x, IDX, split_k=2, backend="cupy")
    assert first > 10 and fake_cupy.calls["from_dlpack"] == 2 * first
    dispatch = TorchOps()
    with dispatch:
        ops.ssmm(w, x, IDX, split_k=2, backend="cupy")
    assert dispatch.ops  # token-id checks, tile construction, allocations...


_ORIG_CP = ops._cp


@pytest.mark.parametrize("split_k", [1, 2, 5])
def test_plan_launches_what_the_op_launches(fake_cupy, split_k):
    w = _samoyeds(96, 320, vector=64)
    x = _x(11, 320)
    idx = torch.tensor([10, 0, SENTINEL, 4, 4, 7, 2], dtype=torch.int32)
    ops.ssmm(w, x, idx, split_k=split_k, backend="cupy")
    recorded = fake_cupy.recorder.launches
    plan = ssmm_plan(w, x, idx, split_k=split_k)
    plan.run()
    assert len(recorded) == plan.launches_per_run == len(fake_cupy.launched)
    for r, (name, grid, block, args, smem, _) in zip(recorded, fake_cupy.launched):
        assert (r.fn, r.grid, r.block, r.smem) == (name, grid, block[0], smem)
        assert len(r.args) == len(args)
        for a_op, a_plan in zip(r.args, args):
            if isinstance(a_op, torch.Tensor):
                assert isinstance(a_plan, np.uint64) and int(a_plan) != 0
            elif a_op is None:
                assert a_plan == np.uint64(0)
            else:
                assert type(a_op) is type(a_plan) and a_op == a_plan
    # the operands the user handed in are passed by their own pointers
    ptrs = [int(a) for a in fake_cupy.launched[0][3][:4]]
    assert ptrs[3] == x.data_ptr() and ptrs[2] == w.row_index.data_ptr()


def test_token_tiles_are_built_on_the_device_by_the_plan(fake_cupy):
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    idx = torch.arange(150, dtype=torch.int32) % 9
    plan = ssmm_plan(w, x, idx, split_k=1)
    main = plan.specs[0]
    te, ts, tc = main.args[7:10]
    assert te.tolist() == [0, 0, 0]
    assert ts.tolist() == [0, tiles.BLOCK_N, 2 * tiles.BLOCK_N]
    assert tc.tolist() == [tiles.BLOCK_N, tiles.BLOCK_N, 150 - 2 * tiles.BLOCK_N]
    assert main.grid[1] == 3


def test_finalize_launch_geometry(fake_cupy):
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    plan = ssmm_plan(w, x, IDX, split_k=2)
    fin = plan.specs[1]
    assert fin.fn == plan.specs[0].fn + "_finalize"
    assert fin.grid == (finalize_blocks(IDX.numel() * 64), 1, 1) and fin.block == 256 and fin.smem == 0


def test_new_x_of_the_same_layout_swaps_its_pointer(fake_cupy):
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    plan = ssmm_plan(w, x, IDX, split_k=2)
    x2 = torch.ones(9, 256, dtype=torch.float16)
    fake_cupy.calls.clear()
    dispatch = TorchOps()
    with dispatch:
        plan.run(x2)
    assert dispatch.ops == [] and fake_cupy.host_work() == Counter()
    main_args = fake_cupy.launched[0][3]
    assert int(main_args[3]) == x2.data_ptr() != x.data_ptr()
    plan.run()  # keeps the last x
    assert int(fake_cupy.launched[-plan.launches_per_run][3][3]) == x2.data_ptr()


@pytest.mark.parametrize("bad,err,what", [
    (torch.zeros(10, 256, dtype=torch.float16), ValueError, "x: expected shape (9, 256)"),
    (torch.zeros(9, 256, dtype=torch.bfloat16), ValueError, "torch.float16"),
    (torch.zeros(9, 512, dtype=torch.float16)[:, :256], ValueError, "strides (256, 1)"),
    (np.zeros((9, 256), dtype=np.float16), TypeError, "x: expected a torch.Tensor"),
])
def test_changed_x_is_refused_by_name(fake_cupy, bad, err, what):
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    plan = ssmm_plan(w, x, IDX)
    with pytest.raises(err) as exc:
        plan.run(bad)
    assert what in str(exc.value)
    assert fake_cupy.calls["launch"] == 0


def test_plan_checks_arguments_like_the_op(fake_cupy):
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    with pytest.raises(ValueError, match="token_idx"):
        ssmm_plan(w, x, torch.tensor([0, 9], dtype=torch.int32))
    with pytest.raises(ValueError, match="x: .*finite"):
        ssmm_plan(w, torch.full((9, 256), float("nan"), dtype=torch.float16), IDX)
    with pytest.raises(ValueError, match="kernel"):
        ssmm_plan(w, x, IDX, kernel="fast")
    with pytest.raises(ValueError, match="split_k"):
        ssmm_plan(w, x, IDX, split_k=0)
    with pytest.raises(ValueError, match="backend: 'cupy' does not support"):
        ssmm_plan(compress_nm(torch.zeros(8, 32, dtype=torch.float32)), torch.zeros(2, 32), None)
    assert fake_cupy.calls["get_function"] == 0


def test_plan_refuses_without_a_gpu():
    """No fake here: on this machine the plan says why the CuPy kernels cannot run."""
    if ops.available():
        pytest.skip("a GPU is here")
    w, x = zero_samoyeds(64, 256, vector=64), torch.zeros(9, 256, dtype=torch.float16)
    with pytest.raises(Exception, match="backend: 'cupy' cannot run here"):
        ssmm_plan(w, x, IDX)


# ------------------------------------------------------------------ on a GPU: the same answer as the op
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("epilogue", ["plain", "silu_mul", "scatter_add"])
def test_plan_equals_the_op_on_gpu(dtype, split_k, epilogue):
    if not ops.available():
        pytest.skip("needs an SM80+ GPU with CuPy")
    w = _samoyeds(192, 512, vector=128, dtype=dtype, device="cuda")
    x = _x(19, 512, dtype).cuda()
    idx = torch.tensor([18, 0, SENTINEL, 4, 4, 7, 2, 11, 5], dtype=torch.int32, device="cuda")
    kw = {}
    if epilogue == "silu_mul":
        kw["up"] = _x(idx.numel(), 192, dtype, seed=1).cuda()
    if epilogue == "scatter_add":
        kw.update(out=torch.zeros(19, 192, dtype=torch.float32, device="cuda"),
                  scale=torch.rand(idx.numel(), device="cuda"))
    want = ops.ssmm(w, x, idx, epilogue=epilogue, split_k=split_k, backend="cupy",
                    **{k: (v.clone() if k == "out" else v) for k, v in kw.items()})
    plan = ssmm_plan(w, x, idx, epilogue=epilogue, split_k=split_k, **kw)
    got = plan.run()
    torch.cuda.synchronize()
    # bit for bit, except scatter-add: positions 3 and 4 add into the same row with atomics in either order
    tol = dict(rtol=1e-6, atol=1e-6) if epilogue == "scatter_add" else dict(rtol=0, atol=0)
    torch.testing.assert_close(got, want, **tol)
    x2 = _x(19, 512, dtype, seed=5).cuda()
    if epilogue != "scatter_add":
        torch.testing.assert_close(plan.run(x2).clone(), ops.ssmm(w, x2, idx, epilogue=epilogue, split_k=split_k,
                                                                 backend="cupy", **kw), rtol=0, atol=0)
