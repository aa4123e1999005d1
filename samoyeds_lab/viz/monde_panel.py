"""An ipywidgets panel for MoNDE placement on routing traces: batch size, policy, hardware, link bandwidth.

As in :class:`samoyeds_lab.viz.routing_panel.RoutingPanel`, :meth:`MoNDEPanel.compute` is pure (values →
:class:`MoNDEView` with figures and numbers); :meth:`MoNDEPanel.update` moves the widgets, calls it and copies
the figures into ``go.FigureWidget``\\ s inside ``batch_update()``. Tests drive every widget over its range.

The cost-model expert is Mixtral-8x7B's by default (``P = 3·4096·14336`` parameters, ``d = 4096``, fp16): the
shipped traces come from a tiny model with the same ``E = 8, k = 2`` routing shape, so their tokens per
expert are what a Mixtral layer would see at that batch size if it routed like the tiny model.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..offload.cost import crossover_tokens, gpu_path_cost, near_data_path_cost
from ..offload.hardware import load_profile
from ..offload.placement import POLICIES, Placement, place_layers
from ..routing import RoutingTrace, tokens_per_expert
from .monde import crossover_figure, placement_grid_figure, policy_times_figure, tokens_placement_figure
from .panels import _check_update_values, _copy_into, _set_quietly
from .sparsity import _TEMPLATE

__all__ = ["MoNDEPanel", "MoNDEView", "NearTokensPanel", "NearTokensView", "GPU_PROFILES", "NEAR_PROFILES", "LINK_OPTIONS", "P_MIXTRAL", "D_MIXTRAL"]

#: Mixtral-8x7B expert: three 4096 × 14336 matrices.
P_MIXTRAL = 3 * 4096 * 14336
D_MIXTRAL = 4096
GPU_PROFILES = ("h100_pcie", "h100_sxm", "h200", "a100_sxm", "rtx_4090", "rtx_4070_super")
NEAR_PROFILES = ("cxl_ndp_monde", "host_ddr5")
#: Link bandwidth choices (GB/s); ``0.0`` = the slower of the two profiles' own links.
LINK_OPTIONS: tuple = (("profiles", 0.0), ("8 GB/s", 8.0), ("16 GB/s", 16.0), ("32 GB/s", 32.0),
                       ("64 GB/s", 64.0), ("128 GB/s", 128.0))
_FIGURES = ("tokens", "grid", "policies", "crossover")
_WIDTHS = {"tokens": 480, "grid": 480, "policies": 480, "crossover": 480}
_N = np.unique(np.round(np.logspace(0, 14, 57, base=2)).astype(np.int64))  # 1 … 16384 tokens


@dataclass
class MoNDEView:
    """One :meth:`MoNDEPanel.compute`.

    Attributes
    ----------
    settings : dict
        ``trace, layer, batch, policy, gpu, near, link``.
    figures : dict[str, go.Figure]
        ``"tokens"``, ``"grid"``, ``"policies"``, ``"crossover"``.
    placements : list of Placement
        The selected policy's placement of every layer (first batch of the trace).
    times : dict[str, numpy.ndarray]
        Predicted seconds per layer for every policy.
    crossover : int or None
        Tokens from which moving the weights wins for the selected profiles and link.
    counts : numpy.ndarray
        ``[L, E]`` tokens per expert of the first batch.
    summary : str
    elapsed_s : float
    """

    settings: dict[str, Any]
    figures: dict[str, go.Figure]
    placements: list[Placement] = field(default_factory=list)
    times: dict[str, np.ndarray] = field(default_factory=dict)
    crossover: int | None = None
    counts: np.ndarray | None = None
    summary: str = ""
    elapsed_s: float = 0.0


class MoNDEPanel:
    """Explore hot/cold expert placement on routing traces.

    Widgets: *text* (trace), *layer*, *batch tokens* (powers of two up to 4096 or the trace length),
    *policy* (one of :data:`~samoyeds_lab.offload.placement.POLICIES`), *GPU* and *near-data* profile,
    *link* bandwidth. Figures: the selected layer's tokens per expert coloured by placement with the
    crossover line; the placement of every layer; every policy's predicted time per layer; the crossover
    chart of every GPU profile against the selected near-data device at the selected link.

    Parameters
    ----------
    traces : mapping str → RoutingTrace
    expert_params, d_model : optional
        The cost model's expert size (default Mixtral-8x7B's) and hidden size.
    bytes_per_param : float
        2 (fp16); ≈0.58 for Samoyeds' compressed weights.
    """

    def __init__(self, traces: Mapping[str, RoutingTrace], *, expert_params: float = P_MIXTRAL,
                 d_model: int = D_MIXTRAL, bytes_per_param: float = 2.0, max_batch: int = 4096) -> None:
        if not isinstance(traces, Mapping) or not traces:
            raise ValueError(f"traces: expected a non-empty mapping name -> RoutingTrace, got {traces!r}")
        for name, t in traces.items():
            if not isinstance(t, RoutingTrace):
                raise TypeError(f"traces[{name!r}]: expected a RoutingTrace, got {type(t).__name__}")
        first = next(iter(traces.values()))
        for name, t in traces.items():
            if (t.num_layers, t.num_experts, t.top_k) != (first.num_layers, first.num_experts, first.top_k):
                raise ValueError(f"traces[{name!r}]: expected {first.num_layers} layers, E={first.num_experts}, "
                                 f"k={first.top_k} like the first trace")
        self.traces = dict(traces)
        self.expert_params, self.d_model, self.bytes_per_param = float(expert_params), int(d_model), float(bytes_per_param)
        self.max_batch = max_batch
        self.layer_names = first.layer_names
        self.num_layers = first.num_layers
        self._profiles = {n: load_profile(n) for n in GPU_PROFILES + NEAR_PROFILES}
        self._cache: dict[tuple, Any] = {}
        self._busy = False
        style = {"description_width": "105px"}
        lay = widgets.Layout(width="340px")
        trace = next(iter(self.traces))
        batches = self._batches(trace)
        self.controls: dict[str, widgets.ValueWidget] = {
            "trace": widgets.Dropdown(options=list(self.traces), value=trace, description="text", style=style, layout=lay),
            "layer": widgets.IntSlider(value=0, min=0, max=self.num_layers - 1, description="layer",
                                       continuous_update=False, style=style, layout=lay),
            "batch": widgets.SelectionSlider(options=batches, value=64 if 64 in batches else batches[-1],
                                             description="batch tokens", continuous_update=False, style=style, layout=lay),
            "policy": widgets.Dropdown(options=POLICIES, value="exact", description="policy", style=style, layout=lay),
            "gpu": widgets.Dropdown(options=GPU_PROFILES, value="h100_pcie", description="GPU", style=style, layout=lay),
            "near": widgets.Dropdown(options=NEAR_PROFILES, value="cxl_ndp_monde", description="near data",
                                     style=style, layout=lay),
            "link": widgets.SelectionSlider(options=LINK_OPTIONS, value=0.0, description="link",
                                            continuous_update=False, style=style, layout=lay),
        }
        self.status = widgets.HTML()
        self.figure_widgets = {k: go.FigureWidget(layout={"template": _TEMPLATE}) for k in _FIGURES}
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        fw = self.figure_widgets
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox(list(self.controls.values()), layout=widgets.Layout(flex="0 0 auto")),
                          widgets.VBox([self.status], layout=widgets.Layout(flex="1", min_width="0"))]),
            widgets.HBox([fw["tokens"], fw["grid"]]),
            widgets.HBox([fw["policies"], fw["crossover"]]),
        ])
        self.last: MoNDEView | None = None

    def _batches(self, trace: str) -> tuple[int, ...]:
        n = min(self.traces[trace].num_tokens, self.max_batch)
        out, b = [], 1
        while b <= n:
            out.append(b)
            b *= 2
        return tuple(out)

    def options(self, trace: str | None = None) -> dict[str, tuple]:
        """Every value each widget can take (batch depends on the trace)."""
        trace = trace if trace is not None else self.controls["trace"].value
        return {"trace": tuple(self.traces), "layer": tuple(range(self.num_layers)), "batch": self._batches(trace),
                "policy": POLICIES, "gpu": GPU_PROFILES, "near": NEAR_PROFILES,
                "link": tuple(v for _, v in LINK_OPTIONS)}

    def values(self) -> dict[str, Any]:
        return {k: w.value for k, w in self.controls.items()}

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        if self._busy:
            return
        if change["owner"] is self.controls["trace"]:
            self._sync_batches(change["new"])
        self.update()

    def _sync_batches(self, trace: str) -> None:
        self._busy = True
        try:
            bat = self.controls["batch"]
            opts = self._batches(trace)
            value = bat.value if bat.value in opts else opts[-1]
            bat.options = opts
            bat.value = value
        finally:
            self._busy = False

    def update(self, **values: Any) -> MoNDEView:
        """Move the widgets to ``values`` (names as in :meth:`options`), recompute and refresh the figures."""
        trace = values.get("trace", self.controls["trace"].value)
        if trace not in self.traces:
            raise ValueError(f"trace: expected one of {list(self.traces)}, got {trace!r}")
        _check_update_values(values, self.options(trace))
        _set_quietly(self, {"trace": trace})
        self._sync_batches(trace)
        _set_quietly(self, values)
        view = self.compute(**self.values())
        self.status.value = (f"<div style='padding:6px 10px;color:#111827'>{html.escape(view.summary)} "
                             f"<span style='color:#6b7280'>({view.elapsed_s * 1000:.0f} ms)</span></div>")
        for name, fig in view.figures.items():
            _copy_into(self.figure_widgets[name], fig, width=_WIDTHS[name])
        self.last = view
        return view

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def compute(self, trace: str, layer: int, batch: int, policy: str, gpu: str, near: str, link) -> MoNDEView:
        """The pure part of :meth:`update` (first batch of ``batch`` tokens of the trace)."""
        t0 = time.perf_counter()
        settings = dict(trace=trace, layer=layer, batch=batch, policy=policy, gpu=gpu, near=near, link=link)
        g, m = self._profiles[gpu], self._profiles[near]
        link_arg = None if not link else float(link)
        kw = dict(d_model=self.d_model, link=link_arg, bytes_per_param=self.bytes_per_param)
        counts = self._get(("counts", trace, batch),
                           lambda: tokens_per_expert(self.traces[trace], batch).counts[:, 0, :].numpy())
        times = {}
        placements = {}
        for pol in POLICIES:
            placements[pol] = self._get(("place", trace, batch, pol, gpu, near, link), lambda pol=pol: place_layers(
                counts, self.expert_params, g, m, policy=pol, **kw))
            times[pol] = np.array([p.time for p in placements[pol]])
        chosen = placements[policy]
        x = self._get(("cross", gpu, near, link), lambda: crossover_tokens(g, m, self.expert_params, **kw))
        name = self.layer_names[layer]
        figures = {
            "tokens": tokens_placement_figure(counts[layer], chosen[layer].mask, threshold=x, layer_name=name,
                                              title=f"{name}, batch {batch}: tokens per expert ({policy})"),
            "grid": placement_grid_figure(counts, np.stack([p.mask for p in chosen]), layer_names=list(self.layer_names),
                                          highlight_layer=layer, title=f"Placement per layer ({policy})"),
            "policies": policy_times_figure(times, layer_names=list(self.layer_names),
                                            title=f"Predicted layer time, batch {batch}<br><sup>{gpu} + {near}</sup>"),
        }

        def curves():
            out, xs = {}, {}
            for gp in GPU_PROFILES[:3] + ((gpu,) if gpu not in GPU_PROFILES[:3] else ()):
                pg = self._profiles[gp]
                a = gpu_path_cost(_N, self.expert_params, pg, link=_link(link_arg, pg, m), bytes_per_param=self.bytes_per_param)
                b = near_data_path_cost(_N, self.expert_params, m, d_model=self.d_model, link=_link(link_arg, pg, m),
                                        bytes_per_param=self.bytes_per_param)
                out[gp] = (a.total, b.total)
                xs[gp] = crossover_tokens(pg, m, self.expert_params, **kw)
            return out, xs
        cv, xs = self._get(("curves", gpu, near, link), curves)
        figures["crossover"] = crossover_figure(_N, cv, crossovers=xs, title=f"Move the weights vs the activations ({near})")
        tot = {k: float(v.sum()) for k, v in times.items()}
        summary = (f"{trace}, first batch of {batch} tokens, {gpu} + {near}, link "
                   f"{'of the profiles' if link_arg is None else f'{link_arg:g} GB/s'}: crossover "
                   f"{'none (near data always wins)' if x is None else f'{x} tokens'} · all layers: {policy} "
                   f"{tot[policy] * 1e3:.3g} ms vs all-GPU (parameter offloading) {tot['all_gpu'] * 1e3:.3g} ms "
                   f"({tot['all_gpu'] / tot[policy]:.2f}×) and all-near {tot['all_near'] * 1e3:.3g} ms · "
                   f"{chosen[layer].num_on_gpu} of {counts.shape[1]} experts of {name} on the GPU")
        return MoNDEView(settings, figures, list(chosen), times, x, counts, summary, time.perf_counter() - t0)


def _link(link, gpu, near):
    """The link (GB/s) both paths use: the chosen one, else the slower of the two profiles' links."""
    if link is not None:
        return link
    bws = [p.link_bandwidth_gbs for p in (gpu, near) if p.link_bandwidth_gbs is not None]
    return min(bws) if bws else load_profile(near.link).link_bandwidth_gbs


# ------------------------------------------------------------------ tokens per expert: near data or not
@dataclass
class NearTokensView:
    """One :meth:`NearTokensPanel.compute`.

    Attributes
    ----------
    tokens : int
        The selected tokens per expert.
    figure : go.Figure
        Every curve set's two paths vs tokens, the selected count marked.
    times : dict[str, tuple[float, float]]
        Per curve set ``(fast_s, near_s)`` at ``tokens``.
    near_pays : dict[str, bool]
        Per curve set: the near path is no slower than moving the weights at ``tokens``.
    summary : str
    """

    tokens: int
    figure: go.Figure
    times: dict[str, tuple[float, float]]
    near_pays: dict[str, bool]
    summary: str


class NearTokensPanel:
    """A *tokens per expert* slider over measured and modelled path times: where near data stops paying.

    Parameters
    ----------
    n_tokens : array-like of int, shape (N,)
        The token counts the curves were measured/modelled at (the slider's values).
    curves : mapping label → (fast_seconds, near_seconds)
        Per curve set (e.g. ``"measured, compressed near (2-core CPU)"``, ``"modelled, compressed near"``)
        two arrays of shape (N,). Label every set measured / recorded / modelled.
    crossovers : mapping label → int or None, optional
        Each set's :math:`n^*` (drawn on the chart and quoted in the summary).
    """

    def __init__(self, n_tokens, curves: Mapping[str, tuple], *, crossovers: Mapping[str, int | None] | None = None,
                 title: str = "Tokens per expert: near data (compressed) vs move the weights") -> None:
        n = np.asarray(n_tokens)
        if n.ndim != 1 or n.size == 0 or not np.issubdtype(n.dtype, np.integer) or (n < 1).any():
            raise ValueError(f"n_tokens: expected a non-empty 1-D sequence of ints >= 1, got {n_tokens!r}")
        if not isinstance(curves, Mapping) or not curves:
            raise ValueError(f"curves: expected a non-empty mapping label -> (fast_s, near_s), got {curves!r}")
        self.n_tokens = tuple(int(v) for v in n)
        self.curves = {}
        for name, pair in curves.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"curves[{name!r}]: expected a pair (fast_seconds, near_seconds), got {pair!r}")
            a, b = (np.asarray(p, dtype=np.float64).reshape(-1) for p in pair)
            if a.shape != n.shape or b.shape != n.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
                raise ValueError(f"curves[{name!r}]: expected two finite arrays of shape {n.shape}, got "
                                 f"{a.shape} and {b.shape}")
            self.curves[name] = (a, b)
        self.crossovers = dict(crossovers or {})
        self.title = title
        self._busy = False
        self.controls = {"tokens": widgets.SelectionSlider(
            options=self.n_tokens, value=self.n_tokens[0], description="tokens/expert", continuous_update=False,
            style={"description_width": "105px"}, layout=widgets.Layout(width="420px"))}
        self.status = widgets.HTML()
        self.figure_widget = go.FigureWidget(layout={"template": _TEMPLATE})
        self.controls["tokens"].observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.controls["tokens"], self.status]), self.figure_widget])
        self.last: NearTokensView | None = None

    def options(self) -> dict[str, tuple]:
        return {"tokens": self.n_tokens}

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if self.last is None:
            self.update()
        display(self.widget)

    def _on_change(self, change: dict) -> None:
        if not self._busy:
            self.update()

    def update(self, **values: Any) -> NearTokensView:
        """Move the slider to ``values["tokens"]`` (one of :meth:`options`), recompute and redraw."""
        _check_update_values(values, self.options())
        _set_quietly(self, values)
        view = self.compute(self.controls["tokens"].value)
        self.status.value = f"<div style='padding:6px 10px;color:#111827'>{html.escape(view.summary)}</div>"
        _copy_into(self.figure_widget, view.figure, width=720)
        self.last = view
        return view

    def compute(self, tokens: int) -> NearTokensView:
        """The pure part of :meth:`update`."""
        if isinstance(tokens, bool) or tokens not in self.n_tokens:
            raise ValueError(f"tokens: expected one of {self.n_tokens}, got {tokens!r}")
        i = self.n_tokens.index(tokens)
        times = {k: (float(a[i]), float(b[i])) for k, (a, b) in self.curves.items()}
        pays = {k: b <= a for k, (a, b) in times.items()}
        fig = crossover_figure(np.asarray(self.n_tokens), self.curves, crossovers=self.crossovers, title=self.title)
        fig.add_vline(x=tokens, line=dict(color="#111827", width=1, dash="dot"))
        parts = []
        for k, (a, b) in times.items():
            x = self.crossovers.get(k)
            parts.append(f"{k}: near {1e3 * b:.2f} ms vs move weights {1e3 * a:.2f} ms → "
                         f"{'near data pays' if pays[k] else 'near data stops paying'}"
                         + (f" (n* = {x})" if k in self.crossovers else ""))
        summary = f"{tokens} tokens per expert · " + " · ".join(parts)
        return NearTokensView(int(tokens), fig, times, pays, summary)
