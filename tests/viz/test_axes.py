"""Log axes label each tick with the value it marks (issue 14: a "4" that meant 40 on Lab 05's axis)."""

import math

import pytest
import torch

from samoyeds_lab.viz._axes import log_axis, log_ticks, positive_range
from samoyeds_lab.viz.monde import crossover_figure
from samoyeds_lab.viz.sparsity import activation_scale_figure


@pytest.mark.parametrize("lo, hi", [(3.5, 90), (4.2, 51), (0.05, 0.9), (1e-3, 1e4), (3.9, 5.1), (0.8, 1200),
                                    (17.0, 18.0)])
def test_ticks_lie_in_range_and_read_as_their_value(lo, hi):
    vals, text = log_ticks(lo, hi)
    assert vals and len(vals) == len(text) and len(vals) <= 9
    assert vals == sorted(vals) and all(lo * (1 - 1e-6) <= v <= hi * (1 + 1e-6) for v in vals)
    for v, t in zip(vals, text):
        assert math.isclose(float(t), v, rel_tol=1e-6), (v, t)  # "40" for 40, never a bare mantissa


def test_a_range_of_one_decade_gets_its_tens():
    vals, text = log_ticks(4.0, 60.0)
    assert "10" in text and "50" in text and "5" in text


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="lo, hi"):
        log_ticks(0.0, 10.0)
    with pytest.raises(ValueError, match="lo, hi"):
        log_ticks(1.0, float("inf"))


def test_positive_range_skips_zero_and_nan():
    assert positive_range([0.0, float("nan"), 2.0, 5.0, -1.0]) == (2.0, 5.0)
    assert positive_range([0.0]) is None


def test_log_axis_pads_the_range():
    ax = log_axis("t", 2.0, 50.0)
    assert ax["type"] == "log" and ax["range"][0] < math.log10(2.0) and ax["range"][1] > math.log10(50.0)


def test_figures_use_labelled_log_ticks():
    n = [1, 2, 4, 8, 16, 32, 64]
    fig = crossover_figure(n, {"a": ([1e-3] * 7, [2e-3 * i for i in n]), "b": ([1e-3] * 7, [3e-3] * 7)})
    assert fig.layout.yaxis.ticktext and fig.layout.xaxis.ticktext
    # two systems with the same GPU curve stay distinguishable: different widths and marker symbols
    gpu = [t for t in fig.data if "GPU" in t.name]
    assert gpu[0].line.width != gpu[1].line.width and gpu[0].marker.symbol != gpu[1].marker.symbol
    fig2 = activation_scale_figure(torch.randn(32, 16).abs() * 30 + 1)
    assert fig2.layout.yaxis.ticktext
