"""Routing traces: which experts every token chose, in every MoE layer, as one validated object.

A :class:`RoutingTrace` is what a forward pass decided, frozen for later study (hotness, locality,
offloading simulations, SiDA's predictor training)::

    topk_ids [layers, tokens, k]   expert ids, column 0 = first choice (largest routing weight)
    weights  [layers, tokens, k]   routing weights actually applied (after renormalisation / scaling)
    token_ids [tokens]             the input ids, flattened in the order the model saw them
    logits   [layers, tokens, E]   optional raw router logits (fp16/fp32)

Tokens are flattened row-major from the input batch: token ``t = b·S + s`` for ``input_ids [B, S]``,
and ``sequence_lengths`` records where sequences end so that "consecutive tokens" never crosses from
one sequence into the next.

On disk a trace is an ``.npz`` archive (NumPy arrays only, no pickles) with a ``schema_version``;
:meth:`RoutingTrace.load` checks every field's dtype, shape and range and raises
:class:`~samoyeds_lab.errors.CorruptFileError` naming the file and the field on any mismatch.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .._checks import FLOAT_DTYPES, INT_DTYPES, check_int, check_path, check_tensor
from ..errors import CorruptFileError

#: Version of the ``.npz`` layout written by :meth:`RoutingTrace.save`.
SCHEMA_VERSION = 1
#: Value of the ``format`` field, so a foreign ``.npz`` is recognised as such.
FORMAT_NAME = "samoyeds_lab.RoutingTrace"

_REQUIRED = ("format", "schema_version", "topk_ids", "weights", "token_ids", "layer_names", "num_experts",
             "sequence_lengths", "meta")
_OPTIONAL = ("logits",)
# Allowed on-disk dtypes per field (NumPy dtype strings, native little-endian as np.savez writes them).
_DISK_DTYPES = {
    "schema_version": ("int64",),
    "num_experts": ("int64",),
    "topk_ids": ("int16", "int32", "int64"),
    "weights": ("float32",),
    "token_ids": ("int64",),
    "sequence_lengths": ("int64",),
    "logits": ("float16", "float32"),
}


def _tensor_list(name: str, v: object) -> list:
    """A per-layer sequence (list / tuple, or a tensor whose first dimension is the layers) as a list."""
    if isinstance(v, torch.Tensor):
        return list(v.unbind(0)) if v.ndim >= 1 else [v]
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        raise TypeError(f"{name}: expected a sequence of per-layer tensors, got {type(v).__name__}")
    return list(v)


def _json_ready(name: str, meta: Mapping[str, Any]) -> dict:
    if not isinstance(meta, Mapping):
        raise TypeError(f"{name}: expected a dict, got {type(meta).__name__}")
    meta = dict(meta)
    for key in meta:
        if not isinstance(key, str):
            raise TypeError(f"{name}: expected str keys, got key {key!r} ({type(key).__name__})")
    try:
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected JSON-serialisable values (str, numbers, lists, dicts), got {exc}") from None


@dataclass(frozen=True, eq=False, repr=False)
class RoutingTrace:
    """The expert choices of every token in every MoE layer of one forward pass.

    Attributes
    ----------
    topk_ids : torch.Tensor
        int64 ``[layers, tokens, k]``; ``topk_ids[l, t, j]`` is token ``t``'s ``j``-th choice in layer
        ``l``, in ``[0, num_experts)``, distinct within a token, ordered by non-increasing weight
        (column 0 is the *first choice*). Other integer dtypes are converted to int64.
    weights : torch.Tensor
        float32 ``[layers, tokens, k]`` routing weights applied to the experts' outputs, finite and
        ``>= 0``, non-increasing along ``k`` (fp16/bf16 are converted to fp32).
    token_ids : torch.Tensor
        int64 ``[tokens]`` input ids (``>= 0``), flattened row-major from ``input_ids [B, S]``.
    layer_names : tuple of str
        ``layers`` distinct, non-empty module names (e.g. ``"layers.0.moe"``).
    num_experts : int
        ``E >= k``.
    logits : torch.Tensor or None
        Optional float16/float32 ``[layers, tokens, E]`` router logits (bf16 converted to fp32), finite.
    sequence_lengths : torch.Tensor or None
        int64 ``[sequences]`` of positive lengths summing to ``tokens``; ``None`` means one sequence.
        Stored normalised (never ``None`` after construction).
    meta : dict
        JSON-serialisable description (model, text source, batch shape, …).

    Use :meth:`from_layers` to build a trace from unsorted per-layer router outputs.
    """

    topk_ids: torch.Tensor
    weights: torch.Tensor
    token_ids: torch.Tensor
    layer_names: tuple
    num_experts: int
    logits: torch.Tensor | None = None
    sequence_lengths: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    # ----------------------------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        def set_(name: str, value: object) -> None:  # frozen dataclass: normalised fields are set once here
            object.__setattr__(self, name, value)

        ids = check_tensor("topk_ids", self.topk_ids, ndim=3, dtypes=INT_DTYPES)
        layers, tokens, k = ids.shape
        if layers < 1 or tokens < 1 or k < 1:
            raise ValueError(
                f"topk_ids: expected shape [layers, tokens, k] with every size >= 1, got {tuple(ids.shape)}"
            )
        num_experts = check_int("num_experts", self.num_experts, lo=k)
        ids = ids.detach().to("cpu", torch.int64).contiguous()
        bad = (ids < 0) | (ids >= num_experts)
        if bool(bad.any()):
            l, t, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"topk_ids: expected expert ids in [0, {num_experts}), got {int(ids[l, t, j])} "
                             f"at layer {l} token {t} choice {j}")
        if k > 1:
            srt = ids.sort(dim=-1).values
            dup = (srt[..., 1:] == srt[..., :-1]).any(dim=-1)
            if bool(dup.any()):
                l, t = (int(v) for v in dup.nonzero()[0])
                raise ValueError(f"topk_ids: expected distinct experts per token, got {ids[l, t].tolist()} "
                                 f"at layer {l} token {t}")

        w = check_tensor("weights", self.weights, dtypes=FLOAT_DTYPES)
        if tuple(w.shape) != tuple(ids.shape):
            raise ValueError(f"weights: expected shape {tuple(ids.shape)} (as topk_ids), got {tuple(w.shape)}")
        w = w.detach().to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights: expected finite values >= 0, got NaN/inf or a negative weight")
        if k > 1 and bool((w[..., 1:] > w[..., :-1]).any()):
            l, t = (int(v) for v in (w[..., 1:] > w[..., :-1]).any(-1).nonzero()[0])
            raise ValueError(f"weights: expected non-increasing weights along k (column 0 = first choice), got "
                             f"{w[l, t].tolist()} at layer {l} token {t}; build with RoutingTrace.from_layers to sort")

        tok = check_tensor("token_ids", self.token_ids, ndim=1, dtypes=INT_DTYPES)
        if tok.shape[0] != tokens:
            raise ValueError(f"token_ids: expected {tokens} ids (tokens of topk_ids), got {tok.shape[0]}")
        tok = tok.detach().to("cpu", torch.int64).contiguous()
        if bool((tok < 0).any()):
            raise ValueError(f"token_ids: expected ids >= 0, got {int(tok.min())}")

        names = self.layer_names
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise TypeError(f"layer_names: expected a tuple of str, got {type(names).__name__}")
        names = tuple(names)
        if len(names) != layers:
            raise ValueError(f"layer_names: expected {layers} names (layers of topk_ids), got {len(names)}")
        for i, n in enumerate(names):
            if not isinstance(n, str) or not n:
                raise TypeError(f"layer_names: expected non-empty str, got {n!r} at index {i}")
        if len(set(names)) != len(names):
            raise ValueError(f"layer_names: expected distinct names, got {list(names)}")

        logits = self.logits
        if logits is not None:
            check_tensor("logits", logits, ndim=3, dtypes=FLOAT_DTYPES)
            if tuple(logits.shape) != (layers, tokens, num_experts):
                raise ValueError(f"logits: expected shape {(layers, tokens, num_experts)} "
                                 f"[layers, tokens, num_experts], got {tuple(logits.shape)}")
            logits = logits.detach().to("cpu")
            if logits.dtype == torch.bfloat16:
                logits = logits.float()
            logits = logits.contiguous()
            if not bool(torch.isfinite(logits).all()):
                raise ValueError("logits: expected finite values, got NaN/inf")

        seq = self.sequence_lengths
        if seq is None:
            seq = torch.tensor([tokens], dtype=torch.int64)
        else:
            check_tensor("sequence_lengths", seq, ndim=1, dtypes=INT_DTYPES)
            seq = seq.detach().to("cpu", torch.int64).contiguous()
            if seq.numel() < 1 or bool((seq < 1).any()) or int(seq.sum()) != tokens:
                raise ValueError(f"sequence_lengths: expected positive lengths summing to {tokens} (tokens), "
                                 f"got {seq.tolist()}")

        set_("topk_ids", ids)
        set_("weights", w)
        set_("token_ids", tok)
        set_("layer_names", names)
        set_("num_experts", num_experts)
        set_("logits", logits)
        set_("sequence_lengths", seq)
        set_("meta", _json_ready("meta", self.meta))

    # ---------------------------------------------------------------------------------- properties
    @property
    def num_layers(self) -> int:
        return self.topk_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.topk_ids.shape[1]

    @property
    def top_k(self) -> int:
        return self.topk_ids.shape[2]

    def layer_index(self, layer: int | str) -> int:
        """Index of ``layer`` given as an index (negative counts from the end) or a layer name."""
        if isinstance(layer, str):
            if layer not in self.layer_names:
                raise ValueError(f"layer: expected one of {list(self.layer_names)}, got {layer!r}")
            return self.layer_names.index(layer)
        i = check_int("layer", layer, lo=-self.num_layers, hi=self.num_layers - 1)
        return i % self.num_layers

    def same_pair_mask(self) -> torch.Tensor:
        """bool ``[tokens - 1]``: ``True`` where tokens ``t`` and ``t+1`` belong to the same sequence."""
        mask = torch.ones(self.num_tokens - 1, dtype=torch.bool)
        ends = torch.cumsum(self.sequence_lengths, 0)[:-1] - 1  # last token of every sequence but the last
        mask[ends] = False
        return mask

    def __repr__(self) -> str:
        return (f"RoutingTrace(layers={self.num_layers}, tokens={self.num_tokens}, k={self.top_k}, "
                f"num_experts={self.num_experts}, sequences={self.sequence_lengths.numel()}, "
                f"logits={'none' if self.logits is None else str(self.logits.dtype).replace('torch.', '')}, "
                f"meta={self.meta})")

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_layers(
        cls,
        topk_ids: Sequence[torch.Tensor],
        weights: Sequence[torch.Tensor],
        token_ids: torch.Tensor,
        layer_names: Sequence[str],
        num_experts: int,
        *,
        logits: Sequence[torch.Tensor] | None = None,
        sequence_lengths: torch.Tensor | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> "RoutingTrace":
        """Stack per-layer router outputs (``[tokens, k]`` each) and sort every token's choices.

        Choices are sorted by weight, descending and stable (ties keep the router's order), so that
        column 0 is the first choice even for routers that return an unsorted top-k (DeepSeek-V2's
        ``torch.topk(..., sorted=False)``).
        """
        topk_ids = _tensor_list("topk_ids", topk_ids)
        weights = _tensor_list("weights", weights)
        if len(topk_ids) != len(weights):
            raise ValueError(f"weights: expected {len(topk_ids)} per-layer tensors (as topk_ids), got {len(weights)}")
        if len(topk_ids) == 0:
            raise ValueError("topk_ids: expected at least one layer, got none")
        for i, (a, b) in enumerate(zip(topk_ids, weights)):
            check_tensor(f"topk_ids[{i}]", a, ndim=2, dtypes=INT_DTYPES)
            check_tensor(f"weights[{i}]", b, ndim=2, dtypes=FLOAT_DTYPES)
            if a.shape != topk_ids[0].shape:
                raise ValueError(f"topk_ids[{i}]: expected shape {tuple(topk_ids[0].shape)} [tokens, k] as topk_ids[0] "
                                 f"(every layer routes the same tokens), got {tuple(a.shape)}")
            if b.shape != a.shape:
                raise ValueError(f"weights[{i}]: expected shape {tuple(a.shape)} (as topk_ids[{i}]), got {tuple(b.shape)}")
        if isinstance(layer_names, str) or not isinstance(layer_names, Sequence):
            raise TypeError(f"layer_names: expected a sequence of str, got {type(layer_names).__name__}")
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
        ids = torch.stack([t.detach().cpu().to(torch.int64) for t in topk_ids])
        w = torch.stack([t.detach().cpu().float() for t in weights])
        if ids.shape != w.shape:
            raise ValueError(f"weights: expected shape {tuple(ids.shape)} (as topk_ids), got {tuple(w.shape)}")
        w, order = torch.sort(w, dim=-1, descending=True, stable=True)
        ids = torch.gather(ids, -1, order)
        lg = None
        if logits is not None:
            logits = _tensor_list("logits", logits)
            if len(logits) != len(topk_ids):
                raise ValueError(f"logits: expected {len(topk_ids)} per-layer tensors, got {len(logits)}")
            for i, t in enumerate(logits):
                check_tensor(f"logits[{i}]", t, ndim=2, dtypes=FLOAT_DTYPES)
                if t.shape != logits[0].shape or t.shape[0] != ids.shape[1]:
                    raise ValueError(f"logits[{i}]: expected shape [{ids.shape[1]}, num_experts] as every layer's, "
                                     f"got {tuple(t.shape)}")
            lg = torch.stack([t.detach().cpu() for t in logits])
        return cls(ids, w, token_ids, tuple(layer_names), num_experts, logits=lg,
                   sequence_lengths=sequence_lengths, meta=dict(meta or {}))

    @classmethod
    def concat(cls, traces: Sequence["RoutingTrace"], *, meta: Mapping[str, Any] | None = None) -> "RoutingTrace":
        """Join traces of the same model along tokens (e.g. a corpus recorded chunk by chunk).

        Sequences stay separate (``sequence_lengths`` are concatenated). Every trace must have the same
        ``layer_names``, ``num_experts``, ``k`` and logits presence/dtype. ``meta`` defaults to the first
        trace's ``meta`` with ``"batch_shape"`` removed and ``"parts"`` = number of traces.
        """
        if isinstance(traces, (str, bytes, RoutingTrace)) or not hasattr(traces, "__iter__"):
            raise TypeError(f"traces: expected a sequence of RoutingTrace, got {type(traces).__name__}")
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta: expected a dict, got {type(meta).__name__}")
        traces = list(traces)
        if not traces:
            raise ValueError("traces: expected at least one RoutingTrace, got none")
        for i, t in enumerate(traces):
            if not isinstance(t, RoutingTrace):
                raise TypeError(f"traces[{i}]: expected a RoutingTrace, got {type(t).__name__}")
        first = traces[0]
        def key(t: RoutingTrace) -> tuple:
            return t.layer_names, t.num_experts, t.top_k, None if t.logits is None else t.logits.dtype

        for i, t in enumerate(traces[1:], 1):
            if key(t) != key(first):
                raise ValueError(f"traces[{i}]: expected (layer_names, num_experts, k, logits dtype) = {key(first)} "
                                 f"as traces[0], got {key(t)}")
        if meta is None:
            meta = {k: v for k, v in first.meta.items() if k != "batch_shape"}
            meta["parts"] = len(traces)
        return cls(
            torch.cat([t.topk_ids for t in traces], 1), torch.cat([t.weights for t in traces], 1),
            torch.cat([t.token_ids for t in traces]), first.layer_names, first.num_experts,
            logits=None if first.logits is None else torch.cat([t.logits for t in traces], 1),
            sequence_lengths=torch.cat([t.sequence_lengths for t in traces]), meta=dict(meta),
        )

    # ------------------------------------------------------------------------------------- file I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace to ``path`` (an ``.npz`` archive, compressed, no pickles) and return the path.

        The name is used as given (no ``.npz`` is appended). The file is written to a temporary file in
        the same folder first and then renamed, so an interrupted save never leaves half a trace.
        ``topk_ids`` are stored as int16 when ``num_experts <= 32767`` (int32 otherwise).
        """
        path = check_path("path", path, must_exist=False)
        if path.is_dir():
            raise ValueError(f"path: expected a file name, got the directory {str(path)!r}")
        ids_dtype = np.int16 if self.num_experts <= np.iinfo(np.int16).max else np.int32
        arrays = {
            "format": np.array(FORMAT_NAME),
            "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
            "topk_ids": self.topk_ids.numpy().astype(ids_dtype),
            "weights": self.weights.numpy(),
            "token_ids": self.token_ids.numpy(),
            "layer_names": np.array(self.layer_names, dtype=str),
            "num_experts": np.array(self.num_experts, dtype=np.int64),
            "sequence_lengths": self.sequence_lengths.numpy(),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.logits is not None:
            arrays["logits"] = self.logits.numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RoutingTrace":
        """Read a trace written by :meth:`save`, validating every field.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        CorruptFileError
            Not a readable ``.npz`` (truncated, bad CRC, not a zip), not a routing trace, a newer
            ``schema_version``, a missing or unknown field, or a field with the wrong dtype, shape or
            values; the message names the file and the field.
        """
        path = check_path("path", path, must_exist=False)
        if not path.exists():
            raise FileNotFoundError(f"path: no routing trace at {str(path)!r}")
        if not path.is_file():
            raise ValueError(f"path: expected a routing trace file, got the directory {str(path)!r}")

        def bad(fieldname: str, msg: str) -> CorruptFileError:
            return CorruptFileError(f"{path}: field {fieldname!r}: {msg}")

        data: dict[str, np.ndarray] = {}
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array, not an archive
                raise CorruptFileError(f"{path}: not a .npz routing trace (a single {type(loaded).__name__} "
                                       f"{getattr(loaded, 'shape', '')})")
            with loaded as npz:
                names = list(npz.files)
                for name in names:
                    try:
                        data[name] = npz[name]
                    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
                        raise bad(name, f"cannot be read ({type(exc).__name__}: {exc})") from None
        except CorruptFileError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise CorruptFileError(f"{path}: not a readable .npz routing trace ({type(exc).__name__}: {exc})") from None

        for name in _REQUIRED:
            if name not in data:
                raise bad(name, "missing")
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise bad(unknown[0],
                      f"unexpected field (schema version {SCHEMA_VERSION} has {sorted(_REQUIRED + _OPTIONAL)})")

        def scalar_str(name: str) -> str:
            a = data[name]
            if a.dtype.kind != "U" or a.ndim != 0:
                raise bad(name, f"expected a 0-d unicode string, got dtype {a.dtype} shape {a.shape}")
            return str(a[()])

        if scalar_str("format") != FORMAT_NAME:
            raise bad("format", f"expected {FORMAT_NAME!r}, got {scalar_str('format')!r}")
        for name, allowed in _DISK_DTYPES.items():
            if name in data and data[name].dtype.name not in allowed:
                raise bad(name, f"expected dtype {'/'.join(allowed)}, got {data[name].dtype}")
        for name in ("schema_version", "num_experts"):
            if data[name].ndim != 0:
                raise bad(name, f"expected a scalar, got shape {data[name].shape}")
        version = int(data["schema_version"])
        if version != SCHEMA_VERSION:
            raise bad("schema_version", f"expected {SCHEMA_VERSION} (this samoyeds_lab), got {version}")
        layer_names = data["layer_names"]
        if layer_names.dtype.kind != "U" or layer_names.ndim != 1:
            raise bad("layer_names",
                      f"expected a 1-D unicode array, got dtype {layer_names.dtype} shape {layer_names.shape}")
        try:
            meta = json.loads(scalar_str("meta"))
        except json.JSONDecodeError as exc:
            raise bad("meta", f"expected a JSON object, got invalid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise bad("meta", f"expected a JSON object, got {type(meta).__name__}")

        tensors = {
            name: torch.from_numpy(np.ascontiguousarray(data[name]))
            for name in ("topk_ids", "weights", "token_ids", "sequence_lengths", "logits") if name in data
        }
        try:
            return cls(
                tensors["topk_ids"], tensors["weights"], tensors["token_ids"],
                tuple(str(s) for s in layer_names.tolist()), int(data["num_experts"]),
                logits=tensors.get("logits"), sequence_lengths=tensors["sequence_lengths"], meta=meta,
            )
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            fieldname = msg.split(":", 1)[0] if ":" in msg else "?"
            raise bad(fieldname, msg.split(": ", 1)[-1]) from None
