"""What every lab shares, checked for every labs/NN_*.py found (so a new lab is covered the day it lands):
a committed .ipynb paired with its py:percent source, outputs stripped, kernelspec python3, the device
banner first, FULL_SIZE = False committed, seeds fixed. Each lab's own test file runs it headless."""

import pytest

from .notebooks import LABS, assert_kernelspec_and_no_outputs, assert_lab_conventions, assert_paired

SOURCES = sorted(LABS.glob("[0-9][0-9]_*.py"))


def test_every_lab_has_both_files_and_a_test():
    notebooks = sorted(LABS.glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in SOURCES] == [p.stem for p in notebooks]
    assert len(SOURCES) >= 8
    for src in SOURCES:
        test = LABS.parents[0] / "tests" / "labs" / f"test_lab{src.stem[:2]}.py"
        assert test.is_file(), f"{src.name} has no {test.name} running it headless"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_paired_stripped_and_conventional(source):
    notebook = source.with_suffix(".ipynb")
    assert_paired(source, notebook)
    assert_kernelspec_and_no_outputs(notebook)
    assert_lab_conventions(source)
