"""Self-checking exercises for Lab 05 (sparsity vs accuracy): the Wanda score and the Samoyeds two-step mask.

Exercise 1 — :func:`check_wanda_mask`: ``fn(w, x) -> mask``, the 2:4 mask chosen by Wanda scores
``S[i, j] = |W[i, j]| · ||X[:, j]||₂`` (the 2 largest ``S`` of every 4 consecutive elements of a row).
Checked against :func:`samoyeds_lab.prune.prune_mask` (``"2:4"``, ``method="wanda"``) on activations
with outlier channels, where it differs from the magnitude mask.

Exercise 2 — :func:`check_samoyeds_mask`: ``fn(scores, vector) -> mask``, the Samoyeds dual-step mask
(1 of every 2 rows per ``vector``-wide window of columns, then 2:4 inside the kept row segment). Checked
against :func:`samoyeds_lab.prune.samoyeds_mask` (``n=1, m=2``).

Both checks accept a different resolution of *equal* scores: a mask that has the pattern and keeps, in
every group (exercise 1) or every row pair × window (exercise 2), the same total score as the package's
mask is as good as it.

Solutions: :func:`solution_wanda_mask`, :func:`solution_samoyeds_mask` (read them after trying).
"""

from __future__ import annotations

from typing import Callable

import torch

from .sparsity import _NO, _OK, _call, _check_trials_seed, _distinct_magnitudes, _grid, _not_callable, _side_by_side

__all__ = ["check_samoyeds_mask", "check_wanda_mask", "example_activations", "example_scores", "example_weight",
           "solution_samoyeds_mask", "solution_wanda_mask"]

#: Relative tolerance under which two kept-score totals count as a tie.
_TIE_RTOL = 1e-5


# ---------------------------------------------------------------------------------------------- solutions
def solution_wanda_mask(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exercise 1: score every weight by ``|W[i, j]|`` times the L2 norm of input column ``j`` over the
    tokens, then keep the 2 highest scores of every group of 4 along each row."""
    col_norm = x.float().pow(2).sum(dim=0).sqrt()  # ||X[:, j]||₂, one per input feature: [in]
    scores = w.float().abs() * col_norm  # broadcast over the rows: [out, in]
    groups = scores.reshape(w.shape[0], -1, 4)
    top2 = groups.topk(2, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top2, True).reshape(w.shape)


def solution_samoyeds_mask(scores: torch.Tensor, vector: int) -> torch.Tensor:
    """Exercise 2: 2:4 on every row first; then, per ``vector``-wide window, score each row by the sum of
    what 2:4 kept there and keep the higher-scoring row of each pair (rows ``2p, 2p+1``; ties: the upper)."""
    rows, cols = scores.shape
    s = scores.float()
    groups = s.reshape(rows, cols // 4, 4)
    keep24 = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
    keep24 = keep24.reshape(rows, cols)
    windows = cols // vector
    row_score = (s * keep24).reshape(rows, windows, vector).sum(-1)  # [rows, windows]
    pairs = row_score.reshape(rows // 2, 2, windows)
    upper_wins = pairs[:, 0] >= pairs[:, 1]  # [rows/2, windows]
    keep_row = torch.stack([upper_wins, ~upper_wins], dim=1).reshape(rows, windows, 1)
    return (keep24.reshape(rows, windows, vector) & keep_row).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------- examples
def example_weight() -> torch.Tensor:
    """The 4×8 weight :func:`check_wanda_mask` tries first (distinct magnitudes, mixed signs)."""
    return _distinct_magnitudes(4, 8, torch.Generator().manual_seed(7))


def example_activations() -> torch.Tensor:
    """The 16×8 calibration inputs tried with :func:`example_weight`: channel 2 is 20× larger than most,
    channel 5 3× and channel 7 0.4×, so Wanda keeps column 2 in rows where magnitude alone would drop it
    (and ranking by the squared norm differs too)."""
    gen = torch.Generator().manual_seed(6)
    scale = torch.tensor([1.0, 1.0, 20.0, 1.0, 1.0, 3.0, 1.0, 0.4])
    return torch.randn(16, 8, generator=gen) * scale


def example_scores() -> torch.Tensor:
    """The 4×16 scores :func:`check_samoyeds_mask` tries first, with ``vector = 8`` (2 windows).

    Rows 0/1, window 0: row 0 has the larger *window* sum (24 vs 13) but row 1 keeps more after 2:4
    (13 vs 12), so the row choice must follow the post-2:4 sum. Rows 2/3 win different windows, so the
    row choice must be made per window.
    """
    return torch.tensor([
        [5, 5, 5, 5, 1, 1, 1, 1, 2, 1, 2, 1, 3, 1, 1, 3],
        [7, 6, 0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 0, 4, 4, 0],
        [9, 1, 1, 8, 2, 7, 1, 1, 1, 1, 2, 1, 1, 2, 1, 1],
        [1, 2, 1, 1, 3, 1, 3, 1, 6, 1, 1, 6, 5, 5, 1, 1],
    ], dtype=torch.float32)


# ---------------------------------------------------------------------------------------------- helpers
def _as_mask(got: object, shape: tuple[int, int], what: str) -> tuple[torch.Tensor | None, str | None]:
    """A learner's answer as a bool tensor of ``shape``, or an explanation of why it is not one."""
    if not isinstance(got, torch.Tensor):
        return None, f"expected a torch.Tensor mask, got {type(got).__name__}"
    if tuple(got.shape) != shape:
        return None, f"expected a mask of shape {shape} (same as {what}), got {tuple(got.shape)}"
    if got.is_complex() or (got.dtype != torch.bool and not bool(((got == 0) | (got == 1)).all())):
        return None, f"expected a bool (or 0/1) mask, got dtype {got.dtype} with other values"
    return got.detach().cpu() != 0, None


def _ties_only(mine: torch.Tensor, expected: torch.Tensor, scores: torch.Tensor, block: tuple[int, int]) -> bool:
    """True if ``mine`` keeps as many elements as ``expected`` in every ``block`` (rows × cols) and the same
    total score there, to :data:`_TIE_RTOL`: a different resolution of equal scores, not a mistake."""
    br, bc = block
    rows, cols = scores.shape
    def per_block(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(rows // br, br, cols // bc, bc).sum(dim=(1, 3))
    s = scores.double()
    if not torch.equal(per_block(mine.double()), per_block(expected.double())):
        return False
    a, b = per_block(s * mine), per_block(s * expected)
    return bool(((a - b).abs() <= _TIE_RTOL * b.abs().clamp_min(1e-30)).all())


# ---------------------------------------------------------------------------------------------- exercise 1
def _wanda_reference(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    from ..prune import prune_mask

    return prune_mask(w, "2:4", method="wanda", acts=x)


def _mask_of(scores: torch.Tensor) -> torch.Tensor:
    from ..prune import nm_mask

    return nm_mask(scores, 2, 4)


def _wanda_cases(trials: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from ..prune import outlier_activations

    gen = torch.Generator().manual_seed(seed)
    cases = [(example_weight(), example_activations())]
    for t in range(trials):
        rows, groups, tokens = (int(v) for v in (torch.randint(1, 13, (1,), generator=gen),
                                                  torch.randint(1, 9, (1,), generator=gen),
                                                  torch.randint(1, 33, (1,), generator=gen)))
        w = torch.randn(rows, 4 * groups, generator=gen)
        x = outlier_activations(tokens, 4 * groups, n_outliers=1 + t % 2, seed=seed * 1000 + t)
        cases.append((w, x))
    return cases


def check_wanda_mask(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, trials: int = 20,
                     seed: int = 0) -> bool:
    """Check a learner's Wanda 2:4 mask ``fn(w, x) -> mask``.

    Spec: ``w`` is a float ``[out, in]`` weight (``in % 4 == 0``) and ``x`` its float ``[tokens, in]``
    calibration inputs. With the Wanda score::

        S[i, j] = |w[i, j]| · ||x[:, j]||₂        (the L2 norm of input column j over the tokens)

    return a bool (or 0/1) mask of ``w``'s shape that keeps the 2 largest ``S`` of every 4 consecutive
    elements of each row. ``w`` and ``x`` must not be modified.

    Runs :func:`example_weight` with :func:`example_activations` first, then ``trials`` random weights of
    awkward shapes with outlier-channel activations. On the first failure prints ``w``, the column norms,
    yours vs expected (``1`` kept, ``.`` pruned), the mismatch mask (``X``) and a hint.

    Returns
    -------
    bool
        True if every case matches :func:`samoyeds_lab.prune.prune_mask` (``"2:4"``, ``method="wanda"``).
    """
    _not_callable("fn", fn)

    trials, seed = _check_trials_seed(trials, seed)
    cases = _wanda_cases(trials, seed)
    for case, (w, x) in enumerate(cases):
        rows, cols = w.shape
        expected = _wanda_reference(w, x)
        w_in, x_in = w.clone(), x.clone()
        got, err = _call(fn, w_in, x_in)
        if err:
            print(f"{_NO} {err}")
            return False
        if not (torch.equal(w_in, w) and torch.equal(x_in, x)):
            print(f"{_NO} not yet solved: your function modified its input w or x in place (case {case}); "
                  "work on copies.")
            return False
        mine, why = _as_mask(got, (rows, cols), "w")
        if why:
            print(f"{_NO} not yet solved (case {case}): {why}")
            return False
        norms = x.double().pow(2).sum(0).sqrt()
        scores = w.double().abs() * norms
        if torch.equal(mine, expected) or _ties_only(mine, expected, scores, (1, 4)):
            continue
        diff = mine != expected
        r_first, c_first = (int(v) for v in diff.nonzero()[0])
        r0, c0 = r_first // 8 * 8, c_first // 16 * 16  # show at most 8 rows × 16 columns around it
        show = (slice(r0, r0 + 8), slice(c0, c0 + 16))
        where = "" if rows <= 8 and cols <= 16 else \
            f", showing rows {r0}…{min(rows, r0 + 8) - 1}, columns {c0}…{min(cols, c0 + 16) - 1}"
        print(f"{_NO} mismatch in case {case} (w {rows}×{cols}, x {x.shape[0]}×{cols}); {int(diff.sum())} "
              f"cell(s) differ{where}:")
        print(_side_by_side([("w", _grid(w[show], lambda v: f"{v:6.2f}"))]))
        print("||x[:, j]||₂ " + " ".join(f"{v:6.3g}" for v in norms[show[1]].tolist()))
        print()
        print(_side_by_side([
            ("yours", _grid(mine[show], lambda v: "1" if v else ".")),
            ("expected", _grid(expected[show], lambda v: "1" if v else ".")),
            ("mismatch", _grid(diff[show], lambda v: "X" if v else ".")),
        ]))
        per_group = mine.reshape(rows, -1, 4).sum(-1)
        if bool((per_group != 2).any()):
            r, g = (int(v) for v in (per_group != 2).nonzero()[0])
            print(f"hint: row {r}, group {g} keeps {int(per_group[r, g])} values; 2:4 keeps exactly 2 of every 4.")
        elif torch.equal(mine, _mask_of(w.abs())):
            print("hint: that is the magnitude mask: it ranks by |w| alone. Multiply column j by ||x[:, j]||₂ "
                  "first, so weights on large inputs count more.")
        elif torch.equal(mine, _mask_of((w.abs() * x.pow(2).sum(0)).float())):
            print("hint: that ranks by |w|·Σ_t x[t, j]² — take the square root: the L2 norm, not its square.")
        else:
            print("hint: the norm runs over the tokens (dim 0 of x), one per input feature j, and multiplies "
                  "column j of |w|; then rank inside each group of 4 of a row.")
        return False
    print(f"{_OK} solved: your Wanda 2:4 mask matches prune_mask(w, '2:4', method='wanda', acts=x) on "
          f"{len(cases)} cases (the 4×8 example and {len(cases) - 1} random ones with outlier channels).")
    return True


# ---------------------------------------------------------------------------------------------- exercise 2
def _samoyeds_reference(scores: torch.Tensor, vector: int) -> torch.Tensor:
    from ..prune import samoyeds_mask

    return samoyeds_mask(scores, n=1, m=2, vector=vector)


def _samoyeds_cases(trials: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(seed)
    cases = [(example_scores(), 8), (example_scores(), 16), (example_scores(), 4)]
    for t in range(trials):
        pairs = int(torch.randint(1, 7, (1,), generator=gen))
        vector = (4, 8, 16, 32)[int(torch.randint(0, 4, (1,), generator=gen))]
        windows = int(torch.randint(1, 5, (1,), generator=gen))
        rows, cols = 2 * pairs, vector * windows
        if t % 4 == 3:  # small integer scores: many ties
            s = torch.randint(0, 4, (rows, cols), generator=gen).float()
        else:
            s = _distinct_magnitudes(rows, cols, gen).abs()
        cases.append((s, vector))
    return cases


def _pattern_problem(mine: torch.Tensor, vector: int) -> str | None:
    """Why ``mine`` is not a 1-of-2-rows, 2:4-inside Samoyeds mask, or None if it is one."""
    rows, cols = mine.shape
    windows = cols // vector
    per_seg = mine.reshape(rows, windows, vector).sum(-1)  # kept per row segment
    per_group = mine.reshape(rows, cols // 4, 4).sum(-1)
    for p in range(rows // 2):
        for w in range(windows):
            a, b = int(per_seg[2 * p, w]), int(per_seg[2 * p + 1, w])
            if sorted((a, b)) != [0, vector // 2]:
                return (f"rows {2 * p} and {2 * p + 1}, window {w} (columns {w * vector}…{w * vector + vector - 1}) "
                        f"keep {a} and {b} values; Samoyeds keeps one row's segment ({vector // 2} values: 2 of "
                        f"every 4) and drops the other row's entirely.")
    odd = ((per_group != 0) & (per_group != 2)).nonzero()
    if not len(odd):
        return None
    r, g = (int(v) for v in odd[0])
    return f"row {r}, group {g} keeps {int(per_group[r, g])} values; inside a kept segment 2:4 keeps 2 of every 4."


def _whole_k_variant(scores: torch.Tensor, vector: int) -> torch.Tensor:
    """A plausible mistake: one row choice per pair over all columns (the window ignored)."""
    rows, cols = scores.shape
    return _samoyeds_reference(scores, cols) if cols % 4 == 0 else torch.zeros(rows, cols, dtype=torch.bool)


def _window_sum_variant(scores: torch.Tensor, vector: int) -> torch.Tensor:
    """A plausible mistake: rows chosen by the sum of *all* scores of the window, not the post-2:4 sum."""
    rows, cols = scores.shape
    windows = cols // vector
    full = scores.double().reshape(rows // 2, 2, windows, vector).sum(-1)
    upper = full[:, 0] >= full[:, 1]
    keep_row = torch.stack([upper, ~upper], dim=1).reshape(rows, windows, 1)
    keep24 = _mask_of(scores).reshape(rows, windows, vector)
    return (keep24 & keep_row).reshape(rows, cols)


def check_samoyeds_mask(fn: Callable[[torch.Tensor, int], torch.Tensor], *, trials: int = 20,
                        seed: int = 0) -> bool:
    """Check a learner's Samoyeds mask ``fn(scores, vector) -> mask`` (1 of every 2 rows, then 2:4).

    Spec: ``scores`` is a float ``[rows, cols]`` tensor (larger = more important) with ``rows`` even and
    ``cols % vector == 0``; ``vector`` is a multiple of 4. Return a bool (or 0/1) mask of the same shape:

    1. **2:4** on every row: in each group of 4 consecutive columns, the 2 largest scores;
    2. **rows**: for every window ``w`` (columns ``w·vector … w·vector + vector − 1``) and every pair of
       rows ``(2p, 2p + 1)``, keep only the row whose 2:4-kept scores *in that window* sum higher (equal
       sums: the upper row, ``2p``); the other row's segment is pruned entirely.

    Density 25%. ``scores`` must not be modified.

    Runs :func:`example_scores` (``vector`` 8, 16, 4) first, then ``trials`` random cases (``vector`` 4 … 32,
    some with many tied scores). On the first failure prints the row pair and window that differ: their
    scores, both rows' post-2:4 sums, yours vs expected and the mismatch mask, and a hint.

    Returns
    -------
    bool
        True if every case matches :func:`samoyeds_lab.prune.samoyeds_mask` (``n=1, m=2``).
    """
    _not_callable("fn", fn)

    trials, seed = _check_trials_seed(trials, seed)
    cases = _samoyeds_cases(trials, seed)
    for case, (scores, vector) in enumerate(cases):
        rows, cols = scores.shape
        expected = _samoyeds_reference(scores, vector)
        given = scores.clone()
        got, err = _call(fn, given, vector)
        if err:
            print(f"{_NO} {err}")
            return False
        if not torch.equal(given, scores):
            print(f"{_NO} not yet solved: your function modified its input scores in place (case {case}); "
                  "work on a copy.")
            return False
        mine, why = _as_mask(got, (rows, cols), "scores")
        if why:
            print(f"{_NO} not yet solved (case {case}, vector {vector}): {why}")
            return False
        bad_pattern = _pattern_problem(mine, vector)
        if bad_pattern is None and (torch.equal(mine, expected)
                                    or _ties_only(mine, expected, scores, (2, vector))):
            continue
        windows = cols // vector
        blocks = (mine != expected).reshape(rows // 2, 2, windows, vector).any(-1).any(1)
        p, w = (int(v) for v in blocks.nonzero()[0])
        r0, c0 = 2 * p, w * vector
        sl = (slice(r0, r0 + 2), slice(c0, c0 + vector))
        kept = (scores.double() * _mask_of(scores))[sl].sum(-1)
        print(f"{_NO} mismatch in case {case} (scores {rows}×{cols}, vector {vector}): rows {r0} and {r0 + 1}, "
              f"window {w} (columns {c0}…{c0 + vector - 1}), among "
              f"{int(blocks.sum())} of {blocks.numel()} row pair × window block(s) that differ:")
        print(_side_by_side([("scores", _grid(scores[sl], lambda v: f"{v:g}".rjust(5)))]))
        print(f"2:4-kept sum in this window: row {r0} = {float(kept[0]):g}, row {r0 + 1} = {float(kept[1]):g}")
        print()
        print(_side_by_side([
            ("yours", _grid(mine[sl], lambda v: "1" if v else ".")),
            ("expected", _grid(expected[sl], lambda v: "1" if v else ".")),
            ("mismatch", _grid((mine != expected)[sl], lambda v: "X" if v else ".")),
        ]))
        if bad_pattern is not None:
            print(f"hint: {bad_pattern}")
        elif torch.equal(mine, _window_sum_variant(scores, vector)):
            print("hint: you ranked the rows by the sum of *all* their scores in the window; rank them by what "
                  "survives 2:4 there (the sum of the 2 largest of every group of 4).")
        elif cols != vector and torch.equal(mine, _whole_k_variant(scores, vector)):
            print(f"hint: you chose one row per pair for all {cols} columns; choose again in every "
                  f"{vector}-wide window.")
        else:
            print("hint: per window, keep the row of each pair whose post-2:4 scores sum higher (ties: the "
                  "upper row), and drop the other row's segment.")
        return False
    print(f"{_OK} solved: your Samoyeds mask matches samoyeds_mask(scores, n=1, m=2, vector=V) on {len(cases)} "
          f"cases (the 4×16 example at V = 8, 16, 4 and {len(cases) - 3} random ones).")
    return True
