"""Correctness cases the GPU suite lacked, each with its CPU twin where the block-by-block replay
(:func:`samoyeds_lab.reference.tiled.tiled_ssmm`) or the reference can run the same case:

- ``ssmm`` on a plain 2:4 :class:`~samoyeds_lab.formats.NMWeight` (no row index: ``row_index == NULL``),
- ragged shapes (19 x 100: rows not a multiple of 16, cols not a multiple of 32),
- ``x`` whose row stride is not a multiple of 8 (the kernels' scalar-load fallbacks),
- the scatter-add epilogue into a 16-bit ``out`` (paired ``red.global.add.noftz.{f16x2,bf16x2}`` where a
  thread owns two adjacent rows, the single-row path on odd row counts), through split-K's finalize too,
- the wgmma probe with B at +512 and +12800 bytes from a 1024-aligned base (Hopper only).

Tolerances as in tests/kernels/test_ops.py: fp16 2e-2, bf16 6e-2 (fp32 accumulation in another order; the
16-bit scatter-add rounds the addend before adding, then the sum).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from samoyeds_lab import kernels as K
from samoyeds_lab import reference
from samoyeds_lab.formats import SENTINEL, compress_nm, compress_samoyeds
from samoyeds_lab.kernels.build import KERNEL_DIR
from samoyeds_lab.reference.tiled import tiled_ssmm

from ..formats.helpers import random_24_rows, random_samoyeds
from .test_ops import TOL, _need_kernel, _wg_probe_inputs

DTYPES = [torch.float16, torch.bfloat16]
KERNELS = ["mma_sp", "wgmma_sp"]
SSMM = (KERNEL_DIR / "sptc_common.cuh").read_text() + (KERNEL_DIR / "ssmm.cu").read_text()


def _w24(rows, cols, dtype, seed=0, device="cpu"):
    return compress_nm(random_24_rows(rows, cols, torch.Generator().manual_seed(seed)).to(dtype).to(device))


def _strided_x(tokens, cols, pad, dtype, seed=0, device="cpu"):
    """``[tokens, cols]`` activations inside a ``[tokens, cols + pad]`` buffer: row stride ``cols + pad``."""
    g = torch.Generator().manual_seed(seed)
    buf = torch.randn(tokens, cols + pad, generator=g).to(dtype).to(device)
    x = buf[:, :cols]
    assert x.stride() == (cols + pad, 1)
    return x


def _ids(count, tokens, seed=0):
    g = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(0, tokens, (count,), generator=g).to(torch.int32)
    ids[1::4] = SENTINEL
    return ids


def _scatter_want(y32, idx_out, scale, out0):
    """out0 + sum over positions p of scale[p] · y32[p] into row idx_out[p] (SENTINEL skipped), in fp32."""
    want = out0.float().clone()
    for p, t in enumerate(idx_out.tolist()):
        if t != SENTINEL:
            want[t] += float(scale[p]) * y32[p]
    return want


#: (rows, cols, ldx pad, pattern): 2:4 (None) or Samoyeds (n, m, vector); ragged and strided cases.
CASES = [
    (19, 100, 0, None),      # ragged 2:4, contiguous x (ldx = 100: a multiple of 4, not of 8 -> scalar x loads)
    (19, 100, 3, None),      # ragged 2:4, ldx = 103
    (130, 256, 5, None),     # rows past one block, ldx = 261
    (16, 64, 8, None),       # aligned control: ldx = 72 (vector loads)
    (38, 128, 1, (1, 2, 32)),   # Samoyeds 1:2 with 19 compressed rows, ldx = 129
    (64, 256, 6, (2, 4, 64)),   # Samoyeds 2:4-of-rows, ldx = 262
]


def _weight(rows, cols, pattern, dtype, seed=0, device="cpu"):
    if pattern is None:
        return _w24(rows, cols, dtype, seed, device)
    n, m, vector = pattern
    dense = random_samoyeds(rows, cols, n, m, vector, dtype=dtype, seed=seed).to(device)
    return compress_samoyeds(dense, n, m, vector)


def _case_id(c):
    rows, cols, pad, pat = c
    return f"{rows}x{cols}-ldx{cols + pad}-" + ("24" if pat is None else "s{}{}v{}".format(*pat))


# ------------------------------------------------------------------ CPU twins (no GPU)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_replay_of_the_gpu_cases(case, dtype):
    """The kernel's loop nest on the mma.sp emulator (same tiles, fragments, metadata, row selection) on
    exactly the GPU cases below: strided x, ragged rows/cols, 2:4 without a row index."""
    rows, cols, pad, pattern = case
    w = _weight(rows, cols, pattern, dtype, seed=rows)
    x = _strided_x(9, cols, pad, dtype, seed=cols)
    idx = _ids(7, 9)
    want = w.to_dense().float() @ x.float().T  # [rows, tokens]
    got = tiled_ssmm(w, x, idx, out_dtype=torch.float32)
    ref = torch.stack([want[:, t] if t != SENTINEL else torch.zeros(rows) for t in idx.tolist()])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(reference.ssmm(w, x, idx, out_dtype=torch.float32), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows", [19, 20, 130])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_scatter_add_into_16_bit_out(rows, dtype):
    """The 16-bit scatter-add the GPU case checks, on the reference: repeated and SENTINEL targets."""
    w = _w24(rows, 64, dtype, seed=rows)
    x = _strided_x(6, 64, 3, dtype)
    idx = _ids(10, 6)
    sidx = torch.tensor([0, 3, 3, SENTINEL, 1, 0, 4, 4, 4, 2], dtype=torch.int32)
    scale = torch.linspace(0.25, 2.0, 10)
    out0 = torch.randn(5, rows).to(dtype)
    out = out0.clone()
    K.ssmm(w, x, idx, epilogue="scatter_add", out=out, scatter_idx=sidx, scale=scale, backend="reference")
    y32 = tiled_ssmm(w, x, idx, out_dtype=torch.float32)
    torch.testing.assert_close(out.float(), _scatter_want(y32, sidx, scale, out0), **TOL[dtype])


def _requires(*lines):
    for line in lines:
        assert line in SSMM, f"kernels/ssmm.cu changed: {line!r} not found; update this test with it"


@pytest.mark.parametrize("r_tile, r_valid, cnt", [(256, 256, 64), (256, 19, 7), (256, 1, 1), (255, 254, 3),
                                                  (255, 255, 5), (512, 300, 0), (130, 129, 2)])
@pytest.mark.parametrize("threads", [128, 96])
def test_paired_scatter_loop_covers_each_row_once(r_tile, r_valid, cnt, threads):
    """The block epilogue's paired loop (transcribed from ssmm.cu) writes every (position, row < r_valid)
    exactly once, as a pair (even row, row + 1) or a single last row, and never crosses a position."""
    _requires("const int half = (r_tile + 1) / 2;",
              "for (int i = threadIdx.x; i < cnt * half; i += blockDim.x) {",
              "const int n = i / half, rl = 2 * (i - n * half);",
              "if (rl >= r_valid) continue;",
              "if (rl + 1 < r_valid) scatter_add_pair<BF16>(ep, p0 + n, r0 + rl, v0, acc_s[n * acc_ld + rl + 1]);",
              "else apply_epilogue<BF16>(ep, p0 + n, r0 + rl, v0);")
    seen = torch.zeros(max(cnt, 1), r_tile, dtype=torch.int64)
    half = (r_tile + 1) // 2
    for tid in range(threads):
        for i in range(tid, cnt * half, threads):
            n, rl = i // half, 2 * (i - (i // half) * half)
            if rl >= r_valid:
                continue
            assert rl % 2 == 0
            seen[n, rl] += 1
            if rl + 1 < r_valid:
                seen[n, rl + 1] += 1
    want = torch.zeros_like(seen)
    want[:cnt, :r_valid] = 1
    assert torch.equal(seen, want)


@pytest.mark.parametrize("positions, rows", [(1, 1), (3, 19), (5, 20), (2, 4097)])
def test_paired_finalize_loop_covers_each_element_once(positions, rows):
    _requires("const int half = (rows + 1) / 2;", "const i64 pairs = positions * half;",
              "const int r = 2 * (int)(i - p * half);", "if (r + 1 < rows) scatter_add_pair<BF16>(ep, p, r, v0, v1);")
    seen = torch.zeros(positions, rows, dtype=torch.int64)
    half = (rows + 1) // 2
    for i in range(positions * half):
        p, r = i // half, 2 * (i - (i // half) * half)
        seen[p, r] += 1
        if r + 1 < rows:
            seen[p, r + 1] += 1
    assert torch.equal(seen, torch.ones_like(seen))


def test_pairs_only_where_the_words_line_up():
    """The paired path needs 4-byte words: even ldo, even first row, aligned out, a 16-bit out."""
    _requires("return ep.epilogue == 2 && !ep.out_f32 && (ep.ldo & 1) == 0 && (r0 & 1) == 0 &&",
              "((unsigned long long)ep.out & 3ull) == 0;")
    body = SSMM[SSMM.index("__device__ __forceinline__ void red_add_16x2"):]
    body = body[:body.index("\n}\n")]
    # the CAS loop survives only for bf16 below sm_90 (no bf16 red there)
    assert re.search(r"#if defined\(__CUDA_ARCH__\) && __CUDA_ARCH__ >= 900\s+asm volatile\(\"red\.global\.add\.noftz"
                     r"\.bf16x2", body)
    assert body.count("atomicCAS") == 1 and "red.global.add.noftz.f16x2" in body


# ------------------------------------------------------------------ GPU: the same cases on the kernels
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("split_k", [1, 3])
def test_gpu_ssmm_ragged_strided_and_plain_24(case, dtype, kernel, split_k):
    _need_kernel(kernel)
    rows, cols, pad, pattern = case
    w = _weight(rows, cols, pattern, dtype, seed=rows, device="cuda")
    x = _strided_x(9, cols, pad, dtype, seed=cols, device="cuda")
    assert x.stride(0) == cols + pad and x.is_cuda
    idx = _ids(7, 9).cuda()
    got = K.ssmm(w, x, idx, split_k=split_k, backend="cupy", kernel=kernel)
    want = reference.ssmm(w, x, idx)
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])
    if pattern is None and kernel == "mma_sp":  # the 2:4 lesson kernels on the same strided x
        torch.testing.assert_close(K.spmm(w, x, split_k=split_k, backend="cupy").float(),
                                   reference.spmm(w, x).float(), **TOL[dtype])
        dense = w.to_dense()
        torch.testing.assert_close(K.dense_mm(dense, x, idx, split_k=split_k, backend="cupy").float(),
                                   reference.ssmm(dense, x, idx).float(), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [19, 20, 130])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("split_k", [1, 3])
def test_gpu_scatter_add_into_16_bit_out(rows, dtype, kernel, split_k):
    """Paired reductions (even rows), the single-row path (19), repeated targets racing on one word."""
    _need_kernel(kernel)
    w = _w24(rows, 64, dtype, seed=rows, device="cuda")
    x = _strided_x(6, 64, 3, dtype, device="cuda")
    idx = _ids(10, 6).cuda()
    sidx = torch.tensor([0, 3, 3, SENTINEL, 1, 0, 4, 4, 4, 2], dtype=torch.int32).cuda()
    scale = torch.linspace(0.25, 2.0, 10).cuda()
    out0 = torch.randn(5, rows).to(dtype).cuda()
    got = out0.clone()
    K.ssmm(w, x, idx, epilogue="scatter_add", out=got, scatter_idx=sidx, scale=scale, split_k=split_k,
           backend="cupy", kernel=kernel)
    want = out0.clone()
    K.ssmm(w, x, idx, epilogue="scatter_add", out=want, scatter_idx=sidx, scale=scale, backend="reference")
    torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b_offset", [0, 512, 12800])
def test_gpu_wgmma_probe_with_b_off_the_aligned_base(dtype, b_offset):
    """B at +512 / +12800 bytes from the 1024-aligned base (where ssmm.cu's later B stages sit): the
    descriptor start address moves, the 64-byte swizzle phase must not."""
    _need_kernel("wgmma_sp")
    import cupy
    import numpy as np

    from samoyeds_lab.kernels.build import device_arch, load_module
    from samoyeds_lab.reference.wgmma import SmemDescriptor, store_k_major

    (a32, e32, c32, _), want, (_, bmat, _) = _wg_probe_inputs(dtype, 0)
    img = np.zeros(b_offset + 64 * 64, np.uint8)
    store_k_major(img, SmemDescriptor(b_offset, 16, 512, 0, "64B").encode(), bmat.T.contiguous())
    mod = load_module(Path(__file__).with_name("one_warpgroup_wgmma_sp.cu"), device_arch())
    fn = mod.get_function(f"wgmma_sp_probe_at_{'bf16' if dtype == torch.bfloat16 else 'f16'}")
    d = cupy.zeros((128, 32), dtype=cupy.float32)
    fn((1,), (128,), (cupy.asarray(a32), cupy.asarray(e32), cupy.asarray(c32), cupy.asarray(img.view(np.uint32)), d,
                      np.int32(b_offset)), shared_mem=b_offset + 64 * 64 + 1024)
    assert torch.equal(torch.from_numpy(cupy.asnumpy(d)).view(4, 32, 32), want)  # integer data: exact


@pytest.mark.parametrize("b_offset", [512, 12800])
def test_wgmma_probe_image_at_an_offset_is_the_translated_layout(b_offset):
    """CPU side of the offset probe: a multiple of 512 B moves the 64-byte-swizzle image without changing it."""
    import numpy as np

    from samoyeds_lab.reference.wgmma import SmemDescriptor, store_k_major

    _, _, (_, bmat, _) = _wg_probe_inputs(torch.float16, 0)
    at0 = np.zeros(64 * 64, np.uint8)
    store_k_major(at0, SmemDescriptor(0, 16, 512, 0, "64B").encode(), bmat.T.contiguous())
    img = np.zeros(b_offset + 64 * 64, np.uint8)
    store_k_major(img, SmemDescriptor(b_offset, 16, 512, 0, "64B").encode(), bmat.T.contiguous())
    assert not img[:b_offset].any() and np.array_equal(img[b_offset:], at0)
