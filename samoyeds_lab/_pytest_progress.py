"""The pytest plugin behind :func:`samoyeds_lab.testing.run`: one JSON line per test, appended to a file.

Standard library only, and loaded by file path (not as ``samoyeds_lab._pytest_progress``), so the pytest
subprocess does not import samoyeds_lab (and torch) unless the tests themselves do. Silent unless the
environment variable ``SAMOYEDS_LAB_TESTING_REPORT`` names the report file.

Events: ``{"event": "collected", "count": N}`` once, then per test ``{"event": "test", "nodeid", "outcome",
"duration", "message", "detail"}`` (outcome: passed / failed / error / skipped / xfailed / xpassed; ``detail``
is pytest's full report of a failure or error, traceback included, and empty otherwise), and
``{"event": "collect", ..., "outcome": "error"}`` for a file that could not be collected.
"""

from __future__ import annotations

import json
import os
import re

ENV_REPORT = "SAMOYEDS_LAB_TESTING_REPORT"
_state: dict = {}


def _emit(event: dict) -> None:
    path = os.environ.get(ENV_REPORT)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(event) + "\n")


def _message(report) -> str:
    if report.skipped:
        lr = report.longrepr
        reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr or "")
        return re.sub(r"^Skipped: ", "", reason)
    if report.failed:
        # the line pytest's short summary shows ("AssertionError: ..."), else the first "E" line
        crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
        if crash is not None and crash.message.strip():
            return crash.message.strip().splitlines()[0][:300]
        text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("E ")]
        return (errs[0][1:].strip() if errs else lines[-1] if lines else "failed")[:300]
    return ""


def _detail(report) -> str:
    """pytest's full text of a failed report (traceback, captured output), or ""."""
    if not report.failed:
        return ""
    text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
    for title, content in getattr(report, "sections", []):  # captured stdout/stderr/log of the test
        if content.strip():
            text += f"\n{'-' * 10} {title} {'-' * 10}\n{content.rstrip()}"
    return text


def pytest_collection_finish(session):
    _emit({"event": "collected", "count": len(session.items)})


def pytest_collectreport(report):
    if report.failed:  # a file that fails to import: its tests never run
        _emit({"event": "collect", "nodeid": report.nodeid, "outcome": "error", "duration": 0.0,
               "message": _message(report), "detail": _detail(report)})


def pytest_runtest_logreport(report):
    key = report.nodeid
    st = _state.setdefault(key, {"duration": 0.0, "outcome": None, "message": "", "detail": ""})
    st["duration"] += getattr(report, "duration", 0.0)
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if xfail:
            st["outcome"], st["message"] = ("xfailed", report.wasxfail) if report.skipped else ("xpassed", "")
        elif report.failed:
            st["outcome"], st["message"], st["detail"] = "failed", _message(report), _detail(report)
        elif report.skipped:
            st["outcome"], st["message"] = "skipped", _message(report)
        else:
            st["outcome"] = "passed"
    elif report.failed and st["outcome"] in (None, "passed"):  # set-up or tear-down failed
        st["outcome"], st["message"], st["detail"] = "error", _message(report), _detail(report)
    elif report.when == "setup" and report.skipped:
        st["outcome"], st["message"] = ("xfailed", report.wasxfail) if xfail else ("skipped", _message(report))
    if report.when == "teardown":
        _emit({"event": "test", "nodeid": key, "outcome": st["outcome"] or "error",
               "duration": round(st["duration"], 4), "message": st["message"], "detail": st["detail"]})
        _state.pop(key, None)
