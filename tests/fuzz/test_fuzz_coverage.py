"""Every public entry point of the package and every CLI command has a bad-input case (or a stated reason not to).

The public entry points are the callables (functions and classes, exceptions aside) in the ``__all__`` of
``samoyeds_lab`` and of each of its subpackages; a case for ``routing.RoutingTrace.from_layers`` covers
``routing.RoutingTrace``. Each ``test_fuzz_<area>.py`` lists its ``CASES`` and may list ``EXEMPT``
(entry -> why there is no bad input to give, e.g. "takes no arguments").
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import samoyeds_lab

SUBPACKAGES = ("", "formats", "prune", "reference", "kernels", "moe", "routing", "offload", "bench", "viz",
               "exercises")
CLI_COMMANDS = ("doctor", "bench formats", "bench cache", "bench kernels", "bench roofline", "bench cpu",
                "trace", "accuracy", "lab", "train-tiny", "train-sida")


def public_entry_points() -> list[str]:
    names = []
    for sub in SUBPACKAGES:
        mod = importlib.import_module("samoyeds_lab" + ("." + sub if sub else ""))
        for n in getattr(mod, "__all__", ()):
            obj = getattr(mod, n)
            if not callable(obj) or n.startswith("_"):
                continue
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                continue
            names.append((sub + "." if sub else "") + n)
    return sorted(set(names))


def fuzz_modules():
    here = Path(__file__).parent
    for info in pkgutil.iter_modules([str(here)]):
        if info.name.startswith("test_fuzz_") and info.name != "test_fuzz_coverage":
            yield importlib.import_module(f"tests.fuzz.{info.name}")


def covered() -> tuple[set[str], dict[str, str]]:
    entries, exempt = set(), {}
    for m in fuzz_modules():
        entries |= {c.entry for c in getattr(m, "CASES", ())}
        exempt.update(getattr(m, "EXEMPT", {}))
    return entries, exempt


def _is_covered(name: str, entries: set[str]) -> bool:
    return name in entries or any(e.startswith(name + ".") for e in entries)


def test_every_public_entry_point_has_a_case():
    entries, exempt = covered()
    missing = [n for n in public_entry_points() if not _is_covered(n, entries) and n not in exempt]
    assert not missing, f"{len(missing)} public entry points without a bad-input case: {missing}"


def test_every_cli_command_has_a_case():
    entries, exempt = covered()
    missing = [c for c in CLI_COMMANDS if "cli." + c not in entries and "cli." + c not in exempt]
    assert not missing, f"CLI commands without a bad-input case: {missing}"


def test_exemptions_are_real_and_explained():
    entries, exempt = covered()
    public = set(public_entry_points()) | {"cli." + c for c in CLI_COMMANDS}
    for name, why in exempt.items():
        assert name in public, f"EXEMPT names {name!r}, which is not a public entry point"
        assert isinstance(why, str) and len(why) > 10, f"EXEMPT {name!r}: give the reason"
        assert not _is_covered(name, entries), f"{name!r} is both exempt and covered"


def test_cases_are_well_formed():
    seen = set()
    for m in fuzz_modules():
        for c in getattr(m, "CASES", ()):
            assert c.names, f"{c.id}: name the argument the message must mention"
            assert c.id not in seen, f"duplicate case {c.id!r}"
            seen.add(c.id)
