"""One ``mma.sp.m16n8k32`` seen from one lane: which registers it holds and which matrix elements they are.

Everything is derived from :mod:`samoyeds_lab.reference.mma_sp` itself (the emulator whose layouts the
kernels use), never from a second copy of the layout formulas:

* A, B, C coordinates: :func:`pack_a`, :func:`pack_b`, :func:`pack_c` applied to matrices whose entries
  *encode their own coordinates* (``16·row + col`` is exact in fp16), so whatever element the emulator
  puts into a register, the code says where it came from;
* the dense column of each stored A value: :func:`sparse_a_to_dense` on those coded values with the
  real metadata registers;
* which rows and 2:4 groups a lane's metadata register describes: each of its 8 nibbles is changed to
  another legal nibble and :func:`sparse_a_to_dense` is rerun; the group whose positions move is the
  one that nibble describes (no change: the instruction does not read this lane with this selector);
* the result: :func:`mma_sp_m16n8k32` for the whole warp, of which the lane keeps its 4 accumulators.

:class:`MmaLanePanel` shows it with a lane slider (0–31) and a selector toggle (0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from .._checks import check_int
from ..formats import compress_nm
from ..formats.sptc import LEGAL_NIBBLES, mma_metadata
from ..reference.mma_sp import mma_sp_m16n8k32, pack_a, pack_b, pack_c, pack_e, sparse_a_to_dense, unpack_d
from ..tiles import MMA_K, MMA_M, MMA_N, WARP_SIZE
from .kernels import fragment_heatmap, register_table
from .panels import _copy_into
from .sparsity import _TEMPLATE

__all__ = ["MmaTile", "WarpgroupTile", "LaneView", "example_tile", "example_warpgroup", "lane_view", "lane_figures", "MmaLanePanel", "MMA_FIGURES"]

#: The figures of one lane view.
MMA_FIGURES = ("a_dense", "a_stored", "b", "d", "registers")
_HALF = ("lo", "hi")


@dataclass(frozen=True)
class MmaTile:
    """The operands of one warp-wide ``mma.sp.m16n8k32`` as matrices.

    Attributes
    ----------
    values : torch.Tensor
        fp16/bf16 ``[16, 16]`` stored 2:4 values of A (two per group of 4, lower position first).
    words : torch.Tensor
        uint32 ``[16]`` register-ordered metadata of the tile (:func:`samoyeds_lab.formats.sptc.mma_metadata`).
    dense_a : torch.Tensor
        ``[16, 32]`` the 2:4 A it stands for.
    b : torch.Tensor
        ``[32, 8]`` B, same dtype (with the MoE layout: 8 gathered tokens' input features, ``Xᵀ``).
    c : torch.Tensor
        fp32 ``[16, 8]`` accumulator input.
    """

    values: torch.Tensor
    words: torch.Tensor
    dense_a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor


def _int_24(rows: int, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``[rows, MMA_K]`` with two nonzeros per group of 4, each ±1…4 (exact products)."""
    mag = torch.randint(1, 5, (rows, MMA_K), generator=g).float()
    sign = torch.where(torch.rand(rows, MMA_K, generator=g) < 0.5, -1.0, 1.0)
    keep = torch.rand(rows, MMA_K // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(rows, MMA_K // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).view(rows, MMA_K)
    return (mag * sign * mask).to(dtype)


def example_tile(seed: int = 0, dtype: torch.dtype = torch.float16) -> MmaTile:
    """A readable random tile: A's kept values, B and C are small integers, so every product is exact.

    A is pruned 2:4 by magnitude (:func:`samoyeds_lab.formats.compress_nm` of a matrix with two
    nonzeros per group), B and C are integers in −3…3.
    """
    seed = check_int("seed", seed, lo=0)
    if dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"dtype: expected torch.float16 or torch.bfloat16, got {dtype}")
    g = torch.Generator().manual_seed(seed)
    dense_a = _int_24(MMA_M, g, dtype)
    nm = compress_nm(dense_a, n=2, m=4)
    words = mma_metadata(nm.sptc_metadata())[0, 0]
    b = torch.randint(-3, 4, (MMA_K, MMA_N), generator=g).to(dtype)
    c = torch.randint(-3, 4, (MMA_M, MMA_N), generator=g).float()
    return MmaTile(values=nm.values, words=words, dense_a=dense_a, b=b, c=c)


@dataclass(frozen=True)
class WarpgroupTile:
    """The operands of one ``wgmma.mma_async.sp.m64n64k32`` (A in registers, B through a descriptor).

    Attributes
    ----------
    dense_a : torch.Tensor
        ``[64, 32]`` 2:4 A; ``a`` ``[4, 32, 4, 2]`` and ``e`` ``[4, 32]`` its per-thread registers (warp ``w``:
        rows ``16w … 16w+15``, each warp in the ``mma.sp.m16n8k32`` layout, selector 0).
    b : torch.Tensor
        ``[32, 64]`` B (64 gathered tokens' input features); ``smem`` the uint8 shared-memory image holding
        it in the 64-byte-swizzled K-major layout of ``kernels/ssmm.cu``'s B stage, ``desc`` the 64-bit
        descriptor the kernel builds for it (start 0, SBO 512 B), ``offsets`` ``[64 tokens, 32]`` the byte
        address of every element.
    c_matrix, c : torch.Tensor
        fp32 ``[64, 64]`` accumulator input and its per-thread form ``[4, 32, 32]``.
    """

    dense_a: torch.Tensor
    a: torch.Tensor
    e: torch.Tensor
    b: torch.Tensor
    smem: np.ndarray
    desc: int
    offsets: np.ndarray
    c_matrix: torch.Tensor
    c: torch.Tensor


def example_warpgroup(seed: int = 0, dtype: torch.dtype = torch.float16) -> WarpgroupTile:
    """A readable random warpgroup tile (small integers: every product exact), B laid out as ssmm.cu does."""
    from ..reference.wgmma import SmemDescriptor, k_major_offsets, pack_wg_a, pack_wg_c, pack_wg_e, store_k_major

    seed = check_int("seed", seed, lo=0)
    if dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"dtype: expected torch.float16 or torch.bfloat16, got {dtype}")
    g = torch.Generator().manual_seed(seed)
    m, n = 4 * MMA_M, 64
    dense_a = _int_24(m, g, dtype)
    nm = compress_nm(dense_a, n=2, m=4)
    b = torch.randint(-3, 4, (MMA_K, n), generator=g).to(dtype)
    c_matrix = torch.randint(-3, 4, (m, n), generator=g).float()
    desc = SmemDescriptor(0, 16, 8 * MMA_K * 2, 0, "64B").encode()  # what ssmm.cu's b_desc builds
    smem = np.zeros(n * MMA_K * 2, np.uint8)
    store_k_major(smem, desc, b.T.contiguous())
    return WarpgroupTile(dense_a=dense_a, a=pack_wg_a(nm.values), e=pack_wg_e(nm.sptc_metadata(), 0), b=b,
                         smem=smem, desc=desc, offsets=k_major_offsets(desc, n, MMA_K), c_matrix=c_matrix,
                         c=pack_wg_c(c_matrix))


@dataclass(frozen=True)
class LaneView:
    """What lane ``lane`` holds for one ``mma.sp.m16n8k32`` with sparsity selector ``selector``.

    Attributes
    ----------
    lane, g, t, selector : int
        The lane, ``g = lane >> 2`` (groupID), ``t = lane & 3`` (thread in group), the selector ``f``.
    a_row, a_stored_col, a_dense_col : torch.Tensor
        int64 ``[4, 2]``: register ``a{r}``, half ``i`` holds stored value ``values[a_row, a_stored_col]``,
        i.e. dense ``A[a_row, a_dense_col]``.
    a_value : torch.Tensor
        ``[4, 2]`` the values themselves.
    b_k, b_n : torch.Tensor
        int64 ``[4, 2]``: ``b{r}`` half ``i`` holds ``B[b_k, b_n]``; ``b_value`` the values.
    c_row, c_col : torch.Tensor
        int64 ``[4]``: accumulator ``c{j}``/``d{j}`` is element ``(c_row[j], c_col[j])`` of C and D.
    c_value, d_value : torch.Tensor
        fp32 ``[4]``: the lane's C input and its D output (from the whole-warp emulator run).
    e_word : int
        The lane's 32-bit metadata register.
    e_nibbles : list of dict
        The nibbles the instruction reads from this lane: ``nibble`` (0–7, bits ``4q…4q+3``), ``row``,
        ``group`` (0–7, dense columns ``4·group … 4·group+3``) and ``value``; empty when the selector does
        not name this lane.
    d_full : torch.Tensor
        fp32 ``[16, 8]`` D of the whole warp (``A·B + C``).
    owners : dict
        ``"a"``: ``[16][16]`` hover strings naming the lane/register of each stored A value; ``"b"``
        ``[32][8]``; ``"d"`` ``[16][8]``; ``"a_dense"`` ``[16][32]``.
    """

    lane: int
    g: int
    t: int
    selector: int
    a_row: torch.Tensor
    a_stored_col: torch.Tensor
    a_dense_col: torch.Tensor
    a_value: torch.Tensor
    b_k: torch.Tensor
    b_n: torch.Tensor
    b_value: torch.Tensor
    c_row: torch.Tensor
    c_col: torch.Tensor
    c_value: torch.Tensor
    d_value: torch.Tensor
    e_word: int
    e_nibbles: list[dict]
    d_full: torch.Tensor
    owners: dict = field(default_factory=dict, repr=False)


def _coords(tile: MmaTile, selector: int) -> dict[str, torch.Tensor]:
    """Warp-wide coordinate tables from the emulator's own pack functions (see the module docstring)."""
    a_code = torch.arange(MMA_M * MMA_K // 2, dtype=torch.float32).view(MMA_M, MMA_K // 2)  # 16·row + col
    a_regs = pack_a(a_code.to(torch.float16)).to(torch.int64)  # [32, 4, 2]
    e = pack_e(tile.words, selector)
    # the dense position of every stored value: scatter the coded values (+1, so 0 means "empty")
    placed = sparse_a_to_dense(pack_a((a_code + 1).to(torch.float16)), e, selector).to(torch.int64)  # [16, 32]
    dense_col = torch.full((MMA_M * MMA_K // 2,), -1, dtype=torch.int64)
    r_idx, c_idx = placed.nonzero(as_tuple=True)
    dense_col[placed[r_idx, c_idx] - 1] = c_idx
    b_code = torch.arange(MMA_K * MMA_N, dtype=torch.float32).view(MMA_K, MMA_N)  # 8·k + n
    b_regs = pack_b(b_code.to(torch.float16)).to(torch.int64)
    c_code = torch.arange(MMA_M * MMA_N, dtype=torch.float32).view(MMA_M, MMA_N)  # 8·row + col
    c_regs = pack_c(c_code).to(torch.int64)
    return dict(a=a_regs, a_dense_col=dense_col[a_regs], b=b_regs, c=c_regs, e=e, placed=placed)


def _metadata_nibbles(tile: MmaTile, e: torch.Tensor, lane: int, selector: int, placed: torch.Tensor) -> list[dict]:
    """Which (row, group) each nibble of ``lane``'s metadata register describes, found by perturbation."""
    a_code = pack_a((torch.arange(MMA_M * MMA_K // 2, dtype=torch.float32).view(MMA_M, MMA_K // 2) + 1)
                    .to(torch.float16))
    word = int(e[lane])
    out = []
    for q in range(8):
        nib = (word >> (4 * q)) & 0xF
        other = next(v for v in LEGAL_NIBBLES if v != nib)
        probe = e.to(torch.int64).clone()
        probe[lane] = (word & ~(0xF << (4 * q))) | (other << (4 * q))
        moved = sparse_a_to_dense(a_code, probe, selector).to(torch.int64) != placed
        if not bool(moved.any()):
            continue
        rows, cols = moved.nonzero(as_tuple=True)
        row, group = int(rows[0]), int(cols[0]) // 4
        assert bool((rows == row).all()) and bool((cols // 4 == group).all())
        out.append(dict(nibble=q, row=row, group=group, value=nib))
    return out


def lane_view(tile: MmaTile, lane: int, selector: int = 0) -> LaneView:
    """Step one ``mma.sp.m16n8k32`` of ``tile`` with the emulator and return what ``lane`` holds.

    Parameters
    ----------
    tile : MmaTile
        The operands (:func:`example_tile`).
    lane : int
        0…31.
    selector : int
        The sparsity selector ``f`` (0 or 1): which two lanes of each quad supply the metadata.
    """
    if not isinstance(tile, MmaTile):
        raise TypeError(f"tile: expected an MmaTile (see example_tile), got {type(tile).__name__}")
    lane = check_int("lane", lane, lo=0, hi=WARP_SIZE - 1)
    selector = check_int("selector", selector, lo=0, hi=1)
    co = _coords(tile, selector)
    a_regs, b_regs, c_regs, e = co["a"], co["b"], co["c"], co["e"]
    d = mma_sp_m16n8k32(pack_a(tile.values), pack_b(tile.b), pack_c(tile.c), e, selector)  # the whole warp
    nibs = _metadata_nibbles(tile, e, lane, selector, co["placed"])
    a = a_regs[lane]
    a_row, a_scol = a // (MMA_K // 2), a % (MMA_K // 2)
    b = b_regs[lane]
    c = c_regs[lane]
    owners = _owners(co)
    return LaneView(
        lane=lane, g=lane >> 2, t=lane & 3, selector=selector,
        a_row=a_row, a_stored_col=a_scol, a_dense_col=co["a_dense_col"][lane], a_value=tile.values[a_row, a_scol],
        b_k=b // MMA_N, b_n=b % MMA_N, b_value=tile.b[b // MMA_N, b % MMA_N],
        c_row=c // MMA_N, c_col=c % MMA_N, c_value=tile.c[c // MMA_N, c % MMA_N], d_value=d[lane].clone(),
        e_word=int(e[lane]), e_nibbles=nibs, d_full=unpack_d(d), owners=owners,
    )


def _owners(co: dict) -> dict[str, list[list[str]]]:
    """Hover strings: which lane and register holds each element of A (stored and dense), B and D."""
    a = [["" for _ in range(MMA_K // 2)] for _ in range(MMA_M)]
    a_dense = [["(pruned: no lane holds it)" for _ in range(MMA_K)] for _ in range(MMA_M)]
    b = [["" for _ in range(MMA_N)] for _ in range(MMA_K)]
    d = [["" for _ in range(MMA_N)] for _ in range(MMA_M)]
    for lane in range(WARP_SIZE):
        for r in range(4):
            for i in range(2):
                code = int(co["a"][lane, r, i])
                row, col = divmod(code, MMA_K // 2)
                a[row][col] = f"· lane {lane}, a{r}.{_HALF[i]}"
                a_dense[row][int(co["a_dense_col"][lane, r, i])] = f"· lane {lane}, a{r}.{_HALF[i]}"
                kk, nn = divmod(int(co["b"][lane, r, i]), MMA_N)
                b[kk][nn] = f"· lane {lane}, b{r}.{_HALF[i]}"
        for j in range(4):
            row, col = divmod(int(co["c"][lane, j]), MMA_N)
            d[row][col] = f"· lane {lane}, d{j}"
    return {"a": a, "a_dense": a_dense, "b": b, "d": d}


def _fmt(v: float) -> str:
    return f"{float(v):g}"


def lane_figures(tile: MmaTile, view: LaneView) -> dict[str, go.Figure]:
    """The five figures of a lane view: A dense, A stored, B, D and the register table."""
    L, f = view.lane, view.selector
    a_cells_dense, a_cells_stored, b_cells, d_cells = [], [], [], []
    rows = []
    for r in range(4):
        for i in range(2):
            lab = f"a{r}.{_HALF[i]}"
            R, S, C = int(view.a_row[r, i]), int(view.a_stored_col[r, i]), int(view.a_dense_col[r, i])
            a_cells_dense.append((R, C, lab))
            a_cells_stored.append((R, S, lab))
            rows.append(dict(operand="a", register=f"a{r}", bits="15:0" if i == 0 else "31:16",
                             holds=f"A stored [{R}, {S}] = dense A[{R}, {C}] (group {C // 4}, position {C % 4})",
                             value=_fmt(view.a_value[r, i])))
    for r in range(4):
        for i in range(2):
            lab = f"b{r}.{_HALF[i]}"
            k, n = int(view.b_k[r, i]), int(view.b_n[r, i])
            b_cells.append((k, n, lab))
            rows.append(dict(operand="b", register=f"b{r}", bits="15:0" if i == 0 else "31:16",
                             holds=f"B[k={k}, n={n}] (input feature {k} of token {n})", value=_fmt(view.b_value[r, i])))
    for j in range(4):
        R, C = int(view.c_row[j]), int(view.c_col[j])
        d_cells.append((R, C, f"d{j}"))
        rows.append(dict(operand="c/d", register=f"c{j} → d{j}", bits="fp32",
                         holds=f"C/D[{R}, {C}] = Σₖ A[{R}, k]·B[k, {C}] + C[{R}, {C}]",
                         value=f"{_fmt(view.c_value[j])} → {_fmt(view.d_value[j])}"))
    boxes = []
    if view.e_nibbles:
        for nb in view.e_nibbles:
            q, R, grp = nb["nibble"], nb["row"], nb["group"]
            boxes.append((R, 4 * grp, R, 4 * grp + 3))
            lo, hi = nb["value"] & 3, nb["value"] >> 2
            rows.append(dict(operand="e", register="e", bits=f"{4 * q + 3}:{4 * q}",
                             holds=f"row {R}, group {grp} (dense cols {4 * grp}–{4 * grp + 3}): kept positions "
                                   f"{lo}, {hi}", value=f"0x{nb['value']:X}"))
    else:
        rows.append(dict(operand="e", register="e", bits="31:0",
                         holds=f"not read: selector f={f} takes metadata from lanes 4g+{2 * f} and 4g+{2 * f + 1}",
                         value=f"0x{view.e_word:08X}"))
    g, t = view.g, view.t
    who = f"lane {L} (g = {g}, t = {t}), selector f = {f}"
    meta = (f"dotted red: the 2:4 groups lane {L}'s metadata register e = 0x{view.e_word:08X} describes"
            if view.e_nibbles else f"lane {L} supplies no metadata with f = {f}")
    owners = view.owners
    figs = {
        "a_dense": fragment_heatmap(
            tile.dense_a, cells=a_cells_dense, boxes=boxes, hover=owners.get("a_dense"), xtitle="k (input feature)",
            ytitle="row (output feature)",
            title=f"A, 16×32 2:4 (what the instruction multiplies) — {who}<br><sup>amber: the 8 values in lane "
                  f"{L}'s a0–a3 · {meta} · grey: pruned</sup>"),
        "a_stored": fragment_heatmap(
            tile.values, cells=a_cells_stored, hover=owners.get("a"), xtitle="stored column", ytitle="row",
            title=f"A as stored: 16×16 values (+ metadata)<br><sup>lane {L}: rows {g}, {g + 8}; stored cols "
                  f"{2 * t}–{2 * t + 1}, {2 * t + 8}–{2 * t + 9}</sup>"),
        "b": fragment_heatmap(
            tile.b, cells=b_cells, hover=owners.get("b"), xtitle="n (token)", ytitle="k (input feature)",
            title=f"B, 32×8 (8 gathered tokens)<br><sup>lane {L}: column {g}</sup>"),
        "d": fragment_heatmap(
            view.d_full, cells=d_cells, hover=owners.get("d"), xtitle="n (token)", ytitle="row (output feature)",
            title=f"D = A·B + C, 16×8 fp32<br><sup>whole warp, emulator — lane {L}: d0–d3</sup>"),
        "registers": register_table(rows, title=f"Registers of lane {L} (f = {f})"),
    }
    return figs


class MmaLanePanel:
    """A lane slider (0–31) and a selector toggle (0, 1) over one ``mma.sp.m16n8k32``.

    :meth:`update` computes :func:`lane_view` and :func:`lane_figures` and copies the figures into
    ``go.FigureWidget``\\ s inside ``batch_update()``; the widget callbacks only call it, so tests drive
    every lane and selector without a browser.
    """

    def __init__(self, tile: MmaTile | None = None, *, lane: int = 0, selector: int = 0) -> None:
        self.tile = tile if tile is not None else example_tile()
        if not isinstance(self.tile, MmaTile):
            raise TypeError(f"tile: expected an MmaTile or None, got {type(self.tile).__name__}")
        lane = check_int("lane", lane, lo=0, hi=WARP_SIZE - 1)
        selector = check_int("selector", selector, lo=0, hi=1)
        style = {"description_width": "70px"}
        self.controls = {
            "lane": widgets.IntSlider(value=lane, min=0, max=WARP_SIZE - 1, description="lane",
                                      continuous_update=False, style=style, layout=widgets.Layout(width="420px")),
            "selector": widgets.ToggleButtons(options=(0, 1), value=selector, description="selector f",
                                              style={"description_width": "70px", "button_width": "50px"}),
        }
        self.status = widgets.HTML()
        self.figure_widgets = {name: go.FigureWidget(layout={"template": _TEMPLATE}) for name in MMA_FIGURES}
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        fw = self.figure_widgets
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox(list(self.controls.values())), self.status]),
            fw["a_dense"], widgets.HBox([fw["a_stored"], fw["b"]]), widgets.HBox([fw["d"], fw["registers"]]),
        ])
        self.last: LaneView | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self, **values) -> LaneView:
        """Move the widgets to ``values`` (``lane``, ``selector``), recompute and refresh; return the view."""
        for name, value in values.items():
            if name not in self.controls:
                raise TypeError(f"update: unexpected argument {name!r}; expected some of {list(self.controls)}")
        lane = check_int("lane", values.get("lane", self.controls["lane"].value), lo=0, hi=WARP_SIZE - 1)
        selector = check_int("selector", values.get("selector", self.controls["selector"].value), lo=0, hi=1)
        for name, w in self.controls.items():
            if name in values and w.value != values[name]:
                w.unobserve(self._on_change, names="value")
                try:
                    w.value = values[name]
                finally:
                    w.observe(self._on_change, names="value")
        view = lane_view(self.tile, lane, selector)
        figs = lane_figures(self.tile, view)
        widths = {"a_dense": 980, "a_stored": 560, "b": 420, "d": 420, "registers": 560}
        for name, fig in figs.items():
            _copy_into(self.figure_widgets[name], fig, width=widths[name])
        meta = (", ".join(f"row {n['row']} group {n['group']}" for n in view.e_nibbles)
                if view.e_nibbles else "none (not named by this selector)")
        self.status.value = (f"<b>lane {lane}</b>: g = lane ≫ 2 = {view.g}, t = lane & 3 = {view.t} · "
                             f"A rows {view.g} and {view.g + 8} · B/D column(s) {sorted(set(view.b_n.flatten().tolist()))} "
                             f"/ {sorted(set(view.c_col.tolist()))} · metadata nibbles: {meta}")
        self.last = view
        return view
