"""Lab 08 figures (pure builders) and the offload budget panel, driven over every widget value."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from samoyeds_lab.bench.end_to_end import (
    BOUND_POLICY,
    OFFLOAD_POLICIES,
    EndToEndResult,
    WayResult,
    offload_budget_curve,
    offload_policy_sweep,
)
from samoyeds_lab.viz.end_to_end import (
    E2E_COLORS,
    POLICY_COLORS,
    budget_curve_figure,
    end_to_end_figure,
    end_to_end_table,
    expert_calls_figure,
    kernel_records_figure,
    offload_policy_figure,
)
from samoyeds_lab.viz.end_to_end_panel import BATCH_OPTIONS, OffloadBudgetPanel


def _trace(L=2, T=37, E=8, seed=0):
    g = np.random.default_rng(seed)
    return np.stack([np.stack([g.choice(E, 2, replace=False) for _ in range(T)]) for _ in range(L)]).astype(np.int64)


@pytest.fixture(scope="module")
def replay():
    traces = {"en": _trace(seed=1), "de": _trace(seed=2)}
    preds = {}
    for d, t in traces.items():
        nl = t.copy()
        nl[0] = -1
        preds[d] = {"sida": t[:, :, ::-1].copy(), "next_layer": nl}
    return {"traces": traces, "predictions": preds, "popularity": np.ones((2, 8)), "num_experts": 8}


def _way(way, ppl, measured, model, nbytes, rec=None, recov=None):
    return WayResult(way=way, label=f"{way} <label>", ppl={"en": ppl, "overall": ppl}, ppl_source=f"live {way}",
                     recorded_ppl=rec, recorded_recovered_ppl=recov, recorded_source="recorded 2026-01-01" if rec else None,
                     measured_ms_per_token=measured, measured_source="measured, 2-core CPU" if measured else "n/a",
                     model_ms_per_token=model, model_source=f"model: {way}", expert_bytes=nbytes,
                     dense_expert_bytes=1000, memory_source=f"bytes of {way}")


@pytest.fixture(scope="module")
def result(replay):
    choice = offload_policy_sweep(replay["traces"], 8, capacity=4, predictions=replay["predictions"],
                                  popularity=replay["popularity"])
    ways = (_way("dense", 3.5, 0.07, 0.84, 1000, 4.4, 4.3), _way("samoyeds", 60.0, 0.33, 0.24, 281, 51.0, 10.6),
            _way("offloaded", 3.5, None, 30.0, 281, 4.4))
    return EndToEndResult(ways=ways, offload=choice,
                          settings={"eval_bytes_per_domain": 1020, "shape": "Mixtral-8x7B", "profile": "h100_sxm"},
                          machine={"device": "2-core CPU (x86_64)"}, backend_max_abs_diff=0.0,
                          trace_is_shipped_checkpoint=True, replay=replay)


def test_table(result):
    fig = end_to_end_table(result)
    t = fig.to_dict()["data"][0]
    assert t["type"] == "table"
    cells = t["cells"]["values"]
    assert cells[0] == ["dense &lt;label&gt;", "samoyeds &lt;label&gt;", "offloaded &lt;label&gt;"]  # escaped
    assert cells[1] == ["3.50", "60.00", "3.50"]
    assert cells[2] == ["4.40 → 4.30", "51.00 → 10.60", "4.40"]
    assert cells[3] == ["0.070", "0.330", "n/a here"]
    assert cells[5][1] == "281 (28%)"
    header = " ".join(t["header"]["values"])
    for word in ("live", "recorded", "measured", "model", "2-core CPU", "Mixtral-8x7B"):
        assert word in header


def test_side_by_side_figure(result):
    d = end_to_end_figure(result).to_dict()
    names = [tr.get("name") for tr in d["data"]]
    assert "recorded one-shot (whole held-out split)" in names and "recorded after recovery fine-tune" in names
    assert "measured here (tiny model)" in names and any(n and n.startswith("model:") for n in names)
    measured = next(tr for tr in d["data"] if tr.get("name") == "measured here (tiny model)")
    model = next(tr for tr in d["data"] if (tr.get("name") or "").startswith("model:"))
    assert list(measured["x"]) == ["dense", "samoyeds"]  # the offloaded way has no measurement
    assert list(measured["y"]) == pytest.approx([0.07, 0.33]) and list(model["y"]) == pytest.approx([0.84, 0.24, 30.0])
    # measured (tiny model, this CPU) and modelled (Mixtral experts, a GPU) never share an axis
    assert measured["yaxis"] == "y2" and model["yaxis"] == "y3"
    assert d["layout"]["yaxis2"].get("type") in (None, "linear") and "measured" in d["layout"]["yaxis2"]["title"]["text"]
    assert d["layout"]["yaxis3"]["type"] == "log" and "model" in d["layout"]["yaxis3"]["title"]["text"]
    titles = [a["text"] for a in d["layout"]["annotations"]]
    assert any("measured here: tiny model" in t and "2-core CPU (x86_64)" in t for t in titles)
    assert any("model: Mixtral-8x7B experts" in t and "h100_sxm" in t for t in titles)
    mem = d["data"][-1]
    assert list(mem["y"]) == pytest.approx([100.0, 28.1, 28.1])
    assert mem["marker"]["color"] == [E2E_COLORS["dense"], E2E_COLORS["samoyeds"], E2E_COLORS["offloaded"]]


def test_policy_figure(result):
    c = result.offload
    d = offload_policy_figure(c).to_dict()
    bars = [tr for tr in d["data"] if tr["type"] == "bar"]
    assert [b["name"] for b in bars] == ["compute", "demand-load stall", "exposed prefetch"]
    labels = list(bars[0]["y"])
    assert labels[0] == f"★ {c.best}" and labels[-1] == f"{BOUND_POLICY} (bound)"
    assert len(labels) == len(OFFLOAD_POLICIES) + 1
    total = np.sum([list(b["x"]) for b in bars], axis=0)
    order = [*c.ranking(), BOUND_POLICY]
    assert total == pytest.approx([c.policies[p].ms_per_token for p in order])
    with pytest.raises(TypeError, match="choice"):
        offload_policy_figure({"lru": 1})


def test_budget_curve_figure(replay):
    curve = offload_budget_curve(replay, [1, 4, 16])
    d = budget_curve_figure(curve, resident_ms=0.5, samoyeds_ms=0.2, mark=4).to_dict()
    assert [tr["name"] for tr in d["data"]] == [*OFFLOAD_POLICIES, BOUND_POLICY]
    assert d["data"][0]["line"]["color"] == POLICY_COLORS["lru"]
    assert list(d["data"][0]["x"]) == [1, 4, 16]
    assert len(d["layout"]["shapes"]) == 3 and d["layout"]["yaxis"]["type"] == "log"
    with pytest.raises(ValueError, match="curve"):
        budget_curve_figure({})
    with pytest.raises(TypeError, match="choice"):
        budget_curve_figure({1: "x"})


def test_expert_calls_figure():
    calls = {"rows": 256, "cols": 128, "dtype": "float32", "dense_bytes": 131072, "compressed_bytes": 34832,
             "path": "CPU kernels (avx512)", "calls": [{"tokens": 1, "samoyeds_us": 50.0, "kernel_us": 12.0,
                                                        "dense_us": 4.0},
                                                       {"tokens": 64, "samoyeds_us": 130.0, "kernel_us": 80.0,
                                                        "dense_us": 50.0}]}
    d = expert_calls_figure(calls).to_dict()
    by = {tr["name"]: tr for tr in d["data"]}
    assert list(by["samoyeds backend's ssmm (whole call)"]["y"]) == [50.0, 130.0]
    assert list(by["the CPU kernel alone"]["y"]) == [12.0, 80.0]
    assert list(by["torch dense F.linear, same pruned weight"]["x"]) == ["1 token", "64 tokens"]
    t = d["layout"]["title"]["text"]
    assert "measured on this CPU" in t and "131 kB dense, 35 kB compressed" in t and "CPU kernels (avx512)" in t
    no_kernel = dict(calls, calls=[dict(c, kernel_us=None) for c in calls["calls"]])
    assert len(expert_calls_figure(no_kernel).data) == 2  # no kernel here: no bar for it
    with pytest.raises(ValueError, match="calls"):
        expert_calls_figure({"rows": 1})
    with pytest.raises(ValueError, match="calls"):
        expert_calls_figure(dict(calls, calls=[]))


def test_kernel_records_figure():
    empty = kernel_records_figure([]).to_dict()
    assert "No GPU kernel results have been recorded yet" in empty["layout"]["annotations"][0]["text"]
    rec = {"device": "DEV", "date": "2026-01-02", "model": "Mixtral-8x7B", "op": "ssmm", "m": 14336, "k": 4096,
           "tokens": 16, "dtype": "float16", "ms": 0.5, "baseline": "torch_dense", "baseline_ms": 1.0}
    t = kernel_records_figure([rec]).to_dict()["data"][0]
    assert t["cells"]["values"][0] == ["DEV"] and t["cells"]["values"][1] == ["2026-01-02"]
    assert t["cells"]["values"][-1] == ["2.00×"]
    with pytest.raises(TypeError, match="records"):
        kernel_records_figure("none")
    with pytest.raises(ValueError, match=r"records\[0\]"):
        kernel_records_figure([{"device": "x"}])


def test_figures_reject_other_objects():
    with pytest.raises(TypeError, match="result"):
        end_to_end_table({})
    with pytest.raises(TypeError, match="result"):
        end_to_end_figure(None)


# ------------------------------------------------------------------------------------------- panel
def test_panel_every_budget_and_batch(replay):
    panel = OffloadBudgetPanel(replay, capacity=4)
    assert isinstance(panel.figure, go.FigureWidget)
    assert panel.capacity.continuous_update is False
    assert (panel.capacity.min, panel.capacity.max) == (1, 16)
    seen = {}
    for cap in range(panel.capacity.min, panel.capacity.max + 1):
        panel.capacity.value = cap  # the widget callback
        v = panel.view
        assert v.settings == {"capacity": cap, "batch_tokens": 1}
        assert f"{cap}/16 experts" in panel.status.value
        assert panel.figure.layout.title.text == v.figure.layout.title.text
        totals = [tr.x for tr in panel.figure.data if tr.type == "bar"]
        seen[cap] = v.choice.policies[BOUND_POLICY].ms_per_token
        assert np.sum(totals, axis=0)[-1] == pytest.approx(seen[cap])  # the bound's bar, last row
    assert seen[1] >= seen[8] >= seen[16]
    for b in BATCH_OPTIONS:
        panel.batch.value = b
        assert panel.view.settings["batch_tokens"] == b and f"{b} token(s)/step" in panel.status.value
    v = panel.update(capacity=2, batch_tokens=1)
    assert v.settings == {"capacity": 2, "batch_tokens": 1} and panel.capacity.value == 2
    assert panel.compute(2, 1).choice is v.choice  # cached


def test_panel_errors(replay):
    with pytest.raises(ValueError, match="replay"):
        OffloadBudgetPanel({"traces": {}})
    with pytest.raises(ValueError, match="capacity"):
        OffloadBudgetPanel(replay, capacity=17)
    with pytest.raises(ValueError, match="batch_tokens"):
        OffloadBudgetPanel(replay, batch_tokens=3)
