"""The real ComfyUI web UI (comfyui-frontend-package 1.27.10) against `run-graph serve`, in
headless Chromium (Debian's package) driven by playwright: the page starts without console
errors from missing routes, a shipped workflow is loaded and queued, and its images appear in the
queue panel. A screenshot is kept in the test's folder."""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from engine import Session, Settings

from .test_server import Running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def _requirements():
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright")
    from engine.server.ui import frontend_root

    if frontend_root() is None:
        missing.append("comfyui-frontend-package")
    if _chromium() is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if missing:
        if os.environ.get("CI"):  # CI installs all of them: missing there is a failure
            pytest.fail("browser test needs " + ", ".join(missing))
        pytest.skip("browser test needs " + ", ".join(missing))


def test_the_web_ui_loads_queues_a_workflow_and_shows_its_images(tiny_models, tmp_path):
    _requirements()
    from playwright.sync_api import sync_playwright

    session = Session(settings=Settings(models_dir=tiny_models, output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                                        device="cpu"))
    server = Running(session, tmp_path / "state" / "queue.sqlite")
    workflow = json.loads((EXAMPLES / "kolors_txt2img.json").read_text())
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            def on_console(message) -> None:
                url = message.location.get("url") or ""
                # the page also calls comfy.org for release notes: no network here, and no route of ours
                if message.type == "error" and url.startswith(server.url):
                    errors.append(f"{message.text} ({url})")

            page.on("console", on_console)
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.goto(server.url, wait_until="load")
            page.wait_for_function("!!(window.app && window.LiteGraph && "
                                   "LiteGraph.registered_node_types['KolorsSampler'])", timeout=60_000)
            page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
            page.evaluate("""() => {
                const widget = (id, name) => window.app.graph.getNodeById(id).widgets.find(w => w.name === name);
                widget(14, 'width').value = 64; widget(14, 'height').value = 64; widget(14, 'steps').value = 2;
            }""")
            page.get_by_role("button", name="Run").first.click()
            deadline = time.monotonic() + 180
            history: dict = {}
            while not history and time.monotonic() < deadline:
                history = json.loads(urllib.request.urlopen(server.url + "/history", timeout=10).read())
                time.sleep(0.5)
            [item] = history.values()
            assert item["status"]["status_str"] == "success"
            files = [image["filename"] for output in item["outputs"].values() for image in output["images"]]
            assert len(files) == 4
            page.keyboard.press("q")  # the queue panel
            page.wait_for_function("Array.from(document.querySelectorAll('img'))"
                                   ".some(i => i.src.includes('/api/view?filename='))", timeout=30_000)
            page.screenshot(path=str(tmp_path / "web-ui.png"))
            browser.close()
    finally:
        server.stop()
    assert (tmp_path / "web-ui.png").stat().st_size > 10_000
    assert not errors, errors
