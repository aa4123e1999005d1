"""The lab-05 exercise checkers (Wanda 2:4 mask, Samoyeds two-step mask): True for correct answers, False
(with a mismatch view) otherwise, never an exception caused by the learner's code."""


import pytest
import torch

from samoyeds_lab.exercises.pruning import (
    check_samoyeds_mask,
    check_wanda_mask,
    example_activations,
    example_scores,
    example_weight,
    solution_samoyeds_mask,
    solution_wanda_mask,
)
from samoyeds_lab.prune import nm_mask, prune_mask, samoyeds_mask


# ---------------------------------------------------------------------------------------------- references
def mask_24_of(scores):
    """Plain-Python 2:4: the 2 largest of every 4 consecutive scores of a row (ties: lower column)."""
    out = torch.zeros(scores.shape, dtype=torch.bool)
    for r in range(scores.shape[0]):
        for g in range(0, scores.shape[1], 4):
            order = sorted(range(4), key=lambda i: (-float(scores[r, g + i]), i))
            for i in order[:2]:
                out[r, g + i] = True
    return out


def wanda_loop(w, x):
    """Plain-Python Wanda score, then 2:4."""
    norms = [sum(float(x[t, j]) ** 2 for t in range(x.shape[0])) ** 0.5 for j in range(x.shape[1])]
    s = torch.tensor([[abs(float(w[i, j])) * norms[j] for j in range(w.shape[1])] for i in range(w.shape[0])],
                     dtype=torch.float64)
    return mask_24_of(s)


def samoyeds_loop(scores, vector):
    """Plain-Python Samoyeds 1:2 rows per window, then 2:4."""
    keep24 = mask_24_of(scores)
    out = torch.zeros(scores.shape, dtype=torch.bool)
    for p in range(scores.shape[0] // 2):
        for w0 in range(0, scores.shape[1], vector):
            sums = [sum(float(scores[r, c]) for c in range(w0, w0 + vector) if keep24[r, c])
                    for r in (2 * p, 2 * p + 1)]
            r = 2 * p if sums[0] >= sums[1] else 2 * p + 1
            out[r, w0:w0 + vector] = keep24[r, w0:w0 + vector]
    return out


def stub(*args):
    # TODO
    raise NotImplementedError


def _topk_lower_wins(s):
    """2:4 by topk: on equal scores it may keep another element than the package (ties are accepted)."""
    g = s.reshape(s.shape[0], -1, 4)
    return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.topk(2, dim=-1).indices, True).reshape(s.shape)


# ---------------------------------------------------------------------------------------------- exercise 1
@pytest.mark.parametrize("fn", [
    solution_wanda_mask,
    wanda_loop,
    lambda w, x: prune_mask(w, "2:4", method="wanda", acts=x).float(),  # 0/1 floats are accepted
    lambda w, x: nm_mask(w.abs() * torch.linalg.vector_norm(x, dim=0)).to(torch.uint8),
    lambda w, x: _topk_lower_wins((w.double().abs() * x.double().norm(dim=0))),  # fp64 scores
], ids=["solution", "loop", "float01", "uint8", "fp64"])
def test_wanda_correct(fn, capsys):
    assert check_wanda_mask(fn) is True
    out = capsys.readouterr().out
    assert "✅ solved" in out and "not yet" not in out


@pytest.mark.parametrize("fn, expect", [
    (lambda w, x: nm_mask(w.abs()), "that is the magnitude mask"),
    (lambda w, x: nm_mask(w.abs() * x.pow(2).sum(0)), "not its square"),
    (lambda w, x: nm_mask(w.abs() * x.abs().mean(0)), "the norm runs over the tokens"),
    (lambda w, x: nm_mask(-(w.abs() * x.norm(dim=0))), "mismatch"),  # the smallest two
    (lambda w, x: nm_mask(w * x.norm(dim=0)), "mismatch"),  # signed scores
    (lambda w, x: torch.ones_like(w, dtype=torch.bool), "keeps 4 values"),
    (lambda w, x: nm_mask(w.abs() * x.norm(dim=0))[:, :4], "shape"),
    (lambda w, x: nm_mask(w.abs() * x.norm(dim=0)).tolist(), "torch.Tensor"),
    (lambda w, x: nm_mask(w.abs() * x.norm(dim=0)).float() * 2, "0/1"),
], ids=["magnitude", "squared-norm", "mean-abs", "smallest", "signed", "all-ones", "bad-shape", "list", "not-binary"])
def test_wanda_wrong(fn, expect, capsys):
    assert check_wanda_mask(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and expect in out


def test_wanda_mismatch_view(capsys):
    assert check_wanda_mask(lambda w, x: nm_mask(w.abs())) is False
    out = capsys.readouterr().out
    for word in ("mismatch in case 0", "||x[:, j]||₂", "yours", "expected", "mismatch", "X", "hint:"):
        assert word in out


def test_wanda_mismatch_view_of_a_large_case_stays_narrow(capsys):
    """A failure on a wide random case shows at most 16 columns around the first difference."""
    def wrong_late(w, x):
        m = prune_mask(w, "2:4", method="wanda", acts=x)
        if w.shape[1] > 16:
            m[:, -4:] = torch.tensor([True, True, False, False]) != m[:, -4:]  # flip the last group
        return m

    assert check_wanda_mask(wrong_late) is False
    out = capsys.readouterr().out
    assert "showing rows" in out and max(len(line) for line in out.splitlines() if "  1  " in line) < 160


def test_wanda_stub_and_other_exceptions(capsys):
    assert check_wanda_mask(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_wanda_mask(lambda w, x: w.abs() * x) is False  # [out, in] * [tokens, in] does not broadcast
    out = capsys.readouterr().out
    assert "not yet solved" in out and "RuntimeError" in out


def test_wanda_in_place_modification_is_reported(capsys):
    def mutating(w, x):
        m = prune_mask(w, "2:4", method="wanda", acts=x)
        x.abs_()
        return m

    assert check_wanda_mask(mutating) is False
    assert "modified its input" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [3, None, "solution_wanda_mask"])
def test_wanda_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_wanda_mask(bad)


@pytest.mark.parametrize("kw, exc", [(dict(trials=-1), ValueError), (dict(seed="0"), TypeError),
                                     (dict(trials=1.5), TypeError)])
def test_wanda_checks_its_arguments(kw, exc):
    with pytest.raises(exc):
        check_wanda_mask(solution_wanda_mask, **kw)


def test_wanda_example_separates_wanda_from_magnitude():
    w, x = example_weight(), example_activations()
    assert torch.equal(w, example_weight()) and w.abs().unique().numel() == w.numel()
    wanda = prune_mask(w, "2:4", method="wanda", acts=x)
    assert not torch.equal(wanda, prune_mask(w, "2:4"))
    assert not torch.equal(wanda, nm_mask(w.abs() * x.pow(2).sum(0)))


def test_solution_wanda_is_the_librarys():
    from samoyeds_lab.prune import outlier_activations

    gen = torch.Generator().manual_seed(9)
    for rows, cols, tokens in [(1, 4, 1), (19, 36, 7), (64, 128, 99)]:
        w = torch.randn(rows, cols, generator=gen)
        x = outlier_activations(tokens, cols, seed=rows)
        assert torch.equal(solution_wanda_mask(w, x), prune_mask(w, "2:4", method="wanda", acts=x))


# ---------------------------------------------------------------------------------------------- exercise 2
def _no_24(s, vector):
    """Rows chosen right, but the whole row segment kept (no 2:4 inside)."""
    m = samoyeds_mask(s, 1, 2, vector)
    rows, cols = s.shape
    kept = m.reshape(rows, cols // vector, vector).any(-1, keepdim=True).expand(rows, cols // vector, vector)
    return kept.reshape(rows, cols)


def _window_sum_rows(s, vector):
    rows, cols = s.shape
    full = s.reshape(rows // 2, 2, cols // vector, vector).sum(-1)
    upper = full[:, 0] >= full[:, 1]
    keep = torch.stack([upper, ~upper], 1).reshape(rows, -1, 1).expand(rows, cols // vector, vector)
    return nm_mask(s) & keep.reshape(rows, cols)


def _lower_row_wins(s, vector):
    rows, cols = s.shape
    sums = (s * nm_mask(s)).reshape(rows // 2, 2, cols // vector, vector).sum(-1)
    upper = sums[:, 0] < sums[:, 1]  # keeps the weaker row
    keep = torch.stack([upper, ~upper], 1).reshape(rows, -1, 1).expand(rows, cols // vector, vector)
    return nm_mask(s) & keep.reshape(rows, cols)


@pytest.mark.parametrize("fn", [
    solution_samoyeds_mask,
    samoyeds_loop,
    lambda s, v: samoyeds_mask(s, 1, 2, v).int(),
    lambda s, v: samoyeds_mask(s.double(), 1, 2, v),
    # ties resolved another way (topk; the lower row on equal sums) are accepted
    lambda s, v: _topk_lower_wins(s) & samoyeds_mask(s, 1, 2, v).reshape(s.shape[0], -1, v).any(-1, keepdim=True)
    .expand(s.shape[0], s.shape[1] // v, v).reshape(s.shape),
], ids=["solution", "loop", "int01", "fp64", "other-ties"])
def test_samoyeds_correct(fn, capsys):
    assert check_samoyeds_mask(fn) is True
    out = capsys.readouterr().out
    assert "✅ solved" in out and "not yet" not in out


@pytest.mark.parametrize("fn, expect", [
    (_window_sum_rows, "sum of *all* their scores"),
    (lambda s, v: samoyeds_mask(s, 1, 2, s.shape[1]), "choose again in every"),  # one row choice for all K
    (_lower_row_wins, "mismatch"),
    (_no_24, "keep 0 and 8 values"),
    (lambda s, v: nm_mask(s), "drops the other row's entirely"),  # no row step
    (lambda s, v: samoyeds_mask(s, 1, 2, 4), "mismatch"),  # the window width ignored
    (lambda s, v: samoyeds_mask(s, 1, 2, v)[:-1], "shape"),
    (lambda s, v: "mask", "torch.Tensor"),
], ids=["window-sum", "whole-k", "weaker-row", "no-2:4", "no-rows", "v-ignored", "bad-shape", "string"])
def test_samoyeds_wrong(fn, expect, capsys):
    assert check_samoyeds_mask(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and expect in out


def test_samoyeds_mismatch_view(capsys):
    assert check_samoyeds_mask(_window_sum_rows) is False
    out = capsys.readouterr().out
    for word in ("mismatch in case 0", "rows 0 and 1, window 0", "2:4-kept sum in this window: row 0 = 12, row 1 = 13",
                 "yours", "expected", "mismatch", "X", "hint:"):
        assert word in out


def test_samoyeds_stub_and_other_exceptions(capsys):
    assert check_samoyeds_mask(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_samoyeds_mask(lambda s, v: s.reshape(v, -1, 3)) is False
    out = capsys.readouterr().out
    assert "not yet solved" in out and "RuntimeError" in out


def test_samoyeds_in_place_modification_is_reported(capsys):
    def mutating(s, v):
        m = samoyeds_mask(s, 1, 2, v)
        s.mul_(m)
        return m

    assert check_samoyeds_mask(mutating) is False
    assert "modified its input scores" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [3, None, "solution_samoyeds_mask"])
def test_samoyeds_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_samoyeds_mask(bad)


def test_samoyeds_example_separates_the_mistakes():
    s = example_scores()
    for v in (8, 16):
        exp = samoyeds_mask(s, 1, 2, v)
        assert not torch.equal(exp, _window_sum_rows(s, v))
    assert not torch.equal(samoyeds_mask(s, 1, 2, 8), samoyeds_mask(s, 1, 2, 16))


def test_solution_samoyeds_is_the_librarys():
    gen = torch.Generator().manual_seed(4)
    for rows, cols, v in [(2, 4, 4), (6, 96, 32), (64, 256, 128)]:
        s = torch.rand(rows, cols, generator=gen)
        assert torch.equal(solution_samoyeds_mask(s, v), samoyeds_mask(s, 1, 2, v))
        w = torch.randn(rows, cols, generator=gen)
        assert torch.equal(solution_samoyeds_mask(w.abs(), v), prune_mask(w, "samoyeds", vector=v))


# ---------------------------------------------------------------------------------------------- both
def test_solutions_pass_seeded(capsys):
    # how long a check takes is a benchmark with a budget (`samoyeds-lab bench panels`), not a test
    for check, sol in ((check_wanda_mask, solution_wanda_mask), (check_samoyeds_mask, solution_samoyeds_mask)):
        assert check(sol) and check(sol, seed=7, trials=30)
    out = capsys.readouterr().out
    assert out.count("✅ solved") == 4 and "❌" not in out
    # seeded: the same cases every time
    a, b = [], []
    check_wanda_mask(lambda w, x: a.append((w.clone(), x.clone())) or nm_mask(w.abs()), trials=3)
    check_wanda_mask(lambda w, x: b.append((w.clone(), x.clone())) or nm_mask(w.abs()), trials=3)
    assert len(a) == len(b) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
