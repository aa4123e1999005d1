"""Figures of the analytic SSMM model: every trace is labelled predicted, the y values are the model's."""

from __future__ import annotations

import pytest

from samoyeds_lab.bench import ssmm_model as M
from samoyeds_lab.viz.ssmm_model import PREDICTED, default_model_figure, model_ratio_figure


def test_ratio_figure_draws_the_model_values_sorted_by_tokens():
    preds = [M.predict(M.TODAY, *M.MIXTRAL["w1"], t) for t in (64, 1, 8)]
    fig = model_ratio_figure({"today w1": preds}, targets=(2.0, 2.5)).to_dict()
    (tr,) = fig["data"]
    assert list(tr["x"]) == [1, 8, 64]
    want = {p.tokens: p.predicted_ratio_vs_dense for p in preds}
    assert list(tr["y"]) == pytest.approx([want[1], want[8], want[64]])
    assert PREDICTED in tr["name"] and "not a measurement" in fig["layout"]["title"]["text"]
    assert sorted(s["y0"] for s in fig["layout"]["shapes"]) == [1.0, 2.0, 2.5]


@pytest.mark.parametrize("bad,err", [({}, ValueError), ([], ValueError), ({"a": [1, 2]}, TypeError),
                                     ({"a": []}, TypeError)])
def test_ratio_figure_bad_series(bad, err):
    with pytest.raises(err, match="series"):
        model_ratio_figure(bad)


def test_default_figure_today_vs_the_picked_defaults():
    fig = default_model_figure("h200", tokens=(1, 8, 16, 64)).to_dict()
    names = [t["name"] for t in fig["data"]]
    assert len(names) == 4 and all(PREDICTED in n for n in names)
    today = next(t for t in fig["data"] if t["name"].startswith("today w1"))
    best = next(t for t in fig["data"] if t["name"].startswith("model's decode default w1"))
    assert list(best["x"]) == [1, 8, 16, 64]
    assert all(b >= a for a, b in zip(today["y"], best["y"]))  # the model's pick is never predicted slower
    assert "h200" in fig["layout"]["title"]["text"]
