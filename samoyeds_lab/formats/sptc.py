"""The register order of 2:4 metadata that ``mma.sp.sync.aligned.m16n8k32`` reads (sparsity selector 0).

*Logical* metadata (:meth:`NMWeight.sptc_metadata`) is one ``uint32`` word per row and 32 dense columns:
group ``j`` (columns ``4j … 4j+3`` of the word) in bits ``4j … 4j+3``, its lower kept position in the low
two bits. The tensor core does not read rows one by one, though: in a warp computing one ``m16n8k32``
tile, lane ``4g+h`` (``g = lane >> 2``, ``h ∈ {0, 1}``) hands over one 32-bit register ``e`` holding
*two* rows — row ``g`` in the low half and row ``g+8`` in the high half — for the 16 dense columns
``16h … 16h+15`` (4 nibbles per half). :func:`mma_metadata` stores the words in that order so a kernel
loads its ``e`` with one 32-bit read per lane::

    mma_meta[tile, kstep, i]   rows relative to 16·tile, columns relative to 32·kstep

      i   lane     bits [15:0]                       bits [31:16]
      0   0        row 0, cols  0-15 (groups 0-3)    row  8, cols  0-15
      1   1        row 0, cols 16-31 (groups 4-7)    row  8, cols 16-31
      2   4        row 1, cols  0-15                 row  9, cols  0-15
      3   5        row 1, cols 16-31                 row  9, cols 16-31
      …   …        …                                 …
     14  28        row 7, cols  0-15                 row 15, cols  0-15
     15  29        row 7, cols 16-31                 row 15, cols 16-31

    i.e. entry i = 2g + h is lane 4g + h's register (selector 0); lanes 4g+2, 4g+3 are not read.
    With selector 1 the same 16 words come from lanes 4g+2, 4g+3 instead.

Rows past the end of the matrix are padded with the nibble ``0x4`` (positions 0 and 1, values zero),
which is legal for ``::ordered_metadata``. This is the same order CUTLASS's ``reorder_meta`` produces
(and so ``torch.sparse``'s CUTLASS path), where the words of two consecutive 16-row tiles are interleaved
per lane quad so that one load serves selector 0 (even tile) and selector 1 (odd tile); see
``tests/formats/test_sptc.py`` for the cross-check.

A nibble is *legal* when its two positions are strictly ascending (``bits[1:0] < bits[3:2]``): ``0x4,
0x8, 0xC, 0x9, 0xD, 0xE``. :func:`check_metadata` rejects anything else naming the row and group.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_tensor
from ..errors import FormatError
from .nm import PAD_NIBBLE
from ..tiles import COLS_PER_META_WORD, GROUP, GROUPS_PER_WORD, MMA_M, ceil_div

#: The six nibbles ``::ordered_metadata`` accepts: positions (lo, hi) with lo < hi, lo in bits [1:0].
LEGAL_NIBBLES = (0x4, 0x8, 0xC, 0x9, 0xD, 0xE)
#: A whole padding word (8 padding groups).
PAD_WORD = 0x44444444

_WORD_DTYPES = (torch.uint32, torch.int64, torch.int32)
_HALF_ROWS = MMA_M // 2  # rows g and g+8 share a register


def _as_int64_words(name: str, words: torch.Tensor) -> torch.Tensor:
    """``words`` (uint32, int64 in [0, 2^32) or int32 bit patterns) as int64 values in [0, 2^32)."""
    check_tensor(name, words, dtypes=_WORD_DTYPES)
    if words.dtype == torch.int32:
        return words.to(torch.int64) & 0xFFFFFFFF
    w = words.to(torch.int64)
    if words.dtype == torch.int64 and w.numel() and (int(w.min()) < 0 or int(w.max()) > 0xFFFFFFFF):
        raise ValueError(
            f"{name}: expected 32-bit words in [0, 2**32), got values in [{int(w.min())}, {int(w.max())}]"
        )
    return w


def nibbles(words: torch.Tensor | int) -> torch.Tensor:
    """Split 32-bit metadata words into their 8 nibbles: int64 ``[..., 8]``, nibble ``j`` = bits ``4j…4j+3``."""
    if isinstance(words, int) and not isinstance(words, bool):
        words = torch.tensor(check_int("words", words, lo=0, hi=0xFFFFFFFF), dtype=torch.int64)
    w = _as_int64_words("words", words)
    shifts = torch.arange(GROUPS_PER_WORD, device=w.device) * 4
    return (w.unsqueeze(-1) >> shifts) & 0xF


def nibble_is_ordered(words: torch.Tensor | int) -> torch.Tensor:
    """Which groups of 32-bit metadata words carry a legal (strictly ascending) 2:4 nibble.

    Parameters
    ----------
    words : torch.Tensor or int
        Metadata words (uint32, int64 in ``[0, 2^32)``, or int32 bit patterns), any shape ``[...]``.

    Returns
    -------
    torch.Tensor
        bool ``[..., 8]``: entry ``j`` is ``bits[4j+1:4j] < bits[4j+3:4j+2]``.
    """
    nib = nibbles(words)
    return (nib & 0x3) < (nib >> 2)


def check_metadata(logical: torch.Tensor, name: str = "logical") -> None:
    """Raise :class:`~samoyeds_lab.errors.FormatError` (a ``ValueError``) at the first illegal nibble.

    ``logical`` is ``[rows, words]`` logical metadata; the message names the row, the group (counted
    along the row, ``8·word + j``), its dense columns and the offending nibble.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str (the argument named in the message), got {type(name).__name__}")
    check_tensor(name, logical, ndim=2, dtypes=_WORD_DTYPES)
    ok = nibble_is_ordered(_as_int64_words(name, logical))  # [rows, W, 8]
    if ok.numel() and not bool(ok.all()):
        r, w, j = (int(v) for v in (~ok).nonzero()[0])
        nib = int(nibbles(logical[r, w])[j])
        grp = w * GROUPS_PER_WORD + j
        raise FormatError(
            f"{name}: illegal 2:4 metadata nibble 0x{nib:X} at row {r}, group {grp} (columns "
            f"{grp * GROUP}..{grp * GROUP + 3}): positions ({nib & 3}, {nib >> 2}) are not strictly "
            f"ascending; legal nibbles are {', '.join(f'0x{v:X}' for v in LEGAL_NIBBLES)}"
        )


def mma_metadata(logical: torch.Tensor) -> torch.Tensor:
    """Reorder logical 2:4 metadata into the per-lane registers of ``mma.sp.m16n8k32`` (selector 0).

    Parameters
    ----------
    logical : torch.Tensor
        ``uint32 [rows, ceil(cols/32)]`` as produced by ``NMWeight.sptc_metadata()`` (int64 holding
        32-bit values and int32 bit patterns are accepted too). Every nibble must be legal.

    Returns
    -------
    torch.Tensor
        ``uint32 [ceil(rows/16), ceil(cols/32), 16]`` with ::

            out[t, k, 2g + h] = lo16(logical[16t + g,     k] >> 16h)
                              | lo16(logical[16t + g + 8, k] >> 16h) << 16      g < 8, h < 2

        Rows ``>= rows`` read as ``0x44444444`` (legal padding, values zero).

    Raises
    ------
    FormatError
        If a nibble is illegal (names row and group).
    """
    check_tensor("logical", logical, ndim=2, dtypes=_WORD_DTYPES)
    w = _as_int64_words("logical", logical)
    check_metadata(logical)
    rows, words = w.shape
    tiles = ceil_div(rows, MMA_M)
    if tiles * MMA_M != rows:
        pad = torch.full((tiles * MMA_M - rows, words), PAD_WORD, dtype=torch.int64, device=w.device)
        w = torch.cat([w, pad], dim=0)
    w = w.view(tiles, 2, _HALF_ROWS, words)  # [tile, row>=8, g, kstep]
    halves = torch.stack([w & 0xFFFF, w >> 16], dim=-1)  # [tile, row>=8, g, kstep, h]
    regs = halves[:, 0] | (halves[:, 1] << 16)  # [tile, g, kstep, h]
    return regs.permute(0, 2, 1, 3).reshape(tiles, words, 2 * _HALF_ROWS).contiguous().to(torch.uint32)


def logical_metadata(mma_meta: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Exact inverse of :func:`mma_metadata` for a ``rows x cols`` matrix.

    Parameters
    ----------
    mma_meta : torch.Tensor
        ``uint32 [ceil(rows/16), ceil(cols/32), 16]`` register-ordered metadata.
    rows, cols : int
        Dense shape of the 2:4 matrix (``cols`` a multiple of 4).

    Returns
    -------
    torch.Tensor
        ``uint32 [rows, ceil(cols/32)]`` logical metadata (padding rows dropped).
    """
    rows = check_int("rows", rows, lo=0)
    cols = check_int("cols", cols, lo=0)
    if cols % GROUP:
        raise ValueError(f"cols: expected a multiple of {GROUP} for 2:4 metadata, got {cols}")
    check_tensor("mma_meta", mma_meta, ndim=3, dtypes=_WORD_DTYPES)
    tiles, words = ceil_div(rows, MMA_M), ceil_div(cols, COLS_PER_META_WORD)
    expect = (tiles, words, 2 * _HALF_ROWS)
    if tuple(mma_meta.shape) != expect:
        raise ValueError(
            f"mma_meta: expected shape {expect} for a {rows}x{cols} matrix "
            f"([ceil(rows/16), ceil(cols/32), 16]), got {tuple(mma_meta.shape)}"
        )
    regs = _as_int64_words("mma_meta", mma_meta).view(tiles, words, _HALF_ROWS, 2)  # [t, k, g, h]
    lo = regs & 0xFFFF  # row g, columns 16h..16h+15
    hi = regs >> 16  # row g+8
    top = lo[..., 0] | (lo[..., 1] << 16)  # [t, k, g]
    bottom = hi[..., 0] | (hi[..., 1] << 16)
    out = torch.stack([top, bottom], dim=1)  # [t, row>=8, k, g]
    out = out.permute(0, 1, 3, 2).reshape(tiles * MMA_M, words)[:rows]
    out = out.contiguous()
    check_metadata(out, "mma_meta")
    return out.to(torch.uint32)


__all__ = [
    "LEGAL_NIBBLES", "PAD_NIBBLE", "PAD_WORD",
    "nibbles", "nibble_is_ordered", "check_metadata", "mma_metadata", "logical_metadata",
]
