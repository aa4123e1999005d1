"""One ``config.json`` + ``*.safetensors`` checkpoint layout for every model the project saves (the tiny MoE,
the SiDA predictor): writing, and reading with every corruption turned into an error naming file and field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CorruptFileError


def write_checkpoint(directory: str | os.PathLike, module: torch.nn.Module, config: Mapping[str, Any], *,
                     config_name: str, weights_name: str, model_type: str) -> Path:
    """Write ``module``'s state dict to ``directory/weights_name`` and ``config`` to ``directory/config_name``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(d / weights_name), metadata={"format": "pt", "model_type": model_type})
    os.chmod(d / weights_name, 0o644)  # NOTE: save_file can create it 0600; shipped data must be world-readable
    (d / config_name).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return d


def read_config(directory: str | os.PathLike, *, config_name: str, weights_name: str, model_type: str,
                format_version: int, writer: str) -> tuple[dict, Path, Path]:
    """Check both files exist and the config is a JSON object of the right type and version.

    Returns ``(fields, config_path, weights_path)``; ``fields`` lacks ``model_type`` and ``format_version``.
    """
    d = Path(directory)
    cfg_path, w_path = d / config_name, d / weights_name
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (expected a directory written by {writer})")
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{cfg_path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise CorruptFileError(f"{cfg_path}: expected a JSON object, got {type(raw).__name__}")
    raw = dict(raw)
    mt = raw.pop("model_type", None)
    if mt != model_type:
        raise CorruptFileError(f"{cfg_path}: field 'model_type': expected {model_type!r}, got {mt!r}")
    ver = raw.pop("format_version", None)
    if ver != format_version:
        raise CorruptFileError(f"{cfg_path}: field 'format_version': expected {format_version}, got {ver!r}")
    return raw, cfg_path, w_path


def read_state(weights_path: Path, config_path: Path, expected: Mapping[str, torch.Tensor], *,
               dtypes: tuple, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file and check it holds exactly ``expected``'s tensors (shape, dtype, finite)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptFileError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise CorruptFileError(f"{weights_path}: {what} ({len(missing)} missing, {len(unexpected)} unexpected) "
                               f"for config {config_path.name}")
    names = "/".join(str(t).replace("torch.", "") for t in dtypes)
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CorruptFileError(f"{weights_path}: tensor {k!r}: expected shape {tuple(expected[k].shape)}, "
                                   f"got {tuple(v.shape)}")
        if v.dtype not in dtypes:
            raise CorruptFileError(f"{weights_path}: tensor {k!r}: expected {names}, got {v.dtype}")
        if not bool(torch.isfinite(v).all()):
            raise CorruptFileError(f"{weights_path}: tensor {k!r}: holds non-finite values")
    return state


# ------------------------------------------------------------------------------------------ output paths
def check_out_path(name: str, path: object, *, kind: str = "file") -> Path:
    """Return ``path`` as a :class:`Path` that can be written, checked before any work is done.

    ``kind="file"``: ``path`` is not a directory and its parent is, or can be made, a writable directory;
    ``kind="dir"``: ``path`` is, or can be made, a writable directory. The first existing ancestor must be
    a directory this process can write to. Raises ``TypeError`` (not a path), ``ValueError`` (a file where a
    directory is needed or the other way round) or ``PermissionError`` (not writable).
    """
    from ._checks import check_path

    p = check_path(name, path, must_exist=False)
    if kind not in ("file", "dir"):
        raise ValueError(f"kind: expected 'file' or 'dir', got {kind!r}")
    if p.exists():
        if kind == "file" and p.is_dir():
            raise ValueError(f"{name}: expected a file to write, got a directory {p}")
        if kind == "dir" and not p.is_dir():
            raise ValueError(f"{name}: expected a directory, got a file {p}")
    start = p if kind == "dir" else p.parent
    anc = start.absolute()
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ValueError(f"{name}: cannot write {p}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}: cannot write {p}: {anc} is not writable")
    if p.exists() and kind == "file" and not os.access(p, os.W_OK):
        raise PermissionError(f"{name}: cannot write {p}: the file is not writable")
    return p


# ------------------------------------------------------------------------------- safe state files
#: ``format`` of a state file written by :func:`write_state_file` (safetensors + JSON in its metadata).
STATE_FORMAT = "samoyeds-lab/state"
STATE_FORMAT_VERSION = 1


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where}: a key of type {type(k).__name__} cannot be stored")
            items.append([k, _encode(v, tensors, f"{where}[{k!r}]")])
        return {"__items__": items}
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a state file")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], path: Path, where: str) -> Any:
    bad = CorruptFileError
    if isinstance(obj, list):
        return [_decode(v, tensors, path, f"{where}[{i}]") for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if len(obj) != 1 or not isinstance(key, str) or key not in tensors:
            raise bad(f"{path}: field {where!r}: refers to a tensor {key!r} the file does not hold")
        return tensors[key]
    if "__tuple__" in obj:
        if len(obj) != 1 or not isinstance(obj["__tuple__"], list):
            raise bad(f"{path}: field {where!r}: malformed tuple")
        return tuple(_decode(v, tensors, path, f"{where}[{i}]") for i, v in enumerate(obj["__tuple__"]))
    if "__items__" in obj:
        items = obj["__items__"]
        if len(obj) != 1 or not isinstance(items, list) or not all(
                isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int)) for kv in items):
            raise bad(f"{path}: field {where!r}: malformed mapping")
        return {k: _decode(v, tensors, path, f"{where}[{k!r}]") for k, v in items}
    return {k: _decode(v, tensors, path, f"{where}.{k}" if where else k) for k, v in obj.items()}


def write_state_file(path: str | os.PathLike, state: Mapping[str, Any], *, kind: str) -> Path:
    """Write ``state`` (nested dicts / lists / tuples of tensors, numbers, strings, bools, None) safely.

    Tensors go into a safetensors file, everything else into JSON in its metadata (``format``, ``kind``,
    ``version``, ``state``): reading it back never unpickles anything. Written to a temporary file first
    and moved into place, so an interruption leaves the previous state intact.
    """
    from safetensors.torch import save_file

    p = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    doc = _encode(dict(state), tensors, "")
    meta = {"format": STATE_FORMAT, "kind": kind, "version": str(STATE_FORMAT_VERSION),
            "state": json.dumps(doc, allow_nan=True)}
    tmp = p.with_name(p.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, p)
    return p


def read_state_file(path: str | os.PathLike, *, kind: str) -> dict[str, Any]:
    """Read a file written by :func:`write_state_file` with ``kind``; any corruption is a CorruptFileError.

    Nothing is unpickled: a pickle (or any other file) where the state is expected is refused as
    "not a readable state file", before any of its bytes are interpreted as code.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptFileError(f"{p}: not a readable state file (safetensors: {exc})") from None
    if meta.get("format") != STATE_FORMAT:
        raise CorruptFileError(f"{p}: field 'format': expected {STATE_FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("kind") != kind:
        raise CorruptFileError(f"{p}: field 'kind': expected {kind!r}, got {meta.get('kind')!r}")
    if meta.get("version") != str(STATE_FORMAT_VERSION):
        raise CorruptFileError(f"{p}: field 'version': expected {STATE_FORMAT_VERSION}, got {meta.get('version')!r}")
    try:
        doc = json.loads(meta.get("state", ""))
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{p}: field 'state': not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{p}: field 'state': expected a JSON object, got {type(doc).__name__}")
    return _decode(doc, tensors, p, "")
