"""Self-checking exercises for lab 01 (structured sparsity).

Each ``check_*`` function runs the learner's function on small fixed and random cases, prints
"yours vs expected" with a mismatch mask for the first failing case, and returns ``True``/``False``.
It never raises because of the learner's code: an unfinished stub (``raise NotImplementedError``) is
reported as "not yet solved", any other exception is printed. Arguments that are not callables are
programming errors of the caller and raise ``TypeError``.

Exercise 1 — :func:`check_mask_24`: write ``fn(w) -> mask`` that keeps, in every group of 4 consecutive
elements of each row, the 2 with the largest magnitude ``|w|``.

Exercise 2 — :func:`check_decode_word`: write ``fn(word) -> [(p0, p1)] * 8`` that decodes one 32-bit
Sparse-Tensor-Core metadata word: group ``j`` is nibble ``(word >> 4j) & 0xF``, ``bits[1:0]`` = first kept
position, ``bits[3:2]`` = second.

Solutions: :func:`solution_mask_24`, :func:`solution_decode_word` (read them after trying).
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["check_decode_word", "check_mask_24", "example_matrix", "example_words", "solution_decode_word",
           "solution_mask_24"]

_OK = "✅"
_NO = "❌"


# ---------------------------------------------------------------------------------------------- references
def _reference_mask_24(w: torch.Tensor) -> torch.Tensor:
    rows, cols = w.shape
    groups = w.abs().reshape(rows, cols // 4, 4)
    idx = groups.topk(2, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, cols)


def _reference_decode(word: int) -> list[tuple[int, int]]:
    return [((word >> (4 * j)) & 0x3, (word >> (4 * j + 2)) & 0x3) for j in range(8)]


def _distinct_magnitudes(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Random matrix whose magnitudes are all different (so "the 2 largest" is unambiguous)."""
    mags = (torch.randperm(rows * cols, generator=gen).to(torch.float32) + 1.0) / 8.0
    signs = torch.where(torch.rand(rows * cols, generator=gen) < 0.5, -1.0, 1.0)
    return (mags * signs).reshape(rows, cols)


def example_matrix() -> torch.Tensor:
    """The 4×8 matrix shown first by :func:`check_mask_24` (distinct magnitudes, mixed signs)."""
    gen = torch.Generator().manual_seed(1)
    return _distinct_magnitudes(4, 8, gen)


def example_words() -> list[int]:
    """The metadata words :func:`check_decode_word` tests, each a legal ordered 2:4 word.

    The first comes from a 2:4-pruned random row; the others cover every legal nibble
    (0x4, 0x8, 0xC, 0x9, 0xD, 0xE) in every group position.
    """
    gen = torch.Generator().manual_seed(2)
    legal = [0x4, 0x8, 0xC, 0x9, 0xD, 0xE]
    words = [0x8D9E4CD4]
    for _ in range(5):
        nibbles = [legal[int(i)] for i in torch.randint(0, 6, (8,), generator=gen)]
        words.append(sum(nib << (4 * j) for j, nib in enumerate(nibbles)))
    words += [0x44444444, 0xEEEEEEEE, 0xEDC98DC4]
    return words


# ---------------------------------------------------------------------------------------------- solutions
def solution_mask_24(w: torch.Tensor) -> torch.Tensor:
    """Exercise 1: group each row in fours, rank each group by ``|w|``, mark the top 2 (bool, ``w``'s shape)."""
    groups = w.abs().reshape(w.shape[0], -1, 4)
    top2 = groups.topk(2, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top2, True).reshape(w.shape)


def solution_decode_word(word: int) -> list[tuple[int, int]]:
    """Exercise 2: shift out nibble ``j`` (bits ``4j..4j+3``), split it into ``bits[1:0]`` and ``bits[3:2]``."""
    nibbles = [(word >> (4 * j)) & 0xF for j in range(8)]
    return [(nib & 0b11, nib >> 2) for nib in nibbles]


# ---------------------------------------------------------------------------------------------- printing
def _grid(t: torch.Tensor, fmt: Callable[[object], str]) -> list[str]:
    return ["  ".join(fmt(v) for v in row) for row in t.tolist()]


def _side_by_side(blocks: list[tuple[str, list[str]]], gap: int = 6) -> str:
    widths = [max([len(title)] + [len(line) for line in lines]) for title, lines in blocks]
    height = max(len(lines) for _, lines in blocks)
    out = [(" " * gap).join(title.ljust(wd) for (title, _), wd in zip(blocks, widths))]
    for i in range(height):
        out.append((" " * gap).join((lines[i] if i < len(lines) else "").ljust(wd)
                                    for (_, lines), wd in zip(blocks, widths)))
    return "\n".join(out)


def _not_callable(name: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a function, got {type(fn).__name__}")


def _check_seed(seed: object) -> int:
    """The seed rule every check shares: an int in [0, 2**63 - 1] (torch.Generator's range)."""
    from .._checks import check_int

    return check_int("seed", seed, lo=0, hi=2**63 - 1)


def _check_trials_seed(trials: object, seed: object) -> tuple[int, int]:
    """The ``trials`` (0 … 10 000) and ``seed`` rules every check shares."""
    from .._checks import check_int

    return check_int("trials", trials, lo=0, hi=10_000), _check_seed(seed)


def _call(fn: Callable, *args: object) -> tuple[object, str | None]:
    """Run the learner's function; return (result, None) or (None, message) if it raised."""
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, "not yet solved: your function still raises NotImplementedError — fill in the # TODO."
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything; report it, don't crash
        return None, f"not yet solved: your function raised {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------- exercise 1
def check_mask_24(fn: Callable[[torch.Tensor], torch.Tensor], *, trials: int = 20, seed: int = 0) -> bool:
    """Check a learner's 2:4 magnitude mask ``fn(w) -> mask``.

    Spec: ``w`` is a float ``[rows, cols]`` tensor with ``cols % 4 == 0``; ``mask`` is a bool (or 0/1)
    tensor of the same shape with ``mask[r, 4g + i]`` True exactly for the 2 indices ``i`` of the 2 largest
    ``|w[r, 4g:4g+4]|`` — 2 kept per group, 50% density. ``w`` must not be modified.

    Runs :func:`example_matrix` first, then ``trials`` random matrices of awkward shapes (1×4 … 19×36).
    On the first failure prints ``w``, yours vs expected (``1`` kept, ``.`` pruned) and the mismatch mask
    (``X`` where they differ).

    Returns
    -------
    bool
        True if every case matches.
    """
    _not_callable("fn", fn)

    trials, seed = _check_trials_seed(trials, seed)
    gen = torch.Generator().manual_seed(seed)
    shapes = [(4, 8)] + [(int(r), 4 * int(c)) for r, c in zip(torch.randint(1, 20, (trials,), generator=gen),
                                                               torch.randint(1, 10, (trials,), generator=gen))]
    for case, (rows, cols) in enumerate(shapes):
        w = example_matrix() if case == 0 else _distinct_magnitudes(rows, cols, gen)
        original = w.clone()
        expected = _reference_mask_24(w)
        got, err = _call(fn, w)
        if err:
            print(f"{_NO} {err}")
            return False
        if not torch.equal(w, original):
            print(f"{_NO} not yet solved: your function modified its input w in place (case {case}, "
                  f"shape {rows}×{cols}); work on a copy.")
            return False
        if not isinstance(got, torch.Tensor):
            print(f"{_NO} not yet solved: expected a torch.Tensor mask, got {type(got).__name__}")
            return False
        if tuple(got.shape) != (rows, cols):
            print(f"{_NO} not yet solved: expected a mask of shape {(rows, cols)} (same as w), "
                  f"got {tuple(got.shape)}")
            return False
        if got.is_complex() or (got.dtype != torch.bool and not bool(((got == 0) | (got == 1)).all())):
            print(f"{_NO} not yet solved: expected a bool (or 0/1) mask, got dtype {got.dtype} with other values")
            return False
        mine = got.detach().cpu() != 0
        if torch.equal(mine, expected):
            continue
        diff = mine != expected
        print(f"{_NO} mismatch in case {case} (w of shape {rows}×{cols}); {int(diff.sum())} cell(s) differ"
              + (", showing the first 8 rows:" if rows > 8 else ":"))
        show = slice(0, 8)
        print(_side_by_side([
            ("w", _grid(w[show], lambda v: f"{v:6.3f}")),
        ]))
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
        else:
            print("hint: 2 per group is right — compare |w| (magnitudes), not signed values.")
        return False
    print(f"{_OK} solved: your 2:4 mask matches on {len(shapes)} matrices "
          f"(the 4×8 example and {trials} random shapes).")
    return True


# ---------------------------------------------------------------------------------------------- exercise 2
def _as_pairs(got: object) -> list[tuple[int, int]] | None:
    """Normalise a learner's answer (list of pairs, tensor [8, 2], …) to 8 int pairs, or None."""
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    try:
        pairs = [tuple(int(v) for v in pair) for pair in got]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(pairs) != 8 or any(len(p) != 2 for p in pairs):
        return None
    return pairs  # type: ignore[return-value]


def check_decode_word(fn: Callable[[int], object]) -> bool:
    """Check a learner's metadata decoder ``fn(word) -> 8 pairs``.

    Spec: ``word`` is a Python int, ``0 <= word < 2**32``, one 2:4 metadata word covering 32 dense
    columns (8 groups of 4). Return the kept positions of the 8 groups, group 0 first, as 8 pairs
    ``(p0, p1)`` (a list of tuples or an int tensor ``[8, 2]``), where for group ``j``::

        nibble = (word >> 4j) & 0xF,   p0 = nibble & 0b11,   p1 = nibble >> 2

    On the first failing word prints the word, yours vs expected per group and a mismatch marker.

    Returns
    -------
    bool
        True if every test word (:func:`example_words`) decodes correctly.
    """
    _not_callable("fn", fn)
    words = example_words()
    for word in words:
        expected = _reference_decode(word)
        got, err = _call(fn, word)
        if err:
            print(f"{_NO} {err}")
            return False
        mine = _as_pairs(got)
        if mine is None:
            print(f"{_NO} not yet solved: for word 0x{word:08X} expected 8 pairs (p0, p1), got {got!r}")
            return False
        if mine == expected:
            continue
        bad = sum(a != b for a, b in zip(mine, expected))
        print(f"{_NO} word 0x{word:08X} = {word:032b}b: {bad} of 8 group(s) differ")
        print(f"{'group':>5}  {'nibble':>6}  {'yours':>8}  {'expected':>8}  mismatch")
        for j, (a, b) in enumerate(zip(mine, expected)):
            nib = (word >> (4 * j)) & 0xF
            print(f"{j:>5}  {f'0x{nib:X}':>6}  {str(a):>8}  {str(b):>8}  {'X' if a != b else '.'}")
        print("hint: group j lives in bits 4j..4j+3; the low two bits are the first (smaller) position.")
        return False
    print(f"{_OK} solved: all {len(words)} metadata words decode correctly.")
    return True
