"""The canvas in a real browser: Debian chromium driven by Playwright draws a stroke with the mouse."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium not installed (apt-get install chromium; .ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    env = dict(os.environ, DIGITLAB_HOME=str(tmp_path_factory.mktemp("home")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def test_drawing_a_vertical_stroke_is_recognised_as_one(server, page):
    page.goto(f"{server}/draw", timeout=60_000)  # a deep link into a fresh server: app.py's navigation rules
    page.get_by_test_id("stSidebarNav").get_by_text("Draw & Reframe").wait_for(timeout=60_000)
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(state="visible", timeout=60_000)
    box = canvas.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] - 50, steps=25)
    page.mouse.up()
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Predicted digit")
    metric.wait_for(timeout=90_000)  # first prediction loads TensorFlow and the model
    value = metric.locator('[data-testid="stMetricValue"]').inner_text()
    assert value.strip() == "1"
    if os.environ.get("DIGITLAB_SCREENSHOT"):
        page.screenshot(path=os.environ["DIGITLAB_SCREENSHOT"], full_page=True)
