"""viz.offload figures and the SiDAPanel (Lab 06): content of the figures, every widget over its range."""

import numpy as np
import plotly.graph_objects as go
import pytest

from samoyeds_lab.offload.predictor import load_shipped_metrics, load_shipped_predictions
from samoyeds_lab.offload.sweep import budget_sweep, policy_latencies
from samoyeds_lab.routing.ship import load_shipped_trace
from samoyeds_lab.viz.offload import (
    hit_rate_budget_figure,
    latency_breakdown_figure,
    predictor_hit_rate_figure,
    quality_figure,
)
from samoyeds_lab.viz.sida_panel import BATCH_SIZES, TRAINED, SiDAPanel

DOMAINS = ("en", "de")


@pytest.fixture(scope="module")
def data():
    traces = {d: load_shipped_trace(d) for d in DOMAINS}
    preds = {d: load_shipped_predictions(d) for d in DOMAINS}
    return traces, preds


def test_predictor_figure_shows_every_layer_of_every_method():
    m = load_shipped_metrics()
    fig = predictor_hit_rate_figure(m, "en")
    assert [t.name for t in fig.data] == ["SiDA predictor prefetch", "next-layer gate prefetch", "most frequent experts"]
    sida = m["domains"]["en"]["methods"]["sida"]["hit_rate"]
    assert np.allclose(fig.data[0].y, 100 * np.asarray(sida))
    assert np.isnan(fig.data[1].y[0])  # next_layer has no prediction for layer 0
    with pytest.raises(ValueError, match="domain"):
        predictor_hit_rate_figure(m, "fr")
    with pytest.raises(ValueError, match="methods"):
        predictor_hit_rate_figure(m, "en", methods=("oracle",))


def test_budget_and_latency_figures(data):
    traces, preds = data
    ids = traces["en"].topk_ids.numpy()[:, :256]
    p = {k: v.numpy()[:, :256] for k, v in preds["en"].items()}
    sw = budget_sweep(ids, 8, [0, 8, 32], predictions=p)
    fig = hit_rate_budget_figure(sw, num_layers=4, num_experts=8, budget=8, expert_gb=0.35)
    names = [t.name for t in fig.data]
    assert "Belady (offline optimum)" in names and len(names) == 7
    bel = fig.data[names.index("Belady (offline optimum)")]
    assert bel.line.dash == "dash" and list(bel.x) == [0, 8, 32]
    lat = policy_latencies(ids, 8, 8, predictions=p)
    fig = latency_breakdown_figure({k: v[1] for k, v in lat.items()})
    assert [t.name for t in fig.data] == ["expert compute (GPU)", "demand loads (stall)", "prefetch not hidden"]
    totals = np.sum([np.asarray(t.y) for t in fig.data], axis=0)
    assert np.allclose(totals, [1e3 * v[1].per_token()["total"] for v in lat.values()])
    # policy names wrapped, not rotated into the legend; the full name is in the hover
    assert fig.layout.xaxis.tickangle == 0 and all(len(line) <= 12 for x in fig.data[0].x for line in x.split("<br>"))
    assert list(fig.data[0].customdata)[0] == "LRU" or "<br>" not in list(fig.data[0].customdata)[0]
    assert fig.layout.yaxis.range[1] >= totals.max()
    with pytest.raises(TypeError, match="sweep"):
        hit_rate_budget_figure({}, num_layers=4, num_experts=8)
    with pytest.raises(ValueError, match="latencies"):
        latency_breakdown_figure({})
    with pytest.raises(TypeError, match="latencies"):
        latency_breakdown_figure({"lru": 1.0})


def test_quality_figure():
    fig = quality_figure([0, 0.5, 1], [0.1, 0.5, 0.9], [3, 2, 1], trained=(0.8, 1.5))
    assert isinstance(fig, go.Figure) and list(fig.data[0].x) == [0, 50, 100]
    with pytest.raises(ValueError, match="qualities"):
        quality_figure([0, 1], [0.1], [1, 2])


@pytest.fixture(scope="module")
def panel(data):
    traces, preds = data
    return SiDAPanel(traces, preds, max_tokens=256, budget_step=4)


def test_panel_update_numbers(panel):
    v = panel.update(domain="en", budget=12, batch=1, link_gbs=64)
    assert set(v.figures) == {"budget", "latency"}
    assert set(v.hit_rate) >= {"lru", "sida", "belady"}
    for p in ("lru", "lfu", "fifo"):
        assert v.hit_rate["belady"] >= v.hit_rate[p]
    assert "trained predictor" in v.summary
    # an oracle predictor (quality 100) never misses
    assert panel.update(domain="en", budget=12, quality=100).hit_rate["sida"] == pytest.approx(1.0)
    # more bandwidth, never slower
    fast = panel.update(domain="en", budget=12, link_gbs=128)
    assert all(fast.latency_ms[p] <= v.latency_ms[p] + 1e-9 for p in v.latency_ms)


@pytest.mark.parametrize("kw, match", [
    (dict(domain="fr"), "domain"), (dict(budget=-1), "budget"), (dict(budget=33), "budget"),
    (dict(quality=101), "quality"), (dict(batch=3), "batch"),
])
def test_panel_bad_settings(panel, kw, match):
    with pytest.raises(ValueError, match=match):
        panel.update(**kw)


def test_panel_rejects_mismatched_inputs(data):
    traces, preds = data
    with pytest.raises(ValueError, match="predictions"):
        SiDAPanel(traces, {"en": preds["en"]})
    with pytest.raises(ValueError, match="traces"):
        SiDAPanel({}, {})


@pytest.mark.slow
def test_every_widget_over_its_range(panel):
    w = panel.widget()
    assert w is not None and len(panel.fig_budget.data) == 7
    for b in range(panel.budget.min, panel.budget.max + 1, 4):
        panel.budget.value = b
        assert f"budget {b}/" in panel.note.value
    panel.budget.value = panel.budget.max
    for q in (TRAINED, 0, 37, 100):
        panel.quality.value = q
    for b in BATCH_SIZES:
        panel.batch.value = b
        assert f"batch {b}," in panel.note.value
    for x in (panel.link.min, 5.0, panel.link.max):
        panel.link.value = 2 ** x
        assert len(panel.fig_latency.data) == 3
    for d in panel.domain.options:
        panel.domain.value = d
        assert panel.note.value.startswith(f"<p style='max-width:960px'>{d},")
