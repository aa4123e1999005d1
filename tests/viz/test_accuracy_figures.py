"""samoyeds_lab.viz.accuracy: the perplexity table and trade-off scatters, inspected through
fig.to_dict(), on hand-made sweep records (no model runs), plus the AccuracyPanel's widgets and one
live run on a tiny random checkpoint."""

import math
import re

import pytest
import torch

from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.viz.accuracy import (
    AccuracyPanel,
    convergence_figure,
    pareto_figure,
    pareto_front,
    ppl_density_figure,
    ppl_speed_figure,
    sweep_table,
)

HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def rec(label, pattern, method, density, speed, ppl, vector=None, recovered=None, joint=None):
    dense_b = 1_000_000
    return {"label": label, "pattern": pattern, "method": method, "vector": vector, "density": density,
            "joint": joint,
            "expert_bytes": int(dense_b / speed), "dense_expert_bytes": dense_b, "modelled_decode_speedup": speed,
            "heldout_ppl": {"en": ppl + 1, "de": ppl, "overall": ppl},
            "eval_tokens": {"en": 100, "de": 100, "overall": 200},
            "recovered_ppl": None if recovered is None else {"en": recovered + 1, "de": recovered,
                                                             "overall": recovered}}


RECORDS = [
    rec("dense", "dense", "none", 1.0, 1.0, 6.0),
    rec("2:4 · magnitude", "2:4", "magnitude", 0.5, 1.78, 7.5),
    rec("2:4 · wanda", "2:4", "wanda", 0.5, 1.78, 7.0),
    rec("Samoyeds V=128 · magnitude", "samoyeds", "magnitude", 0.25, 3.55, 20.0, vector=128),
    rec("Samoyeds V=128 · wanda", "samoyeds", "wanda", 0.25, 3.55, 15.0, vector=128),
]
RECOVERED = [dict(r, recovered_ppl={"en": r["heldout_ppl"]["overall"] * 0.9 + 1, "de": r["heldout_ppl"]["overall"] * 0.9,
                                    "overall": r["heldout_ppl"]["overall"] * 0.9}) for r in RECORDS]


def colours(obj):
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "color" in k.lower():
                out += [s for s in (v if isinstance(v, list) else [v]) if isinstance(s, str)]
                if isinstance(v, list):
                    out += [s for sub in v if isinstance(sub, list) for s in sub if isinstance(s, str)]
            out += colours(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out += colours(v)
    return out


# ---------------------------------------------------------------------------------------------- table
def test_table_rows_and_columns():
    fig = sweep_table(RECORDS)
    t = fig.to_dict()["data"][0]
    assert t["type"] == "table"
    header = [h.replace("<b>", "").replace("</b>", "") for h in t["header"]["values"]]
    assert header[:4] == ["configuration", "density", "expert bytes", "modelled<br>decode speed-up"]
    assert header[4:] == ["ppl en", "ppl de", "ppl overall", "Δ vs dense"]
    cells = t["cells"]["values"]
    assert cells[0] == [r["label"] for r in RECORDS]
    assert cells[1] == ["100%", "50%", "50%", "25%", "25%"]
    assert cells[3][0] == "1.00×" and cells[3][3] == "3.55×"
    assert cells[6] == ["6.000", "7.500", "7.000", "20.000", "15.000"]
    assert cells[7] == ["—", "+25.0%", "+16.7%", "+233.3%", "+150.0%"]
    assert "(100.0%)" in cells[2][0]


def test_table_with_recovery_compares_against_the_finetuned_dense():
    t = sweep_table(RECOVERED).to_dict()["data"][0]
    assert len(t["header"]["values"]) == 10
    cells = t["cells"]["values"]
    assert cells[8][0] == f"{6.0 * 0.9:.3f}"
    assert cells[9] == ["—", "+25.0%", "+16.7%", "+233.3%", "+150.0%"]  # ratios unchanged by the common 0.9


# ---------------------------------------------------------------------------------------------- scatters
@pytest.mark.parametrize("builder, key", [(ppl_density_figure, "density"), (ppl_speed_figure, "modelled_decode_speedup")])
def test_scatter_traces_by_method_with_dense_line(builder, key):
    d = builder(RECORDS).to_dict()
    names = [tr["name"] for tr in d["data"]]
    assert names == ["dense", "magnitude", "wanda", "2:4", "Samoyeds V=128"]  # colours, then the symbol key
    wanda = d["data"][2]
    true_x = [r[key] for r in RECORDS if r["method"] == "wanda"]
    span = d["layout"]["xaxis"]["range"][1] - d["layout"]["xaxis"]["range"][0]
    # points sharing an x are spread by at most 1.5% of the axis for legibility; hover keeps the truth
    assert all(abs(x - t) <= 0.015 * span + 1e-12 for x, t in zip(wanda["x"], true_x))
    assert [c[0] for c in wanda["customdata"]] == ["2:4 · wanda", "Samoyeds V=128 · wanda"]
    assert list(wanda["y"]) == [7.0, 15.0]
    assert wanda["marker"]["symbol"] == ["circle", "hexagon"]
    assert d["data"][0]["x"] == (1.0,) or list(d["data"][0]["x"]) == [1.0]  # alone at its x: not moved
    assert d["layout"]["yaxis"]["type"] == "log"
    lo, hi = d["layout"]["yaxis"]["range"]
    assert 10**lo < 6.0 and 10**hi > 20.0
    (line,) = d["layout"]["shapes"]
    assert line["y0"] == line["y1"] == 6.0 and line["line"]["dash"] == "dash"
    assert d["layout"]["annotations"][0]["y"] == pytest.approx(math.log10(6.0))  # log axis: log10 units
    assert "one-shot" in d["layout"]["title"]["text"]
    assert all(HEX.match(c) for c in colours(d["data"]))


def test_scatter_per_domain_recovered_and_live():
    d = ppl_speed_figure(RECOVERED, [RECORDS[4]], domain="en", recovered=True).to_dict()
    assert d["data"][0]["y"][0] == pytest.approx(6.0 * 0.9 + 1)
    live = d["data"][-1]
    assert live["name"].startswith("live") and live["marker"]["symbol"] == "star"
    assert list(live["y"]) == [16.0]  # live records are one-shot, domain "en" = ppl + 1
    assert "after recovery" in d["layout"]["title"]["text"]
    assert "modelled" in d["layout"]["xaxis"]["title"]["text"]


@pytest.mark.parametrize("call, exc, match", [
    (lambda: sweep_table([]), ValueError, "records"),
    (lambda: sweep_table("x"), ValueError, "records"),
    (lambda: sweep_table([{"label": "a"}]), ValueError, "missing field 'pattern'"),
    (lambda: ppl_density_figure(RECORDS, domain="fr"), ValueError, "domain"),
    (lambda: ppl_density_figure(RECORDS, domain=1), TypeError, "domain"),
    (lambda: ppl_density_figure(RECORDS, recovered=True), ValueError, "recovered"),
    (lambda: ppl_speed_figure(RECORDS, live=[{"label": "x"}]), ValueError, "live"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------- panel
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = TinyMoEConfig(hidden=128, intermediate=128, layers=1, heads=2, num_experts=4, top_k=2, max_seq=32)
    d = tmp_path_factory.mktemp("tiny")
    TinyMoEForCausalLM(cfg).save_pretrained(d)
    return d


def test_panel_widgets_and_a_live_run(model_dir):
    p = AccuracyPanel(model_dir, RECORDS, calib_tokens=32, eval_tokens=32)
    assert [tr.name for tr in p.figure.data][:3] == ["dense", "magnitude", "wanda"]
    assert p.controls["vector"].continuous_update is False
    p.controls["pattern"].value = "2:4"
    assert p.controls["vector"].disabled
    assert p.config() == {"pattern": "2:4", "method": "obs"}  # the panel opens on OBS, V = 32
    r = p.run(pattern="Samoyeds", vector=32, method="magnitude")
    assert r["label"] == "Samoyeds V=32 · magnitude" and r["density"] == 0.25
    assert [t.name for t in p.figure.data if t.name.startswith("live")] and len(p.live) == 1
    assert "Samoyeds V=32" in p.status.value and not p.button.disabled
    with pytest.raises(ValueError, match="vector"):
        p.run(vector=48)
    with pytest.raises(TypeError, match="unexpected"):
        p.run(density=0.5)


def test_panel_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        AccuracyPanel(tmp_path, RECORDS)


def test_panel_every_widget_value_moves_the_ring_without_a_run(model_dir):
    """Issue 14: the panel reacts to every widget at once (the ring and the recorded numbers); only the
    button prunes. Over the whole range of every widget."""
    import itertools

    from samoyeds_lab.moe.accuracy import config_label

    p = AccuracyPanel(model_dir, RECORDS, calib_tokens=32, eval_tokens=32)
    labels = {r["label"]: r for r in RECORDS}
    opts = p.options()
    seen = set()
    for pattern, vector, method in itertools.product(opts["pattern"], opts["vector"], opts["method"]):
        p.controls["pattern"].value = pattern
        p.controls["vector"].value = vector
        p.controls["method"].value = method
        label = config_label(p.config())
        ring = next(t for t in p.figure.data if t.name == "selected")
        assert label in p.status.value.replace("&#x27;", "'")
        if label in labels:
            assert len(ring.y) == 1 and ring.y[0] == pytest.approx(labels[label]["heldout_ppl"]["overall"])
            assert "recorded" in p.status.value
            seen.add(label)
        else:
            assert len(ring.y) == 0 and "not in the recorded sweep" in p.status.value
    assert seen, "no recorded configuration was reachable from the widgets"
    assert not p.live  # nothing was pruned


# ---------------------------------------------------------------------------------------------- the study
# equal-density records with OBS, VENOM, 1:4, unstructured (CSR bytes above dense) and independent rows
STUDY = RECOVERED[:1] + [
    rec("1:4 · obs", "1:4", "obs", 0.25, 3.6, 6.5, recovered=6.2),
    rec("VENOM 64:2:8 · obs", "venom", "obs", 0.25, 3.5, 7.2, vector=64, recovered=6.4),
    rec("Samoyeds V=32 · obs", "samoyeds", "obs", 0.25, 3.54, 9.0, vector=32, joint=True, recovered=6.6),
    rec("Samoyeds V=32 · wanda", "samoyeds", "wanda", 0.25, 3.54, 14.0, vector=32, joint=True),
    rec("Samoyeds V=32 · obs · independent", "samoyeds", "obs", 0.25, 3.54, 12.0, vector=32, joint=False),
    rec("2:4 · obs", "2:4", "obs", 0.5, 1.78, 6.2, recovered=5.6),
    rec("unstructured 50% · obs", "unstructured", "obs", 0.5, 0.66, 6.1),
]


@pytest.mark.parametrize("points, front", [
    ([(1, 5)], [0]),
    ([(1, 9), (2, 6), (3, 7), (4, 5)], [0, 1, 3]),  # (3, 7) is beaten by (2, 6)
    ([(2, 6), (1, 9), (2, 6)], [1, 0]),  # equal points: the first; ascending bytes
    ([(1, 5), (2, 5), (3, 4)], [0, 2]),  # equal ppl with more bytes is not optimal
])
def test_pareto_front_table(points, front):
    assert pareto_front(points) == front


def test_pareto_figure_one_shot_and_recovered_fronts():
    d = pareto_figure(STUDY).to_dict()
    fronts = [t for t in d["data"] if t["name"].startswith("Pareto front")]
    assert [t["name"] for t in fronts] == ["Pareto front, one-shot", "Pareto front, after recovery"]
    mib = {r["label"]: r["expert_bytes"] / 2**20 for r in STUDY}
    one = fronts[0]
    # one-shot: 1:4 obs (fewest bytes, 6.5), 2:4 obs (6.2), dense (6.0); unstructured 50% (6.1) has more bytes
    # than dense here (CSR indices) and a higher ppl, so it is not on the front
    assert list(one["x"]) == pytest.approx(sorted([mib["1:4 · obs"], mib["2:4 · obs"], mib["dense"]]))
    assert list(one["y"]) == [6.5, 6.2, 6.0]
    rec_front = fronts[1]
    assert list(rec_front["y"]) == pytest.approx([6.2, 5.6, 5.4])  # 1:4, 2:4, dense (6 · 0.9)
    obs = [t for t in d["data"] if t["name"] == "obs (one-shot)"][0]
    assert obs["marker"]["color"] == "#" + obs["marker"]["color"].lstrip("#") and HEX.match(obs["marker"]["color"])
    labels = [c[0] for c in obs["customdata"]]
    assert "Samoyeds V=32 · obs · independent" not in labels and "VENOM 64:2:8 · obs" in labels
    rec_obs = [t for t in d["data"] if t["name"] == "obs (after recovery)"][0]
    assert all(sym.endswith("-open") for sym in rec_obs["marker"]["symbol"])
    assert [a["text"] for a in d["layout"]["annotations"]][:3] == ["1:4 · obs", "2:4 · obs", "dense"]
    assert d["layout"]["yaxis"]["type"] == "log" and d["layout"]["yaxis"]["ticktext"]  # labelled ticks
    legend = [t["name"] for t in d["data"] if t.get("showlegend", True) and not t["name"].startswith("Pareto")]
    assert {"dense", "obs", "wanda", "1:4", "VENOM 64:2:8", "Samoyeds V=32", "2:4", "unstructured 50%"} <= set(legend)
    assert all(HEX.match(c) for c in colours(d["data"]))
    only = pareto_figure(STUDY, recovered=False, independent=True).to_dict()
    assert [t["name"] for t in only["data"] if t["name"].startswith("Pareto")] == ["Pareto front, one-shot"]
    labels = [c[0] for t in only["data"] if t.get("customdata") for c in t["customdata"]]
    assert "Samoyeds V=32 · obs · independent" in labels
    with pytest.raises(ValueError, match="recovered"):
        pareto_figure(RECORDS, recovered=True)


def test_scatters_take_obs_records_and_hide_independent_ones():
    d = ppl_speed_figure(STUDY).to_dict()
    assert [t["name"] for t in d["data"][:3]] == ["dense", "wanda", "obs"]
    shown = [c[0] for t in d["data"] if t.get("customdata") for c in t["customdata"]]
    assert "Samoyeds V=32 · obs · independent" not in shown
    d = ppl_density_figure(STUDY, independent=True).to_dict()
    shown = [c[0] for t in d["data"] if t.get("customdata") for c in t["customdata"]]
    assert "Samoyeds V=32 · obs · independent" in shown
    assert sweep_table(STUDY).to_dict()["data"][0]["cells"]["values"][0] == [r["label"] for r in STUDY]


def test_panel_joint_toggle_and_every_pattern(model_dir):
    p = AccuracyPanel(model_dir, STUDY, calib_tokens=32, eval_tokens=32)
    assert "joint" in p.controls and p.options()["joint"] == (True, False)
    ring = next(t for t in p.figure.data if t.name == "selected")
    assert p.config() == {"pattern": "samoyeds", "method": "obs", "vector": 32}
    assert ring.y == (9.0,)
    p.controls["joint"].value = False  # the toggle moves the ring to the independent record
    assert p.config()["joint"] is False and ring.y == (12.0,)
    p.controls["pattern"].value = "VENOM"
    assert p.controls["joint"].disabled and p.controls["vector"].disabled
    assert p.config() == {"pattern": "venom", "method": "obs", "vector": 64} and ring.y == (7.2,)
    p.controls["pattern"].value = "unstructured 50%"
    assert p.config() == {"pattern": "unstructured", "method": "obs", "density": 0.5} and ring.y == (6.1,)
    p.controls["pattern"].value = "1:4"
    assert ring.y == (6.5,)
    r = p.run(pattern="VENOM", method="magnitude")
    assert r["label"] == "VENOM 64:2:8 · magnitude" and r["density"] == 0.25
    # without independent records there is no toggle (no widget that does nothing)
    assert "joint" not in AccuracyPanel(model_dir, RECORDS).controls


def test_convergence_figure_curves_and_chosen_steps():
    conv = {"curves": {"dense": [{"step": 0, "ppl": 4.0}, {"step": 50, "ppl": 3.9}],
                       "Samoyeds V=32 · wanda": [{"step": 0, "ppl": 24.0}, {"step": 50, "ppl": 7.0}]},
            "chosen_steps": 50, "converged_at": None, "window": 100, "tol": 0.02, "eval_tokens_per_domain": 2048}
    d = convergence_figure(conv).to_dict()
    assert [t["name"] for t in d["data"]] == ["dense", "Samoyeds V=32 · wanda"]
    assert list(d["data"][1]["y"]) == [24.0, 7.0] and list(d["data"][1]["x"]) == [0, 50]
    (line,) = d["layout"]["shapes"]
    assert line["x0"] == line["x1"] == 50 and "recovery: 50 steps" in d["layout"]["annotations"][0]["text"]
    assert "not reached" in d["layout"]["title"]["text"] and "2,048 bytes" in d["layout"]["title"]["text"]
    assert d["layout"]["yaxis"]["type"] == "log" and all(HEX.match(c) for c in colours(d["data"]))
    with pytest.raises(ValueError, match="convergence"):
        convergence_figure({"curves": {}})
    with pytest.raises(ValueError, match="ppl"):
        convergence_figure({"curves": {"a": [{"step": 0, "ppl": -1.0}]}})
