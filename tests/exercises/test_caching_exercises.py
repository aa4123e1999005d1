"""The lab-06 exercise checkers (LRU and Belady hit per access): True for correct answers, False (with a
mismatch view) otherwise, never an exception caused by the learner's code."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from samoyeds_lab.exercises.caching import (
    check_belady_hits,
    check_lru_hits,
    example_traces,
    solution_belady_hits,
    solution_lru_hits,
)
from samoyeds_lab.offload import simulate_cache


# ---------------------------------------------------------------------------------------------- references
def lru_ordered_dict(trace, capacity):
    """An independent LRU: an OrderedDict in recency order."""
    cache, out = OrderedDict(), []
    for x in trace:
        out.append(x in cache)
        if x in cache:
            cache.move_to_end(x)
            continue
        if len(cache) >= capacity:
            cache.popitem(last=False)
        cache[x] = True
    return out


def belady_by_future(trace, capacity):
    """An independent Belady: precomputed next-use positions, evict the resident used furthest ahead."""
    n = len(trace)
    nxt, last = [0] * n, {}
    for i in range(n - 1, -1, -1):
        nxt[i] = last.get(trace[i], n + trace[i])
        last[trace[i]] = i
    resident, out = {}, []  # id -> next use
    for i, x in enumerate(trace):
        out.append(x in resident)
        if x not in resident and len(resident) >= capacity:
            del resident[max(resident, key=resident.get)]
        resident[x] = nxt[i]
    return out


def fifo(trace, capacity):
    return simulate_cache(np.asarray(trace), capacity, "fifo").hit


def infinite(trace, capacity):
    return [x in trace[:i] for i, x in enumerate(trace)]


def belady_soonest(trace, capacity):
    """A plausible mistake: evict the resident needed *soonest*."""
    resident, out = set(), []
    for i, x in enumerate(trace):
        out.append(x in resident)
        if x in resident:
            continue
        if len(resident) >= capacity:
            def nu(y):
                return next((j for j in range(i + 1, len(trace)) if trace[j] == y), float("inf"))
            resident.remove(min(resident, key=nu))
        resident.add(x)
    return out


def _flip_first(hits, value, when):
    """Flip the first access whose hit equals ``value`` (on the traces where ``when``)."""
    if when and value in hits:
        i = hits.index(value)
        hits[i] = not value
    return hits


def stub(*args):
    # TODO
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------- exercise 1
@pytest.mark.parametrize("fn", [
    solution_lru_hits,
    lru_ordered_dict,
    lambda t, c: np.array(lru_ordered_dict(t, c)),
    lambda t, c: torch.tensor(lru_ordered_dict(t, c)).int(),
    lambda t, c: tuple(float(v) for v in lru_ordered_dict(t, c)),
], ids=["solution", "ordered-dict", "numpy", "torch-int", "float-tuple"])
def test_lru_correct(fn, capsys):
    assert check_lru_hits(fn) is True
    out = capsys.readouterr().out
    assert "✅ solved" in out and "not yet" not in out


@pytest.mark.parametrize("fn, expect", [
    (fifo, "that is FIFO"),
    (infinite, "room for everything"),
    (lambda t, c: solution_lru_hits(t, c + 1), "a cache of"),  # off by one
    (lambda t, c: solution_lru_hits(t, max(1, c - 1)), "first difference"),
    (lambda t, c: [not h for h in solution_lru_hits(t, c)], "mismatch"),
    (lambda t, c: solution_lru_hits(t, c)[:-1], "expected a list of"),
    (lambda t, c: sum(solution_lru_hits(t, c)), "expected a list of"),  # a count, not a list
    (lambda t, c: [2] * len(t), "expected a list of"),
], ids=["fifo", "infinite", "one-more-slot", "one-less-slot", "inverted", "one-short", "count", "not-bool"])
def test_lru_wrong(fn, expect, capsys):
    assert check_lru_hits(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and expect in out


def test_lru_mismatch_view(capsys):
    assert check_lru_hits(fifo) is False
    out = capsys.readouterr().out
    for word in ("case 3: a classic", "yours 3 hits, expected 2", "access", "expert", "yours", "expected",
                 "mismatch", " X", "LRU's cache just before access 11: [2, 3, 4]", "hint:"):
        assert word in out, word


def test_lru_stub_and_other_exceptions(capsys):
    assert check_lru_hits(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_lru_hits(lambda t, c: t[len(t)]) is False
    out = capsys.readouterr().out
    assert "not yet solved" in out and "IndexError" in out


def test_lru_gets_a_fresh_list_each_time(capsys):
    """A learner that consumes its input does not corrupt the next case."""
    def consuming(t, c):
        hits = lru_ordered_dict(t, c)
        t.clear()
        return hits

    assert check_lru_hits(consuming) is True


@pytest.mark.parametrize("bad", [3, None, "solution_lru_hits"])
def test_lru_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_lru_hits(bad)


@pytest.mark.parametrize("kw, exc", [(dict(seed=-1), ValueError), (dict(seed="0"), TypeError)])
def test_checks_validate_their_arguments(kw, exc):
    with pytest.raises(exc):
        check_lru_hits(solution_lru_hits, **kw)
    with pytest.raises(exc):
        check_belady_hits(solution_belady_hits, **kw)


# ---------------------------------------------------------------------------------------------- exercise 2
@pytest.mark.parametrize("fn", [
    solution_belady_hits,
    belady_by_future,
    lambda t, c: np.array(belady_by_future(t, c)),
], ids=["solution", "by-future", "numpy"])
def test_belady_correct(fn, capsys):
    assert check_belady_hits(fn) is True
    out = capsys.readouterr().out
    assert "✅ solved" in out and "not yet" not in out


@pytest.mark.parametrize("fn, expect", [
    (lru_ordered_dict, "those are LRU's hits"),
    (infinite, "room for everything"),
    (belady_soonest, "Belady"),
    (fifo, "first difference"),
    (lambda t, c: belady_by_future(t, c + 1), "also those of a cache of 3"),
    (lambda t, c: belady_by_future(t, c + 1) if len(t) > 20 else belady_by_future(t, c),
     "those are the hits of a cache of"),
    (lambda t, c: _flip_first(belady_by_future(t, c), False, len(t) > 20), "yours hit where the expert cannot be"),
    (lambda t, c: _flip_first(belady_by_future(t, c), True, len(t) > 20), "yours missed where Belady still holds"),
    (lambda t, c: "hits", "expected a list of"),
], ids=["lru", "infinite", "soonest", "fifo", "one-more-slot", "one-more-slot-later", "extra-hit", "lost-hit",
        "string"])
def test_belady_wrong(fn, expect, capsys):
    assert check_belady_hits(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and expect in out


def test_belady_mismatch_view(capsys):
    assert check_belady_hits(lru_ordered_dict) is False
    out = capsys.readouterr().out
    for word in ("case 0: the lab's trace, a cache of 2 expert(s)", "yours 0 hits, expected 1",
                 "Belady's cache just before access 4: [0, 3]", "hint:"):
        assert word in out, word


def test_belady_stub_and_other_exceptions(capsys):
    assert check_belady_hits(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_belady_hits(lambda t, c: {}[c]) is False
    out = capsys.readouterr().out
    assert "not yet solved" in out and "KeyError" in out


@pytest.mark.parametrize("bad", [3, None, "solution_belady_hits"])
def test_belady_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_belady_hits(bad)


# ---------------------------------------------------------------------------------------------- both
def test_solutions_are_the_simulators_policies():
    rng = np.random.default_rng(3)
    for _ in range(20):
        trace = rng.integers(0, 9, size=int(rng.integers(1, 60))).tolist()
        cap = int(rng.integers(1, 8))
        assert solution_lru_hits(trace, cap) == simulate_cache(trace, cap, "lru").hit.tolist()
        assert solution_belady_hits(trace, cap) == simulate_cache(trace, cap, "belady").hit.tolist()


def test_the_traces_teach_something():
    """Belady beats LRU on the lab's trace and on the loop (LRU's cyclic worst case: no hit at all)."""
    cases = {(label, cap): trace for label, trace, cap in example_traces()}
    loop = cases[("a loop over 4 experts", 3)]
    assert sum(solution_lru_hits(loop, 3)) == 0 and sum(solution_belady_hits(loop, 3)) > 0
    lab = cases[("the lab's trace", 2)]
    assert (sum(solution_lru_hits(lab, 2)), sum(solution_belady_hits(lab, 2))) == (0, 1)


def test_seeded(capsys):
    # how long a check takes is a benchmark with a budget (`samoyeds-lab bench panels`), not a test
    for check, sol in ((check_lru_hits, solution_lru_hits), (check_belady_hits, solution_belady_hits)):
        assert check(sol) and check(sol, seed=11)
    seen = [], []
    for out in seen:
        check_lru_hits(lambda t, c, out=out: out.append((tuple(t), c)) or lru_ordered_dict(t, c))
    assert seen[0] == seen[1] and len(seen[0]) > len(example_traces())
