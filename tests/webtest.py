"""Shared pieces of the tests that start web apps and drive Debian's chromium (through Playwright with
``executable_path``; no browser is ever downloaded)."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from gameqa.bench.net import free_port

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need_browser():
    """Skip the calling test module (saying why) unless chromium and playwright are here; returns sync_api."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


class ThreadServer:
    """An ASGI app under uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def open_chromium(playwright, profile: Path, width: int, height: int):
    """Debian's chromium with a fresh profile: (context, page)."""
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height})
    return context, (context.pages[0] if context.pages else context.new_page())


def screenshot(page, folder: str | None, name: str) -> None:
    """Save a full-page screenshot when ``folder`` is set (from an environment variable)."""
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
