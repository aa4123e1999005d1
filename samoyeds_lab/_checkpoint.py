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
