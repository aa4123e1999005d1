"""The kernels' index math, re-run in Python against the emulator's layouts (no GPU).

The formulas below are copied from kernels/ssmm.cu, and each test first asserts that the exact source
line is still in the .cu, so the CUDA code and these checks cannot drift apart silently.
"""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab import tiles
from samoyeds_lab.formats import TokenSelection, compress_nm
from samoyeds_lab.formats.sptc import mma_metadata
from samoyeds_lab.kernels.build import KERNEL_DIR
from samoyeds_lab.kernels.launch import smem_bytes, split_plan, token_tiles
from samoyeds_lab.reference import tiled as tiled_mod
from samoyeds_lab.reference.mma_sp import pack_a, pack_b, pack_e

from ..formats.helpers import random_24_rows

SSMM = (KERNEL_DIR / "sptc_common.cuh").read_text() + (KERNEL_DIR / "ssmm.cu").read_text()  # + the header it includes


def _requires(*lines: str) -> None:
    for line in lines:
        assert line in SSMM, f"kernels/ssmm.cu changed: {line!r} not found; update this test with it"


def a_off(row, chunk):
    return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4)


def b_off(tok, chunk):
    return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4)


def ldmatrix_x4(smem: torch.Tensor, addr: list[int]) -> torch.Tensor:
    """PTX ldmatrix.m8n8.x4.b16: lane 8q+r names row r of matrix q; lane l gets row l//4, halves 2(l%4), +1."""
    out = torch.empty(32, 4, 2, dtype=smem.dtype)
    for q in range(4):
        for lane in range(32):
            base = addr[8 * q + lane // 4] // 2
            out[lane, q] = smem[base + 2 * (lane % 4): base + 2 * (lane % 4) + 2]
    return out


def test_swizzles_are_permutations_and_conflict_free():
    _requires("int a_off(int row, int chunk) { return row * 32 + ((chunk ^ ((row >> 2) & 1)) << 4); }",
              "int b_off(int tok, int chunk) { return tok * 64 + ((chunk ^ ((tok >> 1) & 3)) << 4); }")
    assert sorted(a_off(r, c) for r in range(tiles.BLOCK_M) for c in range(2)) == list(range(0, tiles.BLOCK_M * 32, 16))
    assert sorted(b_off(n, c) for n in range(tiles.BLOCK_N) for c in range(4)) == list(range(0, tiles.BLOCK_N * 64, 16))
    # each 8-address phase of one ldmatrix touches 8 distinct 4-bank groups (no bank conflict)
    for base in range(0, 16, 8):
        for c in range(2):
            assert len({(a_off(base + r, c) // 16) % 8 for r in range(8)}) == 8
    for base in range(0, 64, 8):
        for c in range(4):
            assert len({(b_off(base + r, c) // 16) % 8 for r in range(8)}) == 8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ldmatrix_addressing_gives_the_emulator_fragments(dtype):
    _requires("const int row = wm * WARP_TILE_M + i * MMA_M + (lane & 15);",
              "ldmatrix_x4(a[i], sa + a_off(row, lane >> 4));",
              "const int tok = wn * WARP_TILE_N + j * MMA_N + (lane & 7);",
              "ldmatrix_x4(b[j], sb + b_off(tok, lane >> 3));")
    g = torch.Generator().manual_seed(0)
    a_tile = torch.randn(16, 16, generator=g).to(dtype)  # compressed 16 x 16 (one m16 tile, one k-step)
    x_tile = torch.randn(8, 32, generator=g).to(dtype)  # 8 tokens x 32 K
    sa = torch.zeros(16 * 16, dtype=dtype)
    for r in range(16):
        for c in range(16):
            sa[a_off(r, c // 8) // 2 + c % 8] = a_tile[r, c]
    sb = torch.zeros(8 * 32, dtype=dtype)
    for n in range(8):
        for k in range(32):
            sb[b_off(n, k // 8) // 2 + k % 8] = x_tile[n, k]
    a = ldmatrix_x4(sa, [a_off(lane & 15, lane >> 4) for lane in range(32)])
    b = ldmatrix_x4(sb, [b_off(lane & 7, lane >> 3) for lane in range(32)])
    assert torch.equal(a, pack_a(a_tile))
    assert torch.equal(b, pack_b(x_tile.T.contiguous()))


def test_metadata_fetch_is_the_emulator_register_and_torchs_cutlass_word():
    """Lane l of the kernel reads word 2(l>>2) + (l&1) of its (tile, k-step): exactly pack_e(selector 0) on
    the lanes the instruction reads. tests/formats/test_sptc.py::test_matches_torch_cutlass_meta proves
    those words equal torch's CUTLASS-reordered metadata; here the kernel's address is checked against it."""
    _requires("e[i] = sm[(wm * FRAGS_M + i) * 16 + 2 * g + (lane & 1)];",
              "cp_async16(dst, meta + ((i64)mt * ksteps + ks) * 16 + chunk * 4, 16);")
    conv = pytest.importorskip("torch.sparse._semi_structured_conversions")
    rows, cols = 64, 96
    dense = random_24_rows(rows, cols, torch.Generator().manual_seed(3)).half()
    dense = torch.where(dense == 0, torch.zeros(()), dense).half()
    if not bool(((dense.view(rows, -1, 4) != 0).sum(-1) == 2).all()):
        pytest.skip("helper did not give exactly two nonzeros per group")
    w = compress_nm(dense)
    meta = mma_metadata(w.sptc_metadata()).to(torch.int64)
    flat = meta.reshape(-1)
    ksteps = meta.shape[1]
    _, reordered = conv.sparse_semi_structured_from_dense_cutlass(dense)
    words = reordered.contiguous().view(-1).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    words = words.view(cols // 32, rows // 32, 8, 2, 2)  # [ks, b, g, s, h]
    for mt in range(meta.shape[0]):
        for ks in range(ksteps):
            e = torch.tensor([int(flat[(mt * ksteps + ks) * 16 + 2 * (lane >> 2) + (lane & 1)]) for lane in range(32)])
            read = torch.tensor([lane & 3 < 2 for lane in range(32)])
            assert torch.equal(e[read], pack_e(meta[mt, ks], 0).to(torch.int64)[read])
            for lane in range(32):
                if lane & 3 < 2:
                    assert int(e[lane]) == int(words[ks, mt // 2, lane >> 2, mt % 2, lane & 1])


def test_warp_fragment_map_matches_the_tiled_emulator():
    _requires("const int wm = warp / WARPS_N, wn = warp % WARPS_N;  // same order as reference/tiled.py")
    mtiles = 13  # a ragged M tail
    for bm in range(2):
        for bn in range(2):
            kernel = []
            for warp in range(tiles.WARPS):
                wm, wn = warp // tiles.WARPS_N, warp % tiles.WARPS_N
                for i in range(tiles.FRAGS_M):
                    mt = (bm * tiles.BLOCK_M + wm * tiles.WARP_TILE_M + i * tiles.MMA_M) // tiles.MMA_M
                    if mt >= mtiles:
                        continue
                    for j in range(tiles.FRAGS_N):
                        kernel.append((mt, (bn * tiles.BLOCK_N + wn * tiles.WARP_TILE_N + j * tiles.MMA_N) // tiles.MMA_N))
            assert kernel == tiled_mod._block_fragments(bm, bn, mtiles)


def test_smem_budget():
    # 2:4 and 1:2 Samoyeds fit the 99 KB of consumer Ampere/Ada; 1:4 needs A100/H100-class opt-in memory
    assert smem_bytes("spmm") < 99 * 1024
    assert smem_bytes("ssmm", 1, 2) < 99 * 1024
    assert smem_bytes("ssmm", 1, 4) < 163 * 1024
    assert smem_bytes("dense_mm") > smem_bytes("spmm") - 1  # dense A stage is twice the compressed one
    with pytest.raises(ValueError, match="kind"):
        smem_bytes("nope")


def test_token_tiles_partition_selection_offsets():
    topk = torch.tensor([[0, 2], [0, 1], [1, 2], [2, 0]] * 40)
    sel = TokenSelection.from_topk(topk, 4, pad_to=tiles.TOKEN_PAD)
    for offs in (sel.padded_offsets, sel.offsets):
        tt = token_tiles(offs)
        covered = []
        for e, s, c in zip(tt.expert.tolist(), tt.start.tolist(), tt.count.tolist()):
            assert 1 <= c <= tiles.BLOCK_N and offs[e] <= s and s + c <= offs[e + 1]
            covered.extend(range(s, s + c))
        assert covered == list(range(int(offs[-1])))
        assert 3 not in tt.expert.tolist()  # expert 3 is empty: no tile
    assert len(token_tiles([0, 0])) == 0
    with pytest.raises(ValueError, match="offsets"):
        token_tiles([0, 5, 3])


@pytest.mark.parametrize("ksteps,unit,blocks,split_k", [(448, 4, 1, None), (448, 4, 400, None), (7, 1, 1, 3),
                                                        (4, 4, 1, 8), (1, 1, 1, None), (64, 4, 2, 5)])
def test_split_plan_covers_k_on_window_boundaries(ksteps, unit, blocks, split_k):
    p = split_plan(ksteps, unit, blocks, split_k=split_k, sms=132)
    assert p.steps_per_split % unit == 0
    assert (p.splits - 1) * p.steps_per_split < ksteps <= p.splits * p.steps_per_split
    if split_k is None and blocks >= 2 * 132:
        assert p.splits == 1
    with pytest.raises(ValueError, match="split_k"):
        split_plan(8, 1, 1, split_k=0)
