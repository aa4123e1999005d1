"""An ipywidgets panel for data-aware offloading (Lab 06): GPU budget, predictor quality, batch size and
link bandwidth against hit rate and modelled latency of every policy.

As in the other panels, :meth:`SiDAPanel.update` computes figures and numbers from plain values and
returns a :class:`SiDAView`; widget callbacks only call it and copy the figures into
``go.FigureWidget``\\ s, so tests drive it over every widget's range without a browser. The budget sweep
(the expensive part, every policy × every budget) is cached per (domain, batch, predictor); moving the
budget or bandwidth slider only re-times one budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from ..offload.simulate import noisy_predictions
from ..offload.sweep import MIXTRAL_EXPERT, SWEEP_POLICIES, ExpertShape, budget_sweep, policy_latencies
from .offload import hit_rate_budget_figure, latency_breakdown_figure
from .panels import _copy_into

__all__ = ["SiDAPanel", "SiDAView", "BATCH_SIZES", "TRAINED"]

#: Tokens per batch offered by the batch slider.
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
#: The quality slider's value meaning "the shipped, trained predictor" (not a synthetic one).
TRAINED = -1


@dataclass
class SiDAView:
    """Everything one :meth:`SiDAPanel.update` computed.

    Attributes
    ----------
    settings : dict
        ``domain, budget, quality, batch, link_gbs``.
    figures : dict[str, go.Figure]
        ``"budget"`` (hit rate vs budget, all policies) and ``"latency"`` (time per token by policy).
    hit_rate : dict[str, float]
        Per policy at the chosen budget.
    latency_ms : dict[str, float]
        Modelled ms per token per policy at the chosen budget.
    summary : str
        One line for the panel.
    """

    settings: dict
    figures: dict = field(default_factory=dict)
    hit_rate: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)
    summary: str = ""


class SiDAPanel:
    """Sliders for GPU budget (experts), predictor quality, batch size and link bandwidth.

    Parameters
    ----------
    traces : dict of str to RoutingTrace
        Held-out routing per domain (e.g. the shipped traces).
    predictions : dict of str to dict
        Per domain ``{"sida": int[L, T, k], "next_layer": int[L, T, k]}`` aligned with the trace
        (e.g. :func:`samoyeds_lab.offload.predictor.load_shipped_predictions`).
    expert : ExpertShape
        Size used for time (default one Mixtral-8x7B expert: the tiny model's routing, Mixtral's sizes).
    profile : str
        GPU hardware profile for compute and the default link.
    max_tokens : int, optional
        Use only the first ``max_tokens`` tokens of each trace (keeps sweeps fast).
    budget_step : int
        Budgets swept for the hit-rate curve: ``0, step, 2·step, …, L·E``.
    """

    def __init__(self, traces: Mapping[str, Any], predictions: Mapping[str, Mapping[str, Any]], *,
                 expert: ExpertShape = MIXTRAL_EXPERT, profile: str = "h100_pcie",
                 max_tokens: int | None = 2048, budget_step: int = 2) -> None:
        if not traces:
            raise ValueError("traces: expected at least one domain, got none")
        self._topk, self._pred = {}, {}
        E = L = None
        for d, tr in traces.items():
            if d not in predictions:
                raise ValueError(f"predictions: missing domain {d!r} (have {sorted(predictions)})")
            ids = np.asarray(tr.topk_ids)
            T = ids.shape[1] if max_tokens is None else min(int(max_tokens), ids.shape[1])
            self._topk[d] = ids[:, :T]
            self._pred[d] = {k: np.asarray(v)[:, :T] for k, v in predictions[d].items()}
            if E is None:
                E, L = int(tr.num_experts), ids.shape[0]
            elif (E, L) != (int(tr.num_experts), ids.shape[0]):
                raise ValueError("traces: expected the same layers and experts in every domain")
        self.num_experts, self.num_layers = E, L
        if not isinstance(budget_step, int) or budget_step < 1:
            raise ValueError(f"budget_step: expected a positive int, got {budget_step!r}")
        self.capacities = np.unique(np.r_[np.arange(0, L * E + 1, budget_step), L * E])
        self.expert, self.profile = expert, profile
        self._sweeps: dict = {}
        self._pop = {d: self._profile_popularity(d) for d in self._topk}
        self._noisy: dict = {}
        self._widgets_built = False

    # ------------------------------------------------------------------------------------ compute
    def _predictions(self, domain: str, quality: float) -> dict:
        pred = dict(self._pred[domain])
        if quality != TRAINED:
            key = (domain, quality)
            if key not in self._noisy:
                self._noisy[key] = noisy_predictions(self._topk[domain], self.num_experts, quality / 100.0, seed=0)
            pred["sida"] = self._noisy[key]
        return pred

    def _sweep(self, domain: str, batch: int, quality: float):
        key = (domain, batch, quality)
        if key not in self._sweeps:
            self._sweeps[key] = budget_sweep(self._topk[domain], self.num_experts, self.capacities,
                                             policies=SWEEP_POLICIES, batch_tokens=batch,
                                             predictions=self._predictions(domain, quality),
                                             popularity=self._pop[domain])
        return self._sweeps[key]

    def _profile_popularity(self, domain: str) -> np.ndarray:
        """The static hot set is profiled on the *other* domains (an offline profile, not this text)."""
        others = [d for d in self._topk if d != domain] or [domain]
        pop = np.zeros((self.num_layers, self.num_experts))
        for d in others:
            ids = self._topk[d]
            for layer in range(self.num_layers):
                pop[layer] += np.bincount(ids[layer].reshape(-1), minlength=self.num_experts)
        return pop

    def update(self, *, domain: str | None = None, budget: int = 12, quality: float = TRAINED, batch: int = 1,
               link_gbs: float = 64.0) -> SiDAView:
        """Compute the view for these settings (see the class docstring for their meaning)."""
        domain = next(iter(self._topk)) if domain is None else domain
        if domain not in self._topk:
            raise ValueError(f"domain: expected one of {sorted(self._topk)}, got {domain!r}")
        total = self.num_layers * self.num_experts
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 0 <= budget <= total:
            raise ValueError(f"budget: expected an int in [0, {total}], got {budget!r}")
        if quality != TRAINED and not (0 <= quality <= 100):
            raise ValueError(f"quality: expected {TRAINED} (trained predictor) or a percentage in [0, 100], got {quality!r}")
        if batch not in BATCH_SIZES:
            raise ValueError(f"batch: expected one of {BATCH_SIZES}, got {batch!r}")
        sweep = self._sweep(domain, int(batch), quality)
        lat = policy_latencies(self._topk[domain], self.num_experts, int(budget), profile_gpu=self.profile,
                               link_gbs=float(link_gbs), expert=self.expert, batch_tokens=int(batch),
                               predictions=self._predictions(domain, quality), popularity=self._pop[domain])
        gb = self.expert.nbytes / 1e9
        pred_name = "trained predictor" if quality == TRAINED else f"synthetic predictor, quality {quality:.0f}%"
        figs = {
            "budget": hit_rate_budget_figure(sweep, num_layers=self.num_layers, num_experts=self.num_experts,
                                             budget=int(budget), expert_gb=gb),
            "latency": latency_breakdown_figure(
                {p: v[1] for p, v in lat.items()},
                title=f"Model: {self.expert.name}s ({gb:.2f} GB each) on {self.profile}<br>"
                      f"link {link_gbs:g} GB/s, budget {budget} experts ({budget * gb:.0f} GB)"),
        }
        hr = {p: float(v[0].hit_rate) for p, v in lat.items()}
        ms = {p: 1e3 * v[1].per_token()["total"] for p, v in lat.items()}
        best = min((p for p in ms if p != "belady"), key=ms.get)
        resident_ms = 1e3 * next(iter(lat.values()))[1].per_token()["all_resident"]
        summary = (f"{domain}, batch {batch}, budget {budget}/{total} experts ({budget * gb:.0f} of {total * gb:.0f} GB), "
                   f"{pred_name}: SiDA hit rate {100 * hr['sida']:.1f}% vs LRU {100 * hr['lru']:.1f}% "
                   f"(Belady {100 * hr['belady']:.1f}%); fastest online policy {best} at {ms[best]:.3g} ms/token "
                   f"vs {resident_ms:.3g} ms with every expert resident")
        settings = dict(domain=domain, budget=int(budget), quality=quality, batch=int(batch), link_gbs=float(link_gbs))
        return SiDAView(settings=settings, figures=figs, hit_rate=hr, latency_ms=ms, summary=summary)

    # ------------------------------------------------------------------------------------ widgets
    def _build(self) -> None:
        total = self.num_layers * self.num_experts
        style = dict(description_width="150px")
        lay = widgets.Layout(width="460px")
        self.domain = widgets.Dropdown(options=list(self._topk), description="held-out text", style=style, layout=lay)
        self.budget = widgets.IntSlider(value=min(12, total), min=0, max=total, step=1, continuous_update=False,
                                        description="GPU budget (experts)", style=style, layout=lay)
        self.quality = widgets.IntSlider(value=TRAINED, min=TRAINED, max=100, step=1, continuous_update=False,
                                         description="predictor quality %", style=style, layout=lay)
        self.batch = widgets.SelectionSlider(options=list(BATCH_SIZES), value=1, continuous_update=False,
                                             description="batch (tokens)", style=style, layout=lay)
        self.link = widgets.FloatLogSlider(value=64.0, base=2, min=3, max=7, step=0.5, continuous_update=False,
                                           description="PCIe bandwidth GB/s", style=style, layout=lay)
        self.note = widgets.HTML()
        self.fig_budget = go.FigureWidget()
        self.fig_latency = go.FigureWidget()
        for w in (self.domain, self.budget, self.quality, self.batch, self.link):
            w.observe(self._on_change, names="value")
        self._widgets_built = True

    def values(self) -> dict:
        """The widgets' current settings as keyword arguments of :meth:`update`."""
        return dict(domain=self.domain.value, budget=self.budget.value, quality=self.quality.value,
                    batch=self.batch.value, link_gbs=self.link.value)

    def _on_change(self, _change=None) -> SiDAView:
        view = self.update(**self.values())
        _copy_into(self.fig_budget, view.figures["budget"], width=900)
        _copy_into(self.fig_latency, view.figures["latency"], width=900)
        q = "−1 = the trained predictor" if self.quality.value == TRAINED else "synthetic predictor"
        self.note.value = f"<p style='max-width:960px'>{view.summary} <i>(quality slider: {q})</i></p>"
        return view

    def widget(self) -> widgets.Widget:
        """The panel: controls, a one-line summary and the two figures."""
        if not self._widgets_built:
            self._build()
            self._on_change()
        controls = widgets.VBox([self.domain, self.budget, self.quality, self.batch, self.link])
        # NOTE: stacked, not side by side: two 900-px charts do not fit a notebook column, and a cut-off
        # legend hides which line is which policy.
        return widgets.VBox([controls, self.note, self.fig_budget, self.fig_latency])

    def _ipython_display_(self) -> None:  # pragma: no cover - display hook
        from IPython.display import display

        display(self.widget())
