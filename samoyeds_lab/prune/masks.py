"""Mask selection for every sparsity pattern the lab supports, from a score per weight.

Every function takes ``scores`` (a float tensor of the weight's shape, larger = more important; see
:mod:`samoyeds_lab.prune.scores`) and returns a ``bool`` tensor of the same shape, ``True`` = keep.
Each mask keeps *exactly* the number of elements its pattern allows (not "at most"), so a weight pruned
with it has the pattern's density whatever zeros it already held.

Ties are broken deterministically: of two equal scores competing for the same slot, the one with the
lower index (column inside a group, row inside a row group, flat index for ``unstructured``) wins.

Patterns
--------
``nm``          ``n`` of every ``m`` consecutive elements along the last dimension.
``samoyeds``    per ``vector``-wide window of columns, ``n`` of every ``m`` consecutive rows, then 2:4
                inside the kept row segments (Samoyeds, EuroSys'25).
``samoyeds_masks_joint``  the Samoyeds pattern for paired projections (gate/up of a SwiGLU expert):
                one row selection per (row group, window) from the normalised scores of all of them, 2:4
                per projection; windows per row = ``cols / vector`` (K / V).
``venom``       per block of ``v`` rows x ``m`` columns, ``n`` columns (the same for all ``v`` rows), then
                2:4 along each row over the kept columns (VENOM V:N:M, SC'23; ``n`` = kept columns).
``unstructured`` the ``floor(density · numel + 1/2)`` largest scores of the whole tensor.

Implementation notes
--------------------
All selections are vectorised. The patterns are independent across row blocks (``m`` rows for
``samoyeds``, ``v`` rows for ``venom``, one row for ``nm``), so the work is done over blocks of a few
million elements: every temporary stays small (no page faults on fresh 200 MB buffers), which is what
keeps a 14336 x 4096 Samoyeds mask well under a second on two CPU cores.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Iterator

import torch

from .._checks import check_int, check_tensor

#: dtypes accepted for ``scores`` (float64 scores are kept in float64; the rest are compared in fp32).
SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Largest group for the pairwise-rank selection; larger groups use a stable sort.
_PAIRWISE_MAX = 16

#: Elements per row block processed at once.
_BLOCK_ELEMS = 1 << 21

#: ``score_rows(lo, hi)`` returns the fp32 (or fp64) scores of rows ``lo:hi`` of a 2-D view.
ScoreRows = Callable[[int, int], torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# selection primitive
# ---------------------------------------------------------------------------------------------------
def top_n_mask(s: torch.Tensor, n: int) -> torch.Tensor:
    """Keep the ``n`` largest entries of every group along the last dimension (ties: lower index).

    Parameters
    ----------
    s : torch.Tensor
        ``[..., m]`` float scores (no NaN: a NaN raises, it would compare as neither larger nor smaller).
    n : int
        Entries kept per group, ``0 <= n <= m`` (``n > m`` raises: a group cannot keep more than it holds).

    Returns
    -------
    torch.Tensor
        ``bool [..., m]`` with exactly ``n`` ``True`` per group. Element ``i`` is kept iff
        ``rank_i = #{j < i : s_j >= s_i} + #{j > i : s_j > s_i} < n``.
    """
    check_tensor("s", s, dtypes=SCORE_DTYPES)
    if s.ndim == 0:
        raise ValueError("s: expected a [..., m] tensor, got a 0-d tensor")
    m = s.shape[-1]
    n = check_int("n", n, lo=0, hi=m)
    if s.numel() and bool(torch.isnan(s).any()):
        idx = tuple(int(i) for i in torch.isnan(s).nonzero()[0])
        raise ValueError(f"s: expected no NaN scores, found NaN at index {idx}")
    return _top_n_mask(s, n)


def _top_n_mask(s: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`top_n_mask` without the checks (the mask builders call it once per row block)."""
    m = s.shape[-1]
    if n >= m:
        return torch.ones(s.shape, dtype=torch.bool, device=s.device)
    if n <= 0:
        return torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    if m > _PAIRWISE_MAX:
        # A stable descending sort keeps equal scores in index order, so the lower index wins ties.
        idx = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :n]
        return torch.zeros(s.shape, dtype=torch.bool, device=s.device).scatter_(-1, idx, True)
    cols = s.unbind(-1)
    lead = s.shape[:-1]
    # rank_j starts at the number of later elements (each beats j unless j wins the comparison).
    ranks = [torch.full(lead, m - 1 - j, dtype=torch.uint8, device=s.device) for j in range(m)]
    beats = torch.empty(lead, dtype=torch.bool, device=s.device)
    for j in range(m):
        for i in range(j + 1, m):
            torch.ge(cols[j], cols[i], out=beats)  # j (lower index) beats i, ties included
            ranks[i].add_(beats.view(torch.uint8))
            ranks[j].sub_(beats.view(torch.uint8))
    return torch.stack([r < n for r in ranks], dim=-1)


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def _row_blocks(rows: int, cols: int, multiple: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` row ranges of about :data:`_BLOCK_ELEMS` elements, ``lo`` a multiple of ``multiple``."""
    per = max(1, _BLOCK_ELEMS // max(cols, 1)) // multiple * multiple
    step = max(multiple, per)
    for lo in range(0, rows, step):
        yield lo, min(rows, lo + step)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_scores(name: str, scores: object, min_ndim: int) -> torch.Tensor:
    check_tensor(name, scores, dtypes=SCORE_DTYPES)
    assert isinstance(scores, torch.Tensor)
    if scores.ndim < min_ndim:
        what = "a 1-D or higher" if min_ndim == 1 else f"a {min_ndim}-D or higher ([..., rows, cols])"
        raise ValueError(f"{name}: expected {what} tensor, got shape {tuple(scores.shape)}")
    return scores


def _tensor_rows(name: str, scores: torch.Tensor) -> ScoreRows:
    """Row reader over the 2-D view ``[-1, cols]`` of ``scores`` that rejects NaN."""
    flat = scores.reshape(math.prod(scores.shape[:-1]), scores.shape[-1])
    work = _work_dtype(scores.dtype)

    def rows(lo: int, hi: int) -> torch.Tensor:
        s = flat[lo:hi].to(work)
        if s.numel() and math.isnan(float(s.max())):  # max propagates NaN: one cheap reduction
            r = lo + int(torch.isnan(s).any(-1).nonzero()[0])
            raise ValueError(f"{name}: expected no NaN scores, found NaN in (flattened) row {r}")
        return s

    return rows


def _check_nm(n: object, m: object) -> tuple[int, int]:
    m = check_int("m", m, lo=2, hi=16)
    n = check_int("n", n, lo=1)
    if n >= m:
        raise ValueError(f"n: expected 1 <= n < m for an N:M pattern, got n={n}, m={m}")
    return n, m


def _check_div(name: str, shape: tuple[int, ...], dim_name: str, size: int, what: str, divisor: int) -> None:
    if size % divisor:
        raise ValueError(
            f"{name}: expected {dim_name} to be a multiple of {what}={divisor}, got {size} "
            f"(shape {tuple(shape)})"
        )


# ---------------------------------------------------------------------------------------------------
# N:M
# ---------------------------------------------------------------------------------------------------
def _nm_rows(rows_of: ScoreRows, shape: tuple[int, ...], n: int, m: int, device: torch.device) -> torch.Tensor:
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    out = torch.empty(rows, cols, dtype=torch.bool, device=device)
    for lo, hi in _row_blocks(rows, cols, 1):
        s = rows_of(lo, hi)
        out[lo:hi] = _top_n_mask(s.view(hi - lo, cols // m, m), n).view(hi - lo, cols)
    return out.view(shape)


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M mask along the last dimension: the ``n`` highest scores of every ``m`` consecutive ones.

    For every row ``r`` and group ``g`` (columns ``g·m … g·m+m-1``)::

        mask[r, g·m + i] = rank of scores[r, g·m + i] inside its group < n

    (rank 0 = largest; equal scores rank by column, lower first).

    Parameters
    ----------
    scores : torch.Tensor
        ``[..., cols]`` float scores (fp16/bf16/fp32/fp64, no NaN); ``cols`` a multiple of ``m``.
    n, m : int
        ``1 <= n < m <= 16`` (2:4 is what Sparse Tensor Cores run).

    Returns
    -------
    torch.Tensor
        ``bool`` of ``scores.shape`` with exactly ``n`` ``True`` in every group.
    """
    scores = _check_scores("scores", scores, 1)
    n, m = _check_nm(n, m)
    _check_div("scores", scores.shape, "the last dimension (cols)", scores.shape[-1], "m", m)
    return _nm_rows(_tensor_rows("scores", scores), tuple(scores.shape), n, m, scores.device)


# ---------------------------------------------------------------------------------------------------
# Samoyeds
# ---------------------------------------------------------------------------------------------------
def _check_samoyeds(n: object, m: object, vector: object) -> tuple[int, int, int]:
    m = check_int("m", m, lo=2, hi=255)
    n = check_int("n", n, lo=1)
    if n >= m:
        raise ValueError(f"n: expected 1 <= n < m rows kept per group of m, got n={n}, m={m}")
    vector = check_int("vector", vector, lo=4)
    if vector % 4:
        raise ValueError(f"vector: expected a multiple of 4 (2:4 groups inside a window), got {vector}")
    return n, m, vector


def _check_samoyeds_shape(name: str, shape: tuple[int, ...], m: int, vector: int) -> None:
    _check_div(name, shape, "rows (dim -2)", shape[-2], "m", m)
    _check_div(name, shape, "cols (dim -1)", shape[-1], "vector", vector)


def _samoyeds_rows(
    rows_of: ScoreRows, shape: tuple[int, ...], n: int, m: int, vector: int, device: torch.device
) -> torch.Tensor:
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    windows = cols // vector
    out = torch.empty(rows, cols, dtype=torch.bool, device=device)
    for lo, hi in _row_blocks(rows, cols, m):
        h = hi - lo
        s = rows_of(lo, hi).view(h, cols // 4, 4)
        keep24 = _top_n_mask(s, 2)  # step 2 (2:4), independent of the row choice
        # Row score of a window = what the row would contribute after the 2:4 step.
        row_score = (s * keep24).view(h, windows, vector).sum(-1)  # [h, windows]
        groups = row_score.view(h // m, m, windows).transpose(1, 2)  # [h/m, windows, m]
        keep_rows = _top_n_mask(groups, n).transpose(1, 2).reshape(h, windows, 1)
        torch.logical_and(keep24.view(h, windows, vector), keep_rows, out=out[lo:hi].view(h, windows, vector))
    return out.view(shape)


def samoyeds_mask(scores: torch.Tensor, n: int = 1, m: int = 2, vector: int = 128) -> torch.Tensor:
    """Samoyeds dual-step mask: ``n`` of every ``m`` rows per ``vector``-wide window, then 2:4.

    Step 2 (2:4 along columns) is independent of the row choice, so it is computed first; the row
    choice then scores every row segment by what it would keep after 2:4. For window ``w`` (columns
    ``w·V … w·V+V-1``) and row ``r``::

        row_score[r, w] = Σ_{groups g of 4 in window w} (sum of the 2 largest scores of row r in g)

    and in every group of ``m`` consecutive rows the ``n`` rows with the largest ``row_score`` are kept
    (equal scores: lower row first). The mask is ``keep_row[r, w] & keep_2:4[r, c]``.

    NOTE: scoring a row by its post-2:4 sum (rather than by the sum over the whole window) means the
    row choice maximises the total score that survives both steps, which is what the second step can
    actually keep. The Samoyeds paper prunes with second-order (OBS) scores in the same two-step order.

    Parameters
    ----------
    scores : torch.Tensor
        ``[..., rows, cols]`` float scores (no NaN); ``rows % m == 0``, ``cols % vector == 0``.
        Leading dimensions (e.g. a stack of experts) are independent matrices.
    n, m : int
        Rows kept per group of ``m`` consecutive rows (default 1 of 2), ``1 <= n < m <= 255``.
    vector : int
        Window width along the columns (default 128), a multiple of 4.

    Returns
    -------
    torch.Tensor
        ``bool`` of ``scores.shape``: per (window, row group) exactly ``n`` rows hold ``vector/2`` kept
        elements (2 of every 4) and the other rows none. Density ``n/m · 1/2``.
    """
    scores = _check_scores("scores", scores, 2)
    n, m, vector = _check_samoyeds(n, m, vector)
    _check_samoyeds_shape("scores", tuple(scores.shape), m, vector)
    return _samoyeds_rows(_tensor_rows("scores", scores), tuple(scores.shape), n, m, vector, scores.device)


# ---------------------------------------------------------------------------------------------------
# Samoyeds, joint row selection for paired projections (gate/up of a SwiGLU expert)
# ---------------------------------------------------------------------------------------------------
def _samoyeds_joint_rows(
    readers: list[ScoreRows], shape: tuple[int, ...], n: int, m: int, vector: int, device: torch.device
) -> list[torch.Tensor]:
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    windows = cols // vector
    mats = math.prod(shape[:-2])
    outs: list[torch.Tensor] = []
    combined = torch.zeros(mats, rows // mats * windows, dtype=torch.float64, device=device)
    for rows_of in readers:
        out = torch.empty(rows, cols, dtype=torch.bool, device=device)
        row_score = torch.empty(rows, windows, dtype=torch.float64, device=device)
        for lo, hi in _row_blocks(rows, cols, m):
            h = hi - lo
            s = rows_of(lo, hi).view(h, cols // 4, 4)
            keep24 = _top_n_mask(s, 2)  # step 2, from this projection's own scores
            out[lo:hi] = keep24.view(h, cols)
            row_score[lo:hi] = (s * keep24).view(h, windows, vector).sum(-1)
        per_mat = row_score.view(mats, -1)
        total = per_mat.sum(-1, keepdim=True)
        # NOTE: a projection whose scores are all 0 has nothing to lose; it must not divide by 0.
        combined += per_mat / torch.where(total > 0, total, torch.ones((), dtype=total.dtype, device=device))
        outs.append(out)
    groups = combined.view(rows // m, m, windows).transpose(1, 2)  # [rows/m, windows, m]
    keep_rows = _top_n_mask(groups, n).transpose(1, 2).reshape(rows, windows, 1)
    for out in outs:
        out.view(rows, windows, vector).logical_and_(keep_rows)
    return [out.view(shape) for out in outs]


def _check_scores_list(name: str, scores_list: object) -> list[torch.Tensor]:
    if isinstance(scores_list, torch.Tensor) or not isinstance(scores_list, (list, tuple)):
        raise TypeError(
            f"{name}: expected a list of score tensors (e.g. [gate_scores, up_scores]), got "
            f"{type(scores_list).__name__}"
        )
    if not scores_list:
        raise ValueError(f"{name}: expected at least one score tensor, got an empty {type(scores_list).__name__}")
    out = [_check_scores(f"{name}[{i}]", s, 2) for i, s in enumerate(scores_list)]
    for i, s in enumerate(out[1:], 1):
        if tuple(s.shape) != tuple(out[0].shape):
            raise ValueError(
                f"{name}[{i}]: expected the shape of {name}[0] {tuple(out[0].shape)} (paired projections share "
                f"one row selection), got {tuple(s.shape)}"
            )
        if s.device != out[0].device:
            raise ValueError(f"{name}[{i}]: expected the device of {name}[0] ({out[0].device}), got {s.device}")
    return out


def samoyeds_masks_joint(
    scores_list: list[torch.Tensor], n: int = 1, m: int = 2, vector: int = 128
) -> list[torch.Tensor]:
    """Samoyeds masks for paired projections that share ONE row selection per (row group, window).

    The gate and up weights of a SwiGLU expert, ``W_gate, W_up [I, H]``, feed
    ``silu(W_gate x) ⊙ (W_up x)``: neuron ``i`` (row ``i`` of both) is dead as soon as *either* row loses
    all its weights. Pruned independently with :func:`samoyeds_mask`, the two projections keep different
    rows in a window; when the row holds a single window (``V = K``) a neuron then survives only if both
    projections happened to keep it. Here the row choice is made once, for every projection ``p`` of the
    list, from the combined score::

        row_score_p[r, w] = Σ_{groups g of 4 in window w} (sum of the 2 largest scores_p of row r in g)
        combined[r, w]    = Σ_p row_score_p[r, w] / Σ_{r', w'} row_score_p[r', w']      (per matrix)

        in every group of m consecutive rows and window w, the n rows of largest combined[r, w] are kept
        (equal: lower row first), the same rows for every projection;
        mask_p = keep_row[r, w] & keep_2:4_p[r, c]     (2:4 from each projection's own scores)

    NOTE (normalisation): each projection's row scores are divided by their total over its matrix, so
    ``combined`` is the sum over projections of the *fraction* of that projection's (post-2:4) score a row
    segment carries, and the selection maximises ``Σ_p`` (fraction of ``p``'s score kept). Raw sums would
    let the projection with the larger scale decide alone (trained gate and up weights differ in scale, and
    Wanda's ``|W|·‖X_j‖`` inherits it). The result is invariant to rescaling any one projection's scores, and
    with a single projection it is exactly :func:`samoyeds_mask`. For a stack ``[..., rows, cols]`` every
    matrix (every leading index, e.g. one expert) is normalised on its own.

    Only the Samoyeds pattern needs pairing: N:M, VENOM (``n`` columns per ``v x m`` block, then 2:4 along
    every row) and 2:4 keep weights in *every* row, so no neuron dies; VENOM's kept-column choice is left per
    projection (sharing it would only let a fused kernel gather ``x`` once for both, at the price of
    constraining both projections, and it cannot revive a neuron). Unstructured masks have no rows to share.

    Parameters
    ----------
    scores_list : list of torch.Tensor
        Scores of the paired projections (typically ``[gate_scores, up_scores]``), each ``[..., rows, cols]``
        (fp16/bf16/fp32/fp64, no NaN), all of the same shape and device; ``rows % m == 0``,
        ``cols % vector == 0``.
    n, m : int
        Rows kept per group of ``m`` consecutive rows (default 1 of 2), ``1 <= n < m <= 255``.
    vector : int
        Window width ``V`` along the columns (default 128), a multiple of 4. Each row holds
        ``cols / V`` windows (``K / V``); with one window per row a dropped row segment is a dropped neuron.

    Returns
    -------
    list of torch.Tensor
        One ``bool`` mask per entry of ``scores_list``, each with exactly the density of
        :func:`samoyeds_mask` (``n/m · 1/2``) and identical kept rows in every window.
    """
    scores_list = _check_scores_list("scores_list", scores_list)
    n, m, vector = _check_samoyeds(n, m, vector)
    shape = tuple(scores_list[0].shape)
    _check_samoyeds_shape("scores_list[0]", shape, m, vector)
    readers = [_tensor_rows(f"scores_list[{i}]", s) for i, s in enumerate(scores_list)]
    return _samoyeds_joint_rows(readers, shape, n, m, vector, scores_list[0].device)


# ---------------------------------------------------------------------------------------------------
# VENOM
# ---------------------------------------------------------------------------------------------------
def _check_venom(v: object, n: object, m: object) -> tuple[int, int, int]:
    v = check_int("v", v, lo=1)
    m = check_int("m", m, lo=2, hi=255)
    n = check_int("n", n, lo=1)
    if n > m:
        raise ValueError(f"n: expected 1 <= n <= m columns kept per block of m, got n={n}, m={m}")
    return v, n, m


def _check_venom_shape(name: str, shape: tuple[int, ...], v: int, n: int, m: int) -> None:
    _check_div(name, shape, "rows (dim -2)", shape[-2], "v", v)
    _check_div(name, shape, "cols (dim -1)", shape[-1], "m", m)
    kept = shape[-1] // m * n
    if kept % 4:
        raise ValueError(
            f"{name}: expected the kept width cols/m·n = {shape[-1]}/{m}·{n} = {kept} to be a multiple of 4 "
            f"(2:4 runs over the kept columns), got shape {tuple(shape)}"
        )


def _venom_rows(
    rows_of: ScoreRows, shape: tuple[int, ...], v: int, n: int, m: int, device: torch.device
) -> torch.Tensor:
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    blocks = cols // m
    out = torch.empty(rows, cols, dtype=torch.bool, device=device)
    ar = torch.arange(m, device=device)
    for lo, hi in _row_blocks(rows, cols, v):
        h = hi - lo
        s = rows_of(lo, hi).view(h // v, v, blocks, m)
        keep_cols = _top_n_mask(s.sum(1), n)  # [h/v, blocks, m]
        # kept column indices, ascending inside each block: [h/v, blocks, n]
        idx = torch.sort(torch.where(keep_cols, ar, ar + m), dim=-1).values[..., :n]
        idx = idx.unsqueeze(1).expand(h // v, v, blocks, n)
        kept = torch.gather(s, 3, idx).reshape(h, blocks * n // 4, 4)
        keep24 = _top_n_mask(kept, 2).view(h // v, v, blocks, n)
        block = torch.zeros(h // v, v, blocks, m, dtype=torch.bool, device=device)
        out[lo:hi] = block.scatter_(3, idx, keep24).view(h, cols)
    return out.view(shape)


def venom_mask(scores: torch.Tensor, v: int = 64, n: int = 4, m: int = 8) -> torch.Tensor:
    """VENOM V:N:M mask: ``n`` columns per ``v x m`` block, then 2:4 along each row over the kept ones.

    Step 1, for block ``(b, g)`` (rows ``b·v … b·v+v-1``, columns ``g·m … g·m+m-1``)::

        column_score[b, g, j] = Σ_{rows r of block b} scores[r, g·m + j]

    and the ``n`` columns with the largest ``column_score`` are kept (equal: lower column first), the
    same for all ``v`` rows. Step 2: the kept columns of a row, glued in order (``cols/m·n`` of them),
    are pruned 2:4 (groups of 4 consecutive kept columns; with ``n = 2`` a group spans two blocks).

    NOTE: ``n`` counts the *kept columns* per block, as in :func:`samoyeds_lab.formats.compress_venom`;
    density is ``n/m · 1/2``. The default ``v=64, n=4, m=8`` is the VENOM paper's "64:2:8" (2 of every
    8 weights per row after 2:4, 25%). ``n = m`` is plain 2:4.

    Parameters
    ----------
    scores : torch.Tensor
        ``[..., rows, cols]`` float scores (no NaN); ``rows % v == 0``, ``cols % m == 0``,
        ``cols/m·n % 4 == 0``.
    v : int
        Rows per block (default 64).
    n, m : int
        Columns kept per block of ``m`` columns (default 4 of 8), ``1 <= n <= m <= 255``.

    Returns
    -------
    torch.Tensor
        ``bool`` of ``scores.shape`` with ``cols/m·n/2`` kept elements per row.
    """
    scores = _check_scores("scores", scores, 2)
    v, n, m = _check_venom(v, n, m)
    _check_venom_shape("scores", tuple(scores.shape), v, n, m)
    return _venom_rows(_tensor_rows("scores", scores), tuple(scores.shape), v, n, m, scores.device)


# ---------------------------------------------------------------------------------------------------
# unstructured
# ---------------------------------------------------------------------------------------------------
def _check_density(density: object) -> float:
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise TypeError(f"density: expected a real number in [0, 1], got {type(density).__name__} ({density!r})")
    d = float(density)
    if not 0.0 <= d <= 1.0:  # also rejects NaN
        raise ValueError(f"density: expected a fraction in [0, 1], got {density!r}")
    return d


def kept_count(numel: int, density: float) -> int:
    """Number of elements an unstructured mask keeps: ``floor(density · numel + 1/2)``."""
    return min(numel, int(math.floor(density * numel + 0.5)))


#: Above this many elements the k-th largest score is found through a sampled band (see below).
_SELECT_DIRECT = 1 << 22
_SELECT_SAMPLE = 1 << 16


def _kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest value of the 1-D ``flat`` (``1 <= k <= numel``), exactly.

    ``torch.kthvalue`` on tens of millions of elements takes seconds, so for large inputs a fixed-seed
    random sample brackets the answer in a band ``[lo, hi]``; with ``above = #{x > hi}``, the answer is
    the ``(k - above)``-th largest of the band whenever ``above < k <= above + |band|`` (checked;
    otherwise the full ``kthvalue`` runs). The sample only affects speed, never the result.
    """
    total = flat.numel()
    if total <= _SELECT_DIRECT:
        return torch.kthvalue(flat, total - k + 1).values
    gen = torch.Generator(device=flat.device).manual_seed(0)
    idx = torch.randint(total, (_SELECT_SAMPLE,), generator=gen, device=flat.device)
    sample = torch.sort(flat[idx]).values
    pos = (total - k) / total * (_SELECT_SAMPLE - 1)  # where the answer sits in the sorted sample
    margin = 4 * math.sqrt(_SELECT_SAMPLE) + 2  # ~ 8 standard deviations of a sample rank
    lo = sample[max(0, math.floor(pos - margin))]
    hi = sample[min(_SELECT_SAMPLE - 1, math.ceil(pos + margin))]
    above = int(torch.count_nonzero(flat > hi))  # count_nonzero: ~20x faster than bool .sum() on CPU
    band = flat[(flat >= lo) & (flat <= hi)]
    if above < k <= above + band.numel():
        return torch.kthvalue(band, band.numel() - (k - above) + 1).values
    return torch.kthvalue(flat, total - k + 1).values


def _unstructured(s: torch.Tensor, density: float) -> torch.Tensor:
    flat = s.reshape(-1)
    total = flat.numel()
    k = kept_count(total, density)
    if k == 0:
        return torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    if k == total:
        return torch.ones(s.shape, dtype=torch.bool, device=s.device)
    threshold = _kth_largest(flat, k)
    keep = flat >= threshold
    excess = int(torch.count_nonzero(keep)) - k  # ties at the threshold beyond the k slots
    if excess > 0:
        ties = (flat == threshold).nonzero().flatten()  # ascending flat index
        keep[ties[ties.numel() - excess :]] = False  # the highest-index ties lose
    return keep.view(s.shape)


def unstructured_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``k = floor(density · numel + 1/2)`` largest scores of the whole tensor.

    Ties at the threshold are resolved by flat (row-major) index, lower first, so exactly ``k``
    elements are kept. For a stack of matrices the selection is global over the stack.

    Parameters
    ----------
    scores : torch.Tensor
        Float scores of any shape (no NaN).
    density : float
        Fraction kept, ``0 <= density <= 1``.

    Returns
    -------
    torch.Tensor
        ``bool`` of ``scores.shape`` with exactly ``k`` ``True``.
    """
    scores = _check_scores("scores", scores, 0)
    density = _check_density(density)
    s = _tensor_rows("scores", scores.reshape(1, -1))(0, 1)
    return _unstructured(s, density).view(scores.shape)
