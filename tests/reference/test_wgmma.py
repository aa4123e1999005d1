"""Tests of the warpgroup sparse-wgmma emulator: descriptors, swizzles, K-major layouts and the product.

References here are written from the PTX ISA text (Matrix Descriptor Format table, the canonical-layout
examples' "Exact layout" CuTe formulas, the m64nNk32 accumulator layout) and compared with the module;
the product is compared with a plain dense matmul. With integer-valued inputs every fp32 sum is exact, so
the results are compared with ``torch.equal``.

Units: CuTe strides in the PTX examples are in *elements* (tf32: 4 bytes); the tests multiply the CuTe
offset by the element size to get a byte offset and then apply ``Swizzle<B,4,3>`` to that *byte* address.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab.formats import compress_nm
from samoyeds_lab.formats.sptc import mma_metadata
from samoyeds_lab.reference.mma_sp import pack_a, pack_e
from samoyeds_lab.reference.wgmma import (
    SWIZZLES,
    SmemDescriptor,
    k_major_offsets,
    load_b,
    load_k_major,
    pack_wg_a,
    pack_wg_c,
    pack_wg_e,
    store_k_major,
    swizzle_address,
    unpack_wg_d,
    wgmma_sp_dense_a,
    wgmma_sp_m64nNk32,
)

DTYPES = [torch.float16, torch.bfloat16]


# --------------------------------------------------------------------------- descriptor
field = st.integers(0, (1 << 14) - 1).map(lambda v: v << 4)


@settings(max_examples=200, deadline=None)
@given(start=field, lbo=field, sbo=field, base=st.integers(0, 7), swz=st.sampled_from(SWIZZLES))
def test_descriptor_round_trip(start, lbo, sbo, base, swz):
    d = SmemDescriptor(start, lbo, sbo, base, swz)
    bits = d.encode()
    assert 0 <= bits < 1 << 64
    assert SmemDescriptor.decode(bits) == d
    # the same register seen as a signed int64 decodes the same
    signed = bits - (1 << 64) if bits >= 1 << 63 else bits
    assert SmemDescriptor.decode(signed) == d
    # fields in their documented bit positions
    assert bits & 0x3FFF == start >> 4
    assert (bits >> 16) & 0x3FFF == lbo >> 4
    assert (bits >> 32) & 0x3FFF == sbo >> 4
    assert (bits >> 49) & 0x7 == base
    assert bits >> 62 == SWIZZLES.index(swz)


@settings(max_examples=100, deadline=None)
@given(raw=st.integers(0, (1 << 64) - 1))
def test_decode_encode_round_trip_on_valid_bits(raw):
    valid = 0x3FFF | (0x3FFF << 16) | (0x3FFF << 32) | (0x7 << 49) | (0x3 << 62)
    bits = raw & valid
    assert SmemDescriptor.decode(bits).encode() == bits


def test_descriptor_hand_worked_bits():
    d = SmemDescriptor(
        start_address=0x1230, leading_byte_offset=64, stride_byte_offset=1024, base_offset=5, swizzle="64B"
    )
    # 0x123 in bits 13-0, 64>>4 = 4 in 29-16, 1024>>4 = 0x40 in 45-32, 5 in 51-49, 2 (64B) in 63-62
    assert d.encode() == 0x800A_0040_0004_0123
    assert SmemDescriptor(0, 0, 0, swizzle="128B").encode() == 0x4000_0000_0000_0000
    assert SmemDescriptor(0, 0, 0, swizzle="32B").encode() == 0xC000_0000_0000_0000
    assert SmemDescriptor(0, 0, 0, swizzle="none").encode() == 0
    # the PTX example "K-major, no-swizzling, tf32": LBO 64*4 bytes encodes 16, SBO 32*4 bytes encodes 8
    ex = SmemDescriptor(0, 64 * 4, 32 * 4).encode()
    assert (ex >> 16) & 0x3FFF == 16 and (ex >> 32) & 0x3FFF == 8
    # highest start address
    assert SmemDescriptor((1 << 18) - 16, 0, 0).encode() == 0x3FFF


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(start_address=8, leading_byte_offset=0, stride_byte_offset=0), ValueError, "start_address"),
        (dict(start_address=1 << 18, leading_byte_offset=0, stride_byte_offset=0), ValueError, "start_address"),
        (dict(start_address=-16, leading_byte_offset=0, stride_byte_offset=0), ValueError, "start_address"),
        (dict(start_address=0, leading_byte_offset=24, stride_byte_offset=0), ValueError, "leading_byte_offset"),
        (dict(start_address=0, leading_byte_offset=1 << 18, stride_byte_offset=0), ValueError, "leading_byte_offset"),
        (dict(start_address=0, leading_byte_offset=0, stride_byte_offset=1), ValueError, "stride_byte_offset"),
        (dict(start_address=0, leading_byte_offset=0, stride_byte_offset=1 << 20), ValueError, "stride_byte_offset"),
        (dict(start_address=0, leading_byte_offset=0, stride_byte_offset=0, base_offset=8), ValueError, "base_offset"),
        (dict(start_address=0, leading_byte_offset=0, stride_byte_offset=0, swizzle="16B"), ValueError, "swizzle"),
        (dict(start_address=16.0, leading_byte_offset=0, stride_byte_offset=0), TypeError, "start_address"),
    ],
)
def test_descriptor_bad_fields(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        SmemDescriptor(**kwargs)


@pytest.mark.parametrize("bit", [14, 15, 30, 31, 46, 47, 48, 52, 61])
def test_decode_rejects_reserved_bits(bit):
    with pytest.raises(ValueError, match="desc: reserved"):
        SmemDescriptor.decode(1 << bit)


def test_decode_rejects_out_of_range():
    with pytest.raises(ValueError, match="desc"):
        SmemDescriptor.decode(1 << 64)
    with pytest.raises(ValueError, match="desc"):
        SmemDescriptor.decode(-(1 << 63) - 1)
    with pytest.raises(TypeError, match="desc"):
        SmemDescriptor.decode("0")


# --------------------------------------------------------------------------- swizzle
def test_swizzle_64b_and_128b_formulas():
    base = 4096  # 1024-aligned
    rows, chunks = np.meshgrid(np.arange(16), np.arange(4), indexing="ij")
    got = swizzle_address(base + rows * 64 + chunks * 16, "64B") - base
    assert np.array_equal(got, rows * 64 + ((chunks ^ ((rows >> 1) & 3)) << 4))
    rows, chunks = np.meshgrid(np.arange(16), np.arange(8), indexing="ij")
    got = swizzle_address(base + rows * 128 + chunks * 16, "128B") - base
    assert np.array_equal(got, rows * 128 + ((chunks ^ (rows & 7)) << 4))
    # 32B: rows of 32 bytes, chunk ^= (row >> 2) & 1
    rows, chunks = np.meshgrid(np.arange(16), np.arange(2), indexing="ij")
    got = swizzle_address(base + rows * 32 + chunks * 16, "32B") - base
    assert np.array_equal(got, rows * 32 + ((chunks ^ ((rows >> 2) & 1)) << 4))
    # bytes inside a 16-byte chunk never move; no swizzle is the identity
    assert swizzle_address(128 + 5, "128B") == 128 + 16 + 5
    assert swizzle_address(12345, "none") == 12345


@pytest.mark.parametrize("swz, atom", [("none", 128), ("32B", 256), ("64B", 512), ("128B", 1024)])
def test_swizzle_is_a_bijection_on_each_atom(swz, atom):
    for base in (0, atom, 7 * atom):
        addr = base + np.arange(atom)
        out = swizzle_address(addr, swz)
        assert np.array_equal(np.sort(out), addr)
    # and it is an involution (XOR with bits it does not change)
    addr = np.arange(4 * atom)
    assert np.array_equal(swizzle_address(swizzle_address(addr, swz), swz), addr)


def test_swizzle_bad_inputs():
    with pytest.raises(ValueError, match="swizzle"):
        swizzle_address(0, "256B")
    with pytest.raises(ValueError, match="addr"):
        swizzle_address(-16, "128B")
    with pytest.raises(TypeError, match="addr"):
        swizzle_address(np.zeros(3, dtype=np.float32), "128B")


# --------------------------------------------------------------------------- canonical layouts (PTX examples)
def cute_offset(shape, stride, row, col):
    """CuTe ((a,b),(c,d)):((s1,s2),(s3,s4)) at (row, col): row = r0 + a·r1, col = c0 + c·c1 (elements)."""
    (a, _b), (c, _d) = shape
    (s1, s2), (s3, s4) = stride
    return (row % a) * s1 + (row // a) * s2 + (col % c) * s3 + (col // c) * s4


def test_ptx_example_k_major_no_swizzle_tf32():
    # "Exact layout : Swizzle<0,4,3> o ((8,2),(4,4)):((4,32),(1,64))", LBO = 64*sizeof(tf32), SBO = 32*sizeof(tf32)
    desc = SmemDescriptor(0, leading_byte_offset=64 * 4, stride_byte_offset=32 * 4).encode()
    got = k_major_offsets(desc, rows=16, k=16, elem_bytes=4)
    shape, stride = ((8, 2), (4, 4)), ((4, 32), (1, 64))
    want = np.array([[4 * cute_offset(shape, stride, r, c) for c in range(16)] for r in range(16)])
    assert np.array_equal(got, want)
    # the same with a start address: everything shifts by it
    desc2 = SmemDescriptor(2048, 64 * 4, 32 * 4).encode()
    assert np.array_equal(k_major_offsets(desc2, 16, 16, 4), want + 2048)


def test_ptx_example_k_major_32b_swizzle_tf32():
    # "Exact layout : Swizzle<1,4,3> o ((8,2),(4,4)):((8,64),(1,4))", SBO = 64*sizeof(tf32), LBO unused ("1 assumed").
    # Interpretation: the column mode (4,4):(1,4) continues K chunks at stride T = 4 elements = 16 bytes, so
    # chunks 2 and 3 (columns 8..15) would sit on the next 32-byte row: the formula maps (row 0, col 8) and
    # (row 1, col 0) to the same offset. A 32-byte swizzle row holds 8 tf32, so only columns 0..7 describe a
    # real layout; the emulator reproduces those and rejects a K extent wider than the row.
    shape, stride = ((8, 2), (4, 4)), ((8, 64), (1, 4))
    assert cute_offset(shape, stride, 0, 8) == cute_offset(shape, stride, 1, 0)
    desc = SmemDescriptor(0, leading_byte_offset=16, stride_byte_offset=64 * 4, swizzle="32B").encode()
    got = k_major_offsets(desc, rows=16, k=8, elem_bytes=4)
    want = np.array(
        [[swizzle_address(4 * cute_offset(shape, stride, r, c), "32B") for c in range(8)] for r in range(16)]
    )
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="k:.*32-byte"):
        k_major_offsets(desc, rows=16, k=16, elem_bytes=4)


@pytest.mark.parametrize("swz, width", [("32B", 32), ("64B", 64), ("128B", 128)])
def test_swizzled_k_major_general_formula(swz, width):
    # canonical ((8,m),(T,2k)):((W/eb, SBO),(1,T)) in fp16 elements, then the byte swizzle
    sbo = 8 * width * 2  # leave a gap between 8-row groups
    desc = SmemDescriptor(1024 * 3, 16, sbo, swizzle=swz).encode()
    k = width // 2
    got = k_major_offsets(desc, rows=24, k=k)
    T = 8
    shape, stride = ((8, 3), (T, k // T)), ((width // 2, sbo // 2), (1, T))  # elements
    want = np.array(
        [[swizzle_address(1024 * 3 + 2 * cute_offset(shape, stride, r, c), swz) for c in range(k)] for r in range(24)]
    )
    assert np.array_equal(got, want)


def test_k_advance_inside_a_128b_atom():
    # CUTLASS-style K stepping: start_address += 64 bytes selects K 32..63 of a 128-byte swizzled row,
    # because the swizzle acts on absolute address bits
    full = k_major_offsets(SmemDescriptor(2048, 16, 1024, swizzle="128B").encode(), rows=16, k=64)
    step = k_major_offsets(SmemDescriptor(2048 + 64, 16, 1024, swizzle="128B").encode(), rows=16, k=32)
    assert np.array_equal(step, full[:, 32:])


def test_k_major_offsets_errors():
    with pytest.raises(ValueError, match="base_offset"):
        k_major_offsets(SmemDescriptor(0, 16, 1024, base_offset=1, swizzle="128B").encode(), 8, 32)
    with pytest.raises(ValueError, match="k:"):
        k_major_offsets(SmemDescriptor(0, 16, 256, swizzle="32B").encode(), 8, 32)  # 64 bytes > 32
    with pytest.raises(ValueError, match="elem_bytes"):
        k_major_offsets(0, 8, 32, elem_bytes=3)
    with pytest.raises(ValueError, match="rows"):
        k_major_offsets(0, 0, 32)


# --------------------------------------------------------------------------- store / load
DESCS = [
    SmemDescriptor(0, leading_byte_offset=128 * 8, stride_byte_offset=128),  # core matrices along N contiguous
    SmemDescriptor(256, leading_byte_offset=128, stride_byte_offset=512),  # 4 K chunks of one 8-row group contiguous
    SmemDescriptor(1024, 16, 512, swizzle="64B"),
    SmemDescriptor(2048, 16, 1024, swizzle="128B"),
]


@pytest.mark.parametrize("desc", DESCS, ids=lambda d: d.swizzle + str(d.start_address))
def test_store_load_round_trip(desc):
    rng = np.random.default_rng(0)
    smem = np.zeros(48 * 1024, dtype=np.uint8)
    m = rng.integers(0, 1 << 16, size=(64, 32), dtype=np.uint16)
    store_k_major(smem, desc.encode(), m)
    assert np.array_equal(load_k_major(smem, desc.encode(), 64, 32), m)
    # exactly 64 * 32 * 2 bytes were written (distinct addresses), little-endian
    addr = k_major_offsets(desc, 64, 32)
    assert np.unique(addr).size == addr.size
    assert np.array_equal(smem[addr], (m & 0xFF).astype(np.uint8))
    assert np.array_equal(smem[addr + 1], (m >> 8).astype(np.uint8))


def test_store_load_4_byte_elements_and_torch_input():
    smem = np.zeros(8192, dtype=np.uint8)
    desc = SmemDescriptor(0, 256, 128).encode()
    m = np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 0x01010101
    store_k_major(smem, desc, m)
    assert np.array_equal(load_k_major(smem, desc, 16, 16, elem_bytes=4), m)
    t = torch.randn(8, 32).to(torch.bfloat16)
    d2 = SmemDescriptor(4096, 16, 1024, swizzle="128B").encode()
    store_k_major(smem, d2, t)
    back = torch.from_numpy(load_k_major(smem, d2, 8, 32).view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(back, t)


def test_store_load_errors():
    smem = np.zeros(1024, dtype=np.uint8)
    desc = SmemDescriptor(512, 16, 1024, swizzle="128B").encode()  # 8 rows x 128 B from 512 -> needs 1536 bytes
    with pytest.raises(ValueError, match="outside smem"):
        load_k_major(smem, desc, 8, 32)
    with pytest.raises(ValueError, match="outside smem"):
        store_k_major(smem, desc, np.zeros((8, 32), dtype=np.uint16))
    with pytest.raises(TypeError, match="smem"):
        load_k_major(smem.astype(np.int32), 0, 8, 8)
    with pytest.raises(TypeError, match="smem"):
        load_k_major(list(smem), 0, 8, 8)
    with pytest.raises(TypeError, match="matrix_u16"):
        store_k_major(smem, 0, np.zeros((8, 8), dtype=np.int16))
    with pytest.raises(ValueError, match="matrix_u16"):
        store_k_major(smem, 0, np.zeros(8, dtype=np.uint16))
    with pytest.raises(ValueError, match="same shared-memory address"):  # LBO = 0: K chunks alias
        store_k_major(smem, SmemDescriptor(0, 0, 128).encode(), np.zeros((8, 16), dtype=np.uint16))


# --------------------------------------------------------------------------- the instruction
def random_24(rows, cols, gen):
    """Integer-valued 2:4 matrix: two nonzeros in {-3..3}\\{0} at random positions of each group of 4."""
    keep = torch.rand(rows, cols // 4, 4, generator=gen).argsort(-1)[..., :2]
    sign = torch.randint(0, 2, (rows, cols // 4, 2), generator=gen) * 2 - 1
    vals = torch.randint(1, 4, (rows, cols // 4, 2), generator=gen) * sign
    dense = torch.zeros(rows, cols // 4, 4)
    dense.scatter_(-1, keep, vals.float())
    return dense.view(rows, cols)


def wg_fragments(dense_a, dtype, selector, other=None):
    """a [4,32,4,2], e [4,32] for a dense 64x32 2:4 A built with the project's format helpers.

    ``other`` (another dense 2:4 A) fills the lanes the selector does not name, so reading the wrong pair
    of lanes gives a wrong product instead of an error.
    """
    w = compress_nm(dense_a.to(dtype))
    a = pack_a(w.values.view(4, 16, 16))
    words = mma_metadata(w.sptc_metadata())[:, 0, :]  # [4 warps, 16]
    e = pack_e(words, selector).to(torch.int64)
    if other is not None:
        other_words = mma_metadata(compress_nm(other.to(dtype)).sptc_metadata())[:, 0, :]
        e = e + pack_e(other_words, 1 - selector).to(torch.int64)
    return a, e


def acc_index(n):
    """(row, col) of D held by [warp, lane, reg], straight from the m64nN f32 accumulator layout."""
    w = torch.arange(4).view(4, 1, 1)
    lane = torch.arange(32).view(1, 32, 1)
    i = torch.arange(n // 2).view(1, 1, n // 2)
    g, t = lane >> 2, lane & 3
    j, h, q = i // 4, (i >> 1) & 1, i & 1
    return (16 * w + g + 8 * h).expand(4, 32, n // 2), (8 * j + 2 * t + q).expand(4, 32, n // 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [8, 64, 256])
@pytest.mark.parametrize("selector", [0, 1])
def test_wgmma_against_dense_matmul(dtype, n, selector):
    gen = torch.Generator().manual_seed(n * 10 + selector)
    dense_a = random_24(64, 32, gen)
    a, e = wg_fragments(dense_a, dtype, selector, other=random_24(64, 32, gen))
    b = torch.randint(-3, 4, (32, n), generator=gen).to(dtype)
    cmat = torch.randint(-50, 51, (64, n), generator=gen).float()
    rows, cols = acc_index(n)
    c = cmat[rows, cols]
    d = wgmma_sp_m64nNk32(a, b, c, e, selector)
    assert d.dtype == torch.float32 and d.shape == (4, 32, n // 2)
    want = dense_a @ b.float() + cmat
    assert torch.equal(d, want[rows, cols])
    assert torch.equal(wgmma_sp_dense_a(a, e, selector), dense_a.to(dtype))
    # the module's warpgroup helpers agree with the fragments built here
    assert torch.equal(pack_wg_c(cmat), c)
    assert torch.equal(unpack_wg_d(d), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wg_pack_helpers(dtype):
    gen = torch.Generator().manual_seed(7)
    dense_a = random_24(64, 32, gen)
    w = compress_nm(dense_a.to(dtype))
    for s in (0, 1):
        a, e = wg_fragments(dense_a, dtype, s)
        assert torch.equal(pack_wg_a(w.values), a)
        assert torch.equal(pack_wg_e(w.sptc_metadata(), s).to(torch.int64), e)


@pytest.mark.parametrize("swz", ["none", "64B", "128B"])
def test_wgmma_with_b_from_shared_memory(swz):
    gen = torch.Generator().manual_seed(3)
    n, dtype = 64, torch.bfloat16
    dense_a = random_24(64, 32, gen)
    a, e = wg_fragments(dense_a, dtype, 0)
    b = torch.randint(-3, 4, (32, n), generator=gen).to(dtype)
    if swz == "none":  # core matrix (8 rows x 16 B) contiguous, K chunks 128 B apart, 8-row groups 512 B apart
        desc = SmemDescriptor(1024, leading_byte_offset=128, stride_byte_offset=512)
    else:
        desc = SmemDescriptor(1024, 16, 8 * {"64B": 64, "128B": 128}[swz], swizzle=swz)
    smem = np.zeros(32 * 1024, dtype=np.uint8)
    store_k_major(smem, desc.encode(), b.T.contiguous())  # Bᵀ rows = columns of B, K contiguous
    b_read = load_b(smem, desc.encode(), n, dtype)
    assert torch.equal(b_read, b)
    c = torch.zeros(4, 32, n // 2)
    rows, cols = acc_index(n)
    assert torch.equal(wgmma_sp_m64nNk32(a, b_read, c, e), (dense_a @ b.float())[rows, cols])


def test_wgmma_a_fragments_are_per_warp():
    # swapping the fragments of two warps swaps the corresponding 16-row blocks of D
    gen = torch.Generator().manual_seed(11)
    dense_a = random_24(64, 32, gen)
    a, e = wg_fragments(dense_a, torch.float16, 0)
    b = torch.randint(-3, 4, (32, 16), generator=gen).half()
    c = torch.zeros(4, 32, 8)
    d = wgmma_sp_m64nNk32(a, b, c, e)
    perm = [1, 0, 2, 3]
    d2 = wgmma_sp_m64nNk32(a[perm], b, c, e[perm])
    assert torch.equal(d2, d[perm])


def _good(n=16, dtype=torch.float16):
    gen = torch.Generator().manual_seed(0)
    a, e = wg_fragments(random_24(64, 32, gen), dtype, 0)
    return a, torch.ones(32, n, dtype=dtype), torch.zeros(4, 32, n // 2), e


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda a, b, c, e: (a[:3], b, c, e, 0), ValueError, "a:"),
        (lambda a, b, c, e: (a.float(), b, c, e, 0), TypeError, "a:"),
        (lambda a, b, c, e: (a.numpy(), b, c, e, 0), TypeError, "a:"),
        (lambda a, b, c, e: (a, b.bfloat16(), c, e, 0), TypeError, "b:"),
        (lambda a, b, c, e: (a, b[:16], c, e, 0), ValueError, "b:"),
        (lambda a, b, c, e: (a, torch.ones(32, 12, dtype=b.dtype), torch.zeros(4, 32, 6), e, 0), ValueError, "b:"),
        (lambda a, b, c, e: (a, torch.ones(32, 264, dtype=b.dtype), torch.zeros(4, 32, 132), e, 0), ValueError, "b:"),
        (lambda a, b, c, e: (a, b, c[..., :4], e, 0), ValueError, "c:"),
        (lambda a, b, c, e: (a, b, c.half(), e, 0), TypeError, "c:"),
        (lambda a, b, c, e: (a, b, c, e[:, :16], 0), ValueError, "e:"),
        (lambda a, b, c, e: (a, b, c, e.float(), 0), TypeError, "e:"),
        (lambda a, b, c, e: (a, b, c, e, 2), ValueError, "selector"),
        (lambda a, b, c, e: (a, b, c, e, -1), ValueError, "selector"),
        (lambda a, b, c, e: (a, b, c, e, "0"), TypeError, "selector"),
        (lambda a, b, c, e: (a, b, c, e, 1), ValueError, "e: warp 0"),  # selector 1 lanes hold 0 = illegal nibbles
    ],
)
def test_wgmma_bad_inputs(change, exc, match):
    args = change(*_good())
    with pytest.raises(exc, match=match):
        wgmma_sp_m64nNk32(*args)


def test_illegal_nibble_names_warp_and_rows():
    a, b, c, e = _good()
    e = e.clone()
    e[2, 4] = (e[2, 4] & ~0xF) | 0x1  # lane 4 (g = 1) of warp 2: row 33's group 0 descending (1, 0)
    with pytest.raises(ValueError, match=r"e: warp 2 \(A rows 32\.\.47\)"):
        wgmma_sp_m64nNk32(a, b, c, e)


def test_load_b_bad_inputs():
    smem = np.zeros(8192, dtype=np.uint8)
    with pytest.raises(TypeError, match="dtype"):
        load_b(smem, 0, 8, torch.float32)
    with pytest.raises(ValueError, match="n:"):
        load_b(smem, 0, 12)
