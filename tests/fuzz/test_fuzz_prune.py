"""Bad inputs for :mod:`samoyeds_lab.prune`: scores, masks, the one-call API, metrics, calibration data."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samoyeds_lab.prune import (
    magnitude_scores,
    nm_mask,
    outlier_activations,
    parse_pattern,
    prune_mask,
    reconstruction_error,
    samoyeds_mask,
    sparsify,
    top_n_mask,
    unstructured_mask,
    venom_mask,
    wanda_scores,
)

from .harness import case, ids, run_case

W = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
X = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
NAN_W = W.clone()
NAN_W[3, 7] = math.nan
INF_W = W.clone()
INF_W[1, 2] = math.inf
NAN_X = X.clone()
NAN_X[0, 0] = math.nan
S = W.abs()
MASK = torch.ones(8, 32, dtype=torch.bool)

CASES = [
    # ------------------------------------------------------------------ scores
    case("prune.magnitude_scores", "NaN weight", lambda: magnitude_scores(NAN_W), ValueError, "w"),
    case("prune.magnitude_scores", "inf weight", lambda: magnitude_scores(INF_W), ValueError, "w"),
    case("prune.magnitude_scores", "int weight", lambda: magnitude_scores(W.int()), TypeError, "w"),
    case("prune.magnitude_scores", "a list", lambda: magnitude_scores([1.0, 2.0]), TypeError, "w"),
    case("prune.magnitude_scores", "0-d weight", lambda: magnitude_scores(torch.tensor(1.0)), ValueError, "w"),
    case("prune.wanda_scores", "acts width differs", lambda: wanda_scores(W, X[:, :16]), ValueError, "acts"),
    case("prune.wanda_scores", "NaN acts", lambda: wanda_scores(W, NAN_X), ValueError, "acts"),
    case("prune.wanda_scores", "1-D acts", lambda: wanda_scores(W, X[0]), ValueError, "acts"),
    case("prune.wanda_scores", "acts None", lambda: wanda_scores(W, None), TypeError, "acts"),
    case("prune.wanda_scores", "no calibration tokens", lambda: wanda_scores(W, X[:0]), ValueError, "acts"),
    case("prune.wanda_scores", "NaN weight", lambda: wanda_scores(NAN_W, X), ValueError, "w"),
    case("prune.wanda_scores", "int acts", lambda: wanda_scores(W, X.int()), TypeError, "acts"),
    # ------------------------------------------------------------------ masks
    case("prune.top_n_mask", "n = 5 > m = 4", lambda: top_n_mask(S.view(-1, 4), 5), ValueError, "n"),
    case("prune.top_n_mask", "negative n", lambda: top_n_mask(S.view(-1, 4), -1), ValueError, "n"),
    case("prune.top_n_mask", "n a float", lambda: top_n_mask(S.view(-1, 4), 2.0), TypeError, "n"),
    case("prune.top_n_mask", "NaN score", lambda: top_n_mask(NAN_W.abs().view(-1, 4), 2), ValueError, "s"),
    case("prune.top_n_mask", "0-d scores", lambda: top_n_mask(torch.tensor(1.0), 0), ValueError, "s"),
    case("prune.top_n_mask", "int scores", lambda: top_n_mask(S.int(), 2), TypeError, "s"),
    case("prune.nm_mask", "n = m", lambda: nm_mask(S, 4, 4), ValueError, "n"),
    case("prune.nm_mask", "n = 0", lambda: nm_mask(S, 0, 4), ValueError, "n"),
    case("prune.nm_mask", "m = 17", lambda: nm_mask(torch.rand(2, 34), 2, 17), ValueError, "m"),
    case("prune.nm_mask", "cols not a multiple of m", lambda: nm_mask(torch.rand(2, 6)), ValueError, "scores"),
    case("prune.nm_mask", "NaN score", lambda: nm_mask(NAN_W), ValueError, "scores"),
    case("prune.nm_mask", "bool scores", lambda: nm_mask(MASK), TypeError, "scores"),
    case("prune.nm_mask", "0-d scores", lambda: nm_mask(torch.tensor(1.0)), ValueError, "scores"),
    case("prune.samoyeds_mask", "1-D scores", lambda: samoyeds_mask(torch.rand(128)), ValueError, "scores"),
    case("prune.samoyeds_mask", "rows not a multiple of m", lambda: samoyeds_mask(torch.rand(3, 16), vector=16),
         ValueError, "scores"),
    case("prune.samoyeds_mask", "vector 6", lambda: samoyeds_mask(torch.rand(4, 12), vector=6), ValueError,
         "vector"),
    case("prune.samoyeds_mask", "cols not a multiple of vector", lambda: samoyeds_mask(S, vector=128),
         ValueError, "scores"),
    case("prune.samoyeds_mask", "NaN score", lambda: samoyeds_mask(NAN_W, vector=16), ValueError, "scores"),
    case("prune.samoyeds_mask", "n = m", lambda: samoyeds_mask(S, n=2, m=2, vector=16), ValueError, "n"),
    case("prune.venom_mask", "kept width not a multiple of 4", lambda: venom_mask(S[:, :16], v=4, n=1, m=8),
         ValueError, "scores"),
    case("prune.venom_mask", "v = 0", lambda: venom_mask(S, v=0), ValueError, "v"),
    case("prune.venom_mask", "n > m", lambda: venom_mask(S, v=4, n=9, m=8), ValueError, "n"),
    case("prune.venom_mask", "NaN score", lambda: venom_mask(NAN_W, v=4), ValueError, "scores"),
    case("prune.venom_mask", "rows not a multiple of v", lambda: venom_mask(S, v=3), ValueError, "scores"),
    case("prune.unstructured_mask", "density 1.5", lambda: unstructured_mask(S, 1.5), ValueError, "density"),
    case("prune.unstructured_mask", "density NaN", lambda: unstructured_mask(S, math.nan), ValueError, "density"),
    case("prune.unstructured_mask", "density negative", lambda: unstructured_mask(S, -0.1), ValueError,
         "density"),
    case("prune.unstructured_mask", "density a str", lambda: unstructured_mask(S, "0.5"), TypeError, "density"),
    case("prune.unstructured_mask", "density a bool", lambda: unstructured_mask(S, True), TypeError, "density"),
    case("prune.unstructured_mask", "NaN score", lambda: unstructured_mask(NAN_W, 0.5), ValueError, "scores"),
    case("prune.unstructured_mask", "scores a list", lambda: unstructured_mask([0.1], 0.5), TypeError, "scores"),
    # ------------------------------------------------------------------ prune_mask / sparsify / parse_pattern
    case("prune.prune_mask", "acts given to magnitude", lambda: prune_mask(W, "2:4", "magnitude", acts=X),
         ValueError, "acts"),
    case("prune.prune_mask", "wanda without acts", lambda: prune_mask(W, "2:4", "wanda"), ValueError, "acts"),
    case("prune.prune_mask", "unknown method", lambda: prune_mask(W, "2:4", "sgd"), ValueError, "method"),
    case("prune.prune_mask", "method None", lambda: prune_mask(W, "2:4", None), TypeError, "method"),
    case("prune.prune_mask", "unknown pattern", lambda: prune_mask(W, "3x4"), ValueError, "pattern"),
    case("prune.prune_mask", "pattern an int", lambda: prune_mask(W, 24), TypeError, "pattern"),
    case("prune.prune_mask", "NaN weight", lambda: prune_mask(NAN_W, "2:4"), ValueError, "w"),
    case("prune.prune_mask", "inf weight (samoyeds)", lambda: prune_mask(INF_W, "samoyeds", vector=16),
         ValueError, "w"),
    case("prune.prune_mask", "NaN weight, dense pattern", lambda: prune_mask(NAN_W, "dense"), ValueError, "w"),
    case("prune.sparsify", "inf dense, unstructured", lambda: sparsify(INF_W, "unstructured", density=0.5),
         ValueError, "dense"),
    case("prune.prune_mask", "'0:4'", lambda: prune_mask(W, "0:4"), ValueError, "n"),
    case("prune.prune_mask", "'5:4'", lambda: prune_mask(W, "5:4"), ValueError, "n"),
    case("prune.prune_mask", "samoyeds on 1-D", lambda: prune_mask(W[0], "samoyeds", vector=16), ValueError, "w"),
    case("prune.prune_mask", "unknown keyword", lambda: prune_mask(W, "2:4", vector=16), TypeError, "vector"),
    case("prune.prune_mask", "density missing", lambda: prune_mask(W, "unstructured"), ValueError, "density"),
    case("prune.prune_mask", "density 2", lambda: prune_mask(W, "unstructured", density=2), ValueError,
         "density"),
    case("prune.prune_mask", "NaN acts (wanda)", lambda: prune_mask(W, "2:4", "wanda", NAN_X), ValueError, "acts"),
    case("prune.sparsify", "acts given to magnitude", lambda: sparsify(W, "2:4", acts=X), ValueError, "acts"),
    case("prune.sparsify", "3-D dense", lambda: sparsify(W.view(2, 4, 32), "2:4"), ValueError, "dense"),
    case("prune.sparsify", "int dense", lambda: sparsify(W.int(), "2:4"), TypeError, "dense"),
    case("prune.sparsify", "NaN dense", lambda: sparsify(NAN_W, "2:4"), ValueError, "dense"),
    case("prune.sparsify", "venom kept width", lambda: sparsify(W[:, :16], "venom", v=4, n=1, m=8),
         ValueError, "dense"),
    case("prune.sparsify", "n given twice", lambda: sparsify(W, "2:4", n=2), TypeError, "n"),
    case("prune.parse_pattern", "not a str", lambda: parse_pattern(None), TypeError, "pattern"),
    case("prune.parse_pattern", "unknown", lambda: parse_pattern("2:4:8"), ValueError, "pattern"),
    case("prune.parse_pattern", "n given twice", lambda: parse_pattern("2:4", n=1), TypeError, "n"),
    case("prune.parse_pattern", "unknown keyword", lambda: parse_pattern("dense", n=1), TypeError, "n"),
    case("prune.parse_pattern", "density missing", lambda: parse_pattern("unstructured"), ValueError, "density"),
    case("prune.parse_pattern", "'0:4'", lambda: parse_pattern("0:4"), ValueError, "n"),
    case("prune.parse_pattern", "'4:4' (keeps everything)", lambda: parse_pattern("4:4"), ValueError, "n"),
    case("prune.parse_pattern", "samoyeds vector 6", lambda: parse_pattern("samoyeds", vector=6), ValueError,
         "vector"),
    case("prune.parse_pattern", "venom v a str", lambda: parse_pattern("venom", v="64"), TypeError, "v"),
    case("prune.parse_pattern", "density NaN", lambda: parse_pattern("unstructured", density=math.nan),
         ValueError, "density"),
    # ------------------------------------------------------------------ metrics
    case("prune.reconstruction_error", "mask shape differs", lambda: reconstruction_error(W, MASK[:4]),
         ValueError, "mask"),
    case("prune.reconstruction_error", "mask not bool", lambda: reconstruction_error(W, MASK.float()), TypeError,
         "mask"),
    case("prune.reconstruction_error", "NaN weight", lambda: reconstruction_error(NAN_W, MASK), ValueError, "w"),
    case("prune.reconstruction_error", "acts width differs", lambda: reconstruction_error(W, MASK, X[:, :8]),
         ValueError, "acts"),
    case("prune.reconstruction_error", "NaN acts", lambda: reconstruction_error(W, MASK, NAN_X), ValueError,
         "acts"),
    case("prune.reconstruction_error", "mask None", lambda: reconstruction_error(W, None), TypeError, "mask"),
    # ------------------------------------------------------------------ calibration
    case("prune.outlier_activations", "tokens 0", lambda: outlier_activations(0, 8), ValueError, "tokens"),
    case("prune.outlier_activations", "channels a float", lambda: outlier_activations(4, 8.0), TypeError,
         "channels"),
    case("prune.outlier_activations", "tokens a str", lambda: outlier_activations("4", 8), TypeError, "tokens"),
    case("prune.outlier_activations", "huge (10**7 x 10**7)", lambda: outlier_activations(10**7, 10**7),
         ValueError, ("tokens", "channels")),
    case("prune.outlier_activations", "n_outliers > channels", lambda: outlier_activations(4, 8, n_outliers=9),
         ValueError, "n_outliers"),
    case("prune.outlier_activations", "outlier_scale NaN",
         lambda: outlier_activations(4, 8, outlier_scale=math.nan), ValueError, "outlier_scale"),
    case("prune.outlier_activations", "outlier_scale 0", lambda: outlier_activations(4, 8, outlier_scale=0),
         ValueError, "outlier_scale"),
    case("prune.outlier_activations", "outlier_scale a str", lambda: outlier_activations(4, 8, outlier_scale="x"),
         TypeError, "outlier_scale"),
    case("prune.outlier_activations", "sigma negative", lambda: outlier_activations(4, 8, sigma=-1.0), ValueError,
         "sigma"),
    case("prune.outlier_activations", "sigma inf", lambda: outlier_activations(4, 8, sigma=math.inf), ValueError,
         "sigma"),
    case("prune.outlier_activations", "seed negative", lambda: outlier_activations(4, 8, seed=-1), ValueError,
         "seed"),
    case("prune.outlier_activations", "seed 2**70", lambda: outlier_activations(4, 8, seed=2**70), ValueError,
         "seed"),
    case("prune.outlier_activations", "seed a float", lambda: outlier_activations(4, 8, seed=1.5), TypeError,
         "seed"),
]


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ---------------------------------------------------------------------------------------------- properties
_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.integers(1, 8), st.integers(-3, 12))
def test_top_n_mask_n_in_range_or_named_error(m, n):
    s = torch.rand(3, m, generator=torch.Generator().manual_seed(m))
    if 0 <= n <= m:
        mask = top_n_mask(s, n)
        assert bool((mask.sum(-1) == n).all())
    else:
        with pytest.raises(ValueError, match="n"):
            top_n_mask(s, n)


@_FAST
@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_unstructured_density_in_range_or_named_error(d):
    if 0.0 <= d <= 1.0:
        mask = unstructured_mask(S, d)
        assert int(mask.sum()) == min(S.numel(), math.floor(d * S.numel() + 0.5))
    else:
        with pytest.raises(ValueError, match="density"):
            unstructured_mask(S, d)


@_FAST
@given(st.integers(0, 6), st.integers(1, 8))
def test_spelled_nm_pattern_checked(n, m):
    spelled = f"{n}:{m}"
    if 1 <= n < m <= 16 and 32 % m == 0:
        mask = prune_mask(W, spelled)
        assert bool((mask.view(8, -1, m).sum(-1) == n).all())
    elif not 1 <= n < m:
        with pytest.raises(ValueError, match="n|m"):
            prune_mask(W, spelled)


@_FAST
@given(st.integers(0, 7), st.integers(0, 31))
def test_any_non_finite_weight_entry_is_named(r, c):
    w = W.clone()
    w[r, c] = math.inf
    for call in (lambda: prune_mask(w, "2:4"), lambda: sparsify(w, "samoyeds", vector=16),
                 lambda: magnitude_scores(w)):
        with pytest.raises(ValueError, match="w|dense"):
            call()
