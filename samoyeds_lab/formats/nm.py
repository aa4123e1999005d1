"""N:M structured sparsity along the last dimension, and the 2:4 metadata of Sparse Tensor Cores.

An ``N:M`` matrix keeps at most ``n`` nonzeros in every group of ``m`` consecutive elements of a row.
It is stored as the kept values ``[rows, cols·n/m]`` plus, for every kept value, its position inside its
group (``0 … m-1``, strictly ascending inside a group)::

    dense row   : 0  a  0  b | c  0  0  0 | ...        (2:4)
    values      : a  b | c  0 | ...                    a group with one nonzero keeps a zero too
    positions   : 1  3 | 0  1 | ...                    (the smallest unused position pads it)

For 2:4 the positions are what NVIDIA Sparse Tensor Cores read as *metadata*: one 4-bit nibble per
group, ``bits[1:0]`` = first kept position, ``bits[3:2]`` = second, ascending. :meth:`NMWeight.sptc_metadata`
packs the nibbles of 8 consecutive groups (32 dense columns) into one ``uint32`` word, group ``j`` in
bits ``4j … 4j+3``. The register order ``mma.sp`` consumes is built from this by
:func:`samoyeds_lab.formats.sptc.mma_metadata`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_int, check_tensor
from ..errors import FormatError

#: The nibble used for groups past the end of a row: positions (0, 1), values zero.
PAD_NIBBLE = 0x4


def _choose_positions(nonzero: torch.Tensor, n: int) -> torch.Tensor:
    """Pick ``n`` ascending positions per group: the nonzero ones first, then the smallest unused ones.

    ``nonzero`` is a bool tensor ``[..., m]`` with at most ``n`` True per group (checked by the caller).
    Returns int64 ``[..., n]``.
    """
    m = nonzero.shape[-1]
    ar = torch.arange(m, device=nonzero.device)
    key = torch.where(nonzero, ar, ar + m)  # nonzeros rank first, each side by position
    chosen = torch.topk(key, n, dim=-1, largest=False, sorted=True).indices
    return torch.sort(chosen, dim=-1).values


@functools.lru_cache(maxsize=None)
def _group_tables(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup tables over every nonzero pattern ``code`` of a group (bit ``i`` = element ``i`` nonzero).

    Returns ``(popcount uint8 [2^m], positions int64 [2^m, n])``; positions are the nonzero indices
    padded with the smallest unused ones, ascending (meaningful where popcount <= n).
    """
    codes = torch.arange(2**m)
    bits = ((codes.unsqueeze(1) >> torch.arange(m)) & 1).bool()
    return bits.sum(1).to(torch.uint8), _choose_positions(bits, n)


def _group_codes(nonzero: torch.Tensor) -> torch.Tensor:
    """``[N, m]`` bool → int64 ``[N]`` pattern codes (bit ``i`` set where element ``i`` is nonzero)."""
    m = nonzero.shape[-1]
    if m == 4 and nonzero.is_contiguous():
        # four bools are four bytes of one int32; one multiply sums b0 + 2·b1 + 4·b2 + 8·b3 into the
        # top byte (the partial sums in the lower bytes never exceed 15, so nothing carries into it)
        v = nonzero.view(torch.uint8).view(torch.int32).view(-1)
        return ((v * 0x01020408) >> 24).to(torch.int64)
    code = torch.zeros(nonzero.shape[0], dtype=torch.int64, device=nonzero.device)
    for i in range(m):
        code |= nonzero[:, i].to(torch.int64) << i
    return code


def _compress_groups(groups: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Compress ``[N, m]`` groups to ``(values [N, n], positions uint8 [N, n], counts-or-None)``.

    ``counts`` (uint8 ``[N]`` nonzeros per group) is returned only when some group holds more than
    ``n`` nonzeros; the caller turns it into an error naming the first such group.
    """
    m = groups.shape[-1]
    popcount, positions = _group_tables(n, m)
    code = _group_codes(groups != 0)
    counts = popcount[code]
    if counts.numel() and int(counts.max()) > n:
        return groups[:, :n], positions[code].to(torch.uint8), counts
    pos = positions[code]
    return torch.gather(groups, 1, pos), pos.to(torch.uint8), None


def _check_dense_shape(name: str, shape: object) -> tuple[int, int]:
    """``shape`` as ``(rows, cols)`` if it is a pair of non-negative ints, else raise naming ``name``."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{name}: expected a (rows, cols) pair of ints, got {type(shape).__name__}")
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a (rows, cols) pair of ints, got {len(shape)} sizes {tuple(shape)!r}")
    rows = check_int(f"{name}[0] (rows)", shape[0], lo=0)
    cols = check_int(f"{name}[1] (cols)", shape[1], lo=0)
    return rows, cols


def _first_violation(counts: torch.Tensor, limit: int) -> tuple[int, ...]:
    """Index (as a tuple) of the first entry of ``counts`` above ``limit``, in row-major order."""
    bad = (counts > limit).nonzero()
    return tuple(int(v) for v in bad[0])


@dataclass(frozen=True, eq=False)
class NMWeight:
    """A matrix with N:M structured sparsity along its last dimension.

    Attributes
    ----------
    values : torch.Tensor
        ``[rows, cols·n/m]`` kept values (same dtype as the dense matrix).
    positions : torch.Tensor
        ``uint8 [rows, cols·n/m]`` position of each kept value inside its group of ``m``.
    n, m : int
        At most ``n`` nonzeros in every ``m`` consecutive elements.
    shape : tuple[int, int]
        The dense shape ``(rows, cols)``.
    """

    values: torch.Tensor
    positions: torch.Tensor
    n: int
    m: int
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        n = check_int("n", self.n, lo=1)
        m = check_int("m", self.m, lo=2, hi=16)
        if n >= m:
            raise ValueError(f"n: expected n < m, got n={n}, m={m}")
        rows, cols = _check_dense_shape("shape", self.shape)
        if cols % m:
            raise ValueError(f"shape: expected cols to be a multiple of m={m}, got {self.shape}")
        kept = (rows, cols // m * n)
        check_tensor("values", self.values, ndim=2, dtypes=FLOAT_DTYPES)
        check_tensor("positions", self.positions, ndim=2, dtypes=(torch.uint8,))
        if self.positions.device != self.values.device:
            raise ValueError(
                f"positions: expected the device of values ({self.values.device}), got {self.positions.device}"
            )
        if tuple(self.values.shape) != kept or tuple(self.positions.shape) != kept:
            raise ValueError(
                f"values/positions: expected shape {kept} for a {rows}x{cols} {n}:{m} matrix, "
                f"got {tuple(self.values.shape)} and {tuple(self.positions.shape)}"
            )
        if self.positions.numel():
            pos = self.positions.view(rows, -1, n)  # uint8 compares: no widening copy
            if int(pos.max()) >= m:
                raise FormatError(f"positions: expected values < m={m}, got {int(pos.max())}")
            if n > 1:
                bad = pos[..., 1:] <= pos[..., :-1]
                if bool(bad.any()):
                    r, g, _ = _first_violation(bad.to(torch.int8), 0)
                    raise FormatError(
                        f"positions: expected strictly ascending positions inside each group, "
                        f"row {r} group {g} has {pos[r, g].tolist()}"
                    )
        object.__setattr__(self, "shape", (rows, cols))

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def density(self) -> float:
        """Fraction of the dense matrix that is stored as values (``n/m``)."""
        return self.n / self.m

    @property
    def index_bits(self) -> int:
        """Bits needed per kept value to name its position (``ceil(log2 m)``)."""
        return max(1, math.ceil(math.log2(self.m)))

    @property
    def nbytes(self) -> int:
        """Bytes of the compressed operand: values plus positions packed at :attr:`index_bits` each.

        For 2:4 the packed positions are exactly the SpTC metadata (2 bits per kept value).
        """
        idx_bytes = math.ceil(self.values.numel() * self.index_bits / 8)
        return self.values.numel() * self.values.element_size() + idx_bytes

    # ------------------------------------------------------------------ conversions
    def to_dense(self) -> torch.Tensor:
        """The dense ``[rows, cols]`` matrix (zeros where nothing is kept)."""
        rows, cols = self.shape
        out = torch.zeros(rows, cols // self.m, self.m, dtype=self.values.dtype, device=self.values.device)
        out.scatter_(
            -1,
            self.positions.view(rows, cols // self.m, self.n).to(torch.int64),
            self.values.view(rows, cols // self.m, self.n),
        )
        return out.view(rows, cols)

    def mask(self) -> torch.Tensor:
        """Bool ``[rows, cols]``: where a value is stored (including stored zeros)."""
        rows, cols = self.shape
        out = torch.zeros(rows, cols // self.m, self.m, dtype=torch.bool, device=self.values.device)
        out.scatter_(-1, self.positions.view(rows, cols // self.m, self.n).to(torch.int64), True)
        return out.view(rows, cols)

    def sptc_metadata(self) -> torch.Tensor:
        """Logical 2:4 metadata for Sparse Tensor Cores: ``uint32 [rows, ceil(cols/32)]``.

        Word ``w`` of row ``r`` covers dense columns ``32w … 32w+31`` (groups ``8w … 8w+7``). Group ``j``
        of the word sits in bits ``4j … 4j+3``: ``bits[4j+1:4j]`` = lower kept position,
        ``bits[4j+3:4j+2]`` = upper kept position. Groups past the end of the row are ``0x4``.
        """
        if (self.n, self.m) != (2, 4):
            raise ValueError(
                f"sptc_metadata: Sparse Tensor Cores take 2:4 metadata, this weight is {self.n}:{self.m}"
            )
        return _pack_nibbles(self.positions)

    def __repr__(self) -> str:
        rows, cols = self.shape
        return f"NMWeight({self.n}:{self.m}, shape=({rows}, {cols}), dtype={self.dtype}, nbytes={self.nbytes})"


def _pack_nibbles(positions: torch.Tensor) -> torch.Tensor:
    """:func:`pack_nibbles` without the checks (for positions a validated weight already holds)."""
    rows, kept = positions.shape
    pos = positions.view(rows, kept // 2, 2).to(torch.int64)
    nib = pos[..., 0] | (pos[..., 1] << 2)  # [rows, groups]
    groups = nib.shape[1]
    words = -(-groups // 8)
    if words * 8 != groups:
        pad = torch.full((rows, words * 8 - groups), PAD_NIBBLE, dtype=torch.int64, device=nib.device)
        nib = torch.cat([nib, pad], dim=1)
    shifts = torch.arange(8, device=nib.device) * 4
    packed = (nib.view(rows, words, 8) << shifts).sum(-1)
    return packed.to(torch.uint32)


def pack_nibbles(positions: torch.Tensor) -> torch.Tensor:
    """Pack 2:4 positions ``uint8 [rows, cols/2]`` into ``uint32 [rows, ceil(cols/32)]`` metadata words.

    ``positions`` holds, for every group of 4 dense columns, its two kept positions ``(lo, hi)`` with
    ``0 <= lo < hi < 4`` (any integer dtype is accepted).

    Raises
    ------
    TypeError
        ``positions`` is not an integer tensor.
    ValueError
        It is not 2-D with an even number of columns.
    FormatError
        A position is outside ``0..3``, or a pair is not strictly ascending (names row and group).
    """
    check_tensor("positions", positions, ndim=2, dtypes=INT_DTYPES)
    rows, kept = positions.shape
    if kept % 2:
        raise ValueError(
            f"positions: expected an even number of columns (2 kept positions per group of 4), got shape "
            f"{tuple(positions.shape)}"
        )
    if positions.numel():
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0 or hi > 3:
            raise FormatError(f"positions: expected 2:4 positions in 0..3, got values in [{lo}, {hi}]")
        pos = positions.view(rows, kept // 2, 2)
        bad = pos[..., 1] <= pos[..., 0]
        if bool(bad.any()):
            r, g = _first_violation(bad.to(torch.int8), 0)
            raise FormatError(
                f"positions: expected strictly ascending positions (lo < hi) in every group, row {r} group {g} "
                f"has {pos[r, g].tolist()}"
            )
    return _pack_nibbles(positions)


def unpack_nibbles(words: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: ``uint32 [rows, ceil(cols/32)]`` words → ``uint8 [rows, cols/2]``.

    ``words`` may also be int64 holding 32-bit values; ``cols`` (the dense width) is a multiple of 4.
    """
    check_tensor("words", words, ndim=2, dtypes=(torch.uint32, torch.int64))
    cols = check_int("cols", cols, lo=0)
    if cols % 4:
        raise ValueError(f"cols: expected a multiple of 4 (groups of 2:4), got {cols}")
    rows = words.shape[0]
    need = -(-cols // 32)
    if words.shape[1] != need:
        raise ValueError(
            f"cols: {cols} dense columns need ceil(cols/32) = {need} words per row, words has shape "
            f"{tuple(words.shape)}"
        )
    w = words.to(torch.int64)
    if words.dtype == torch.int64 and w.numel() and (int(w.min()) < 0 or int(w.max()) > 0xFFFFFFFF):
        raise ValueError(
            f"words: expected 32-bit words in [0, 2**32), got values in [{int(w.min())}, {int(w.max())}]"
        )
    shifts = torch.arange(8, device=w.device) * 4
    nib = (w.unsqueeze(-1) >> shifts) & 0xF  # [rows, W, 8]
    nib = nib.reshape(rows, w.shape[1] * 8)[:, : cols // 4]
    pos = torch.stack([nib & 0x3, nib >> 2], dim=-1)
    return pos.reshape(rows, cols // 2).to(torch.uint8)


def compress_nm(dense: torch.Tensor, n: int = 2, m: int = 4) -> NMWeight:
    """Compress a matrix that already has N:M sparsity along its last dimension.

    Parameters
    ----------
    dense : torch.Tensor
        ``[rows, cols]`` fp16/bf16/fp32, at most ``n`` nonzeros in every group of ``m`` columns.
        Prune first (:func:`samoyeds_lab.prune.sparsify`) if it does not.
    n, m : int
        The pattern, ``1 <= n < m <= 16``; ``cols`` must be a multiple of ``m``.

    Raises
    ------
    FormatError
        If a group holds more than ``n`` nonzeros (names the first row and group).
    """
    check_tensor("dense", dense, ndim=2, dtypes=FLOAT_DTYPES)
    n = check_int("n", n, lo=1)
    m = check_int("m", m, lo=2, hi=16)
    if n >= m:
        raise ValueError(f"n: expected n < m for an N:M pattern, got n={n}, m={m}")
    rows, cols = dense.shape
    if cols % m:
        raise ValueError(f"dense: expected the last dimension to be a multiple of m={m}, got shape {tuple(dense.shape)}")
    values, pos, counts = _compress_groups(dense.reshape(-1, m), n)
    if counts is not None:
        r, g = _first_violation(counts.view(rows, cols // m), n)
        raise FormatError(
            f"dense: not {n}:{m} sparse: row {r}, group {g} (columns {g * m}..{g * m + m - 1}) has "
            f"{int(counts.view(rows, cols // m)[r, g])} nonzeros, at most {n} allowed"
        )
    kept = cols // m * n
    return NMWeight(values.reshape(rows, kept), pos.reshape(rows, kept), n, m, (rows, cols))
