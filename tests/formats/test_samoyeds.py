"""Samoyeds format (vector-wise row selection + 2:4): round trips, sizes, bad input."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from samoyeds_lab.errors import FormatError
from samoyeds_lab.formats import SamoyedsWeight, compress_nm, compress_samoyeds

from .helpers import random_samoyeds

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,n,m,vector", [(2, 1, 2, 128), (38, 1, 2, 32), (198, 1, 2, 64), (99, 1, 3, 4),
                                             (96, 2, 4, 16), (64, 3, 4, 128)])
def test_round_trip(rows, n, m, vector, dtype):
    cols = vector * 3
    dense = random_samoyeds(rows, cols, n, m, vector, dtype, seed=rows)
    w = compress_samoyeds(dense, n, m, vector)
    crows = rows // m * n
    assert w.values.shape == (crows, cols // 2) and w.values.dtype == dtype
    assert w.row_index.shape == (cols // vector, crows) and w.row_index.dtype == torch.uint8
    assert w.sptc_metadata().shape == (crows, -(-cols // 32))
    assert torch.equal(w.to_dense(), dense)
    assert w.density == pytest.approx(n / m / 2)


@settings(max_examples=50, deadline=None)
@given(
    groups=st.integers(1, 20),
    windows=st.integers(1, 4),
    pattern=st.sampled_from([(1, 2), (1, 4), (2, 4), (3, 8)]),
    vector=st.sampled_from([4, 8, 32, 128]),
    fill=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(groups, windows, pattern, vector, fill, seed):
    n, m = pattern
    dense = random_samoyeds(groups * m, windows * vector, n, m, vector, torch.float32, seed=seed, fill=fill)
    w = compress_samoyeds(dense, n, m, vector)
    assert torch.equal(w.to_dense(), dense)
    # compressed rows really are the kept row segments: inner reproduces dense rows via dense_rows()
    inner = w.inner.to_dense()
    rows_of = w.dense_rows()  # [windows, crows]
    for win in range(windows):
        sl = slice(win * vector, (win + 1) * vector)
        assert torch.equal(inner[:, sl], dense[rows_of[win], sl])


def test_row_index_semantics():
    # 4 rows, 2 windows of 4: rows 1 and 2 kept in window 0, rows 0 and 3 in window 1
    dense = torch.zeros(4, 8)
    dense[1, 0:2] = 1.0
    dense[2, 2:4] = 2.0
    dense[0, 4:6] = 3.0
    dense[3, 6:8] = 4.0
    w = compress_samoyeds(dense, 1, 2, 4)
    assert w.row_index.tolist() == [[1, 0], [0, 1]]
    assert w.dense_rows().tolist() == [[1, 2], [0, 3]]
    assert w.values.tolist() == [[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 4.0, 4.0]]


def test_bytes_are_about_29_percent_of_dense_fp16():
    dense = random_samoyeds(256, 1024, 1, 2, 128, torch.float16)
    w = compress_samoyeds(dense)
    ratio = w.nbytes / (256 * 1024 * 2)
    # values 25% + 2:4 metadata 3.125% + 1-bit row indices 0.02%
    assert ratio == pytest.approx(0.25 + 0.03125 + 1 / (128 * 2 * 16), rel=1e-6)
    assert w.nbytes < compress_nm(dense).nbytes  # fewer bytes than plain 2:4 on the same matrix


def test_rejects_too_many_rows_in_window():
    dense = random_samoyeds(8, 256, 1, 2, 128, torch.float16)
    dense[4:6, 130] = 1.0  # rows 4 and 5 (group 2) both used in window 1
    with pytest.raises(FormatError, match=r"window 1 .*rows \[4, 5\] of group 2"):
        compress_samoyeds(dense)


def test_rejects_broken_24_inside_kept_row():
    dense = torch.zeros(4, 8)
    dense[2, 4:7] = 1.0  # three nonzeros in columns 4..7 of row 2
    with pytest.raises(FormatError, match=r"not 2:4: row 2, columns 4..7"):
        compress_samoyeds(dense, 1, 2, 8)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(dense=torch.zeros(3, 128)), ValueError, "rows to be a multiple of m=2"),
        (dict(dense=torch.zeros(4, 100)), ValueError, "cols to be a multiple of vector=128"),
        (dict(dense=torch.zeros(4, 12), vector=6), ValueError, "vector: expected a multiple of 4"),
        (dict(dense=torch.zeros(4, 128), n=2, m=2), ValueError, "n < m"),
        (dict(dense=torch.zeros(4, 128, dtype=torch.int64)), TypeError, "dense: expected dtype"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        compress_samoyeds(**kwargs)


def test_constructor_validates_row_index():
    w = compress_samoyeds(random_samoyeds(8, 256, 1, 2, 128, torch.float16))
    with pytest.raises(ValueError, match="row_index: expected shape"):
        SamoyedsWeight(w.values, w.positions, w.row_index[:1], 1, 2, 128, (8, 256))
    with pytest.raises(FormatError, match="row_index: expected values < m=2"):
        SamoyedsWeight(w.values, w.positions, torch.full_like(w.row_index, 2), 1, 2, 128, (8, 256))


def test_empty_matrices_round_trip():
    from samoyeds_lab.formats import compress_nm, compress_venom

    for dense, fn in [
        (torch.zeros(0, 32, dtype=torch.float16), lambda d: compress_nm(d)),
        (torch.zeros(0, 128, dtype=torch.float16), lambda d: compress_samoyeds(d)),
        (torch.zeros(0, 16, dtype=torch.float16), lambda d: compress_venom(d, 4, 4, 8)),
    ]:
        w = fn(dense)
        assert w.to_dense().shape == dense.shape and w.values.shape[0] == 0
    assert compress_nm(torch.zeros(0, 32)).sptc_metadata().shape == (0, 1)
