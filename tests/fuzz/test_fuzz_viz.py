"""Bad inputs for the public entry points of :mod:`samoyeds_lab.viz` (figure builders and panels).

Every case must raise the named error class with a message naming the argument: a figure built from NaN,
from an empty input or from a silently ignored argument is a bug. Inputs are tiny (a few cells), so the
whole file runs in a few seconds.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samoyeds_lab.routing import RoutingTrace, TemporalLocality
from samoyeds_lab.viz import (
    AccuracyPanel,
    RoutingPanel,
    RoutingView,
    SparsityPanel,
    SparsityView,
    activation_scale_figure,
    byte_labels,
    bytes_bar,
    coactivation_heatmap,
    decode_metadata_word,
    domain_hotness_figure,
    error_bar,
    expert_colors,
    hotness_heatmap,
    imbalance_figure,
    locality_figure,
    mask_heatmap,
    message_figure,
    metadata_word_figure,
    padding_curve_figure,
    ppl_density_figure,
    ppl_speed_figure,
    sweep_table,
    token_timeline,
    tokens_per_expert_figure,
    transition_heatmap,
    values_heatmap,
)
from tests.fuzz.harness import case, ids, run_case

NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------------- tiny inputs
def mask():
    return torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)


def vals():
    return torch.tensor([[0.5, -0.25], [1.0, 0.0]])


def usage():
    return torch.full((2, 4), 0.25)


def with_nan(t, i=0):
    t = t.clone().float()
    t.view(-1)[i] = NAN
    return t


def with_inf(t, i=0):
    t = t.clone().float()
    t.view(-1)[i] = INF
    return t


def loc(first=None, fos=None):
    """A TemporalLocality of 2 layers (k = 2, E = 4)."""
    f = torch.tensor([0.3, 0.4], dtype=torch.float64) if first is None else first
    s = torch.tensor([0.6, 0.7], dtype=torch.float64) if fos is None else fos
    return TemporalLocality(f, torch.tensor([0.25, 0.25], dtype=torch.float64), 0.25, s,
                            torch.tensor([0.5, 0.5], dtype=torch.float64), 5 / 6, 7)


def tl_args(**kw):
    args = dict(token_ids=torch.tensor([97, 98, 99]), topk_ids=torch.tensor([[[0, 1], [1, 2], [2, 3]]]),
                num_experts=4)
    args.update(kw)
    return args


def timeline(**kw):
    a = tl_args(**kw)
    return token_timeline(a.pop("token_ids"), a.pop("topk_ids"), **a)


def tpe(**kw):
    a = dict(counts=torch.tensor([[1, 1], [2, 0]]), batch_tokens=2, top_k=1)
    a.update(kw)
    return tokens_per_expert_figure(a.pop("counts"), **a)


def P():
    return torch.tensor([[0.5, 0.5], [0.0, 1.0]])


def C():
    return torch.tensor([[3, 1], [1, 2]])


def rec(label="dense", pattern="dense", method="none", density=1.0, speed=1.0, ppl=6.0, vector=None, **kw):
    r = {"label": label, "pattern": pattern, "method": method, "vector": vector, "density": density,
         "expert_bytes": int(1_000_000 / speed) if speed and speed == speed and speed != INF else 1000,
         "dense_expert_bytes": 1_000_000, "modelled_decode_speedup": speed,
         "heldout_ppl": {"en": ppl + 1, "overall": ppl}, "eval_tokens": {"en": 100, "overall": 100},
         "recovered_ppl": None}
    r.update(kw)
    return r


def records(**kw):
    """A dense and a 2:4 record; ``kw`` overrides fields of the second."""
    bad = rec("2:4 · wanda", "2:4", "wanda", 0.5, 1.78, 7.0)
    bad.update(kw)
    return [rec(), bad]


def trace(tokens=8, layers=2, k=2, experts=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    tids = torch.stack([torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens)])
                        for _ in range(layers)])
    w = torch.rand(layers, tokens, k, generator=g).sort(dim=-1, descending=True).values
    return RoutingTrace(tids, w, torch.randint(0, 256, (tokens,), generator=g),
                        tuple(f"layers.{i}.moe" for i in range(layers)), experts)


@functools.lru_cache(maxsize=None)
def traces():
    return {"a": trace(seed=0), "b": trace(seed=1)}


@functools.lru_cache(maxsize=None)
def routing_panel():
    return RoutingPanel(traces(), pad_to=4, timeline_tokens=4)


@functools.lru_cache(maxsize=None)
def small_weight():
    g = torch.Generator().manual_seed(0)
    return 0.02 * torch.randn(32, 64, generator=g)


@functools.lru_cache(maxsize=None)
def sparsity_panel():
    return SparsityPanel(small_weight(), torch.randn(4, 64), rows=32, cols=64)


@functools.lru_cache(maxsize=None)
def fake_model_dir() -> Path:
    """A directory with a (never read) model.safetensors: AccuracyPanel only loads it on run()."""
    d = Path(tempfile.mkdtemp(prefix="fuzz_viz_"))
    (d / "model.safetensors").write_bytes(b"")
    return d


@functools.lru_cache(maxsize=None)
def accuracy_panel():
    return AccuracyPanel(fake_model_dir(), records())


def sview(**kw):
    a = dict(settings={"pattern": "2:4"}, figures={"mask": go.Figure()})
    a.update(kw)
    return SparsityView(**a)


def rview(**kw):
    a = dict(settings={"trace": "a"}, figures={"hotness": go.Figure()})
    a.update(kw)
    return RoutingView(**a)


# ---------------------------------------------------------------------------------------------- cases
CASES = [
    # ------------------------------------------------------------------ message_figure
    case("viz.message_figure", "text None", lambda: message_figure(None), TypeError, "text"),
    case("viz.message_figure", "text a list", lambda: message_figure(["a"]), TypeError, "text"),
    case("viz.message_figure", "height 0", lambda: message_figure("x", height=0), ValueError, "height"),
    case("viz.message_figure", "height -5", lambda: message_figure("x", height=-5), ValueError, "height"),
    case("viz.message_figure", "height a str", lambda: message_figure("x", height="300"), TypeError, "height"),
    case("viz.message_figure", "wrap 0", lambda: message_figure("x", wrap=0), ValueError, "wrap"),
    case("viz.message_figure", "title None", lambda: message_figure("x", title=None), TypeError, "title"),
    # ------------------------------------------------------------------ mask_heatmap
    case("viz.mask_heatmap", "mask None", lambda: mask_heatmap(None), TypeError, "mask"),
    case("viz.mask_heatmap", "mask a nested list", lambda: mask_heatmap([[1, 0]]), TypeError, "mask"),
    case("viz.mask_heatmap", "mask 1-D", lambda: mask_heatmap(torch.ones(4)), ValueError, "mask"),
    case("viz.mask_heatmap", "mask empty 0x4", lambda: mask_heatmap(torch.ones(0, 4)), ValueError, "mask"),
    case("viz.mask_heatmap", "mask with NaN", lambda: mask_heatmap(with_nan(mask())), ValueError, "mask"),
    case("viz.mask_heatmap", "mask complex", lambda: mask_heatmap(torch.ones(2, 2, dtype=torch.complex64)),
         TypeError, "mask"),
    case("viz.mask_heatmap", "max_rows 0", lambda: mask_heatmap(mask(), max_rows=0), ValueError, "max_rows"),
    case("viz.mask_heatmap", "max_cols -1", lambda: mask_heatmap(mask(), max_cols=-1), ValueError, "max_cols"),
    case("viz.mask_heatmap", "max_cols a float", lambda: mask_heatmap(mask(), max_cols=2.5), TypeError,
         "max_cols"),
    case("viz.mask_heatmap", "group_cols 0", lambda: mask_heatmap(mask(), group_cols=0), ValueError,
         "group_cols"),
    case("viz.mask_heatmap", "group_cols -2", lambda: mask_heatmap(mask(), group_cols=-2), ValueError,
         "group_cols"),
    case("viz.mask_heatmap", "group_rows a str", lambda: mask_heatmap(mask(), group_rows="2"), TypeError,
         "group_rows"),
    case("viz.mask_heatmap", "highlight of 2 values", lambda: mask_heatmap(mask(), highlight=(0, 1)),
         ValueError, "highlight"),
    case("viz.mask_heatmap", "highlight an int", lambda: mask_heatmap(mask(), highlight=5), TypeError,
         "highlight"),
    case("viz.mask_heatmap", "highlight with a str", lambda: mask_heatmap(mask(), highlight=(0, 1, "a", 2)),
         TypeError, "highlight"),
    case("viz.mask_heatmap", "highlight reversed rows", lambda: mask_heatmap(mask(), highlight=(1, 0, 0, 2)),
         ValueError, "highlight"),
    case("viz.mask_heatmap", "highlight outside the mask", lambda: mask_heatmap(mask(), highlight=(5, 6, 0, 2)),
         ValueError, "highlight"),
    case("viz.mask_heatmap", "highlight negative", lambda: mask_heatmap(mask(), highlight=(-1, 1, 0, 2)),
         ValueError, "highlight"),
    case("viz.mask_heatmap", "height 0", lambda: mask_heatmap(mask(), height=0), ValueError, "height"),
    case("viz.mask_heatmap", "title None", lambda: mask_heatmap(mask(), title=None), TypeError, "title"),
    # ------------------------------------------------------------------ values_heatmap
    case("viz.values_heatmap", "values None", lambda: values_heatmap(None), TypeError, "values"),
    case("viz.values_heatmap", "values 3-D", lambda: values_heatmap(torch.ones(1, 2, 2)), ValueError, "values"),
    case("viz.values_heatmap", "values empty 2x0", lambda: values_heatmap(torch.ones(2, 0)), ValueError,
         "values"),
    case("viz.values_heatmap", "values bool", lambda: values_heatmap(mask()), TypeError, "values"),
    case("viz.values_heatmap", "values complex", lambda: values_heatmap(torch.ones(2, 2, dtype=torch.complex64)),
         TypeError, "values"),
    case("viz.values_heatmap", "values with +inf", lambda: values_heatmap(with_inf(vals())), ValueError,
         "values"),
    case("viz.values_heatmap", "values all NaN", lambda: values_heatmap(torch.full((2, 2), NAN)), ValueError,
         "values"),
    case("viz.values_heatmap", "max_rows 0", lambda: values_heatmap(vals(), max_rows=0), ValueError,
         "max_rows"),
    case("viz.values_heatmap", "group_cols -1", lambda: values_heatmap(vals(), group_cols=-1), ValueError,
         "group_cols"),
    case("viz.values_heatmap", "height -1", lambda: values_heatmap(vals(), height=-1), ValueError, "height"),
    # ------------------------------------------------------------------ decode_metadata_word
    case("viz.decode_metadata_word", "word None", lambda: decode_metadata_word(None), TypeError, "word"),
    case("viz.decode_metadata_word", "word -1", lambda: decode_metadata_word(-1), ValueError, "word"),
    case("viz.decode_metadata_word", "word 2**32", lambda: decode_metadata_word(2**32), ValueError, "word"),
    case("viz.decode_metadata_word", "word a float", lambda: decode_metadata_word(1.0), TypeError, "word"),
    case("viz.decode_metadata_word", "word a str", lambda: decode_metadata_word("0x44"), TypeError, "word"),
    case("viz.decode_metadata_word", "word True", lambda: decode_metadata_word(True), TypeError, "word"),
    case("viz.decode_metadata_word", "word a 2-element tensor",
         lambda: decode_metadata_word(torch.zeros(2, dtype=torch.int64)), ValueError, "word"),
    case("viz.decode_metadata_word", "word a float tensor 1.5",
         lambda: decode_metadata_word(torch.tensor(1.5)), TypeError, "word"),
    case("viz.decode_metadata_word", "word a bool tensor", lambda: decode_metadata_word(torch.tensor(True)),
         TypeError, "word"),
    # ------------------------------------------------------------------ metadata_word_figure
    case("viz.metadata_word_figure", "word -1", lambda: metadata_word_figure(-1), ValueError, "word"),
    case("viz.metadata_word_figure", "word a list", lambda: metadata_word_figure([1]), TypeError, "word"),
    case("viz.metadata_word_figure", "col_offset -32", lambda: metadata_word_figure(0x44, col_offset=-32),
         ValueError, "col_offset"),
    case("viz.metadata_word_figure", "col_offset a float", lambda: metadata_word_figure(0x44, col_offset=1.5),
         TypeError, "col_offset"),
    case("viz.metadata_word_figure", "col_label None", lambda: metadata_word_figure(0x44, col_label=None),
         TypeError, "col_label"),
    case("viz.metadata_word_figure", "title an int", lambda: metadata_word_figure(0x44, title=3), TypeError,
         "title"),
    case("viz.metadata_word_figure", "subtitle a list", lambda: metadata_word_figure(0x44, subtitle=["x"]),
         TypeError, "subtitle"),
    # ------------------------------------------------------------------ bytes_bar
    case("viz.bytes_bar", "formats None", lambda: bytes_bar(None, 10), (TypeError, ValueError), "formats"),
    case("viz.bytes_bar", "formats empty", lambda: bytes_bar({}, 10), ValueError, "formats"),
    case("viz.bytes_bar", "formats a list", lambda: bytes_bar([("a", 1)], 10), (TypeError, ValueError),
         "formats"),
    case("viz.bytes_bar", "bytes negative", lambda: bytes_bar({"a": -1}, 10), ValueError, "formats"),
    case("viz.bytes_bar", "bytes NaN", lambda: bytes_bar({"a": NAN}, 10), ValueError, "formats"),
    case("viz.bytes_bar", "label an int", lambda: bytes_bar({1: 5}, 10), TypeError, "formats"),
    case("viz.bytes_bar", "dense_bytes 0", lambda: bytes_bar({"a": 1}, 0), ValueError, "dense_bytes"),
    case("viz.bytes_bar", "dense_bytes inf", lambda: bytes_bar({"a": 1}, INF), ValueError, "dense_bytes"),
    case("viz.bytes_bar", "highlight unknown", lambda: bytes_bar({"a": 1}, 10, highlight="b"), ValueError,
         "highlight"),
    case("viz.bytes_bar", "highlight an int", lambda: bytes_bar({"a": 1}, 10, highlight=5), TypeError,
         "highlight"),
    case("viz.bytes_bar", "title None", lambda: bytes_bar({"a": 1}, 10, title=None), TypeError, "title"),
    # ------------------------------------------------------------------ error_bar
    case("viz.error_bar", "errors None", lambda: error_bar(None), (TypeError, ValueError), "errors"),
    case("viz.error_bar", "errors empty", lambda: error_bar({}), ValueError, "errors"),
    case("viz.error_bar", "metrics empty", lambda: error_bar({"a": {}}), ValueError, "errors"),
    case("viz.error_bar", "metrics differ", lambda: error_bar({"a": {"x": 1}, "b": {"y": 1}}), ValueError,
         "errors"),
    case("viz.error_bar", "error NaN", lambda: error_bar({"a": {"x": NAN}}), ValueError, "errors"),
    case("viz.error_bar", "error inf", lambda: error_bar({"a": {"x": INF}}), ValueError, "errors"),
    case("viz.error_bar", "error negative", lambda: error_bar({"a": {"x": -0.5}}), ValueError, "errors"),
    case("viz.error_bar", "error a str", lambda: error_bar({"a": {"x": "1"}}), ValueError, "errors"),
    case("viz.error_bar", "method an int", lambda: error_bar({1: {"x": 0.5}}), TypeError, "errors"),
    case("viz.error_bar", "highlight unknown", lambda: error_bar({"a": {"x": 0.5}}, highlight="b"), ValueError,
         "highlight"),
    case("viz.error_bar", "highlight a list", lambda: error_bar({"a": {"x": 0.5}}, highlight=["a"]), TypeError,
         "highlight"),
    # ------------------------------------------------------------------ activation_scale_figure
    case("viz.activation_scale_figure", "acts None", lambda: activation_scale_figure(None), TypeError, "acts"),
    case("viz.activation_scale_figure", "acts 1-D", lambda: activation_scale_figure(torch.ones(4)), ValueError,
         "acts"),
    case("viz.activation_scale_figure", "acts int", lambda: activation_scale_figure(torch.ones(2, 2,
                                                                                               dtype=torch.int32)),
         TypeError, "acts"),
    case("viz.activation_scale_figure", "acts no tokens", lambda: activation_scale_figure(torch.ones(0, 4)),
         ValueError, "acts"),
    case("viz.activation_scale_figure", "acts no channels", lambda: activation_scale_figure(torch.ones(4, 0)),
         ValueError, "acts"),
    case("viz.activation_scale_figure", "acts with NaN", lambda: activation_scale_figure(with_nan(torch.ones(2, 3))),
         ValueError, "acts"),
    case("viz.activation_scale_figure", "acts with inf", lambda: activation_scale_figure(with_inf(torch.ones(2, 3))),
         ValueError, "acts"),
    # ------------------------------------------------------------------ byte_labels
    case("viz.byte_labels", "token_ids None", lambda: byte_labels(None), TypeError, "token_ids"),
    case("viz.byte_labels", "token_ids a list", lambda: byte_labels([65]), TypeError, "token_ids"),
    case("viz.byte_labels", "token_ids float", lambda: byte_labels(torch.tensor([1.0])), TypeError, "token_ids"),
    case("viz.byte_labels", "token_ids 256", lambda: byte_labels(torch.tensor([256])), ValueError, "token_ids"),
    case("viz.byte_labels", "token_ids -1", lambda: byte_labels(torch.tensor([-1])), ValueError, "token_ids"),
    case("viz.byte_labels", "token_ids 2-D", lambda: byte_labels(torch.zeros(2, 2, dtype=torch.long)), ValueError,
         "token_ids"),
    case("viz.byte_labels", "token_ids bool", lambda: byte_labels(torch.tensor([True])), TypeError, "token_ids"),
    # ------------------------------------------------------------------ expert_colors
    case("viz.expert_colors", "num_experts 0", lambda: expert_colors(0), ValueError, "num_experts"),
    case("viz.expert_colors", "num_experts -3", lambda: expert_colors(-3), ValueError, "num_experts"),
    case("viz.expert_colors", "num_experts a str", lambda: expert_colors("4"), TypeError, "num_experts"),
    case("viz.expert_colors", "num_experts None", lambda: expert_colors(None), TypeError, "num_experts"),
    case("viz.expert_colors", "num_experts a float", lambda: expert_colors(4.0), TypeError, "num_experts"),
    case("viz.expert_colors", "num_experts huge", lambda: expert_colors(10**12), ValueError, "num_experts"),
    # ------------------------------------------------------------------ hotness_heatmap
    case("viz.hotness_heatmap", "usage None", lambda: hotness_heatmap(None, uniform=0.25), TypeError, "usage"),
    case("viz.hotness_heatmap", "usage 1-D", lambda: hotness_heatmap(torch.rand(3), uniform=0.25), ValueError,
         "usage"),
    case("viz.hotness_heatmap", "usage empty", lambda: hotness_heatmap(torch.ones(0, 4), uniform=0.25),
         ValueError, "usage"),
    case("viz.hotness_heatmap", "usage NaN", lambda: hotness_heatmap(with_nan(usage()), uniform=0.25),
         ValueError, "usage"),
    case("viz.hotness_heatmap", "usage 1.5", lambda: hotness_heatmap(torch.full((2, 4), 1.5), uniform=0.25),
         ValueError, "usage"),
    case("viz.hotness_heatmap", "uniform 0", lambda: hotness_heatmap(usage(), uniform=0.0), ValueError,
         "uniform"),
    case("viz.hotness_heatmap", "uniform NaN", lambda: hotness_heatmap(usage(), uniform=NAN), ValueError,
         "uniform"),
    case("viz.hotness_heatmap", "uniform a str", lambda: hotness_heatmap(usage(), uniform="0.25"),
         (TypeError, ValueError), "uniform"),
    case("viz.hotness_heatmap", "layer_names too few", lambda: hotness_heatmap(usage(), uniform=0.25,
                                                                               layer_names=["a"]),
         ValueError, "layer_names"),
    case("viz.hotness_heatmap", "highlight_layer 2 of 2", lambda: hotness_heatmap(usage(), uniform=0.25,
                                                                                  highlight_layer=2),
         ValueError, "highlight_layer"),
    case("viz.hotness_heatmap", "zmax -1", lambda: hotness_heatmap(usage(), uniform=0.25, zmax=-1.0), ValueError,
         "zmax"),
    case("viz.hotness_heatmap", "zmax inf", lambda: hotness_heatmap(usage(), uniform=0.25, zmax=INF), ValueError,
         "zmax"),
    case("viz.hotness_heatmap", "zmax a str", lambda: hotness_heatmap(usage(), uniform=0.25, zmax="a"), TypeError,
         "zmax"),
    # ------------------------------------------------------------------ domain_hotness_figure
    case("viz.domain_hotness_figure", "usage None", lambda: domain_hotness_figure(None, uniform=0.25),
         (TypeError, ValueError), "usage"),
    case("viz.domain_hotness_figure", "usage empty", lambda: domain_hotness_figure({}, uniform=0.25), ValueError,
         "usage"),
    case("viz.domain_hotness_figure", "usage a list", lambda: domain_hotness_figure([usage()], uniform=0.25),
         (TypeError, ValueError), "usage"),
    case("viz.domain_hotness_figure", "a domain None", lambda: domain_hotness_figure({"en": None}, uniform=0.25),
         TypeError, "usage"),
    case("viz.domain_hotness_figure", "shapes differ",
         lambda: domain_hotness_figure({"en": usage(), "de": usage()[:1]}, uniform=0.25), ValueError, "de"),
    case("viz.domain_hotness_figure", "NaN", lambda: domain_hotness_figure({"en": with_nan(usage())},
                                                                           uniform=0.25),
         ValueError, "en"),
    case("viz.domain_hotness_figure", "uniform 2", lambda: domain_hotness_figure({"en": usage()}, uniform=2.0),
         ValueError, "uniform"),
    case("viz.domain_hotness_figure", "domain an int", lambda: domain_hotness_figure({1: usage()}, uniform=0.25),
         TypeError, "usage"),
    case("viz.domain_hotness_figure", "layer_names a str",
         lambda: domain_hotness_figure({"en": usage()}, uniform=0.25, layer_names="ab"), ValueError, "layer_names"),
    # ------------------------------------------------------------------ imbalance_figure
    case("viz.imbalance_figure", "values None", lambda: imbalance_figure(None), (TypeError, ValueError), "values"),
    case("viz.imbalance_figure", "values empty", lambda: imbalance_figure({}), ValueError, "values"),
    case("viz.imbalance_figure", "values NaN", lambda: imbalance_figure({"en": torch.tensor([1.0, NAN])}),
         ValueError, "values"),
    case("viz.imbalance_figure", "layers differ",
         lambda: imbalance_figure({"en": torch.ones(2), "de": torch.ones(3)}), ValueError, "values"),
    case("viz.imbalance_figure", "a domain a list", lambda: imbalance_figure({"en": [1.0, 2.0]}), TypeError,
         "values"),
    case("viz.imbalance_figure", "ideal NaN", lambda: imbalance_figure({"en": torch.ones(2)}, ideal=NAN),
         ValueError, "ideal"),
    case("viz.imbalance_figure", "worst inf", lambda: imbalance_figure({"en": torch.ones(2)}, worst=INF),
         ValueError, "worst"),
    case("viz.imbalance_figure", "worst a str", lambda: imbalance_figure({"en": torch.ones(2)}, worst="4"),
         TypeError, "worst"),
    case("viz.imbalance_figure", "layer_names too many",
         lambda: imbalance_figure({"en": torch.ones(2)}, layer_names=["a", "b", "c"]), ValueError, "layer_names"),
    # ------------------------------------------------------------------ token_timeline
    case("viz.token_timeline", "token_ids None", lambda: timeline(token_ids=None), TypeError, "token_ids"),
    case("viz.token_timeline", "topk_ids None", lambda: timeline(topk_ids=None), TypeError, "topk_ids"),
    case("viz.token_timeline", "token_ids too few", lambda: timeline(token_ids=torch.tensor([1, 2])), ValueError,
         "token_ids"),
    case("viz.token_timeline", "topk_ids 2-D", lambda: timeline(topk_ids=torch.zeros(3, 2, dtype=torch.long)),
         ValueError, "topk_ids"),
    case("viz.token_timeline", "topk_ids float", lambda: timeline(topk_ids=torch.zeros(1, 3, 2)), TypeError,
         "topk_ids"),
    case("viz.token_timeline", "topk_ids 7 of 4", lambda: timeline(topk_ids=torch.full((1, 3, 2), 7)),
         ValueError, "topk_ids"),
    case("viz.token_timeline", "topk_ids -1", lambda: timeline(topk_ids=torch.full((1, 3, 2), -1)), ValueError,
         "topk_ids"),
    case("viz.token_timeline", "topk_ids repeated in a token",
         lambda: timeline(topk_ids=torch.tensor([[[0, 0], [1, 2], [2, 3]]])), ValueError, "topk_ids"),
    case("viz.token_timeline", "num_experts 1 < k", lambda: timeline(num_experts=1), ValueError, "num_experts"),
    case("viz.token_timeline", "num_experts None", lambda: timeline(num_experts=None), TypeError, "num_experts"),
    case("viz.token_timeline", "num_experts huge", lambda: timeline(num_experts=10**12), ValueError,
         "num_experts"),
    case("viz.token_timeline", "weights shape", lambda: timeline(weights=torch.ones(1, 3, 1)), ValueError,
         "weights"),
    case("viz.token_timeline", "weights NaN", lambda: timeline(weights=with_nan(torch.ones(1, 3, 2))),
         ValueError, "weights"),
    case("viz.token_timeline", "weights a list", lambda: timeline(weights=[[[1.0, 0.0]] * 3]), TypeError,
         "weights"),
    case("viz.token_timeline", "view unknown", lambda: timeline(view="second"), ValueError, "view"),
    case("viz.token_timeline", "view None", lambda: timeline(view=None), ValueError, "view"),
    case("viz.token_timeline", "first_position -1", lambda: timeline(first_position=-1), ValueError,
         "first_position"),
    case("viz.token_timeline", "first_position a float", lambda: timeline(first_position=1.5), TypeError,
         "first_position"),
    case("viz.token_timeline", "highlight_layer 1 of 1", lambda: timeline(highlight_layer=1), ValueError,
         "highlight_layer"),
    case("viz.token_timeline", "layer_names of ints", lambda: timeline(layer_names=[0]), ValueError,
         "layer_names"),
    # ------------------------------------------------------------------ locality_figure
    case("viz.locality_figure", "locality None", lambda: locality_figure(None), (TypeError, ValueError),
         "locality"),
    case("viz.locality_figure", "locality empty", lambda: locality_figure({}), ValueError, "locality"),
    case("viz.locality_figure", "an entry an int", lambda: locality_figure({"en": 1}), TypeError, "en"),
    case("viz.locality_figure", "metric unknown", lambda: locality_figure(loc(), metric="second"), ValueError,
         "metric"),
    case("viz.locality_figure", "layers differ",
         lambda: locality_figure({"a": loc(), "b": loc(torch.ones(3, dtype=torch.float64) / 3,
                                                      torch.ones(3, dtype=torch.float64) / 2)}),
         ValueError, "locality"),
    case("viz.locality_figure", "k = 1 with both",
         lambda: locality_figure(TemporalLocality(torch.ones(2) / 2, torch.ones(2) / 4, 0.25, None, None, None, 3)),
         ValueError, "locality"),
    case("viz.locality_figure", "rates NaN",
         lambda: locality_figure(loc(torch.tensor([NAN, 0.3], dtype=torch.float64))), ValueError, "locality"),
    case("viz.locality_figure", "rates above 1",
         lambda: locality_figure(loc(torch.tensor([1.5, 0.3], dtype=torch.float64))), ValueError, "locality"),
    case("viz.locality_figure", "paper a str", lambda: locality_figure(loc(), paper="no"), TypeError, "paper"),
    case("viz.locality_figure", "layer_names too few", lambda: locality_figure(loc(), layer_names=["a"]),
         ValueError, "layer_names"),
    # ------------------------------------------------------------------ transition_heatmap
    case("viz.transition_heatmap", "transitions None", lambda: transition_heatmap(None), TypeError,
         "transitions"),
    case("viz.transition_heatmap", "not square", lambda: transition_heatmap(torch.ones(2, 3) / 3), ValueError,
         "transitions"),
    case("viz.transition_heatmap", "NaN", lambda: transition_heatmap(with_nan(P())), ValueError, "transitions"),
    case("viz.transition_heatmap", "rows sum to 1.4", lambda: transition_heatmap(torch.full((2, 2), 0.7)),
         ValueError, "transitions"),
    case("viz.transition_heatmap", "row_counts wrong length",
         lambda: transition_heatmap(P(), row_counts=torch.ones(3)), ValueError, "row_counts"),
    case("viz.transition_heatmap", "row_counts NaN",
         lambda: transition_heatmap(P(), row_counts=torch.tensor([NAN, 1.0])), ValueError, "row_counts"),
    case("viz.transition_heatmap", "row_counts negative",
         lambda: transition_heatmap(P(), row_counts=torch.tensor([-3, 1])), ValueError, "row_counts"),
    case("viz.transition_heatmap", "row_counts fractional",
         lambda: transition_heatmap(P(), row_counts=torch.tensor([1.5, 1.0])), ValueError, "row_counts"),
    case("viz.transition_heatmap", "row_counts a list", lambda: transition_heatmap(P(), row_counts=[1, 2]),
         TypeError, "row_counts"),
    case("viz.transition_heatmap", "layer_from None", lambda: transition_heatmap(P(), layer_from=None), TypeError,
         "layer_from"),
    case("viz.transition_heatmap", "layer_to an int", lambda: transition_heatmap(P(), layer_to=3), TypeError,
         "layer_to"),
    # ------------------------------------------------------------------ coactivation_heatmap
    case("viz.coactivation_heatmap", "coactivation None", lambda: coactivation_heatmap(None, num_tokens=5),
         TypeError, "coactivation"),
    case("viz.coactivation_heatmap", "not square",
         lambda: coactivation_heatmap(torch.ones(2, 3, dtype=torch.long), num_tokens=5), ValueError, "coactivation"),
    case("viz.coactivation_heatmap", "asymmetric",
         lambda: coactivation_heatmap(torch.tensor([[1, 2], [0, 1]]), num_tokens=5), ValueError, "coactivation"),
    case("viz.coactivation_heatmap", "negative",
         lambda: coactivation_heatmap(torch.tensor([[1, -1], [-1, 1]]), num_tokens=5), ValueError, "coactivation"),
    case("viz.coactivation_heatmap", "fractional counts",
         lambda: coactivation_heatmap(torch.tensor([[1.5, 0.5], [0.5, 1.0]]), num_tokens=5), TypeError,
         "coactivation"),
    case("viz.coactivation_heatmap", "NaN counts",
         lambda: coactivation_heatmap(torch.full((2, 2), NAN), num_tokens=5), (TypeError, ValueError),
         "coactivation"),
    case("viz.coactivation_heatmap", "num_tokens 0", lambda: coactivation_heatmap(C(), num_tokens=0), ValueError,
         "num_tokens"),
    case("viz.coactivation_heatmap", "num_tokens below a count", lambda: coactivation_heatmap(C(), num_tokens=2),
         ValueError, "num_tokens"),
    case("viz.coactivation_heatmap", "num_tokens a float", lambda: coactivation_heatmap(C(), num_tokens=5.0),
         TypeError, "num_tokens"),
    case("viz.coactivation_heatmap", "layer_name None",
         lambda: coactivation_heatmap(C(), num_tokens=5, layer_name=None), TypeError, "layer_name"),
    # ------------------------------------------------------------------ tokens_per_expert_figure
    case("viz.tokens_per_expert_figure", "counts None", lambda: tpe(counts=None), TypeError, "counts"),
    case("viz.tokens_per_expert_figure", "counts float", lambda: tpe(counts=torch.tensor([[1.0, 1.0]])),
         TypeError, "counts"),
    case("viz.tokens_per_expert_figure", "counts 1-D", lambda: tpe(counts=torch.tensor([1, 1])), ValueError,
         "counts"),
    case("viz.tokens_per_expert_figure", "counts empty", lambda: tpe(counts=torch.zeros(0, 2, dtype=torch.long)),
         ValueError, "counts"),
    case("viz.tokens_per_expert_figure", "counts negative", lambda: tpe(counts=torch.tensor([[3, -1]])),
         ValueError, "counts"),
    case("viz.tokens_per_expert_figure", "counts above batch", lambda: tpe(counts=torch.tensor([[3, 1]])),
         ValueError, "counts"),
    case("viz.tokens_per_expert_figure", "row sums wrong", lambda: tpe(counts=torch.tensor([[2, 1]])), ValueError,
         "counts"),
    case("viz.tokens_per_expert_figure", "batch_tokens 0", lambda: tpe(batch_tokens=0), ValueError,
         "batch_tokens"),
    case("viz.tokens_per_expert_figure", "batch_tokens None", lambda: tpe(batch_tokens=None), TypeError,
         "batch_tokens"),
    case("viz.tokens_per_expert_figure", "top_k 0", lambda: tpe(top_k=0), ValueError, "top_k"),
    case("viz.tokens_per_expert_figure", "top_k above E",
         lambda: tpe(counts=torch.tensor([[2, 2]]), batch_tokens=2, top_k=3), ValueError, "top_k"),
    case("viz.tokens_per_expert_figure", "pad_to 0", lambda: tpe(pad_to=0), ValueError, "pad_to"),
    case("viz.tokens_per_expert_figure", "pad_to a float", lambda: tpe(pad_to=64.0), TypeError, "pad_to"),
    case("viz.tokens_per_expert_figure", "layer_name an int", lambda: tpe(layer_name=3), TypeError, "layer_name"),
    # ------------------------------------------------------------------ padding_curve_figure
    case("viz.padding_curve_figure", "batch_sizes empty",
         lambda: padding_curve_figure([], torch.ones(0), torch.ones(0)), ValueError, "batch_sizes"),
    case("viz.padding_curve_figure", "batch_sizes None",
         lambda: padding_curve_figure(None, torch.ones(2), torch.ones(2)), (TypeError, ValueError), "batch_sizes"),
    case("viz.padding_curve_figure", "batch_sizes decreasing",
         lambda: padding_curve_figure([2, 1], torch.ones(2), torch.ones(2)), ValueError, "batch_sizes"),
    case("viz.padding_curve_figure", "batch_sizes 0",
         lambda: padding_curve_figure([0, 1], torch.ones(2), torch.ones(2)), ValueError, "batch_sizes"),
    case("viz.padding_curve_figure", "padded_fraction wrong length",
         lambda: padding_curve_figure([1, 2], torch.ones(3), torch.ones(2)), ValueError, "padded_fraction"),
    case("viz.padding_curve_figure", "idle_fraction 2",
         lambda: padding_curve_figure([1, 2], torch.ones(2), torch.full((2,), 2.0)), ValueError, "idle_fraction"),
    case("viz.padding_curve_figure", "idle_fraction NaN",
         lambda: padding_curve_figure([1, 2], torch.ones(2), torch.tensor([NAN, 0.5])), ValueError,
         "idle_fraction"),
    case("viz.padding_curve_figure", "padded_fraction None",
         lambda: padding_curve_figure([1, 2], None, torch.ones(2)), TypeError, "padded_fraction"),
    case("viz.padding_curve_figure", "highlight not a batch size",
         lambda: padding_curve_figure([1, 2], torch.ones(2), torch.ones(2), highlight=3), ValueError, "highlight"),
    case("viz.padding_curve_figure", "pad_to 0",
         lambda: padding_curve_figure([1, 2], torch.ones(2), torch.ones(2), pad_to=0), ValueError, "pad_to"),
    case("viz.padding_curve_figure", "pad_to a str",
         lambda: padding_curve_figure([1, 2], torch.ones(2), torch.ones(2), pad_to="64"), TypeError, "pad_to"),
    # ------------------------------------------------------------------ sweep_table
    case("viz.sweep_table", "records empty", lambda: sweep_table([]), ValueError, "records"),
    case("viz.sweep_table", "records a str", lambda: sweep_table("x"), (TypeError, ValueError), "records"),
    case("viz.sweep_table", "records None", lambda: sweep_table(None), (TypeError, ValueError), "records"),
    case("viz.sweep_table", "a record an int", lambda: sweep_table([1]), (TypeError, ValueError), "records"),
    case("viz.sweep_table", "a field missing", lambda: sweep_table([{"label": "a"}]), ValueError, "records"),
    case("viz.sweep_table", "ppl NaN", lambda: sweep_table(records(heldout_ppl={"en": NAN, "overall": 7.0})),
         ValueError, "records"),
    case("viz.sweep_table", "ppl 0", lambda: sweep_table(records(heldout_ppl={"en": 0.0, "overall": 7.0})),
         ValueError, "records"),
    case("viz.sweep_table", "ppl a list", lambda: sweep_table(records(heldout_ppl=[7.0])), TypeError, "records"),
    case("viz.sweep_table", "ppl without overall", lambda: sweep_table(records(heldout_ppl={"en": 7.0})),
         ValueError, "records"),
    case("viz.sweep_table", "domains differ", lambda: sweep_table(records(heldout_ppl={"de": 7.0, "overall": 7.0})),
         ValueError, "records"),
    case("viz.sweep_table", "density 1.5", lambda: sweep_table(records(density=1.5)), ValueError, "records"),
    case("viz.sweep_table", "density a str", lambda: sweep_table(records(density="half")), TypeError, "records"),
    case("viz.sweep_table", "speed-up NaN", lambda: sweep_table(records(modelled_decode_speedup=NAN)), ValueError,
         "records"),
    case("viz.sweep_table", "expert_bytes negative", lambda: sweep_table(records(expert_bytes=-5)), ValueError,
         "records"),
    case("viz.sweep_table", "dense_expert_bytes 0", lambda: sweep_table(records(dense_expert_bytes=0)), ValueError,
         "records"),
    case("viz.sweep_table", "method unknown", lambda: sweep_table(records(method="random")), ValueError, "records"),
    case("viz.sweep_table", "label None", lambda: sweep_table(records(label=None)), TypeError, "records"),
    case("viz.sweep_table", "recovered_ppl a float", lambda: sweep_table(records(recovered_ppl=5.0)), TypeError,
         "records"),
    case("viz.sweep_table", "title None", lambda: sweep_table(records(), title=None), TypeError, "title"),
    # ------------------------------------------------------------------ ppl_density_figure / ppl_speed_figure
    case("viz.ppl_density_figure", "records empty", lambda: ppl_density_figure([]), ValueError, "records"),
    case("viz.ppl_density_figure", "records a dict", lambda: ppl_density_figure(rec()), (TypeError, ValueError),
         "records"),
    case("viz.ppl_density_figure", "ppl negative",
         lambda: ppl_density_figure(records(heldout_ppl={"en": 7.0, "overall": -7.0})), ValueError, "records"),
    case("viz.ppl_density_figure", "method unknown", lambda: ppl_density_figure(records(method="random")),
         ValueError, "records"),
    case("viz.ppl_density_figure", "domain unknown", lambda: ppl_density_figure(records(), domain="fr"),
         ValueError, "domain"),
    case("viz.ppl_density_figure", "domain an int", lambda: ppl_density_figure(records(), domain=1), TypeError,
         "domain"),
    case("viz.ppl_density_figure", "recovered without recovery", lambda: ppl_density_figure(records(),
                                                                                         recovered=True),
         ValueError, "recovered"),
    case("viz.ppl_density_figure", "recovered a str", lambda: ppl_density_figure(records(), recovered="yes"),
         TypeError, "recovered"),
    case("viz.ppl_density_figure", "live a field missing", lambda: ppl_density_figure(records(), [{"label": "x"}]),
         ValueError, "live"),
    case("viz.ppl_density_figure", "live a str", lambda: ppl_density_figure(records(), "x"),
         (TypeError, ValueError), "live"),
    case("viz.ppl_density_figure", "live NaN ppl",
         lambda: ppl_density_figure(records(), [rec(heldout_ppl={"en": NAN, "overall": NAN})]), ValueError, "live"),
    case("viz.ppl_speed_figure", "records None", lambda: ppl_speed_figure(None), (TypeError, ValueError),
         "records"),
    case("viz.ppl_speed_figure", "speed-up inf", lambda: ppl_speed_figure(records(modelled_decode_speedup=INF)),
         ValueError, "records"),
    case("viz.ppl_speed_figure", "speed-up 0", lambda: ppl_speed_figure(records(modelled_decode_speedup=0.0)),
         ValueError, "records"),
    case("viz.ppl_speed_figure", "live a dict", lambda: ppl_speed_figure(records(), {"a": 1}),
         (TypeError, ValueError), "live"),
    case("viz.ppl_speed_figure", "domain unknown", lambda: ppl_speed_figure(records(), domain="fr"), ValueError,
         "domain"),
    case("viz.ppl_speed_figure", "title an int", lambda: ppl_speed_figure(records(), title=3), TypeError, "title"),
    # ------------------------------------------------------------------ AccuracyPanel
    case("viz.AccuracyPanel", "records empty", lambda: AccuracyPanel(fake_model_dir(), []), ValueError, "records"),
    case("viz.AccuracyPanel", "records NaN ppl",
         lambda: AccuracyPanel(fake_model_dir(), records(heldout_ppl={"en": NAN, "overall": 7.0})), ValueError,
         "records"),
    case("viz.AccuracyPanel", "model_dir None", lambda: AccuracyPanel(None, records()), TypeError, "model_dir"),
    case("viz.AccuracyPanel", "model_dir missing", lambda: AccuracyPanel("/nonexistent/dir", records()),
         FileNotFoundError, "model_dir"),
    case("viz.AccuracyPanel", "model_dir without a checkpoint", lambda: AccuracyPanel(tempfile.gettempdir(),
                                                                                      records()),
         FileNotFoundError, "model_dir"),
    case("viz.AccuracyPanel", "calib_tokens 0", lambda: AccuracyPanel(fake_model_dir(), records(), calib_tokens=0),
         ValueError, "calib_tokens"),
    case("viz.AccuracyPanel", "eval_tokens -1", lambda: AccuracyPanel(fake_model_dir(), records(), eval_tokens=-1),
         ValueError, "eval_tokens"),
    case("viz.AccuracyPanel", "eval_tokens a float",
         lambda: AccuracyPanel(fake_model_dir(), records(), eval_tokens=1.5), TypeError, "eval_tokens"),
    case("viz.AccuracyPanel", "seed a str", lambda: AccuracyPanel(fake_model_dir(), records(), seed="0"), TypeError,
         "seed"),
    case("viz.AccuracyPanel.run", "vector 48", lambda: accuracy_panel().run(vector=48), ValueError, "vector"),
    case("viz.AccuracyPanel.run", "vector 32.0", lambda: accuracy_panel().config(vector=32.0), (TypeError,
                                                                                               ValueError),
         "vector"),
    case("viz.AccuracyPanel.run", "method unknown", lambda: accuracy_panel().config(method="random"), ValueError,
         "method"),
    case("viz.AccuracyPanel.run", "pattern True", lambda: accuracy_panel().config(pattern=True), ValueError,
         "pattern"),
    case("viz.AccuracyPanel.run", "unknown argument", lambda: accuracy_panel().config(density=0.5), TypeError,
         "density"),
    # ------------------------------------------------------------------ SparsityPanel
    case("viz.SparsityPanel", "weight a list", lambda: SparsityPanel([[0.0] * 64] * 32), (TypeError, ValueError),
         "weight"),
    case("viz.SparsityPanel", "weight 1-D", lambda: SparsityPanel(torch.randn(64)), ValueError, "weight"),
    case("viz.SparsityPanel", "weight int", lambda: SparsityPanel(torch.ones(32, 64, dtype=torch.int64)),
         ValueError, "weight"),
    case("viz.SparsityPanel", "weight 30x64", lambda: SparsityPanel(torch.randn(30, 64)), ValueError, "weight"),
    case("viz.SparsityPanel", "weight with NaN", lambda: SparsityPanel(with_nan(small_weight())), ValueError,
         "weight"),
    case("viz.SparsityPanel", "weight with inf", lambda: SparsityPanel(with_inf(small_weight())), ValueError,
         "weight"),
    case("viz.SparsityPanel", "acts wrong columns", lambda: SparsityPanel(small_weight(), torch.randn(4, 32)),
         ValueError, "acts"),
    case("viz.SparsityPanel", "acts no tokens", lambda: SparsityPanel(small_weight(), torch.randn(0, 64)),
         ValueError, "acts"),
    case("viz.SparsityPanel", "acts with NaN", lambda: SparsityPanel(small_weight(), with_nan(torch.randn(4, 64))),
         ValueError, "acts"),
    case("viz.SparsityPanel", "acts int", lambda: SparsityPanel(small_weight(), torch.ones(4, 64,
                                                                                          dtype=torch.int64)),
         (TypeError, ValueError), "acts"),
    case("viz.SparsityPanel", "rows 48", lambda: SparsityPanel(small_weight(), rows=48), ValueError, "rows"),
    case("viz.SparsityPanel", "rows 32.0", lambda: SparsityPanel(small_weight(), rows=32.0),
         (TypeError, ValueError), "rows"),
    case("viz.SparsityPanel", "cols 100", lambda: SparsityPanel(small_weight(), cols=100), ValueError, "cols"),
    case("viz.SparsityPanel", "cols True", lambda: SparsityPanel(small_weight(), cols=True), (TypeError, ValueError),
         "cols"),
    case("viz.SparsityPanel", "seed a str", lambda: SparsityPanel(seed="0"), TypeError, "seed"),
    case("viz.SparsityPanel.update", "unknown argument", lambda: sparsity_panel().update(density=0.5), TypeError,
         "density"),
    case("viz.SparsityPanel.update", "pattern 3:4", lambda: sparsity_panel().update(pattern="3:4"), ValueError,
         "pattern"),
    case("viz.SparsityPanel.update", "n True", lambda: sparsity_panel().update(n=True), ValueError, "n"),
    case("viz.SparsityPanel.update", "n 2.0", lambda: sparsity_panel().update(n=2.0), (TypeError, ValueError), "n"),
    case("viz.SparsityPanel.update", "m 99", lambda: sparsity_panel().update(m=99), ValueError, "m"),
    case("viz.SparsityPanel.update", "rows 100", lambda: sparsity_panel().update(rows=100), ValueError, "rows"),
    case("viz.SparsityPanel.update", "method None", lambda: sparsity_panel().update(method=None), ValueError,
         "method"),
    case("viz.SparsityPanel.compute", "rows 64 of 32",
         lambda: sparsity_panel().compute("2:4", 2, 4, 32, 64, 64, "magnitude"), ValueError, "rows"),
    case("viz.SparsityPanel.compute", "pattern unknown",
         lambda: sparsity_panel().compute("3:4", 2, 4, 32, 32, 64, "magnitude"), ValueError, "pattern"),
    case("viz.SparsityPanel.compute", "method unknown",
         lambda: sparsity_panel().compute("2:4", 2, 4, 32, 32, 64, "random"), ValueError, "method"),
    case("viz.SparsityPanel.compute", "n 0", lambda: sparsity_panel().compute("N:M", 0, 4, 32, 32, 64, "magnitude"),
         ValueError, "n"),
    # ------------------------------------------------------------------ SparsityView / RoutingView
    case("viz.SparsityView", "settings None", lambda: sview(settings=None), TypeError, "settings"),
    case("viz.SparsityView", "figures a list", lambda: sview(figures=[go.Figure()]), TypeError, "figures"),
    case("viz.SparsityView", "a figure a dict", lambda: sview(figures={"mask": {}}), TypeError, "figures"),
    case("viz.SparsityView", "message an int", lambda: sview(message=3), TypeError, "message"),
    case("viz.RoutingView", "settings a list", lambda: rview(settings=[]), TypeError, "settings"),
    case("viz.RoutingView", "figures None", lambda: rview(figures=None), TypeError, "figures"),
    case("viz.RoutingView", "notes a str", lambda: rview(notes="x"), TypeError, "notes"),
    # ------------------------------------------------------------------ RoutingPanel
    case("viz.RoutingPanel", "traces None", lambda: RoutingPanel(None), (TypeError, ValueError), "traces"),
    case("viz.RoutingPanel", "traces empty", lambda: RoutingPanel({}), ValueError, "traces"),
    case("viz.RoutingPanel", "traces a list", lambda: RoutingPanel([trace()]), (TypeError, ValueError), "traces"),
    case("viz.RoutingPanel", "a trace an int", lambda: RoutingPanel({"a": 1}), TypeError, "traces"),
    case("viz.RoutingPanel", "a name empty", lambda: RoutingPanel({"": trace()}), TypeError, "traces"),
    case("viz.RoutingPanel", "experts differ", lambda: RoutingPanel({"a": trace(), "b": trace(experts=6)}),
         ValueError, "traces"),
    case("viz.RoutingPanel", "one token", lambda: RoutingPanel({"a": trace(tokens=1)}), ValueError, "traces"),
    case("viz.RoutingPanel", "trace unknown", lambda: RoutingPanel(traces(), trace="zz"), ValueError, "trace"),
    case("viz.RoutingPanel", "layer 2 of 2", lambda: RoutingPanel(traces(), layer=2), ValueError, "layer"),
    case("viz.RoutingPanel", "layer -1", lambda: RoutingPanel(traces(), layer=-1), ValueError, "layer"),
    case("viz.RoutingPanel", "layer True", lambda: RoutingPanel(traces(), layer=True), ValueError, "layer"),
    case("viz.RoutingPanel", "batch 3", lambda: RoutingPanel(traces(), batch=3), ValueError, "batch"),
    case("viz.RoutingPanel", "batch True", lambda: RoutingPanel(traces(), batch=True), (TypeError, ValueError),
         "batch"),
    case("viz.RoutingPanel", "batch 16 > tokens", lambda: RoutingPanel(traces(), batch=16), ValueError, "batch"),
    case("viz.RoutingPanel", "pad_to 0", lambda: RoutingPanel(traces(), pad_to=0), ValueError, "pad_to"),
    case("viz.RoutingPanel", "pad_to a float", lambda: RoutingPanel(traces(), pad_to=4.0), (TypeError, ValueError),
         "pad_to"),
    case("viz.RoutingPanel", "timeline_tokens 1", lambda: RoutingPanel(traces(), timeline_tokens=1), ValueError,
         "timeline_tokens"),
    case("viz.RoutingPanel.update", "unknown argument", lambda: routing_panel().update(density=0.5), TypeError,
         "density"),
    case("viz.RoutingPanel.update", "layer 2", lambda: routing_panel().update(layer=2), ValueError, "layer"),
    case("viz.RoutingPanel.update", "layer 1.0", lambda: routing_panel().update(layer=1.0), (TypeError, ValueError),
         "layer"),
    case("viz.RoutingPanel.update", "trace unknown", lambda: routing_panel().update(trace="fr"), ValueError,
         "trace"),
    case("viz.RoutingPanel.update", "trace a list", lambda: routing_panel().update(trace=["a"]),
         (TypeError, ValueError), "trace"),
    case("viz.RoutingPanel.update", "view unknown", lambda: routing_panel().update(view="second"), ValueError,
         "view"),
    case("viz.RoutingPanel.update", "batch 3", lambda: routing_panel().update(batch=3), ValueError, "batch"),
    case("viz.RoutingPanel.update", "offset 5", lambda: routing_panel().update(offset=5), ValueError, "offset"),
    case("viz.RoutingPanel.update", "sequence 1 of 1", lambda: routing_panel().update(sequence=1), ValueError,
         "sequence"),
    case("viz.RoutingPanel.compute", "layer 5",
         lambda: routing_panel().compute("a", 5, "all k", 4, 0, 0), ValueError, "layer"),
    case("viz.RoutingPanel.compute", "trace unknown",
         lambda: routing_panel().compute("zz", 0, "all k", 4, 0, 0), ValueError, "trace"),
    case("viz.RoutingPanel.compute", "sequence 3",
         lambda: routing_panel().compute("a", 0, "all k", 4, 3, 0), ValueError, "sequence"),
    case("viz.RoutingPanel.compute", "view unknown",
         lambda: routing_panel().compute("a", 0, "third", 4, 0, 0), ValueError, "view"),
]

EXEMPT: dict[str, str] = {}


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ---------------------------------------------------------------------------------------------- properties
_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.integers(min_value=-2**40, max_value=2**40))
def test_metadata_word_in_range_decodes_out_of_range_names_word(word):
    if 0 <= word < 2**32:
        pairs = decode_metadata_word(word)
        assert len(pairs) == 8 and all(0 <= p < 4 for pair in pairs for p in pair)
        assert sum((p0 | p1 << 2) << 4 * j for j, (p0, p1) in enumerate(pairs)) == word
    else:
        with pytest.raises(ValueError, match="word"):
            decode_metadata_word(word)


@_FAST
@given(st.integers(min_value=-10**6, max_value=2000))
def test_expert_colors_sizes(n):
    if n >= 1:
        cols = expert_colors(n)
        assert len(cols) == n and all(c.startswith("#") and len(c) == 7 for c in cols)
    else:
        with pytest.raises(ValueError, match="num_experts"):
            expert_colors(n)


@_FAST
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_mask_heatmap_valid_masks_never_raise(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(rows, cols, generator=g) > 0.5
    fig = mask_heatmap(m, group_cols=2, highlight=(0, rows, 0, cols))
    assert isinstance(fig, go.Figure)
    assert f"density {float(m.float().mean()):.1%}" in fig.layout.title.text


@_FAST
@given(st.integers(1, 4), st.integers(1, 5), st.integers(0, 19), st.sampled_from([NAN, INF, -INF]))
def test_non_finite_cell_is_named(rows, cols, where, bad):
    t = torch.ones(rows, cols)
    t.view(-1)[where % t.numel()] = bad
    for fn, name in ((activation_scale_figure, "acts"), (mask_heatmap, "mask")):
        with pytest.raises(ValueError, match=name):
            fn(t)
    u = torch.full((rows, cols), 0.25)
    u.view(-1)[where % u.numel()] = bad
    with pytest.raises(ValueError, match="usage"):
        hotness_heatmap(u, uniform=0.25)


@_FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=3))
def test_error_bar_values_finite_non_negative_or_named(values):
    errs = {"magnitude": {f"m{i}": v for i, v in enumerate(values)}}
    if all(math.isfinite(v) and v >= 0 for v in values):
        assert isinstance(error_bar(errs), go.Figure)
    else:
        with pytest.raises(ValueError, match="errors"):
            error_bar(errs)
