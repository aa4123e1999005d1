"""The lab-04 exercise checkers (one expert's gather list, the MoE combine): True for correct answers,
False with a mismatch view for wrong ones, and never an exception caused by the learner's code."""

import pytest
import torch

from samoyeds_lab.exercises.moe_layer import (
    check_expert_gather,
    check_moe_combine,
    example_topk_ids,
    solution_expert_gather,
    solution_moe_combine,
)
from samoyeds_lab.formats import SENTINEL, TokenSelection


def stub(*args):
    # TODO
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------- references
def gather_loop(topk_ids, expert, pad_to):
    """Plain-Python reference: scan (token, choice) pairs in order, then pad to the tile with SENTINEL."""
    T, k = topk_ids.shape
    tokens, slots = [], []
    for t in range(T):
        for j in range(k):
            if int(topk_ids[t, j]) == expert:
                tokens.append(t)
                slots.append(t * k + j)
    while len(tokens) % pad_to:
        tokens.append(SENTINEL)
        slots.append(SENTINEL)
    return tokens, slots


def combine_loop(x, topk_ids, topk_weights, expert_fn):
    """Reference with one call per expert, accumulating row by row."""
    y = torch.zeros_like(x)
    for e in sorted(set(topk_ids.reshape(-1).tolist())):
        rows = [(t, j) for t in range(x.shape[0]) for j in range(topk_ids.shape[1]) if int(topk_ids[t, j]) == e]
        out = expert_fn(e, x[[t for t, _ in rows]])
        for i, (t, j) in enumerate(rows):
            y[t] += topk_weights[t, j] * out[i]
    return y


# ---------------------------------------------------------------------------------------------- exercise 1
@pytest.mark.parametrize("fn", [solution_expert_gather, gather_loop], ids=["solution", "loop-lists"])
def test_gather_correct(fn, capsys):
    assert check_expert_gather(fn) is True
    assert "solved" in capsys.readouterr().out


def _strip(fn):
    return lambda i, e, p: tuple(v[v >= 0] for v in fn(i, e, p))


def _pad_zero(i, e, p):
    return tuple(torch.where(v >= 0, v, 0) for v in solution_expert_gather(i, e, p))


def _slot_is_token(i, e, p):
    tok, _ = solution_expert_gather(i, e, p)
    return tok, tok


def _always_one_more_tile(i, e, p):
    tok, slot = (v[v >= 0] for v in solution_expert_gather(i, e, p))
    n = (tok.numel() // p + 1) * p
    return tuple(torch.cat([v, torch.full((n - v.numel(),), SENTINEL)]) for v in (tok, slot))


def _first_choice_only(i, e, p):
    return solution_expert_gather(i[:, :1], e, p)


@pytest.mark.parametrize(
    "fn, expect",
    [
        (_strip(solution_expert_gather), "pad each list with SENTINEL"),
        (_pad_zero, "names no token"),
        (_slot_is_token, "t·k + j"),
        (_always_one_more_tile, "round UP"),
        (_first_choice_only, "mismatch"),
        (lambda i, e, p: solution_expert_gather(i, e, p)[0], "pair (tokens, slots)"),
        (lambda i, e, p: tuple(v.float() for v in solution_expert_gather(i, e, p)), "integer"),
    ],
    ids=["no-padding", "pad-with-0", "slot-is-token", "off-by-one-tile", "first-choice-only", "one-list", "float"],
)
def test_gather_wrong(fn, expect, capsys):
    assert check_expert_gather(fn) is False
    out = capsys.readouterr().out
    assert expect in out and "❌" in out


def test_gather_mismatch_view(capsys):
    check_expert_gather(_pad_zero)
    out = capsys.readouterr().out
    assert "tokens yours" in out and "tokens expected" in out and "mismatch" in out and "X" in out
    assert "topk_ids = [[0, 2], [0, 1], [1, 2]]" in out


def test_gather_stub_and_other_exceptions_are_reported(capsys):
    assert check_expert_gather(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_expert_gather(lambda i, e, p: {}["x"]) is False
    assert "KeyError" in capsys.readouterr().out


def test_gather_in_place_modification_is_reported(capsys):
    def mutating(i, e, p):
        out = solution_expert_gather(i, e, p)
        i.add_(1)
        return out

    assert check_expert_gather(mutating) is False
    assert "modified its input" in capsys.readouterr().out


def test_gather_checks_its_arguments():
    with pytest.raises(TypeError, match="fn"):
        check_expert_gather(None)
    with pytest.raises(ValueError, match="trials"):
        check_expert_gather(solution_expert_gather, trials=-2)


def test_gather_solution_is_token_selection():
    ids = example_topk_ids()
    sel = TokenSelection.from_topk(ids, 3, pad_to=4)
    for e in range(3):
        tok, slot = solution_expert_gather(ids, e, 4)
        assert tok.tolist() == sel.padded_tokens_of(e).tolist()
        a, b = int(sel.padded_offsets[e]), int(sel.padded_offsets[e + 1])
        assert slot.tolist() == sel.padded_slot_ids[a:b].tolist()
    tok, slot = solution_expert_gather(torch.tensor([[1], [1]]), 0, 64)  # an expert with no token: no tile
    assert tok.numel() == 0 and slot.numel() == 0


# ---------------------------------------------------------------------------------------------- exercise 2
@pytest.mark.parametrize("fn", [solution_moe_combine, combine_loop], ids=["solution", "loop"])
def test_combine_correct(fn, capsys):
    assert check_moe_combine(fn) is True
    assert "solved" in capsys.readouterr().out


def _per_token(x, ids, w, f):
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            y[t] += w[t, j] * f(int(ids[t, j]), x[t:t + 1])[0]
    return y


def _overwrite(x, ids, w, f):
    y = torch.zeros_like(x)
    for e in ids.unique().tolist():
        tok, j = (ids == e).nonzero(as_tuple=True)
        y[tok] = f(e, x[tok]) * w[tok, j, None]
    return y


@pytest.mark.parametrize(
    "fn, expect",
    [
        (_per_token, "once per expert"),
        (lambda x, i, w, f: solution_moe_combine(x, i, torch.ones_like(w), f), "routing weight"),
        (lambda x, i, w, f: solution_moe_combine(x, i[:, :1], w[:, :1], f), "ALL its k choices"),
        (_overwrite, "ADD each weighted output row"),
        (lambda x, i, w, f: solution_moe_combine(x, i, w, f)[:1], "shape"),
        (lambda x, i, w, f: solution_moe_combine(x, i, w, f).tolist(), "torch.Tensor"),
    ],
    ids=["per-token-calls", "unweighted", "first-choice-only", "overwrite", "bad-shape", "not-tensor"],
)
def test_combine_wrong(fn, expect, capsys):
    assert check_moe_combine(fn) is False
    out = capsys.readouterr().out
    assert expect in out and "❌" in out


def test_combine_mismatch_view(capsys):
    check_moe_combine(_overwrite)
    out = capsys.readouterr().out
    for word in ("|yours|", "|expected|", "max |diff|", "mismatch", "X"):
        assert word in out


def test_combine_stub_and_other_exceptions_are_reported(capsys):
    assert check_moe_combine(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_moe_combine(lambda x, i, w, f: f(0, x[:, :1])) is False  # a wrong call into expert_fn
    assert "raised ValueError" in capsys.readouterr().out


def test_combine_in_place_modification_is_reported(capsys):
    def mutating(x, i, w, f):
        y = solution_moe_combine(x, i, w, f)
        w.mul_(2)
        return y

    assert check_moe_combine(mutating) is False
    assert "modified x, topk_ids or topk_weights" in capsys.readouterr().out


def test_combine_checks_its_arguments_and_leaves_the_global_rng_alone():
    with pytest.raises(TypeError, match="fn"):
        check_moe_combine(1.5)
    with pytest.raises(ValueError, match="seed"):
        check_moe_combine(solution_moe_combine, seed=-1)
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    check_moe_combine(solution_moe_combine)
    assert torch.equal(torch.rand(3), a)


def test_combine_solution_equals_the_block_backends():
    """On the tiny model's block 1 (real routing) the solution equals MoEBlock's routed experts."""
    from pathlib import Path

    import samoyeds_lab as sl
    from samoyeds_lab.moe import TinyMoEForCausalLM

    model = TinyMoEForCausalLM.from_pretrained(Path(sl.__file__).resolve().parents[1] / "data" / "tiny_moe")
    block = model.moe_blocks()[1][1]
    x = torch.randn(37, block.hidden)
    with torch.no_grad():
        r = block.router(x)
        mine = solution_moe_combine(x, r.topk_ids, r.topk_weights, block.experts.expert_forward)
        for backend in ("dense", "grouped"):
            assert torch.allclose(mine, block.experts(x, r.topk_ids, r.topk_weights, backend=backend), atol=1e-5)
