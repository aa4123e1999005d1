"""Bad inputs for :mod:`samoyeds_lab.formats`: compressed-operand constructors, compressors, metadata."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samoyeds_lab.errors import FormatError
from samoyeds_lab.formats import (
    CSRWeight,
    DenseWeight,
    NMWeight,
    SamoyedsWeight,
    TokenSelection,
    VenomWeight,
    as_dense,
    check_metadata,
    compress_nm,
    compress_samoyeds,
    compress_venom,
    logical_metadata,
    mma_metadata,
    nibble_is_ordered,
    pack_nibbles,
    to_csr,
    unpack_nibbles,
)

from .harness import case, ids, run_case

F16 = torch.float16


def _dense24(rows=4, cols=32, dtype=torch.float32):
    """A 2:4 matrix (positions 0 and 2 of every group kept)."""
    w = torch.zeros(rows, cols // 4, 4, dtype=dtype)
    w[..., 0], w[..., 2] = 1.0, 2.0
    return w.view(rows, cols)


NM = compress_nm(_dense24())                      # 4 x 32, 2:4
POS = NM.positions                                # uint8 [4, 16]
VAL = NM.values                                   # fp32 [4, 16]


def _pos(*vals, rows=1):
    return torch.tensor([list(vals)] * rows, dtype=torch.uint8)


def _sam(**kw):
    """A valid 1:2, V=16 Samoyeds weight of 4 x 32 (its fields, overridable)."""
    dense = torch.zeros(4, 32)
    dense[0::2] = _dense24(2, 32)
    w = compress_samoyeds(dense, n=1, m=2, vector=16)
    fields = dict(values=w.values, positions=w.positions, row_index=w.row_index, n=1, m=2, vector=16,
                  shape=(4, 32))
    fields.update(kw)
    return lambda: SamoyedsWeight(**fields)


SAM = compress_samoyeds(torch.cat([_dense24(1, 32), torch.zeros(1, 32)] * 2), n=1, m=2, vector=16)
SAM2 = compress_samoyeds(torch.zeros(8, 32), n=2, m=4, vector=16)


def _venom(**kw):
    w = compress_venom(torch.zeros(4, 16), v=2, n=4, m=8)
    fields = dict(values=w.values, positions=w.positions, column_index=w.column_index, v=2, n=4, m=8,
                  shape=(4, 16))
    fields.update(kw)
    return lambda: VenomWeight(**fields)


VEN = compress_venom(torch.zeros(4, 16), v=2, n=4, m=8)
CSR = to_csr(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))


def _csr(**kw):
    fields = dict(crow_indices=CSR.crow_indices, col_indices=CSR.col_indices, values=CSR.values, shape=(2, 3))
    fields.update(kw)
    return lambda: CSRWeight(**fields)


I32 = lambda *v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
TOPK = torch.tensor([[0, 1], [1, 2], [2, 0]])
SEL = TokenSelection.from_topk(TOPK, 3, pad_to=4)


def _sel(**kw):
    fields = {f: getattr(SEL, f) for f in ("token_ids", "slot_ids", "counts", "offsets", "padded_token_ids",
                                           "padded_slot_ids", "padded_offsets", "num_tokens", "num_experts",
                                           "top_k", "pad_to")}
    fields.update(kw)
    return lambda: TokenSelection(**fields)


META = NM.sptc_metadata()                         # uint32 [4, 1]
BAD_META = torch.tensor([[0x44444441]], dtype=torch.uint32)   # nibble 0x1: positions (1, 0)
MMA = mma_metadata(META)                          # [1, 1, 16]

CASES = [
    # ------------------------------------------------------------------ pack_nibbles / unpack_nibbles
    case("formats.pack_nibbles", "position 4 (>= 4)", lambda: pack_nibbles(_pos(0, 4)), ValueError, "positions"),
    case("formats.pack_nibbles", "negative position (int8 -1)",
         lambda: pack_nibbles(torch.tensor([[-1, 2]], dtype=torch.int8)), (TypeError, ValueError), "positions"),
    case("formats.pack_nibbles", "float positions", lambda: pack_nibbles(torch.tensor([[0.5, 2.0]])),
         TypeError, "positions"),
    case("formats.pack_nibbles", "positions not ascending (2, 1)", lambda: pack_nibbles(_pos(2, 1)),
         FormatError, "positions"),
    case("formats.pack_nibbles", "equal positions (1, 1)", lambda: pack_nibbles(_pos(1, 1)), FormatError,
         "positions"),
    case("formats.pack_nibbles", "odd number of kept values", lambda: pack_nibbles(_pos(0, 1, 2)), ValueError,
         "positions"),
    case("formats.pack_nibbles", "1-D positions", lambda: pack_nibbles(torch.tensor([0, 1], dtype=torch.uint8)),
         ValueError, "positions"),
    case("formats.pack_nibbles", "a list", lambda: pack_nibbles([[0, 1]]), TypeError, "positions"),
    case("formats.unpack_nibbles", "float words", lambda: unpack_nibbles(torch.zeros(1, 1), 32), TypeError,
         "words"),
    case("formats.unpack_nibbles", "cols not a multiple of 4", lambda: unpack_nibbles(META, 30), ValueError,
         "cols"),
    case("formats.unpack_nibbles", "cols beyond the words", lambda: unpack_nibbles(META, 64), ValueError, "cols"),
    case("formats.unpack_nibbles", "negative cols", lambda: unpack_nibbles(META, -4), ValueError, "cols"),
    case("formats.unpack_nibbles", "cols a float", lambda: unpack_nibbles(META, 32.0), TypeError, "cols"),
    case("formats.unpack_nibbles", "int64 word >= 2**32",
         lambda: unpack_nibbles(torch.tensor([[1 << 33]]), 32), ValueError, "words"),
    case("formats.unpack_nibbles", "1-D words", lambda: unpack_nibbles(META.view(-1), 32), ValueError, "words"),
    # ------------------------------------------------------------------ compress_nm / NMWeight
    case("formats.compress_nm", "not 2:4 (3 nonzeros in a group)", lambda: compress_nm(torch.ones(2, 8)),
         FormatError, "dense"),
    case("formats.compress_nm", "1-D dense", lambda: compress_nm(torch.zeros(8)), ValueError, "dense"),
    case("formats.compress_nm", "int dense", lambda: compress_nm(torch.zeros(2, 8, dtype=torch.int32)),
         TypeError, "dense"),
    case("formats.compress_nm", "float64 dense", lambda: compress_nm(torch.zeros(2, 8, dtype=torch.float64)),
         TypeError, "dense"),
    case("formats.compress_nm", "a numpy-like list", lambda: compress_nm([[0.0] * 8]), TypeError, "dense"),
    case("formats.compress_nm", "cols not a multiple of m", lambda: compress_nm(torch.zeros(2, 6)), ValueError,
         "dense"),
    case("formats.compress_nm", "n = m", lambda: compress_nm(torch.zeros(2, 8), n=4, m=4), ValueError, "n"),
    case("formats.compress_nm", "n = 0", lambda: compress_nm(torch.zeros(2, 8), n=0), ValueError, "n"),
    case("formats.compress_nm", "m = 17", lambda: compress_nm(torch.zeros(2, 17), n=2, m=17), ValueError, "m"),
    case("formats.compress_nm", "n a float", lambda: compress_nm(torch.zeros(2, 8), n=2.0), TypeError, "n"),
    case("formats.compress_nm", "m a bool", lambda: compress_nm(torch.zeros(2, 8), n=1, m=True), TypeError, "m"),
    case("formats.NMWeight", "position >= m", lambda: NMWeight(VAL, POS.clone().fill_(4), 2, 4, (4, 32)),
         FormatError, "positions"),
    case("formats.NMWeight", "positions not ascending",
         lambda: NMWeight(VAL, POS.flip(-1).contiguous(), 2, 4, (4, 32)), FormatError, "positions"),
    case("formats.NMWeight", "positions int64", lambda: NMWeight(VAL, POS.long(), 2, 4, (4, 32)), TypeError,
         "positions"),
    case("formats.NMWeight", "values int", lambda: NMWeight(POS.int(), POS, 2, 4, (4, 32)), TypeError, "values"),
    case("formats.NMWeight", "values / positions shapes disagree",
         lambda: NMWeight(VAL[:, :8], POS, 2, 4, (4, 32)), ValueError, "values"),
    case("formats.NMWeight", "shape disagrees with values", lambda: NMWeight(VAL, POS, 2, 4, (4, 64)),
         ValueError, ("values", "shape")),
    case("formats.NMWeight", "shape with three sizes", lambda: NMWeight(VAL, POS, 2, 4, (4, 32, 1)),
         ValueError, "shape"),
    case("formats.NMWeight", "shape an int", lambda: NMWeight(VAL, POS, 2, 4, 32), TypeError, "shape"),
    case("formats.NMWeight", "negative shape", lambda: NMWeight(VAL, POS, 2, 4, (-4, 32)), ValueError, "shape"),
    case("formats.NMWeight", "n > m", lambda: NMWeight(VAL, POS, 5, 4, (4, 32)), ValueError, "n"),
    case("formats.NMWeight", "m a str", lambda: NMWeight(VAL, POS, 2, "4", (4, 32)), TypeError, "m"),
    case("formats.NMWeight", "values on a list", lambda: NMWeight(VAL.tolist(), POS, 2, 4, (4, 32)), TypeError,
         "values"),
    # ------------------------------------------------------------------ compress_samoyeds / SamoyedsWeight
    case("formats.compress_samoyeds", "both rows of a group used in a window",
         lambda: compress_samoyeds(_dense24(4, 32), n=1, m=2, vector=16), FormatError, "dense"),
    case("formats.compress_samoyeds", "kept row not 2:4",
         lambda: compress_samoyeds(torch.cat([torch.ones(1, 32), torch.zeros(1, 32)]), n=1, m=2, vector=16),
         FormatError, "dense"),
    case("formats.compress_samoyeds", "vector not a multiple of 4",
         lambda: compress_samoyeds(torch.zeros(4, 36), vector=6), ValueError, "vector"),
    case("formats.compress_samoyeds", "vector 0", lambda: compress_samoyeds(torch.zeros(4, 32), vector=0),
         ValueError, "vector"),
    case("formats.compress_samoyeds", "rows not a multiple of m",
         lambda: compress_samoyeds(torch.zeros(3, 32), vector=16), ValueError, "dense"),
    case("formats.compress_samoyeds", "cols not a multiple of vector",
         lambda: compress_samoyeds(torch.zeros(4, 40), vector=16), ValueError, "dense"),
    case("formats.compress_samoyeds", "n = m", lambda: compress_samoyeds(torch.zeros(4, 32), n=2, m=2, vector=16),
         ValueError, "n"),
    case("formats.compress_samoyeds", "dense int", lambda: compress_samoyeds(torch.zeros(4, 32, dtype=torch.int8)),
         TypeError, "dense"),
    case("formats.compress_samoyeds", "dense 3-D", lambda: compress_samoyeds(torch.zeros(1, 4, 32), vector=16),
         ValueError, "dense"),
    case("formats.SamoyedsWeight", "row_index >= m", _sam(row_index=SAM.row_index + 2), FormatError, "row_index"),
    case("formats.SamoyedsWeight", "row_index int64", _sam(row_index=SAM.row_index.long()), TypeError,
         "row_index"),
    case("formats.SamoyedsWeight", "row_index wrong shape", _sam(row_index=SAM.row_index[:1]), ValueError,
         "row_index"),
    case("formats.SamoyedsWeight", "row_index not ascending (n=2)",
         lambda: SamoyedsWeight(SAM2.values, SAM2.positions, SAM2.row_index.flip(-1).contiguous(), 2, 4, 16,
                                (8, 32)), FormatError, "row_index"),
    case("formats.SamoyedsWeight", "positions out of range", _sam(positions=SAM.positions + 4), FormatError,
         "positions"),
    case("formats.SamoyedsWeight", "values / positions shapes disagree", _sam(values=SAM.values[:, :8]),
         ValueError, "values"),
    case("formats.SamoyedsWeight", "vector 6", _sam(vector=6), ValueError, "vector"),
    case("formats.SamoyedsWeight", "shape not a multiple of m", _sam(shape=(5, 32)), ValueError, "shape"),
    case("formats.SamoyedsWeight", "shape a str", _sam(shape="4x32"), (TypeError, ValueError), "shape"),
    case("formats.SamoyedsWeight", "n a float", _sam(n=1.0), TypeError, "n"),
    # ------------------------------------------------------------------ compress_venom / VenomWeight
    case("formats.compress_venom", "too many columns in a block",
         lambda: compress_venom(torch.ones(2, 8), v=2, n=4, m=8), FormatError, "dense"),
    case("formats.compress_venom", "kept columns not 2:4",
         lambda: compress_venom(torch.cat([torch.ones(2, 4), torch.zeros(2, 4)], 1), v=2, n=4, m=8),
         FormatError, "dense"),
    case("formats.compress_venom", "kept width not a multiple of 4",
         lambda: compress_venom(torch.zeros(2, 8), v=2, n=2, m=8), ValueError, "n"),
    case("formats.compress_venom", "v = 0", lambda: compress_venom(torch.zeros(2, 8), v=0), ValueError, "v"),
    case("formats.compress_venom", "n > m", lambda: compress_venom(torch.zeros(2, 8), v=2, n=9, m=8), ValueError,
         "n"),
    case("formats.compress_venom", "rows not a multiple of v", lambda: compress_venom(torch.zeros(3, 8), v=2),
         ValueError, "dense"),
    case("formats.compress_venom", "dense None", lambda: compress_venom(None), TypeError, "dense"),
    case("formats.VenomWeight", "column_index >= m", _venom(column_index=VEN.column_index + 8), FormatError,
         "column_index"),
    case("formats.VenomWeight", "column_index repeats a column in a block",
         _venom(column_index=torch.zeros_like(VEN.column_index)), FormatError, "column_index"),
    case("formats.VenomWeight", "column_index wrong dtype", _venom(column_index=VEN.column_index.int()),
         TypeError, "column_index"),
    case("formats.VenomWeight", "column_index wrong shape", _venom(column_index=VEN.column_index[:1]),
         ValueError, "column_index"),
    case("formats.VenomWeight", "positions not ascending", _venom(positions=VEN.positions.flip(-1).contiguous()),
         FormatError, "positions"),
    case("formats.VenomWeight", "v = 3 (rows not a multiple)", _venom(v=3), ValueError, "shape"),
    # ------------------------------------------------------------------ CSRWeight / to_csr
    case("formats.CSRWeight", "crow_indices puts unsorted columns in one row", _csr(crow_indices=I32(0, 3, 3)),
         FormatError, "col_indices"),
    case("formats.CSRWeight", "crow_indices not ending at len(values)", _csr(crow_indices=I32(0, 1, 2)),
         FormatError, "crow_indices"),
    case("formats.CSRWeight", "crow_indices not starting at 0",
         lambda: CSRWeight(I32(1, 2, 3), I32(0, 2, 1), CSR.values, (2, 3)), FormatError, "crow_indices"),
    case("formats.CSRWeight", "crow_indices non-monotone",
         lambda: CSRWeight(I32(0, 3, 2, 3), I32(0, 1, 2), CSR.values, (3, 3)), FormatError, "crow_indices"),
    case("formats.CSRWeight", "duplicate column in a row", _csr(col_indices=I32(0, 0, 1)), FormatError,
         "col_indices"),
    case("formats.CSRWeight", "columns not increasing in a row", _csr(col_indices=I32(2, 0, 1)), FormatError,
         "col_indices"),
    case("formats.CSRWeight", "column out of range", _csr(col_indices=I32(0, 3, 1)), ValueError, "col_indices"),
    case("formats.CSRWeight", "negative column", _csr(col_indices=I32(-1, 2, 1)), ValueError, "col_indices"),
    case("formats.CSRWeight", "col_indices int64", _csr(col_indices=CSR.col_indices.long()), TypeError,
         "col_indices"),
    case("formats.CSRWeight", "values int", _csr(values=CSR.values.int()), TypeError, "values"),
    case("formats.CSRWeight", "values / col_indices lengths disagree", _csr(values=CSR.values[:2]), ValueError,
         "values"),
    case("formats.CSRWeight", "crow_indices too short", _csr(crow_indices=I32(0, 3)), ValueError,
         "crow_indices"),
    case("formats.CSRWeight", "negative shape", _csr(shape=(-1, 3)), ValueError, "shape"),
    case("formats.CSRWeight", "shape None", _csr(shape=None), TypeError, "shape"),
    case("formats.to_csr", "1-D", lambda: to_csr(torch.zeros(4)), ValueError, "dense"),
    case("formats.to_csr", "int dense", lambda: to_csr(torch.zeros(2, 2, dtype=torch.int64)), TypeError, "dense"),
    case("formats.to_csr", "not a tensor", lambda: to_csr(3.0), TypeError, "dense"),
    # ------------------------------------------------------------------ DenseWeight / as_dense
    case("formats.DenseWeight", "1-D values", lambda: DenseWeight(torch.zeros(4)), ValueError, "values"),
    case("formats.DenseWeight", "int values", lambda: DenseWeight(torch.zeros(2, 2, dtype=torch.int32)),
         TypeError, "values"),
    case("formats.DenseWeight", "None", lambda: DenseWeight(None), TypeError, "values"),
    case("formats.as_dense", "3-D", lambda: as_dense(torch.zeros(1, 2, 2)), ValueError, ("values", "dense")),
    case("formats.as_dense", "bool", lambda: as_dense(torch.zeros(2, 2, dtype=torch.bool)), TypeError,
         ("values", "dense")),
    # ------------------------------------------------------------------ TokenSelection
    case("formats.TokenSelection.from_topk", "num_experts = 10**10 (huge allocation)",
         lambda: TokenSelection.from_topk(TOPK, 10**10), ValueError, "num_experts"),
    case("formats.TokenSelection.from_topk", "pad_to = 10**12 (huge padding)",
         lambda: TokenSelection.from_topk(TOPK, 3, pad_to=10**12), ValueError, "pad_to"),
    case("formats.TokenSelection.from_topk", "id >= num_experts", lambda: TokenSelection.from_topk(TOPK, 2),
         ValueError, "topk_ids"),
    case("formats.TokenSelection.from_topk", "negative id",
         lambda: TokenSelection.from_topk(torch.tensor([[0, -1]]), 3), ValueError, "topk_ids"),
    case("formats.TokenSelection.from_topk", "same expert twice for a token",
         lambda: TokenSelection.from_topk(torch.tensor([[1, 1]]), 3), ValueError, "topk_ids"),
    case("formats.TokenSelection.from_topk", "float ids", lambda: TokenSelection.from_topk(TOPK.float(), 3),
         TypeError, "topk_ids"),
    case("formats.TokenSelection.from_topk", "3-D ids", lambda: TokenSelection.from_topk(TOPK.view(3, 2, 1), 3),
         ValueError, "topk_ids"),
    case("formats.TokenSelection.from_topk", "num_experts 0", lambda: TokenSelection.from_topk(TOPK, 0),
         ValueError, "num_experts"),
    case("formats.TokenSelection.from_topk", "num_experts a float", lambda: TokenSelection.from_topk(TOPK, 3.0),
         TypeError, "num_experts"),
    case("formats.TokenSelection.from_topk", "pad_to 0", lambda: TokenSelection.from_topk(TOPK, 3, pad_to=0),
         ValueError, "pad_to"),
    case("formats.TokenSelection.from_topk", "a list", lambda: TokenSelection.from_topk([[0, 1]], 3), TypeError,
         "topk_ids"),
    case("formats.TokenSelection", "offsets disagree with counts", _sel(offsets=SEL.offsets + 1), ValueError,
         "offsets"),
    case("formats.TokenSelection", "token id >= num_tokens", _sel(token_ids=SEL.token_ids + 5), ValueError,
         "token_ids"),
    case("formats.TokenSelection", "token_ids int64", _sel(token_ids=SEL.token_ids.long()), TypeError,
         "token_ids"),
    case("formats.TokenSelection", "slot_ids wrong length", _sel(slot_ids=SEL.slot_ids[:3]), ValueError,
         "slot_ids"),
    case("formats.TokenSelection", "counts wrong length", _sel(counts=SEL.counts[:2]), ValueError, "counts"),
    case("formats.TokenSelection", "token ids of an expert not increasing",
         _sel(token_ids=SEL.token_ids.flip(0).contiguous()), ValueError, "token_ids"),
    case("formats.TokenSelection", "padded_offsets not multiples of pad_to",
         _sel(padded_offsets=torch.tensor([0, 3, 6, 9])), ValueError, "padded_offsets"),
    case("formats.TokenSelection", "padded id below SENTINEL", _sel(padded_token_ids=SEL.padded_token_ids - 2),
         ValueError, "padded_token_ids"),
    case("formats.TokenSelection", "num_tokens negative", _sel(num_tokens=-1), ValueError, "num_tokens"),
    case("formats.TokenSelection", "pad_to 0", _sel(pad_to=0), ValueError, "pad_to"),
    case("formats.TokenSelection.tokens_of", "expert out of range", lambda: SEL.tokens_of(3), ValueError,
         "expert"),
    case("formats.TokenSelection.slots_of", "expert a bool", lambda: SEL.slots_of(True), TypeError, "expert"),
    case("formats.TokenSelection.padded_tokens_of", "negative expert", lambda: SEL.padded_tokens_of(-1),
         ValueError, "expert"),
    # ------------------------------------------------------------------ SpTC metadata
    case("formats.mma_metadata", "illegal nibble", lambda: mma_metadata(BAD_META), FormatError, "logical"),
    case("formats.mma_metadata", "float words", lambda: mma_metadata(META.float()), TypeError, "logical"),
    case("formats.mma_metadata", "3-D words", lambda: mma_metadata(META.view(1, 4, 1)), ValueError, "logical"),
    case("formats.mma_metadata", "int64 word >= 2**32",
         lambda: mma_metadata(torch.tensor([[0x44444444 + (1 << 32)]])), ValueError, "logical"),
    case("formats.logical_metadata", "shape disagrees", lambda: logical_metadata(MMA, 32, 32), ValueError,
         "mma_meta"),
    case("formats.logical_metadata", "cols not a multiple of 4", lambda: logical_metadata(MMA, 4, 30), ValueError,
         "cols"),
    case("formats.logical_metadata", "negative rows", lambda: logical_metadata(MMA, -1, 32), ValueError, "rows"),
    case("formats.logical_metadata", "rows a float", lambda: logical_metadata(MMA, 4.0, 32), TypeError, "rows"),
    case("formats.logical_metadata", "illegal nibble",
         lambda: logical_metadata(torch.zeros_like(MMA), 4, 32), FormatError, "mma_meta"),
    case("formats.logical_metadata", "float mma_meta", lambda: logical_metadata(MMA.float(), 4, 32), TypeError,
         "mma_meta"),
    case("formats.check_metadata", "illegal nibble", lambda: check_metadata(BAD_META), FormatError, "logical"),
    case("formats.check_metadata", "1-D", lambda: check_metadata(META.view(-1)), ValueError, "logical"),
    case("formats.check_metadata", "name not a str", lambda: check_metadata(META, name=3), TypeError, "name"),
    case("formats.check_metadata", "float", lambda: check_metadata(META.double()), TypeError, "logical"),
    case("formats.nibble_is_ordered", "negative int", lambda: nibble_is_ordered(-1), ValueError, "words"),
    case("formats.nibble_is_ordered", "int >= 2**32", lambda: nibble_is_ordered(1 << 32), ValueError, "words"),
    case("formats.nibble_is_ordered", "int >= 2**64", lambda: nibble_is_ordered(1 << 70), ValueError, "words"),
    case("formats.nibble_is_ordered", "a str", lambda: nibble_is_ordered("0x44"), TypeError, "words"),
    case("formats.nibble_is_ordered", "float tensor", lambda: nibble_is_ordered(torch.zeros(2)), TypeError,
         "words"),
    case("formats.nibble_is_ordered", "bool", lambda: nibble_is_ordered(True), TypeError, "words"),
]


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ---------------------------------------------------------------------------------------------- properties
_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.lists(st.integers(0, 255), min_size=2, max_size=16).filter(lambda v: len(v) % 2 == 0))
def test_pack_nibbles_accepts_exactly_legal_pairs(vals):
    """pack_nibbles raises (naming positions) unless every pair is (lo, hi) with 0 <= lo < hi < 4."""
    pos = torch.tensor([vals], dtype=torch.uint8)
    legal = all(a < b < 4 for a, b in zip(vals[::2], vals[1::2]))
    if legal:
        words = pack_nibbles(pos)
        assert torch.equal(unpack_nibbles(words, 2 * len(vals)), pos)
    else:
        with pytest.raises(ValueError, match="positions"):
            pack_nibbles(pos)


@_FAST
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_compress_nm_round_trip_or_named_error(rows, groups, seed):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, 4 * groups, generator=g) * (torch.rand(rows, 4 * groups, generator=g) < 0.5)
    ok = bool(((dense != 0).view(rows, groups, 4).sum(-1) <= 2).all())
    if ok:
        w = compress_nm(dense)
        assert torch.equal(w.to_dense(), dense)
        NMWeight(w.values, w.positions, 2, 4, w.shape)  # the constructor accepts what compress made
    else:
        with pytest.raises(FormatError, match="dense"):
            compress_nm(dense)


@_FAST
@given(st.lists(st.integers(-3, 6), min_size=1, max_size=12), st.integers(1, 6))
def test_from_topk_ids_in_range_or_named_error(flat, num_experts):
    ids_ = torch.tensor(flat).view(-1, 1)
    if all(0 <= v < num_experts for v in flat):
        sel = TokenSelection.from_topk(ids_, num_experts, pad_to=4)
        # the validating constructor accepts what from_topk built
        TokenSelection(**{f: getattr(sel, f) for f in sel.__dataclass_fields__})
        assert int(sel.counts.sum()) == len(flat)
    else:
        with pytest.raises(ValueError, match="topk_ids"):
            TokenSelection.from_topk(ids_, num_experts, pad_to=4)


@_FAST
@given(st.lists(st.integers(0, 5), min_size=0, max_size=6), st.integers(1, 4))
def test_csr_valid_random_rows_accepted(cols_per_row, extra):
    """Random valid CSR (sorted distinct columns per row) is accepted and round-trips."""
    cols = 6 + extra
    dense = torch.zeros(len(cols_per_row), cols)
    for r, c in enumerate(cols_per_row):
        dense[r, :c] = torch.arange(1, c + 1, dtype=torch.float32)
    w = to_csr(dense)
    w2 = CSRWeight(w.crow_indices, w.col_indices, w.values, w.shape)
    assert torch.equal(w2.to_dense(), dense)
