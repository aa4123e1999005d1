"""Self-checking exercises for Lab 04 (the MoE layer on sparse kernels).

Exercise 1 — :func:`check_expert_gather`: write ``fn(topk_ids, expert, pad_to) -> (tokens, slots)``, the
gather list one expert's SSMM kernel reads: the ids of the tokens routed to ``expert`` (ascending), padded
with :data:`~samoyeds_lab.formats.SENTINEL` up to a multiple of the ``pad_to``-token tile, and for each the
flat slot ``token·k + j`` that finds its routing weight. Checked against
:class:`samoyeds_lab.formats.TokenSelection`.

Exercise 2 — :func:`check_moe_combine`: write ``fn(x, topk_ids, topk_weights, expert_fn) -> y``, the routed
part of an MoE block: every expert runs ONCE on the rows of the tokens routed to it, and each output row
is scattered back, weighted, into its token's output. Checked against
:meth:`samoyeds_lab.moe.SwiGLUExperts.forward` (``backend="dense"``).

Checkers print "yours vs expected" with a mismatch marker and a one-line hint, and return True/False;
the learner's code never makes them raise. The solutions are :func:`solution_expert_gather` and
:func:`solution_moe_combine` (look after trying).
"""

from __future__ import annotations

from typing import Callable

import torch

from .sparsity import _NO, _OK, _call, _check_trials_seed, _not_callable

__all__ = ["check_expert_gather", "check_moe_combine", "example_topk_ids", "solution_expert_gather",
           "solution_moe_combine"]


def _as_int_list(v: object) -> list[int] | None:
    try:
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() or v.is_complex() or v.ndim != 1:
                return None
            v = v.tolist()
        return [int(t) for t in v]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- exercise 1
def solution_expert_gather(topk_ids: torch.Tensor, expert: int, pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots ``s = t·k + j`` with ``topk_ids[t, j] == expert`` in ascending order (so tokens ascend too),
    tokens ``s // k``; both padded with ``SENTINEL = -1`` to ``pad_to·⌈n/pad_to⌉`` entries (0 if n = 0)."""
    from ..formats import SENTINEL

    k = topk_ids.shape[1]
    slots = (topk_ids.reshape(-1) == expert).nonzero().flatten()
    tokens = slots // k
    pad = -slots.numel() % pad_to
    fill = torch.full((pad,), SENTINEL, dtype=torch.int64)
    return torch.cat([tokens, fill]), torch.cat([slots, fill])


def example_topk_ids() -> torch.Tensor:
    """The ``[3, 2]`` routing of the :mod:`samoyeds_lab.formats.tokens` docstring (3 experts)."""
    return torch.tensor([[0, 2], [0, 1], [1, 2]])


def _gather_cases(trials: int, gen: torch.Generator) -> list[tuple[str, torch.Tensor, int, int]]:
    cases = [("the 3-token example (E=3, k=2), pad_to=4", example_topk_ids(), 3, 4),
             ("the 3-token example (E=3, k=2), pad_to=1", example_topk_ids(), 3, 1)]
    for _ in range(trials):
        E = int(torch.randint(1, 17, (1,), generator=gen))
        k = int(torch.randint(1, min(E, 4) + 1, (1,), generator=gen))
        T = int(torch.randint(1, 100, (1,), generator=gen))
        pad_to = [1, 2, 4, 8, 16, 64][int(torch.randint(0, 6, (1,), generator=gen))]
        skew = torch.rand(E, generator=gen) ** 2 + 1e-2  # some hot experts, some with no token at all
        ids = torch.stack([torch.multinomial(skew, k, replacement=False, generator=gen) for _ in range(T)])
        cases.append((f"random {T} tokens, E={E}, k={k}, pad_to={pad_to}", ids, E, pad_to))
    return cases


def check_expert_gather(fn: Callable[[torch.Tensor, int, int], object], *, trials: int = 12, seed: int = 0) -> bool:
    """Check a learner's per-expert gather list ``fn(topk_ids, expert, pad_to) -> (tokens, slots)``.

    Spec: ``topk_ids`` is an int64 ``[T, k]`` tensor (distinct experts per token), ``expert`` an id,
    ``pad_to >= 1`` the kernel's token tile. Let ``n`` be the number of tokens routed to ``expert``.
    Return two 1-D integer tensors (or lists) of length ``pad_to·⌈n/pad_to⌉``::

        tokens = the n token ids t with expert in topk_ids[t], ascending, then SENTINEL (-1) padding
        slots  = the matching flat slots t·k + j (topk_ids[t, j] == expert), then SENTINEL padding

    (an expert with no token gets no tile: two empty lists). The kernel gathers rows ``x[tokens]``;
    ``topk_weights.reshape(-1)[slots]`` are the scales of its scatter-add epilogue. ``topk_ids`` must not be
    modified. Compared, for every expert, with
    :meth:`TokenSelection.from_topk(topk_ids, E, pad_to) <samoyeds_lab.formats.TokenSelection.from_topk>`.

    Returns
    -------
    bool
        True if every expert of every case matches.
    """
    _not_callable("fn", fn)
    from ..formats import SENTINEL, TokenSelection

    trials, seed = _check_trials_seed(trials, seed)
    cases = _gather_cases(trials, torch.Generator().manual_seed(seed))
    for name, ids, E, pad_to in cases:
        sel = TokenSelection.from_topk(ids, E, pad_to=pad_to)
        original = ids.clone()
        for e in range(E):
            a, b = int(sel.padded_offsets[e]), int(sel.padded_offsets[e + 1])
            exp_tok, exp_slot = sel.padded_token_ids[a:b].tolist(), sel.padded_slot_ids[a:b].tolist()
            got, err = _call(fn, ids, e, pad_to)
            if err:
                print(f"{_NO} {err}")
                return False
            if not torch.equal(ids, original):
                print(f"{_NO} not yet solved: your function modified its input topk_ids in place ({name}).")
                return False
            try:
                tok, slot = got  # type: ignore[misc]
            except (TypeError, ValueError):
                print(f"{_NO} not yet solved: expected a pair (tokens, slots), got {type(got).__name__}")
                return False
            tok, slot = _as_int_list(tok), _as_int_list(slot)
            if tok is None or slot is None:
                print(f"{_NO} not yet solved: expected tokens and slots as 1-D integer tensors or lists, got "
                      f"{type(got[0]).__name__} and {type(got[1]).__name__}")
                return False
            if tok == exp_tok and slot == exp_slot:
                continue
            n = int(sel.counts[e])
            print(f"{_NO} mismatch in case '{name}', expert {e} ({n} token(s) routed to it):")
            if ids.shape[0] <= 8:
                print("  topk_ids = " + str(ids.tolist()))
            for label, mine, exp in (("tokens", tok, exp_tok), ("slots", slot, exp_slot)):
                width = max(len(mine), len(exp))
                show = min(width, 24)
                cells = [(mine[i] if i < len(mine) else None, exp[i] if i < len(exp) else None) for i in range(show)]
                print(f"  {label + ' yours':15s} " + " ".join(f"{'·' if m is None else m:>3}" for m, _ in cells)
                      + (f" … ({len(mine)} entries)" if width > show else f"   ({len(mine)} entries)"))
                print(f"  {label + ' expected':15s} " + " ".join(f"{'·' if x is None else x:>3}" for _, x in cells)
                      + (f" … ({len(exp)} entries)" if width > show else f"   ({len(exp)} entries)"))
                print(f"  {'mismatch':15s} " + " ".join(f"{'X' if m != x else '.':>3}" for m, x in cells))
            real_tok = [t for t in tok if t != SENTINEL]
            if len(tok) != len(exp_tok):
                if len(real_tok) == n and len(tok) == n and n % pad_to:
                    print(f"hint: pad each list with SENTINEL = {SENTINEL} up to a multiple of pad_to = {pad_to}.")
                else:
                    print(f"hint: the length is pad_to·ceil(n / pad_to) = {len(exp_tok)} for n = {n}: round UP to "
                          f"the tile, and an exact multiple (or n = 0) needs no padding (-n % pad_to rows).")
            elif tok[:n] == exp_tok[:n] and tok[n:] != exp_tok[n:]:
                print(f"hint: pad with SENTINEL = {SENTINEL}, a row id that names no token (token 0 is a real token "
                      f"whose output the scatter epilogue would corrupt).")
            elif tok == exp_tok:
                print("hint: the tokens are right; the slot of (token t, choice j) is t·k + j, the position of the "
                      "choice in topk_ids.reshape(-1).")
            else:
                print("hint: a token is routed to the expert if it appears in ANY of its k columns; list them in "
                      "ascending token order.")
            return False
    print(f"{_OK} solved: your gather lists match TokenSelection for every expert of {len(cases)} routings.")
    return True


# ---------------------------------------------------------------------------------------------- exercise 2
def solution_moe_combine(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                         expert_fn: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``y[t] = Σⱼ topk_weights[t, j] · expert_fn(topk_ids[t, j], x[t])``, one ``expert_fn`` call per busy
    expert on its gathered rows, then a weighted ``index_add_`` (the scatter-add epilogue)."""
    y = torch.zeros_like(x)
    for e in topk_ids.unique().tolist():
        tok, j = (topk_ids == e).nonzero(as_tuple=True)  # tokens routed to e and which of their k choices
        y.index_add_(0, tok, expert_fn(e, x[tok]) * topk_weights[tok, j, None])
    return y


def _combine_cases(trials: int, gen: torch.Generator) -> list[tuple[str, int, int, int, int, int]]:
    cases = [("E=4, H=8, I=16, 6 tokens, k=2", 4, 8, 16, 6, 2), ("E=8, H=16, I=32, 1 token, k=2", 8, 16, 32, 1, 2)]
    for _ in range(trials):
        E = int(torch.randint(1, 17, (1,), generator=gen))
        k = int(torch.randint(1, min(E, 4) + 1, (1,), generator=gen))
        T = int(torch.randint(1, 50, (1,), generator=gen))
        H = int(torch.randint(1, 33, (1,), generator=gen))
        I = int(torch.randint(1, 65, (1,), generator=gen))
        cases.append((f"E={E}, H={H}, I={I}, {T} tokens, k={k}", E, H, I, T, k))
    return cases


def check_moe_combine(fn: Callable[..., object], *, trials: int = 10, seed: int = 0) -> bool:
    """Check a learner's routed MoE combine ``fn(x, topk_ids, topk_weights, expert_fn) -> y``.

    Spec: ``x`` is fp32 ``[T, H]``; ``topk_ids`` int64 ``[T, k]`` and ``topk_weights`` fp32 ``[T, k]`` come
    from a Mixtral-style router; ``expert_fn(e, rows)`` runs expert ``e`` (a SwiGLU MLP) on ``rows [n, H]``
    and returns ``[n, H]``. Return ``y [T, H]`` with::

        y[t] = Σ_j topk_weights[t, j] · Expert_{topk_ids[t, j]}(x[t])

    calling ``expert_fn`` at most ONCE per expert, on all rows routed to it (gather, one product per
    expert, weighted scatter-add — what the kernels do). Inputs must not be modified. Compared with
    :meth:`SwiGLUExperts.forward(..., backend="dense") <samoyeds_lab.moe.SwiGLUExperts.forward>` on
    random experts of awkward sizes (fp32, to 1e-5).

    Returns
    -------
    bool
        True if every case matches.
    """
    _not_callable("fn", fn)
    from ..moe import SwiGLUExperts, route

    trials, seed = _check_trials_seed(trials, seed)
    gen = torch.Generator().manual_seed(seed)
    cases = _combine_cases(trials, gen)
    for name, E, H, I, T, k in cases:
        torch_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
            experts = SwiGLUExperts(E, H, I).requires_grad_(False)
        finally:
            torch.random.set_rng_state(torch_state)  # leave the learner's global RNG untouched
        x = torch.randn(T, H, generator=gen)
        r = route(torch.randn(T, E, generator=gen) * 2, k)
        ids, w = r.topk_ids, r.topk_weights
        exp = experts.forward(x, ids, w, backend="dense")
        calls: list[tuple[int, int]] = []

        def expert_fn(e: int, rows: torch.Tensor, _ex: SwiGLUExperts = experts) -> torch.Tensor:
            e = int(e)
            calls.append((e, int(rows.shape[0]) if rows.ndim == 2 else -1))
            return _ex.expert_forward(e, rows)

        originals = (x.clone(), ids.clone(), w.clone())
        got, err = _call(fn, x, ids, w, expert_fn)
        if err:
            print(f"{_NO} {err}")
            return False
        if not all(torch.equal(a, b) for a, b in zip((x, ids, w), originals)):
            print(f"{_NO} not yet solved: your function modified x, topk_ids or topk_weights in place ({name}).")
            return False
        if not isinstance(got, torch.Tensor):
            print(f"{_NO} not yet solved: expected y as a torch.Tensor, got {type(got).__name__}")
            return False
        if tuple(got.shape) != (T, H):
            print(f"{_NO} not yet solved ({name}): expected y of shape {(T, H)} [tokens, H] like x, "
                  f"got {tuple(got.shape)}")
            return False
        per_expert: dict[int, int] = {}
        for e, _ in calls:
            per_expert[e] = per_expert.get(e, 0) + 1
        twice = sorted(e for e, c in per_expert.items() if c > 1)
        if twice:
            print(f"{_NO} not yet solved ({name}): expert_fn was called {len(calls)} times, expert {twice[0]} "
                  f"{per_expert[twice[0]]} times.")
            print("hint: gather ALL rows routed to an expert (x[tok]) and call expert_fn once per expert: one "
                  "big product reads the expert's weights once, a call per token reads them every time.")
            return False
        diff = (got.detach().float() - exp).abs().amax(1)
        tol = 1e-5 + 1e-4 * exp.abs().amax(1)
        bad = ~(diff <= tol)
        if not bool(bad.any()):
            continue
        print(f"{_NO} mismatch in case '{name}': {int(bad.sum())} of {T} token row(s) of y differ")
        print(f"  {'token':>5s}  {'experts':>10s}  {'weights':>14s}  {'|yours|':>8s}  {'|expected|':>10s}  "
              f"{'max |diff|':>10s}  mismatch")
        for t in range(min(T, 8)):
            ws = " ".join(f"{float(v):.2f}" for v in w[t])
            print(f"  {t:5d}  {str(ids[t].tolist()):>10s}  {ws:>14s}  {float(got[t].detach().norm()):8.4f}  "
                  f"{float(exp[t].norm()):10.4f}  {float(diff[t]):10.2e}  {'X' if bool(bad[t]) else '.'}")
        unweighted = experts.forward(x, ids, torch.ones_like(w), backend="dense")
        first_only = experts.forward(x, ids[:, :1], w[:, :1], backend="dense")
        if torch.allclose(got.detach().float(), unweighted, atol=1e-5, rtol=1e-4):
            print("hint: multiply each expert's output row by its routing weight topk_weights[t, j].")
        elif k > 1 and torch.allclose(got.detach().float(), first_only, atol=1e-5, rtol=1e-4):
            print("hint: a token visits k experts: add the weighted outputs of ALL its k choices, not just column 0.")
        else:
            print("hint: ADD each weighted output row into y[t] (index_add_, not an assignment that a token's "
                  "second expert would overwrite).")
        return False
    print(f"{_OK} solved: your MoE combine matches SwiGLUExperts.forward (dense backend) on {len(cases)} cases, "
          f"one expert call per busy expert.")
    return True
