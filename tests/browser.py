"""Headless Chromium for the dashboard tests: Debian's `/usr/bin/chromium` driven by Playwright
(never a browser download). Without either, the tests are skipped saying how to enable them
(and the session's summary says so again); under CI they fail instead, since CI installs it."""

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOT_RUN = "browser tests did NOT run: install chromium (apt-get install -y chromium) to enable them"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not found"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (make install)"
    return None


def require_browser() -> None:
    """Skip (fail under CI) when the browser or Playwright is missing."""
    why = missing()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"{why}: CI must run the browser tests (.ci/run installs chromium)", pytrace=False
        )
    pytest.skip(f"{NOT_RUN} ({why})", allow_module_level=True)


@dataclass
class Watched:
    """A page and everything it logged as an error (console errors, uncaught exceptions)."""

    page: Any
    errors: list[str] = field(default_factory=list)

    async def shot(self, name: str, full_page: bool = False) -> Path:
        """A screenshot kept as a test artifact (test-artifacts/dashboard/, not committed)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path


async def launch() -> AsyncIterator[Any]:
    """One headless Chromium for a module's tests."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Any, url: str, viewport: dict[str, int] = DESKTOP) -> Watched:
    """A fresh context (its own sessionStorage) at `url`, recording errors as they happen."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    watched = Watched(page)
    page.on(
        "console",
        lambda m: (
            watched.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))
    await page.goto(url)
    return watched
