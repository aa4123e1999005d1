"""The SSMM kernel's own ideas, stepped: accumulators flushed at V-window boundaries, token ids as B addresses,
and the bytes of the fused kernel vs a separate gather pass.

Pure figure builders over :func:`samoyeds_lab.reference.stepper.ssmm_steps`,
:func:`~samoyeds_lab.reference.stepper.gather_plan` and :func:`samoyeds_lab.bench.fusion.fusion_costs`,
and :class:`StepPanel`, a slider over the step index.
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from .._checks import check_int
from ..bench.fusion import FUSION_LABELS, FUSION_PATHS, PathCost
from ..formats import SENTINEL
from ..reference.stepper import GatherPlan, KStep
from .panels import _copy_into
from .sparsity import _TEMPLATE, COLORS

__all__ = ["step_table", "step_output_figure", "step_lines", "gather_table", "fusion_bytes_figure", "StepPanel",
           "STEP_FIGURES"]

#: The figures of one step view.
STEP_FIGURES = ("table", "output")
_FILL = {"flush": "#fef3c7", "live": "#dbeafe", "head": "#e5e7eb", "none": "#ffffff", "sentinel": "#fee2e2"}
_BYTE_PARTS = (("weight_bytes", "weight operand", "#334155"), ("x_bytes", "rows of x read", "#0f766e"),
               ("copy_bytes", "gathered copy xg (written + read back)", COLORS["illegal"]),
               ("index_bytes", "token ids", "#ca8a04"), ("output_bytes", "output", COLORS["muted"]))


def _check_steps(steps: object) -> list[KStep]:
    if not isinstance(steps, (list, tuple)) or not steps or not all(isinstance(s, KStep) for s in steps):
        raise TypeError(f"steps: expected a non-empty list of KStep (from ssmm_steps), got {type(steps).__name__}")
    return list(steps)


def _check_index(steps: list[KStep], step: object) -> int:
    return check_int("step", step, lo=0, hi=len(steps) - 1)


def _fmt(v: float) -> str:
    return f"{v:g}"


def _token_label(t: int) -> str:
    return "SENTINEL" if t == SENTINEL else f"x[{t}]"


def step_lines(steps: list[KStep], step: int) -> list[str]:
    """The step in words, one line per compressed row (what the lab prints above the figures)."""
    steps = _check_steps(steps)
    s = steps[_check_index(steps, step)]
    what = "FLUSH: add each accumulator into its window's output row, then zero it" if s.flush else \
        "accumulate (the window goes on in the next k-step)"
    lines = [f"step {s.index}: block {s.block}, k-step {s.kstep}, columns {s.cols[0]}–{s.cols[1] - 1}, "
             f"window {s.window} — {what}"]
    for j, c in enumerate(s.crows.tolist()):
        acc = ", ".join(_fmt(v) for v in s.acc[j].tolist())
        lines.append(f"  compressed row {c} (group r = {int(s.group[j])}): live accumulator -> output row "
                     f"{int(s.dense_row[j])} = {s.row_group}·{int(s.group[j])} + "
                     f"{int(s.row_in_group[j])}; acc per token = [{acc}]")
    return lines


def step_table(steps: list[KStep], step: int) -> go.Figure:
    """One row per compressed row: its group, this window's row index, where its live accumulator lands,
    and the accumulator per token after this step's ``mma.sp`` (amber: flushed this step)."""
    steps = _check_steps(steps)
    s = steps[_check_index(steps, step)]
    slots = s.slots.tolist()
    tok = [_token_label(int(s.b_tokens[n - s.slots[0]])) if s.slots.numel() else "" for n in slots]
    head = ["compressed row c", "group r", f"row index (window {s.window})", "accumulator lands in"] + \
        [f"acc · {t}" for t in tok]
    n = s.crows.numel()
    cells = [s.crows.tolist(), s.group.tolist(), s.row_in_group.tolist(),
             [f"output row {int(d)}" for d in s.dense_row.tolist()]]
    cells += [[_fmt(v) for v in s.acc[:, j].tolist()] for j in range(len(slots))]
    fill = _FILL["flush"] if s.flush else _FILL["live"]
    state = "flushed and zeroed" if s.flush else "live (kept in registers)"
    fig = go.Figure(go.Table(
        header=dict(values=head, fill_color=_FILL["head"], align="center", font=dict(size=12)),
        cells=dict(values=cells, fill_color=[[fill] * n] * len(cells), align="center", height=26, font=dict(size=12)),
        columnwidth=[1.2, 0.8, 1.3, 1.5] + [0.9] * len(slots),
    ))
    fig.update_layout(template=_TEMPLATE, height=120 + 30 * n, width=980, margin=dict(l=10, r=10, t=70, b=10),
                      title=dict(text=f"Step {s.index}: k-step {s.kstep} (columns {s.cols[0]}–{s.cols[1] - 1}), "
                                      f"window {s.window}<br><sup>accumulators {state}</sup>", x=0.01))
    return fig


def step_output_figure(steps: list[KStep], step: int) -> go.Figure:
    """The output ``Yᵀ`` (dense row x token slot) after the step: grey not written yet, blue written by an
    earlier flush, amber added to in this step; the cell text is the value so far."""
    steps = _check_steps(steps)
    i = _check_index(steps, step)
    s = steps[i]
    rows, ntok = s.out.shape[1], s.out.shape[0]
    state = torch.zeros(rows, ntok)
    for p in steps[: i + 1]:
        if p.flush and p.slots.numel():
            code = 2.0 if p.index == i else 1.0
            for r in p.dense_row.tolist():
                state[r, p.slots] = torch.maximum(state[r, p.slots], torch.full((p.slots.numel(),), code))
    text = [[_fmt(float(s.out[t, r])) for t in range(ntok)] for r in range(rows)]
    colorscale = [[0, "#f1f5f9"], [0.33, "#f1f5f9"], [0.34, "#bfdbfe"], [0.66, "#bfdbfe"], [0.67, "#fcd34d"],
                  [1, "#fcd34d"]]
    fig = go.Figure(go.Heatmap(
        z=state.tolist(), zmin=0, zmax=2, colorscale=colorscale, showscale=False, text=text,
        texttemplate="%{text}", textfont=dict(size=12), xgap=2, ygap=2,
        x=[f"slot {t}" for t in range(ntok)], y=[f"row {r}" for r in range(rows)],
        hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title="output row (dense)")
    fig.update_xaxes(title="token slot (output row of the SSMM)", side="bottom")
    fig.update_layout(template=_TEMPLATE, height=110 + 34 * rows, width=640, margin=dict(l=80, r=10, t=70, b=50),
                      title=dict(text=f"Output after step {i}<br><sup>grey: not written · blue: earlier flush · "
                                      f"amber: this step's flush</sup>", x=0.01))
    return fig


def gather_table(plan: GatherPlan, *, listed: int | None = None) -> go.Figure:
    """The first token tile's B loads: per slot, the row of ``x`` the fused kernel reads (its token id) vs
    the rows the separate path copies and then reads. ``listed`` rows are shown (default: up to the last
    real slot + 1, at most 16)."""
    if not isinstance(plan, GatherPlan):
        raise TypeError(f"plan: expected a GatherPlan (from gather_plan), got {type(plan).__name__}")
    real = plan.real.nonzero().flatten()
    default = min(16, max(int(real.max()) + 2 if real.numel() else 1, 1))
    listed = default if listed is None else check_int("listed", listed, lo=1, hi=plan.token_ids.numel())
    ids = plan.token_ids[:listed].tolist()
    k = f"{plan.loads[0].cols[0]}–{plan.loads[0].cols[1] - 1}" if plan.loads else ""
    fused = [f"x[{t}, {k}]" if t != SENTINEL else "nothing (zero-filled)" for t in ids]
    gather = [f"xg[{n}] ← x[{t}]" if t != SENTINEL else f"xg[{n}] ← 0" for n, t in enumerate(ids)]
    gemm = [f"xg[{n}, {k}]" for n in range(len(ids))]
    fills = [_FILL["sentinel"] if t == SENTINEL else _FILL["none"] for t in ids]
    fig = go.Figure(go.Table(
        header=dict(values=["slot n", "token id", "fused SSMM: B load reads", "separate: gather pass writes",
                            "separate: GEMM's B load reads"], fill_color=_FILL["head"], font=dict(size=12)),
        cells=dict(values=[list(range(len(ids))), [str(t) for t in ids], fused, gather, gemm],
                   fill_color=[fills] * 5, height=26, font=dict(size=12)),
        columnwidth=[0.6, 0.8, 1.6, 1.6, 1.6],
    ))
    fb, sb = plan.fused_bytes["total"], plan.separate_bytes["total"]
    fig.update_layout(template=_TEMPLATE, width=980, height=130 + 28 * len(ids), margin=dict(l=10, r=10, t=80, b=10),
                      title=dict(text=f"B tile 0, k-step 0: the token ids are the load addresses<br><sup>activation "
                                      f"bytes: fused {fb:,} B · separate {sb:,} B (the copy xg written and read "
                                      f"back)</sup>", x=0.01))
    return fig


def fusion_bytes_figure(costs: dict[int, dict[str, PathCost]]) -> go.Figure:
    """Stacked HBM bytes of the four paths at each token count, modelled time written on each bar."""
    if not isinstance(costs, dict) or not costs:
        raise TypeError(f"costs: expected {{tokens: fusion_costs(...)}} (a non-empty dict), got {type(costs).__name__}")
    for t, c in costs.items():
        ok = isinstance(c, dict) and set(c) == set(FUSION_PATHS) and all(isinstance(v, PathCost) for v in c.values())
        if not ok:
            raise ValueError(f"costs: expected fusion_costs(...) for every token count, "
                             f"got {type(c).__name__} at {t!r}")
    first = next(iter(next(iter(costs.values())).values()))
    short = {"dense+gather": "dense + gather", "2:4+gather": "2:4 + gather", "samoyeds+gather": "Samoyeds + gather",
             "samoyeds fused": "Samoyeds fused"}
    ycat = [[f"{t} tokens" for t in costs for _ in FUSION_PATHS], [short[p] for _ in costs for p in FUSION_PATHS]]
    fig = go.Figure()
    for attr, label, color in _BYTE_PARTS:
        fig.add_trace(go.Bar(orientation="h", name=label, marker_color=color, y=ycat,
                             x=[getattr(c[p], attr) / 1e6 for c in costs.values() for p in FUSION_PATHS],
                             hovertemplate="%{y}: %{x:.2f} MB<extra>" + label + "</extra>"))
    totals = [c[p].bytes / 1e6 for c in costs.values() for p in FUSION_PATHS]
    fig.add_trace(go.Scatter(y=ycat, x=totals, mode="text", showlegend=False, textposition="middle right",
                             text=[f" {c[p].time_us:,.1f} µs" for c in costs.values() for p in FUSION_PATHS],
                             textfont=dict(size=12), hoverinfo="skip"))
    fig.update_layout(template=_TEMPLATE, barmode="stack", width=980, height=140 + 32 * len(ycat[0]),
                      margin=dict(l=10, r=30, t=80, b=110),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
                      title=dict(text=f"HBM bytes per expert GEMM, {first.m}×{first.k} {first.dtype}<br><sup>modelled "
                                      f"({first.profile}); the time at each bar's end is the roofline ceiling</sup>",
                                 x=0.01))
    fig.update_xaxes(title="MB moved (modelled)", range=[0, max(totals) * 1.22])
    fig.update_yaxes(autorange="reversed")
    return fig


class StepPanel:
    """A slider over the step index of an :func:`~samoyeds_lab.reference.stepper.ssmm_steps` trace.

    :meth:`update` builds :func:`step_table` and :func:`step_output_figure` for the step and copies them into
    ``go.FigureWidget``\\ s; the slider's callback only calls it, so tests drive every step without a browser.
    """

    def __init__(self, steps: list[KStep], *, step: int = 0) -> None:
        self.steps = _check_steps(steps)
        step = _check_index(self.steps, step)
        self.controls = {"step": widgets.IntSlider(
            value=step, min=0, max=len(self.steps) - 1, description="k-step", continuous_update=False,
            style={"description_width": "60px"}, layout=widgets.Layout(width="460px"))}
        self.status = widgets.HTML()
        self.figure_widgets = {name: go.FigureWidget(layout={"template": _TEMPLATE}) for name in STEP_FIGURES}
        self.controls["step"].observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.controls["step"], self.status]),
                                    self.figure_widgets["table"], self.figure_widgets["output"]])
        self.last: dict[str, go.Figure] | None = None
        self.update()  # opens showing its first step

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self, **values) -> dict[str, go.Figure]:
        """Move the slider to ``step`` (if given), rebuild the figures and return them."""
        for name in values:
            if name not in self.controls:
                raise TypeError(f"update: unexpected argument {name!r}; expected some of {list(self.controls)}")
        w = self.controls["step"]
        i = _check_index(self.steps, values.get("step", w.value))
        if w.value != i:
            w.unobserve(self._on_change, names="value")
            try:
                w.value = i
            finally:
                w.observe(self._on_change, names="value")
        figs = {"table": step_table(self.steps, i), "output": step_output_figure(self.steps, i)}
        for name, fig in figs.items():
            _copy_into(self.figure_widgets[name], fig, width=fig.layout.width)
        s = self.steps[i]
        self.status.value = (f"<b>step {i}</b> of {len(self.steps) - 1}: window {s.window}, "
                             + ("<b>flush</b> into rows " + ", ".join(map(str, s.dense_row.tolist()))
                                if s.flush else "accumulate"))
        self.last = figs
        return figs
