"""prune_mask / sparsify / parse_pattern: spellings, consistency with the mask builders, round trips
into every format, awkward shapes and dtypes, bad input."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from samoyeds_lab.formats import CSRWeight, DenseWeight, NMWeight, SamoyedsWeight, VenomWeight
from samoyeds_lab.prune import (
    magnitude_scores,
    nm_mask,
    parse_pattern,
    prune_mask,
    samoyeds_mask,
    sparsify,
    unstructured_mask,
    venom_mask,
    wanda_scores,
)
from samoyeds_lab.prune import masks as masks_mod

DTYPES = [torch.float16, torch.bfloat16, torch.float32]

# (pattern, kwargs, rows, cols, operand type, density of the mask)
CASES = [
    ("2:4", {}, 1, 8, NMWeight, 0.5),
    ("2:4", {}, 19, 32, NMWeight, 0.5),
    ("1:2", {}, 99, 10, NMWeight, 0.5),
    ("nm", {"n": 3, "m": 8}, 19, 24, NMWeight, 3 / 8),
    ("samoyeds", {}, 2, 128, SamoyedsWeight, 0.25),
    ("samoyeds", {"vector": 32}, 38, 96, SamoyedsWeight, 0.25),
    ("samoyeds", {"n": 1, "m": 3, "vector": 4}, 99, 8, SamoyedsWeight, 1 / 6),
    ("venom", {"v": 1}, 1, 16, VenomWeight, 0.25),
    ("venom", {"v": 1, "n": 2}, 19, 16, VenomWeight, 0.125),
    ("venom", {}, 64, 64, VenomWeight, 0.25),
    ("unstructured", {"density": 0.3}, 19, 10, CSRWeight, 57 / 190),
    ("unstructured", {"density": 0.0}, 1, 3, CSRWeight, 0.0),
    ("dense", {}, 19, 7, DenseWeight, 1.0),
]


def weight(rows, cols, dtype, seed=0, zeros=0.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[torch.rand(rows, cols, generator=g) < zeros] = 0.0  # pre-existing zeros must not break formats
    return w.to(dtype)


def acts(tokens, cols, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=g)
    x[:, ::3] *= 10.0
    return x.to(dtype)


def builder_mask(scores, pattern, kwargs):
    kind, p = parse_pattern(pattern, **kwargs)
    if kind == "nm":
        return nm_mask(scores, p["n"], p["m"])
    if kind == "samoyeds":
        return samoyeds_mask(scores, p["n"], p["m"], p["vector"])
    if kind == "venom":
        return venom_mask(scores, p["v"], p["n"], p["m"])
    if kind == "unstructured":
        return unstructured_mask(scores, p["density"])
    return torch.ones(scores.shape, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------- spellings
@pytest.mark.parametrize(
    "pattern,kwargs,expect",
    [
        ("2:4", {}, ("nm", {"n": 2, "m": 4})),
        (" 1 : 2 ", {}, ("nm", {"n": 1, "m": 2})),
        ("NM", {"m": 8}, ("nm", {"n": 2, "m": 8})),
        ("Samoyeds", {}, ("samoyeds", {"n": 1, "m": 2, "vector": 128})),
        ("samoyeds", {"vector": 64}, ("samoyeds", {"n": 1, "m": 2, "vector": 64})),
        ("VENOM", {}, ("venom", {"v": 64, "n": 4, "m": 8})),
        ("unstructured", {"density": 0.5}, ("unstructured", {"density": 0.5})),
        ("Dense", {}, ("dense", {})),
    ],
)
def test_parse_pattern(pattern, kwargs, expect):
    assert parse_pattern(pattern, **kwargs) == expect


# ---------------------------------------------------------------------------------------------- prune_mask
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("pattern,kwargs,rows,cols,kind,density", CASES)
def test_prune_mask_equals_builder_on_scores(pattern, kwargs, rows, cols, kind, density, method):
    w = weight(rows, cols, torch.float16)
    x = acts(5, cols)
    scores = magnitude_scores(w) if method == "magnitude" else wanda_scores(w, x)
    mask = prune_mask(w, pattern, method, acts=x if method == "wanda" else None, **kwargs)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert torch.equal(mask, builder_mask(scores, pattern, kwargs))
    assert mask.float().mean().item() == pytest.approx(density)


@pytest.mark.parametrize("block_elems", [1, 100])
def test_prune_mask_row_blocks(monkeypatch, block_elems):
    w, x = weight(24, 64, torch.bfloat16), acts(7, 64)
    cases = [("2:4", {}), ("samoyeds", {"m": 3, "vector": 16}), ("venom", {"v": 8, "n": 2})]
    expect = [prune_mask(w, p, "wanda", x, **kw) for p, kw in cases]
    monkeypatch.setattr(masks_mod, "_BLOCK_ELEMS", block_elems)
    for (p, kw), e in zip(cases, expect):
        assert torch.equal(prune_mask(w, p, "wanda", x, **kw), e)


def test_prune_mask_method_spelling_and_stacks():
    w = weight(16, 32, torch.float32)
    assert torch.equal(prune_mask(w, "2:4", " Magnitude "), prune_mask(w, "2:4"))
    stack = torch.stack([w, -2 * w])
    m = prune_mask(stack, "samoyeds", vector=32)
    assert torch.equal(m[0], prune_mask(w, "samoyeds", vector=32))
    assert torch.equal(m[1], m[0])


# ---------------------------------------------------------------------------------------------- sparsify
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("pattern,kwargs,rows,cols,kind,density", CASES)
def test_sparsify_round_trip(pattern, kwargs, rows, cols, kind, density, method, dtype):
    dense = weight(rows, cols, dtype, seed=rows, zeros=0.2)
    x = acts(9, cols, dtype) if method == "wanda" else None
    op = sparsify(dense, pattern, method, acts=x, **kwargs)
    mask = prune_mask(dense, pattern, method, acts=x, **kwargs)
    assert isinstance(op, kind)
    out = op.to_dense()
    assert out.dtype == dtype and out.shape == dense.shape
    assert torch.equal(out, dense * mask)


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from([("2:4", {}, 1, 4), ("4:8", {}, 1, 8), ("samoyeds", {"vector": 8}, 2, 8),
                          ("samoyeds", {"n": 2, "m": 4, "vector": 4}, 4, 4), ("venom", {"v": 2, "n": 2}, 2, 16),
                          ("unstructured", {"density": 0.4}, 1, 1)]),
    row_units=st.integers(1, 6),
    col_units=st.integers(1, 4),
    zeros=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_sparsify_round_trip_property(case, row_units, col_units, zeros, seed):
    pattern, kwargs, row_unit, col_unit = case
    dense = weight(row_units * row_unit, col_units * col_unit, torch.float32, seed, zeros)
    op = sparsify(dense, pattern, **kwargs)
    assert torch.equal(op.to_dense(), dense * prune_mask(dense, pattern, **kwargs))


def test_sparsify_samoyeds_row_index_matches_mask():
    dense = weight(8, 64, torch.float16)
    op = sparsify(dense, "samoyeds", vector=16)
    mask = prune_mask(dense, "samoyeds", vector=16)
    kept_rows = mask.view(4, 2, 4, 16).any(-1)  # [groups, m, windows]
    assert torch.equal(op.row_index.T.reshape(4, 4).long(), kept_rows.long().argmax(1))


# ---------------------------------------------------------------------------------------------- bad input
W = torch.rand(8, 256)


@pytest.mark.parametrize(
    "call,exc,words",
    [
        (lambda: prune_mask(W, "3:4:5"), ValueError, ["pattern", "'3:4:5'", "samoyeds"]),
        (lambda: prune_mask(W, "sparse"), ValueError, ["pattern", "'sparse'"]),
        (lambda: prune_mask(W, 24), TypeError, ["pattern", "int"]),
        (lambda: prune_mask(W, "2:4", n=2), TypeError, ["n", "'2:4'"]),
        (lambda: prune_mask(W, "nm", vector=8), TypeError, ["vector", "'nm'", "n, m"]),
        (lambda: prune_mask(W, "samoyeds", density=0.5), TypeError, ["density", "'samoyeds'"]),
        (lambda: prune_mask(W, "unstructured"), ValueError, ["density", "required"]),
        (lambda: prune_mask(W, "unstructured", density=-0.5), ValueError, ["density", "-0.5"]),
        (lambda: prune_mask(W, "unstructured", density=1.01), ValueError, ["density", "1.01"]),
        (lambda: prune_mask(W, "2:4", "obs"), ValueError, ["acts", "required", "obs"]),
        (lambda: prune_mask(W, "2:4", "sgd"), ValueError, ["method", "'sgd'"]),
        (lambda: prune_mask(W, "2:4", None), TypeError, ["method"]),
        (lambda: prune_mask(W, "2:4", "wanda"), ValueError, ["acts", "required", "wanda"]),
        (lambda: prune_mask(W, "2:4", "wanda", torch.rand(4, 128)), ValueError, ["acts", "in_features=256"]),
        (lambda: prune_mask(W, "2:4", "wanda", acts=torch.rand(4, 255)), ValueError, ["acts", "in_features=256"]),
        (lambda: prune_mask(W, "2:4", acts=torch.rand(4, 256)), ValueError, ["acts", "magnitude", "takes no"]),
        (lambda: prune_mask(W.to(torch.int32), "2:4"), TypeError, ["w", "int32"]),
        (lambda: prune_mask(W.double(), "2:4"), TypeError, ["w", "float64"]),
        (lambda: prune_mask(torch.rand(8, 10), "2:4"), ValueError, ["w", "m=4", "10"]),
        (lambda: prune_mask(torch.rand(8, 96), "samoyeds"), ValueError, ["w", "cols", "vector=128", "96"]),
        (lambda: prune_mask(torch.rand(7, 128), "samoyeds"), ValueError, ["w", "rows", "m=2", "7"]),
        (lambda: prune_mask(torch.rand(128), "samoyeds"), ValueError, ["w", "2-D"]),
        (lambda: prune_mask(torch.rand(32, 64), "venom"), ValueError, ["w", "rows", "v=64", "32"]),
        (lambda: prune_mask(torch.rand(64, 12), "venom"), ValueError, ["w", "cols", "m=8", "12"]),
        (lambda: prune_mask(torch.rand(2, 8), "4:4"), ValueError, ["n", "n < m"]),
        (lambda: prune_mask(torch.rand(2, 8), "samoyeds", vector=8, m=1), ValueError, ["m", ">= 2"]),
        (lambda: prune_mask(torch.tensor([[1.0, float("nan"), 0.0, 1.0]]), "2:4"), ValueError, ["w", "finite", "nan"]),
        (lambda: sparsify(torch.rand(2, 8, 8), "2:4"), ValueError, ["dense", "2-D"]),
        (lambda: sparsify(torch.rand(8, 10), "2:4"), ValueError, ["dense", "m=4"]),
        (lambda: sparsify(torch.ones(8, 8, dtype=torch.int8), "2:4"), TypeError, ["dense", "int8"]),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("pattern,kwargs,cols", [("2:4", {}, 8), ("samoyeds", {}, 128), ("venom", {}, 64),
                                                 ("unstructured", {"density": 0.5}, 8), ("dense", {}, 8)])
def test_zero_rows(pattern, kwargs, cols):
    dense = torch.zeros(0, cols, dtype=torch.float16)
    assert prune_mask(dense, pattern, **kwargs).shape == (0, cols)
    assert sparsify(dense, pattern, **kwargs).to_dense().shape == (0, cols)
