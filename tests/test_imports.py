"""Every module of the package imports, and the layers keep their one direction: ``kernels`` never imports
``bench`` (the recorded-results reader both need lives in :mod:`samoyeds_lab.records`, below both), and
``records`` imports nothing of the package but ``errors``."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import samoyeds_lab

PKG = Path(samoyeds_lab.__file__).resolve().parent
#: Package modules that need an optional dependency absent from a CPU test environment (none today).
OPTIONAL: dict[str, str] = {}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PKG)], prefix="samoyeds_lab."))


def _imported(path: Path, package: str) -> set[str]:
    """Absolute names of the samoyeds_lab modules ``path`` imports (at any depth, lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    parts = package.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in out if m == "samoyeds_lab" or m.startswith("samoyeds_lab.")}


def test_walk_finds_the_package():
    mods = _modules()
    assert "samoyeds_lab.records" in mods and "samoyeds_lab.kernels.ops" in mods and len(mods) > 30


@pytest.mark.parametrize("name", _modules())
def test_every_module_imports(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    importlib.import_module(name)


def test_the_ast_walk_resolves_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from ..bench.kernels import x\nfrom . import build\nimport samoyeds_lab.moe\n"
                 "def g():\n    from ...samoyeds_lab import y\n")
    got = _imported(f, "samoyeds_lab.kernels")
    assert {"samoyeds_lab.bench.kernels", "samoyeds_lab.kernels.build", "samoyeds_lab.moe"} <= got


@pytest.mark.parametrize("path", sorted((PKG / "kernels").glob("*.py")), ids=lambda p: p.name)
def test_kernels_never_import_bench(path):
    bad = sorted(m for m in _imported(path, "samoyeds_lab.kernels") if m.split(".")[:2] == ["samoyeds_lab", "bench"])
    assert not bad, f"samoyeds_lab/kernels/{path.name} imports {bad}: bench sits above kernels"


def test_records_sits_below_kernels_and_bench():
    got = _imported(PKG / "records.py", "samoyeds_lab")
    assert got <= {"samoyeds_lab.errors", "samoyeds_lab.errors.CorruptFileError"}, got
