"""MoNDE figures (pure builders) and MoNDEPanel driven over every widget's range, without a browser."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from samoyeds_lab.offload.cost import crossover_tokens
from samoyeds_lab.offload.placement import POLICIES, place_experts
from samoyeds_lab.routing import tokens_per_expert
from samoyeds_lab.viz.monde import (
    MONDE_COLORS,
    crossover_figure,
    hybrid_figure,
    placement_grid_figure,
    policy_times_figure,
    tokens_placement_figure,
)
from samoyeds_lab.viz.monde_panel import D_MIXTRAL, P_MIXTRAL, MoNDEPanel, MoNDEView
from tests.routing.helpers import random_trace


# ---------------------------------------------------------------------------------------------- figures
def arr(v):
    """A figure array as a list: plotly's to_dict() encodes NumPy arrays as {'dtype', 'bdata'}."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if isinstance(shape, str):
            shape = tuple(int(x) for x in shape.split(","))
        return a.reshape(shape).tolist() if shape is not None else a.tolist()
    return list(v) if not isinstance(v, (list, tuple)) else [list(x) if isinstance(x, (list, tuple)) else x for x in v]


def test_tokens_placement_colours_and_threshold():
    fig = tokens_placement_figure([3, 40, 0, 9], [False, True, False, False], threshold=20, layer_name="l1")
    d = fig.to_dict()
    bar = d["data"][0]
    assert arr(bar["y"]) == [3, 40, 0, 9]
    assert bar["marker"]["color"] == [MONDE_COLORS["near"], MONDE_COLORS["gpu"], MONDE_COLORS["near"],
                                      MONDE_COLORS["near"]]
    assert any(s.get("y0") == 20 for s in d["layout"]["shapes"])
    assert not tokens_placement_figure([1, 2], [True, False], threshold=float("inf")).to_dict()["layout"].get("shapes")
    with pytest.raises(ValueError, match="on_gpu"):
        tokens_placement_figure([1, 2], [True])
    with pytest.raises(ValueError, match="counts"):
        tokens_placement_figure([], [])


def test_placement_grid():
    c = np.array([[1, 0, 5], [2, 2, 0]])
    m = np.array([[True, False, False], [False, True, False]])
    d = placement_grid_figure(c, m, layer_names=["a", "b"], highlight_layer=1).to_dict()
    z = np.array(arr(d["data"][0]["z"]))
    assert z.tolist() == [[1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]  # GPU 1, near 0, idle 0.5
    assert d["data"][0]["text"] == [["1", "0", "5"], ["2", "2", "0"]]
    assert d["layout"]["shapes"][0]["y0"] == 0.5
    with pytest.raises(ValueError, match="masks"):
        placement_grid_figure(c, m[:1])
    with pytest.raises(ValueError, match="highlight_layer"):
        placement_grid_figure(c, m, highlight_layer=2)
    with pytest.raises(ValueError, match="layer_names"):
        placement_grid_figure(c, m, layer_names=["a"])


def test_policy_times_and_hybrid_figures_in_ms():
    d = policy_times_figure({"exact": [1e-3, 2e-3], "greedy": [1e-3, 3e-3]}, layer_names=["x", "y"]).to_dict()
    assert [t["name"] for t in d["data"]] == ["exact", "greedy"]
    assert arr(d["data"][1]["y"]) == pytest.approx([1.0, 3.0])
    with pytest.raises(ValueError, match="times"):
        policy_times_figure({"a": [1.0], "b": [1.0, 2.0]})
    with pytest.raises(ValueError, match="times"):
        policy_times_figure({})
    h = hybrid_figure(["p", "q"], [0.01, 0.02], [0.015, 0.03], measured_err_s=[0.001, 0.002]).to_dict()
    assert arr(h["data"][0]["y"]) == pytest.approx([10, 20]) and arr(h["data"][1]["y"]) == pytest.approx([15, 30])
    assert arr(h["data"][1]["error_y"]["array"]) == pytest.approx([1, 2])
    with pytest.raises(ValueError, match="measured_s"):
        hybrid_figure(["p"], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="labels"):
        hybrid_figure("p", [1.0], [1.0])


def test_crossover_figure_marks_the_crossover():
    n = np.array([1, 10, 100, 1000])
    d = crossover_figure(n, {"a": ([1, 1, 1, 1.2], [0.01, 0.1, 1, 10])}, crossovers={"a": 100}).to_dict()
    assert len(d["data"]) == 3
    assert d["data"][0]["line"].get("dash") is None and d["data"][1]["line"]["dash"] == "dash"
    marker = d["data"][2]
    assert arr(marker["x"]) == [100] and arr(marker["y"])[0] == pytest.approx(1000.0)
    assert d["layout"]["xaxis"]["type"] == "log" and d["layout"]["yaxis"]["type"] == "log"
    d = crossover_figure(n, {"a": ([1] * 4, [2] * 4)}, crossovers={"a": None}).to_dict()
    assert len(d["data"]) == 2
    with pytest.raises(ValueError, match="n_tokens"):
        crossover_figure([0, 1], {"a": ([1, 1], [1, 1])})
    with pytest.raises(ValueError, match="curves"):
        crossover_figure([1, 2], {"a": ([1, 1],)})
    with pytest.raises(ValueError, match=r"curves\['a'\]\[1\]"):
        crossover_figure([1, 2], {"a": ([1, 1], [1])})


# ---------------------------------------------------------------------------------------------- panel
@pytest.fixture(scope="module")
def panel():
    traces = {"prose": random_trace(3, 300, 2, 8, seed=1, skew=0.5), "code": random_trace(3, 70, 2, 8, seed=2, skew=1.5)}
    return MoNDEPanel(traces, max_batch=256)


def check(panel, view):
    s = view.settings
    assert isinstance(view, MoNDEView) and set(view.figures) == {"tokens", "grid", "policies", "crossover"}
    for f in view.figures.values():
        assert isinstance(f, go.Figure)
        json.dumps(f.to_dict(), default=str)
    t = panel.traces[s["trace"]]
    expect = tokens_per_expert(t, s["batch"]).counts[:, 0, :].numpy()
    assert np.array_equal(view.counts, expect)
    link = None if not s["link"] else s["link"]
    for layer in range(t.num_layers):
        p = place_experts(expect[layer], P_MIXTRAL, s["gpu"], s["near"], d_model=D_MIXTRAL, policy=s["policy"], link=link)
        assert np.array_equal(view.placements[layer].mask, p.mask)
        for pol in POLICIES:
            assert view.times["exact"][layer] <= view.times[pol][layer] * (1 + 1e-9)
    assert view.crossover == crossover_tokens(s["gpu"], s["near"], P_MIXTRAL, d_model=D_MIXTRAL, link=link)
    # the widgets show this view
    fw = panel.figure_widgets["tokens"]
    assert list(fw.data[0].y) == expect[s["layer"]].tolist()
    assert s["policy"] in view.summary and s["gpu"] in view.summary


def test_panel_every_widget_over_its_range(panel):
    check(panel, panel.update())
    for name in ("trace", "layer", "batch", "policy", "gpu", "near", "link"):
        for value in panel.options()[name]:
            check(panel, panel.update(**{name: value}))


def test_panel_callbacks_fire_on_widget_changes(panel):
    panel.update(trace="prose", batch=256)
    panel.controls["trace"].value = "code"  # 70 tokens: batch clamps to 64
    assert panel.last.settings["trace"] == "code" and panel.last.settings["batch"] == 64
    for name in ("layer", "policy", "gpu", "near", "link", "batch"):
        w = panel.controls[name]
        for value in panel.options()[name]:
            w.value = value
            assert panel.last.settings[name] == value
            check(panel, panel.last)


def test_panel_bad_arguments(panel):
    with pytest.raises(ValueError, match="trace"):
        panel.update(trace="nope")
    with pytest.raises(TypeError, match="update"):
        panel.update(colour=1)
    with pytest.raises(ValueError, match="batch"):
        panel.update(batch=3)
    with pytest.raises(ValueError, match="traces"):
        MoNDEPanel({})
    with pytest.raises(TypeError, match="traces"):
        MoNDEPanel({"a": 1})
    with pytest.raises(ValueError, match="traces"):
        MoNDEPanel({"a": random_trace(2, 20, 2, 8, seed=0), "b": random_trace(3, 20, 2, 8, seed=0)})


# ------------------------------------------------------------------ tokens-per-expert slider
from samoyeds_lab.viz.monde_panel import NearTokensPanel, NearTokensView  # noqa: E402

NS = [1, 3, 19, 99]
FAST = [2e-3, 2e-3, 2.5e-3, 6e-3]
NEAR_C = [5e-4, 1e-3, 3e-3, 1.2e-2]  # compressed near: pays up to 3 tokens, stops at 19
MODEL_C = [4e-4, 9e-4, 2.4e-3, 1e-2]


@pytest.fixture()
def tokens_panel():
    return NearTokensPanel(NS, {"measured, compressed near": (FAST, NEAR_C), "modelled, compressed near": (FAST, MODEL_C)},
                           crossovers={"measured, compressed near": 19, "modelled, compressed near": None})


def test_tokens_slider_over_its_whole_range(tokens_panel):
    for i, n in enumerate(tokens_panel.options()["tokens"]):
        v = tokens_panel.update(tokens=n)
        assert isinstance(v, NearTokensView) and v.tokens == n and tokens_panel.last is v
        assert v.times["measured, compressed near"] == (FAST[i], NEAR_C[i])
        assert v.near_pays["measured, compressed near"] == (NEAR_C[i] <= FAST[i])
        assert v.near_pays["modelled, compressed near"] == (MODEL_C[i] <= FAST[i])
        assert ("near data pays" in v.summary) == any(v.near_pays.values())
        assert ("stops paying" in v.summary) == (not all(v.near_pays.values()))
        d = v.figure.to_dict()
        assert any(s.get("x0") == n for s in d["layout"]["shapes"])  # the selected count is marked
        assert len(d["data"]) == 5  # 2 sets x 2 paths + one crossover marker
        json.dumps(d, default=str)
        assert list(tokens_panel.figure_widget.data[1].y) == pytest.approx([1e3 * t for t in NEAR_C])
    assert [tokens_panel.update(tokens=n).near_pays["measured, compressed near"] for n in NS] == [True, True, False, False]


def test_tokens_slider_callback_fires(tokens_panel):
    for n in reversed(NS):
        tokens_panel.controls["tokens"].value = n
        assert tokens_panel.last is not None and tokens_panel.last.tokens == n


def test_tokens_panel_bad_arguments(tokens_panel):
    with pytest.raises(ValueError, match="tokens"):
        tokens_panel.update(tokens=2)
    with pytest.raises(TypeError, match="update"):
        tokens_panel.update(batch=1)
    with pytest.raises(ValueError, match="n_tokens"):
        NearTokensPanel([0, 1], {"a": ([1, 1], [1, 1])})
    with pytest.raises(ValueError, match="curves"):
        NearTokensPanel([1, 2], {})
    with pytest.raises(ValueError, match=r"curves\['a'\]"):
        NearTokensPanel([1, 2], {"a": ([1, 1], [1])})
    with pytest.raises(ValueError, match=r"curves\['a'\]"):
        NearTokensPanel([1, 2], {"a": ([1, float("nan")], [1, 1])})


def test_placement_checks_figure_from_checks():
    import numpy as np

    from samoyeds_lab.offload.hybrid import HybridTiming, PlacementCheck
    from samoyeds_lab.viz.monde import placement_checks_figure

    checks = [PlacementCheck("near", np.zeros(4, bool), 0.01, 0.0, 0.01, HybridTiming(0.012, 0.0, 0.012, ()), 0.001),
              PlacementCheck("best", np.array([1, 0, 1, 0], bool), 0.02, 0.02, 0.01,
                             HybridTiming(0.03, 0.03, 0.01, ()), 0.002)]
    fig = placement_checks_figure(checks, title="t")
    assert list(fig.data[0].x) == ["near (0 fast)", "best (2 fast)"]
    assert [round(float(v), 6) for v in fig.data[0].y] == [10.0, 20.0]  # cost model, ms
    assert [round(float(v), 6) for v in fig.data[1].y] == [12.0, 30.0]  # measured, ms
