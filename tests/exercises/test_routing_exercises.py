"""The lab-03 exercise checkers (top-k routing, temporal locality): True for correct answers, False with a
mismatch view for wrong ones, and never an exception caused by the learner's code."""

import pytest
import torch

from samoyeds_lab.exercises.routing import (
    check_locality,
    check_top_k_routing,
    example_first_choices,
    example_logits,
    solution_locality,
    solution_top_k_routing,
)


def stub(*args):
    # TODO
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------- references
def top_k_loop(logits, k):
    """Plain-Python reference: per token, sort the softmax probabilities and renormalise the first k."""
    T, E = logits.shape
    ids = torch.zeros(T, k, dtype=torch.int64)
    w = torch.zeros(T, k)
    for t in range(T):
        p = torch.softmax(logits[t].double(), 0).tolist()
        order = sorted(range(E), key=lambda e: -p[e])[:k]
        total = sum(p[e] for e in order)
        ids[t] = torch.tensor(order)
        w[t] = torch.tensor([p[e] / total for e in order])
    return ids, w


def top_k_kept_logits(logits, k):
    """Top-k of the logits, then a softmax over the k kept ones: the same thing (the normaliser cancels)."""
    z, ids = logits.topk(k, dim=-1)
    return ids.tolist(), torch.softmax(z.float(), -1).tolist()  # lists are accepted too


def locality_loop(first, seq):
    """Plain-Python reference: walk every sequence, count repeats of the first choice."""
    f, pairs, same, start = first.tolist(), 0, 0, 0
    for n in seq.tolist():
        for t in range(start, start + n - 1):
            pairs += 1
            same += f[t] == f[t + 1]
        start += n
    T = len(f)
    return same / pairs, sum((f.count(e) / T) ** 2 for e in set(f))


# ---------------------------------------------------------------------------------------------- exercise 1
@pytest.mark.parametrize("fn", [solution_top_k_routing, top_k_loop, top_k_kept_logits],
                         ids=["solution", "loop", "kept-logits"])
def test_top_k_correct(fn, capsys):
    assert check_top_k_routing(fn) is True
    out = capsys.readouterr().out
    assert "solved" in out and "tiny model" in out  # the shipped logits are among the cases


def _no_renorm(z, k):
    return tuple(reversed(torch.softmax(z, -1).topk(k, dim=-1)))


def _ascending(z, k):
    ids, w = solution_top_k_routing(z, k)
    return ids.flip(1), w.flip(1)


def _smallest(z, k):
    w, ids = torch.softmax(z, -1).topk(k, dim=-1, largest=False)
    return ids, w / w.sum(-1, keepdim=True)


def _logit_weights(z, k):
    ids, _ = solution_top_k_routing(z, k)
    w = z.gather(1, ids)
    return ids, w / w.sum(-1, keepdim=True)


@pytest.mark.parametrize(
    "fn, expect",
    [
        (_no_renorm, "renormalise"),
        (_ascending, "wrong order"),
        (_smallest, "LARGEST"),
        (_logit_weights, "mismatch"),
        (lambda z, k: solution_top_k_routing(z, k)[0], "pair (ids, weights)"),
        (lambda z, k: (solution_top_k_routing(z, k)[0][:, :1], solution_top_k_routing(z, k)[1]), "shape"),
        (lambda z, k: (solution_top_k_routing(z, k)[0].float(), solution_top_k_routing(z, k)[1]), "integer"),
        (lambda z, k: (solution_top_k_routing(z, k)[0] + 100, solution_top_k_routing(z, k)[1]), "must be in"),
    ],
    ids=["no-renorm", "ascending", "smallest", "logit-weights", "not-a-pair", "bad-shape", "float-ids", "out-of-range"],
)
def test_top_k_wrong(fn, expect, capsys):
    assert check_top_k_routing(fn) is False
    out = capsys.readouterr().out
    assert expect in out and "❌" in out


def test_top_k_mismatch_view_shows_yours_expected_and_mask(capsys):
    assert check_top_k_routing(_no_renorm) is False
    out = capsys.readouterr().out
    for word in ("yours ids", "expected ids", "mismatch", "X", "softmax", "hint:"):
        assert word in out


def test_top_k_stub_and_other_exceptions_are_reported(capsys):
    assert check_top_k_routing(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_top_k_routing(lambda z, k: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_top_k_in_place_modification_is_reported(capsys):
    def mutating(z, k):
        out = solution_top_k_routing(z, k)
        z.zero_()
        return out

    assert check_top_k_routing(mutating) is False
    assert "modified its input" in capsys.readouterr().out


def test_top_k_checks_its_arguments():
    with pytest.raises(TypeError, match="fn"):
        check_top_k_routing(3)
    with pytest.raises(ValueError, match="trials"):
        check_top_k_routing(solution_top_k_routing, trials=-1)


def test_top_k_solution_agrees_with_route_on_ties():
    """Ties between equal probabilities may be broken either way: both orders pass."""
    from samoyeds_lab.moe import route

    z = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    ids, w = solution_top_k_routing(z, 2)
    assert torch.allclose(w, route(z, 2).topk_weights)
    assert example_logits().shape == (6, 8)


# ---------------------------------------------------------------------------------------------- exercise 2
@pytest.mark.parametrize("fn", [solution_locality, locality_loop], ids=["solution", "loop"])
def test_locality_correct(fn, capsys):
    assert check_locality(fn) is True
    assert "solved" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fn, expect",
    [
        (lambda f, s: (float((f[1:] == f[:-1]).double().mean()), solution_locality(f, s)[1]), "sequence boundary"),
        (lambda f, s: (float((f[1:] == f[:-1]).double().sum() / f.numel()), solution_locality(f, s)[1]), "not / T"),
        (lambda f, s: (solution_locality(f, s)[0], 1 / 8), "UNIFORM"),
        (lambda f, s: (solution_locality(f, s)[0], solution_locality(f, s)[1] ** 0.5), "Σ_e p_e²"),
        (lambda f, s: solution_locality(f, s)[0], "pair of floats"),
    ],
    ids=["crosses-boundaries", "over-T", "uniform-baseline", "wrong-baseline", "one-number"],
)
def test_locality_wrong(fn, expect, capsys):
    assert check_locality(fn) is False
    out = capsys.readouterr().out
    assert expect in out and "❌" in out


def test_locality_mismatch_view(capsys):
    check_locality(lambda f, s: (float((f[1:] == f[:-1]).double().mean()), solution_locality(f, s)[1]))
    out = capsys.readouterr().out
    assert "yours" in out and "expected" in out and "mismatch" in out and " X" in out
    assert "| 1 5 5 2 |" in out  # the example with its sequence boundaries


def test_locality_stub_and_other_exceptions_are_reported(capsys):
    assert check_locality(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_locality(lambda f, s: [][1]) is False
    assert "IndexError" in capsys.readouterr().out


def test_locality_in_place_modification_is_reported(capsys):
    def mutating(f, s):
        out = solution_locality(f, s)
        f.fill_(0)
        return out

    assert check_locality(mutating) is False
    assert "modified its inputs" in capsys.readouterr().out


def test_locality_checks_its_arguments():
    with pytest.raises(TypeError, match="fn"):
        check_locality("not a function")
    with pytest.raises(ValueError, match="seed"):
        check_locality(solution_locality, seed=-3)


def test_locality_example_and_shipped_trace():
    """The example's two boundary repeats are excluded; on a shipped trace the solution is the package's."""
    from samoyeds_lab.routing import temporal_locality
    from samoyeds_lab.routing.ship import load_shipped_trace

    first, seq = example_first_choices()
    rate, base = solution_locality(first, seq)
    assert rate == pytest.approx(5 / 9) and base == pytest.approx(sum(c * c for c in (4, 4, 2, 2)) / 144)
    tr = load_shipped_trace("code")
    loc = temporal_locality(tr)
    for layer in range(tr.num_layers):
        r, b = solution_locality(tr.topk_ids[layer, :, 0], tr.sequence_lengths)
        assert r == pytest.approx(float(loc.first[layer])) and b == pytest.approx(float(loc.first_random[layer]))
