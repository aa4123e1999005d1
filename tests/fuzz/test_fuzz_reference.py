"""Bad inputs for :mod:`samoyeds_lab.reference`: products, the mma.sp / wgmma emulators and their helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samoyeds_lab.formats import compress_nm, compress_samoyeds, to_csr
from samoyeds_lab.formats.sptc import mma_metadata
from samoyeds_lab.reference import (
    SmemDescriptor,
    check_token_idx,
    dense_of,
    load_k_major,
    mma_sp_m16n8k16,
    mma_sp_m16n8k32,
    pack_a,
    pack_b,
    pack_c,
    pack_e,
    sparse_a_to_dense,
    spmm,
    ssmm,
    tiled_spmm,
    tiled_ssmm,
    unpack_a,
    unpack_b,
    unpack_d,
    wgmma_sp_m64nNk32,
)

from .harness import case, ids, run_case

F16 = torch.float16


def _dense24(rows, cols, dtype=F16):
    w = torch.zeros(rows, cols // 4, 4, dtype=dtype)
    w[..., 1], w[..., 3] = 1.0, -1.0
    return w.view(rows, cols)


W24 = compress_nm(_dense24(16, 32))
W24_32 = compress_nm(_dense24(16, 32, torch.float32))
W_SAM4 = compress_samoyeds(torch.cat([_dense24(1, 32), torch.zeros(1, 32, dtype=F16)] * 8), vector=4)
X = torch.ones(3, 32, dtype=F16)
IDX = torch.tensor([0, 2, -1])

A = pack_a(torch.ones(16, 16, dtype=F16))              # [32, 4, 2]
A16 = pack_a(torch.ones(16, 8, dtype=F16))             # [32, 2, 2]
B = pack_b(torch.ones(32, 8, dtype=F16))
B16 = pack_b(torch.ones(16, 8, dtype=F16))
C = torch.zeros(32, 4)
WORDS = mma_metadata(W24.sptc_metadata())[0, 0]        # [16]
E = pack_e(WORDS)                                      # [32]
E16 = pack_e(WORDS[:8], k=16)
BAD_E = torch.zeros(32, dtype=torch.uint32)            # nibble 0x0: positions (0, 0)

WG_A = A.unsqueeze(0).expand(4, -1, -1, -1).contiguous()
WG_B = torch.ones(32, 8, dtype=F16)
WG_C = torch.zeros(4, 32, 4)
WG_E = E.unsqueeze(0).expand(4, -1).contiguous()
SMEM = np.zeros(1024, dtype=np.uint8)
DESC = SmemDescriptor(0, 128, 256)

CASES = [
    # ------------------------------------------------------------------ core products
    case("reference.spmm", "weight a str", lambda: spmm("w", X), TypeError, "weight"),
    case("reference.spmm", "weight 3-D", lambda: spmm(torch.zeros(1, 2, 32), X), ValueError, "weight"),
    case("reference.spmm", "x cols differ", lambda: spmm(W24, X[:, :16]), ValueError, "x"),
    case("reference.spmm", "x 1-D", lambda: spmm(W24, X[0]), ValueError, "x"),
    case("reference.spmm", "x int", lambda: spmm(W24, X.int()), TypeError, "x"),
    case("reference.spmm", "out_dtype int64", lambda: spmm(W24, X, out_dtype=torch.int64), TypeError,
         "out_dtype"),
    case("reference.spmm", "out_dtype a str", lambda: spmm(W24, X, out_dtype="float32"), TypeError, "out_dtype"),
    case("reference.ssmm", "token id out of range", lambda: ssmm(W24, X, torch.tensor([3])), ValueError,
         "token_idx"),
    case("reference.ssmm", "token id -2", lambda: ssmm(W24, X, torch.tensor([-2])), ValueError, "token_idx"),
    case("reference.ssmm", "float token ids", lambda: ssmm(W24, X, IDX.float()), TypeError, "token_idx"),
    case("reference.ssmm", "2-D token ids", lambda: ssmm(W24, X, IDX.view(1, 3)), ValueError, "token_idx"),
    case("reference.ssmm", "token_idx a list", lambda: ssmm(W24, X, [0, 1]), TypeError, "token_idx"),
    case("reference.ssmm", "out_dtype bool", lambda: ssmm(W24, X, IDX, out_dtype=torch.bool), TypeError,
         "out_dtype"),
    case("reference.dense_of", "a str", lambda: dense_of("w"), TypeError, "weight"),
    case("reference.dense_of", "int tensor", lambda: dense_of(torch.zeros(2, 2, dtype=torch.int32)), TypeError,
         "weight"),
    case("reference.dense_of", "1-D tensor", lambda: dense_of(torch.zeros(4)), ValueError, "weight"),
    case("reference.dense_of", "name not a str", lambda: dense_of(torch.zeros(4), name=None), TypeError, "name"),
    case("reference.check_token_idx", "num_tokens negative", lambda: check_token_idx(IDX, -1), ValueError,
         "num_tokens"),
    case("reference.check_token_idx", "num_tokens a str", lambda: check_token_idx(IDX, "3"), TypeError,
         "num_tokens"),
    case("reference.check_token_idx", "num_tokens a bool", lambda: check_token_idx(IDX, True), TypeError,
         "num_tokens"),
    case("reference.check_token_idx", "id >= num_tokens", lambda: check_token_idx(IDX, 2), ValueError,
         "token_idx"),
    case("reference.check_token_idx", "bool ids", lambda: check_token_idx(IDX > 0, 3), TypeError, "token_idx"),
    # ------------------------------------------------------------------ mma.sp emulator
    case("reference.mma_sp_m16n8k32", "a wrong shape", lambda: mma_sp_m16n8k32(A[:16], B, C, E), ValueError, "a"),
    case("reference.mma_sp_m16n8k32", "k16 registers", lambda: mma_sp_m16n8k32(A16, B16, C, E), ValueError, "a"),
    case("reference.mma_sp_m16n8k32", "b dtype differs", lambda: mma_sp_m16n8k32(A, B.bfloat16(), C, E),
         TypeError, "b"),
    case("reference.mma_sp_m16n8k32", "a fp32", lambda: mma_sp_m16n8k32(A.float(), B, C, E), TypeError, "a"),
    case("reference.mma_sp_m16n8k32", "c fp16", lambda: mma_sp_m16n8k32(A, B, C.half(), E), TypeError, "c"),
    case("reference.mma_sp_m16n8k32", "c wrong shape", lambda: mma_sp_m16n8k32(A, B, C[:, :2], E), ValueError,
         "c"),
    case("reference.mma_sp_m16n8k32", "e float", lambda: mma_sp_m16n8k32(A, B, C, E.float()), TypeError, "e"),
    case("reference.mma_sp_m16n8k32", "e wrong shape", lambda: mma_sp_m16n8k32(A, B, C, E[:16]), ValueError, "e"),
    case("reference.mma_sp_m16n8k32", "illegal nibble", lambda: mma_sp_m16n8k32(A, B, C, BAD_E), ValueError, "e"),
    case("reference.mma_sp_m16n8k32", "selector 2", lambda: mma_sp_m16n8k32(A, B, C, E, 2), ValueError, "f"),
    case("reference.mma_sp_m16n8k32", "selector -1", lambda: mma_sp_m16n8k32(A, B, C, E, -1), ValueError, "f"),
    case("reference.mma_sp_m16n8k32", "selector a float", lambda: mma_sp_m16n8k32(A, B, C, E, 0.0), TypeError,
         "f"),
    case("reference.mma_sp_m16n8k32", "int64 e >= 2**32",
         lambda: mma_sp_m16n8k32(A, B, C, E.long() + (1 << 32)), ValueError, "e"),
    case("reference.mma_sp_m16n8k16", "k32 registers", lambda: mma_sp_m16n8k16(A, B, C, E16), ValueError, "a"),
    case("reference.mma_sp_m16n8k16", "selector 4", lambda: mma_sp_m16n8k16(A16, B16, C, E16, 4), ValueError,
         "f"),
    case("reference.mma_sp_m16n8k16", "b shape differs", lambda: mma_sp_m16n8k16(A16, B, C, E16), ValueError, "b"),
    case("reference.sparse_a_to_dense", "illegal nibble", lambda: sparse_a_to_dense(A, BAD_E), ValueError, "e"),
    case("reference.sparse_a_to_dense", "e batch differs",
         lambda: sparse_a_to_dense(A, E.view(1, 32).expand(2, 32)), ValueError, "e"),
    case("reference.sparse_a_to_dense", "a None", lambda: sparse_a_to_dense(None, E), TypeError, "a"),
    case("reference.pack_a", "values [16, 12]", lambda: pack_a(torch.ones(16, 12, dtype=F16)), ValueError,
         "values"),
    case("reference.pack_a", "values fp32", lambda: pack_a(torch.ones(16, 16)), TypeError, "values"),
    case("reference.pack_a", "values 1-D", lambda: pack_a(torch.ones(16, dtype=F16)), ValueError, "values"),
    case("reference.unpack_a", "wrong registers", lambda: unpack_a(torch.ones(32, 3, 2, dtype=F16)), ValueError,
         "a"),
    case("reference.unpack_a", "int", lambda: unpack_a(torch.ones(32, 4, 2, dtype=torch.int16)), TypeError, "a"),
    case("reference.pack_b", "B [32, 4]", lambda: pack_b(torch.ones(32, 4, dtype=F16)), ValueError, "b_matrix"),
    case("reference.pack_b", "B int", lambda: pack_b(torch.ones(32, 8, dtype=torch.int32)), TypeError,
         "b_matrix"),
    case("reference.unpack_b", "wrong lanes", lambda: unpack_b(torch.ones(16, 4, 2, dtype=F16)), ValueError, "b"),
    case("reference.pack_c", "C [16, 7]", lambda: pack_c(torch.zeros(16, 7)), ValueError, "c_matrix"),
    case("reference.pack_c", "C a list", lambda: pack_c([[0.0] * 8] * 16), TypeError, "c_matrix"),
    case("reference.pack_c", "C bool", lambda: pack_c(torch.zeros(16, 8, dtype=torch.bool)), TypeError,
         "c_matrix"),
    case("reference.unpack_d", "d [32, 3]", lambda: unpack_d(torch.zeros(32, 3)), ValueError, "d"),
    case("reference.unpack_d", "d int", lambda: unpack_d(torch.zeros(32, 4, dtype=torch.int64)), TypeError, "d"),
    case("reference.pack_e", "15 words", lambda: pack_e(WORDS[:15]), ValueError, "words"),
    case("reference.pack_e", "selector 2", lambda: pack_e(WORDS, 2), ValueError, ("selector", "f")),
    case("reference.pack_e", "selector a str", lambda: pack_e(WORDS, "0"), TypeError, ("selector", "f")),
    case("reference.pack_e", "k = 8", lambda: pack_e(WORDS, k=8), ValueError, "k"),
    case("reference.pack_e", "k a float", lambda: pack_e(WORDS, k=32.0), TypeError, "k"),
    case("reference.pack_e", "float words", lambda: pack_e(WORDS.float()), TypeError, "words"),
    case("reference.pack_e", "negative int64 words", lambda: pack_e(WORDS.long() - (1 << 40)), ValueError,
         "words"),
    # ------------------------------------------------------------------ tiled emulator
    case("reference.tiled_spmm", "CSR weight", lambda: tiled_spmm(to_csr(_dense24(16, 32)), X), TypeError,
         "weight"),
    case("reference.tiled_spmm", "x fp32", lambda: tiled_spmm(W24, X.float()), TypeError, "x"),
    case("reference.tiled_spmm", "x cols differ", lambda: tiled_spmm(W24, X[:, :16]), ValueError, "x"),
    case("reference.tiled_spmm", "weight values fp32, x fp16", lambda: tiled_spmm(W24_32, X), TypeError, "x"),
    case("reference.tiled_spmm", "weight 1:4", lambda: tiled_spmm(compress_nm(torch.zeros(16, 32, dtype=F16), 1, 4),
                                                                   X), ValueError, "weight"),
    case("reference.tiled_spmm", "Samoyeds vector 4", lambda: tiled_spmm(W_SAM4, X), ValueError, "weight"),
    case("reference.tiled_spmm", "out_dtype int", lambda: tiled_spmm(W24, X, out_dtype=torch.int32), TypeError,
         "out_dtype"),
    case("reference.tiled_ssmm", "token id out of range", lambda: tiled_ssmm(W24, X, torch.tensor([7])),
         ValueError, "token_idx"),
    case("reference.tiled_ssmm", "float token ids", lambda: tiled_ssmm(W24, X, IDX.double()), TypeError,
         "token_idx"),
    case("reference.tiled_ssmm", "weight a tensor", lambda: tiled_ssmm(_dense24(16, 32), X, IDX), TypeError,
         "weight"),
    case("reference.tiled_ssmm", "x None", lambda: tiled_ssmm(W24, None, IDX), TypeError, "x"),
    # ------------------------------------------------------------------ wgmma emulator
    case("reference.SmemDescriptor", "start not a multiple of 16", lambda: SmemDescriptor(8, 16, 16), ValueError,
         "start_address"),
    case("reference.SmemDescriptor", "start >= 2**18", lambda: SmemDescriptor(1 << 18, 16, 16), ValueError,
         "start_address"),
    case("reference.SmemDescriptor", "negative LBO", lambda: SmemDescriptor(0, -16, 16), ValueError,
         "leading_byte_offset"),
    case("reference.SmemDescriptor", "SBO a str", lambda: SmemDescriptor(0, 16, "16"), TypeError,
         "stride_byte_offset"),
    case("reference.SmemDescriptor", "base_offset 8", lambda: SmemDescriptor(0, 16, 16, 8), ValueError,
         "base_offset"),
    case("reference.SmemDescriptor", "swizzle '16B'", lambda: SmemDescriptor(0, 16, 16, swizzle="16B"),
         ValueError, "swizzle"),
    case("reference.SmemDescriptor", "swizzle a list (unhashable)",
         lambda: SmemDescriptor(0, 16, 16, swizzle=["none"]), (TypeError, ValueError), "swizzle"),
    case("reference.SmemDescriptor.decode", "reserved bit 14", lambda: SmemDescriptor.decode(1 << 14), ValueError,
         "desc"),
    case("reference.SmemDescriptor.decode", "2**64", lambda: SmemDescriptor.decode(1 << 64), ValueError, "desc"),
    case("reference.SmemDescriptor.decode", "a float", lambda: SmemDescriptor.decode(1.0), TypeError, "desc"),
    case("reference.load_k_major", "smem a list", lambda: load_k_major([0] * 64, DESC, 8, 32), TypeError, "smem"),
    case("reference.load_k_major", "smem int32", lambda: load_k_major(SMEM.view(np.int32), DESC, 8, 32),
         TypeError, "smem"),
    case("reference.load_k_major", "outside the window", lambda: load_k_major(SMEM[:64], DESC, 8, 32), ValueError,
         "desc"),
    case("reference.load_k_major", "rows 0", lambda: load_k_major(SMEM, DESC, 0, 32), ValueError, "rows"),
    case("reference.load_k_major", "k negative", lambda: load_k_major(SMEM, DESC, 8, -1), ValueError, "k"),
    case("reference.load_k_major", "elem_bytes 3", lambda: load_k_major(SMEM, DESC, 8, 32, 3), ValueError,
         "elem_bytes"),
    case("reference.load_k_major", "desc with reserved bits", lambda: load_k_major(SMEM, 1 << 15, 8, 32),
         ValueError, "desc"),
    case("reference.load_k_major", "32B swizzle, K too wide",
         lambda: load_k_major(SMEM, SmemDescriptor(0, 16, 256, swizzle="32B"), 8, 32), ValueError, "k"),
    case("reference.load_k_major", "rows huge (10**12)", lambda: load_k_major(SMEM, DESC, 10**12, 32), ValueError,
         "rows"),
    case("reference.wgmma_sp_m64nNk32", "a one warp", lambda: wgmma_sp_m64nNk32(A, WG_B, WG_C, WG_E), ValueError,
         "a"),
    case("reference.wgmma_sp_m64nNk32", "N = 12", lambda: wgmma_sp_m64nNk32(WG_A, torch.ones(32, 12, dtype=F16),
                                                                         WG_C, WG_E), ValueError, "b"),
    case("reference.wgmma_sp_m64nNk32", "b K = 16", lambda: wgmma_sp_m64nNk32(WG_A, WG_B[:16], WG_C, WG_E),
         ValueError, "b"),
    case("reference.wgmma_sp_m64nNk32", "b bf16", lambda: wgmma_sp_m64nNk32(WG_A, WG_B.bfloat16(), WG_C, WG_E),
         TypeError, "b"),
    case("reference.wgmma_sp_m64nNk32", "c for N = 16", lambda: wgmma_sp_m64nNk32(WG_A, WG_B, torch.zeros(4, 32, 8),
                                                                               WG_E), ValueError, "c"),
    case("reference.wgmma_sp_m64nNk32", "e one warp", lambda: wgmma_sp_m64nNk32(WG_A, WG_B, WG_C, E), ValueError,
         "e"),
    case("reference.wgmma_sp_m64nNk32", "illegal nibble",
         lambda: wgmma_sp_m64nNk32(WG_A, WG_B, WG_C, torch.zeros(4, 32, dtype=torch.uint32)), ValueError, "e"),
    case("reference.wgmma_sp_m64nNk32", "selector 2", lambda: wgmma_sp_m64nNk32(WG_A, WG_B, WG_C, WG_E, 2),
         ValueError, "selector"),
]


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ---------------------------------------------------------------------------------------------- properties
_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.lists(st.integers(-4, 6), min_size=0, max_size=8))
def test_ssmm_token_ids_in_range_or_named_error(vals):
    idx = torch.tensor(vals, dtype=torch.int64)
    if all(v == -1 or 0 <= v < 3 for v in vals):
        y = ssmm(W24, X, idx)
        assert y.shape == (len(vals), 16)
        assert bool((y[idx == -1] == 0).all())
    else:
        with pytest.raises(ValueError, match="token_idx"):
            ssmm(W24, X, idx)


@_FAST
@given(st.integers(0, 15), st.integers(0, 7), st.sampled_from([0x0, 0x1, 0x5, 0x6, 0xA, 0xB, 0xF]))
def test_any_illegal_nibble_is_rejected(lane_quad, group, nib):
    """An illegal nibble anywhere in the words the selector reads raises naming e."""
    words = WORDS.to(torch.int64).clone()
    w = int(words[lane_quad])
    w = (w & ~(0xF << (4 * group))) | (nib << (4 * group))
    words[lane_quad] = w
    with pytest.raises(ValueError, match="e"):
        mma_sp_m16n8k32(A, B, C, pack_e(words))


@_FAST
@given(st.integers(-64, 1 << 19))
def test_descriptor_field_range(v):
    if 0 <= v < (1 << 18) and v % 16 == 0:
        d = SmemDescriptor(v, 16, 16)
        assert SmemDescriptor.decode(d.encode()) == d
    else:
        with pytest.raises(ValueError, match="start_address"):
            SmemDescriptor(v, 16, 16)
