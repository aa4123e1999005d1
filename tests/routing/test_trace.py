"""RoutingTrace: validation, from_layers sorting, .npz round trip, and corrupt or tampered files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.routing import SCHEMA_VERSION, RoutingTrace

from .helpers import hand_trace, random_trace


def assert_same(a: RoutingTrace, b: RoutingTrace) -> None:
    assert torch.equal(a.topk_ids, b.topk_ids) and a.topk_ids.dtype == b.topk_ids.dtype == torch.int64
    assert torch.equal(a.weights, b.weights) and b.weights.dtype == torch.float32
    assert torch.equal(a.token_ids, b.token_ids)
    assert torch.equal(a.sequence_lengths, b.sequence_lengths)
    assert a.layer_names == b.layer_names and a.num_experts == b.num_experts and a.meta == b.meta
    assert (a.logits is None) == (b.logits is None)
    if a.logits is not None:
        assert a.logits.dtype == b.logits.dtype and torch.equal(a.logits, b.logits)


# ----------------------------------------------------------------------------------- construction
def test_normalises_dtypes_and_defaults():
    tr = RoutingTrace(torch.tensor([[[1, 0]], [[2, 1]]], dtype=torch.int16), torch.tensor([[[.6, .4]], [[.5, .5]]], dtype=torch.float16),
                      torch.tensor([7], dtype=torch.int32), ["a", "b"], 3, logits=torch.zeros(2, 1, 3, dtype=torch.bfloat16))
    assert tr.topk_ids.dtype == torch.int64 and tr.weights.dtype == torch.float32 and tr.token_ids.dtype == torch.int64
    assert tr.layer_names == ("a", "b") and tr.logits.dtype == torch.float32
    assert tr.sequence_lengths.tolist() == [1] and tr.meta == {}
    assert (tr.num_layers, tr.num_tokens, tr.top_k) == (2, 1, 2)
    assert "layers=2, tokens=1, k=2, num_experts=3" in repr(tr)


def test_from_layers_sorts_by_weight_stably():
    # DeepSeek-style unsorted top-k; a tie keeps the router's order
    ids = [torch.tensor([[3, 0, 1], [2, 1, 0]])]
    w = [torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])]
    tr = RoutingTrace.from_layers(ids, w, torch.tensor([5, 6]), ["moe"], 4, logits=[torch.zeros(2, 4)])
    assert tr.topk_ids.tolist() == [[[0, 1, 3], [0, 2, 1]]]
    torch.testing.assert_close(tr.weights, torch.tensor([[[0.6, 0.3, 0.1], [0.6, 0.2, 0.2]]]))


def test_same_pair_mask():
    tr = hand_trace(sequence_lengths=torch.tensor([2, 1, 3]))
    assert tr.same_pair_mask().tolist() == [True, False, False, True, True]
    assert hand_trace().same_pair_mask().all()


def _args():
    return dict(topk_ids=torch.tensor([[[0, 1], [2, 0]]]), weights=torch.tensor([[[.6, .4], [.5, .5]]]),
                token_ids=torch.tensor([1, 2]), layer_names=("a",), num_experts=3)


@pytest.mark.parametrize("change,exc,match", [
    (dict(topk_ids=[[[0, 1]]]), TypeError, r"topk_ids: expected a torch.Tensor, got list"),
    (dict(topk_ids=torch.zeros(1, 2, 2)), TypeError, r"topk_ids: expected dtype .*got torch.float32"),
    (dict(topk_ids=torch.zeros(2, 2, dtype=torch.int64)), ValueError, r"topk_ids: expected a 3-D tensor, got shape \(2, 2\)"),
    (dict(topk_ids=torch.zeros(1, 0, 2, dtype=torch.int64)), ValueError, r"topk_ids: expected shape .*every size >= 1"),
    (dict(topk_ids=torch.tensor([[[0, 3], [2, 0]]])), ValueError, r"topk_ids: expected expert ids in \[0, 3\), got 3 at layer 0 token 0 choice 1"),
    (dict(topk_ids=torch.tensor([[[0, 1], [-1, 0]]])), ValueError, r"got -1 at layer 0 token 1 choice 0"),
    (dict(topk_ids=torch.tensor([[[0, 1], [2, 2]]])), ValueError, r"topk_ids: expected distinct experts per token, got \[2, 2\] at layer 0 token 1"),
    (dict(num_experts=1), ValueError, r"num_experts: expected an int >= 2, got 1"),
    (dict(num_experts=3.0), TypeError, r"num_experts: expected an int, got float"),
    (dict(weights=torch.ones(1, 2, 3)), ValueError, r"weights: expected shape \(1, 2, 2\) \(as topk_ids\), got \(1, 2, 3\)"),
    (dict(weights=torch.ones(1, 2, 2, dtype=torch.int64)), TypeError, r"weights: expected dtype"),
    (dict(weights=torch.tensor([[[.6, float("nan")], [.5, .5]]])), ValueError, r"weights: expected finite values >= 0"),
    (dict(weights=torch.tensor([[[.6, -.1], [.5, .5]]])), ValueError, r"weights: expected finite values >= 0"),
    (dict(weights=torch.tensor([[[.4, .6], [.5, .5]]])), ValueError, r"weights: expected non-increasing weights .* at layer 0 token 0"),
    (dict(token_ids=torch.tensor([1, 2, 3])), ValueError, r"token_ids: expected 2 ids \(tokens of topk_ids\), got 3"),
    (dict(token_ids=torch.tensor([1, -2])), ValueError, r"token_ids: expected ids >= 0, got -2"),
    (dict(token_ids=torch.tensor([[1, 2]])), ValueError, r"token_ids: expected a 1-D tensor"),
    (dict(layer_names=("a", "b")), ValueError, r"layer_names: expected 1 names \(layers of topk_ids\), got 2"),
    (dict(layer_names="a"), TypeError, r"layer_names: expected a tuple of str, got str"),
    (dict(layer_names=("",)), TypeError, r"layer_names: expected non-empty str, got '' at index 0"),
    (dict(logits=torch.zeros(1, 2, 4)), ValueError, r"logits: expected shape \(1, 2, 3\) \[layers, tokens, num_experts\], got \(1, 2, 4\)"),
    (dict(logits=torch.full((1, 2, 3), float("inf"))), ValueError, r"logits: expected finite values"),
    (dict(logits=torch.zeros(1, 2, 3, dtype=torch.float64)), TypeError, r"logits: expected dtype float16/bfloat16/float32, got torch.float64"),
    (dict(sequence_lengths=torch.tensor([1, 2])), ValueError, r"sequence_lengths: expected positive lengths summing to 2 \(tokens\), got \[1, 2\]"),
    (dict(sequence_lengths=torch.tensor([2, 0])), ValueError, r"sequence_lengths: expected positive lengths"),
    (dict(meta={"a": object()}), TypeError, r"meta: expected JSON-serialisable values"),
    (dict(meta={1: "x"}), TypeError, r"meta: expected str keys, got key 1"),
    (dict(meta=[1]), TypeError, r"meta: expected a dict, got list"),
])
def test_bad_construction(change, exc, match):
    with pytest.raises(exc, match=match):
        RoutingTrace(**{**_args(), **change})


def test_duplicate_layer_names():
    a = _args()
    a.update(topk_ids=a["topk_ids"].repeat(2, 1, 1), weights=a["weights"].repeat(2, 1, 1), layer_names=("x", "x"))
    with pytest.raises(ValueError, match=r"layer_names: expected distinct names, got \['x', 'x'\]"):
        RoutingTrace(**a)


def test_concat():
    a, b = hand_trace(sequence_lengths=torch.tensor([2, 4])), hand_trace()
    c = RoutingTrace.concat([a, b])
    assert c.num_tokens == 12 and c.sequence_lengths.tolist() == [2, 4, 6]
    assert torch.equal(c.topk_ids[:, 6:], b.topk_ids) and torch.equal(c.token_ids[:6], a.token_ids)
    assert c.meta == {"source": "hand", "parts": 2}
    assert RoutingTrace.concat([a], meta={"x": 1}).meta == {"x": 1}
    with pytest.raises(ValueError, match=r"traces\[1\]: expected \(layer_names, num_experts, k, logits dtype\)"):
        RoutingTrace.concat([a, random_trace(2, 3, 2, 4, 0)])
    with pytest.raises(ValueError, match="traces: expected at least one RoutingTrace, got none"):
        RoutingTrace.concat([])
    with pytest.raises(TypeError, match=r"traces\[0\]: expected a RoutingTrace, got int"):
        RoutingTrace.concat([1])


def test_layer_index():
    tr = hand_trace()
    assert [tr.layer_index(i) for i in (0, 1, -1, -2, "layers.1.mlp")] == [0, 1, 1, 0, 1]


# ------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("make", [
    lambda: hand_trace(),
    lambda: hand_trace(sequence_lengths=torch.tensor([5, 1]), meta={"text": "héllo ✓", "n": [1, 2.5, None]}),
    lambda: random_trace(3, 19, 3, 7, 4, logits=True, seq=[10, 9]),
    lambda: RoutingTrace(random_trace(2, 5, 2, 9, 1).topk_ids, random_trace(2, 5, 2, 9, 1).weights, torch.arange(5), ("a", "b"), 9,
                         logits=torch.randn(2, 5, 9).half()),
    lambda: RoutingTrace(torch.tensor([[[40000]]]), torch.ones(1, 1, 1), torch.tensor([0]), ("big",), 40001),  # int32 ids on disk
], ids=["hand", "meta+seqs", "fp32 logits", "fp16 logits", "E>int16"])
def test_round_trip(tmp_path, make):
    tr = make()
    path = tr.save(tmp_path / "sub" / "trace.npz")
    assert path == tmp_path / "sub" / "trace.npz" and not list((tmp_path / "sub").glob("*.tmp"))
    assert_same(tr, RoutingTrace.load(path))
    other = tr.save(tmp_path / "no_suffix")  # the name is kept as given
    assert other.name == "no_suffix" and other.exists()
    assert_same(tr, RoutingTrace.load(str(other)))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: no routing trace at"):
        RoutingTrace.load(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------------- corrupt files
def _arrays(tmp_path) -> dict:
    path = hand_trace().save(tmp_path / "good.npz")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _write(tmp_path, arrays: dict, name="bad.npz"):
    path = tmp_path / name
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _tamper(**changes):
    def f(a):
        for k, v in changes.items():
            if v is None:
                a.pop(k)
            else:
                a[k] = v(a[k]) if callable(v) else v
        return a
    return f


@pytest.mark.parametrize("tamper,fieldname,match", [
    (_tamper(weights=None), "weights", "missing"),
    (_tamper(meta=None), "meta", "missing"),
    (_tamper(extra=np.zeros(2)), "extra", "unexpected field"),
    (_tamper(weights=lambda w: w.astype(np.float64)), "weights", "expected dtype float32, got float64"),
    (_tamper(topk_ids=lambda x: x.astype(np.float32)), "topk_ids", "expected dtype int16/int32/int64, got float32"),
    (_tamper(token_ids=lambda x: x.astype(np.int32)), "token_ids", "expected dtype int64, got int32"),
    (_tamper(logits=np.zeros((2, 6, 4), dtype=np.float64)), "logits", "expected dtype float16/float32, got float64"),
    (_tamper(topk_ids=lambda x: np.where(x == 3, 9, x).astype(x.dtype)), "topk_ids", r"expected expert ids in \[0, 4\), got 9"),
    (_tamper(token_ids=lambda x: x[:5]), "token_ids", r"expected 6 ids \(tokens of topk_ids\), got 5"),
    (_tamper(layer_names=np.array(["only_one"])), "layer_names", r"expected 2 names \(layers of topk_ids\), got 1"),
    (_tamper(layer_names=np.array([1, 2])), "layer_names", "expected a 1-D unicode array, got dtype int64"),
    (_tamper(weights=lambda w: w[..., ::-1].copy()), "weights", "expected non-increasing weights"),
    (_tamper(schema_version=np.array(SCHEMA_VERSION + 1)), "schema_version", f"expected {SCHEMA_VERSION} .* got {SCHEMA_VERSION + 1}"),
    (_tamper(schema_version=np.array([1, 1])), "schema_version", "expected a scalar"),
    (_tamper(format=np.array("something.else")), "format", "expected 'samoyeds_lab.RoutingTrace', got 'something.else'"),
    (_tamper(format=np.array(3)), "format", "expected a 0-d unicode string"),
    (_tamper(num_experts=np.array(1)), "num_experts", "expected an int >= 2, got 1"),
    (_tamper(meta=np.array("{not json")), "meta", "invalid JSON"),
    (_tamper(meta=np.array(json.dumps([1, 2]))), "meta", "expected a JSON object, got list"),
    (_tamper(sequence_lengths=np.array([4, 4])), "sequence_lengths", "summing to 6"),
])
def test_tampered_fields(tmp_path, tamper, fieldname, match):
    path = _write(tmp_path, tamper(_arrays(tmp_path)))
    with pytest.raises(CorruptFileError, match=match) as info:
        RoutingTrace.load(path)
    msg = str(info.value)
    assert str(path) in msg and f"field '{fieldname}'" in msg


def test_object_array_is_rejected_without_unpickling(tmp_path):
    a = _arrays(tmp_path)
    a["layer_names"] = np.array(["a", "b"], dtype=object)
    path = _write(tmp_path, a)
    with pytest.raises(CorruptFileError, match=r"field 'layer_names': cannot be read") as info:
        RoutingTrace.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "flip", "text", "empty"])
def test_damaged_archive(tmp_path, damage):
    path = random_trace(2, 50, 2, 8, 0, logits=True).save(tmp_path / "t.npz")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # inside the first member's compressed data: bad CRC or bad deflate stream
        with zipfile.ZipFile(path) as z:
            info = z.infolist()[0]
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
        path.write_bytes(raw[:start] + bytes([raw[start] ^ 0xFF]) + raw[start + 1:])
    elif damage == "text":
        path.write_text("topk_ids,weights\n1,2\n")
    else:
        path.write_bytes(b"")
    with pytest.raises(CorruptFileError) as info:
        RoutingTrace.load(path)
    assert str(path) in str(info.value)
