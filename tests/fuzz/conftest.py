"""The fuzz suite's summary: entry points covered and how every bad input came out (also build/fuzz_report.json)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from . import harness


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not harness.OUTCOMES:
        return
    counts = Counter(o for _, _, o, _ in harness.OUTCOMES)
    entries = sorted({e for e, _, _, _ in harness.OUTCOMES})
    cli = [e for e in entries if e.startswith("cli.")]
    tr = terminalreporter
    tr.section("fuzz suite")
    tr.write_line(f"{len(harness.OUTCOMES)} bad inputs over {len(entries)} entry points "
                  f"({len(entries) - len(cli)} API, {len(cli)} CLI commands): {counts['clear']} clear, "
                  f"{counts['unclear']} unclear, {counts['silent']} silent")
    for e, label, o, detail in harness.OUTCOMES:
        if o != "clear":
            tr.write_line(f"  {o:<8} {e}: {label}: {detail}")
    root = Path(config.rootpath)
    out = root / "build" / "fuzz_report.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "cases": len(harness.OUTCOMES), "entry_points": len(entries), "cli_commands": len(cli),
            "outcomes": dict(counts),
            "not_clear": [dict(entry=e, label=l, outcome=o, detail=d) for e, l, o, d in harness.OUTCOMES
                          if o != "clear"],
        }, indent=1) + "\n")
    except OSError:
        pass
