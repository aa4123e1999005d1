"""An ipywidgets panel to explore routing traces: hotness, token timeline, locality, transitions, batch shapes.

Like :class:`samoyeds_lab.viz.SparsityPanel`, the logic lives in :meth:`RoutingPanel.update`, which
computes every figure and number from the widget values and returns a :class:`RoutingView`; the widget
callbacks only call it and copy the figures into ``go.FigureWidget``\\ s inside ``batch_update()``, so
tests drive it over every widget's range without a browser. Analytics are cached per (trace, layer) and
(trace, batch size): moving a slider only rebuilds figures.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from ..routing import (
    RoutingTrace,
    TemporalLocality,
    TokensPerExpert,
    coactivation,
    expert_counts,
    expert_frequency,
    imbalance,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)
from ._args import offered
from .panels import _check_update_values, _check_view_fields, _copy_into, _set_quietly
from .routing import (
    coactivation_heatmap,
    hotness_heatmap,
    locality_figure,
    token_timeline,
    tokens_per_expert_figure,
    transition_heatmap,
)
from .sparsity import _TEMPLATE, message_figure

__all__ = ["ROUTING_VIEWS", "RoutingPanel", "RoutingView"]

#: The top-k views: the first choice only, or all k choices.
ROUTING_VIEWS = ("first choice", "all k")
_FIGURES = ("hotness", "timeline", "locality", "transition", "coactivation", "tokens")
#: The settings each figure depends on: a figure is rebuilt only when one of them changes.
_DEPENDS = {
    "hotness": ("trace", "view", "layer"),
    "timeline": ("trace", "view", "layer", "sequence", "offset"),
    "locality": ("trace", "view"),
    "transition": ("trace", "layer"),
    "coactivation": ("trace", "layer"),
    "tokens": ("trace", "layer", "batch"),
}
#: Pixel widths of the figure widgets (two side by side fit a JupyterLab notebook column; the timeline spans it).
_WIDTHS = {"hotness": 480, "timeline": 980, "locality": 480, "transition": 480, "coactivation": 480, "tokens": 480}


@dataclass
class RoutingView:
    """Everything one :meth:`RoutingPanel.update` computed.

    Attributes
    ----------
    settings : dict
        The values used: ``trace, layer, view, batch, sequence, offset``.
    figures : dict[str, go.Figure]
        ``"hotness"``, ``"timeline"``, ``"locality"``, ``"transition"``, ``"coactivation"``, ``"tokens"``.
    summary : str
        One line with the selected layer's numbers.
    rebuilt : tuple of str
        The figures computed afresh (the others were reused from the previous view, unchanged).
    notes : list of str
        What could not be shown as asked and why (the last layer has no transition; a short sequence
        was shown from an earlier offset); empty when everything was.
    usage : torch.Tensor
        float64 ``[L, E]`` share of tokens using each expert in the selected view.
    max_over_mean : float
        Imbalance of the selected layer (all ``k`` choices).
    locality : float, locality_random : float
        The selected layer's repetition rate in the selected view (same first choice, or top-2 sets
        sharing an expert) and its measured-skew random baseline.
    tokens_shown : tuple of int
        ``(first, last + 1)`` trace token indices of the timeline.
    padded_fraction, idle_fraction : float
        Of the selected layer at the selected batch size (``pad_to``-token tiles).
    elapsed_s : float
        Wall time of the computation.
    """

    settings: dict[str, Any]
    figures: dict[str, go.Figure]
    summary: str = ""
    notes: list[str] = field(default_factory=list)
    rebuilt: tuple[str, ...] = _FIGURES
    usage: torch.Tensor | None = None
    max_over_mean: float = 0.0
    locality: float = 0.0
    locality_random: float = 0.0
    tokens_shown: tuple[int, int] = (0, 0)
    padded_fraction: float = 0.0
    idle_fraction: float = 0.0
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        _check_view_fields(self)


def _powers_of_two(upto: int) -> tuple[int, ...]:
    out, b = [], 1
    while b <= upto:
        out.append(b)
        b *= 2
    return tuple(out)


class RoutingPanel:
    """Explore one or more routing traces (e.g. one per corpus domain) widget by widget.

    Widgets: *text* (which trace: ``en``, ``de``, ``code`` or your own), *layer*, *view* (first choice
    vs all ``k``), *batch* (tokens per batch for the tokens-per-expert histogram: 1 is one decode step,
    thousands a prefill; powers of two up to the trace's length), *sequence* (which recorded text window) and *offset* (where in it the
    timeline starts).

    Figures: layer × expert hotness (selected layer outlined), token timeline, temporal locality vs the
    random baselines, first-choice transitions from the selected layer to the next, co-activation in the
    selected layer, tokens per expert per batch with the ``pad_to``-token tile.

    Parameters
    ----------
    traces : mapping str → RoutingTrace
        The traces to choose from; all must have the same layers, ``k`` and ``E``.
    pad_to : int
        Kernel token tile (Samoyeds: 64).
    timeline_tokens : int
        Tokens shown by the timeline at once (the offset slider moves in these steps).
    trace, layer, batch : optional
        Initial selection (default: first trace, layer 0, batch 64 or the largest available).
    """

    def __init__(
        self,
        traces: Mapping[str, RoutingTrace],
        *,
        pad_to: int = 64,
        timeline_tokens: int = 64,
        trace: str | None = None,
        layer: int = 0,
        batch: int | None = None,
    ) -> None:
        if not isinstance(traces, Mapping) or not traces:
            raise ValueError(f"traces: expected a non-empty mapping name -> RoutingTrace, got {traces!r}")
        for name, t in traces.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"traces: expected non-empty str names, got {name!r}")
            if not isinstance(t, RoutingTrace):
                raise TypeError(f"traces[{name!r}]: expected a RoutingTrace, got {type(t).__name__}")
        first = next(iter(traces.values()))
        for name, t in traces.items():
            if (t.layer_names, t.top_k, t.num_experts) != (first.layer_names, first.top_k, first.num_experts):
                raise ValueError(f"traces[{name!r}]: expected the layers, k and E of the first trace "
                                 f"({list(first.layer_names)}, k={first.top_k}, E={first.num_experts}), got "
                                 f"({list(t.layer_names)}, k={t.top_k}, E={t.num_experts})")
            if t.num_tokens < 2:
                raise ValueError(f"traces[{name!r}]: expected at least 2 tokens, got {t.num_tokens}")
        for name, v, lo in (("pad_to", pad_to, 1), ("timeline_tokens", timeline_tokens, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        self.traces = dict(traces)
        self.pad_to = pad_to
        self.timeline_tokens = timeline_tokens
        self.layer_names = first.layer_names
        self.num_layers, self.top_k, self.num_experts = first.num_layers, first.top_k, first.num_experts
        trace = trace if trace is not None else next(iter(self.traces))
        self._check_trace(trace)
        batches = self._batches(trace)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer: expected an int in [0, {self.num_layers}), got {layer!r}")
        if batch is None:
            batch = 64 if 64 in batches else batches[-1]
        if not offered(batch, batches):
            raise ValueError(f"batch: expected one of {batches}, got {batch!r}")
        self._cache: dict[tuple, Any] = {}
        self._busy = False
        self._build_widgets(trace, layer, batch)
        self.last: RoutingView | None = None

    # ------------------------------------------------------------------------------------------ widgets
    def _build_widgets(self, trace: str, layer: int, batch: int) -> None:
        style = {"description_width": "105px"}
        lay = widgets.Layout(width="320px")
        self.controls: dict[str, widgets.ValueWidget] = {
            "trace": widgets.Dropdown(options=list(self.traces), value=trace, description="text", style=style,
                                      layout=lay),
            "layer": widgets.IntSlider(value=layer, min=0, max=self.num_layers - 1, description="layer",
                                       continuous_update=False, style=style, layout=lay),
            "view": widgets.ToggleButtons(options=ROUTING_VIEWS, value=ROUTING_VIEWS[0], description="top-k view",
                                          style={"description_width": "105px", "button_width": "100px"}),
            "batch": widgets.SelectionSlider(options=self._batches(trace), value=batch, description="batch tokens",
                                             continuous_update=False, style=style, layout=lay),
            "sequence": widgets.IntSlider(value=0, min=0, max=self._num_sequences(trace) - 1, description="sequence",
                                          continuous_update=False, style=style, layout=lay),
            "offset": widgets.SelectionSlider(options=self._offsets(trace), value=0, description="offset",
                                              continuous_update=False, style=style, layout=lay),
        }
        self.status = widgets.HTML()
        self.figure_widgets = {name: go.FigureWidget(layout={"template": _TEMPLATE}) for name in _FIGURES}
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        fw = self.figure_widgets
        left = widgets.VBox(list(self.controls.values()), layout=widgets.Layout(min_width="340px"))
        self.widget = widgets.VBox([
            widgets.HBox([left, widgets.VBox([self.status], layout=widgets.Layout(flex="1"))]),
            fw["timeline"],
            widgets.HBox([fw["hotness"], fw["locality"]]),
            widgets.HBox([fw["transition"], fw["coactivation"]]),
            fw["tokens"],
        ])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _check_trace(self, trace: object) -> None:
        if not isinstance(trace, str) or trace not in self.traces:
            raise ValueError(f"trace: expected one of {list(self.traces)}, got {trace!r}")

    def _num_sequences(self, trace: str) -> int:
        return int(self.traces[trace].sequence_lengths.numel())

    def _batches(self, trace: str) -> tuple[int, ...]:
        """Batch sizes offered for ``trace``: powers of two up to its number of tokens."""
        return _powers_of_two(self.traces[trace].num_tokens)

    def _offsets(self, trace: str) -> tuple[int, ...]:
        longest = int(self.traces[trace].sequence_lengths.max())
        return tuple(range(0, longest, self.timeline_tokens))

    def _on_change(self, change: dict) -> None:
        if self._busy:
            return
        if change["owner"] is self.controls["trace"]:
            self._sync_trace_widgets(change["new"])
        self.update()

    def _sync_trace_widgets(self, trace: str) -> None:
        """Fit the sequence and offset sliders to ``trace`` (keeping their values where possible)."""
        self._busy = True
        try:
            seq, off = self.controls["sequence"], self.controls["offset"]
            n = self._num_sequences(trace)
            seq.value = min(seq.value, n - 1)
            seq.max = n - 1
            opts = self._offsets(trace)
            value = off.value if off.value in opts else 0
            off.options = opts
            off.value = value
            bat = self.controls["batch"]
            batches = self._batches(trace)
            value = bat.value if bat.value in batches else batches[-1]  # a short trace: its largest batch
            bat.options = batches
            bat.value = value
        finally:
            self._busy = False

    def values(self) -> dict[str, Any]:
        """The current widget values."""
        return {name: w.value for name, w in self.controls.items()}

    def options(self, trace: str | None = None) -> dict[str, tuple]:
        """Every value each widget can take (what a test sweeps); batch/sequence/offset depend on the trace."""
        trace = trace if trace is not None else self.controls["trace"].value
        return {
            "trace": tuple(self.traces),
            "layer": tuple(range(self.num_layers)),
            "view": ROUTING_VIEWS,
            "batch": self._batches(trace),
            "sequence": tuple(range(self._num_sequences(trace))),
            "offset": self._offsets(trace),
        }

    # ------------------------------------------------------------------------------------------ logic
    def update(self, **values: Any) -> RoutingView:
        """Recompute for the given widget values (the rest from the widgets) and refresh the figures.

        Parameters
        ----------
        **values
            Any of ``trace, layer, view, batch, sequence, offset``; each must be a value its widget
            offers for the chosen trace (see :meth:`options`). The widgets are moved to these values.

        Returns
        -------
        RoutingView

        Raises
        ------
        TypeError, ValueError
            For an unknown name or a value no widget offers.
        """
        trace = values.get("trace", self.controls["trace"].value)
        self._check_trace(trace)
        _check_update_values(values, self.options(trace))
        if trace != self.controls["trace"].value:
            _set_quietly(self, {"trace": trace})
        self._sync_trace_widgets(trace)
        _set_quietly(self, values)
        view = self.compute(**self.values(), previous=self.last)
        self._show(view, self.last)
        self.last = view
        return view

    # cached analytics
    def _get(self, key: tuple, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _usage(self, trace: str, first_only: bool) -> torch.Tensor:
        t = self.traces[trace]
        return self._get(("usage", trace, first_only),
                         lambda: expert_frequency(t, choice=0) if first_only else expert_frequency(t) * t.top_k)

    def _locality(self, trace: str) -> TemporalLocality | None:
        t = self.traces[trace]
        return self._get(("locality", trace), lambda: temporal_locality(t) if bool(t.same_pair_mask().any()) else None)

    def _tpe(self, trace: str, batch: int) -> TokensPerExpert:
        return self._get(("tpe", trace, batch), lambda: tokens_per_expert(self.traces[trace], batch))

    def compute(self, trace: str, layer: int, view: str, batch: int, sequence: int, offset: int, *,
                previous: RoutingView | None = None) -> RoutingView:
        """The pure part of :meth:`update`: build the view for these values without touching widgets.

        Figures of ``previous`` whose settings (see ``_DEPENDS``) are unchanged are reused as they are.
        Each value must be one its widget offers for ``trace`` (see :meth:`options`), as for :meth:`update`.
        """
        t0 = time.perf_counter()
        settings = dict(trace=trace, layer=layer, view=view, batch=batch, sequence=sequence, offset=offset)
        self._check_trace(trace)
        _check_update_values(settings, self.options(trace))
        if previous is not None and not isinstance(previous, RoutingView):
            raise TypeError(f"previous: expected a RoutingView or None, got {type(previous).__name__}")

        def stale(fig: str) -> bool:
            return previous is None or any(previous.settings[s] != settings[s] for s in _DEPENDS[fig])
        t = self.traces[trace]
        first_only = view == ROUTING_VIEWS[0]
        k, E = t.top_k, t.num_experts
        notes: list[str] = []
        figures: dict[str, go.Figure] = {}
        name = self.layer_names[layer]

        usage = self._usage(trace, first_only)
        uniform = 1 / E if first_only else k / E
        which = "first choices" if first_only else f"all {k} choices"
        if stale("hotness"):
            figures["hotness"] = hotness_heatmap(
                usage, uniform=uniform, layer_names=self.layer_names, highlight_layer=layer,
                title=f"Hotness, {trace} ({which})")
        imb = self._get(("imbalance", trace), lambda: imbalance(t))
        max_over_mean = float(imb.max_over_mean[layer])

        # timeline: `timeline_tokens` tokens of sequence `sequence`, from `offset`
        starts = torch.cumsum(t.sequence_lengths, 0) - t.sequence_lengths
        seq_start, seq_len = int(starts[sequence]), int(t.sequence_lengths[sequence])
        off = offset
        if off >= seq_len:
            off = (seq_len - 1) // self.timeline_tokens * self.timeline_tokens
            notes.append(f"sequence {sequence} has only {seq_len} tokens: shown from offset {off} instead of {offset}.")
        a, b = seq_start + off, seq_start + min(seq_len, off + self.timeline_tokens)
        if stale("timeline"):
            figures["timeline"] = token_timeline(
                t.token_ids[a:b], t.topk_ids[:, a:b], num_experts=E, weights=t.weights[:, a:b],
                layer_names=self.layer_names, view="first" if first_only else "all", highlight_layer=layer,
                first_position=off,
                title=f"Token timeline, {trace}, sequence {sequence}, tokens {off}–{off + b - a - 1} ({which})")

        loc = self._locality(trace)
        metric = "first" if first_only or k < 2 else "first_or_second"
        if loc is None:
            figures["locality"] = message_figure("Every sequence of this trace has a single token: no consecutive "
                                                 "pairs to compare.", title="Temporal locality")
            notes.append("no consecutive token pairs in this trace: locality not defined.")
            rate = rnd = float("nan")
        else:
            if stale("locality"):
                figures["locality"] = locality_figure({trace: loc}, layer_names=self.layer_names, metric=metric,
                                                      title=f"Temporal locality, {trace}")
            rate = float(getattr(loc, metric)[layer])
            rnd = float(getattr(loc, f"{metric}_random")[layer])

        if layer < self.num_layers - 1:
            if stale("transition"):
                P = self._get(("transition", trace, layer), lambda: transition_matrix(t, layer))
                rows = self._get(("first_counts", trace), lambda: expert_counts(t, choice=0))[layer]
                figures["transition"] = transition_heatmap(P, layer_from=name, layer_to=self.layer_names[layer + 1],
                                                           row_counts=rows)
        else:
            if stale("transition"):
                figures["transition"] = message_figure(
                    f"{name} is the last MoE layer: there is no next layer to transition to. Pick an earlier layer.",
                    title="First-choice transitions")
            notes.append(f"{name} is the last layer: no transition matrix.")
        if stale("coactivation"):
            C = self._get(("coactivation", trace, layer), lambda: coactivation(t, layer))
            figures["coactivation"] = coactivation_heatmap(C, num_tokens=t.num_tokens, layer_name=name)

        tpe = self._tpe(trace, batch)
        if stale("tokens"):
            figures["tokens"] = tokens_per_expert_figure(tpe.counts[layer], batch_tokens=batch, top_k=k,
                                                         pad_to=self.pad_to, layer_name=name)
        padded = float(tpe.padded_fraction(self.pad_to)[layer])
        idle = float(tpe.idle_fraction()[layer])

        loc_label = "same first choice" if metric == "first" else "top-2 sets share an expert"
        summary = (f"{trace}: {t.num_tokens} tokens · {name}: max/mean load {max_over_mean:.2f} "
                   f"(1 = balanced, worst {E / k:g}) · {loc_label} {rate:.0%} vs {rnd:.0%} random with the "
                   f"same skew · batch {batch}: mean {batch * k / E:g} tokens per expert, "
                   f"{idle:.0%} experts idle, {padded:.0%} of {self.pad_to}-token tile rows are padding")
        rebuilt = tuple(f for f in _FIGURES if f in figures)
        if previous is not None:
            figures = {f: figures[f] if f in figures else previous.figures[f] for f in _FIGURES}
        else:
            figures = {f: figures[f] for f in _FIGURES}
        return RoutingView(settings=settings, figures=figures, rebuilt=rebuilt, summary=summary, notes=notes, usage=usage,
                           max_over_mean=max_over_mean, locality=rate, locality_random=rnd, tokens_shown=(a, b),
                           padded_fraction=padded, idle_fraction=idle, elapsed_s=time.perf_counter() - t0)

    def _show(self, view: RoutingView, previous: RoutingView | None = None) -> None:
        note = "".join(f"<div style='background:#fef3c7;border-left:4px solid #f59e0b;padding:4px 10px;"
                       f"margin-top:4px'>{html.escape(n)}</div>" for n in view.notes)
        self.status.value = (f"<div style='padding:6px 10px;color:#111827'>{html.escape(view.summary)} "
                             f"<span style='color:#6b7280'>({view.elapsed_s * 1000:.0f} ms)</span></div>{note}")
        for name, fig in view.figures.items():
            if previous is not None and name not in view.rebuilt:
                continue
            _copy_into(self.figure_widgets[name], fig, width=_WIDTHS[name])
