"""N:M format: round trips over awkward shapes/dtypes, metadata encoding, bad input."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from samoyeds_lab.errors import FormatError
from samoyeds_lab.formats import NMWeight, compress_nm, pack_nibbles, unpack_nibbles

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
ROWS = [1, 19, 99]


def random_nm(rows, cols, n, m, dtype, seed=0, fill=1.0):
    """A random matrix with at most n nonzeros per group of m (exactly n where fill=1)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols // m, m, generator=g)
    keep = torch.rand(rows, cols // m, m, generator=g).argsort(-1)[..., :n]
    mask = torch.zeros_like(w, dtype=torch.bool).scatter_(-1, keep, True)
    mask &= torch.rand(rows, cols // m, m, generator=g) < fill
    return (w * mask).reshape(rows, cols).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 2), (1, 4), (2, 8), (3, 16), (15, 16)])
def test_round_trip(rows, n, m, dtype):
    cols = m * 6
    dense = random_nm(rows, cols, n, m, dtype, seed=rows)
    w = compress_nm(dense, n, m)
    assert w.values.shape == (rows, cols * n // m) and w.values.dtype == dtype
    assert w.positions.dtype == torch.uint8
    assert torch.equal(w.to_dense(), dense)
    pos = w.positions.view(rows, -1, n).to(torch.int64)
    assert bool((pos[..., 1:] > pos[..., :-1]).all())
    assert w.nbytes == w.values.numel() * dense.element_size() + math.ceil(w.values.numel() * math.ceil(math.log2(m)) / 8)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    groups=st.integers(1, 12),
    nm=st.sampled_from([(2, 4), (1, 2), (1, 3), (2, 5), (4, 8), (7, 16)]),
    fill=st.floats(0.0, 1.0),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(rows, groups, nm, fill, dtype, seed):
    n, m = nm
    dense = random_nm(rows, groups * m, n, m, dtype, seed=seed, fill=fill)
    w = compress_nm(dense, n, m)
    assert torch.equal(w.to_dense(), dense)
    # stored positions include every nonzero
    assert bool((w.mask() | (dense == 0)).all())
    assert int(w.mask().sum()) == rows * groups * n


def test_sparse_group_gets_smallest_unused_positions():
    dense = torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
    w = compress_nm(dense)
    assert w.positions.tolist() == [[0, 3, 0, 1]]
    assert w.values.tolist() == [[0.0, 5.0, 0.0, 0.0]]


def test_metadata_word_layout():
    # row of 8 groups (32 columns) with positions chosen per group
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (0, 1), (2, 3)]
    dense = torch.zeros(1, 32)
    for j, (a, b) in enumerate(pairs):
        dense[0, 4 * j + a] = 1.0 + j
        dense[0, 4 * j + b] = -1.0 - j
    meta = compress_nm(dense).sptc_metadata()
    assert meta.dtype == torch.uint32 and meta.shape == (1, 1)
    expected = sum((a | (b << 2)) << (4 * j) for j, (a, b) in enumerate(pairs))
    assert int(meta[0, 0]) == expected
    # the six legal ordered nibbles appear as documented
    assert [((expected >> (4 * j)) & 0xF) for j in range(6)] == [0x4, 0x8, 0xC, 0x9, 0xD, 0xE]


@pytest.mark.parametrize("cols", [4, 28, 32, 36, 100])
def test_metadata_padding_and_unpack(cols):
    dense = random_nm(19, cols, 2, 4, torch.float16, seed=cols)
    w = compress_nm(dense)
    meta = w.sptc_metadata()
    assert meta.shape == (19, -(-cols // 32))
    assert torch.equal(unpack_nibbles(meta, cols), w.positions)
    tail_groups = meta.shape[1] * 8 - cols // 4
    if tail_groups:
        last = int(meta[0, -1])
        assert all(((last >> (4 * j)) & 0xF) == 0x4 for j in range(8 - tail_groups, 8))
    assert torch.equal(pack_nibbles(w.positions), meta)


def test_metadata_matches_torch_semi_structured_conversion():
    """Cross-check our nibble encoding against torch's own CPU 2:4 conversion (CUTLASS layout).

    torch packs the same nibbles (lower kept index in bits [1:0]) four to an int16 (16 columns) and then
    scatters the int16s into CUTLASS's interleaved order. Undoing that scatter must give, for every row,
    our uint32 word split into its low and high 16 bits.
    """
    conv = pytest.importorskip("torch.sparse._semi_structured_conversions")
    rows, cols = 64, 128
    dense = random_nm(rows, cols, 2, 4, torch.float16, seed=3)  # exactly two nonzeros per group
    values_torch, meta_torch = conv.sparse_semi_structured_from_dense_cutlass(dense)
    offsets = conv._calculate_meta_reordering_scatter_offsets(rows, cols // 16, torch.int16, dense.device)
    plain = meta_torch.reshape(-1)[offsets].view(rows, cols // 16).to(torch.int64) & 0xFFFF
    ours = compress_nm(dense).sptc_metadata().to(torch.int64)
    assert torch.equal(ours & 0xFFFF, plain[:, 0::2])
    assert torch.equal(ours >> 16, plain[:, 1::2])
    # and the kept values come out in the same order (lower index first)
    assert torch.equal(compress_nm(dense).values, values_torch)


@pytest.mark.parametrize("bad_row,bad_group", [(0, 0), (5, 3)])
def test_rejects_too_many_nonzeros(bad_row, bad_group):
    dense = random_nm(8, 16, 2, 4, torch.float16)
    dense[bad_row, 4 * bad_group: 4 * bad_group + 3] = 1.0
    with pytest.raises(FormatError, match=rf"2:4.*row {bad_row}, group {bad_group}"):
        compress_nm(dense)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(dense=torch.zeros(4, 10)), ValueError, "multiple of m=4"),
        (dict(dense=torch.zeros(4, 8), n=4, m=4), ValueError, "n < m"),
        (dict(dense=torch.zeros(4, 8), n=0), ValueError, "n: expected an int >= 1"),
        (dict(dense=torch.zeros(4, 32), n=2, m=32), ValueError, "m: expected an int <= 16"),
        (dict(dense=torch.zeros(4, 8, dtype=torch.int32)), TypeError, "dense: expected dtype"),
        (dict(dense=torch.zeros(8)), ValueError, "dense: expected a 2-D tensor"),
        (dict(dense=[[0.0] * 4]), TypeError, "dense: expected a torch.Tensor"),
        (dict(dense=torch.zeros(4, 8), n=2.0), TypeError, "n: expected an int"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        compress_nm(**kwargs)


def test_sptc_metadata_only_for_2_4():
    w = compress_nm(torch.zeros(2, 8), 1, 2)
    with pytest.raises(ValueError, match="2:4"):
        w.sptc_metadata()


def test_constructor_validates():
    w = compress_nm(random_nm(4, 16, 2, 4, torch.float16))
    with pytest.raises(ValueError, match="values/positions: expected shape"):
        NMWeight(w.values[:, :4], w.positions, 2, 4, (4, 16))
    bad = w.positions.clone()
    bad[1, 0], bad[1, 1] = 3, 1
    with pytest.raises(FormatError, match="ascending.*row 1 group 0"):
        NMWeight(w.values, bad, 2, 4, (4, 16))
    with pytest.raises(FormatError, match="< m=4"):
        NMWeight(w.values, torch.full_like(w.positions, 7), 2, 4, (4, 16))
