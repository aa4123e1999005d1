"""Pure figure builders of samoyeds_lab.viz.routing, inspected through fig.to_dict(), on hand-made traces."""

import base64
import math
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from samoyeds_lab.routing import (
    coactivation,
    expert_counts,
    expert_frequency,
    imbalance,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)
from samoyeds_lab.viz.routing import (
    DOMAIN_COLORS,
    EXPERT_COLORS,
    MIXTRAL_LOCALITY,
    byte_labels,
    coactivation_heatmap,
    domain_hotness_figure,
    expert_colors,
    hotness_heatmap,
    imbalance_figure,
    locality_figure,
    padding_curve_figure,
    token_timeline,
    tokens_per_expert_figure,
    transition_heatmap,
)
from tests.routing.helpers import hand_trace, random_trace

HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def arr(v):
    """An array from fig.to_dict(): plotly encodes numpy arrays as {'dtype', 'bdata', 'shape'}."""
    if isinstance(v, dict) and "bdata" in v:
        out = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape:
            out = out.reshape([int(x) for x in str(shape).split(",")])
        return out
    return np.asarray(v, dtype=object)


def colours_in(obj):
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "color" in k.lower() and k != "coloraxis":  # coloraxis names an axis ("coloraxis"), not a colour
                out += strings(v)
            out += colours_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out += colours_in(v)
    return out


def strings(v):
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)):
        return [s for x in v for s in strings(x)]
    return []


# A skewed 3-layer trace with 2 sequences, E=6, k=2 (awkward sizes).
TRACE = random_trace(3, 97, 2, 6, seed=5, skew=0.6, seq=[60, 37])
E, K = TRACE.num_experts, TRACE.top_k


def all_figures():
    loc = temporal_locality(TRACE)
    tpe = tokens_per_expert(TRACE, 16)
    return {
        "hotness": hotness_heatmap(expert_frequency(TRACE) * K, uniform=K / E, highlight_layer=1),
        "domains": domain_hotness_figure({"en": expert_frequency(TRACE) * K, "x": expert_frequency(TRACE) * K},
                                         uniform=K / E),
        "imbalance": imbalance_figure({"en": imbalance(TRACE).max_over_mean}, worst=E / K),
        "timeline": token_timeline(TRACE.token_ids[:19], TRACE.topk_ids[:, :19], num_experts=E, view="all",
                                   weights=TRACE.weights[:, :19], highlight_layer=2),
        "locality": locality_figure({"en": loc, "code": loc}),
        "locality1": locality_figure(loc, metric="first"),
        "transition": transition_heatmap(transition_matrix(TRACE, 0), row_counts=expert_counts(TRACE, choice=0)[0]),
        "coactivation": coactivation_heatmap(coactivation(TRACE, 1), num_tokens=TRACE.num_tokens),
        "tokens": tokens_per_expert_figure(tpe.counts[0], batch_tokens=16, top_k=K),
        "padding": padding_curve_figure([1, 2, 4], torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.6, 0.3, 0.0]),
                                        highlight=2),
    }


FIGS = all_figures()


# ---------------------------------------------------------------------------------------------- common
@pytest.mark.parametrize("name", list(FIGS))
def test_every_figure_is_a_figure_with_hex_colours_and_json_safe_data(name):
    fig = FIGS[name]
    assert isinstance(fig, go.Figure)
    d = fig.to_dict()
    bad = [c for c in colours_in(d) if not HEX.match(c)]
    assert not bad, f"non-hex colours: {bad[:5]}"
    # a FigureWidget sends JSON: no NaN/inf anywhere (plotly's strict JSON encoder refuses them)
    fig.to_json(validate=True, engine="json")
    import json

    json.loads(fig.to_json(), parse_constant=lambda c: pytest.fail(f"{name}: {c} in figure JSON"))


def test_palettes_are_hex_and_distinct():
    assert all(HEX.match(c) for c in EXPERT_COLORS + tuple(DOMAIN_COLORS.values()))
    for n in (1, 8, 12, 13, 64):
        cols = expert_colors(n)
        assert len(cols) == n and all(HEX.match(c) for c in cols)
        assert len(set(cols)) == n
    assert expert_colors(5) == list(EXPERT_COLORS[:5])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_experts"):
            expert_colors(bad)
    for bad in (2.0, True, None):  # wrong kinds
        with pytest.raises(TypeError, match="num_experts"):
            expert_colors(bad)


# ---------------------------------------------------------------------------------------------- bytes
@pytest.mark.parametrize("text, expected", [
    (b"ab c", ["a", "b", "␣", "c"]),
    (b"x\ny\t", ["x", "↵", "y", "⇥"]),
    ("ä ß".encode(), ["ä", "·", "␣", "ß", "·"]),
    ("€!".encode(), ["€", "·", "·", "!"]),
    ("🙂".encode(), ["🙂", "·", "·", "·"]),
    (b"\x00\x7f\r", ["\\x00", "\\x7f", "␍"]),
    (b"\xc3", ["\\xc3"]),  # truncated sequence
    (b"\xa4a", ["\\xa4", "a"]),  # stray continuation byte
    (b"\xc3(", ["\\xc3", "("]),  # invalid continuation
])
def test_byte_labels(text, expected):
    labels = byte_labels(torch.tensor(list(text)))
    assert labels == expected and len(labels) == len(text)


@pytest.mark.parametrize("arg, exc", [(torch.tensor([256]), ValueError), (torch.tensor([-1]), ValueError),
                                      (torch.tensor([1.0]), TypeError), (torch.zeros(2, 2, dtype=torch.long), ValueError),
                                      ([65], TypeError), (torch.tensor([], dtype=torch.long), ValueError)])
def test_byte_labels_rejects_bad_input(arg, exc):
    with pytest.raises(exc, match="token_ids"):
        byte_labels(arg)


# ---------------------------------------------------------------------------------------------- hotness
def test_hotness_heatmap_values_white_point_and_highlight():
    u = expert_frequency(TRACE) * K
    fig = hotness_heatmap(u, uniform=K / E, highlight_layer=1, layer_names=TRACE.layer_names)
    hm = fig.data[0]
    np.testing.assert_allclose(np.asarray(hm.z, dtype=float), u.numpy())
    assert list(hm.y) == ["l0", "l1", "l2"] and list(hm.x) == [f"e{e}" for e in range(E)]
    assert hm.text[0][0] == f"{float(u[0, 0]):.0%}"
    # white sits at the uniform share on a 0..zmax scale
    zmax = max(float(u.max()), 2 * K / E)
    assert hm.zmin == 0 and hm.zmax == pytest.approx(zmax)
    mid = [c for c in hm.colorscale if c[1] == "#f8fafc"][0][0]
    assert mid == pytest.approx((K / E) / zmax)
    rect = fig.layout.shapes[0]
    assert (rect.y0, rect.y1) == (0.5, 1.5)
    assert "uniform (33.3%)" in fig.layout.title.text
    assert not hotness_heatmap(u, uniform=K / E).layout.shapes


def test_hotness_layer_names_are_shortened():
    tr = hand_trace()
    fig = hotness_heatmap(expert_frequency(tr), uniform=0.25, layer_names=tr.layer_names)
    assert list(fig.data[0].y) == ["L0", "L1"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(usage=torch.rand(3)), "usage"), (dict(usage=torch.full((2, 4), 1.5)), "usage"),
    (dict(usage=torch.full((2, 4), float("nan"))), "usage"), (dict(uniform=0.0), "uniform"),
    (dict(uniform=True), "uniform"), (dict(highlight_layer=2), "highlight_layer"),
    (dict(layer_names=["a"]), "layer_names"), (dict(zmax=-1.0), "zmax"),
])
def test_hotness_heatmap_rejects_bad_input(kwargs, match):
    args = dict(usage=torch.full((2, 4), 0.25), uniform=0.25) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        hotness_heatmap(args.pop("usage"), **args)


def test_domain_hotness_shares_one_colour_scale():
    a = expert_frequency(TRACE) * K
    b = (expert_frequency(TRACE) * K).flip(1)
    fig = domain_hotness_figure({"en": a, "code": b}, uniform=K / E)
    assert [t.name for t in fig.data] == ["en", "code"]
    assert all(t.coloraxis == "coloraxis" for t in fig.data)
    assert fig.layout.coloraxis.cmax == pytest.approx(max(float(a.max()), 2 * K / E))
    assert [a.text for a in fig.layout.annotations][:2] == ["en", "code"]
    with pytest.raises(ValueError, match="code"):
        domain_hotness_figure({"en": a, "code": a[:2]}, uniform=K / E)
    with pytest.raises(ValueError, match="usage"):
        domain_hotness_figure({}, uniform=K / E)


def test_imbalance_figure_bars_and_reference_lines():
    im = {"en": torch.tensor([1.0, 2.5]), "de": torch.tensor([1.2, 3.9])}
    fig = imbalance_figure(im, worst=4.0)
    assert [t.name for t in fig.data] == ["en", "de"]
    np.testing.assert_allclose(arr(fig.to_dict()["data"][1]["y"]).astype(float), [1.2, 3.9])
    assert fig.data[0].marker.color == DOMAIN_COLORS["en"]
    assert sorted(s.y0 for s in fig.layout.shapes) == [1.0, 4.0]
    assert len(imbalance_figure(im, ideal=None).layout.shapes) == 0
    with pytest.raises(ValueError, match="de"):
        imbalance_figure({"en": torch.ones(2), "de": torch.ones(3)})
    with pytest.raises(ValueError, match="finite"):
        imbalance_figure({"en": torch.tensor([float("inf")])})


# ---------------------------------------------------------------------------------------------- timeline
@pytest.mark.parametrize("view", ["first", "all"])
def test_timeline_cells_are_the_trace(view):
    a, b = 3, 22
    fig = token_timeline(TRACE.token_ids[a:b], TRACE.topk_ids[:, a:b], num_experts=E, view=view,
                         weights=TRACE.weights[:, a:b], first_position=a, highlight_layer=1)
    hm = fig.data[0]
    kk = 1 if view == "first" else K
    z = np.asarray(hm.z, dtype=float)
    assert z.shape == (3 * kk, b - a)
    for l in range(3):
        for j in range(kk):
            row = l * kk + j
            # cell value = band centre of code e + E·j
            np.testing.assert_array_equal(z[row] - 0.5 - E * j, TRACE.topk_ids[l, a:b, j].numpy())
            assert [c[0] for c in hm.customdata[row]] == TRACE.topk_ids[l, a:b, j].tolist()
    assert list(hm.x) == list(range(a, b))
    assert list(hm.text[0]) == byte_labels(TRACE.token_ids[a:b])
    # the colour band of code c is [c/n, (c+1)/n]: a z value lands inside its own band
    n = E * kk
    assert hm.zmin == 0 and hm.zmax == n and len(hm.colorscale) == 2 * n
    for c in range(n):
        lo, hi = hm.colorscale[2 * c], hm.colorscale[2 * c + 1]
        assert lo[0] == pytest.approx(c / n) and hi[0] == pytest.approx((c + 1) / n) and lo[1] == hi[1]
    assert hm.colorscale[0][1] == EXPERT_COLORS[0]
    # highlight box around the selected layer's rows
    box = fig.layout.shapes[0]
    assert (box.y0, box.y1) == (1 * kk - 0.5, 1 * kk + kk - 0.5)
    # legend: one entry per expert in its colour
    legend = [t for t in fig.data if t.type == "scatter"]
    assert [t.marker.color for t in legend] == expert_colors(E)


def test_timeline_second_choices_are_lighter_tints():
    fig = token_timeline(TRACE.token_ids[:5], TRACE.topk_ids[:, :5], num_experts=E, view="all")
    scale = fig.data[0].colorscale
    first, second = scale[0][1], scale[2 * E][1]
    assert first == EXPERT_COLORS[0] and second != first
    lum = lambda h: sum(int(h[i : i + 2], 16) for i in (1, 3, 5))  # noqa: E731
    assert lum(second) > lum(first)


def test_timeline_without_weights_has_no_nan():
    fig = token_timeline(torch.tensor([104, 105]), torch.tensor([[[0, 1], [1, 0]]]), num_experts=2)
    assert "weight" not in fig.data[0].hovertemplate
    assert fig.data[0].customdata[0][0][3] is None


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(token_ids=torch.tensor([1, 2])), ValueError, "token_ids"),
    (dict(topk_ids=torch.zeros(2, 3, 2)), TypeError, "topk_ids"),
    (dict(num_experts=1), ValueError, "num_experts"),
    (dict(topk_ids=torch.full((1, 3, 2), 7)), ValueError, "topk_ids"),
    (dict(weights=torch.ones(1, 3, 1)), ValueError, "weights"),
    (dict(view="second"), ValueError, "view"),
    (dict(first_position=-1), ValueError, "first_position"),
    (dict(highlight_layer=1), ValueError, "highlight_layer"),
])
def test_timeline_rejects_bad_input(kwargs, exc, match):
    args = dict(token_ids=torch.tensor([97, 98, 99]), topk_ids=torch.tensor([[[0, 1], [1, 2], [2, 3]]]),
                num_experts=4) | kwargs
    with pytest.raises(exc, match=match):
        token_timeline(args.pop("token_ids"), args.pop("topk_ids"), **args)


# ---------------------------------------------------------------------------------------------- locality
def test_locality_figure_bars_baselines_and_paper_band():
    loc = temporal_locality(TRACE)
    fig = locality_figure({"en": loc}, layer_names=TRACE.layer_names)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 4  # (measured, random) × (first, first-or-second)
    np.testing.assert_allclose(np.asarray(bars[0].y, float), loc.first.numpy())
    np.testing.assert_allclose(np.asarray(bars[1].y, float), loc.first_random.numpy())
    np.testing.assert_allclose(np.asarray(bars[2].y, float), loc.first_or_second.numpy())
    np.testing.assert_allclose(np.asarray(bars[3].y, float), loc.first_or_second_random.numpy())
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(round(s.y0, 6) for s in lines) == sorted([round(1 / E, 6),
                                                            round(1 - math.comb(E - 2, 2) / math.comb(E, 2), 6)])
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert sorted((s.y0, s.y1) for s in bands) == sorted(MIXTRAL_LOCALITY.values())
    assert any("Mixtral-8x7B 14%–28%" in a.text for a in fig.layout.annotations)
    assert not [s for s in locality_figure(loc, paper=False).layout.shapes if s.type == "rect"]


def test_locality_single_metric_and_k1():
    loc = temporal_locality(TRACE)
    fig = locality_figure(loc, metric="first_or_second")
    assert len([t for t in fig.data if t.type == "bar"]) == 2
    assert "top-2 sets share an expert" in fig.layout.title.text
    k1 = temporal_locality(random_trace(2, 30, 1, 4, seed=1))
    assert len(locality_figure(k1, metric="first").data) == 2
    with pytest.raises(ValueError, match="k = 1"):
        locality_figure(k1)


@pytest.mark.parametrize("arg, kwargs, exc, match", [
    ({}, {}, ValueError, "locality"), ({"en": 1}, {}, TypeError, "en"),
    (None, dict(metric="second"), ValueError, "metric"),
])
def test_locality_rejects_bad_input(arg, kwargs, exc, match):
    arg = temporal_locality(TRACE) if arg is None else arg
    with pytest.raises(exc, match=match):
        locality_figure(arg, **kwargs)


def test_locality_layers_must_agree():
    a = temporal_locality(TRACE)
    b = temporal_locality(random_trace(2, 30, 2, 6, seed=2))
    with pytest.raises(ValueError, match="layers"):
        locality_figure({"a": a, "b": b})


# ---------------------------------------------------------------------------------------------- structure
def test_transition_heatmap_values_and_labels():
    P = transition_matrix(TRACE, 1)
    counts = expert_counts(TRACE, choice=0)[1]
    fig = transition_heatmap(P, layer_from="layers.1.mlp", layer_to="layers.2.mlp", row_counts=counts)
    hm = fig.data[0]
    np.testing.assert_allclose(np.asarray(hm.z, float), P.numpy())
    assert list(hm.y) == [f"e{i} (n={int(c)})" for i, c in enumerate(counts.tolist())]
    assert "L1 → L2" in fig.layout.title.text
    assert (hm.zmin, hm.zmax) == (0, 1)


@pytest.mark.parametrize("P, kwargs, match", [
    (torch.ones(2, 3) / 3, {}, "square"), (torch.full((2, 2), 0.7), {}, "rows"),
    (torch.tensor([[1.0, 0.0], [0.0, 0.0]]), dict(row_counts=torch.ones(3)), "row_counts"),
    (torch.tensor([[2.0, -1.0], [0.0, 1.0]]), {}, "probabilities"),
])
def test_transition_heatmap_rejects_bad_input(P, kwargs, match):
    with pytest.raises(ValueError, match=match):
        transition_heatmap(P, **kwargs)


def test_transition_heatmap_allows_unused_rows():
    P = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    assert list(transition_heatmap(P).data[0].z[1]) == [0.0, 0.0]


def test_coactivation_heatmap_off_diagonal_fractions_and_usage_labels():
    C = coactivation(TRACE, 2)
    T = TRACE.num_tokens
    fig = coactivation_heatmap(C, num_tokens=T, layer_name="l2")
    hm = fig.data[0]
    z = hm.z
    for i in range(E):
        assert z[i][i] is None  # a gap, not NaN
        for j in range(E):
            if i != j:
                assert z[i][j] == pytest.approx(int(C[i, j]) / T)
    assert list(hm.x) == [f"e{i} ({int(C[i, i]) / T:.0%})" for i in range(E)]


@pytest.mark.parametrize("C, T, match", [
    (torch.ones(2, 3, dtype=torch.long), 5, "square"), (torch.tensor([[1, 2], [0, 1]]), 5, "symmetric"),
    (torch.tensor([[9, 1], [1, 2]]), 5, "num_tokens"), (torch.eye(2, dtype=torch.long), 0, "num_tokens"),
])
def test_coactivation_rejects_bad_input(C, T, match):
    with pytest.raises(ValueError, match=match):
        coactivation_heatmap(C, num_tokens=T)


# ---------------------------------------------------------------------------------------------- batch shapes
@pytest.mark.parametrize("batch", [1, 3, 16, 64, 97])
def test_tokens_per_expert_histogram_matches_counts(batch):
    tpe = tokens_per_expert(TRACE, batch)
    c = tpe.counts[1]
    fig = tokens_per_expert_figure(c, batch_tokens=batch, top_k=K, pad_to=8, layer_name="l1")
    bar = fig.data[0]
    share = np.asarray(bar.y, float)
    assert share.sum() == pytest.approx(1.0)
    # every (batch, expert) count falls in exactly one bin; bin counts are in customdata
    counts = np.asarray(bar.customdata, float)[:, 2]
    assert counts.sum() == c.numel()
    lo, hi = np.asarray(bar.customdata, float)[:, 0], np.asarray(bar.customdata, float)[:, 1]
    for n in range(batch + 1):
        inside = (lo <= n) & (n <= hi)
        assert inside.sum() == 1
        assert counts[inside][0] >= int((c == n).sum())
    if batch <= 64:
        np.testing.assert_array_equal(counts, np.bincount(c.reshape(-1).numpy(), minlength=batch + 1))
    padded = 1 - c.sum().item() / ((c + 7) // 8 * 8).sum().item()
    idle = (c == 0).double().mean().item()
    assert f"idle experts {idle:.0%}" in fig.layout.title.text
    assert f"{padded:.0%} of computed rows wasted" in fig.layout.title.text
    mean = [s for s in fig.layout.shapes if s.line.dash == "dash"][0]
    assert mean.x0 == pytest.approx(batch * K / E)
    tiles = [s for s in fig.layout.shapes if s.line.dash != "dash"]
    assert [s.x0 for s in tiles] == ([t * 8 + 0.5 for t in range(1, batch // 8 + 1)] if batch // 8 <= 16 else [])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(counts=torch.tensor([[1.0, 1.0]])), TypeError, "counts"),
    (dict(counts=torch.tensor([[2, 1]])), ValueError, "slots"),
    (dict(counts=torch.tensor([[3, -1]])), ValueError, "counts"),
    (dict(counts=torch.tensor([[3, 1]])), ValueError, "counts"),
    (dict(batch_tokens=0), ValueError, "batch_tokens"), (dict(top_k=0), ValueError, "top_k"),
    (dict(pad_to=0), ValueError, "pad_to"),
])
def test_tokens_per_expert_rejects_bad_input(kwargs, exc, match):
    args = dict(counts=torch.tensor([[1, 1], [2, 0]]), batch_tokens=2, top_k=1) | kwargs
    with pytest.raises(exc, match=match):
        tokens_per_expert_figure(args.pop("counts"), **args)


def test_padding_curve():
    fig = FIGS["padding"]
    assert fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == [1, 2, 4]
    np.testing.assert_allclose(np.asarray(fig.data[0].y, float), [0.9, 0.5, 0.1])
    np.testing.assert_allclose(np.asarray(fig.data[1].y, float), [0.6, 0.3, 0.0])
    assert fig.layout.shapes[0].x0 == 2
    for args, match in [(([2, 1], torch.ones(2), torch.ones(2)), "batch_sizes"),
                        (([1, 2], torch.ones(3), torch.ones(2)), "padded_fraction"),
                        (([1, 2], torch.ones(2), torch.full((2,), 2.0)), "idle_fraction"),
                        (("ab", torch.ones(2), torch.ones(2)), "batch_sizes")]:
        with pytest.raises(ValueError, match=match):
            padding_curve_figure(*args)
    with pytest.raises(ValueError, match="highlight"):
        padding_curve_figure([1, 2], torch.ones(2), torch.ones(2), highlight=3)
