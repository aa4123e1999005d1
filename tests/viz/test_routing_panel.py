"""RoutingPanel: update() and the widget callbacks driven over every widget's range, without a browser."""

import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.routing import (
    coactivation,
    expert_frequency,
    imbalance,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)
from samoyeds_lab.viz.routing_panel import ROUTING_VIEWS, RoutingPanel, RoutingView
from tests.routing.helpers import random_trace

FIGURES = {"hotness", "timeline", "locality", "transition", "coactivation", "tokens"}
_MEMO = {}


def memo(fn, t, *args):
    """Reference analytics computed once per (function, trace, args): the sweeps check hundreds of views."""
    key = (fn.__name__, id(t), args)
    if key not in _MEMO:
        _MEMO[key] = fn(t, *args)
    return _MEMO[key]


def make_traces():
    """Two skewed traces of awkward lengths (3 layers, E=6, k=2) and a short one-sequence 'yours'."""
    return {
        "prose": random_trace(3, 300, 2, 6, seed=1, skew=0.5, seq=[128, 128, 44]),
        "code": random_trace(3, 259, 2, 6, seed=2, skew=1.0, seq=[128, 131]),
        "yours": random_trace(3, 41, 2, 6, seed=3),
    }


@pytest.fixture(scope="module")
def traces():
    return make_traces()


@pytest.fixture(scope="module")
def panel(traces):
    return RoutingPanel(traces, pad_to=16, timeline_tokens=32)


# ---------------------------------------------------------------------------------------------- invariants
def check_view(panel, view):
    s = view.settings
    t = panel.traces[s["trace"]]
    layer, k, E = s["layer"], t.top_k, t.num_experts
    first_only = s["view"] == ROUTING_VIEWS[0]
    assert isinstance(view, RoutingView)
    assert set(view.figures) == FIGURES and all(isinstance(f, go.Figure) for f in view.figures.values())
    # hotness: usage of the selected view, selected layer outlined
    ref_usage = expert_frequency(t, choice=0) if first_only else expert_frequency(t) * k
    torch.testing.assert_close(view.usage, ref_usage)
    hm = view.figures["hotness"].data[0]
    np.testing.assert_allclose(np.asarray(hm.z, float), ref_usage.numpy())
    assert view.figures["hotness"].layout.shapes[0].y0 == layer - 0.5
    assert view.max_over_mean == pytest.approx(float(memo(imbalance, t).max_over_mean[layer]))
    # timeline: the tokens shown are inside the chosen sequence, and the cells are their choices
    a, b = view.tokens_shown
    starts = torch.cumsum(t.sequence_lengths, 0) - t.sequence_lengths
    seq_start, seq_len = int(starts[s["sequence"]]), int(t.sequence_lengths[s["sequence"]])
    assert seq_start <= a < b <= seq_start + seq_len and b - a <= panel.timeline_tokens
    off = a - seq_start
    if s["offset"] < seq_len:
        assert off == s["offset"] and not any("offset" in n for n in view.notes)
    else:
        assert off < seq_len and any(f"instead of {s['offset']}" in n for n in view.notes)
    tl = view.figures["timeline"].data[0]
    z = np.asarray(tl.z, float)
    kk = 1 if first_only else k
    assert z.shape == (t.num_layers * kk, b - a)
    np.testing.assert_array_equal(z[::kk] - 0.5, t.topk_ids[:, a:b, 0].numpy())
    assert list(tl.x) == list(range(off, off + b - a))
    # locality: the metric of the view
    loc = memo(temporal_locality, t)
    metric = "first" if first_only else "first_or_second"
    assert view.locality == pytest.approx(float(getattr(loc, metric)[layer]))
    assert view.locality_random == pytest.approx(float(getattr(loc, metric + "_random")[layer]))
    # transition: a matrix, or a message at the last layer
    if layer < t.num_layers - 1:
        np.testing.assert_allclose(np.asarray(view.figures["transition"].data[0].z, float),
                                   memo(transition_matrix, t, layer).numpy())
    else:
        assert not view.figures["transition"].data
        assert "last MoE layer" in view.figures["transition"].layout.annotations[0].text.replace("<br>", " ")
        assert any("last layer" in n for n in view.notes)
    C = memo(coactivation, t, layer)
    assert view.figures["coactivation"].data[0].z[0][1] == pytest.approx(int(C[0, 1]) / t.num_tokens)
    # tokens per expert: the numbers of the analytics
    tpe = memo(tokens_per_expert, t, s["batch"])
    assert view.padded_fraction == pytest.approx(float(tpe.padded_fraction(panel.pad_to)[layer]))
    assert view.idle_fraction == pytest.approx(float(tpe.idle_fraction()[layer]))
    assert f"batch {s['batch']}" in view.summary and s["trace"] in view.summary
    assert math.isfinite(view.elapsed_s)


def widgets_show(panel, view):
    """The FigureWidgets hold the view's figures (same trace types, same data)."""
    for name, fig in view.figures.items():
        fw = panel.figure_widgets[name]
        assert [t.type for t in fw.data] == [t.type for t in fig.data], name
        if fig.data and fig.data[0].type == "heatmap":
            assert np.array_equal(np.asarray(fw.data[0].z, float), np.asarray(fig.data[0].z, float), equal_nan=True)
    assert view.summary.split(" · ")[0] in panel.status.value


# ---------------------------------------------------------------------------------------------- defaults
def test_default_view(traces):
    panel = RoutingPanel(traces, pad_to=16, timeline_tokens=32)
    assert panel.last is None
    view = panel.update()
    check_view(panel, view)
    assert view.settings == dict(trace="prose", layer=0, view="first choice", batch=64, sequence=0, offset=0)
    assert view.rebuilt == tuple(["hotness", "timeline", "locality", "transition", "coactivation", "tokens"])
    widgets_show(panel, view)
    for name, w in panel.controls.items():
        if hasattr(w, "continuous_update"):
            assert w.continuous_update is False, name


def test_figures_are_json_safe_for_the_widget(panel):
    """A FigureWidget sends JSON to the browser: NaN/inf would be dropped with a warning."""
    for trace in panel.traces:
        for layer in (0, panel.num_layers - 1):
            view = panel.update(trace=trace, layer=layer, view="all k")
            for name, fig in view.figures.items():
                json.loads(fig.to_json(), parse_constant=lambda c: pytest.fail(f"{name}: {c}"))


# ---------------------------------------------------------------------------------------------- sweeps
@pytest.mark.slow
@pytest.mark.parametrize("trace", ["prose", "code", "yours"])
def test_every_widget_over_its_whole_range_through_the_callbacks(traces, trace):
    """Set each widget to every value it offers (the panel's observers run update), others fixed."""
    panel = RoutingPanel(traces, pad_to=16, timeline_tokens=32)
    panel.update()
    panel.controls["trace"].value = trace  # callback (no change for "prose": hence the update above)
    base = panel.values()
    for name, values in panel.options(trace).items():
        for value in values:
            if name == "trace":
                panel.controls["trace"].value = value
                view = panel.last
                assert view.settings["trace"] == value
                check_view(panel, view)
                panel.controls["trace"].value = trace
                continue
            panel.controls[name].value = value
            view = panel.last
            assert view.settings[name] == value and view.settings["trace"] == trace
            check_view(panel, view)
        panel.update(**{k: v for k, v in base.items() if v in panel.options(trace)[k]})
    widgets_show(panel, panel.last)


@pytest.mark.slow
def test_update_over_every_combination_of_the_categorical_widgets(panel):
    for trace in panel.traces:
        for layer in range(panel.num_layers):
            for view in ROUTING_VIEWS:
                check_view(panel, panel.update(trace=trace, layer=layer, view=view))


def test_only_dependent_figures_are_rebuilt(panel):
    panel.update(trace="code", layer=0, view="first choice", batch=16, sequence=0, offset=0)
    assert panel.update(sequence=1).rebuilt == ("timeline",)
    assert panel.update(offset=32).rebuilt == ("timeline",)
    assert panel.update(batch=32).rebuilt == ("tokens",)
    assert set(panel.update(view="all k").rebuilt) == {"hotness", "timeline", "locality"}
    assert set(panel.update(layer=1).rebuilt) == {"hotness", "timeline", "transition", "coactivation", "tokens"}
    assert len(panel.update(trace="prose").rebuilt) == 6
    # reused figures are the same objects as before
    before = panel.last.figures
    after = panel.update(batch=64)
    assert after.figures["hotness"] is before["hotness"] and after.figures["tokens"] is not before["tokens"]
    check_view(panel, after)


def test_each_control_changes_and_comes_back(traces):
    # how fast these updates are is a benchmark with a budget (`samoyeds-lab bench panels`), not a test
    panel = RoutingPanel(traces, pad_to=16, timeline_tokens=32)
    home = panel.update(sequence=0, offset=0, batch=64, layer=0, view="first choice")
    for kw in [dict(sequence=1), dict(offset=32), dict(batch=8), dict(layer=2), dict(view="all k")]:
        check_view(panel, panel.update(**kw))
        back = panel.update(sequence=0, offset=0, batch=64, layer=0, view="first choice")
        assert back.summary == home.summary, kw


# ---------------------------------------------------------------------------------------------- trace switching
def test_switching_trace_refits_the_dependent_widgets(traces):
    panel = RoutingPanel(traces, pad_to=16, timeline_tokens=32)
    c = panel.controls
    c["sequence"].value = 2
    c["offset"].value = 96
    c["batch"].value = 256
    c["trace"].value = "yours"  # 1 sequence of 41 tokens
    assert c["sequence"].max == 0 and c["sequence"].value == 0
    assert tuple(c["offset"].options) == (0, 32) and c["offset"].value == 0
    assert tuple(c["batch"].options) == (1, 2, 4, 8, 16, 32) and c["batch"].value == 32
    check_view(panel, panel.last)
    c["trace"].value = "code"
    assert c["sequence"].max == 1 and tuple(c["offset"].options) == (0, 32, 64, 96, 128)
    assert c["batch"].value == 32 and c["batch"].options[-1] == 256
    check_view(panel, panel.last)


def test_offset_past_a_short_sequence_is_shown_from_its_last_chunk(panel):
    view = panel.update(trace="prose", sequence=2, offset=96)  # sequence 2 has 44 tokens
    check_view(panel, view)
    assert view.tokens_shown == (256 + 32, 300)
    assert "only 44 tokens" in view.notes[0] and "⚠" not in view.summary
    assert "background:#fef3c7" in panel.status.value


def test_single_token_sequences_give_a_locality_message(traces):
    t = random_trace(2, 5, 2, 4, seed=9, seq=[1, 1, 1, 1, 1])
    panel = RoutingPanel({"one": t}, timeline_tokens=2)
    view = panel.update()
    assert "single token" in view.figures["locality"].layout.annotations[0].text.replace("<br>", " ")
    assert math.isnan(view.locality) and any("locality" in n for n in view.notes)


# ---------------------------------------------------------------------------------------------- errors
def test_update_rejects_values_no_widget_offers(panel):
    panel.update(trace="prose")
    with pytest.raises(TypeError, match="density"):
        panel.update(density=0.5)
    with pytest.raises(ValueError, match="layer"):
        panel.update(layer=3)
    with pytest.raises(ValueError, match="trace"):
        panel.update(trace="fr")
    with pytest.raises(ValueError, match="batch"):
        panel.update(batch=48)
    with pytest.raises(ValueError, match="batch"):
        panel.update(trace="yours", batch=64)  # longer than that trace
    with pytest.raises(ValueError, match="view"):
        panel.update(view="second")
    with pytest.raises(ValueError, match="layer"):
        panel.update(layer=True)
    with pytest.raises(ValueError, match="offset"):
        panel.update(offset=5)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ({}, {}, ValueError, "traces"),
    ({"a": 1}, {}, TypeError, "a"),
    ({"": None}, {}, TypeError, "names"),
    (None, dict(trace="zz"), ValueError, "trace"),
    (None, dict(layer=3), ValueError, "layer"),
    (None, dict(batch=3), ValueError, "batch"),
    (None, dict(pad_to=0), ValueError, "pad_to"),
    (None, dict(timeline_tokens=1), ValueError, "timeline_tokens"),
])
def test_constructor_rejects_bad_arguments(traces, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        RoutingPanel(traces if args is None else args, **kwargs)


def test_constructor_rejects_mismatched_traces(traces):
    with pytest.raises(ValueError, match="other"):
        RoutingPanel({"a": traces["prose"], "other": random_trace(2, 20, 2, 6, seed=0)})
    with pytest.raises(ValueError, match="2 tokens"):
        RoutingPanel({"a": random_trace(3, 1, 2, 6, seed=0)})
