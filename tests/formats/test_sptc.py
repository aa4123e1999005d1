"""Register-ordered 2:4 metadata (mma_metadata / logical_metadata) and nibble validation."""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.errors import FormatError
from samoyeds_lab.formats import compress_nm
from samoyeds_lab.formats.sptc import (
    LEGAL_NIBBLES,
    PAD_WORD,
    check_metadata,
    logical_metadata,
    mma_metadata,
    nibble_is_ordered,
    nibbles,
)

from .helpers import random_24_rows


def loop_mma_metadata(logical: torch.Tensor) -> torch.Tensor:
    """Reference: entry [t, k, 2g+h] = lo16(row 16t+g >> 16h) | lo16(row 16t+g+8 >> 16h) << 16, one by one."""
    rows, words = logical.shape
    tiles = -(-rows // 16)
    lg = logical.to(torch.int64)

    def word(r, k):
        return int(lg[r, k]) if r < rows else PAD_WORD

    out = torch.zeros(tiles, words, 16, dtype=torch.int64)
    for t in range(tiles):
        for k in range(words):
            for g in range(8):
                for h in range(2):
                    top = (word(16 * t + g, k) >> (16 * h)) & 0xFFFF
                    bottom = (word(16 * t + g + 8, k) >> (16 * h)) & 0xFFFF
                    out[t, k, 2 * g + h] = top | (bottom << 16)
    return out


def random_logical(rows: int, words: int, seed: int) -> torch.Tensor:
    """uint32 words whose 8 nibbles are drawn from the 6 legal ones."""
    g = torch.Generator().manual_seed(seed)
    legal = torch.tensor(LEGAL_NIBBLES)
    nib = legal[torch.randint(0, 6, (rows, words, 8), generator=g)]
    return (nib << (torch.arange(8) * 4)).sum(-1).to(torch.uint32)


SHAPES = [(16, 32), (19, 100), (1, 4), (33, 64), (48, 96), (8, 36), (5, 0)]


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_mma_metadata_matches_loop_and_round_trips(rows, cols):
    g = torch.Generator().manual_seed(rows * 1000 + cols)
    w = compress_nm(random_24_rows(rows, cols, g, fill=0.7).half())
    logical = w.sptc_metadata()
    mma = mma_metadata(logical)
    assert mma.dtype == torch.uint32
    assert tuple(mma.shape) == (-(-rows // 16), -(-cols // 32), 16)
    assert torch.equal(mma.to(torch.int64), loop_mma_metadata(logical))
    back = logical_metadata(mma, rows, cols)
    assert back.dtype == torch.uint32
    assert torch.equal(back, logical)


@pytest.mark.parametrize("rows,words", [(1, 1), (17, 3), (32, 2), (50, 5)])
def test_round_trip_random_legal_words(rows, words):
    logical = random_logical(rows, words, seed=rows)
    mma = mma_metadata(logical)
    assert torch.equal(mma.to(torch.int64), loop_mma_metadata(logical))
    assert torch.equal(logical_metadata(mma, rows, 32 * words), logical)


def test_empty():
    empty = torch.zeros(0, 2, dtype=torch.uint32)
    mma = mma_metadata(empty)
    assert tuple(mma.shape) == (0, 2, 16)
    assert tuple(logical_metadata(mma, 0, 64).shape) == (0, 2)


def test_padding_rows_are_0x4():
    logical = random_logical(19, 2, seed=3)
    mma = mma_metadata(logical).to(torch.int64)
    # tile 1 holds rows 16..18 in g = 0..2 (low halves); every other half is padding
    assert (mma[1, :, 6:] == PAD_WORD).all()  # g >= 3: rows 19..23 and 27..31
    assert ((mma[1, :, :6] >> 16) == 0x4444).all()  # rows 24..26 in the high halves


def test_example_word_by_hand():
    # row 0: word 0x76543210-like pattern is illegal, so use legal nibbles with distinct halves
    logical = torch.full((16, 1), PAD_WORD, dtype=torch.int64)
    logical[0, 0] = 0xE9D8_C84E  # row 0: groups 0-3 -> 0xC84E, groups 4-7 -> 0xE9D8
    logical[8, 0] = 0x8C9D_4E8C  # row 8
    mma = mma_metadata(logical).to(torch.int64)
    assert int(mma[0, 0, 0]) == 0x4E8C_C84E  # lane 0: row 0 cols 0-15 | row 8 cols 0-15 << 16
    assert int(mma[0, 0, 1]) == 0x8C9D_E9D8  # lane 1: row 0 cols 16-31 | row 8 cols 16-31 << 16
    assert int(mma[0, 0, 2]) == PAD_WORD


def test_dtypes_agree():
    logical = random_logical(20, 3, seed=5)
    ref = mma_metadata(logical)
    assert torch.equal(mma_metadata(logical.to(torch.int64)), ref)
    assert torch.equal(mma_metadata(logical.view(torch.int32)), ref)
    assert torch.equal(logical_metadata(ref.to(torch.int64), 20, 96), logical)


def test_nibble_is_ordered_accepts_exactly_the_six_legal_nibbles():
    legal = [v for v in range(16) if bool(nibble_is_ordered(v)[0])]
    assert legal == sorted(LEGAL_NIBBLES)
    word = torch.tensor([0x0000_00E4], dtype=torch.int64)  # group 0 = 0x4, group 1 = 0xE, rest 0x0
    assert nibble_is_ordered(word).tolist() == [[True, True] + [False] * 6]
    assert nibbles(0x87654321).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("bad", [0x0, 0x1, 0x5, 0x6, 0xF, 0x3])
def test_illegal_nibble_names_row_and_group(bad):
    logical = torch.full((5, 2), PAD_WORD, dtype=torch.int64)
    logical[3, 1] = PAD_WORD & ~(0xF << 8) | (bad << 8)  # row 3, word 1, group 2 -> row group 10
    with pytest.raises(FormatError, match=r"row 3, group 10 \(columns 40\.\.43\)"):
        check_metadata(logical)
    with pytest.raises(ValueError, match=f"0x{bad:X}"):
        mma_metadata(logical)


def test_logical_metadata_rejects_illegal_registers():
    mma = mma_metadata(random_logical(16, 1, seed=1)).to(torch.int64)
    mma[0, 0, 3] = mma[0, 0, 3] & ~0xF0000  # lane 5: row 9 (g+8) group 4 -> nibble 0
    with pytest.raises(FormatError, match="row 9, group 4"):
        logical_metadata(mma, 16, 32)


def test_validation_errors():
    with pytest.raises(TypeError, match="logical"):
        mma_metadata(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="logical"):
        mma_metadata(torch.zeros(4, dtype=torch.uint32))
    with pytest.raises(ValueError, match=r"2\*\*32"):
        mma_metadata(torch.tensor([[-1]], dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mma_meta: expected shape \(2, 1, 16\)"):
        logical_metadata(torch.zeros(1, 1, 16, dtype=torch.uint32), 17, 32)
    with pytest.raises(ValueError, match="cols"):
        logical_metadata(torch.zeros(1, 1, 16, dtype=torch.uint32), 16, 30)


# --------------------------------------------------------------------------- cross-check with torch/CUTLASS
conv = pytest.importorskip("torch.sparse._semi_structured_conversions")


@pytest.mark.skipif(
    not hasattr(conv, "sparse_semi_structured_from_dense_cutlass"), reason="torch lacks the CUTLASS conversion"
)
@pytest.mark.parametrize("rows,cols", [(32, 32), (64, 96), (96, 64)])
def test_matches_torch_cutlass_meta(rows, cols):
    """torch's CUTLASS layout for fp16 (``sparse_semi_structured_from_dense_cutlass``):

    * nibbles are encoded exactly like ours (lower position in bits [1:0]) and packed 4 to an int16
      element covering 16 dense columns: torch's unreordered ``meta[r, 2w + h]`` is the 16-bit half
      ``h`` of our logical word ``[r, w]``;
    * the reorder (CUTLASS ``reorder_meta`` into ``ColumnMajorInterleaved<2>``) stores, for every 32
      dense columns ``ks`` and every 32 rows ``b``, 32 consecutive 32-bit words; word ``4g + 2s + h``
      is exactly our register ``mma_meta[2b + s, ks, 2g + h]``, i.e. a warp whose lane ``l`` loads word
      ``l`` gets selector-0 metadata for the even 16-row tile and selector-1 metadata for the odd
      one. Our layout is the same registers with the two tiles of a pair stored apart.

    Groups with fewer than two nonzeros are encoded differently (torch picks e.g. 0xE for an empty
    group, we pick the smallest unused positions), so the matrix here has exactly two nonzeros per group.
    """
    g = torch.Generator().manual_seed(rows + cols)
    dense = random_24_rows(rows, cols, g).half()
    assert ((dense.view(rows, -1, 4) != 0).sum(-1) == 2).all()
    w = compress_nm(dense)
    logical = w.sptc_metadata().to(torch.int64)
    mma = mma_metadata(w.sptc_metadata()).to(torch.int64)

    sparse, meta_reordered = conv.sparse_semi_structured_from_dense_cutlass(dense)
    assert torch.equal(sparse, w.values)
    assert meta_reordered.dtype == torch.int16

    # undo torch's reorder: gather back the logical int16 elements
    offsets = conv._calculate_meta_reordering_scatter_offsets(rows, cols // 16, torch.int16, "cpu")
    meta = meta_reordered.reshape(-1)[offsets].view(rows, cols // 16).to(torch.int64) & 0xFFFF
    assert torch.equal(meta[:, 0::2], logical & 0xFFFF)
    assert torch.equal(meta[:, 1::2], logical >> 16)

    # the reordered memory, read as 32-bit words, is our register order
    words = meta_reordered.contiguous().view(-1).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    words = words.view(cols // 32, rows // 32, 8, 2, 2)  # [ks, b, g, s, h]
    ours = mma.view(rows // 32, 2, cols // 32, 8, 2)  # [b, s, ks, g, h]
    assert torch.equal(words, ours.permute(2, 0, 3, 1, 4))
