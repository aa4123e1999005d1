"""Figures and the step panel of viz.kernel_steps, driven over every step of the example trace."""

from __future__ import annotations

import pytest
import torch

from samoyeds_lab.bench.fusion import FUSION_PATHS, fusion_costs
from samoyeds_lab.formats import SENTINEL
from samoyeds_lab.reference.stepper import example_ssmm, gather_plan, ssmm_steps
from samoyeds_lab.viz.kernel_steps import (
    STEP_FIGURES,
    StepPanel,
    fusion_bytes_figure,
    gather_table,
    step_lines,
    step_output_figure,
    step_table,
)

from .test_mma_panel import assert_json_safe


@pytest.fixture(scope="module")
def trace():
    w, x, idx = example_ssmm()
    return ssmm_steps(w, x, idx), idx


def test_table_lines_and_output_for_every_step(trace):
    steps, idx = trace
    for s in steps:
        t = step_table(steps, s.index).to_dict()["data"][0]
        cells = t["cells"]["values"]
        assert cells[0] == s.crows.tolist() and cells[3] == [f"output row {int(d)}" for d in s.dense_row]
        assert [float(v) for v in cells[4]] == s.acc[:, 0].tolist()
        assert t["header"]["values"][4] == f"acc · x[{int(idx[0])}]" and t["header"]["values"][-1] == "acc · SENTINEL"
        assert t["cells"]["fill"]["color"][0][0] == ("#fef3c7" if s.flush else "#dbeafe")
        lines = step_lines(steps, s.index)
        assert ("FLUSH" in lines[0]) == s.flush and len(lines) == 1 + s.crows.numel()
        z = torch.tensor(step_output_figure(steps, s.index).to_dict()["data"][0]["z"])
        written = set()
        for p in steps[: s.index + 1]:
            if p.flush:
                written |= set(p.dense_row.tolist())
        assert set((z > 0).any(1).nonzero().flatten().tolist()) == written
        assert set((z == 2).any(1).nonzero().flatten().tolist()) == (set(s.dense_row.tolist()) if s.flush else set())


def test_panel_over_the_whole_range(trace):
    steps, _ = trace
    panel = StepPanel(steps)
    for i in list(range(len(steps))) + [0]:
        panel.controls["step"].value = i  # the slider callback
        assert panel.last is not None and set(panel.last) == set(STEP_FIGURES)
        assert panel.last["table"].layout.title.text.startswith(f"Step {i}:")
        assert f"<b>step {i}</b>" in panel.status.value
        assert ("flush" in panel.status.value) == steps[i].flush
        for fw in panel.figure_widgets.values():
            assert_json_safe(fw)
    assert panel.controls["step"].continuous_update is False and panel.controls["step"].max == len(steps) - 1
    with pytest.raises(ValueError, match="step"):
        panel.update(step=len(steps))
    with pytest.raises(TypeError, match="update"):
        panel.update(lane=1)


def test_gather_and_fusion_figures():
    w, x, idx = example_ssmm()
    plan = gather_plan(idx, x.shape[0], x.shape[1])
    t = gather_table(plan).to_dict()["data"][0]["cells"]["values"]
    assert t[1] == [str(int(v)) for v in plan.token_ids[: len(t[1])]]
    assert t[2][len(idx) - 1] == "nothing (zero-filled)" and int(idx[-1]) == SENTINEL
    assert t[2][0] == f"x[{int(idx[0])}, 0–31]"
    costs = {n: fusion_costs(14336, 4096, n, "h200") for n in (1, 64, 4096)}
    d = fusion_bytes_figure(costs).to_dict()
    assert "modelled (" in d["layout"]["title"]["text"]
    bars = [tr for tr in d["data"] if tr["type"] == "bar"]
    totals = [sum(tr["x"][i] for tr in bars) for i in range(12)]
    want = [costs[n][p].bytes / 1e6 for n in costs for p in FUSION_PATHS]
    assert totals == pytest.approx(want)


def test_errors(trace):
    steps, _ = trace
    with pytest.raises(TypeError, match="steps"):
        step_table([], 0)
    with pytest.raises(ValueError, match="step"):
        step_output_figure(steps, -1)
    with pytest.raises(TypeError, match="step"):
        step_lines(steps, 1.0)
    with pytest.raises(TypeError, match="plan"):
        gather_table(None)
    with pytest.raises(TypeError, match="costs"):
        fusion_bytes_figure({})
    with pytest.raises(ValueError, match="costs"):
        fusion_bytes_figure({1: {}})
    with pytest.raises(TypeError, match="steps"):
        StepPanel([1, 2])
