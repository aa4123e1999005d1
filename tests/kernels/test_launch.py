"""The Python side of every kernel launch, run on the CPU with the CuPy layer replaced by a recorder.

``samoyeds_lab.kernels.ops`` computes everything a launch needs (token tiles, split-K plan, grid, dynamic
shared memory, the argument tuple) with plain torch before it touches CuPy. The fixture
:func:`recorded_launches` swaps the four CuPy-facing helpers of ``ops`` (``_use_cupy``, ``_device_props``,
``_cp``, ``_launch``/``_finalize``) for recorders, so the real wrappers run here on CPU tensors and every
launch they would make is captured: kernel name, grid, shared memory and the exact argument tuple.
:mod:`tests.kernels.test_index_emulation` feeds those captured arguments to a Python replay of the
kernel's index arithmetic.

What this file proves (no GPU involved):

* token tiles from :class:`TokenSelection` offsets (padded and not) cover every position of every expert
  exactly once, never cross an expert boundary, give empty experts no tile, and handle 0 and 1 tokens;
  padding positions only ever become SENTINEL (zero) B rows;
* split-K plans start on window boundaries and cover K exactly once for any (cols, vector, splits),
  including more splits than windows;
* the argument tuples match the ``extern "C"`` signatures of the .cu entry points (count, order, types);
* grids stay within CUDA's limits for the largest bench shapes and a too-large grid is a clear error;
* the launcher's dynamic shared memory equals the layout the .cu carves out of ``smem`` and fits
  227 KB (H100) / 163 KB (A100) for the default tiles; a pattern that does not fit is refused clearly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from samoyeds_lab import tiles
from samoyeds_lab.bench.kernels import MODEL_SHAPES, TOKENS
from samoyeds_lab.formats import SENTINEL, NMWeight, SamoyedsWeight, TokenSelection
from samoyeds_lab.kernels import ops
from samoyeds_lab.kernels.build import ACC_PAD, KERNEL_DIR, tile_defines
from samoyeds_lab.kernels.launch import (GRID_LIMITS, check_grid, device_token_tiles, finalize_blocks, num_token_tiles,
                                         smem_bytes, split_plan, token_tiles)

H100_SMEM = 227 * 1024  # sharedMemPerBlockOptin, H100 SXM
A100_SMEM = 163 * 1024  # sharedMemPerBlockOptin, A100
SMS = 132


# ------------------------------------------------------------------ the CuPy layer, replaced by recorders
@dataclass
class Launch:
    module: str
    fn: str
    grid: tuple[int, int, int]
    smem: int
    args: tuple
    block: int = tiles.THREADS


@dataclass
class Recorder:
    launches: list[Launch] = field(default_factory=list)

    def by_fn(self, fn: str) -> list[Launch]:
        return [launch for launch in self.launches if launch.fn == fn]


def _fake_cp(t):
    """What ops._cp hands CuPy, as torch: NULL → None, 16-bit floats → int16, uint32 → int32 (zero-copy views)."""
    if t is None:
        return None
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16)
    if t.dtype == torch.uint32:
        return t.view(torch.int32)
    return t.detach()


def install_recorder(monkeypatch, sms: int = SMS, smem_limit: int = H100_SMEM) -> Recorder:
    """Make ``ops`` launch into a :class:`Recorder` instead of CuPy (CPU tensors accepted as "device")."""
    rec = Recorder()

    def use_cupy(backend, tensors, unsupported):
        if backend == "reference":
            return False
        if unsupported is not None:
            raise ValueError(f"backend: 'cupy' does not support this call: {unsupported}")
        return True

    def launch(module, fn, grid, smem, args):
        rec.launches.append(Launch(module, fn, check_grid(grid), int(smem), tuple(args)))

    def finalize(module, fn, total, args):
        # NOTE: transcribed from ops._finalize (checked verbatim by test_finalize_grid_formula_is_ops)
        blocks = max(1, min(-(-total // 256), 65535))
        rec.launches.append(Launch(module, fn + "_finalize", (blocks, 1, 1), 0, tuple(args), block=256))

    monkeypatch.setattr(ops, "_use_cupy", use_cupy)
    monkeypatch.setattr(ops, "_device_props", lambda: (smem_limit, sms))
    monkeypatch.setattr(ops, "_smem_limit", lambda: smem_limit)
    monkeypatch.setattr(ops, "_cp", _fake_cp)
    monkeypatch.setattr(ops, "_launch", launch)
    monkeypatch.setattr(ops, "_finalize", finalize)
    monkeypatch.setattr(ops, "_arch", lambda: "90a")  # an H100: kernel="auto" consults the recorded choice
    monkeypatch.setattr(ops, "_device_name", lambda: "NVIDIA H100 80GB HBM3")
    ops._auto_choice.cache_clear()  # kernel="auto" decisions are cached per process; tests patch the records
    return rec


@pytest.fixture
def recorded_launches(monkeypatch) -> Recorder:
    return install_recorder(monkeypatch)


def test_finalize_grid_formula_is_ops():
    import inspect

    assert "blocks = max(1, min(-(-total // 256), 65535))" in inspect.getsource(ops._finalize)
    assert "kern((blocks,), (256,), args, stream=stream)" in inspect.getsource(ops._finalize)


# ------------------------------------------------------------------ cheap operands of any size (zeros)
def zero_samoyeds(rows: int, cols: int, n: int = 1, m: int = 2, vector: int = 128,
                  dtype=torch.float16) -> SamoyedsWeight:
    """A valid all-zero Samoyeds weight without running the compressor (bench-sized shapes stay cheap)."""
    crows = rows // m * n
    positions = torch.tensor([0, 1], dtype=torch.uint8).repeat(crows, cols // 4)
    row_index = torch.arange(n, dtype=torch.uint8).repeat(cols // vector, crows // n)
    return SamoyedsWeight(torch.zeros(crows, cols // 2, dtype=dtype), positions, row_index, n, m, vector, (rows, cols))


def zero_24(rows: int, cols: int, dtype=torch.float16) -> NMWeight:
    positions = torch.tensor([0, 1], dtype=torch.uint8).repeat(rows, cols // 4)
    return NMWeight(torch.zeros(rows, cols // 2, dtype=dtype), positions, 2, 4, (rows, cols))


# ------------------------------------------------------------------ token tiles
def _selections():
    g = torch.Generator().manual_seed(0)
    out = []
    for tokens, k, experts in [(0, 2, 4), (1, 1, 3), (1, 2, 4), (5, 2, 4), (70, 2, 8), (200, 4, 16), (129, 1, 2)]:
        topk = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]) if tokens else \
            torch.zeros(0, k, dtype=torch.int64)
        if tokens > 4:
            topk[topk == experts - 1] = -1  # the last expert gets nothing: empty segment
            topk = torch.where(topk < 0, (topk.max(1, keepdim=True).values + 1) % (experts - 1), topk)
            topk = torch.where((topk[:, :1] == topk).sum(1, keepdim=True) > 1, torch.arange(k).expand(tokens, k), topk)
        for pad_to in (1, 8, tiles.BLOCK_N):
            out.append(pytest.param(topk, experts, pad_to, id=f"t{tokens}-k{k}-e{experts}-pad{pad_to}"))
    return out


def tile_positions(tt, block_n=tiles.BLOCK_N):
    """(expert, position, tile id's n) of every B row a launch computes, replaying the kernel's tok_s loop."""
    out = []
    for y, (e, s, c) in enumerate(zip(tt.expert.tolist(), tt.start.tolist(), tt.count.tolist())):
        for n in range(block_n):  # for (int n = tid; n < BLOCK_N; n += THREADS)
            out.append((y, e, s + n if n < c else None))  # n >= cnt: SENTINEL row
    return out


@pytest.mark.parametrize("topk,experts,pad_to", _selections())
def test_grouped_token_tiles_partition_every_expert(topk, experts, pad_to):
    sel = TokenSelection.from_topk(topk, experts, pad_to=pad_to)
    for padded in (True, False):
        offs = (sel.padded_offsets if padded else sel.offsets).tolist()
        ids = (sel.padded_token_ids if padded else sel.token_ids).tolist()
        tt = token_tiles(sel.padded_offsets if padded else sel.offsets)
        assert tt.expert.dtype == tt.start.dtype == tt.count.dtype == torch.int32
        seen = {}
        for y, e, p in tile_positions(tt):
            if p is None:
                continue
            assert offs[e] <= p < offs[e + 1], f"tile {y} of expert {e} reads position {p} of another expert"
            assert p not in seen, f"position {p} computed twice (tiles {seen.get(p)} and {y})"
            seen[p] = y
        assert sorted(seen) == list(range(offs[-1]))  # every position exactly once
        counts = [offs[e + 1] - offs[e] for e in range(experts)]
        per_expert = torch.bincount(tt.expert.long(), minlength=experts).tolist() if len(tt) else [0] * experts
        assert per_expert == [tiles.ceil_div(c, tiles.BLOCK_N) for c in counts]  # empty expert: no tile
        assert all(1 <= c <= tiles.BLOCK_N for c in tt.count.tolist())
        # every real (token, expert) pair sits at a position whose tile belongs to that expert
        real = {(ids[p], e) for p, e in ((p, tt.expert[seen[p]].item()) for p in seen) if ids[p] != SENTINEL}
        want = {(t, int(topk[t, j])) for t in range(topk.shape[0]) for j in range(topk.shape[1])}
        assert real == want
        # padding positions exist only in padded mode and only as SENTINEL ids (zero B rows in the kernel)
        pads = [p for p in seen if ids[p] == SENTINEL]
        assert (len(pads) == int(sel.padded_offsets[-1] - sel.offsets[-1])) if padded else not pads


@pytest.mark.parametrize("tokens", [0, 1, 2])
def test_grouped_launch_tiles_for_zero_one_two_tokens(recorded_launches, tokens):
    sel = TokenSelection.from_topk(torch.tensor([[1, 2], [2, 0]])[:tokens].reshape(tokens, 2), 3, pad_to=64)
    ws = [zero_samoyeds(32, 64, vector=32) for _ in range(3)]
    x = torch.zeros(max(tokens, 1), 64, dtype=torch.float16)
    y = ops.ssmm_grouped(ws, x, sel, backend="cupy")
    assert tuple(y.shape) == (int(sel.padded_offsets[-1]), 32)
    if tokens == 0:
        assert not recorded_launches.launches  # nothing to compute: no launch with an empty grid
        return
    (launch,) = recorded_launches.by_fn("ssmm_f16")
    te, ts, tc = (launch.args[i] for i in (7, 8, 9))
    assert launch.grid[1] == te.numel()
    assert te.tolist() == sel.counts.nonzero().flatten().tolist()  # one 64-tile per non-empty expert
    assert ts.tolist() == sel.padded_offsets[:-1][sel.counts > 0].tolist()
    assert tc.tolist() == [tiles.BLOCK_N] * te.numel()


def test_token_tiles_errors_and_custom_block():
    with pytest.raises(ValueError, match="offsets"):
        token_tiles(torch.tensor([0, 4, 2]))
    tt = token_tiles([0, 5, 5, 12], block_n=4)
    assert tt.expert.tolist() == [0, 0, 2, 2] and tt.start.tolist() == [0, 4, 5, 9] and tt.count.tolist() == [4, 1, 4, 3]
    assert len(token_tiles([0])) == 0 and len(token_tiles([3, 3])) == 0


@pytest.mark.parametrize("offsets", [[0, 0], [0, 1], [0, 63], [0, 64], [0, 65], [0, 1000], [0, 5, 5, 12],
                                     [0, 0, 70, 70, 200], [3, 3], [2, 9]])
@pytest.mark.parametrize("block_n", [4, tiles.BLOCK_N])
def test_device_token_tiles_equal_the_host_tiles(offsets, block_n):
    """One segment is built on the device (arange + clamp), several are cut on the host and copied once:
    either way the tiles are exactly :func:`token_tiles`, int32, and their count is num_token_tiles."""
    want = token_tiles(offsets, block_n)
    got = device_token_tiles(offsets, "cpu", block_n)
    for a, b in ((got.expert, want.expert), (got.start, want.start), (got.count, want.count)):
        assert a.dtype == torch.int32 and a.is_contiguous() and a.tolist() == b.tolist()
    assert num_token_tiles(offsets, block_n) == len(want)


def test_device_token_tiles_copy_once_for_many_experts(monkeypatch):
    copies = []
    orig = torch.Tensor.to

    def counting_to(self, *a, **k):
        copies.append(tuple(self.shape))
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    device_token_tiles([0, 1000], "cpu")
    assert copies == []  # one segment: built where it is used
    device_token_tiles([0, 5, 5, 12], "cpu", block_n=4)
    assert copies == [(3, 4)]  # several: one packed [3, tiles] copy


@pytest.mark.parametrize("total,blocks", [(0, 1), (1, 1), (256, 1), (257, 2), (256 * 65535, 65535), (10**12, 65535)])
def test_finalize_blocks(total, blocks):
    assert finalize_blocks(total) == blocks


# ------------------------------------------------------------------ split-K
def k_ranges(plan, ksteps):
    """[k_begin, k_end) of every z block, as the kernels compute them."""
    out = []
    for z in range(plan.splits):
        k_begin = z * plan.steps_per_split  # const int k_begin = blockIdx.z * steps_per_split;
        k_end = min(ksteps, k_begin + plan.steps_per_split)  # const int k_end = min(ksteps, k_begin + ...);
        out.append((k_begin, k_end))
    return out


@pytest.mark.parametrize("vector", [32, 64, 128, 256])
def test_split_k_on_window_boundaries_for_any_split(vector):
    unit = vector // tiles.MMA_K
    for windows in (1, 2, 3, 5, 7, 16, 48, 128):
        cols = windows * vector
        ksteps = tiles.ceil_div(cols, tiles.MMA_K)
        for split_k in [None, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, windows - 1, windows, windows + 1, 3 * windows, 1000]:
            if split_k is not None and split_k < 1:
                continue
            for blocks in (1, 7, 300):
                plan = split_plan(ksteps, unit, blocks, split_k=split_k, sms=SMS)
                assert 1 <= plan.splits <= GRID_LIMITS[2]
                if split_k is not None:
                    assert plan.splits <= min(split_k, windows)
                ranges = k_ranges(plan, ksteps)
                covered = [k for a, b in ranges for k in range(a, b)]
                assert covered == list(range(ksteps)), (cols, vector, split_k, plan)  # K exactly once
                for a, b in ranges:
                    assert a < b, f"empty split {a}..{b} for {plan}"  # no block without work
                    assert a % unit == 0 and (b % unit == 0 or b == ksteps)  # window boundaries


@pytest.mark.parametrize("cols", [4, 28, 32, 36, 100, 1028, 6144])
def test_split_k_for_plain_24_covers_ragged_k(cols):
    ksteps = tiles.ceil_div(cols, tiles.MMA_K)
    for split_k in (None, 1, 2, 3, ksteps, ksteps + 5):
        plan = split_plan(ksteps, 1, 1, split_k=split_k, sms=SMS)
        assert [k for a, b in k_ranges(plan, ksteps) for k in range(a, b)] == list(range(ksteps))


def test_split_k_auto_policy():
    assert split_plan(192, 4, 1, sms=SMS).splits == 16  # decode: K parallelism up to 16
    assert split_plan(192, 4, 2 * SMS, sms=SMS).splits == 1  # a full grid: no split
    assert split_plan(4, 4, 1, sms=SMS).splits == 1  # one window: cannot split
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="split_k"):
            split_plan(8, 1, 1, split_k=bad)


# ------------------------------------------------------------------ argument tuples vs the .cu signatures
def _entry_params(src: str, macro: str, finalize: bool) -> list[str]:
    body = src[src.index(f"#define {macro}"):]
    body = body.replace("\\\n", "\n")
    start = body.index("NAME##_finalize(") + len("NAME##_finalize(") if finalize else body.index("NAME(") + len("NAME(")
    params = body[start: body.index(")", start)]
    return [" ".join(p.split()) for p in params.split(",")]


_PTR = {"u16": (torch.int16,), "u32": (torch.int32,), "unsigned char": (torch.uint8,), "int": (torch.int32,),
        "float": (torch.float32,), "void": (torch.int16, torch.float32)}


def check_args(params: list[str], args: tuple) -> None:
    assert len(params) == len(args), f"{len(args)} arguments for {len(params)} parameters {params}"
    for p, a in zip(params, args):
        ctype = p.rsplit(" ", 1)[0].replace("const ", "").strip()
        if ctype.endswith("*"):
            assert a is None or isinstance(a, torch.Tensor), f"{p}: got {type(a).__name__}"
            if a is not None:
                assert a.dtype in _PTR[ctype[:-1].strip()], f"{p}: got a {a.dtype} buffer"
                if p.endswith(" x"):  # rows addressed with ldx: only unit stride along K is needed
                    assert a.stride(-1) == 1, f"{p}: expected unit stride along K, got strides {a.stride()}"
                else:
                    assert a.is_contiguous(), f"{p}: the kernel indexes it densely, got strides {a.stride()}"
        elif ctype == "int":
            assert isinstance(a, np.int32), f"{p}: got {type(a).__name__}"
        elif ctype == "long long":
            assert isinstance(a, np.int64), f"{p}: got {type(a).__name__}"
        else:  # pragma: no cover - a new parameter type needs a rule here
            raise AssertionError(f"unknown parameter type {p}")


def _x(rows, cols, dtype=torch.float16):
    return torch.zeros(rows, cols, dtype=dtype)


@pytest.mark.parametrize("split_k", [1, 2])
def test_launch_arguments_match_the_kernel_signatures(recorded_launches, split_k):
    src = {name: (KERNEL_DIR / f"{name}.cu").read_text() for name in ("ssmm", "spmm", "dense_mm")}
    w = zero_samoyeds(64, 256, vector=64)
    x = _x(9, 256)
    idx = torch.tensor([3, SENTINEL, 0, 8], dtype=torch.int32)
    ops.ssmm(w, x, idx, split_k=split_k, backend="cupy")
    ops.ssmm(w, x, idx, epilogue="silu_mul", up=_x(4, 64), split_k=split_k, backend="cupy")
    ops.ssmm(w, x, idx, epilogue="scatter_add", out=torch.zeros(9, 64), scale=torch.rand(4), split_k=split_k,
             backend="cupy")
    ops.spmm(w, x, split_k=split_k, backend="cupy")
    sel = TokenSelection.from_topk(torch.tensor([[0, 1], [1, 2], [2, 0]]), 3)
    ops.ssmm_grouped([w] * 3, x, sel, split_k=split_k, backend="cupy")
    ops.ssmm_grouped([w] * 3, _x(int(sel.padded_offsets[-1]), 256), sel, gather=False, epilogue="scatter_add",
                     out=torch.zeros(3, 64, dtype=torch.float16), routing_weights=torch.rand(3, 2), split_k=split_k,
                     backend="cupy")
    ops.spmm(zero_24(40, 96), _x(5, 96), split_k=split_k, backend="cupy")
    ops.dense_mm(torch.zeros(40, 96, dtype=torch.bfloat16), _x(9, 96, torch.bfloat16), idx, split_k=split_k,
                 backend="cupy")
    assert len(recorded_launches.launches) >= 8
    macro = {"ssmm": "SSMM_ENTRY", "spmm": "SPMM_ENTRY", "dense_mm": "DENSE_ENTRY"}
    for launch in recorded_launches.launches:
        fin = launch.fn.endswith("_finalize")
        check_args(_entry_params(src[launch.module], macro[launch.module], fin), launch.args)
        if not fin:
            assert launch.block == tiles.THREADS and launch.grid[2] == split_k
            assert launch.smem == (smem_bytes(launch.module, launch.args[13], launch.args[14])
                                   if launch.module == "ssmm" else smem_bytes(launch.module))
    assert len([launch for launch in recorded_launches.launches if launch.fn.endswith("_finalize")]) == \
        (0 if split_k == 1 else 8)


# ------------------------------------------------------------------ grid limits at the bench shapes
def _bench_cases():
    for model, (d_model, d_ffn) in MODEL_SHAPES.items():
        for rows, cols in ((d_ffn, d_model), (d_model, d_ffn)):  # up/gate and down projections
            yield pytest.param(rows, cols, id=f"{model}-{rows}x{cols}")


@pytest.mark.parametrize("rows,cols", list(_bench_cases()))
def test_bench_shapes_grids_within_cuda_limits(recorded_launches, monkeypatch, rows, cols):
    monkeypatch.setattr(ops, "_meta_of", lambda w: torch.zeros(1, dtype=torch.int32))  # not read here
    if rows % 2 or cols % 128:
        pytest.skip("not a Samoyeds 1:2 / V=128 shape")
    w = zero_samoyeds(rows, cols)
    w24 = zero_24(rows, cols)
    dense = torch.empty(rows, cols, dtype=torch.float16)
    x1 = _x(1, cols)
    for t in TOKENS:
        recorded_launches.launches.clear()
        idx = torch.zeros(t, dtype=torch.int32)
        ops.ssmm(w, x1, idx, backend="cupy")
        ops.spmm(w24, torch.zeros(t, cols, dtype=torch.float16), backend="cupy")
        ops.dense_mm(dense, x1, idx, backend="cupy")
        for launch in recorded_launches.launches:
            gx, gy, gz = launch.grid
            assert all(1 <= v <= lim for v, lim in zip(launch.grid, GRID_LIMITS)), launch.grid
            if not launch.fn.endswith("_finalize"):
                crows = rows // 2 if launch.module == "ssmm" else rows
                assert gx == tiles.ceil_div(crows, tiles.BLOCK_M) and gy == tiles.ceil_div(t, tiles.BLOCK_N)
                assert gz <= 16 and (gz == 1 or gx * gy < 2 * SMS)  # split-K only where tiles do not fill
                assert launch.smem <= A100_SMEM


def test_grouped_bench_grid_mixtral_8x22b(recorded_launches):
    """4096 tokens, top-2 of 8 experts in one grouped launch: y = Σ_e ceil(count_e / 64) ≤ 65535."""
    g = torch.Generator().manual_seed(0)
    topk = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(4096)])
    sel = TokenSelection.from_topk(topk, 8, pad_to=tiles.TOKEN_PAD)
    d_model, _ = MODEL_SHAPES["Mixtral-8x22B"]
    w = zero_samoyeds(2 * tiles.BLOCK_M, d_model)  # grid y does not depend on rows
    ops.ssmm_grouped([w] * 8, _x(4096, d_model), sel, backend="cupy")
    (launch,) = recorded_launches.by_fn("ssmm_f16")
    assert launch.grid[1] == int(sel.padded_offsets[-1]) // tiles.BLOCK_N <= 8 * 4096 // 64 + 8


def test_too_many_positions_is_a_clear_error(monkeypatch):
    """65535 token tiles is CUDA's gridDim.y limit: one more position must fail before any CuPy call."""
    rec = install_recorder(monkeypatch)
    w = zero_samoyeds(2, 32, vector=32)
    x = _x(1, 32)
    limit = GRID_LIMITS[1] * tiles.BLOCK_N
    ops.ssmm(w, x, torch.zeros(limit, dtype=torch.int32), split_k=1, backend="cupy")
    assert rec.launches[-1].grid == (1, GRID_LIMITS[1], 1)
    monkeypatch.setattr(ops, "_launch", _ORIG_LAUNCH)  # the real one: its check runs before `import cupy`
    with pytest.raises(ValueError, match=r"gridDim.y \(token tiles\) <= 65535, got 65536.*positions per launch"):
        ops.ssmm(w, x, torch.zeros(limit + 1, dtype=torch.int32), split_k=1, backend="cupy")


_ORIG_LAUNCH = ops._launch
_ORIG_USE_CUPY = ops._use_cupy


def test_check_grid():
    assert check_grid((3, 2)) == (3, 2, 1)
    assert check_grid((2**31 - 1, 65535, 65535)) == (2**31 - 1, 65535, 65535)
    for bad, axis in [((0, 1, 1), "x"), ((1, 65536, 1), "y"), ((1, 1, 65536), "z"), ((2**31, 1, 1), "x")]:
        with pytest.raises(ValueError, match=f"gridDim.{axis}"):
            check_grid(bad)
    with pytest.raises(ValueError, match="gridDim.y"):
        _ORIG_LAUNCH("ssmm", "ssmm_f16", (1, 70000, 1), 1024, ())  # raised before CuPy is imported


# ------------------------------------------------------------------ dynamic shared memory vs the .cu layout
def cu_macros(name: str) -> dict[str, int]:
    """Evaluate the integer ``#define``s of ``kernels/<name>.cu`` (after those of the header it includes,
    ``kernels/sptc_common.cuh``) with the loader's ``-D`` values."""
    text = (KERNEL_DIR / "sptc_common.cuh").read_text() + (KERNEL_DIR / f"{name}.cu").read_text()
    env: dict[str, int] = dict(tile_defines())
    for key, expr in re.findall(r"^#define (\w+) (.+?)\s*(?://.*)?$", text, flags=re.M):
        if key in env or not re.fullmatch(r"[\w\s()+\-*/%]+", expr):
            continue
        py = re.sub(r"(?<![/])/(?![/])", "//", expr)
        try:
            env[key] = int(eval(py, {"__builtins__": {}}, dict(env)))  # noqa: S307 - our own source file
        except (NameError, SyntaxError):
            continue
    return env


def cu_smem_layout(name: str, sel_n: int = 1, sel_m: int = 1) -> int:
    """Bytes of ``smem`` the kernel addresses: stages, then tok_s (BLOCK_N ints), then acc_s.

    Every pointer below is asserted verbatim in the source, so a change of layout in the .cu breaks this.
    """
    text = (KERNEL_DIR / f"{name}.cu").read_text()
    for line in ("int* tok_s = (int*)(smem + STAGES * STAGE_BYTES);",
                 "float* acc_s = (float*)(smem + STAGES * STAGE_BYTES + BLOCK_N * 4);",
                 "const int acc_ld = r_tile + ACC_PAD;",
                 "for (int n = tid; n < BLOCK_N; n += THREADS)"):
        assert line in text, f"kernels/{name}.cu changed: {line!r} not found"
    if name == "ssmm":
        assert "const int r_tile = BLOCK_M / sel_n * sel_m;" in text
        assert "for (int i = tid; i < BLOCK_N * acc_ld; i += THREADS) acc_s[i] = 0.0f;" in text
    else:
        assert "const int r_tile = BLOCK_M;" in text
        assert "const int n = wn * WARP_TILE_N + j * MMA_N + 2 * t;" in text  # acc_s rows n < BLOCK_N
    d = cu_macros(name)
    r_tile = d["BLOCK_M"] // sel_n * sel_m
    acc_ld = r_tile + d["ACC_PAD"]
    return d["STAGES"] * d["STAGE_BYTES"] + d["BLOCK_N"] * 4 + d["BLOCK_N"] * acc_ld * 4


def test_cu_macros_parse():
    d = cu_macros("ssmm")
    assert d["A_STAGE_BYTES"] == tiles.BLOCK_M * 16 * 2 and d["THREADS"] == tiles.THREADS
    assert d["M_STAGE_BYTES"] == tiles.BLOCK_M // 16 * 64 and d["ACC_PAD"] == ACC_PAD
    assert cu_macros("dense_mm")["STAGE_BYTES"] == (tiles.BLOCK_M + tiles.BLOCK_N) * tiles.MMA_K * 2


PATTERNS = [(1, 1), (1, 2), (2, 4), (1, 4), (2, 8), (4, 8), (1, 8), (8, 16), (1, 16)]


@pytest.mark.parametrize("sel_n,sel_m", PATTERNS)
def test_smem_equals_the_cu_layout(sel_n, sel_m):
    assert smem_bytes("ssmm", sel_n, sel_m) == cu_smem_layout("ssmm", sel_n, sel_m)
    for name in ("spmm", "dense_mm"):
        assert smem_bytes(name) == cu_smem_layout(name)


def test_smem_budget_table_for_default_tiles():
    """Which row selections the default tiles can run: everything up to r_tile = 512 dense rows per block."""
    table = {(n, m): smem_bytes("ssmm", n, m) for n, m in PATTERNS}
    for (n, m), b in table.items():
        r_tile = tiles.BLOCK_M // n * m
        assert (b <= A100_SMEM) == (r_tile <= 512), (n, m, b)
        assert (b <= H100_SMEM) == (r_tile <= 512), (n, m, b)  # 1024 rows (1:8) fit neither
    assert table[(1, 2)] == 84224 and table[(1, 4)] == 149760 and table[(1, 8)] == 280832
    assert smem_bytes("spmm") == 51456 and smem_bytes("dense_mm") == 58624


@pytest.mark.parametrize("limit", [A100_SMEM, H100_SMEM])
def test_smem_over_the_limit_is_refused_clearly(monkeypatch, limit):
    install_recorder(monkeypatch, smem_limit=limit)
    x = _x(3, 128)
    ok = zero_samoyeds(32, 128, 1, 4, vector=32)
    assert ops._sparse_unsupported(ok, x) is None
    big = zero_samoyeds(64, 128, 1, 8, vector=32)
    msg = ops._sparse_unsupported(big, x)
    assert msg == f"1:8 needs 280832 B of shared memory per block, the GPU has {limit}"
    with pytest.raises(ValueError, match=r"backend: 'cupy' does not support this call: 1:8 needs 280832 B"):
        ops.ssmm(big, x, torch.tensor([0, 2]), backend="cupy")
    monkeypatch.setattr(ops, "_use_cupy", _ORIG_USE_CUPY)
    monkeypatch.setattr(ops, "_unavailable_reason", lambda: None)
    # "auto" on a GPU that cannot hold the tile: the reference runs instead (same numbers)
    y = ops.ssmm(big, x.cuda() if torch.cuda.is_available() else x, torch.tensor([0, 2]))
    assert tuple(y.shape) == (2, 64)

