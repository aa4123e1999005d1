"""Bad inputs to every public entry point of ``samoyeds_lab.routing`` (traces, their files, recording, analytics)."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from samoyeds_lab.errors import CorruptFileError
from samoyeds_lab.moe import TinyMoEConfig, TinyMoEForCausalLM
from samoyeds_lab.routing import (
    RoutingTrace,
    TokensPerExpert,
    coactivation,
    expert_counts,
    expert_frequency,
    imbalance,
    record_routing,
    repetition_rate,
    routing_points,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)
from tests.routing.helpers import hand_trace

from .harness import case, ids, run_case

TMP = Path(tempfile.mkdtemp(prefix="fuzz_routing_"))


def _ids():
    return torch.tensor([[[0, 1], [2, 3], [1, 0]]])  # L=1, T=3, k=2


def _w():
    return torch.tensor([[[0.6, 0.4], [0.5, 0.5], [0.9, 0.1]]])


def trace(**kw):
    """A RoutingTrace from the valid defaults above with some fields replaced."""
    args = dict(topk_ids=_ids(), weights=_w(), token_ids=torch.arange(3), layer_names=("l0",), num_experts=4)
    args.update(kw)
    return RoutingTrace(**args)


def from_layers(**kw):
    args = dict(topk_ids=[torch.tensor([[0, 1], [2, 3]]), torch.tensor([[1, 0], [3, 2]])],
                weights=[torch.tensor([[0.6, 0.4], [0.7, 0.3]])] * 2, token_ids=torch.arange(2),
                layer_names=("a", "b"), num_experts=4)
    args.update(kw)
    return RoutingTrace.from_layers(**args)


T = hand_trace()
T1 = hand_trace(sequence_lengths=torch.ones(6, dtype=torch.int64))  # every sequence one token long
_model = None


def model():
    global _model
    if _model is None:
        torch.manual_seed(0)
        _model = TinyMoEForCausalLM(TinyMoEConfig(vocab_size=64, hidden=16, intermediate=16, layers=2, heads=2,
                                                  num_experts=4, top_k=2, max_seq=16)).eval()
    return _model


# ------------------------------------------------------------------------------------------- files
def _good_file() -> Path:
    p = TMP / "good.npz"
    if not p.exists():
        T.save(p)
    return p


def _arrays() -> dict:
    with np.load(_good_file(), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def npz_with(name: str, **changes) -> Path:
    """The good trace's archive with fields replaced (``None`` removes one)."""
    a = _arrays()
    for k, v in changes.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v
    p = TMP / name
    np.savez(p, **a)
    return p


def raw_file(name: str, data: bytes) -> Path:
    p = TMP / name
    p.write_bytes(data)
    return p


def truncated(name: str) -> Path:
    data = _good_file().read_bytes()
    return raw_file(name, data[: len(data) // 2])


def bad_crc(name: str) -> Path:
    """A member's stored bytes flipped (the zip directory is intact)."""
    src = _good_file()
    p = TMP / name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = bytearray(zin.read(info.filename))
            if info.filename == "weights.npy":
                data[-1] ^= 0xFF
            zout.writestr(info.filename, bytes(data))
    raw = bytearray(p.read_bytes())
    i = raw.find(b"weights.npy")
    # re-corrupt after writing: flip a payload byte of the last member's data (the CRC now mismatches)
    j = raw.find(b"\x93NUMPY", i)
    raw[j + 200] ^= 0x01
    p.write_bytes(bytes(raw))
    return p


class NoRouter(nn.Module):
    def forward(self, x):
        return x


CASES = [
    # ---------------------------------------------------------------------------------- RoutingTrace(...)
    case("routing.RoutingTrace", "topk_ids a list", lambda: trace(topk_ids=_ids().tolist()), TypeError, "topk_ids"),
    case("routing.RoutingTrace", "topk_ids float", lambda: trace(topk_ids=_ids().float()), TypeError, "topk_ids"),
    case("routing.RoutingTrace", "topk_ids 2-D", lambda: trace(topk_ids=_ids()[0]), ValueError, "topk_ids"),
    case("routing.RoutingTrace", "topk_ids no tokens",
         lambda: trace(topk_ids=_ids()[:, :0], weights=_w()[:, :0], token_ids=torch.arange(0)), ValueError, "topk_ids"),
    case("routing.RoutingTrace", "id 4 >= num_experts", lambda: trace(topk_ids=_ids() * 2), ValueError, "topk_ids"),
    case("routing.RoutingTrace", "negative id", lambda: trace(topk_ids=_ids() - 1), ValueError, "topk_ids"),
    case("routing.RoutingTrace", "duplicate id in a token",
         lambda: trace(topk_ids=torch.tensor([[[0, 0], [2, 3], [1, 0]]])), ValueError, "topk_ids"),
    case("routing.RoutingTrace", "num_experts < k", lambda: trace(num_experts=1), ValueError, "num_experts"),
    case("routing.RoutingTrace", "num_experts bool", lambda: trace(num_experts=True), TypeError, "num_experts"),
    case("routing.RoutingTrace", "num_experts float", lambda: trace(num_experts=4.0), TypeError, "num_experts"),
    case("routing.RoutingTrace", "weights NaN",
         lambda: trace(weights=torch.tensor([[[float("nan"), 0.4], [0.5, 0.5], [0.9, 0.1]]])), ValueError, "weights"),
    case("routing.RoutingTrace", "weights inf",
         lambda: trace(weights=torch.tensor([[[float("inf"), 0.4], [0.5, 0.5], [0.9, 0.1]]])), ValueError, "weights"),
    case("routing.RoutingTrace", "negative weight", lambda: trace(weights=-_w()), ValueError, "weights"),
    case("routing.RoutingTrace", "weights increasing", lambda: trace(weights=_w().flip(-1)), ValueError, "weights"),
    case("routing.RoutingTrace", "weights wrong shape", lambda: trace(weights=_w()[:, :2]), ValueError, "weights"),
    case("routing.RoutingTrace", "weights int", lambda: trace(weights=(_w() * 10).long()), TypeError, "weights"),
    case("routing.RoutingTrace", "token_ids wrong length", lambda: trace(token_ids=torch.arange(2)), ValueError,
         "token_ids"),
    case("routing.RoutingTrace", "token_ids negative", lambda: trace(token_ids=torch.tensor([0, -1, 2])), ValueError,
         "token_ids"),
    case("routing.RoutingTrace", "token_ids float", lambda: trace(token_ids=torch.zeros(3)), TypeError, "token_ids"),
    case("routing.RoutingTrace", "layer_names a str", lambda: trace(layer_names="l0"), TypeError, "layer_names"),
    case("routing.RoutingTrace", "layer_names too many", lambda: trace(layer_names=("a", "b")), ValueError,
         "layer_names"),
    case("routing.RoutingTrace", "layer_names empty name", lambda: trace(layer_names=("",)), TypeError, "layer_names"),
    case("routing.RoutingTrace", "logits wrong shape", lambda: trace(logits=torch.zeros(1, 3, 5)), ValueError,
         "logits"),
    case("routing.RoutingTrace", "logits NaN", lambda: trace(logits=torch.full((1, 3, 4), float("nan"))), ValueError,
         "logits"),
    case("routing.RoutingTrace", "logits int", lambda: trace(logits=torch.zeros(1, 3, 4, dtype=torch.int64)),
         TypeError, "logits"),
    case("routing.RoutingTrace", "sequence_lengths sum 2 != 3", lambda: trace(sequence_lengths=torch.tensor([1, 1])),
         ValueError, "sequence_lengths"),
    case("routing.RoutingTrace", "sequence_lengths zero entry",
         lambda: trace(sequence_lengths=torch.tensor([0, 3])), ValueError, "sequence_lengths"),
    case("routing.RoutingTrace", "sequence_lengths float", lambda: trace(sequence_lengths=torch.tensor([3.0])),
         TypeError, "sequence_lengths"),
    case("routing.RoutingTrace", "meta a list", lambda: trace(meta=[1, 2]), TypeError, "meta"),
    case("routing.RoutingTrace", "meta NaN value", lambda: trace(meta={"x": float("nan")}), TypeError, "meta"),
    case("routing.RoutingTrace", "meta int key", lambda: trace(meta={1: "a"}), TypeError, "meta"),
    # ------------------------------------------------------------------------------------ from_layers
    case("routing.RoutingTrace.from_layers", "unequal token counts",
         lambda: from_layers(topk_ids=[torch.tensor([[0, 1], [2, 3]]), torch.tensor([[1, 0]])],
                             weights=[torch.tensor([[0.6, 0.4], [0.7, 0.3]]), torch.tensor([[0.6, 0.4]])]),
         ValueError, "topk_ids"),
    case("routing.RoutingTrace.from_layers", "unequal k",
         lambda: from_layers(topk_ids=[torch.tensor([[0, 1], [2, 3]]), torch.tensor([[1], [3]])],
                             weights=[torch.tensor([[0.6, 0.4], [0.7, 0.3]]), torch.tensor([[1.0], [1.0]])]),
         ValueError, "topk_ids"),
    case("routing.RoutingTrace.from_layers", "weights shape differs from ids",
         lambda: from_layers(weights=[torch.tensor([[0.6, 0.4, 0.0], [0.7, 0.3, 0.0]])] * 2), ValueError, "weights"),
    case("routing.RoutingTrace.from_layers", "one weights tensor for two layers",
         lambda: from_layers(weights=[torch.tensor([[0.6, 0.4], [0.7, 0.3]])]), ValueError, "weights"),
    case("routing.RoutingTrace.from_layers", "no layers", lambda: from_layers(topk_ids=[], weights=[]), ValueError,
         "topk_ids"),
    case("routing.RoutingTrace.from_layers", "topk_ids None", lambda: from_layers(topk_ids=None), TypeError,
         "topk_ids"),
    case("routing.RoutingTrace.from_layers", "topk_ids an int", lambda: from_layers(topk_ids=3), TypeError,
         "topk_ids"),
    case("routing.RoutingTrace.from_layers", "stacked 3-D ids of 1 layer, weights of 2",
         lambda: from_layers(topk_ids=_ids()), ValueError, "weights"),
    case("routing.RoutingTrace.from_layers", "a layer's ids float",
         lambda: from_layers(topk_ids=[torch.zeros(2, 2), torch.zeros(2, 2)]), TypeError, "topk_ids"),
    case("routing.RoutingTrace.from_layers", "a layer's weights NaN",
         lambda: from_layers(weights=[torch.tensor([[float("nan"), 0.4], [0.7, 0.3]])] * 2), ValueError, "weights"),
    case("routing.RoutingTrace.from_layers", "logits of unequal shapes",
         lambda: from_layers(logits=[torch.zeros(2, 4), torch.zeros(1, 4)]), ValueError, "logits"),
    case("routing.RoutingTrace.from_layers", "a logits entry not a tensor",
         lambda: from_layers(logits=[torch.zeros(2, 4), [[0.0] * 4] * 2]), TypeError, "logits"),
    case("routing.RoutingTrace.from_layers", "logits for one layer of two",
         lambda: from_layers(logits=[torch.zeros(2, 4)]), ValueError, "logits"),
    case("routing.RoutingTrace.from_layers", "layer_names None", lambda: from_layers(layer_names=None), TypeError,
         "layer_names"),
    case("routing.RoutingTrace.from_layers", "meta a str", lambda: from_layers(meta="abc"), TypeError, "meta"),
    case("routing.RoutingTrace.from_layers", "id out of range",
         lambda: from_layers(topk_ids=[torch.tensor([[0, 9], [2, 3]])] * 2), ValueError, "topk_ids"),
    # ----------------------------------------------------------------------------------------- concat
    case("routing.RoutingTrace.concat", "no traces", lambda: RoutingTrace.concat([]), ValueError, "traces"),
    case("routing.RoutingTrace.concat", "traces None", lambda: RoutingTrace.concat(None), TypeError, "traces"),
    case("routing.RoutingTrace.concat", "a trace is a tensor", lambda: RoutingTrace.concat([T, _ids()]), TypeError,
         "traces"),
    case("routing.RoutingTrace.concat", "different num_experts",
         lambda: RoutingTrace.concat([trace(), trace(num_experts=5)]), ValueError, "traces"),
    case("routing.RoutingTrace.concat", "meta a list", lambda: RoutingTrace.concat([T, T], meta=[1]), TypeError,
         "meta"),
    # ------------------------------------------------------------------------------------------- save
    case("routing.RoutingTrace.save", "path None", lambda: T.save(None), TypeError, "path"),
    case("routing.RoutingTrace.save", "path an int", lambda: T.save(3), TypeError, "path"),
    case("routing.RoutingTrace.save", "path an existing directory", lambda: T.save(TMP), ValueError, "path"),
    case("routing.RoutingTrace.save", "path empty", lambda: T.save(""), ValueError, "path"),
    # ------------------------------------------------------------------------------------------- load
    case("routing.RoutingTrace.load", "missing file", lambda: RoutingTrace.load(TMP / "missing.npz"),
         FileNotFoundError, "path"),
    case("routing.RoutingTrace.load", "path None", lambda: RoutingTrace.load(None), TypeError, "path"),
    case("routing.RoutingTrace.load", "path a directory", lambda: RoutingTrace.load(TMP), ValueError, "path"),
    case("routing.RoutingTrace.load", "not a zip", lambda: RoutingTrace.load(raw_file("junk.npz", b"not a zip" * 10)),
         CorruptFileError, "junk.npz"),
    case("routing.RoutingTrace.load", "empty file", lambda: RoutingTrace.load(raw_file("empty.npz", b"")),
         CorruptFileError, "empty.npz"),
    case("routing.RoutingTrace.load", "truncated", lambda: RoutingTrace.load(truncated("trunc.npz")),
         CorruptFileError, "trunc.npz"),
    case("routing.RoutingTrace.load", "bad CRC in a member", lambda: RoutingTrace.load(bad_crc("crc.npz")),
         CorruptFileError, "crc.npz"),
    case("routing.RoutingTrace.load", "a plain .npy", lambda: RoutingTrace.load(
        (np.save(TMP / "plain.npy", np.zeros(3)), TMP / "plain.npy")[1]), CorruptFileError, "plain.npy"),
    case("routing.RoutingTrace.load", "schema_version 2",
         lambda: RoutingTrace.load(npz_with("v2.npz", schema_version=np.array(2, dtype=np.int64))),
         CorruptFileError, "schema_version"),
    case("routing.RoutingTrace.load", "schema_version float",
         lambda: RoutingTrace.load(npz_with("vf.npz", schema_version=np.array(1.0))), CorruptFileError,
         "schema_version"),
    case("routing.RoutingTrace.load", "foreign format",
         lambda: RoutingTrace.load(npz_with("fmt.npz", format=np.array("other"))), CorruptFileError, "format"),
    case("routing.RoutingTrace.load", "topk_ids float32",
         lambda: RoutingTrace.load(npz_with("idsf.npz", topk_ids=_arrays()["topk_ids"].astype(np.float32))),
         CorruptFileError, "topk_ids"),
    case("routing.RoutingTrace.load", "topk_ids out of range",
         lambda: RoutingTrace.load(npz_with("idsr.npz", topk_ids=_arrays()["topk_ids"] + 4)), CorruptFileError,
         "topk_ids"),
    case("routing.RoutingTrace.load", "topk_ids negative",
         lambda: RoutingTrace.load(npz_with("idsn.npz", topk_ids=_arrays()["topk_ids"] - 5)), CorruptFileError,
         "topk_ids"),
    case("routing.RoutingTrace.load", "weights float64",
         lambda: RoutingTrace.load(npz_with("w64.npz", weights=_arrays()["weights"].astype(np.float64))),
         CorruptFileError, "weights"),
    case("routing.RoutingTrace.load", "weights NaN",
         lambda: RoutingTrace.load(npz_with("wnan.npz", weights=np.full_like(_arrays()["weights"], np.nan))),
         CorruptFileError, "weights"),
    case("routing.RoutingTrace.load", "num_experts an array",
         lambda: RoutingTrace.load(npz_with("ne.npz", num_experts=np.array([4], dtype=np.int64))),
         CorruptFileError, "num_experts"),
    case("routing.RoutingTrace.load", "num_experts 1 < k",
         lambda: RoutingTrace.load(npz_with("ne1.npz", num_experts=np.array(1, dtype=np.int64))),
         CorruptFileError, "num_experts"),
    case("routing.RoutingTrace.load", "missing field weights",
         lambda: RoutingTrace.load(npz_with("miss.npz", weights=None)), CorruptFileError, "weights"),
    case("routing.RoutingTrace.load", "unknown field",
         lambda: RoutingTrace.load(npz_with("extra.npz", extra=np.zeros(2))), CorruptFileError, "extra"),
    case("routing.RoutingTrace.load", "meta not JSON",
         lambda: RoutingTrace.load(npz_with("meta.npz", meta=np.array("{not json"))), CorruptFileError, "meta"),
    case("routing.RoutingTrace.load", "meta a JSON list",
         lambda: RoutingTrace.load(npz_with("metal.npz", meta=np.array("[1]"))), CorruptFileError, "meta"),
    case("routing.RoutingTrace.load", "layer_names ints",
         lambda: RoutingTrace.load(npz_with("ln.npz", layer_names=np.arange(2))), CorruptFileError, "layer_names"),
    case("routing.RoutingTrace.load", "sequence_lengths not summing",
         lambda: RoutingTrace.load(npz_with("seq.npz", sequence_lengths=np.array([1], dtype=np.int64))),
         CorruptFileError, "sequence_lengths"),
    case("routing.RoutingTrace.load", "pickled object array",
         lambda: RoutingTrace.load(npz_with("obj.npz", meta=np.array([{"a": 1}], dtype=object))),
         CorruptFileError, "meta"),
    # ------------------------------------------------------------------------------------ layer_index
    case("routing.RoutingTrace.layer_index", "unknown name", lambda: T.layer_index("nope"), ValueError, "layer"),
    case("routing.RoutingTrace.layer_index", "index 2 of 2 layers", lambda: T.layer_index(2), ValueError, "layer"),
    case("routing.RoutingTrace.layer_index", "index -3", lambda: T.layer_index(-3), ValueError, "layer"),
    case("routing.RoutingTrace.layer_index", "float", lambda: T.layer_index(0.0), TypeError, "layer"),
    case("routing.RoutingTrace.layer_index", "None", lambda: T.layer_index(None), TypeError, "layer"),
    # ----------------------------------------------------------------------------------- record_routing
    case("routing.record_routing", "model not a module", lambda: record_routing("tiny", torch.zeros(1, 3).long()),
         TypeError, "model"),
    case("routing.record_routing", "model without routers", lambda: record_routing(NoRouter(), torch.zeros(1, 3).long()),
         ValueError, "model"),
    case("routing.record_routing", "input_ids float", lambda: record_routing(model(), torch.zeros(1, 3)), TypeError,
         "input_ids"),
    case("routing.record_routing", "input_ids a list", lambda: record_routing(model(), [[1, 2]]), TypeError,
         "input_ids"),
    case("routing.record_routing", "input_ids empty", lambda: record_routing(model(), torch.zeros(1, 0).long()),
         ValueError, "input_ids"),
    case("routing.record_routing", "input_ids 3-D", lambda: record_routing(model(), torch.zeros(1, 1, 3).long()),
         ValueError, "input_ids"),
    case("routing.record_routing", "input_ids >= vocab_size",
         lambda: record_routing(model(), torch.tensor([[1, 64]])), ValueError, "input_ids"),
    case("routing.record_routing", "input_ids negative",
         lambda: record_routing(model(), torch.tensor([[1, -1]])), ValueError, "input_ids"),
    case("routing.record_routing", "input_ids longer than max_seq",
         lambda: record_routing(model(), torch.zeros(1, 17).long()), ValueError, "input_ids"),
    case("routing.record_routing", "logits_dtype bfloat16",
         lambda: record_routing(model(), torch.zeros(1, 3).long(), logits_dtype=torch.bfloat16), TypeError,
         "logits_dtype"),
    case("routing.record_routing", "logits_dtype a str",
         lambda: record_routing(model(), torch.zeros(1, 3).long(), logits_dtype="float32"), TypeError,
         "logits_dtype"),
    case("routing.record_routing", "meta a list", lambda: record_routing(model(), torch.zeros(1, 3).long(), meta=[1]),
         TypeError, "meta"),
    case("routing.record_routing", "meta not JSON",
         lambda: record_routing(model(), torch.zeros(1, 3).long(), meta={"x": object()}), TypeError, "meta"),
    case("routing.record_routing", "return_output a str",
         lambda: record_routing(model(), torch.zeros(1, 3).long(), return_output="yes"), TypeError, "return_output"),
    # ----------------------------------------------------------------------------------- routing_points
    case("routing.routing_points", "model None", lambda: routing_points(None), TypeError, "model"),
    case("routing.routing_points", "no routers", lambda: routing_points(nn.Linear(2, 2)), ValueError, "model"),
    # ------------------------------------------------------------------------------------- analytics
    case("routing.expert_counts", "trace a tensor", lambda: expert_counts(_ids()), TypeError, "trace"),
    case("routing.expert_counts", "choice 2 >= k", lambda: expert_counts(T, choice=2), ValueError, "choice"),
    case("routing.expert_counts", "choice -1", lambda: expert_counts(T, choice=-1), ValueError, "choice"),
    case("routing.expert_counts", "choice float", lambda: expert_counts(T, choice=0.0), TypeError, "choice"),
    case("routing.expert_counts", "huge num_experts",
         lambda: expert_counts(trace(num_experts=1 << 40)), ValueError, "num_experts"),
    case("routing.expert_frequency", "trace None", lambda: expert_frequency(None), TypeError, "trace"),
    case("routing.expert_frequency", "choice 5", lambda: expert_frequency(T, choice=5), ValueError, "choice"),
    case("routing.expert_frequency", "weighted choice 5", lambda: expert_frequency(T, choice=5, weighted=True),
         ValueError, "choice"),
    case("routing.expert_frequency", "weighted a str", lambda: expert_frequency(T, weighted="no"), TypeError,
         "weighted"),
    case("routing.expert_frequency", "all-zero weights",
         lambda: expert_frequency(trace(weights=torch.zeros(1, 3, 2)), weighted=True), ValueError, "trace"),
    case("routing.imbalance", "trace a dict", lambda: imbalance({"topk_ids": _ids()}), TypeError, "trace"),
    case("routing.imbalance", "huge num_experts", lambda: imbalance(trace(num_experts=1 << 40)), ValueError,
         "num_experts"),
    case("routing.repetition_rate", "trace None", lambda: repetition_rate(None), TypeError, "trace"),
    case("routing.repetition_rate", "depth 0", lambda: repetition_rate(T, 0), ValueError, "depth"),
    case("routing.repetition_rate", "depth 3 > k", lambda: repetition_rate(T, 3), ValueError, "depth"),
    case("routing.repetition_rate", "depth float", lambda: repetition_rate(T, 1.0), TypeError, "depth"),
    case("routing.repetition_rate", "no consecutive pair", lambda: repetition_rate(T1), ValueError,
         "sequence_lengths"),
    case("routing.temporal_locality", "trace a str", lambda: temporal_locality("t.npz"), TypeError, "trace"),
    case("routing.temporal_locality", "no consecutive pair", lambda: temporal_locality(T1), ValueError,
         "sequence_lengths"),
    case("routing.transition_matrix", "last layer", lambda: transition_matrix(T, 1), ValueError, "layer"),
    case("routing.transition_matrix", "layer -1 (the last)", lambda: transition_matrix(T, -1), ValueError, "layer"),
    case("routing.transition_matrix", "unknown name", lambda: transition_matrix(T, "x"), ValueError, "layer"),
    case("routing.transition_matrix", "layer out of range", lambda: transition_matrix(T, 7), ValueError, "layer"),
    case("routing.transition_matrix", "normalize a str", lambda: transition_matrix(T, 0, normalize="yes"), TypeError,
         "normalize"),
    case("routing.transition_matrix", "trace None", lambda: transition_matrix(None, 0), TypeError, "trace"),
    case("routing.transition_matrix", "huge E x E",
         lambda: transition_matrix(RoutingTrace(torch.zeros(2, 1, 1, dtype=torch.int64), torch.ones(2, 1, 1),
                                                torch.zeros(1, dtype=torch.int64), ("a", "b"), 1 << 24), 0),
         ValueError, "num_experts"),
    case("routing.coactivation", "layer out of range", lambda: coactivation(T, 2), ValueError, "layer"),
    case("routing.coactivation", "layer None", lambda: coactivation(T, None), TypeError, "layer"),
    case("routing.coactivation", "normalize 1", lambda: coactivation(T, 0, normalize=1), TypeError, "normalize"),
    case("routing.coactivation", "trace a tensor", lambda: coactivation(_ids(), 0), TypeError, "trace"),
    case("routing.coactivation", "huge T x E", lambda: coactivation(trace(num_experts=1 << 40), 0), ValueError,
         "num_experts"),
    case("routing.tokens_per_expert", "batch_tokens 0", lambda: tokens_per_expert(T, 0), ValueError, "batch_tokens"),
    case("routing.tokens_per_expert", "batch_tokens > tokens", lambda: tokens_per_expert(T, 7), ValueError,
         "batch_tokens"),
    case("routing.tokens_per_expert", "batch_tokens float", lambda: tokens_per_expert(T, 2.0), TypeError,
         "batch_tokens"),
    case("routing.tokens_per_expert", "trace None", lambda: tokens_per_expert(None, 1), TypeError, "trace"),
    case("routing.tokens_per_expert", "huge num_experts", lambda: tokens_per_expert(trace(num_experts=1 << 40), 1),
         ValueError, "num_experts"),
    case("routing.TokensPerExpert.padded_fraction", "pad_to 0", lambda: tokens_per_expert(T, 2).padded_fraction(0),
         ValueError, "pad_to"),
    case("routing.TokensPerExpert.padded_fraction", "pad_to float",
         lambda: tokens_per_expert(T, 2).padded_fraction(64.0), TypeError, "pad_to"),
    case("routing.TokensPerExpert.histogram", "layer 5 of 2", lambda: tokens_per_expert(T, 2).histogram(5),
         ValueError, "layer"),
    case("routing.TokensPerExpert.histogram", "layer a str", lambda: tokens_per_expert(T, 2).histogram("0"),
         TypeError, "layer"),
]

EXEMPT = {
    "routing.Imbalance": "a result record returned by imbalance(); its fields are computed, never user input",
    "routing.TemporalLocality": "a result record returned by temporal_locality(); fields are computed, not input",
}


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


# ------------------------------------------------------------------------------------------ properties
@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=-50, max_value=50), st.integers(min_value=1, max_value=6))
def test_trace_ids_outside_range_always_named(bad, experts):
    """Any id outside [0, num_experts) is refused with a message naming topk_ids; any inside is accepted."""
    ids_ = torch.tensor([[[bad]]])
    args = (torch.ones(1, 1, 1), torch.zeros(1, dtype=torch.int64), ("l",), experts)
    if 0 <= bad < experts:
        assert RoutingTrace(ids_, *args).num_experts == experts
    else:
        with pytest.raises(ValueError, match="topk_ids"):
            RoutingTrace(ids_, *args)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=8), st.integers(0, 1000))
def test_valid_random_traces_round_trip(layers, tokens, seed):
    """Valid random traces never raise, and save/load gives them back exactly."""
    from tests.routing.helpers import random_trace

    t = random_trace(layers, tokens, 2, 5, seed)
    p = t.save(TMP / f"rt_{layers}_{tokens}_{seed}.npz")
    u = RoutingTrace.load(p)
    assert torch.equal(u.topk_ids, t.topk_ids) and torch.equal(u.weights, t.weights)
    expert_counts(u), imbalance(u), coactivation(u, 0), tokens_per_expert(u, 1)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_are_corrupt_files(data):
    """Whatever bytes a file holds, load raises CorruptFileError naming the file, never anything else."""
    p = raw_file("rand.npz", data)
    with pytest.raises(CorruptFileError, match="rand.npz"):
        RoutingTrace.load(p)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=2000))
def test_truncated_at_any_byte_is_corrupt(cut):
    data = _good_file().read_bytes()
    cut = min(cut, len(data) - 1)
    p = raw_file("cut.npz", data[:cut])
    with pytest.raises(CorruptFileError, match="cut.npz"):
        RoutingTrace.load(p)


def test_meta_json_roundtrip_is_not_pickle():
    """The meta field is JSON text on disk (no object arrays)."""
    a = _arrays()
    assert a["meta"].dtype.kind == "U" and json.loads(str(a["meta"]))["source"] == "hand"
