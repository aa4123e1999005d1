"""The README's code example runs as written, and its set-up section names exactly the two commands."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_readme_set_up_commands():
    text = README.read_text()
    setup = text[text.index("## Set-up"): text.index("## The labs")]
    commands = re.findall(r"^make (\w+)", setup, flags=re.M)
    assert commands == ["lab", "test"]


def test_ci_calls_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)
