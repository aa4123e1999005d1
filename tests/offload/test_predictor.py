"""SiDA predictor: sparsemax, truncated KD, training, metrics, baselines, shipped artifacts in data/sida."""

import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from samoyeds_lab.corpus import DOMAINS, load_corpus
from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.offload.predictor import (
    PREDICTIONS_FORMAT,
    SiDAConfig,
    SiDAPredictor,
    frequency_predictions,
    load_shipped_metrics,
    load_shipped_predictions,
    load_shipped_predictor,
    main,
    next_layer_predictions,
    predict_topk,
    predictor_hit_rate,
    record_teacher,
    sparsemax,
    top1_accuracy,
    train_predictor,
    training_windows,
    truncated_kd_loss,
)
from samoyeds_lab.routing import record_routing
from samoyeds_lab.routing.ship import load_shipped_trace

REPO = Path(__file__).resolve().parents[2]
SIDA = REPO / "data" / "sida"
TINY = REPO / "data" / "tiny_moe"


# ---------------------------------------------------------------------------------------------- references
def sparsemax_reference(z: np.ndarray) -> np.ndarray:
    """Projection onto the simplex by bisection on τ (Σ max(z − τ, 0) = 1), independent of the sort formula."""
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        if np.maximum(z - tau, 0).sum() > 1:
            lo = tau
        else:
            hi = tau
    return np.maximum(z - (lo + hi) / 2, 0)


def kd_reference(s: np.ndarray, z: np.ndarray, T: int, lam: float) -> float:
    """The documented loss written out row by row in float64."""
    total = 0.0
    rows = s.reshape(-1, s.shape[-1]), z.reshape(-1, z.shape[-1])
    n = rows[0].shape[0]
    for srow, zrow in zip(*rows):
        top = np.argsort(-zrow, kind="stable")[:T]
        p = np.exp(zrow[top] - zrow[top].max())
        p /= p.sum()
        logq = srow - srow.max() - np.log(np.exp(srow - srow.max()).sum())
        kd = sum(p[i] * (math.log(p[i]) - logq[top[i]]) for i in range(T))
        total += kd + lam * (-logq[top[0]])
    return total / n


def hit_rate_reference(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    L, T, k = true.shape
    out = np.zeros(L)
    for l in range(L):
        out[l] = np.mean([len(set(true[l, t]) & set(int(x) for x in pred[l, t] if x >= 0)) / k for t in range(T)])
    return out


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = TinyMoEConfig(hidden=32, intermediate=32, layers=3, heads=2, num_experts=6, top_k=2, max_seq=48)
    return TinyMoEForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def shipped_model():
    return TinyMoEForCausalLM.from_pretrained(TINY).eval()


def small_predictor(model, **kw):
    torch.manual_seed(1)
    return SiDAPredictor.from_tiny_model(model, hidden=kw.pop("hidden", 16), **kw)


# ---------------------------------------------------------------------------------------------- sparsemax
def test_sparsemax_hand_example():
    out = sparsemax(torch.tensor([1.0, 0.5, -1.0]))
    torch.testing.assert_close(out, torch.tensor([0.75, 0.25, 0.0]))


@pytest.mark.parametrize("n", [1, 2, 7, 19, 99])
def test_sparsemax_matches_bisection_reference(n):
    g = torch.Generator().manual_seed(n)
    z = torch.randn(5, n, generator=g, dtype=torch.float64) * 2
    out = sparsemax(z)
    assert out.dtype == torch.float64
    ref = np.stack([sparsemax_reference(r) for r in z.numpy()])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-9)
    torch.testing.assert_close(out.sum(-1), torch.ones(5, dtype=torch.float64))


def test_sparsemax_mask_and_errors():
    z = torch.tensor([[3.0, 0.1, 0.2], [0.3, 0.2, 5.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = sparsemax(z, mask)
    assert out[1, 2] == 0 and torch.allclose(out.sum(-1), torch.ones(2))
    np.testing.assert_allclose(out[1, :2].numpy(), sparsemax_reference(np.array([0.3, 0.2])), atol=1e-6)
    with pytest.raises(TypeError, match="scores"):
        sparsemax(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="mask"):
        sparsemax(z, mask.int())


# ---------------------------------------------------------------------------------------------- model
def test_predictor_shapes_and_causality(tiny_model):
    p = small_predictor(tiny_model).eval()
    x = torch.randint(0, 256, (3, 19))
    out = p(x)
    assert out.shape == (3, 3, 19, 6) and out.dtype == torch.float32
    assert torch.equal(p.embed, tiny_model.embed_tokens.weight.detach())
    assert not p.embed.requires_grad and "embed" not in dict(p.named_parameters())
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 7) % 256  # change the future: positions < 10 must not move
    torch.testing.assert_close(p(y)[:, :, :10], out[:, :, :10])
    a = p.attention_weights(torch.randn(2, 19, 16))
    assert bool((a.triu(1) == 0).all()) and torch.allclose(a.sum(-1), torch.ones(2, 19))
    sup = p.attention_support(x)
    assert sup.shape == (3, 19) and bool((sup >= 1).all()) and bool((sup <= torch.arange(1, 20)).all())


def test_topk_attention_variant(tiny_model):
    p = small_predictor(tiny_model, attention="topk", attn_topk=3).eval()
    a = p.attention_weights(torch.randn(2, 11, 16))
    assert bool(((a > 0).sum(-1) <= 3).all()) and bool((a.triu(1) == 0).all())
    assert torch.allclose(a.sum(-1), torch.ones(2, 11))
    assert p(torch.randint(0, 256, (2, 11))).shape == (3, 2, 11, 6)


def test_predict_topk_sequences(tiny_model):
    p = small_predictor(tiny_model).eval()
    a, b = torch.randint(0, 256, (13,)), torch.randint(0, 256, (5,))
    ids = predict_topk(p, torch.cat([a, b]), torch.tensor([13, 5]), k=2)
    assert ids.shape == (3, 18, 2) and ids.dtype == torch.int64
    torch.testing.assert_close(ids[:, :13], torch.topk(p(a[None]), 2, -1).indices[:, 0])
    torch.testing.assert_close(ids[:, 13:], torch.topk(p(b[None]), 2, -1).indices[:, 0])
    assert torch.equal(predict_topk(p, a, None, 3), torch.topk(p(a[None]), 3, -1).indices[:, 0])


def test_config_errors():
    with pytest.raises(ValueError, match="attention"):
        SiDAConfig(attention="softmax")
    with pytest.raises(ValueError, match="hidden"):
        SiDAConfig(hidden=0)
    with pytest.raises(ValueError, match="embedding"):
        SiDAPredictor(SiDAConfig(), torch.zeros(10, 128))
    with pytest.raises(ValueError, match="bogus"):
        SiDAConfig.from_dict({"bogus": 1})


# ---------------------------------------------------------------------------------------------- loss, training
@pytest.mark.parametrize("T,lam", [(1, 0.0), (2, 0.1), (4, 0.5), (6, 0.0)])
def test_truncated_kd_loss_matches_hand_computation(T, lam):
    g = torch.Generator().manual_seed(T)
    s = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    z = torch.randn(2, 3, 6, generator=g, dtype=torch.float64) * 3
    got = truncated_kd_loss(s, z, top_t=T, ce_weight=lam)
    assert got.dtype == torch.float32
    assert abs(float(got) - kd_reference(s.numpy(), z.numpy(), T, lam)) < 1e-5


def test_truncated_kd_loss_minimum():
    # student = teacher renormalised on the top-T (and -inf elsewhere) makes the KD term 0
    z = torch.tensor([[2.0, 1.0, 0.0, -3.0]])
    s = torch.tensor([[2.0, 1.0, -1e4, -1e4]])
    assert float(truncated_kd_loss(s, z, top_t=2, ce_weight=0.0)) < 1e-6
    assert float(truncated_kd_loss(torch.zeros(1, 4), z, top_t=2, ce_weight=0.0)) > 0.1


def test_truncated_kd_loss_errors():
    with pytest.raises(ValueError, match="teacher_logits"):
        truncated_kd_loss(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="top_t"):
        truncated_kd_loss(torch.zeros(2, 4), torch.zeros(2, 4), top_t=5)
    with pytest.raises(ValueError, match="ce_weight"):
        truncated_kd_loss(torch.zeros(2, 4), torch.zeros(2, 4), ce_weight=-1.0)
    with pytest.raises(TypeError, match="student_logits"):
        truncated_kd_loss(torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4))


def test_training_loss_decreases(shipped_model):
    windows = training_windows(40, 3)  # 9 windows of 40 training bytes, teacher = the shipped tiny model
    trace = record_teacher(shipped_model, windows, batch=4)
    teacher = trace.logits.float().reshape(4, 9, 40, 8)
    p = small_predictor(shipped_model)
    with torch.no_grad():
        before = float(truncated_kd_loss(p(windows), teacher))
    info = train_predictor(p, windows, teacher, steps=60, batch=4, lr=1e-2, seed=0, log_every=10)
    with torch.no_grad():
        after = float(truncated_kd_loss(p(windows), teacher))
    assert info["steps_done"] == 60 and info["stopped"] == "steps" and not p.training
    assert [r["step"] for r in info["log"]] == [1, 10, 20, 30, 40, 50, 60]
    assert after < 0.8 * before, (before, after)
    # deterministic for the same seed
    p2 = small_predictor(shipped_model)
    train_predictor(p2, windows, teacher, steps=60, batch=4, lr=1e-2, seed=0, log_every=10)
    for a, b in zip(p.parameters(), p2.parameters()):
        torch.testing.assert_close(a, b)


def test_train_predictor_errors(tiny_model):
    p = small_predictor(tiny_model)
    w = torch.randint(0, 256, (2, 8))
    t = torch.zeros(3, 2, 8, 6)
    with pytest.raises(ValueError, match="teacher_logits"):
        train_predictor(p, w, torch.zeros(3, 2, 8, 5), steps=1)
    with pytest.raises(TypeError, match="windows"):
        train_predictor(p, w.float(), t, steps=1)
    with pytest.raises(ValueError, match="windows"):
        train_predictor(p, w + 300, t, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_predictor(p, w, t, steps=0)
    with pytest.raises(ValueError, match="minutes"):
        train_predictor(p, w, t, steps=1, minutes=-1)


def test_training_windows_come_from_the_training_split():
    w = training_windows(64, 3)
    assert w.shape == (9, 64) and w.dtype == torch.int64
    train = load_corpus("train")
    for i, d in enumerate(DOMAINS):
        for row in w[3 * i : 3 * i + 3]:
            assert bytes(row.tolist()) in train[d]
    with pytest.raises(ValueError, match="windows_per_domain"):
        training_windows(256, 10**6)


# ---------------------------------------------------------------------------------------------- metrics, baselines
def test_hit_rate_and_top1_hand_example():
    true = torch.tensor([[[0, 1], [2, 3], [4, 5]], [[1, 0], [1, 2], [3, 4]]])
    pred = torch.tensor([[[1, 0], [3, 7], [6, 7]], [[0, 1], [2, -1], [-1, -1]]])
    np.testing.assert_allclose(predictor_hit_rate(pred, true), [(1 + 0.5 + 0) / 3, (1 + 0.5 + 0) / 3])
    np.testing.assert_allclose(top1_accuracy(pred, true), [0, 0])
    np.testing.assert_allclose(top1_accuracy(true, true), [1, 1])
    wide = torch.tensor([[[0, 1, 2, 3]] * 3] * 2)  # p = 4 > k = 2
    np.testing.assert_allclose(predictor_hit_rate(wide, true), hit_rate_reference(wide.numpy(), true.numpy()))
    none = torch.full_like(pred, -1)
    none[1] = pred[1]
    hr = predictor_hit_rate(none.numpy(), true.numpy())
    assert np.isnan(hr[0]) and hr[1] == pytest.approx(0.5)


def test_hit_rate_errors():
    t = torch.zeros(2, 3, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="pred_ids"):
        predictor_hit_rate(torch.zeros(2, 4, 2, dtype=torch.int64), t)
    with pytest.raises(TypeError, match="pred_ids"):
        predictor_hit_rate(torch.zeros(2, 3, 2), t)
    with pytest.raises(ValueError, match="pred_ids"):
        predictor_hit_rate(t - 2, t)
    with pytest.raises(ValueError, match="true_ids"):
        top1_accuracy(t, t - 1)


def test_frequency_predictions():
    ids = torch.tensor([[[0, 1], [1, 2], [1, 0]], [[3, 2], [2, 3], [0, 1]]])
    f = frequency_predictions(ids, 4, tokens=5)
    assert f.shape == (2, 5, 2) and f.dtype == torch.int64
    assert f[0, 0].tolist() == [1, 0] and f[1, 0].tolist() == [2, 3]  # tie 2/3 → smaller id first
    assert frequency_predictions(ids, 4, 2, k=1)[1, :, 0].tolist() == [2, 2]
    with pytest.raises(ValueError, match="train_topk_ids"):
        frequency_predictions(ids, 3, 2)
    with pytest.raises(ValueError, match="k"):
        frequency_predictions(ids, 4, 2, k=5)


def test_next_layer_matches_manual_computation(tiny_model):
    m = tiny_model
    x = torch.randint(0, 256, (2, 17))
    for hidden in ("block_input", "residual"):
        pred = next_layer_predictions(m, x, hidden=hidden)
        assert pred.shape == (3, 34, 2) and pred.dtype == torch.int64 and bool((pred[0] == -1).all())
        assert bool((pred[1:] >= 0).all())
        with torch.no_grad():  # one token, the model written out by hand
            b, s = 1, 9
            h = m.embed_tokens(x)
            manual = []
            for l, layer in enumerate(m.layers):
                h = h + layer.self_attn(layer.input_layernorm(h))
                if l + 1 < len(m.layers):
                    nxt = m.layers[l + 1]
                    norm = layer.post_attention_layernorm if hidden == "block_input" else nxt.post_attention_layernorm
                    z = norm(h)[b, s] @ nxt.mlp.router.gate.weight.T
                    manual.append(torch.topk(torch.softmax(z, -1), 2).indices)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
        for l in range(1, 3):
            assert pred[l, b * 17 + s].tolist() == manual[l - 1].tolist()
    # the same from a trace (sequence by sequence) as from input_ids
    trace = record_routing(m, x)
    assert torch.equal(next_layer_predictions(m, trace), next_layer_predictions(m, x))


def test_next_layer_errors(tiny_model):
    with pytest.raises(TypeError, match="model"):
        next_layer_predictions(torch.nn.Linear(2, 2), torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="hidden"):
        next_layer_predictions(tiny_model, torch.zeros(1, 3, dtype=torch.int64), hidden="mlp")
    with pytest.raises(TypeError, match="inputs"):
        next_layer_predictions(tiny_model, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="inputs"):
        next_layer_predictions(tiny_model, torch.full((1, 3), 256))
    with pytest.raises(ValueError, match="k"):
        next_layer_predictions(tiny_model, torch.zeros(1, 3, dtype=torch.int64), k=7)
    with pytest.raises(TypeError, match="inputs"):
        next_layer_predictions(tiny_model, [1, 2, 3])


def test_predict_topk_errors(tiny_model):
    p = small_predictor(tiny_model)
    with pytest.raises(TypeError, match="token_ids"):
        predict_topk(p, torch.zeros(5), None, 2)
    with pytest.raises(ValueError, match="token_ids"):
        predict_topk(p, torch.zeros(2, 5, dtype=torch.int64), None, 2)
    with pytest.raises(ValueError, match="token_ids"):
        predict_topk(p, torch.tensor([0, 256]), None, 2)
    with pytest.raises(ValueError, match="token_ids"):
        predict_topk(p, torch.tensor([0, -1]), None, 2)
    with pytest.raises(ValueError, match="sequence_lengths"):
        predict_topk(p, torch.tensor([0, 1, 2]), torch.tensor([2, 2]), 2)
    with pytest.raises(ValueError, match="k"):
        predict_topk(p, torch.tensor([0, 1, 2]), None, 7)
    with pytest.raises(TypeError, match="predictor"):
        predict_topk(tiny_model, torch.tensor([0, 1, 2]), None, 2)
    with pytest.raises(TypeError, match="input_ids"):
        p(torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------- shipped
@pytest.fixture(scope="module")
def shipped():
    return load_shipped_predictor(), load_shipped_metrics()


def test_shipped_metrics_describe_the_run(shipped):
    p, m = shipped
    assert set(m["domains"]) == set(DOMAINS)
    tr = m["training"]
    assert tr["teacher"]["split"] == "train" and tr["record_plus_train_s"] <= 300
    assert m["predictor"]["trainable_parameters"] == p.num_trainable_parameters()
    assert "train-sida" in m["command"] and isinstance(m["seed"], int)
    assert tr["last_loss"] < tr["first_loss"]
    sup = m["predictor"]["attention_support"]
    assert 1 <= sup["mean"] <= sup["max"] <= sup["window"]
    assert torch.equal(p.embed, TinyMoEForCausalLM.from_pretrained(TINY).embed_tokens.weight.detach())


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_predictions_reproduce_metrics(shipped, domain):
    p, m = shipped
    trace = load_shipped_trace(domain)
    got = predict_topk(p, trace.token_ids, trace.sequence_lengths, trace.top_k)
    ship = load_shipped_predictions(domain)
    assert ship["sida"].shape == trace.topk_ids.shape and ship["next_layer"].shape == trace.topk_ids.shape
    assert float((got == ship["sida"]).float().mean()) > 0.999  # near-ties may flip with the thread count
    rec = m["domains"][domain]["methods"]
    np.testing.assert_allclose(predictor_hit_rate(got, trace.topk_ids), rec["sida"]["hit_rate"], atol=2e-3)
    np.testing.assert_allclose(top1_accuracy(got, trace.topk_ids), rec["sida"]["top1"], atol=2e-3)
    np.testing.assert_allclose(predictor_hit_rate(ship["sida"], trace.topk_ids), rec["sida"]["hit_rate"], atol=1e-6)
    nl = predictor_hit_rate(ship["next_layer"], trace.topk_ids)
    assert np.isnan(nl[0]) and rec["next_layer"]["hit_rate"][0] is None
    np.testing.assert_allclose(nl[1:], rec["next_layer"]["hit_rate"][1:], atol=1e-6)
    hit_ref = hit_rate_reference(ship["sida"].numpy(), trace.topk_ids.numpy())
    np.testing.assert_allclose(predictor_hit_rate(ship["sida"], trace.topk_ids), hit_ref, atol=1e-12)


def test_shipped_next_layer_matches_model(shipped_model):
    trace = load_shipped_trace("de")
    n = 4 * 256  # the first four windows
    ship = load_shipped_predictions("de")["next_layer"][:, :n]
    got = next_layer_predictions(shipped_model, trace.token_ids[:n].reshape(4, 256))
    assert float((got == ship).float().mean()) > 0.999


def _copy_sida(tmp_path):
    d = tmp_path / "sida"
    shutil.copytree(SIDA, d)
    return d


def _rewrite_npz(path: Path, **changes):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez_compressed(path, **data)


@pytest.mark.parametrize("field,value,match", [
    ("sida", None, "'sida': missing"),
    ("sida", np.zeros((4, 8192, 2), dtype=np.int32), "'sida': expected dtype int64"),
    ("sida", np.zeros((4, 8192), dtype=np.int64), "'sida': expected a non-empty"),
    ("sida", np.full((4, 8192, 2), 8, dtype=np.int64), "'sida': expected ids"),
    ("next_layer", np.zeros((4, 8192, 2), dtype=np.int64), "'next_layer': expected -1"),
    ("next_layer", np.zeros((4, 100, 2), dtype=np.int64), "'next_layer': expected shape"),
    ("domain", np.array("de"), "'domain': expected 'en'"),
    ("format", np.array("other"), "'format'"),
    ("schema_version", np.array(2, dtype=np.int64), "'schema_version'"),
])
def test_load_shipped_predictions_corrupt_fields(tmp_path, field, value, match):
    d = _copy_sida(tmp_path)
    path = d / "predictions_en.npz"
    _rewrite_npz(path, **{field: value})
    with pytest.raises(CorruptFileError, match=match) as e:
        load_shipped_predictions("en", directory=d)
    assert str(path) in str(e.value)


def test_load_shipped_predictions_truncated_and_missing(tmp_path):
    d = _copy_sida(tmp_path)
    path = d / "predictions_code.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match="predictions_code.npz"):
        load_shipped_predictions("code", directory=d)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="train-sida"):
        load_shipped_predictions("code", directory=d)
    with pytest.raises(ValueError, match="domain"):
        load_shipped_predictions("fr", directory=d)
    ship = load_shipped_predictions("en", directory=d)
    assert set(ship) == {"sida", "next_layer"} and ship["sida"].dtype == torch.int64
    with zipfile.ZipFile(d / "predictions_en.npz") as z:
        assert np.load(z.open("format.npy")).item() == PREDICTIONS_FORMAT


def test_load_shipped_predictor_corrupt(tmp_path):
    d = _copy_sida(tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="config.json"):
        load_shipped_predictor(d)
    shutil.copy(SIDA / "config.json", d / "config.json")
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CorruptFileError, match="expected shape"):
        load_shipped_predictor(d)
    shutil.copy(SIDA / "config.json", d / "config.json")
    w = d / "predictor.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    with pytest.raises(CorruptFileError, match="predictor.safetensors"):
        load_shipped_predictor(d)
    w.unlink()
    with pytest.raises(FileNotFoundError, match="predictor.safetensors"):
        load_shipped_predictor(d)
    (d / "metrics.json").write_text("[]")
    with pytest.raises(CorruptFileError, match="metrics.json"):
        load_shipped_metrics(d)


def test_cli_writes_a_loadable_directory(tmp_path, capsys):
    out = tmp_path / "sida"
    assert main(["--out", str(out), "--steps", "2", "--windows", "2", "--seed", "3", "--minutes", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    m = load_shipped_metrics(out)
    assert m["seed"] == 3 and m["training"]["steps_done"] == 2 and "--steps 2" in m["command"]
    assert m["training"]["teacher"]["tokens"] == 3 * 2 * 256
    p = load_shipped_predictor(out)
    trace = load_shipped_trace("en")
    got = predict_topk(p, trace.token_ids, trace.sequence_lengths, 2)
    ship = load_shipped_predictions("en", directory=out)
    assert float((got == ship["sida"]).float().mean()) > 0.999
    assert (out / "README.md").read_text().count("train-sida") >= 1
    for f in out.iterdir():
        assert f.stat().st_mode & 0o044 == 0o044  # world-readable
