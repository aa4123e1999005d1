"""Self-checking exercises for Lab 02's CPU section: the two ideas the CPU sparse kernels are built on.

Exercise 1 — :func:`check_unit_columns`: one 32-bit metadata word of the CPU layout
(:mod:`samoyeds_lab.kernels.cpu`) names, for the 16 kept values of a 32-column unit, which columns of the
token they multiply: the kernel turns it into gather indices. Write ``fn(word) -> 16 columns``.

Exercise 2 — :func:`check_decode_ceiling`: at one token per expert the product is limited by the bytes of
the weight. Write ``fn(rows, cols, gbps) -> (dense_ms, samoyeds_ms)``: the time to read a bf16 weight
stored dense and as the Samoyeds 1:2, V=128 operand the kernel reads, at ``gbps`` GB/s.

Checkers print "yours vs expected" with a mismatch marker and return True/False; the learner's code never
makes them raise. The solutions are :func:`solution_unit_columns` and :func:`solution_decode_ceiling`
(look after trying).
"""

from __future__ import annotations

from typing import Callable

import torch

from .sparsity import _NO, _OK, _call, _not_callable

__all__ = ["check_decode_ceiling", "check_unit_columns", "example_unit_words", "solution_decode_ceiling",
           "solution_unit_columns"]


# ---------------------------------------------------------------------------------------------- exercise 1
def solution_unit_columns(word: int) -> list[int]:
    """Columns (0..31) of the 16 kept values of a unit, value order: value ``v = 2g + s`` is the first
    (``s = 0``, bits ``2g..2g+1``) or second (``s = 1``, bits ``16+2g..17+2g``) kept position of group ``g``."""
    return [4 * (v >> 1) + ((word >> ((v & 1) * 16 + 2 * (v >> 1))) & 3) for v in range(16)]


def example_unit_words() -> list[tuple[int, torch.Tensor]]:
    """(word, dense 32-column unit) pairs from a real compressed weight's CPU layout, plus edge cases."""
    from ..formats import compress_nm
    from ..kernels.cpu import cpu_operand

    g = torch.Generator().manual_seed(7)
    dense = torch.randn(4, 64, generator=g)
    keep = torch.rand(4, 16, 4, generator=g).argsort(-1)[..., :2]
    dense = (dense.view(4, 16, 4) * torch.zeros(4, 16, 4).scatter_(-1, keep, 1.0)).view(4, 64)
    op = cpu_operand(compress_nm(dense), layout="natural")
    out = []
    for r in range(4):
        for u in range(2):
            word = int(op.meta[r, u]) & 0xFFFFFFFF
            out.append((word, dense[r, 32 * u: 32 * u + 32]))
    # every group keeping (0, 1), every group keeping (2, 3), and a mix
    for first, second in ((0, 1), (2, 3), (1, 3)):
        word = sum((first << (2 * gi)) | (second << (16 + 2 * gi)) for gi in range(8))
        out.append((word, None))
    return out


def check_unit_columns(fn: Callable[[int], object]) -> bool:
    """Check ``fn(word) -> 16 ints``: the columns (0..31) of a unit's 16 kept values, in value order.

    Spec: value ``v = 2g + s`` (group ``g = 0..7``, ``s = 0`` first / ``1`` second kept value of the group)
    multiplies column ``4g + p``, where ``p = (word >> (16·s + 2g)) & 3``. The words come from a real
    2:4 weight in the CPU layout (and three edge cases); for those, the check also shows that the dense
    unit is nonzero exactly at your columns.
    """
    _not_callable("fn", fn)
    cases = example_unit_words()
    for word, dense in cases:
        expected = solution_unit_columns(word)
        got, err = _call(fn, word)
        if err:
            print(f"{_NO} {err}")
            return False
        try:
            mine = [int(c) for c in (got.tolist() if isinstance(got, torch.Tensor) else got)]
        except (TypeError, ValueError):
            mine = None
        if mine is None or len(mine) != 16:
            print(f"{_NO} not yet solved: for word 0x{word:08X} expected 16 column indices, got {got!r}")
            return False
        if mine == expected:
            continue
        print(f"{_NO} word 0x{word:08X}: {sum(a != b for a, b in zip(mine, expected))} of 16 column(s) differ")
        print(f"{'value':>5} {'group':>5} {'s':>2} {'yours':>6} {'expected':>8}  mismatch")
        for v, (a, b) in enumerate(zip(mine, expected)):
            print(f"{v:>5} {v >> 1:>5} {v & 1:>2} {a:>6} {b:>8}  {'X' if a != b else '.'}")
        if dense is not None:
            nz = (dense != 0).nonzero().flatten().tolist()
            print(f"the dense unit is nonzero at columns {nz}")
        print("hint: the first positions of the 8 groups sit in the low 16 bits (2 bits each), the second "
              "ones in the high 16 bits; the column is 4·group + position.")
        return False
    print(f"{_OK} solved: all {len(cases)} unit words give the kernel's gather columns.")
    return True


# ---------------------------------------------------------------------------------------------- exercise 2
def solution_decode_ceiling(rows: int, cols: int, gbps: float) -> tuple[float, float]:
    """Byte-ceiling times (ms) at ``gbps`` GB/s of a bf16 ``[rows, cols]`` weight: dense, and the Samoyeds
    1:2 V=128 operand the CPU kernel reads (values, 2 bits of metadata per value, a byte of row index per
    window and compressed row)."""
    dense = rows * cols * 2
    kept = rows // 2 * cols // 2
    samoyeds = kept * 2 + kept // 4 + (cols // 128) * (rows // 2)
    return dense / (gbps * 1e9) * 1e3, samoyeds / (gbps * 1e9) * 1e3


def check_decode_ceiling(fn: Callable[[int, int, float], object]) -> bool:
    """Check ``fn(rows, cols, gbps) -> (dense_ms, samoyeds_ms)`` on Mixtral, Qwen and small shapes.

    Spec: bf16 (2 bytes per value). Dense reads ``rows·cols`` values. The Samoyeds 1:2, V=128 operand keeps
    ``rows/2 · cols/2`` values, each with 2 bits of 2:4 metadata, plus one byte of row index per 128-column
    window and compressed row (``rows/2``). Time = bytes / (gbps·1e9) in milliseconds. (The operand bytes
    are :attr:`samoyeds_lab.kernels.cpu.CpuOperand.nbytes`; the test suite checks that this spec matches.)
    """
    _not_callable("fn", fn)
    cases = [(14336, 4096, 35.0), (4096, 14336, 42.0), (1408, 2048, 30.0), (256, 128, 1.0)]
    for rows, cols, gbps in cases:
        exp = solution_decode_ceiling(rows, cols, gbps)
        got, err = _call(fn, rows, cols, gbps)
        if err:
            print(f"{_NO} {err}")
            return False
        try:
            mine = tuple(float(v) for v in got)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            mine = ()
        if len(mine) != 2:
            print(f"{_NO} not yet solved: expected a pair (dense_ms, samoyeds_ms), got {got!r}")
            return False
        ok = [abs(a - b) <= 1e-6 * max(abs(b), 1e-12) for a, b in zip(mine, exp)]
        if all(ok):
            continue
        print(f"{_NO} {rows}×{cols} at {gbps} GB/s:")
        for name, a, b, good in zip(("dense ms", "Samoyeds ms"), mine, exp, ok):
            print(f"  {name:<12} yours {a:10.4f}   expected {b:10.4f}   {'.' if good else 'X'}")
        print("hint: count bytes first (bf16 values: 2 bytes; metadata: 2 bits per kept value; row index: "
              "1 byte per window per compressed row), then divide by bytes per millisecond.")
        return False
    d, s = solution_decode_ceiling(14336, 4096, 35.0)
    print(f"{_OK} solved: e.g. Mixtral w1 at 35 GB/s reads in {d:.2f} ms dense vs {s:.2f} ms Samoyeds "
          f"(a {d / s:.2f}× ceiling at one token).")
    return True
