"""Lab 04 figures (viz.moe_layer) and the MoELayerPanel, every widget driven over its whole range."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.bench.roofline import GPU_PROFILES
from samoyeds_lab.formats import TokenSelection
from samoyeds_lab.bench.moe_layer import MOE_SHAPES, TIME_OPS, layer_costs, layer_time, layer_time_sweep
from samoyeds_lab.routing import RoutingTrace
from samoyeds_lab.viz.kernels import CPU_LABEL, MODEL_LABEL
from samoyeds_lab.viz.moe_layer import (
    MOE_COLORS,
    backend_costs_figure,
    cpu_time_figure,
    dispatch_figure,
    expert_time_figure,
    layer_time_figure,
    padding_by_model_figure,
    tile_rows_figure,
)
from samoyeds_lab.viz.moe_layer_panel import BATCH_OPTIONS, MoELayerPanel


def _trace(L=2, T=4096, E=8, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(L, T, E, generator=g).topk(k, dim=-1).indices
    return RoutingTrace(topk_ids=ids, weights=torch.full((L, T, k), 1.0 / k),
                        token_ids=torch.randint(0, 256, (T,), generator=g),
                        layer_names=tuple(f"layers.{i}.mlp" for i in range(L)), num_experts=E)


def _hex_colors(fig: go.Figure) -> None:
    for tr in fig.data:
        c = getattr(getattr(tr, "marker", None), "color", None)
        if isinstance(c, str):
            assert c.startswith("#"), c


def test_colors_are_hex():
    assert all(v.startswith("#") and len(v) == 7 for v in MOE_COLORS.values())


def test_dispatch_figure():
    ids = torch.tensor([[0, 2], [0, 1], [1, 2], [3, 0]])
    sel = TokenSelection.from_topk(ids, 4, pad_to=4)
    fig = dispatch_figure(sel, ["a", "b", "c", "d"])
    hm = fig.data[0]
    z = np.array(hm.z, dtype=float)
    assert z.shape == (4, 4)
    # expert 0 has tokens 0, 1, 3 then one SENTINEL; expert 3 has token 3 then three SENTINELs
    assert z[0].tolist() == [1, 1, 1, 0] and z[3].tolist() == [1, 0, 0, 0]
    assert hm.text[0][:3] == ("a", "b", "d") or list(hm.text[0][:3]) == ["a", "b", "d"]
    assert list(hm.y) == ["e0: 3 → 4", "e1: 2 → 4", "e2: 2 → 4", "e3: 1 → 4"]
    assert "8 rows in tiles of 4, 8 padding rows (50%)" in fig.layout.title.text
    sel2 = TokenSelection.from_topk(torch.tensor([[0], [0], [0]]), 3, pad_to=2)  # experts 1, 2 idle
    z2 = np.array(dispatch_figure(sel2).data[0].z, dtype=float)
    assert z2.shape == (3, 4) and np.isnan(z2[1]).all()
    with pytest.raises(TypeError, match="selection"):
        dispatch_figure(ids)
    with pytest.raises(ValueError, match="labels"):
        dispatch_figure(sel, ["a"])


def test_backend_costs_figure():
    costs = layer_costs([9, 14, 12, 19, 17, 16, 18, 23], 4096, 14336)
    fig = backend_costs_figure(costs)
    _hex_colors(fig)
    bars = {tr.name: tr for tr in fig.data}
    assert set(bars) >= {"weight bytes", "activation bytes", "intermediate bytes", "index bytes",
                         "useful FLOP (dense-equivalent)", "executed FLOP (kept weights × tile rows)"}
    w = bars["weight bytes"].y
    assert w[0] == pytest.approx(costs["dense"].weight_bytes / 1e6) and w[2] == pytest.approx(costs["samoyeds"].weight_bytes / 1e6)
    assert list(bars["executed FLOP (kept weights × tile rows)"].text) == [f"{costs[b].launches} launches" for b in costs]
    assert "a model" in fig.layout.title.text
    with pytest.raises(TypeError, match="costs"):
        backend_costs_figure({})


def test_cpu_time_figure():
    import os

    fig = cpu_time_figure({"dense": 1.5e-3, "grouped": 1.4e-3, "samoyeds": 7.8e-3}, tokens=256)
    assert list(fig.data[0].x) == pytest.approx([1.5, 1.4, 7.8])
    title = fig.layout.title.text
    assert CPU_LABEL in title and f"measured, {os.cpu_count()}-core CPU, 20" in title  # this machine, today
    assert "reference" not in title
    fig = cpu_time_figure({"grouped": 1e-3, "samoyeds": 2e-3}, tokens=8, machine="TEST CPU", date="2000-01-01",
                          samoyeds_path="CPU kernels (avx2)")
    assert "measured, TEST CPU, 2000-01-01" in fig.layout.title.text
    assert list(fig.data[0].y) == ["grouped (one sorted dispatch)", "Samoyeds (compressed weights, SSMM)<br>CPU kernels (avx2)"]
    with pytest.raises(ValueError, match="times_s"):
        cpu_time_figure({"dense": 0.0}, tokens=1)
    with pytest.raises(TypeError, match="times_s"):
        cpu_time_figure({}, tokens=1)
    with pytest.raises(ValueError, match="tokens"):
        cpu_time_figure({"dense": 1.0}, tokens=0)


def test_tile_rows_figure():
    fig = tile_rows_figure([0, 1, 64, 65])
    real, pad = fig.data
    assert list(real.y) == [0, 1, 64, 65] and list(pad.y) == [0, 63, 0, 63]
    assert "130 routed rows → 256 tile rows: 49% padding, 1 of 4 experts idle" in fig.layout.title.text
    with pytest.raises(ValueError, match="expert_labels"):
        tile_rows_figure([1, 2], expert_labels=["a"])
    with pytest.raises(ValueError, match="pad_to"):
        tile_rows_figure([1, 2], pad_to=0)


def test_padding_by_model_figure():
    fig = padding_by_model_figure([1, 64, 4096], {"a": [0.98, 0.7, 0.03], "b": [0.98, 0.9, 0.1]})
    assert [tr.name for tr in fig.data] == ["a", "b"] and fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="fractions"):
        padding_by_model_figure([1, 2], {"a": [0.5]})
    with pytest.raises(ValueError, match="fractions"):
        padding_by_model_figure([1], {"a": [1.5]})
    with pytest.raises(ValueError, match="batch_tokens"):
        padding_by_model_figure([0], {"a": [0.5]})


def test_layer_time_figure():
    sw = layer_time_sweep("Mixtral-8x7B", [1, 8, 64, 4096], "h100_sxm", trace=_trace())
    fig = layer_time_figure(sw)
    assert MODEL_LABEL in fig.layout.title.text and "Mixtral-8x7B" in fig.layout.title.text
    times = [tr for tr in fig.data if tr.xaxis == "x"]
    speed = [tr for tr in fig.data if tr.xaxis == "x2"]
    assert len(times) == 3 and len(speed) == 2
    assert list(times[0].y) == pytest.approx([t.total_us for t in sw["dense"]])
    assert speed[1].y[-1] == pytest.approx(sw["dense"][-1].total_s / sw["ssmm"][-1].total_s)
    with pytest.raises(TypeError, match="sweep"):
        layer_time_figure({})


def test_expert_time_figure():
    c = np.array([3, 0, 1, 0, 0, 0, 0, 4])
    times = {op: layer_time(c, "Mixtral-8x7B", op) for op in TIME_OPS}
    fig = expert_time_figure(times)
    assert len(fig.data) == 3 and len(fig.data[0].x) == 8
    assert fig.data[2].y[7] == pytest.approx(times["ssmm"].per_expert_s[7] * 1e6)
    q = MOE_SHAPES["Qwen2-MoE-57B-A14B"]
    cq = np.zeros(64, np.int64)
    cq[:20] = 1
    tq = {"dense": layer_time(cq, q, "dense", num_tokens=4)}
    fq = expert_time_figure(tq)
    assert len(fq.data[0].x) == 17 and fq.data[0].x[-1] == "shared" and "16 busiest of 64" in fq.layout.title.text
    with pytest.raises(TypeError, match="times"):
        expert_time_figure({"dense": 1.0})


# ---------------------------------------------------------------------------------------------- panel
@pytest.fixture(scope="module")
def panel():
    return MoELayerPanel(_trace(), layer=1)


def test_panel_every_widget_over_its_range(panel):
    assert isinstance(panel.tiles, go.FigureWidget) and isinstance(panel.time, go.FigureWidget)
    assert panel.batch.continuous_update is False
    assert tuple(panel.batch.options) == BATCH_OPTIONS
    for b in BATCH_OPTIONS:
        panel.batch.value = b  # the widget callback
        v = panel.view
        assert v.settings == {"batch_tokens": b, "shape": "Mixtral-8x7B", "profile": "h100_sxm"}
        assert int(v.counts.sum()) == 2 * b and v.source.startswith("tiny-model routing")
        assert panel.tiles.layout.title.text == v.tiles_figure.layout.title.text
        assert list(panel.tiles.data[0].y) == v.counts.tolist()
        assert f"{b} token(s)" in panel.status.value
        assert v.times["dense"].total_s > v.times["spmm"].total_s > v.times["ssmm"].total_s > 0
    for s in MOE_SHAPES:
        panel.shape.value = s
        v = panel.view
        assert v.settings["shape"] == s and v.counts.size == MOE_SHAPES[s].num_experts
        assert s in panel.status.value and panel.time.layout.title.text == v.time_figure.layout.title.text
        if MOE_SHAPES[s].num_experts != 8:
            assert v.source.startswith("uniform random routing")
    for p in GPU_PROFILES:
        panel.profile.value = p
        assert panel.view.settings["profile"] == p and f"on {p}" in panel.status.value
        assert panel.view.elapsed_s < 2.0
    v = panel.update(batch_tokens=1, shape="Mixtral-8x7B", profile="h100_sxm")
    assert v.settings == {"batch_tokens": 1, "shape": "Mixtral-8x7B", "profile": "h100_sxm"}
    assert panel.batch.value == 1 and "memory-bound" in v.summary
    assert "compute-bound" in panel.update(batch_tokens=4096).summary


def test_panel_without_trace_and_errors():
    p = MoELayerPanel(batch_tokens=64, shape="DeepSeek-MoE-16B", profile="a100_sxm")
    assert p.view.source.startswith("uniform random routing (64 experts, top-6")
    assert p.view.times["dense"].shared_s > 0
    with pytest.raises(ValueError, match="batch_tokens"):
        MoELayerPanel(batch_tokens=3)
    with pytest.raises(ValueError, match="shape"):
        MoELayerPanel(shape="GPT-5")
    with pytest.raises(ValueError, match="profile"):
        MoELayerPanel(profile="tpu")
    with pytest.raises(TypeError, match="trace"):
        MoELayerPanel(trace=np.zeros(3))
    with pytest.raises(ValueError, match="layer"):
        MoELayerPanel(_trace(L=1, T=64), layer=1)
    with pytest.raises(ValueError, match="pad_to"):
        MoELayerPanel(pad_to=0)
    with pytest.raises(ValueError, match="batch_tokens"):
        p.compute(5, "Mixtral-8x7B", "h100_sxm")
