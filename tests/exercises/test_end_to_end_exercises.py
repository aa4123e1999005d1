"""The lab-08 exercise checkers (static hot set, offloaded time per token): True for correct answers, False
(with a mismatch view) otherwise, never an exception caused by the learner's code."""

import numpy as np
import pytest
import torch

from samoyeds_lab.exercises.end_to_end import (
    check_hot_set,
    check_offload_time,
    example_popularity,
    offload_cases,
    solution_hot_set,
    solution_offload_time,
)


# ---------------------------------------------------------------------------------------------- references
def hot_set_loop(popularity, budget):
    """Plain-Python reference: repeatedly take the most popular remaining slot (first = smallest id)."""
    flat = [float(v) for v in np.asarray(popularity).reshape(-1)]
    left, out = list(range(len(flat))), []
    for _ in range(budget):
        best = max(left, key=lambda i: (flat[i], -i))
        out.append(best)
        left.remove(best)
    return out


def stub(*args):
    # TODO
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------- exercise 1
@pytest.mark.parametrize("fn", [
    hot_set_loop,
    solution_hot_set,
    lambda p, b: set(hot_set_loop(p, b)),
    lambda p, b: np.array(hot_set_loop(p, b)),
    lambda p, b: torch.tensor(hot_set_loop(p, b)),
    lambda p, b: np.lexsort((np.arange(p.size), -p.reshape(-1)))[:b],
], ids=["loop", "solution", "set", "numpy", "torch", "lexsort"])
def test_hot_set_correct(fn, capsys):
    assert check_hot_set(fn) is True
    out = capsys.readouterr().out
    assert "✅ solved" in out and "not yet" not in out


def _ties_to_larger(p, b):
    flat = p.reshape(-1)
    return sorted(range(flat.size), key=lambda i: (-flat[i], -i))[:b]


@pytest.mark.parametrize("fn, expect", [
    (_ties_to_larger, "ties go to the smaller slot id"),
    (lambda p, b: sorted(range(p.size), key=lambda i: (p.reshape(-1)[i], i))[:b], "keep the highest popularity"),
    (lambda p, b: hot_set_loop(p, b)[:-1], "id(s) for a budget"),  # one short
    (lambda p, b: hot_set_loop(p, b + 1) if b < p.size else hot_set_loop(p, b) + [0], "for a budget"),
    (lambda p, b: [i + 1 for i in hot_set_loop(p, b)], "differ"),  # off-by-one slot ids
    (lambda p, b: [p.size] * b, "outside"),
    (lambda p, b: hot_set_loop(p, b)[:1] * b, "duplicate"),
    (lambda p, b: [(i // p.shape[1], i % p.shape[1]) for i in hot_set_loop(p, b)], "slot ids l·E + e as ints"),
    (lambda p, b: "nope", "slot ids"),
], ids=["ties-larger", "coldest", "one-short", "one-extra", "off-by-one", "out-of-range", "duplicates",
        "pairs", "string"])
def test_hot_set_wrong(fn, expect, capsys):
    assert check_hot_set(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and expect in out


def test_hot_set_mismatch_view(capsys):
    assert check_hot_set(_ties_to_larger) is False
    out = capsys.readouterr().out
    for word in ("popularity", "yours", "expected", "mismatch", "X", "of the profiled accesses", "hint:"):
        assert word in out


def test_hot_set_stub_is_not_yet_solved(capsys):
    assert check_hot_set(stub) is False
    assert "not yet solved" in capsys.readouterr().out


def test_hot_set_other_exception_is_reported(capsys):
    assert check_hot_set(lambda p, b: p[99, 99]) is False
    out = capsys.readouterr().out
    assert "not yet solved" in out and "IndexError" in out


def test_hot_set_in_place_modification_is_reported(capsys):
    def mutating(p, b):
        ids = hot_set_loop(p, b)
        p[...] = 0
        return ids

    assert check_hot_set(mutating) is False
    assert "modified popularity in place" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [3, None, "solution_hot_set"])
def test_hot_set_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_hot_set(bad)


@pytest.mark.parametrize("kw, exc", [(dict(trials=-1), ValueError), (dict(seed="0"), TypeError),
                                     (dict(trials=1.5), TypeError)])
def test_hot_set_checks_its_arguments(kw, exc):
    with pytest.raises(exc):
        check_hot_set(solution_hot_set, **kw)


def test_hot_set_is_seeded():
    # how long the check takes is a benchmark with a budget (`samoyeds-lab bench panels`), not a test
    assert check_hot_set(solution_hot_set, seed=5)
    a = example_popularity()
    assert np.array_equal(a, example_popularity()) and a.shape == (4, 8)
    assert len(np.unique(a)) < a.size  # the first case has ties


def test_solution_hot_set_is_the_simulators_static_policy():
    """On a real replay, pinning solution_hot_set's slots reproduces the static policy's hits."""
    from samoyeds_lab.offload.simulate import expert_accesses, simulate_offload

    rng = np.random.default_rng(1)
    L, T, E = 3, 40, 6
    trace = np.stack([np.stack([rng.choice(E, 2, replace=False) for _ in range(T)]) for _ in range(L)])
    pop = rng.integers(0, 4, size=(L, E))
    for budget in (1, 5, 18):
        st = simulate_offload(trace, E, policy="static", capacity=budget, popularity=pop)
        pinned = set(solution_hot_set(pop, budget))
        slots = expert_accesses(trace, E).flat_ids
        seen, hits = set(), 0
        for s in slots.tolist():
            hits += s in pinned and s in seen
            seen.add(s)
        assert st.hits == hits


# ---------------------------------------------------------------------------------------------- exercise 2
def test_offload_time_correct(capsys):
    assert check_offload_time(solution_offload_time) is True
    assert check_offload_time(lambda a, h, S, l, c: c + a * (1 - h) * S * 1e3 / (l * 1e9)) is True
    out = capsys.readouterr().out
    assert out.count("✅ solved") == 2 and "not yet" not in out


@pytest.mark.parametrize("fn, expect", [
    (lambda a, h, S, l, c: c, "compute alone"),
    (lambda a, h, S, l, c: c + a * h * S / (l * 1e9) * 1e3, "the misses cross the link, not the hits"),
    (lambda a, h, S, l, c: c + a * (1 - h) * S / (l * 1e9), "seconds → ms"),  # forgot ×1e3
    (lambda a, h, S, l, c: c + a * (1 - h) * S / (l * 1e6) * 1e3, "seconds → ms"),  # GB as 1e6
    (lambda a, h, S, l, c: a * (1 - h) * S / (l * 1e9) * 1e3, "add the compute"),
    (lambda a, h, S, l, c: c + (a - 1) * (1 - h) * S / (l * 1e9) * 1e3, "yours"),  # off by one access
    (lambda a, h, S, l, c: "fast", "expected a number"),
    (lambda a, h, S, l, c: None, "expected a number"),
], ids=["compute-only", "hits", "no-ms", "mega", "no-compute", "off-by-one", "string", "none"])
def test_offload_time_wrong(fn, expect, capsys):
    assert check_offload_time(fn) is False
    out = capsys.readouterr().out
    assert "❌" in out and expect in out


def test_offload_time_mismatch_view(capsys):
    check_offload_time(lambda a, h, S, l, c: c)
    out = capsys.readouterr().out
    for word in ("accesses_per_token", "hit_rate", "yours", "expected", "ms compute", "waiting", "X"):
        assert word in out


def test_offload_time_stub_and_other_exceptions(capsys):
    assert check_offload_time(stub) is False
    assert "not yet solved" in capsys.readouterr().out
    assert check_offload_time(lambda a, h, S, l, c: a / 0) is False
    out = capsys.readouterr().out
    assert "not yet solved" in out and "ZeroDivisionError" in out


@pytest.mark.parametrize("bad", [3, None, 1.5])
def test_offload_time_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_offload_time(bad)


def test_offload_cases_come_from_the_simulator_and_vary():
    cases = offload_cases()
    assert cases is offload_cases()  # computed once
    assert len(cases) >= 5
    rates = [c["hit_rate"] for c in cases]
    assert min(rates) < 0.2 and max(rates) > 0.8 and len(set(rates)) >= 5  # h vs 1 − h is told apart
    assert len({c["expert_bytes"] for c in cases}) == 2 and len({c["link_gbs"] for c in cases}) == 3
    for c in cases:
        assert c["ms_per_token"] >= c["compute_ms"] > 0
        # the simulator's latency model is the formula of the spec (no prefetch for demand policies)
        assert solution_offload_time(*(c[k] for k in ("accesses_per_token", "hit_rate", "expert_bytes",
                                                      "link_gbs", "compute_ms"))) == pytest.approx(c["ms_per_token"],
                                                                                                 rel=1e-9)


def test_offload_time_matches_the_end_to_end_sweep():
    """The formula reproduces offload_policy_sweep's per-token numbers for a demand policy."""
    from samoyeds_lab.bench.end_to_end import offload_policy_sweep
    from samoyeds_lab.offload.hardware import load_profile
    from samoyeds_lab.offload.simulate import expert_accesses

    rng = np.random.default_rng(2)
    trace = np.stack([np.stack([rng.choice(8, 2, replace=False) for _ in range(30)]) for _ in range(4)])
    ch = offload_policy_sweep({"a": trace}, 8, capacity=9, policies=("lru",))
    lru = ch.policies["lru"]
    a = len(expert_accesses(trace, 8)) / 30
    S = 3 * 4096 * 14336 * 2
    link = load_profile("h100_sxm").link_bandwidth_gbs
    assert solution_offload_time(a, lru.hit_rate, S, link, lru.compute_ms) == pytest.approx(lru.ms_per_token)
