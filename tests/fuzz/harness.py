"""The fuzz suite's harness: a bad input is a :class:`Case`; running it classifies the outcome.

- **clear**: it raised the expected error class and the message names the argument (one of ``names``);
- **unclear**: it raised something else, or a message that names none of ``names``;
- **silent**: it returned (a wrong answer, or a silently ignored argument).

Every case must be *clear*. Each file ``tests/fuzz/test_fuzz_<area>.py`` defines ``CASES`` (a list of
:class:`Case`) and runs them with ``run_case``; :mod:`tests.fuzz.test_fuzz_coverage` checks that every
public entry point of the package and every CLI command has at least one case, and the suite's summary
(``tests/fuzz/conftest.py``) prints how many entry points and cases ran and how each came out.

A CLI case (:func:`cli_case`) runs ``samoyeds_lab.cli.main(argv)`` in-process: it is clear when the command
exits 2 with exactly one stderr line ``samoyeds-lab <command>: error: <message>`` naming the argument, and
no traceback.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Callable, Sequence

#: (entry, label, outcome, detail) of every case run in this session (read by the conftest's summary).
OUTCOMES: list[tuple[str, str, str, str]] = []


@dataclass(frozen=True)
class Case:
    """One bad input: ``call()`` must raise ``error`` with a message naming one of ``names``."""

    entry: str                                   # public entry point, e.g. "formats.pack_nibbles"
    label: str                                   # what is bad, e.g. "position 4 (>= m)"
    call: Callable[[], object] = field(repr=False)
    error: type[BaseException] | tuple[type[BaseException], ...] = ValueError
    names: tuple[str, ...] = ()                  # the argument's name(s); one must be in the message

    @property
    def id(self) -> str:
        return f"{self.entry}: {self.label}"


def case(entry: str, label: str, call: Callable[[], object],
         error: type[BaseException] | tuple[type[BaseException], ...] = ValueError,
         names: str | Sequence[str] = ()) -> Case:
    """Build a :class:`Case` (``names`` may be one string)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    return Case(entry, label, call, error, names)


class CliError(Exception):
    """Raised by a CLI case's call when the command failed the way it should (the line is the message)."""


class CliFailure(Exception):
    """Raised by a CLI case's call when the command failed the wrong way (traceback, exit code, lines)."""


def cli_case(argv: Sequence[str], label: str, names: str | Sequence[str], *, entry: str | None = None) -> Case:
    """A CLI bad input: ``samoyeds-lab *argv`` must print one error line naming ``names`` and exit 2."""
    argv = list(argv)
    words = argv[:2] if argv[:1] == ["bench"] and len(argv) > 1 else argv[:1]
    command = entry or "cli." + " ".join(words)

    def call() -> None:
        from samoyeds_lab.cli import main

        out, err = io.StringIO(), io.StringIO()
        rc: object
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
            except BaseException as e:  # noqa: BLE001 - an escaping exception is the finding
                raise CliFailure(f"exception escaped main(): {type(e).__name__}: {e}") from e
        lines = [s for s in err.getvalue().splitlines() if s.strip()]
        if rc == 0 or rc is None:
            return None  # silent: the command accepted the bad input
        if rc != 2:
            raise CliFailure(f"exit status {rc!r}, expected 2; stderr: {err.getvalue()[-300:]!r}")
        if any("Traceback" in s for s in lines):
            raise CliFailure(f"printed a traceback: {err.getvalue()[-300:]!r}")
        if len(lines) != 1:
            raise CliFailure(f"expected one stderr line, got {len(lines)}: {lines[:4]!r}")
        prefix = "samoyeds-lab " + command[len("cli."):] + ": error: "
        if not lines[0].startswith(prefix):
            raise CliFailure(f"expected the line to start with {prefix!r}, got {lines[0]!r}")
        body = lines[0][len(prefix):]
        if body.startswith("argument "):  # argparse's "argument --x: --x: ..." names the flag twice
            raise CliFailure(f"expected '<flag>: <message>', got argparse's 'argument ...' form: {lines[0]!r}")
        raise CliError(lines[0])

    return case(command, label + " (" + " ".join(argv) + ")", call, CliError, names)


def classify(c: Case) -> tuple[str, str]:
    """Run ``c`` and return ``(outcome, detail)`` with outcome ``clear`` / ``unclear`` / ``silent``."""
    try:
        result = c.call()
    except c.error as exc:
        msg = str(exc)
        if c.names and not any(n in msg for n in c.names):
            return "unclear", f"{type(exc).__name__} does not name {' or '.join(map(repr, c.names))}: {msg[:300]}"
        return "clear", f"{type(exc).__name__}: {msg[:300]}"
    except Exception as exc:  # noqa: BLE001 - any other failure is what the suite reports
        want = c.error.__name__ if isinstance(c.error, type) else "/".join(e.__name__ for e in c.error)
        return "unclear", f"expected {want}, got {type(exc).__name__}: {str(exc)[:300]}"
    return "silent", f"no error; returned {type(result).__name__}: {repr(result)[:200]}"


def run_case(c: Case) -> None:
    """Classify ``c``, record the outcome, and fail unless it is clear."""
    outcome, detail = classify(c)
    OUTCOMES.append((c.entry, c.label, outcome, detail))
    assert outcome == "clear", f"{c.id}: {outcome}: {detail}"


def ids(cases: Sequence[Case]) -> list[str]:
    """pytest ids for a list of cases."""
    return [c.id for c in cases]
