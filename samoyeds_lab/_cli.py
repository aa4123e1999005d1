"""What every ``samoyeds-lab`` command shares (internal): one-line errors, range-checked argument types.

An error in any command prints exactly one line on stderr, ``samoyeds-lab <command>: error: <message>``, and
exits with status 2, without a traceback; ``--debug`` (accepted by every command) shows the traceback
instead. Bad command lines get the same one line (argparse's usage block is not printed; ``--help`` still
shows it).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Callable, NoReturn, Sequence

from .errors import SamoyedsLabError

#: What a command may raise on purpose and have reported as one line (anything else is a bug: traceback).
USER_ERRORS: tuple[type[BaseException], ...] = (
    SamoyedsLabError, ValueError, TypeError, OSError, KeyError, IndexError, LookupError, RuntimeError,
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``<prog>: error: <message>``) and exit 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {_argument_message(message)}\n")


def _argument_message(message: str) -> str:
    """argparse's ``argument --steps: --steps: expected …`` → ``--steps: expected …`` (the flag named once,
    in the package's ``<name>: <what>`` shape); ``argument --x: invalid choice …`` → ``--x: invalid choice …``."""
    m = re.match(r"argument (\S+?): (.*)", message, flags=re.S)
    if not m:
        return message
    flags, rest = m.group(1), m.group(2)
    if any(rest.startswith(f + ":") for f in flags.split("/")):
        return rest
    return f"{flags}: {rest}"


def wants_debug(argv: Sequence[str] | None) -> bool:
    """True when ``--debug`` is among the arguments (checked before parsing, so it works for any error)."""
    return "--debug" in (sys.argv[1:] if argv is None else list(argv))


def _flag_names(parser: argparse.ArgumentParser | None) -> dict[str, str]:
    """``{dest: "--flag"}`` of a parser's options (``seq`` → ``--seq``)."""
    if parser is None:
        return {}
    return {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}


def report(prog: str, exc: BaseException, parser: argparse.ArgumentParser | None = None) -> int:
    """Print ``exc`` as the one error line of ``prog`` and return the exit status 2.

    A message that names a Python parameter which is also one of ``parser``'s options (``seq: …``) names
    the flag the user typed instead (``--seq: …``).
    """
    msg = str(exc).strip().splitlines()
    text = " ".join(s.strip() for s in msg) if msg else type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    head, sep, rest = text.partition(": ")
    flags = _flag_names(parser)
    if sep and head in flags:
        text = f"{flags[head]}: {rest}"
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def run_command(prog: str, body: Callable[[], int | None], argv: Sequence[str] | None,
                parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``body``; turn a user error into the one line of ``prog`` (re-raised under ``--debug``); errors
    naming a parameter that is one of ``parser``'s options name the flag."""
    try:
        rc = body()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if wants_debug(argv):
            raise
        return report(prog, exc, parser)
    return 0 if rc is None else int(rc)


def int_type(name: str, lo: int | None = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an int in ``[lo, hi]`` (``None``: unbounded) whose error names ``name``."""
    def parse(v: str) -> int:
        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected an int, got {v!r}") from None
        if lo is not None and i < lo:
            raise argparse.ArgumentTypeError(f"{name}: expected an int >= {lo}, got {i}")
        if hi is not None and i > hi:
            raise argparse.ArgumentTypeError(f"{name}: expected an int <= {hi}, got {i}")
        return i

    parse.__name__ = "int"
    return parse


def float_type(name: str, lo: float | None = 0.0, hi: float | None = None, *,
               lo_open: bool = True) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float in the range (``lo`` exclusive by default)."""
    def parse(v: str) -> float:
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number, got {v!r}") from None
        if not math.isfinite(f):
            raise argparse.ArgumentTypeError(f"{name}: expected a finite number, got {v}")
        if lo is not None and (f <= lo if lo_open else f < lo):
            raise argparse.ArgumentTypeError(f"{name}: expected a number {'>' if lo_open else '>='} {lo}, got {f}")
        if hi is not None and f > hi:
            raise argparse.ArgumentTypeError(f"{name}: expected a number <= {hi}, got {f}")
        return f

    parse.__name__ = "float"
    return parse
