"""Fixtures of the browser test: a JupyterLab server on loopback and a headless Debian chromium."""

from __future__ import annotations

import pytest

from .helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, chromium_skip_reason, start_lab


def pytest_configure(config):
    # NOTE: registered here rather than in pyproject.toml so tests/browser is self-contained
    # (pyproject's --strict-markers needs every marker registered before collection).
    config.addinivalue_line("markers", "browser: drives JupyterLab in Debian's chromium with Playwright (minutes)")


@pytest.fixture(scope="session")
def chromium_path():
    """/usr/bin/chromium, or a skip naming why scripts/install_chromium.sh could not install it."""
    reason = chromium_skip_reason()
    if reason:
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), *ARTIFACTS.glob("*.json")]:  # this run's files only
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab_server(chromium_path, tmp_path_factory):
    server = start_lab(tmp_path_factory.mktemp("jupyterlab"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(chromium_path):
    # a missing playwright is a broken test environment (it is in the [test] extra), not a reason to skip
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
