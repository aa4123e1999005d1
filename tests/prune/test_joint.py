"""Joint Samoyeds row selection for paired projections (gate/up of a SwiGLU expert) and the live-neuron
metric: brute-force references written here, structure checks, the normalisation rule, method-level
wrappers and bad-input tables."""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.formats import SamoyedsWeight
from samoyeds_lab.prune import (
    JOINT_METHODS,
    METHODS,
    live_neuron_fraction,
    magnitude_scores,
    prune_mask,
    prune_masks_joint,
    samoyeds_mask,
    samoyeds_masks_joint,
    sparsify,
    sparsify_joint,
    wanda_scores,
)

from samoyeds_lab.prune.obs import obs_hessian, obs_prune, obs_row_scores, select_rows

from .reference import continuous, nm_ref, tie_heavy, top_n


# ---------------------------------------------------------------------------------------------- references
def joint_ref(scores_list, n: int, m: int, vector: int) -> list[torch.Tensor]:
    """Loops: post-2:4 row sums per window, each projection divided by its matrix total, summed, top n of m
    rows per window (ties: lower row), then each projection's own 2:4 inside the kept rows."""
    s = [x.double().tolist() for x in scores_list]
    rows, cols = len(s[0]), len(s[0][0])
    row_sum = [[[sum(sum(sorted(sp[r][g: g + 4], reverse=True)[:2]) for g in range(w0, w0 + vector, 4))
                 for w0 in range(0, cols, vector)] for r in range(rows)] for sp in s]
    totals = [sum(sum(r) for r in rs) or 1.0 for rs in row_sum]
    keep24 = [nm_ref(x, 2, 4) for x in scores_list]
    outs = [torch.zeros(rows, cols, dtype=torch.bool) for _ in s]
    for wi, w0 in enumerate(range(0, cols, vector)):
        for r0 in range(0, rows, m):
            combined = [sum(rs[r][wi] / t for rs, t in zip(row_sum, totals)) for r in range(r0, r0 + m)]
            for j in top_n(combined, n):
                for out, k in zip(outs, keep24):
                    out[r0 + j, w0: w0 + vector] = k[r0 + j, w0: w0 + vector]
    return outs


def live_ref(g: torch.Tensor, u: torch.Tensor, vector: int):
    """Per-window and overall live fractions by loops over neurons."""
    rows, cols = g.shape
    windows = cols // vector
    per = []
    for w in range(windows):
        sl = slice(w * vector, (w + 1) * vector)
        per.append(sum(bool(g[i, sl].any()) and bool(u[i, sl].any()) for i in range(rows)) / rows)
    overall = sum(bool(g[i].any()) and bool(u[i].any()) for i in range(rows)) / rows
    either = sum(bool(g[i].any()) or bool(u[i].any()) for i in range(rows))
    both = overall * rows
    return per, overall, (both / either if either else 0.0)


def kept_rows(mask: torch.Tensor, vector: int) -> torch.Tensor:
    """``[..., rows, windows]`` bool: which row segments keep anything."""
    return mask.reshape(*mask.shape[:-1], mask.shape[-1] // vector, vector).any(-1)


# (rows, cols, n, m, vector): awkward sizes, one and many windows per row
CASES = [(2, 4, 1, 2, 4), (6, 12, 1, 2, 4), (12, 24, 1, 3, 8), (20, 48, 3, 4, 16), (64, 128, 1, 2, 32),
         (64, 128, 1, 2, 128), (18, 40, 2, 3, 20)]


# ---------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("rows,cols,n,m,vector", CASES)
@pytest.mark.parametrize("kind", ["ties", "cont"])
def test_joint_matches_reference(rows, cols, n, m, vector, kind):
    make = tie_heavy if kind == "ties" else continuous
    sg, su = make((rows, cols), 1), make((rows, cols), 2) * 3  # up on another scale
    got = samoyeds_masks_joint([sg, su], n=n, m=m, vector=vector)
    want = joint_ref([sg, su], n, m, vector)
    for g, w in zip(got, want):
        assert g.dtype == torch.bool and g.shape == (rows, cols)
        assert torch.equal(g, w)


@pytest.mark.parametrize("rows,cols,n,m,vector", CASES)
def test_pair_shares_kept_rows_and_keeps_own_24(rows, cols, n, m, vector):
    sg, su = continuous((rows, cols), 3) + 0.01, continuous((rows, cols), 4) + 0.01  # every weight scores > 0
    mg, mu = samoyeds_masks_joint([sg, su], n=n, m=m, vector=vector)
    kg, ku = kept_rows(mg, vector), kept_rows(mu, vector)
    assert torch.equal(kg, ku)  # identical kept rows in every window
    assert bool((kg.view(rows // m, m, -1).sum(1) == n).all())  # n of every m rows per window
    for mk, s in ((mg, sg), (mu, su)):  # 2:4 inside kept rows, from the projection's own scores
        own24 = nm_ref(s, 2, 4)
        assert torch.equal(mk, own24 & kg.repeat_interleave(vector, dim=-1))
        assert int(mk.sum()) == rows * cols * n // m // 2


def test_single_projection_is_samoyeds_mask_and_scale_invariant():
    s, t = continuous((40, 96), 5), continuous((40, 96), 6)
    (alone,) = samoyeds_masks_joint([s], n=1, m=2, vector=32)
    assert torch.equal(alone, samoyeds_mask(s, n=1, m=2, vector=32))
    a, b = samoyeds_masks_joint([s, s * 4], n=1, m=2, vector=32)  # the same scores at another scale
    assert torch.equal(a, alone) and torch.equal(b, alone)
    base = samoyeds_masks_joint([s, t], n=1, m=2, vector=32)
    scaled = samoyeds_masks_joint([s * 1024, t / 8], n=1, m=2, vector=32)  # powers of two: exact
    assert all(torch.equal(x, y) for x, y in zip(base, scaled))


def test_normalisation_decides_against_raw_sums():
    # gate prefers row 0 (3 vs 1, 75% of its score), up prefers row 1 (28 vs 12, 70% of its score):
    # normalised 0.75 + 0.30 > 0.25 + 0.70 keeps row 0; raw sums 15 < 29 would have kept row 1.
    sg = torch.tensor([[3.0, 0, 0, 0], [1.0, 0, 0, 0]])
    su = torch.tensor([[12.0, 0, 0, 0], [28.0, 0, 0, 0]])
    mg, mu = samoyeds_masks_joint([sg, su], n=1, m=2, vector=4)
    assert kept_rows(mg, 4).flatten().tolist() == [True, False]
    assert kept_rows(mu, 4).flatten().tolist() == [True, False]


def test_stack_normalises_every_matrix_on_its_own():
    s = continuous((3, 16, 64), 7)
    t = continuous((3, 16, 64), 8) * torch.tensor([1.0, 64.0, 1 / 64])[:, None, None]
    got = samoyeds_masks_joint([s, t], n=1, m=2, vector=32)
    for e in range(3):
        want = joint_ref([s[e], t[e]], 1, 2, 32)
        assert all(torch.equal(g[e], w) for g, w in zip(got, want))


def test_zero_scores_of_one_projection_leave_the_other_in_charge():
    s = continuous((8, 16), 9)
    got = samoyeds_masks_joint([torch.zeros(8, 16), s], n=1, m=2, vector=8)
    assert torch.equal(kept_rows(got[1], 8), kept_rows(samoyeds_mask(s, 1, 2, 8), 8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    sg, su = tie_heavy((12, 32), 10, dtype=dtype), tie_heavy((12, 32), 11, dtype=dtype)
    got = samoyeds_masks_joint([sg, su], n=1, m=2, vector=16)
    want = joint_ref([sg, su], 1, 2, 16)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


# ---------------------------------------------------------------------------------------------- live neurons
@pytest.mark.parametrize("rows,cols,vector", [(1, 4, 4), (7, 12, 4), (33, 64, 16), (64, 128, 128)])
@pytest.mark.parametrize("density", [0.02, 0.3, 0.9])
def test_live_fraction_matches_loops(rows, cols, vector, density):
    g = continuous((rows, cols), 12) < density
    u = continuous((rows, cols), 13) < density
    got = live_neuron_fraction(g, u, vector)
    per, overall, paired = live_ref(g, u, vector)
    assert got.per_window.dtype == torch.float64 and got.per_window.tolist() == pytest.approx(per, abs=1e-12)
    assert got.overall == pytest.approx(overall, abs=1e-12)
    assert got.paired == pytest.approx(paired, abs=1e-12)


@pytest.mark.parametrize("rows,cols,n,m,vector", [(64, 128, 1, 2, 128), (64, 128, 1, 2, 32), (24, 60, 2, 3, 20)])
def test_live_fraction_of_joint_masks(rows, cols, n, m, vector):
    sg, su = continuous((rows, cols), 14) + 0.01, continuous((rows, cols), 15) + 0.01
    mg, mu = samoyeds_masks_joint([sg, su], n=n, m=m, vector=vector)
    live = live_neuron_fraction(mg, mu, vector)
    assert live.paired == 1.0 and live.paired_per_window.tolist() == [1.0] * (cols // vector)
    assert live.per_window.tolist() == pytest.approx([n / m] * (cols // vector))
    if cols == vector:  # one window per row: the kept half of the neurons, exactly
        assert live.overall == pytest.approx(n / m)
    ig, iu = samoyeds_mask(sg, n, m, vector), samoyeds_mask(su, n, m, vector)
    indep = live_neuron_fraction(ig, iu, vector)  # unrelated scores: the two choices disagree somewhere
    assert indep.paired < 1.0 and bool((indep.per_window < live.per_window).all())
    if cols == vector:
        assert indep.overall < live.overall


def test_live_fraction_small_example_and_stack():
    g = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    u = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    live = live_neuron_fraction(g, u, vector=2)
    assert live.per_window.tolist() == pytest.approx([1 / 3, 0.0])
    assert live.overall == pytest.approx(2 / 3) and live.paired == pytest.approx(2 / 3)
    assert live.paired_per_window.tolist() == pytest.approx([1 / 3, 0.0])
    whole = live_neuron_fraction(g, u)  # one window = the whole row
    assert whole.per_window.tolist() == pytest.approx([2 / 3]) and whole.overall == pytest.approx(2 / 3)
    stacked = live_neuron_fraction(torch.stack([g, g]), torch.stack([u, torch.zeros_like(u)]), vector=2)
    assert stacked.overall == pytest.approx(2 / 6) and stacked.paired == pytest.approx(2 / 5)


def test_live_fraction_empty():
    live = live_neuron_fraction(torch.zeros(0, 8, dtype=torch.bool), torch.zeros(0, 8, dtype=torch.bool), 4)
    assert live.per_window.tolist() == [0.0, 0.0] and live.overall == 0.0 and live.paired == 0.0


# ---------------------------------------------------------------------------------------------- method level
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prune_masks_joint_scores(method, dtype):
    torch.manual_seed(0)
    wg, wu = torch.randn(48, 64).to(dtype), (torch.randn(48, 64) * 2).to(dtype)
    x = torch.randn(19, 64) * torch.linspace(0.1, 3, 64) if method == "wanda" else None
    got = prune_masks_joint([wg, wu], "samoyeds", method, x, vector=32)
    if method == "wanda":
        scores = [wanda_scores(wg, x), wanda_scores(wu, x)]
    else:
        scores = [magnitude_scores(wg), magnitude_scores(wu)]
    want = samoyeds_masks_joint(scores, n=1, m=2, vector=32)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("pattern,kw", [("2:4", {}), ("nm", {"n": 1, "m": 4}), ("venom", {"v": 16, "n": 4, "m": 8}),
                                        ("unstructured", {"density": 0.3}), ("dense", {})])
def test_patterns_without_rows_to_share_are_per_projection(pattern, kw):
    torch.manual_seed(1)
    wg, wu = torch.randn(32, 64), torch.randn(32, 64)
    got = prune_masks_joint([wg, wu], pattern, **kw)
    assert all(torch.equal(g, prune_mask(w, pattern, **kw)) for g, w in zip(got, (wg, wu)))
    ops = sparsify_joint([wg, wu], pattern, **kw)
    for op, w in zip(ops, (wg, wu)):
        assert torch.equal(op.to_dense(), sparsify(w, pattern, **kw).to_dense())


@pytest.mark.parametrize("method", ["magnitude", "wanda"])  # obs: test_obs_joint_… (it updates the weights)
def test_sparsify_joint_operands(method):
    torch.manual_seed(2)
    wg, wu = torch.randn(40, 96), torch.randn(40, 96)
    x = torch.randn(7, 96) if method == "wanda" else None
    masks = prune_masks_joint([wg, wu], "samoyeds", method, x, n=1, m=2, vector=32)
    ops = sparsify_joint([wg, wu], "samoyeds", method, x, n=1, m=2, vector=32)
    for op, w, mk in zip(ops, (wg, wu), masks):
        assert isinstance(op, SamoyedsWeight) and (op.n, op.m, op.vector) == (1, 2, 32)
        assert torch.equal(op.to_dense(), w.masked_fill(~mk, 0))
    assert torch.equal(ops[0].row_index, ops[1].row_index)  # one row selection for the pair


# ---------------------------------------------------------------------------------------------- OBS
def test_every_joint_method_is_a_method():
    assert set(JOINT_METHODS) <= set(METHODS) and {"magnitude", "wanda", "obs"} <= set(JOINT_METHODS)


def test_obs_joint_shares_rows_and_runs_each_projection_with_them():
    torch.manual_seed(3)
    wg, wu = torch.randn(32, 64), torch.randn(32, 64) * 0.25
    x = torch.randn(80, 64) * torch.linspace(0.2, 2.0, 64)
    masks = prune_masks_joint([wg, wu], "samoyeds", "obs", x, vector=16)
    ops = sparsify_joint([wg, wu], "samoyeds", "obs", x, vector=16)
    assert torch.equal(kept_rows(masks[0], 16), kept_rows(masks[1], 16))
    assert torch.equal(ops[0].row_index, ops[1].row_index)
    # the shared rows: each projection's OBS row scores on the one Hessian, divided by their total, summed
    h = obs_hessian(x, 64)
    rs = [obs_row_scores(w, hessian=h, vector=16).double() for w in (wg, wu)]
    rows = select_rows(rs[0] / rs[0].sum() + rs[1] / rs[1].sum(), 1, 2)
    for w, mk, op in zip((wg, wu), masks, ops):
        w_obs, want = obs_prune(w, x, "samoyeds", rows=rows, vector=16)  # the projection's own OBS sweep
        assert torch.equal(mk, want) and torch.equal(op.to_dense(), w_obs)
        assert torch.equal(kept_rows(mk, 16), rows)
    (alone,) = prune_masks_joint([wg], "samoyeds", "obs", x, vector=16)  # one projection: OBS's own choice
    assert torch.equal(alone, obs_prune(wg, x, "samoyeds", vector=16)[1])


# ---------------------------------------------------------------------------------------------- bad inputs
S = torch.rand(8, 16)
BAD_MASKS = [
    (lambda: samoyeds_masks_joint(S, vector=8), TypeError, "scores_list"),
    (lambda: samoyeds_masks_joint([], vector=8), ValueError, "scores_list"),
    (lambda: samoyeds_masks_joint([S, torch.rand(8, 32)], vector=8), ValueError, r"scores_list\[1\]"),
    (lambda: samoyeds_masks_joint([S, torch.ones(8, 16, dtype=torch.int32)], vector=8), TypeError, r"scores_list\[1\]"),
    (lambda: samoyeds_masks_joint([S, "up"], vector=8), TypeError, r"scores_list\[1\]"),
    (lambda: samoyeds_masks_joint([torch.rand(16)], vector=8), ValueError, r"scores_list\[0\]"),
    (lambda: samoyeds_masks_joint([S, S.clone().fill_(float("nan"))], vector=8), ValueError, r"scores_list\[1\]"),
    (lambda: samoyeds_masks_joint([torch.rand(7, 16)] * 2, vector=8), ValueError, "rows"),
    (lambda: samoyeds_masks_joint([S, S], vector=12), ValueError, "vector"),
    (lambda: samoyeds_masks_joint([S, S], vector=6), ValueError, "vector"),
    (lambda: samoyeds_masks_joint([S, S], n=2, m=2, vector=8), ValueError, "n"),
    (lambda: samoyeds_masks_joint([S, S], n=1.5, vector=8), TypeError, "n"),
]
G = torch.zeros(4, 8, dtype=torch.bool)
BAD_LIVE = [
    (lambda: live_neuron_fraction(G.float(), G), TypeError, "gate_mask"),
    (lambda: live_neuron_fraction(G, G.int()), TypeError, "up_mask"),
    (lambda: live_neuron_fraction(G, G[:, :4]), ValueError, "up_mask"),
    (lambda: live_neuron_fraction(G[0], G[0]), ValueError, "gate_mask"),
    (lambda: live_neuron_fraction(G, G, vector=3), ValueError, "vector"),
    (lambda: live_neuron_fraction(G, G, vector=0), ValueError, "vector"),
    (lambda: live_neuron_fraction(G, G, vector="4"), TypeError, "vector"),
]
W = torch.randn(8, 16)
BAD_JOINT = [
    (lambda: prune_masks_joint(W, vector=8), TypeError, "weights"),
    (lambda: prune_masks_joint([W, torch.randn(8, 8)], vector=8), ValueError, r"weights\[1\]"),
    (lambda: prune_masks_joint([W, W.int()], vector=8), TypeError, r"weights\[1\]"),
    (lambda: prune_masks_joint([W, W], method="bogus", vector=8), ValueError, "method"),
    (lambda: prune_masks_joint([W, W], method="obs", vector=8), ValueError, "acts"),
    (lambda: sparsify_joint([W, W], method="obs", vector=8), ValueError, "acts"),
    (lambda: prune_masks_joint([W[None], W[None]], method="obs", acts=torch.randn(3, 16), vector=8), ValueError,
     r"weights\[0\]"),
    (lambda: prune_masks_joint([W, W], method=3, vector=8), TypeError, "method"),
    (lambda: prune_masks_joint([W, W], method="wanda", vector=8), ValueError, "acts"),
    (lambda: prune_masks_joint([W, W], acts=torch.randn(3, 16), vector=8), ValueError, "acts"),
    (lambda: prune_masks_joint([W, W], method="wanda", acts=torch.randn(3, 8), vector=8), ValueError, "acts"),
    (lambda: prune_masks_joint([W, W], "bogus"), ValueError, "pattern"),
    (lambda: prune_masks_joint([W, W], vector=32), ValueError, "vector"),
    (lambda: prune_masks_joint([W, W.clone().fill_(float("inf"))], vector=8), ValueError, r"weights\[1\]"),
    (lambda: sparsify_joint([W[None], W[None]], vector=8), ValueError, r"weights\[0\]"),
]


@pytest.mark.parametrize("fn,exc,name", BAD_MASKS + BAD_LIVE + BAD_JOINT)
def test_bad_inputs_name_the_argument(fn, exc, name):
    with pytest.raises(exc, match=name):
        fn()
