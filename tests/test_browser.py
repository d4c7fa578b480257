"""The Draw page in a real browser: Debian chromium driven by Playwright draws with the mouse, on a laptop or
projector screen (1024x768) and a large one (1400x1000), sidebar open and collapsed.

One server and one browser for the whole module; each case opens its own page (a fresh session).
"""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEADLINE = '.st-key-headline [data-testid="stVerticalBlock"]'  # the Report's figures (ui.render.kpi_row)

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium not installed (apt-get install chromium; .ci/run does)")

SCREENS = [(1024, 768), (1400, 1000)]


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
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
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
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:  # still importing TensorFlow on a busy machine: it holds no state
        proc.kill()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _open_draw_page(server, browser, size):
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(f"{server}/draw", timeout=60_000)  # a deep link into a fresh server: app.py's navigation rules
    page.get_by_test_id("stSidebarNav").get_by_text("Draw & Reframe").wait_for(timeout=60_000)
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(state="visible", timeout=60_000)
    return page, canvas


def _collapse_sidebar(page):
    page.get_by_test_id("stSidebar").hover()  # the collapse button shows on hover
    page.get_by_test_id("stSidebarCollapseButton").locator("button").click()
    page.get_by_test_id("stExpandSidebarButton").wait_for(timeout=10_000)
    page.wait_for_function("() => document.querySelector('[data-testid=\"stSidebar\"]')"
                           ".getBoundingClientRect().right <= 0", timeout=10_000)  # slid out of view
    page.wait_for_function("() => { const c = document.querySelector('[data-testid=\"stColumn\"]');"
                           " return c && c.getBoundingClientRect().x < 200; }", timeout=10_000)  # laid out again


# The canvas sits in a shadow root (a components-v2 element); its column is found across it.
_CANVAS_AND_COLUMN = """(canvas) => {
  const box = e => {
    const r = e.getBoundingClientRect();
    return {x: r.x, y: r.y, right: r.right, bottom: r.bottom};
  };
  let el = canvas;
  while (el && !(el.dataset && el.dataset.testid === 'stColumn')) el = el.parentElement || el.getRootNode().host;
  return {canvas: box(canvas), column: el ? box(el) : null,
          viewport: {width: window.innerWidth, height: window.innerHeight}};
}"""

# What a click at the centre of `button` would reach: the button itself, or whatever covers it.
_HIT = """(button) => {
  const r = button.getBoundingClientRect();
  const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
  return hit === button || button.contains(hit) ? 'ok' : (hit ? hit.outerHTML.slice(0, 120) : 'nothing');
}"""


def _settle(page, quiet_ms: int = 600) -> None:
    """Until the app has shown no "running" status for `quiet_ms` (a rerun's elements are all in place)."""
    page.wait_for_function("""(quiet) => {
        const now = performance.now();
        if (document.querySelector('[data-testid="stStatusWidget"]')) window.__busy = now;
        return now - (window.__busy || 0) > quiet;
    }""", arg=quiet_ms, polling=100, timeout=60_000)


_SCROLL_TOP = "() => document.querySelector('[data-testid=\"stMain\"]').scrollTop"


def _draw_stroke(page, canvas, tries: int = 2):
    """A vertical stroke down the middle; the mouse stays over the canvas, as after a real stroke.

    Streamlit's main area sticks to its bottom when content arrives while it is scrolled there (for chats): on
    a page that just got shorter (Clear) a late rerun can scroll it mid-stroke. A stroke the page moved under
    does not count and is drawn again.
    """
    for _ in range(tries):
        canvas.scroll_into_view_if_needed()
        for _ in range(50):  # until the layout is still: both ends of the stroke land on the canvas itself
            box = canvas.bounding_box()
            x, top, bottom = (box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15,
                              box["y"] + box["height"] * 0.85)
            if canvas.evaluate("(c, pts) => pts.every(([x, y]) => c.getRootNode().elementFromPoint(x, y) === c)",
                               [[x, top], [x, bottom]]):
                break
            page.wait_for_timeout(100)
        else:
            pytest.fail(f"the canvas at {box} does not receive the mouse")
        scrolled = page.evaluate(_SCROLL_TOP)
        page.mouse.move(x, top)
        page.mouse.down()
        page.mouse.move(x, bottom, steps=25)
        page.mouse.up()
        if page.evaluate(_SCROLL_TOP) == scrolled:
            return
        _settle(page)


def _controls(page):
    main = page.get_by_test_id("stMain")
    return [main.get_by_role("button", name=n, exact=True).or_(main.get_by_role("radio", name=n, exact=True)).first
            for n in ("Draw", "Upload", "Example")] + [main.get_by_role("button", name="Clear")]


def _assert_canvas_fits(canvas, where):
    geo = canvas.evaluate(_CANVAS_AND_COLUMN)
    c, col, vp = geo["canvas"], geo["column"], geo["viewport"]
    assert col is not None, f"{where}: the canvas is not in a column"
    assert col["x"] - 0.5 <= c["x"] and c["right"] <= col["right"] + 0.5, (where, c, col)  # wholly in its column
    assert 0 <= c["x"] and c["right"] <= vp["width"] and 0 <= c["y"] and c["bottom"] <= vp["height"], (where, c, vp)


def _assert_controls_clickable(page, canvas, where):
    """With the mouse over the canvas (its floating toolbar showing), every control still gets its click."""
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(400)  # the toolbar slides up in 0.2 s
    controls = _controls(page)
    for control in controls:
        assert control.evaluate(_HIT) == "ok", (where, control)
    for control in controls:  # and Playwright agrees: no other element would receive the click
        control.click(trial=True, timeout=5_000)


@pytest.mark.parametrize("size", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_canvas_fits_draws_and_leaves_every_control_clickable(server, browser, size):
    """Sidebar open, then collapsed: the canvas lies in its column and the viewport, a stroke is read as a 1,
    Draw/Upload/Example and Clear take their clicks, and Clear gives an empty canvas that draws again."""
    page, canvas = _open_draw_page(server, browser, size)
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Predicted digit")
    shot = os.environ.get("DIGITLAB_SCREENSHOT")
    try:
        _assert_canvas_fits(canvas, "sidebar open")
        _draw_stroke(page, canvas)
        metric.wait_for(timeout=180_000)  # the OpenCV twin answers; a slow CI machine may still need long
        assert metric.locator('[data-testid="stMetricValue"]').inner_text().strip() == "1"
        _assert_controls_clickable(page, canvas, "sidebar open")
        if shot:
            page.screenshot(path=f"{shot}-{size[0]}x{size[1]}-open.png")

        _collapse_sidebar(page)
        _assert_canvas_fits(canvas, "sidebar collapsed")
        _assert_controls_clickable(page, canvas, "sidebar collapsed")
        if shot:
            page.screenshot(path=f"{shot}-{size[0]}x{size[1]}-collapsed.png")

        page.get_by_test_id("stMain").get_by_role("button", name="Clear").click()
        metric.wait_for(state="detached", timeout=30_000)
        page.get_by_text("Draw a digit on the canvas").wait_for(timeout=30_000)
        canvas = page.locator("canvas.upper-canvas").first
        canvas.wait_for(state="visible", timeout=30_000)
        _settle(page)
        # The component loads its (empty) starting drawing asynchronously after it mounts; a stroke drawn within
        # that moment is replaced by it. A person takes longer than this to start drawing again.
        page.wait_for_timeout(1_000)
        _draw_stroke(page, canvas)  # the new, empty canvas draws as the first did
        metric.wait_for(timeout=60_000)
        assert metric.locator('[data-testid="stMetricValue"]').inner_text().strip() == "1"
    except Exception:
        if shot:
            page.screenshot(path=f"{shot}-{size[0]}x{size[1]}-failed.png")
        raise
    finally:
        page.close()


@pytest.mark.parametrize("size", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_report_matrix_shows_shares_and_keeps_them_when_a_cell_is_clicked(server, browser, size):
    """The "Row-normalised" checkbox is the chart's own (no rerun); choosing a cell by clicking it replaces the
    chart's data, not the chart, so the checkbox stays ticked and the drill-down follows the click."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    try:
        page.goto(f"{server}/report", timeout=60_000)
        page.locator(HEADLINE).filter(has_text="Accuracy").first.wait_for(timeout=180_000)
        _settle(page)
        chart = page.get_by_test_id("stVegaLiteChart").first
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 20)  # the chart's toolbar shows on hover...
        page.wait_for_timeout(400)
        views = page.locator(".st-key-view button")
        assert views.count() >= 5
        for i in range(views.count()):  # ...and covers none of the view switch's buttons
            assert views.nth(i).evaluate(_HIT) == "ok", views.nth(i).inner_text()
        share = page.locator("[data-testid=stVegaLiteChart] .vega-bind input[type=checkbox]").first
        assert not share.is_checked()
        share.check()
        drill = page.get_by_test_id("stMain").get_by_text(re.compile(r"(True \d, read as \d:|No images of a true)"))
        before = drill.first.inner_text()  # "True 9, read as 3: ...": sklearn digits start at their commonest mistake
        marks = page.locator("[data-testid=stVegaLiteChart] .marks").first
        marks.scroll_into_view_if_needed()
        page.wait_for_timeout(300)  # the scroll has ended: a click is a click, not a drag
        box = marks.bounding_box()
        assert box["x"] + box["width"] <= size[0]  # the matrix fits the screen
        # 30 % down and 40 % across the chart, axes included: a cell in rows 1-3 and columns 1-5 at either size
        page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.3)
        # the drill-down follows the click (a new caption; its element may be replaced, so found afresh)
        page.get_by_test_id("stMain").get_by_text(before).wait_for(state="detached", timeout=30_000)
        _settle(page)
        after = drill.first.inner_text()
        t, p = map(int, re.search(r"true (\d)(?:, read as| read as) (\d)", after, re.I).groups())
        assert 1 <= t <= 3 and 1 <= p <= 5, after  # a cell near where the click landed, not the old one
        assert share.is_checked()
        # another cell chosen in the boxes, then the clicked cell clicked again: the drill-down follows the click
        box_t = page.get_by_test_id("stSelectbox").filter(has_text="True digit").first
        box_t.click()
        page.get_by_role("option").filter(has_text="8").first.click()
        page.get_by_test_id("stMain").get_by_text(after).wait_for(state="detached", timeout=30_000)
        _settle(page)
        marks = page.locator("[data-testid=stVegaLiteChart] .marks").first
        marks.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        box = marks.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.3)
        page.get_by_test_id("stMain").get_by_text(after).wait_for(timeout=30_000)
        assert page.get_by_test_id("stException").count() == 0
    finally:
        page.close()


def test_a_control_inside_a_report_view_reruns_that_view_without_error(server, browser):
    """A control inside a Report view reruns that view alone (a fragment), and a fragment may not write to an
    element outside it. AppTest reruns whole pages, so only a browser shows it: the Numbers view's button, whose
    first read loads the model, wrote to the page's progress bar ("Something went wrong on this page")."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/report", timeout=60_000)
        page.locator(HEADLINE).filter(has_text="Accuracy").first.wait_for(timeout=180_000)
        _settle(page)
        page.locator(".st-key-view button").filter(has_text="Numbers").first.click()
        read = page.get_by_role("button", name="Read the 300 built-in numbers")
        read.wait_for(timeout=60_000)
        _settle(page)
        read.click()
        done = page.get_by_test_id("stMetric").filter(has_text="Numbers read exactly right").first
        error = page.get_by_text("Something went wrong on this page").first
        done.or_(error).wait_for(timeout=180_000)
        assert not error.is_visible()
        assert done.is_visible()
    finally:
        page.close()


@pytest.mark.parametrize("size", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_run_curves_show_their_whole_legend_and_a_click_singles_a_run_out(server, browser, size):
    """The overlay's legend lies inside the screen (Streamlit gives each panel the column's width, so a legend
    right of the plots would be cut off), and clicking a run in it fades the others; Shift+click brings all back."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    try:
        page.goto(f"{server}/training", timeout=60_000)
        chart = page.get_by_test_id("stVegaLiteChart").first
        labels = chart.locator("g.role-legend-label text")
        labels.first.wait_for(timeout=60_000)
        _settle(page)
        assert labels.count() >= 4  # the shipped runs and the published CNN, then train and validation
        chart.scroll_into_view_if_needed()
        area = chart.bounding_box()
        column = page.get_by_test_id("stMultiSelect").first.bounding_box()  # the overlay chooser, above it
        assert area["x"] + area["width"] <= column["x"] + column["width"] + 1  # the plots fit their column
        for i in range(labels.count()):
            box = labels.nth(i).bounding_box()  # every legend label inside the chart, none cut at its edge
            assert box and box["width"] > 0 and box["x"] + box["width"] <= area["x"] + area["width"], \
                labels.nth(i).text_content()
        opacity = "e => getComputedStyle(e).opacity"
        labels.nth(1).click()
        page.wait_for_function("(e) => getComputedStyle(e).opacity < 1", arg=labels.nth(0).element_handle(),
                               timeout=10_000)
        assert labels.nth(1).evaluate(opacity) == "1"
        labels.nth(1).click(modifiers=["Shift"])  # the chosen one off again: none chosen, all shown
        page.wait_for_function("(e) => getComputedStyle(e).opacity == 1", arg=labels.nth(0).element_handle(),
                               timeout=10_000)
        assert page.get_by_test_id("stException").count() == 0
    finally:
        page.close()
