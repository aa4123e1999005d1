"""Pure figure builders for sparsity masks, compressed values, SpTC metadata words and format sizes.

Every function takes plain data (torch tensors, ints, dicts) and returns a new ``plotly.graph_objects.Figure``;
nothing here touches widgets, files or global state, so tests can inspect ``fig.to_dict()`` and the panels
in :mod:`samoyeds_lab.viz.panels` can copy the result into a ``FigureWidget``.

Large matrices are cropped (top-left corner, the size is said in the title) rather than averaged: a mask
averaged over cells no longer shows its pattern.
"""

from __future__ import annotations

import math
import textwrap
from typing import Mapping, Sequence

import plotly.graph_objects as go
import torch

from ._axes import log_axis, positive_range
from .palette import CONCEPTS, FAMILIES
from .._checks import check_int, check_positive_int, check_tensor
from ._args import check_optional_positive_int, check_str_keys, check_text

__all__ = [
    "COLORS",
    "activation_scale_figure",
    "bytes_bar",
    "decode_metadata_word",
    "error_bar",
    "mask_heatmap",
    "message_figure",
    "metadata_word_figure",
    "values_heatmap",
]

#: Hex colours shared by every sparsity figure.
COLORS: dict[str, str] = {
    "kept": "#1d4ed8",
    "pruned": "#e5e7eb",
    "grid": "#94a3b8",
    "highlight": "#f59e0b",
    "negative": "#b91c1c",
    "zero": "#f8fafc",
    "positive": "#1d4ed8",
    "first_0": "#dbeafe",  # metadata bits[1:0] (first kept position), bit = 0
    "first_1": "#3b82f6",  # ... bit = 1
    "second_0": "#fef3c7",  # metadata bits[3:2] (second kept position), bit = 0
    "second_1": "#d97706",  # ... bit = 1
    "illegal": "#dc2626",
    "dense": CONCEPTS["dense"],
    "csr": CONCEPTS["unstructured"],
    "nm": CONCEPTS["2:4"],
    "venom": CONCEPTS["venom"],
    "samoyeds": CONCEPTS["samoyeds"],
    "other": "#475569",
    "magnitude": FAMILIES["method"]["magnitude"],
    "wanda": FAMILIES["method"]["wanda"],
    "obs": FAMILIES["method"]["obs"],
    "text": "#111827",
    "muted": "#71717a",
}

_FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=12, color=COLORS["text"])
_AXIS = dict(gridcolor="#e5e7eb", linecolor="#d1d5db", zerolinecolor="#d1d5db", ticks="outside",
             tickcolor="#d1d5db", automargin=True)
# NOTE: a small explicit template instead of "plotly_white": building the named template deep-copies
# it on every figure (~20 ms each), which alone would break the panel's 0.3 s budget.
_TEMPLATE = dict(layout=dict(paper_bgcolor="#ffffff", plot_bgcolor="#ffffff", font=_FONT, xaxis=_AXIS,
                             yaxis=_AXIS, hoverlabel=dict(font=dict(family=_FONT["family"])),
                             colorway=["#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2"]))
# NOTE: uniformtext: a bar label that would have to shrink below 9 px to fit is hidden (its value stays in
# the hover), instead of plotly's default of shrinking it to an unreadable 5-6 px
_BASE_LAYOUT = dict(template=_TEMPLATE, font=_FONT, margin=dict(l=60, r=20, t=60, b=40),
                    uniformtext=dict(minsize=9, mode="hide"))


# ---------------------------------------------------------------------------------------------- helpers
def _as_2d(name: str, t: object) -> torch.Tensor:
    """A non-empty 2-D real tensor, detached on the CPU (a figure of an empty matrix shows nothing)."""
    t = check_tensor(name, t, ndim=2, nonempty=True)
    if t.is_complex():
        raise TypeError(f"{name}: expected a real tensor, got {t.dtype}")
    return t.detach().cpu()


def _check_crop(max_rows: int, max_cols: int) -> None:
    check_positive_int("max_rows", max_rows)
    check_positive_int("max_cols", max_cols)


def _check_groups(group_cols: object, group_rows: object = None) -> None:
    check_optional_positive_int("group_cols", group_cols)
    check_optional_positive_int("group_rows", group_rows)


def _check_highlight(highlight: object, rows: int, cols: int) -> tuple[int, int, int, int]:
    """A half-open box ``(row0, row1, col0, col1)`` inside a ``rows × cols`` matrix, non-empty."""
    if isinstance(highlight, (str, bytes)) or not isinstance(highlight, Sequence):
        raise TypeError(f"highlight: expected a (row0, row1, col0, col1) tuple, got {type(highlight).__name__}")
    if len(highlight) != 4:
        raise ValueError(f"highlight: expected (row0, row1, col0, col1), got {highlight!r}")
    r0, r1, c0, c1 = (check_int(f"highlight[{i}]", v) for i, v in enumerate(highlight))
    if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
        raise ValueError(f"highlight: expected a non-empty box with 0 <= row0 < row1 <= {rows} and "
                         f"0 <= col0 < col1 <= {cols} (the matrix), got {tuple(highlight)!r}")
    return r0, r1, c0, c1


def _crop(t: torch.Tensor, max_rows: int, max_cols: int) -> tuple[torch.Tensor, str]:
    rows, cols = t.shape
    if rows <= max_rows and cols <= max_cols:
        return t, f"{rows}×{cols}"
    r, c = min(rows, max_rows), min(cols, max_cols)
    return t[:r, :c], f"top-left {r}×{c} of {rows}×{cols}"


def _layout(**kw: object) -> dict:
    """The shared layout updated with ``kw``.

    Axes always say whether they are visible, so a ``FigureWidget`` that goes from a message figure
    (hidden axes) to a chart by relayout shows its axes again.
    """
    out = dict(_BASE_LAYOUT, showlegend=False, title=dict(text=""), height=320)
    out.update(kw)
    for axis in ("xaxis", "yaxis"):
        out[axis] = {"visible": True, **out.get(axis, {})}  # type: ignore[dict-item]
    return out


def _matrix_axes(rows: int, cols: int, xtitle: str = "column (K, input feature)") -> dict:
    """Layout entries for a matrix: rows downwards, square cells."""
    return dict(
        xaxis=dict(title=dict(text=xtitle), range=[-0.5, cols - 0.5], showgrid=False, zeroline=False,
                   constrain="domain"),
        yaxis=dict(title=dict(text="row (output feature)"), range=[rows - 0.5, -0.5], showgrid=False,
                   zeroline=False, scaleanchor="x", scaleratio=1, constrain="domain"),
    )


def _separators(rows: int, cols: int, group_cols: int | None, group_rows: int | None) -> list[dict]:
    """Thin lines between column groups (every ``group_cols``) and row groups (every ``group_rows``).

    At most 31 column and 15 row separators are drawn. All lines are one SVG path shape (one shape per
    line would make plotly slow for big grids).
    """
    segments: list[str] = []
    # NOTE: beyond ~32 lines a separator grid hides the cells it should delimit; leave it out then.
    if group_cols and 0 < group_cols < cols and cols // group_cols <= 32:
        segments += [f"M{c - 0.5},-0.5V{rows - 0.5}" for c in range(group_cols, cols, group_cols)]
    if group_rows and 0 < group_rows < rows and rows // group_rows <= 16:
        segments += [f"M-0.5,{r - 0.5}H{cols - 0.5}" for r in range(group_rows, rows, group_rows)]
    if not segments:
        return []
    return [dict(type="path", path="".join(segments), line=dict(color=COLORS["grid"], width=1), layer="above")]


# ---------------------------------------------------------------------------------------------- figures
def message_figure(text: str, *, title: str = "", height: int = 260, wrap: int = 64) -> go.Figure:
    """An empty figure that shows ``text`` in its centre (used when a setting has nothing to plot).

    Parameters
    ----------
    text : str
        The message; ``<br>`` breaks lines, and lines longer than ``wrap`` characters are broken at
        spaces (plotly does not wrap annotations by itself).
    title : str
        Optional figure title.
    height : int
        Figure height in pixels.
    """
    check_text("text", text)
    check_text("title", title)
    check_positive_int("height", height)
    check_positive_int("wrap", wrap)
    text = "<br>".join(
        "<br>".join(textwrap.wrap(line, wrap, break_long_words=False) or [""]) for line in text.split("<br>")
    )
    return go.Figure(layout=_layout(
        title=dict(text=title),
        height=height,
        annotations=[dict(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                          font=dict(size=14, color=COLORS["muted"]), align="center")],
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
    ))


def mask_heatmap(
    mask: torch.Tensor,
    *,
    title: str = "Mask",
    group_cols: int | None = None,
    group_rows: int | None = None,
    highlight: tuple[int, int, int, int] | None = None,
    max_rows: int = 64,
    max_cols: int = 128,
    height: int | None = None,
) -> go.Figure:
    """Heatmap of a keep-mask: kept cells in blue, pruned cells in light grey.

    Parameters
    ----------
    mask : torch.Tensor
        ``[rows, cols]`` bool (or 0/1) tensor; nonzero = kept.
    title : str
        Figure title; the density ``kept / (rows·cols)`` and the shown size are appended.
    group_cols, group_rows : int, optional
        Draw separators every ``group_cols`` columns (e.g. ``m`` of N:M) and every ``group_rows`` rows
        (e.g. the Samoyeds row group).
    highlight : (row0, row1, col0, col1), optional
        Outline the half-open box ``rows row0..row1-1 × cols col0..col1-1`` (e.g. one metadata word).
    max_rows, max_cols : int
        Larger masks are cropped to their top-left corner.
    height : int, optional
        Figure height in pixels (default: from the number of rows shown).
    """
    mask = check_tensor("mask", _as_2d("mask", mask), finite=True)
    _check_crop(max_rows, max_cols)
    _check_groups(group_cols, group_rows)
    check_optional_positive_int("height", height)
    check_text("title", title)
    box = None if highlight is None else _check_highlight(highlight, *mask.shape)
    keep = mask != 0
    density = float(keep.float().mean()) if keep.numel() else 0.0
    shown, what = _crop(keep, max_rows, max_cols)
    rows, cols = shown.shape
    trace = go.Heatmap(
        z=shown.to(torch.int8).numpy(),
        zmin=0,
        zmax=1,
        colorscale=[[0.0, COLORS["pruned"]], [0.5, COLORS["pruned"]], [0.5, COLORS["kept"]],
                    [1.0, COLORS["kept"]]],
        showscale=False,
        xgap=1 if cols <= 64 else 0,
        ygap=1 if rows <= 64 else 0,
        hovertemplate="row %{y}, col %{x}: %{z} (1 = kept, 0 = pruned)<extra></extra>",
    )
    shapes = _separators(rows, cols, group_cols, group_rows)
    if box is not None:
        r0, r1, c0, c1 = box
        r1, c1 = min(r1, rows), min(c1, cols)  # the box may reach beyond the shown crop
        if r0 < r1 and c0 < c1:
            shapes.append(dict(type="rect", x0=c0 - 0.5, x1=c1 - 0.5, y0=r0 - 0.5, y1=r1 - 0.5,
                               line=dict(color=COLORS["highlight"], width=3), layer="above"))
    return go.Figure(trace, layout=_layout(
        title=dict(text=f"{title}<br><sup>density {density:.1%} · {what}</sup>"),
        shapes=shapes,
        height=height or int(min(520, max(220, 120 + rows * 480 / max(cols, 1)))),
        **_matrix_axes(rows, cols),
    ))


def values_heatmap(
    values: torch.Tensor,
    *,
    title: str = "Kept values (compressed)",
    group_cols: int | None = None,
    max_rows: int = 64,
    max_cols: int = 128,
    height: int | None = None,
) -> go.Figure:
    """Heatmap of a compressed value array on a zero-centred diverging scale (red < 0 < blue).

    Parameters
    ----------
    values : torch.Tensor
        ``[rows, kept]`` float tensor, e.g. ``NMWeight.values``; stored padding zeros show white, NaN cells
        are left blank (e.g. the unused tail of ragged CSR rows).
    title : str
        Figure title; the shape and the shown crop are appended.
    group_cols : int, optional
        Separators every ``group_cols`` compressed columns (``n`` for N:M: one group's kept values).
    max_rows, max_cols, height
        As in :func:`mask_heatmap`.
    """
    values = _as_2d("values", values)
    _check_crop(max_rows, max_cols)
    _check_groups(group_cols)
    check_optional_positive_int("height", height)
    check_text("title", title)
    if values.is_complex() or not (values.is_floating_point() or values.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"values: expected a real float tensor, got {values.dtype}")
    if values.is_floating_point():
        # NaN is a blank cell (documented); ±inf has no colour, and an all-blank matrix shows nothing
        n_inf = int(torch.isinf(values).sum())
        if n_inf:
            raise ValueError(f"values: expected finite values (NaN for a blank cell), got {n_inf} inf of "
                             f"{values.numel()}")
        if bool(torch.isnan(values).all()):
            raise ValueError(f"values: expected at least one finite value, got all {values.numel()} NaN")
    shown, what = _crop(values.float(), max_rows, max_cols)
    rows, cols = shown.shape
    finite = shown[torch.isfinite(shown)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    bound = bound or 1.0
    trace = go.Heatmap(
        z=shown.numpy(),
        zmin=-bound,
        zmax=bound,
        zmid=0.0,
        colorscale=[[0.0, COLORS["negative"]], [0.5, COLORS["zero"]], [1.0, COLORS["positive"]]],
        colorbar=dict(title=dict(text="value"), thickness=12),
        xgap=1 if cols <= 64 else 0,
        ygap=1 if rows <= 64 else 0,
        hovertemplate="row %{y}, stored slot %{x}: %{z:.4g}<extra></extra>",
    )
    return go.Figure(trace, layout=_layout(
        title=dict(text=f"{title}<br><sup>stored array {tuple(values.shape)} · {what}</sup>"),
        shapes=_separators(rows, cols, group_cols, None),
        height=height or int(min(520, max(220, 120 + rows * 480 / max(cols, 1)))),
        **_matrix_axes(rows, cols, "stored slot (compressed column)"),
    ))


def decode_metadata_word(word: int) -> list[tuple[int, int]]:
    """Decode one 32-bit 2:4 metadata word into the kept positions of its 8 groups.

    Group ``j`` (dense columns ``4j … 4j+3`` of the word's 32) is nibble ``(word >> 4j) & 0xF``;
    ``bits[1:0]`` = first kept position, ``bits[3:2]`` = second.

    Returns
    -------
    list of 8 ``(first, second)`` tuples, group 0 first.
    """
    word = _check_word(word)
    return [(((word >> (4 * j)) & 0x3), ((word >> (4 * j + 2)) & 0x3)) for j in range(8)]


def _check_word(word: object) -> int:
    if isinstance(word, torch.Tensor):
        if word.numel() != 1:
            raise ValueError(f"word: expected one 32-bit word, got a tensor of shape {tuple(word.shape)}")
        if word.is_floating_point() or word.is_complex() or word.dtype == torch.bool:
            raise TypeError(f"word: expected an integer tensor (one uint32 metadata word), got {word.dtype}")
        word = int(word.to(torch.int64).item()) if word.dtype != torch.uint32 else int(word.item())
    if isinstance(word, bool) or not isinstance(word, int):
        try:
            import numpy as np

            if not isinstance(word, np.integer):
                raise TypeError
            word = int(word)
        except TypeError:
            raise TypeError(f"word: expected an int (one uint32 metadata word), got {type(word).__name__}") from None
    if not 0 <= word < 2**32:
        raise ValueError(f"word: expected 0 <= word < 2**32, got {word}")
    return word


def metadata_word_figure(
    word: int,
    *,
    col_offset: int = 0,
    col_label: str = "col",
    title: str | None = None,
    subtitle: str | None = None,
) -> go.Figure:
    """The 32 bits of one 2:4 metadata word as a 2×16 grid, with the kept positions of each group.

    The grid reads like the hex literal: bit 31 top-left, bit 0 bottom-right; the top row holds groups
    7…4 (bits 31–16), the bottom row groups 3…0 (bits 15–0). Inside each 4-bit nibble the low two bits
    (``bits[1:0]``, blue) give the first kept position and the high two bits (``bits[3:2]``, amber) the
    second. Each nibble is labelled ``g{j}: (p0, p1)``; a nibble whose positions are not strictly
    ascending (not a legal ordered 2:4 nibble) is labelled in red.

    Parameters
    ----------
    word : int
        The metadata word, ``0 <= word < 2**32`` (a 1-element tensor is accepted).
    col_offset : int
        Dense column of the word's group 0 (``32·w`` for word ``w``), used for the column labels.
    col_label : str
        What the decoded columns are called (e.g. ``"kept col"`` when the 2:4 runs over gathered columns).
    title : str, optional
        Figure title (default: the word in hex).
    subtitle : str, optional
        Second, smaller title line (default: the colour legend).
    """
    word = _check_word(word)
    check_int("col_offset", col_offset, lo=0)
    check_text("col_label", col_label)
    check_text("title", title, optional=True)
    check_text("subtitle", subtitle, optional=True)
    decoded = decode_metadata_word(word)
    z, text, hover = [], [], []
    for row_bits in (range(31, 15, -1), range(15, -1, -1)):
        zr, tr, hr = [], [], []
        for b in row_bits:
            bit = (word >> b) & 1
            group, field = b // 4, (b % 4) // 2
            zr.append(field * 2 + bit)
            tr.append(str(bit))
            p = decoded[group][field]
            hr.append(f"bit {b} = {bit}<br>group {group} ({'first' if field == 0 else 'second'} position, "
                      f"bits[{4 * group + 2 * field + 1}:{4 * group + 2 * field}] = {p})<br>"
                      f"→ {col_label} {col_offset + 4 * group + p}")
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    scale = [
        [0.0, COLORS["first_0"]], [0.25, COLORS["first_0"]],
        [0.25, COLORS["first_1"]], [0.5, COLORS["first_1"]],
        [0.5, COLORS["second_0"]], [0.75, COLORS["second_0"]],
        [0.75, COLORS["second_1"]], [1.0, COLORS["second_1"]],
    ]
    trace = go.Heatmap(
        z=z,
        zmin=-0.5,
        zmax=3.5,
        colorscale=scale,
        showscale=False,
        text=text,
        texttemplate="%{text}",
        textfont=dict(size=14),
        customdata=hover,
        hovertemplate="%{customdata}<extra></extra>",
        xgap=2,
        ygap=2,
    )
    annotations = []
    boxes = "".join(f"M{4 * k - 0.5},{r - 0.5}H{4 * k + 3.5}V{r + 0.5}H{4 * k - 0.5}Z"
                    for k in range(4) for r in range(2))  # one outline per nibble
    shapes = [dict(type="path", path=boxes, line=dict(color=COLORS["text"], width=2), layer="above")]
    for j, (p0, p1) in enumerate(decoded):
        row = 0 if j >= 4 else 1
        x = 4 * ((7 - j) if j >= 4 else (3 - j)) + 1.5
        legal = p0 < p1
        c0 = col_offset + 4 * j
        label = f"<b>g{j}</b>: ({p0}, {p1})<br>{col_label} {c0 + p0}, {c0 + p1}" if legal else \
            f"<b>g{j}</b>: ({p0}, {p1}) not ascending"
        annotations.append(dict(
            x=x, y=-0.62 if row == 0 else 1.62, text=label, showarrow=False,
            yanchor="bottom" if row == 0 else "top",
            font=dict(size=11, color=COLORS["text"] if legal else COLORS["illegal"]),
        ))
    return go.Figure(trace, layout=_layout(
        margin=dict(l=90, r=20, t=80, b=40),
        title=dict(text=f"{title or f'Metadata word 0x{word:08X}'}<br><sup>{subtitle or _WORD_LEGEND}</sup>"),
        shapes=shapes,
        annotations=annotations,
        height=300,
        xaxis=dict(visible=False, range=[-0.6, 15.6]),
        yaxis=dict(range=[2.6, -1.6], tickmode="array", tickvals=[0, 1], ticktext=["bits 31–16", "bits 15–0"],
                   showgrid=False, zeroline=False),
    ))


_WORD_LEGEND = "blue: bits[1:0] first kept position · amber: bits[3:2] second · bit 0 is bottom-right"


def _format_color(label: str) -> str:
    low = label.lower()
    for key, colour in (("samoyeds", "samoyeds"), ("venom", "venom"), ("csr", "csr"), ("dense", "dense"),
                        (":", "nm")):
        if key in low:
            return COLORS[colour]
    return COLORS["other"]


def _unit(nbytes: float) -> tuple[float, str]:
    for scale, unit in ((2**20, "MiB"), (2**10, "KiB")):
        if nbytes >= scale:
            return float(scale), unit
    return 1.0, "B"


def bytes_bar(
    formats: Mapping[str, int],
    dense_bytes: int,
    *,
    highlight: str | Sequence[str] | None = None,
    title: str = "Bytes per format vs dense fp16",
) -> go.Figure:
    """Horizontal bars of the bytes each format needs, labelled with their fraction of dense fp16.

    Parameters
    ----------
    formats : mapping of label → bytes
        E.g. ``{"2:4": nm.nbytes, "Samoyeds 1:2 V=128": sw.nbytes}`` (use each format's ``.nbytes``).
        Bars keep the mapping's order, top to bottom.
    dense_bytes : int
        Bytes of the dense fp16 matrix, ``rows·cols·2``; drawn as a dashed reference line.
    highlight : str or list of str, optional
        Labels whose bars get an amber outline (e.g. the format selected in a panel).
    title : str
        Figure title.
    """
    if not isinstance(formats, Mapping) or not formats:
        raise ValueError(f"formats: expected a non-empty mapping of label -> bytes, got {formats!r}")
    check_str_keys("formats", formats, "format labels")
    check_text("title", title)
    for label, b in formats.items():
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise ValueError(f"formats[{label!r}]: expected a non-negative int number of bytes, got {b!r}")
    if isinstance(dense_bytes, bool) or not isinstance(dense_bytes, int) or dense_bytes <= 0:
        raise ValueError(f"dense_bytes: expected a positive int, got {dense_bytes!r}")
    if highlight is not None and not isinstance(highlight, str) and not (
            isinstance(highlight, (list, tuple, set, frozenset)) and all(isinstance(h, str) for h in highlight)):
        raise TypeError(f"highlight: expected a label or a list of labels (str), got {type(highlight).__name__}")
    marked = {highlight} if isinstance(highlight, str) else set(highlight or ())
    unknown = marked - set(formats)
    if unknown:
        raise ValueError(f"highlight: expected labels from formats {list(formats)}, got {sorted(unknown)}")
    labels = list(formats)
    nbytes = [formats[k] for k in labels]
    scale, unit = _unit(max(max(nbytes), dense_bytes))
    trace = go.Bar(
        y=labels,
        x=[b / scale for b in nbytes],
        orientation="h",
        marker=dict(
            color=[_format_color(k) for k in labels],
            line=dict(color=[COLORS["highlight"] if k in marked else "#ffffff" for k in labels],
                      width=[4 if k in marked else 0 for k in labels]),
        ),
        text=[f"{b / dense_bytes:.1%}" for b in nbytes],
        textposition="outside",
        customdata=[[b, b / dense_bytes] for b in nbytes],
        hovertemplate="%{y}: %{customdata[0]:,} bytes (%{customdata[1]:.1%} of dense fp16)<extra></extra>",
        cliponaxis=False,
    )
    x_dense = dense_bytes / scale
    return go.Figure(trace, layout=_layout(
        margin=dict(l=170, r=60, t=70, b=50),
        title=dict(text=title),
        height=max(240, 80 + 34 * len(labels)),
        showlegend=False,
        shapes=[dict(type="line", x0=x_dense, x1=x_dense, y0=0, y1=1, yref="paper",
                     line=dict(color=COLORS["dense"], dash="dash", width=1.5))],
        annotations=[dict(x=x_dense, y=1, yref="paper", text="dense fp16", showarrow=False, yanchor="bottom",
                          font=dict(color=COLORS["muted"]))],
        yaxis=dict(autorange="reversed", title=dict(text="")),
        xaxis=dict(title=dict(text=f"size ({unit})"), range=[0, 1.18 * max(max(nbytes), dense_bytes) / scale]),
    ))


def error_bar(
    errors: Mapping[str, Mapping[str, float]],
    *,
    highlight: str | None = None,
    title: str = "Reconstruction error (relative Frobenius norm)",
) -> go.Figure:
    """Grouped bars of reconstruction errors: one colour per pruning method, one group per metric.

    Parameters
    ----------
    errors : mapping method → (mapping metric → error)
        E.g. ``{"magnitude": {"weight": 0.41, "output": 0.38}, "wanda": {...}}`` with relative errors such as
        ``‖W − W⊙mask‖_F / ‖W‖_F`` (weight) and ``‖X Wᵀ − X (W⊙mask)ᵀ‖_F / ‖X Wᵀ‖_F``
        (output).
        Every method must list the same metrics.
    highlight : str, optional
        A method drawn with an amber outline (the one selected in a panel).
    title : str
        Figure title.
    """
    if not isinstance(errors, Mapping) or not errors:
        raise ValueError(f"errors: expected a non-empty mapping method -> {{metric: error}}, got {errors!r}")
    check_str_keys("errors", errors, "method names")
    check_text("title", title)
    metrics: list[str] | None = None
    for method, per in errors.items():
        if not isinstance(per, Mapping) or not per:
            raise ValueError(f"errors[{method!r}]: expected a non-empty mapping metric -> error, got {per!r}")
        if metrics is None:
            metrics = list(per)
        elif list(per) != metrics:
            raise ValueError(f"errors[{method!r}]: expected metrics {metrics}, got {list(per)}")
        for metric, v in per.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"errors[{method!r}][{metric!r}]: expected a number, got {v!r}")
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"errors[{method!r}][{metric!r}]: expected a finite error >= 0, got {v!r}")
    check_text("highlight", highlight, optional=True)
    if highlight is not None and highlight not in errors:
        raise ValueError(f"highlight: expected one of {list(errors)}, got {highlight!r}")
    assert metrics is not None
    traces = []
    for method, per in errors.items():
        vals = [float(per[k]) for k in metrics]
        traces.append(go.Bar(
            name=method,
            x=metrics,
            y=vals,
            marker=dict(color=COLORS.get(method.lower(), COLORS["other"]),
                        line=dict(color=COLORS["highlight"] if method == highlight else "#ffffff",
                                  width=4 if method == highlight else 0)),
            text=[f"{v:.3f}" for v in vals],
            textposition="outside",
            cliponaxis=False,
            hovertemplate=f"{method}, %{{x}}: %{{y:.4f}}<extra></extra>",
        ))
    top = max(float(v) for per in errors.values() for v in per.values())
    return go.Figure(traces, layout=_layout(
        title=dict(text=title), barmode="group", height=320, showlegend=True,
        yaxis=dict(title=dict(text="relative error"), range=[0, 1.2 * top if top > 0 else 1]),
    ))


def activation_scale_figure(acts: torch.Tensor, *, title: str = "Activation RMS per input channel") -> go.Figure:
    """Per-channel RMS ``sqrt(mean_t X[t, j]²)`` of activations ``X [tokens, channels]``, one dot per channel.

    The y axis is logarithmic, so a few outlier channels (many times above the rest, as observed in
    LLMs) stand out; channels with an RMS above 6× the median are drawn as a second, amber trace
    named "outliers" (the first trace, "channels", holds the others).
    """
    acts = _as_2d("acts", acts)
    if not acts.is_floating_point():
        raise TypeError(f"acts: expected a float tensor, got {acts.dtype}")
    check_tensor("acts", acts, finite=True)
    check_text("title", title)
    rms = acts.float().pow(2).mean(0).sqrt()
    med = float(rms.median()) if rms.numel() else 0.0
    outlier = rms > 6 * med if med > 0 else torch.zeros(rms.shape, dtype=torch.bool)
    idx = torch.arange(rms.numel())
    traces = [
        go.Scatter(x=idx[mask].numpy(), y=rms[mask].numpy(), mode="markers", name=name,
                   marker=dict(color=colour, size=size, line=dict(width=0)),
                   hovertemplate="channel %{x}: RMS %{y:.3g}<extra></extra>")
        for name, mask, colour, size in (("channels", ~outlier, COLORS["magnitude"], 4),
                                         ("outliers", outlier, COLORS["wanda"], 9))
    ]
    n_out = int(outlier.sum())
    return go.Figure(traces, layout=_layout(
        title=dict(text=f"{title}<br><sup>{n_out} outlier channel(s) above 6× the median RMS {med:.3g}</sup>"),
        height=300, showlegend=True, legend=dict(orientation="h", y=-0.3),
        xaxis=dict(title=dict(text="input channel j"), showgrid=False),
        yaxis=(log_axis("RMS (log)", *rng) if (rng := positive_range(rms.tolist())) else
               dict(title=dict(text="RMS (log)"), type="log")),
    ))
