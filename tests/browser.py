"""What the browser tests share: Playwright (skipped on a dev machine without it, required in CI)
and the flags that run Debian's Chromium headless on this closed network (facts.md)."""

import pytest

from conftest import in_ci

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

if in_ci():
    from playwright.sync_api import expect, sync_playwright  # CI must have it: fail, not skip
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    expect, sync_playwright = sync_api.expect, sync_api.sync_playwright

__all__ = ["CHROMIUM_ARGS", "expect", "sync_playwright"]
