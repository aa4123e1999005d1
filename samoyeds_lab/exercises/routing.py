"""Self-checking exercises for Lab 03 (routing and expert hotness).

Exercise 1 — :func:`check_top_k_routing`: write ``fn(logits, k) -> (ids, weights)``, the Mixtral-style
router: ``p = softmax(z)`` over the ``E`` experts, keep the ``k`` largest (first choice first), renormalise
their probabilities to sum to 1. Checked against :func:`samoyeds_lab.moe.route`.

Exercise 2 — :func:`check_locality`: write ``fn(first, sequence_lengths) -> (rate, random_rate)``: how often
two consecutive tokens of the same sequence have the same first-choice expert, and how often they would
by chance if tokens were independent draws with the measured expert frequencies (``Σ_e p_e²``). Checked
against :func:`samoyeds_lab.routing.repetition_rate` on the shipped traces and random sequences.

Checkers print "yours vs expected" with a mismatch marker and a one-line hint, and return True/False;
the learner's code never makes them raise. The solutions are :func:`solution_top_k_routing` and
:func:`solution_locality` (look after trying).
"""

from __future__ import annotations

from typing import Callable

import torch

from .sparsity import _NO, _OK, _call, _check_trials_seed, _grid, _not_callable, _side_by_side

__all__ = ["check_locality", "check_top_k_routing", "example_first_choices", "example_logits",
           "solution_locality", "solution_top_k_routing"]


# ---------------------------------------------------------------------------------------------- exercise 1
def solution_top_k_routing(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral routing: ``p = softmax(z)``; ``ids, w = topk(p, k)`` (descending); ``w ← w / Σⱼ wⱼ``.

    (Equivalently a softmax over the ``k`` kept logits: the normaliser ``Σ_e exp z_e`` cancels.)
    """
    p = torch.softmax(logits.float(), dim=-1)
    w, ids = torch.topk(p, k, dim=-1)
    return ids, w / w.sum(dim=-1, keepdim=True)


def example_logits() -> torch.Tensor:
    """The 6×8 fp32 router logits shown first by :func:`check_top_k_routing` (k = 2)."""
    gen = torch.Generator().manual_seed(3)
    return (torch.randn(6, 8, generator=gen) * 1.5).round(decimals=2)


def _routing_cases(trials: int, gen: torch.Generator) -> list[tuple[str, torch.Tensor, int]]:
    cases = [("the 6×8 example, k=2", example_logits(), 2)]
    try:  # real router logits: layer 1 of the shipped code trace (fp16, as recorded)
        from ..routing.ship import load_shipped_trace

        tr = load_shipped_trace("code")
        if tr.logits is not None:
            cases.append(("tiny-model logits (code, layer 1, 64 tokens), k=2", tr.logits[1, :64].float(), 2))
    except Exception:  # noqa: BLE001 - the shipped data is optional here; the random cases still run
        pass
    for _ in range(trials):
        E = int(torch.randint(1, 65, (1,), generator=gen))
        k = int(torch.randint(1, min(E, 8) + 1, (1,), generator=gen))
        T = int(torch.randint(1, 20, (1,), generator=gen))
        scale = float(torch.rand(1, generator=gen)) * 4 + 0.1
        cases.append((f"random {T}×{E} logits, k={k}", torch.randn(T, E, generator=gen) * scale, k))
    return cases


def _as_pair(got: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    try:
        ids, w = got  # type: ignore[misc]
        ids = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids)
        w = w if isinstance(w, torch.Tensor) else torch.tensor(w)
    except (TypeError, ValueError, RuntimeError):
        return None
    return ids.detach().cpu(), w.detach().cpu()


def check_top_k_routing(fn: Callable[[torch.Tensor, int], object], *, trials: int = 20, seed: int = 0) -> bool:
    """Check a learner's top-k router ``fn(logits, k) -> (ids, weights)``.

    Spec: ``logits`` is a float ``[T, E]`` tensor, ``1 <= k <= E``. Return int ``ids [T, k]`` and float
    ``weights [T, k]`` with, for every token ``t``::

        p = softmax(logits[t])                          over the E experts
        ids[t]     = the k experts of largest p, in descending order (column 0 = first choice)
        weights[t] = p[ids[t]] / Σⱼ p[ids[t, j]]        (they sum to 1)

    ``logits`` must not be modified. Runs :func:`example_logits`, real router logits of the tiny model and
    ``trials`` random shapes (E up to 64); compares with :func:`samoyeds_lab.moe.route` (``style="mixtral"``)
    — ties between equal probabilities may be broken either way.

    Returns
    -------
    bool
        True if every case matches.
    """
    _not_callable("fn", fn)
    from ..moe.router import route

    trials, seed = _check_trials_seed(trials, seed)
    cases = _routing_cases(trials, torch.Generator().manual_seed(seed))
    for name, logits, k in cases:
        T, E = logits.shape
        original = logits.clone()
        ref = route(logits, k, style="mixtral")
        exp_ids, exp_w = ref.topk_ids, ref.topk_weights
        got, err = _call(fn, logits, k)
        if err:
            print(f"{_NO} {err}")
            return False
        if not torch.equal(logits, original):
            print(f"{_NO} not yet solved: your function modified its input logits in place ({name}); work on a copy.")
            return False
        pair = _as_pair(got)
        if pair is None:
            print(f"{_NO} not yet solved: expected a pair (ids, weights) of [T, k] tensors, got {type(got).__name__}")
            return False
        ids, w = pair
        if tuple(ids.shape) != (T, k) or tuple(w.shape) != (T, k):
            print(f"{_NO} not yet solved ({name}): expected ids and weights of shape {(T, k)} [tokens, k], got "
                  f"{tuple(ids.shape)} and {tuple(w.shape)}")
            return False
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            print(f"{_NO} not yet solved: expected integer expert ids, got dtype {ids.dtype}")
            return False
        if not w.is_floating_point():
            print(f"{_NO} not yet solved: expected float weights, got dtype {w.dtype}")
            return False
        ids = ids.long()
        if bool(((ids < 0) | (ids >= E)).any()):
            print(f"{_NO} not yet solved ({name}): expert ids must be in [0, {E}), got {ids.min()}..{ids.max()}")
            return False
        p = torch.softmax(logits.float(), dim=-1)
        # the same probabilities at the same ranks (tolerates ties broken the other way), ids distinct per token
        same_ids = torch.isclose(p.gather(1, ids), p.gather(1, exp_ids), rtol=0, atol=0)
        if k > 1:
            srt = ids.sort(dim=1).values
            same_ids &= ~(srt[:, 1:] == srt[:, :-1]).any(1, keepdim=True)
        same_w = torch.isclose(w.float(), exp_w, rtol=1e-4, atol=1e-6)
        bad = ~(same_ids & same_w)
        if not bool(bad.any()):
            continue
        rows = bad.any(1).nonzero().flatten()[:6]
        print(f"{_NO} mismatch in case '{name}': {int(bad.any(1).sum())} of {T} token(s) differ; first rows shown:")
        show = min(E, 8)
        print(_side_by_side([
            ("token", [f"t{int(t)}" for t in rows]),
            ("p = softmax(logits)" + (" (first 8 experts)" if E > 8 else ""),
             _grid(p[rows, :show], lambda v: f"{v:.3f}")),
        ]))
        print()
        print(_side_by_side([
            ("yours ids", _grid(ids[rows], lambda v: f"e{v}")),
            ("weights", _grid(w[rows].float(), lambda v: f"{v:.3f}")),
            ("expected ids", _grid(exp_ids[rows], lambda v: f"e{v}")),
            ("weights", _grid(exp_w[rows], lambda v: f"{v:.3f}")),
            ("mismatch", _grid(bad[rows], lambda v: "X" if v else ".")),
        ]))
        sums = w.float().sum(1)
        if bool(same_ids.all()):
            if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
                print("hint: the experts are right; renormalise the kept probabilities so each token's k weights "
                      "sum to 1 (w / w.sum(-1, keepdim=True)).")
            else:
                print("hint: the experts are right and the weights sum to 1, but not to the right values: the "
                      "weights are the kept softmax probabilities, renormalised (not the logits).")
        elif bool(torch.isclose(p.gather(1, ids).sort(1).values, p.gather(1, exp_ids).sort(1).values,
                                rtol=0, atol=0).all()):
            print("hint: the right experts in the wrong order: column 0 must be the first choice (largest "
                  "probability); torch.topk returns them in descending order.")
        else:
            print("hint: keep the k experts with the LARGEST softmax probability (torch.topk(p, k, dim=-1)).")
        return False
    print(f"{_OK} solved: your router matches samoyeds_lab.moe.route on {len(cases)} cases "
          f"(the example, {'the tiny model’s logits, ' if len(cases) > trials + 1 else ''}{trials} random shapes).")
    return True


# ---------------------------------------------------------------------------------------------- exercise 2
def solution_locality(first: torch.Tensor, sequence_lengths: torch.Tensor) -> tuple[float, float]:
    """``rate`` = mean over consecutive same-sequence pairs of ``[first[t] == first[t+1]]``;
    ``random_rate`` = ``Σ_e p_e²`` with ``p_e`` the share of tokens whose first choice is ``e``."""
    first = first.long()
    same = first[1:] == first[:-1]
    ends = torch.cumsum(sequence_lengths.long(), 0)[:-1] - 1  # last token of every sequence but the last
    keep = torch.ones_like(same)
    keep[ends] = False  # the pair (end of one sequence, start of the next) is not consecutive text
    p = torch.bincount(first).double() / first.numel()
    return float(same[keep].double().mean()), float((p * p).sum())


def example_first_choices() -> tuple[torch.Tensor, torch.Tensor]:
    """The 12-token, 3-sequence example of :func:`check_locality` (two repeats cross a sequence boundary)."""
    first = torch.tensor([3, 3, 1, 1, 1, 1, 5, 5, 2, 2, 3, 3])
    return first, torch.tensor([5, 4, 3])


def _locality_cases(trials: int, gen: torch.Generator) -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    first, seq = example_first_choices()
    cases = [("the 12-token example, sequences of 5, 4, 3", first, seq, 8)]
    try:  # the shipped traces: real first choices, 32 windows of 256 tokens each
        from ..routing.ship import load_shipped_trace

        for domain, layer in (("en", 0), ("code", 3)):
            tr = load_shipped_trace(domain)
            cases.append((f"tiny model, {domain}, layer {layer} ({tr.num_tokens} tokens, "
                          f"{tr.sequence_lengths.numel()} sequences)",
                          tr.topk_ids[layer, :, 0].clone(), tr.sequence_lengths.clone(), tr.num_experts))
    except Exception:  # noqa: BLE001 - the shipped data is optional here; the random cases still run
        pass
    for _ in range(trials):
        E = int(torch.randint(1, 17, (1,), generator=gen))
        S = int(torch.randint(1, 6, (1,), generator=gen))
        seq = torch.randint(1, 40, (S,), generator=gen)
        seq[0] = max(int(seq[0]), 2)  # at least one consecutive pair
        T = int(seq.sum())
        skew = torch.rand(E, generator=gen) ** 3 + 1e-3  # skewed expert popularity
        first = torch.multinomial(skew, T, replacement=True, generator=gen)
        sticky = torch.rand(T, generator=gen) < float(torch.rand(1, generator=gen))  # some runs of repeats
        for t in range(1, T):
            if sticky[t]:
                first[t] = first[t - 1]
        cases.append((f"random, {T} tokens in {S} sequence(s), E={E}", first, seq, E))
    return cases


def _reference_locality(first: torch.Tensor, seq: torch.Tensor, E: int) -> tuple[float, float]:
    from ..routing.analytics import repetition_rate
    from ..routing.trace import RoutingTrace

    T = first.numel()
    trace = RoutingTrace(first.view(1, T, 1), torch.ones(1, T, 1), torch.zeros(T, dtype=torch.int64), ("layer",),
                         E, sequence_lengths=seq)
    rate, base, _ = repetition_rate(trace, 1)
    return float(rate[0]), float(base[0])


def check_locality(fn: Callable[[torch.Tensor, torch.Tensor], object], *, trials: int = 20, seed: int = 0) -> bool:
    """Check a learner's temporal-locality statistic ``fn(first, sequence_lengths) -> (rate, random_rate)``.

    Spec: ``first`` is an int64 ``[T]`` tensor of first-choice expert ids of one layer, tokens in order;
    ``sequence_lengths`` an int64 ``[S]`` tensor of positive lengths summing to ``T`` (sequence ``s`` is
    the next ``sequence_lengths[s]`` tokens). Return two floats::

        rate        = share of consecutive pairs (t, t+1) OF THE SAME SEQUENCE with first[t] == first[t+1]
        random_rate = Σ_e p_e²,  p_e = #{t : first[t] = e} / T

    ``random_rate`` is the chance that two independent tokens with the measured expert frequencies agree:
    locality is ``rate`` above it. Compared with :func:`samoyeds_lab.routing.repetition_rate` (depth 1) on
    :func:`example_first_choices`, two shipped traces and ``trials`` random sequences.

    Returns
    -------
    bool
        True if every case matches (to 1e-6).
    """
    _not_callable("fn", fn)

    trials, seed = _check_trials_seed(trials, seed)
    cases = _locality_cases(trials, torch.Generator().manual_seed(seed))
    for name, first, seq, E in cases:
        exp = _reference_locality(first, seq, E)
        orig = (first.clone(), seq.clone())
        got, err = _call(fn, first, seq)
        if err:
            print(f"{_NO} {err}")
            return False
        if not (torch.equal(first, orig[0]) and torch.equal(seq, orig[1])):
            print(f"{_NO} not yet solved: your function modified its inputs in place ({name}); work on a copy.")
            return False
        try:
            mine = tuple(float(v) for v in got)  # type: ignore[union-attr]
        except (TypeError, ValueError, RuntimeError):
            mine = ()
        if len(mine) != 2:
            print(f"{_NO} not yet solved: expected a pair of floats (rate, random_rate), got {got!r}")
            return False
        ok = [abs(a - b) <= 1e-6 for a, b in zip(mine, exp)]
        if all(ok):
            continue
        print(f"{_NO} mismatch in case '{name}':")
        if first.numel() <= 40:
            starts = set(torch.cumsum(seq, 0)[:-1].tolist())
            print("  first choices: " + " ".join(("| " if t in starts else "") + str(int(v))
                                                 for t, v in enumerate(first)))
        print(f"  {'':12s} {'yours':>9s} {'expected':>9s}  mismatch")
        for label, a, b, good in zip(("rate", "random_rate"), mine, exp, ok):
            print(f"  {label:12s} {a:9.4f} {b:9.4f}  {'.' if good else 'X'}")
        same = (first[1:] == first[:-1]).double()
        if not ok[0] and abs(mine[0] - float(same.mean())) <= 1e-6:
            print("hint: pairs across a sequence boundary (| above) are not consecutive text: leave them out "
                  "(the last token of each sequence but the last starts no pair).")
        elif not ok[0]:
            print("hint: rate = (number of same-sequence pairs that repeat the expert) / (number of same-sequence "
                  "pairs), not / T.")
        elif E and abs(mine[1] - 1.0 / E) <= 1e-6:
            print("hint: 1/E is the UNIFORM baseline; use the measured shares p_e (bincount / T): Σ_e p_e².")
        else:
            print("hint: random_rate = Σ_e p_e², p_e = share of the T tokens whose first choice is e "
                  "(all tokens, boundaries do not matter here).")
        return False
    print(f"{_OK} solved: your locality statistics match samoyeds_lab.routing.repetition_rate on {len(cases)} cases.")
    return True
