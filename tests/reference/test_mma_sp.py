"""One-warp tests of the mma.sp emulator against a plain matmul, and of the fragment helpers.

References at the top are written straight from the PTX ISA fragment tables (element ``i`` of a lane
lives in register ``i // 2``, half ``i % 2``), independently of the index tables in the module.
Tolerances: with integer-valued inputs every fp32 sum is exact, so results are compared with
``torch.equal``; with random normal inputs the emulator and the reference may round fp32 sums in a
different order, so they are compared with ``rtol=1e-6, atol=1e-5`` (inputs are fp16/bf16, products exact).
"""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.formats.sptc import LEGAL_NIBBLES, mma_metadata
from samoyeds_lab.reference.mma_sp import (
    mma_sp_m16n8k16,
    mma_sp_m16n8k32,
    pack_a,
    pack_b,
    pack_c,
    pack_e,
    sparse_a_to_dense,
    unpack_a,
    unpack_b,
    unpack_d,
)

DTYPES = [torch.float16, torch.bfloat16]
FP32_TOL = dict(rtol=1e-6, atol=1e-5)


# --------------------------------------------------------------------------- references (PTX tables)
def ptx_a(values: torch.Tensor) -> torch.Tensor:
    """A fragment of m16n8k32 (compressed 16x16): a_i row g (+8 for i in 2,3,6,7), col 2t + (i&1) (+8 for i>=4)."""
    a = torch.empty(32, 4, 2, dtype=values.dtype)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for i in range(8):
            row = g + (8 if i in (2, 3, 6, 7) else 0)
            col = 2 * t + (i & 1) + (8 if i >= 4 else 0)
            a[lane, i // 2, i % 2] = values[row, col]
    return a


def ptx_b(bmat: torch.Tensor) -> torch.Tensor:
    """B fragment of m16n8k32: element i at k = 2t + (i & 1) + 8 (i >> 1), column g."""
    b = torch.empty(32, 4, 2, dtype=bmat.dtype)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for i in range(8):
            b[lane, i // 2, i % 2] = bmat[2 * t + (i & 1) + 8 * (i >> 1), g]
    return b


def ptx_c(cmat: torch.Tensor) -> torch.Tensor:
    """C/D fragment: c_i row g + 8 (i >> 1), column 2t + (i & 1)."""
    c = torch.empty(32, 4)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for i in range(4):
            c[lane, i] = cmat[g + 8 * (i >> 1), 2 * t + (i & 1)]
    return c


def dense_tile(values: torch.Tensor, nib: torch.Tensor) -> torch.Tensor:
    """Dense 16 x (4·groups) A from stored values [16, 2·groups] and nibbles [16, groups]."""
    rows, groups = nib.shape
    out = torch.zeros(rows, 4 * groups, dtype=values.dtype)
    for r in range(rows):
        for j in range(groups):
            n = int(nib[r, j])
            out[r, 4 * j + (n & 3)] = values[r, 2 * j]
            out[r, 4 * j + (n >> 2)] = values[r, 2 * j + 1]
    return out


def logical_words(nib: torch.Tensor) -> torch.Tensor:
    """Logical metadata [16, groups/8] from nibbles [16, groups] (group j of a word in bits 4j..4j+3)."""
    rows, groups = nib.shape
    n = nib.to(torch.int64).view(rows, groups // 8, 8)
    return (n << (torch.arange(8) * 4)).sum(-1)


def all_nibbles(groups: int = 8, shift: int = 0) -> torch.Tensor:
    """[16, groups] nibbles using all 6 legal ones in every row and every group position."""
    r = torch.arange(16).view(16, 1)
    j = torch.arange(groups).view(1, groups)
    return torch.tensor(LEGAL_NIBBLES)[(r + j + shift) % 6]


def sample(dtype, seed, integer=False, k=32):
    g = torch.Generator().manual_seed(seed)
    if integer:
        values = torch.randint(-4, 5, (16, k // 2), generator=g).to(dtype)
        bmat = torch.randint(-4, 5, (k, 8), generator=g).to(dtype)
        cmat = torch.randint(-8, 9, (16, 8), generator=g).float()
    else:
        values = torch.randn(16, k // 2, generator=g).to(dtype)
        bmat = torch.randn(k, 8, generator=g).to(dtype)
        cmat = torch.randn(16, 8, generator=g)
    return values, bmat, cmat


def e_for(nib: torch.Tensor, selector: int) -> torch.Tensor:
    return pack_e(mma_metadata(logical_words(nib))[0, 0], selector)


# --------------------------------------------------------------------------- the instruction
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("shift", [0, 1, 2, 3, 4, 5])
def test_m16n8k32_exact_on_integers(dtype, selector, shift):
    values, bmat, cmat = sample(dtype, seed=shift, integer=True)
    nib = all_nibbles(shift=shift)
    expect = dense_tile(values, nib).float() @ bmat.float() + cmat
    d = mma_sp_m16n8k32(ptx_a(values), ptx_b(bmat), ptx_c(cmat), e_for(nib, selector), selector)
    assert d.dtype == torch.float32 and tuple(d.shape) == (32, 4)
    assert torch.equal(d, ptx_c(expect))
    assert torch.equal(unpack_d(d), expect)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("selector", [0, 1])
def test_m16n8k32_random(dtype, selector):
    values, bmat, cmat = sample(dtype, seed=10 + selector)
    g = torch.Generator().manual_seed(7)
    nib = torch.tensor(LEGAL_NIBBLES)[torch.randint(0, 6, (16, 8), generator=g)]
    expect = dense_tile(values, nib).double() @ bmat.double() + cmat.double()
    d = mma_sp_m16n8k32(pack_a(values), pack_b(bmat), pack_c(cmat), e_for(nib, selector), selector)
    torch.testing.assert_close(unpack_d(d).double(), expect, **FP32_TOL)


def test_sparse_a_to_dense_uses_every_nibble():
    values, _, _ = sample(torch.float16, seed=1)
    nib = all_nibbles()
    assert torch.equal(sparse_a_to_dense(pack_a(values), e_for(nib, 0), 0), dense_tile(values, nib))


@pytest.mark.parametrize("selector", [0, 1])
def test_unselected_lanes_are_ignored(selector):
    values, bmat, cmat = sample(torch.bfloat16, seed=3, integer=True)
    nib = all_nibbles(shift=2)
    e = e_for(nib, selector).to(torch.int64)
    ref = mma_sp_m16n8k32(pack_a(values), pack_b(bmat), pack_c(cmat), e, selector)
    lanes = torch.arange(32)
    unused = ((lanes & 3) >> 1) != selector  # lanes 4g+2(1-f), 4g+2(1-f)+1
    assert (e[unused] == 0).all()  # pack_e leaves them zero
    garbage = e.clone()
    garbage[unused] = torch.randint(0, 2**32, (int(unused.sum()),), generator=torch.Generator().manual_seed(0))
    garbage[unused.nonzero()[0]] = 0  # include an illegal (all-zero nibbles) word too
    d = mma_sp_m16n8k32(pack_a(values), pack_b(bmat), pack_c(cmat), garbage, selector)
    assert torch.equal(d, ref)


def test_b_fragment_element_mapping():
    """k = 2t + (i & 1) + 8 (i >> 1): probe B with one-hot columns and read A's columns back out of D."""
    values, _, _ = sample(torch.float16, seed=4, integer=True)
    nib = all_nibbles()
    dense = dense_tile(values, nib).float()
    a, e, c = pack_a(values), e_for(nib, 0), torch.zeros(32, 4)
    for k in range(32):
        bmat = torch.zeros(32, 8, dtype=torch.float16)
        bmat[k, k % 8] = 1
        b = ptx_b(bmat)
        assert torch.equal(b, pack_b(bmat))
        hit = (b == 1).nonzero().tolist()  # exactly one lane/register/half holds the 1
        assert len(hit) == 1
        ln, r, i = hit[0]
        assert ln >> 2 == k % 8 and 2 * (ln & 3) + i + 8 * r == k, (k, hit)
        d = unpack_d(mma_sp_m16n8k32(a, b, c, e, 0))
        assert torch.equal(d[:, k % 8], dense[:, k])
        assert torch.equal(d[:, [n for n in range(8) if n != k % 8]], torch.zeros(16, 7))


def test_fragment_helpers_follow_ptx_and_round_trip():
    values, bmat, cmat = sample(torch.bfloat16, seed=5)
    assert torch.equal(pack_a(values), ptx_a(values))
    assert torch.equal(unpack_a(pack_a(values)), values)
    assert torch.equal(pack_b(bmat), ptx_b(bmat))
    assert torch.equal(unpack_b(pack_b(bmat)), bmat)
    assert torch.equal(pack_c(cmat), ptx_c(cmat))
    assert torch.equal(unpack_d(pack_c(cmat)), cmat)
    # m16n8k16 fragments: first two registers of the k32 ones
    assert torch.equal(pack_a(values[:, :8]), ptx_a(values)[:, :2])
    assert torch.equal(unpack_a(pack_a(values[:, :8])), values[:, :8])
    assert torch.equal(pack_b(bmat[:16]), ptx_b(bmat)[:, :2])
    assert torch.equal(unpack_b(pack_b(bmat[:16])), bmat[:16])


def test_pack_e_lanes():
    words = torch.arange(1, 17, dtype=torch.int64) * 0x0F0F0F0F + 0x4  # distinct values < 2**32
    for sel in (0, 1):
        e = pack_e(words, sel).to(torch.int64)
        assert pack_e(words, sel).dtype == torch.uint32
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            want = int(words[2 * g + (t & 1)]) if t >> 1 == sel else 0
            assert int(e[lane]) == want
    e16 = pack_e(words[:8], 3, k=16).to(torch.int64)
    assert e16.tolist() == [int(words[lane >> 2]) if lane & 3 == 3 else 0 for lane in range(32)]


# --------------------------------------------------------------------------- layout sensitivity
def _swap_halves(e: torch.Tensor) -> torch.Tensor:
    w = e.to(torch.int64)
    return ((w & 0xFFFF) << 16) | (w >> 16)


def test_wrong_interleave_is_detected():
    """Putting row g+8 in the low half (or swapping the two K halves) must change D."""
    values, bmat, cmat = sample(torch.float16, seed=6, integer=True)
    nib = all_nibbles(shift=1)
    e = e_for(nib, 0)
    a, b, c = pack_a(values), pack_b(bmat), pack_c(cmat)
    good = mma_sp_m16n8k32(a, b, c, e, 0)
    assert not torch.equal(mma_sp_m16n8k32(a, b, c, _swap_halves(e), 0), good)
    swapped_lanes = e.to(torch.int64).view(8, 4)[:, [1, 0, 2, 3]].reshape(32)
    assert not torch.equal(mma_sp_m16n8k32(a, b, c, swapped_lanes, 0), good)
    # and the right metadata under the wrong selector reads only zeros -> illegal nibbles
    with pytest.raises(ValueError, match="illegal metadata nibble"):
        mma_sp_m16n8k32(a, b, c, e, 1)


# --------------------------------------------------------------------------- m16n8k16
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("selector", [0, 1, 2, 3])
def test_m16n8k16(dtype, selector):
    values, bmat, cmat = sample(dtype, seed=20 + selector, integer=True, k=16)
    nib = all_nibbles(groups=4, shift=selector)
    words = (nib.to(torch.int64) << (torch.arange(4) * 4)).sum(-1)  # [16] rows, 16 bits each
    regs = words[:8] | (words[8:] << 16)  # lane 4g+f: row g low, row g+8 high
    e = pack_e(regs, selector, k=16)
    expect = dense_tile(values, nib).float() @ bmat.float() + cmat
    d = mma_sp_m16n8k16(pack_a(values), pack_b(bmat), pack_c(cmat), e, selector)
    assert torch.equal(unpack_d(d), expect)


def test_k32_is_two_k16_steps():
    values, bmat, cmat = sample(torch.bfloat16, seed=8, integer=True)
    nib = all_nibbles(shift=3)
    mma = mma_metadata(logical_words(nib))[0, 0].to(torch.int64)  # [16] = [g, h]
    whole = mma_sp_m16n8k32(pack_a(values), pack_b(bmat), pack_c(cmat), pack_e(mma, 0), 0)
    c = pack_c(cmat)
    for h in range(2):  # k16 step h reads the h-th register of each pair
        e = pack_e(mma.view(8, 2)[:, h], 1 + h, k=16)
        c = mma_sp_m16n8k16(pack_a(values[:, 8 * h : 8 * h + 8]), pack_b(bmat[16 * h : 16 * h + 16]), c, e, 1 + h)
    assert torch.equal(c, whole)


# --------------------------------------------------------------------------- errors
def test_errors():
    values, bmat, cmat = sample(torch.float16, seed=9)
    nib = all_nibbles()
    a, b, c, e = pack_a(values), pack_b(bmat), pack_c(cmat), e_for(nib, 0)
    for f in (2, 3):
        with pytest.raises(ValueError, match="ptxas rejects"):
            mma_sp_m16n8k32(a, b, c, e, f)
    with pytest.raises(ValueError, match="ptxas rejects 4"):
        mma_sp_m16n8k16(a[:, :2], b[:, :2], c, e, 4)
    with pytest.raises(TypeError, match="same type"):
        mma_sp_m16n8k32(a, b.to(torch.bfloat16), c, e, 0)
    with pytest.raises(TypeError, match="c"):
        mma_sp_m16n8k32(a, b, c.half(), e, 0)
    with pytest.raises(ValueError, match="m16n8k32"):
        mma_sp_m16n8k32(a[:, :2], b[:, :2], c, e, 0)
    with pytest.raises(ValueError, match="e"):
        mma_sp_m16n8k32(a, b, c, e[:16], 0)
    with pytest.raises(TypeError, match="a"):
        mma_sp_m16n8k32(a.float(), b, c, e, 0)
    bad = e.to(torch.int64).clone()
    bad[5] = bad[5] & ~0xF0000  # lane 5 = 4g+1 with g=1: row 9, group 4
    with pytest.raises(ValueError, match=r"row 9, group 4 \(lane 5"):
        mma_sp_m16n8k32(a, b, c, bad, 0)
    with pytest.raises(ValueError, match="words"):
        pack_e(torch.zeros(8, dtype=torch.int64), 0)


def test_batch_of_warps_equals_one_warp_at_a_time():
    """Leading dimensions are independent warps: a [2, 3] batch equals six single-warp calls."""
    g = torch.Generator().manual_seed(11)
    legal = torch.tensor(LEGAL_NIBBLES)
    values = torch.randn(2, 3, 16, 16, generator=g).half()
    bmat = torch.randn(2, 3, 32, 8, generator=g).half()
    cmat = torch.randn(2, 3, 16, 8, generator=g)
    nib = legal[torch.randint(0, 6, (2, 3, 16, 8), generator=g)]
    words = torch.stack([mma_metadata(logical_words(n))[0, 0] for n in nib.view(6, 16, 8)]).view(2, 3, 16)
    for sel in (0, 1):
        d = mma_sp_m16n8k32(pack_a(values), pack_b(bmat), pack_c(cmat), pack_e(words, sel), sel)
        assert tuple(d.shape) == (2, 3, 32, 4)
        for i in range(2):
            for j in range(3):
                one = mma_sp_m16n8k32(
                    pack_a(values[i, j]), pack_b(bmat[i, j]), pack_c(cmat[i, j]), pack_e(words[i, j], sel), sel
                )
                assert torch.equal(d[i, j], one)
    bad = pack_e(words, 0).to(torch.int64)
    bad[1, 2, 4] = 0  # warp (1, 2), lane 4 = row 1 (and 9), groups 0-3
    with pytest.raises(ValueError, match=r"warp \(1, 2\), row 1, group 0"):
        mma_sp_m16n8k32(pack_a(values), pack_b(bmat), pack_c(cmat), bad, 0)
