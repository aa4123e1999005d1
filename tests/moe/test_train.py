"""samoyeds_lab.moe.train: a few steps on a tiny config learn, checkpoint, resume exactly; the shipped model."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from samoyeds_lab._checkpoint import read_state_file
from samoyeds_lab.corpus import DOMAINS, RECORD_SEP, load_documents
from samoyeds_lab.moe import TinyMoEForCausalLM
from samoyeds_lab.moe.train import LOG_FILE, METRICS_FILE, STATE_FILE, lr_at, routing_stats, train_tiny

TINY = dict(hidden=32, intermediate=32, layers=2, heads=2, num_experts=4, top_k=2, max_seq=32)
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "tiny_moe"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """The first 240 real documents of each shipped domain (code files cut to 3 kB): fast, still real text."""
    root = tmp_path_factory.mktemp("corpus")
    for d in DOMAINS:
        docs = load_documents(d)[:240] if d != "code" else [doc[:3000] for doc in load_documents(d)[:60]]
        (root / f"{d}.txt.gz").write_bytes(gzip.compress(RECORD_SEP.join(docs), mtime=0))
    return root


def _run(out, root, **kw):
    args = dict(minutes=None, steps=8, seed=3, batch=4, seq=32, config=TINY, warmup=2, lr=1e-2, ckpt_every=2,
                log_every=1, eval_every=0, eval_windows=2, corpus_root=root, progress=False)
    args.update(kw)
    return train_tiny(out, **args)


def _log(out):
    return [json.loads(line) for line in (Path(out) / LOG_FILE).read_text().splitlines()]


def test_training_learns_and_writes_every_file(tmp_path, small_corpus):
    m = _run(tmp_path / "run", small_corpus, steps=30)
    out = tmp_path / "run"
    for f in ("model.safetensors", "config.json", STATE_FILE, LOG_FILE, METRICS_FILE):
        assert (out / f).is_file(), f
    assert m["status"] == "done" and m["steps"] == 30 and m["tokens_trained"] == 30 * 4 * 32
    # from ≈ uniform over 256 bytes (ppl ≈ 256) to well below it on held-out text of every domain
    for d in DOMAINS:
        assert m["init"]["heldout"][d]["ppl"] > 150
        assert m["heldout"][d]["ppl"] < 0.5 * m["init"]["heldout"][d]["ppl"], d
        assert math.isclose(m["heldout"][d]["bits_per_byte"], m["heldout"][d]["nll"] / math.log(2))
    layers = m["routing_heldout_all_slots"]["layers"]
    assert [l["layer"] for l in layers] == ["layers.0.mlp", "layers.1.mlp"]
    for l in layers:
        assert abs(sum(l["freq"]) - 1) < 1e-3 and 1.0 <= l["imbalance"] <= 4.0
        assert set(l["per_domain"]) == set(DOMAINS)
    log = _log(out)
    assert log[0]["event"] == "init" and log[-1]["event"] == "final"
    assert [r["step"] for r in log if r["event"] == "train"] == list(range(1, 31))
    assert json.loads((out / METRICS_FILE).read_text())["steps"] == 30
    model = TinyMoEForCausalLM.from_pretrained(out)
    assert model.config.num_experts == 4


def test_resume_is_exactly_the_uninterrupted_run(tmp_path, small_corpus):
    _run(tmp_path / "a", small_corpus)
    r = _run(tmp_path / "b", small_corpus, stop_at=4)
    assert r == {"status": "stopped", "step": 4}
    assert read_state_file(tmp_path / "b" / STATE_FILE, kind="tiny_moe_train_state")["step"] == 4
    m = _run(tmp_path / "b", small_corpus, resume=True, steps=None, minutes=5)
    assert m["steps"] == 8
    a = TinyMoEForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = TinyMoEForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    for k in a:  # fp32, same ops in the same order: equal to rounding
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=k)
    steps = [r["step"] for r in _log(tmp_path / "b") if r["event"] == "train"]
    assert steps == list(range(1, 9))  # the step count continues, no record twice


def test_resume_with_more_steps_extends_the_run(tmp_path, small_corpus):
    _run(tmp_path / "c", small_corpus, steps=4)
    m = _run(tmp_path / "c", small_corpus, steps=6, resume=True)
    assert m["steps"] == 6
    with pytest.raises(ValueError, match="steps"):
        _run(tmp_path / "c", small_corpus, steps=6, resume=True)
    with pytest.raises(ValueError, match="batch"):
        _run(tmp_path / "c", small_corpus, steps=9, resume=True, batch=5)


def test_state_guards(tmp_path, small_corpus):
    with pytest.raises(FileNotFoundError, match=STATE_FILE):
        _run(tmp_path / "none", small_corpus, resume=True)
    _run(tmp_path / "d", small_corpus, steps=2)
    with pytest.raises(FileExistsError, match="resume=True or overwrite=True"):
        _run(tmp_path / "d", small_corpus, steps=2)
    assert _run(tmp_path / "d", small_corpus, steps=2, overwrite=True)["steps"] == 2


@pytest.mark.parametrize(
    "kw, exc, word",
    [
        ({"minutes": None, "steps": None}, ValueError, "minutes/steps"),
        ({"minutes": 0}, ValueError, "minutes"),
        ({"minutes": float("nan")}, ValueError, "minutes"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"batch": 0}, ValueError, "batch"),
        ({"seq": 1}, ValueError, "seq"),
        ({"seq": 33}, ValueError, "max_seq=32"),
        ({"seed": -1}, ValueError, "seed"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": 0}, ValueError, "lr"),
        ({"aux_coef": float("inf")}, ValueError, "aux_coef"),
        ({"config": "tiny"}, TypeError, "config"),
        ({"config": {"experts": 4}}, ValueError, "experts"),
        ({"stop_at": 0}, ValueError, "stop_at"),
        ({"domains": ["fr"]}, ValueError, "domains"),
    ],
)
def test_bad_arguments_are_named(tmp_path, small_corpus, kw, exc, word):
    with pytest.raises(exc, match=word.replace("(", r"\(")):
        _run(tmp_path / "bad", small_corpus, **kw)


def test_out_dir_type_is_checked(small_corpus):
    with pytest.raises(TypeError, match="out_dir"):
        train_tiny(123, steps=1)


def test_time_budget_plans_the_schedule_and_never_raises_the_lr(tmp_path, small_corpus):
    m = _run(tmp_path / "t", small_corpus, steps=None, minutes=0.15, warmup=3)
    assert m["status"] == "done" and m["schedule_steps"] is not None and m["steps"] > 12
    lrs = [r["lr"] for r in _log(tmp_path / "t") if r["event"] == "train"]
    after = lrs[3:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert m["train_seconds"] < 0.15 * 60


def test_lr_schedule():
    kw = dict(lr=1.0, warmup=10, total=110, min_lr_frac=0.1)
    assert lr_at(1, **kw) == pytest.approx(0.1) and lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    vals = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert lr_at(50, lr=1.0, warmup=10, total=None, min_lr_frac=0.1) == 1.0


def test_routing_stats_reference_cases():
    # two domains on disjoint experts: imbalance 2 (half the experts take everything), 1 bit of domain info
    counts = torch.tensor([[[5, 5, 0, 0]], [[0, 0, 5, 5]]])
    (l,) = routing_stats(counts, ["a", "b"], ["x"])["layers"]
    assert l["imbalance"] == pytest.approx(1.0) and l["domain_mi_bits"] == pytest.approx(1.0)
    assert l["per_domain"]["a"]["imbalance"] == pytest.approx(2.0)
    # identical routing for both domains: no domain information, imbalance max/mean
    counts = torch.tensor([[[6, 2, 2, 2]], [[3, 1, 1, 1]]])
    (l,) = routing_stats(counts, ["a", "b"], ["x"])["layers"]
    assert l["domain_mi_bits"] == pytest.approx(0.0, abs=1e-12)
    assert l["imbalance"] == pytest.approx(0.5 / 0.25) and l["entropy_bits"] < 2.0
    assert l["cv"] == pytest.approx(float(torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6]).std(unbiased=False) / 0.25))


@pytest.mark.skipif(not (SHIPPED / METRICS_FILE).is_file(), reason="data/tiny_moe holds no finished run yet")
def test_shipped_tiny_moe_is_small_trained_and_routes_by_domain():
    assert (SHIPPED / "model.safetensors").stat().st_size <= 25 * 2**20
    model = TinyMoEForCausalLM.from_pretrained(SHIPPED)
    m = json.loads((SHIPPED / METRICS_FILE).read_text())
    assert m["status"] == "done" and m["model"]["config"] == model.config.to_dict()
    for d in DOMAINS:  # far better than the untrained model's ≈256
        assert m["heldout"][d]["ppl"] < 8, d
    layers = m["routing_heldout_all_slots"]["layers"]
    assert len(layers) == model.config.layers
    # learned, not collapsed: every expert of every layer gets a real share, none all of it
    for l in layers:
        assert min(l["freq"]) > 0.03 and 1.05 < l["imbalance"] < 2.0, l["layer"]
    # data-aware: some expert is used at least twice as often by one domain as by another
    ratios = [
        max(l["per_domain"][a]["freq"][e] / max(l["per_domain"][b]["freq"][e], 1e-9) for e in range(len(l["freq"])))
        for l in layers for a in DOMAINS for b in DOMAINS if a != b
    ]
    assert max(ratios) >= 2.0
    # the checkpoint predicts held-out text as well as recorded (first window of each domain)
    from samoyeds_lab.corpus import load_corpus

    held = load_corpus("heldout")
    with torch.no_grad():
        for d in DOMAINS:
            x = torch.tensor(list(held[d][: 129]), dtype=torch.long)[None]
            logits = model(x[:, :-1])
            nll = torch.nn.functional.cross_entropy(logits[0], x[0, 1:]).item()
            assert nll < 3.5, d


# ----------------------------------------------------------------------------------------------------
# the training state on disk: safetensors + JSON, never unpickled; corrupt files are named
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, small_corpus):
    """A run stopped at step 2 of 4 (model, state, log): copied by each test that tampers with it."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert _run(out, small_corpus, steps=4, stop_at=2)["status"] == "stopped"
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


class _Evil:
    """A pickle that would create a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(path, marker):
    import pickle

    path.write_bytes(pickle.dumps({"step": 2, "x": _Evil(marker)}))


def test_state_file_is_safetensors_and_json(stopped_run):
    from safetensors import safe_open

    with safe_open(str(stopped_run / STATE_FILE), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "samoyeds-lab/state" and json.loads(meta["state"])["step"] == 2
    assert not (stopped_run / "train_state.pt").exists()


def test_malicious_pickle_as_state_is_refused_and_not_run(tmp_path, stopped_run, small_corpus):
    from samoyeds_lab.errors import CorruptFileError

    out = _copy(stopped_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    _evil_pickle(out / STATE_FILE, marker)
    with pytest.raises(CorruptFileError, match=STATE_FILE):
        _run(out, small_corpus, resume=True)
    assert not marker.exists()


def test_old_pickled_state_is_refused_with_a_clear_message(tmp_path, stopped_run, small_corpus):
    from samoyeds_lab.errors import CorruptFileError

    out = _copy(stopped_run, tmp_path / "run")
    (out / STATE_FILE).unlink()
    marker = tmp_path / "pwned"
    _evil_pickle(out / "train_state.pt", marker)
    with pytest.raises(CorruptFileError, match=r"train_state\.pt.*old pickle format.*overwrite=True"):
        _run(out, small_corpus, resume=True)
    assert not marker.exists()
    with pytest.raises(FileExistsError, match="train_state.pt"):  # a fresh run does not clobber it silently
        _run(out, small_corpus)
    assert _run(out, small_corpus, steps=2, overwrite=True)["steps"] == 2
    assert not (out / "train_state.pt").exists() and not marker.exists()


def test_truncated_state_is_corrupt(tmp_path, stopped_run, small_corpus):
    from samoyeds_lab.errors import CorruptFileError

    out = _copy(stopped_run, tmp_path / "run")
    data = (out / STATE_FILE).read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
        (out / STATE_FILE).write_bytes(data[:cut])
        with pytest.raises(CorruptFileError, match=STATE_FILE):
            _run(out, small_corpus, resume=True)


@pytest.mark.parametrize("field, change", [
    ("step", lambda st: st.pop("step")),
    ("args", lambda st: st.pop("args")),
    ("args.batch", lambda st: st["args"].pop("batch")),
    ("optimizer", lambda st: st.pop("optimizer")),
    ("torch_rng", lambda st: st.pop("torch_rng")),
    ("step", lambda st: st.update(step="two")),
    ("step", lambda st: st.update(step=-1)),
    ("auto_schedule", lambda st: st.update(auto_schedule=1)),
    ("torch_rng", lambda st: st.update(torch_rng=torch.zeros(3))),
    ("sampler_rng", lambda st: st.update(sampler_rng=torch.zeros(3, dtype=torch.uint8))),
    ("optimizer", lambda st: st["optimizer"]["state"][0].update(exp_avg=torch.zeros(3, 3))),
    ("optimizer", lambda st: st["optimizer"]["param_groups"].pop()),
])
def test_state_with_a_bad_field_is_corrupt_and_named(tmp_path, stopped_run, small_corpus, field, change):
    from samoyeds_lab._checkpoint import write_state_file
    from samoyeds_lab.errors import CorruptFileError

    out = _copy(stopped_run, tmp_path / "run")
    st = read_state_file(out / STATE_FILE, kind="tiny_moe_train_state")
    change(st)
    write_state_file(out / STATE_FILE, st, kind="tiny_moe_train_state")
    with pytest.raises(CorruptFileError, match=f"{STATE_FILE}.*'{field}'"):
        _run(out, small_corpus, resume=True)


def test_state_of_another_kind_is_refused(tmp_path, stopped_run, small_corpus):
    from samoyeds_lab._checkpoint import write_state_file
    from samoyeds_lab.errors import CorruptFileError

    out = _copy(stopped_run, tmp_path / "run")
    write_state_file(out / STATE_FILE, {"step": 2}, kind="something_else")
    with pytest.raises(CorruptFileError, match="'kind'"):
        _run(out, small_corpus, resume=True)


def test_bad_calls_touch_nothing_in_out_dir(tmp_path, stopped_run, small_corpus):
    out = _copy(stopped_run, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for kw, exc in (({"overwrite": True, "seq": 33}, ValueError), ({"overwrite": True, "domains": ["fr"]}, ValueError),
                    ({"overwrite": True, "config": {"experts": 4}}, ValueError),
                    ({"resume": True, "overwrite": True}, ValueError), ({"overwrite": True, "min_lr_frac": 2.0}, ValueError),
                    ({"overwrite": True, "eval_windows": 0}, ValueError), ({"resume": 1}, TypeError)):
        with pytest.raises(exc):
            _run(out, small_corpus, **kw)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_after_tampering_checks_never_change_a_good_resume(tmp_path, stopped_run, small_corpus):
    out = _copy(stopped_run, tmp_path / "run")
    m = _run(out, small_corpus, resume=True, steps=None, minutes=5)
    assert m["status"] == "done" and m["steps"] == 4
