"""samoyeds_lab.kernels ops: CPU (reference) behaviour and errors; @gpu kernel-vs-reference on awkward shapes.

Tolerances (GPU vs reference, both fp32-accumulated, different summation order): fp16 rtol=atol=2e-2,
bf16 rtol=atol=6e-2 (output rounding of both sides plus fp32 reassociation over K up to 4096).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from samoyeds_lab import kernels as K
from samoyeds_lab import reference
from samoyeds_lab.formats import SENTINEL, TokenSelection, compress_nm, compress_samoyeds

from ..formats.helpers import random_24_rows, random_samoyeds

TOL = {torch.float16: dict(rtol=2e-2, atol=2e-2), torch.bfloat16: dict(rtol=6e-2, atol=6e-2)}
#: The two CUDA paths of ssmm: warp-level mma.sp (SM80+) and Hopper's wgmma.mma_async.sp (sm_90a only).
SSMM_KERNELS = ["mma_sp", "wgmma_sp"]


def _need_kernel(kernel: str) -> None:
    """Skip (with the reason) a wgmma_sp case on a GPU that is not Hopper."""
    if kernel == "wgmma_sp":
        from samoyeds_lab.kernels.build import device_arch

        if device_arch() != "90a":
            pytest.skip(f"kernel='wgmma_sp' needs sm_90a (Hopper); this GPU builds for sm_{device_arch()}")


def _w24(rows, cols, dtype, seed=0, device="cpu"):
    return compress_nm(random_24_rows(rows, cols, torch.Generator().manual_seed(seed)).to(dtype).to(device))


def _ids(count, tokens, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, max(tokens, 1), (count,), generator=g).to(torch.int32)
    ids[::3] = SENTINEL
    return ids


# ------------------------------------------------------------------ CPU: reference path, epilogues, errors
def test_cpu_ssmm_is_the_reference():
    # backend="reference" is the reference exactly; auto on CPU tensors runs the CPU kernels (same products,
    # another summation order: tests/kernels/test_cpu.py), so it agrees to fp16 rounding
    w = _w24(19, 100, torch.float16)
    x = torch.randn(7, 100).half()
    idx = _ids(9, 7)
    assert torch.equal(K.ssmm(w, x, idx, backend="reference"), reference.ssmm(w, x, idx))
    assert torch.equal(K.spmm(w, x, backend="reference"), reference.spmm(w, x))
    torch.testing.assert_close(K.ssmm(w, x, idx), reference.ssmm(w, x, idx), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(K.spmm(w, x), reference.spmm(w, x), rtol=2e-3, atol=2e-3)
    dense = w.to_dense()
    assert torch.equal(K.dense_mm(dense, x, idx), reference.ssmm(dense, x, idx))


def test_cpu_epilogues():
    w = _w24(16, 64, torch.float32)
    x = torch.randn(5, 64)
    idx = torch.tensor([4, SENTINEL, 0, 2], dtype=torch.int32)
    y = reference.ssmm(w, x, idx, out_dtype=torch.float32)
    up = torch.randn(4, 16)
    torch.testing.assert_close(K.ssmm(w, x, idx, epilogue="silu_mul", up=up), F.silu(y) * up)
    out = torch.zeros(5, 16)
    scale = torch.tensor([0.5, 9.0, 2.0, 1.0])
    K.ssmm(w, x, idx, epilogue="scatter_add", out=out, scale=scale)
    want = torch.zeros(5, 16)
    for p, t in enumerate(idx.tolist()):
        if t != SENTINEL:
            want[t] += scale[p] * y[p]
    torch.testing.assert_close(out, want)


def test_cpu_grouped_matches_per_expert_loop():
    topk = torch.tensor([[0, 2], [0, 1], [2, 1], [0, 2], [1, 0]])
    sel = TokenSelection.from_topk(topk, 4, pad_to=8)  # expert 3 empty
    ws = [_w24(16, 32, torch.float32, seed=e) for e in range(4)]
    x = torch.randn(5, 32)
    y = K.ssmm_grouped(ws, x, sel)
    for e in range(4):
        a, b = sel.padded_offsets[e], sel.padded_offsets[e + 1]
        torch.testing.assert_close(y[a:b], reference.ssmm(ws[e], x, sel.padded_token_ids[a:b]))
    rw = torch.rand(5, 2)
    h = torch.randn(int(sel.padded_offsets[-1]), 32)
    out = K.ssmm_grouped(ws, h, sel, gather=False, epilogue="scatter_add", out=torch.zeros(5, 16), routing_weights=rw)
    want = torch.zeros(5, 16)
    flat = rw.reshape(-1)
    for e in range(4):
        for p in range(int(sel.padded_offsets[e]), int(sel.padded_offsets[e + 1])):
            t = int(sel.padded_token_ids[p])
            if t != SENTINEL:
                want[t] += flat[int(sel.padded_slot_ids[p])] * reference.spmm(ws[e], h[p:p + 1])[0]
    torch.testing.assert_close(out, want)


def test_errors():
    w = _w24(16, 32, torch.float16)
    x = torch.randn(3, 32).half()
    with pytest.raises(ValueError, match="backend"):
        K.ssmm(w, x, None, backend="gpu")
    with pytest.raises(ValueError, match="epilogue"):
        K.ssmm(w, x, None, epilogue="relu")
    with pytest.raises(TypeError, match="up"):
        K.ssmm(w, x, None, epilogue="silu_mul")
    with pytest.raises(ValueError, match="up"):
        K.ssmm(w, x, None, up=torch.zeros(3, 16).half())
    with pytest.raises(ValueError, match="x"):
        K.ssmm(w, torch.randn(3, 31).half(), None)
    with pytest.raises(ValueError, match="token_idx"):
        K.ssmm(w, x, torch.tensor([5]))
    with pytest.raises(ValueError, match="scatter_idx"):
        K.ssmm(w, x, None, epilogue="scatter_add", out=torch.zeros(2, 16).half(), scatter_idx=torch.tensor([0, 1, 7]))
    if not K.available():
        with pytest.raises(K.KernelUnavailableError, match="cupy"):
            K.ssmm(w, x, None, backend="cupy")


# ------------------------------------------------------------------ GPU: kernel vs reference
SHAPES = [(16, 32), (19, 100), (130, 260), (256, 512), (300, 1028)]  # (rows, cols) with ragged tails
TOKENS = [0, 1, 7, 129]
DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("split_k", [1, None, 3])
def test_gpu_spmm_and_dense(dtype, rows, cols, tokens, split_k):
    w = _w24(rows, cols, dtype, device="cuda")
    x = torch.randn(tokens, cols, device="cuda").to(dtype)
    torch.testing.assert_close(K.spmm(w, x, split_k=split_k, backend="cupy"), reference.spmm(w, x), **TOL[dtype])
    dense = w.to_dense()
    idx = _ids(tokens + 3, tokens).cuda() if tokens else torch.zeros(0, dtype=torch.int32, device="cuda")
    torch.testing.assert_close(K.dense_mm(dense, x, idx, split_k=split_k, backend="cupy"),
                               reference.ssmm(dense, x, idx), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols,n,m,vector", [(16, 128, 1, 2, 128), (130, 256, 1, 2, 128), (300, 384, 1, 2, 64),
                                                  (256, 512, 2, 4, 128), (64, 256, 1, 4, 32)])
@pytest.mark.parametrize("count", [0, 1, 7, 129])
@pytest.mark.parametrize("epilogue", ["plain", "silu_mul", "scatter_add"])
@pytest.mark.parametrize("kernel", SSMM_KERNELS)
def test_gpu_ssmm(dtype, rows, cols, n, m, vector, count, epilogue, kernel):
    _need_kernel(kernel)
    w = compress_samoyeds(random_samoyeds(rows, cols, n, m, vector, dtype=dtype, seed=rows + count).cuda(), n, m, vector)
    x = torch.randn(11, cols, device="cuda").to(dtype)
    idx = _ids(count, 11).cuda()
    y = reference.ssmm(w, x, idx, out_dtype=torch.float32)
    for split_k in (1, None):
        if epilogue == "plain":
            got, want = K.ssmm(w, x, idx, split_k=split_k, backend="cupy", kernel=kernel), y.to(dtype)
        elif epilogue == "silu_mul":
            up = torch.randn(count, rows, device="cuda").to(dtype)
            got = K.ssmm(w, x, idx, epilogue="silu_mul", up=up, split_k=split_k, backend="cupy", kernel=kernel)
            want = (F.silu(y) * up.float()).to(dtype)
        else:
            scale = torch.rand(count, device="cuda")
            got = K.ssmm(w, x, idx, epilogue="scatter_add", out=torch.zeros(11, rows, device="cuda"), scale=scale,
                         split_k=split_k, backend="cupy", kernel=kernel)
            want = torch.zeros(11, rows, device="cuda")
            K.ssmm(w, x, idx, epilogue="scatter_add", out=want, scale=scale, backend="reference")
        torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad_to", [1, 64])
@pytest.mark.parametrize("kernel", SSMM_KERNELS)
def test_gpu_grouped_with_empty_experts(dtype, pad_to, kernel):
    _need_kernel(kernel)
    g = torch.Generator().manual_seed(1)
    topk = torch.stack([torch.randperm(6, generator=g)[:2] for _ in range(70)]).clamp(max=4)  # experts 5: empty
    topk = torch.where(topk[:, :1] == topk[:, 1:], torch.stack([topk[:, 0], (topk[:, 0] + 1) % 5], 1), topk)
    sel = TokenSelection.from_topk(topk.cuda(), 6, pad_to=pad_to)
    ws = [compress_samoyeds(random_samoyeds(96, 256, 1, 2, 128, dtype=dtype, seed=e).cuda(), 1, 2, 128) for e in range(6)]
    x = torch.randn(70, 256, device="cuda").to(dtype)
    got = K.ssmm_grouped(ws, x, sel, backend="cupy", kernel=kernel)
    want = K.ssmm_grouped(ws, x, sel, backend="reference")
    torch.testing.assert_close(got, want, **TOL[dtype])
    rw = torch.rand(70, 2, device="cuda")
    h = torch.randn(got.shape[0], 256, device="cuda").to(dtype)
    o1 = K.ssmm_grouped(ws, h, sel, gather=False, epilogue="scatter_add", out=torch.zeros(70, 96, device="cuda"),
                        routing_weights=rw, backend="cupy", kernel=kernel)
    o2 = K.ssmm_grouped(ws, h, sel, gather=False, epilogue="scatter_add", out=torch.zeros(70, 96, device="cuda"),
                        routing_weights=rw, backend="reference")
    torch.testing.assert_close(o1, o2, **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sel", [0, 1])
def test_gpu_one_warp_mma_sp_layout(dtype, sel):
    """FIRST GPU JOB: one mma.sp with known registers vs the CPU emulator (fragment + metadata layouts)."""
    import cupy

    from samoyeds_lab.kernels.build import device_arch, load_module
    from samoyeds_lab.reference.mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_c, pack_e, pack_a as _pa

    g = torch.Generator().manual_seed(sel)
    vals = torch.randint(-3, 4, (16, 16), generator=g).to(dtype)
    bmat = torch.randint(-3, 4, (32, 8), generator=g).to(dtype)
    c = torch.randint(-3, 4, (16, 8), generator=g).float()
    legal = torch.tensor([0x4, 0x8, 0xC, 0x9, 0xD, 0xE])
    words = torch.zeros(16, dtype=torch.int64)
    for i in range(16):
        nib = legal[torch.randint(0, 6, (8,), generator=g)]
        words[i] = int(sum(int(v) << (4 * j) for j, v in enumerate(nib)))
    a, b, cc, e = pack_a(vals), pack_b(bmat), pack_c(c), pack_e(words, sel)
    want = mma_sp_m16n8k32(a, b, cc, e, sel)
    mod = load_module(Path(__file__).with_name("one_warp_mma_sp.cu"), device_arch())
    fn = mod.get_function(f"mma_sp_probe_{'bf16' if dtype == torch.bfloat16 else 'f16'}_s{sel}")
    a32 = cupy.asarray(a.contiguous().view(torch.int16).view(32, 8).numpy()).view(cupy.uint32)
    b32 = cupy.asarray(b.contiguous().view(torch.int16).view(32, 8).numpy()).view(cupy.uint32)
    d = cupy.zeros((32, 4), dtype=cupy.float32)
    fn((1,), (32,), (a32, b32, cupy.asarray(cc.numpy()), cupy.asarray(e.to(torch.int64).numpy().astype("uint32")), d))
    assert torch.equal(torch.from_numpy(cupy.asnumpy(d)), want)  # integer data: exact


def _wg_probe_inputs(dtype, sel):
    """Host side of the one-warpgroup probe: per-thread A / metadata / C registers, the 64-byte-swizzled B
    stage image (as ssmm.cu lays it out) and the emulator's answer."""
    import numpy as np

    from samoyeds_lab.reference.wgmma import (SmemDescriptor, pack_wg_a, pack_wg_c, pack_wg_e, store_k_major,
                                              wgmma_sp_m64nNk32)

    g = torch.Generator().manual_seed(10 + sel)
    pattern = random_24_rows(64, 32, g) != 0
    w = compress_nm(torch.where(pattern, torch.randint(-3, 4, (64, 32), generator=g).float(), 0.0).to(dtype))
    bmat = torch.randint(-3, 4, (32, 64), generator=g).to(dtype)
    c = torch.randint(-3, 4, (64, 64), generator=g).float()
    a, e, cc = pack_wg_a(w.values), pack_wg_e(w.sptc_metadata(), sel), pack_wg_c(c)
    want = wgmma_sp_m64nNk32(a, bmat, cc, e, sel)
    img = np.zeros(64 * 64, np.uint8)  # relative to a 1024-aligned base
    store_k_major(img, SmemDescriptor(0, 16, 512, 0, "64B").encode(), bmat.T.contiguous())
    regs = (a.contiguous().view(torch.int16).reshape(128, 8).numpy().view(np.uint32),
            e.to(torch.int64).numpy().astype(np.uint32).reshape(128), cc.reshape(128, 32).numpy(), img.view(np.uint32))
    return regs, want, (w, bmat, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sel", [0, 1])
def test_one_warpgroup_probe_inputs(dtype, sel):
    """CPU check of the Hopper probe's host side: the emulator's answer is the matmul, and the B image is
    exactly kernels/ssmm.cu's b_off layout (the kernel's descriptor reads what its loads wrote)."""
    from samoyeds_lab.reference.wgmma import pack_wg_c

    (a32, e32, c32, img), want, (w, bmat, c) = _wg_probe_inputs(dtype, sel)
    assert torch.equal(want, pack_wg_c(w.to_dense().float() @ bmat.float() + c))
    assert a32.shape == (128, 4) and e32.shape == (128,) and c32.shape == (128, 32) and img.size == 64 * 64 // 4
    h = img.view("uint16")
    bt = bmat.T.contiguous().view(torch.int16).numpy().view("uint16")
    for n in range(64):
        for k in range(32):
            assert h[(n * 64 + (((k // 8) ^ ((n >> 1) & 3)) << 4) + 2 * (k % 8)) // 2] == bt[n, k]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sel", [0, 1])
def test_gpu_one_warpgroup_wgmma_sp_layout(dtype, sel):
    """FIRST HOPPER JOB: one wgmma.mma_async.sp (A in registers, B through ssmm.cu's descriptor and 64-byte
    swizzle) vs the CPU emulator reference.wgmma: fragment, metadata, descriptor and accumulator layouts."""
    _need_kernel("wgmma_sp")
    import cupy

    from samoyeds_lab.kernels.build import device_arch, load_module

    (a32, e32, c32, img), want, _ = _wg_probe_inputs(dtype, sel)
    mod = load_module(Path(__file__).with_name("one_warpgroup_wgmma_sp.cu"), device_arch())
    fn = mod.get_function(f"wgmma_sp_probe_{'bf16' if dtype == torch.bfloat16 else 'f16'}_s{sel}")
    d = cupy.zeros((128, 32), dtype=cupy.float32)
    fn((1,), (128,), (cupy.asarray(a32), cupy.asarray(e32), cupy.asarray(c32), cupy.asarray(img), d),
       shared_mem=64 * 64 + 1024)
    assert torch.equal(torch.from_numpy(cupy.asnumpy(d)).view(4, 32, 32), want)  # integer data: exact


@pytest.mark.gpu
def test_gpu_ldmatrix_probe():
    import cupy

    from samoyeds_lab.kernels.build import device_arch, load_module
    from samoyeds_lab.reference.mma_sp import pack_a, pack_b

    a_tile = torch.randn(16, 16).half()
    x_tile = torch.randn(8, 32).half()
    mod = load_module(Path(__file__).with_name("one_warp_mma_sp.cu"), device_arch())
    ao = cupy.zeros((32, 4), dtype=cupy.uint32)
    bo = cupy.zeros((32, 4), dtype=cupy.uint32)
    mod.get_function("ldmatrix_probe")((1,), (32,), (cupy.asarray(a_tile.view(torch.int16).numpy()),
                                                      cupy.asarray(x_tile.view(torch.int16).numpy()), ao, bo))
    got_a = torch.from_numpy(cupy.asnumpy(ao).view("int16")).view(torch.float16).view(32, 4, 2)
    got_b = torch.from_numpy(cupy.asnumpy(bo).view("int16")).view(torch.float16).view(32, 4, 2)
    assert torch.equal(got_a, pack_a(a_tile)) and torch.equal(got_b, pack_b(x_tile.T.contiguous()))


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not on PATH")
def test_gpu_compute_sanitizer_memcheck(tmp_path):
    script = tmp_path / "small.py"
    script.write_text(
        "import torch\nfrom samoyeds_lab import kernels as K\nfrom samoyeds_lab.formats import compress_nm\n"
        "from tests.formats.helpers import random_24_rows\n"
        "w = compress_nm(random_24_rows(19, 100, torch.Generator().manual_seed(0)).half().cuda())\n"
        "x = torch.randn(7, 100, device='cuda').half()\n"
        "K.spmm(w, x, backend='cupy'); K.ssmm(w, x, torch.tensor([3, -1, 0], device='cuda'), backend='cupy')\n"
        "K.dense_mm(w.to_dense(), x, backend='cupy')\n"
        "from samoyeds_lab.kernels.build import device_arch\n"
        "if device_arch() == '90a':\n"
        "    K.ssmm(w, x, torch.tensor([3, -1, 0], device='cuda'), backend='cupy', kernel='wgmma_sp', split_k=2)\n"
        "torch.cuda.synchronize()\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "3", sys.executable,
                           str(script)], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
