"""How fast the dashboard answers in a real browser, on fresh servers: `python bench/page_speed.py [--json] [--runs N]`.

Each run starts its own servers exactly as a user would (`python -m streamlit run app.py --server.headless true
--server.port P --server.address 127.0.0.1`, DIGITLAB_HOME a fresh temporary folder) and drives Debian's
Chromium with Playwright at 1400x1000. Every figure is printed with the issue's baseline (issue 8: a fresh
server and headless Chromium on this 2-core machine, before the work), the ratio baseline / measured (above 1:
faster than then), the target and whether it is met. A run takes about 1.5 minutes at a load average of 3
(about 6 at 17; --compare adds two servers); servers and browser are stopped on exit, also on an error, Ctrl-C
or SIGTERM. Timings on a shared 2-core machine are noisy, and the browser shares the cores with the server: the
load average is printed with them, --runs N repeats everything (then a min / median / max line per figure) and
--compare measures the behaviour without the warm-up in the same run.

What each figure measures (all in seconds, wall clock, on the client's side):

Server A (fresh, empty DIGITLAB_HOME), one browser session:
- home: from `page.goto(<root>)`, the first request the server ever serves after /_stcore/health answered,
  to the Home page's "MNIST test accuracy" metric being visible.
- training: from the click on "Training Runs" in the sidebar (right after Home) to its title and its runs
  table (the first st.dataframe) being visible. The background warm-up is usually still running then.
- first prediction: the teacher's case. After Training Runs, "Draw & Reframe" is clicked in the sidebar; one
  vertical stroke is drawn in the middle of `canvas.upper-canvas` (its own bounding box: the canvas may scale
  to its column) THINK seconds (--think, default 10) after Home was opened, as a teacher opening the app and
  then drawing would. `--think warm` draws once the server's log says the warm-up is ready (and not before
  10 s): the first prediction the warm-up delivers, whatever the machine's load made the warm-up cost.
  Measured from the stroke's mouse-up to the "Predicted digit" metric being visible. "warm-up spinner seen"
  says whether the spinner that names the background warm-up showed meanwhile.
- first evaluation, longest time without progress: on the Report page (sidebar), once its default data set is
  shown, "MNIST test" is chosen in the "Data set" box; a first, uncached evaluation of the 10,000 images
  follows. Every 200 ms the values and texts of all `[data-testid="stProgress"]` bars are read; the figure is
  the longest stretch, from the choice to the new Accuracy figure being shown with the app idle, during which
  that reading did not change (a bar appearing, moving, relabelling or disappearing is a change). Target: 1 s
  (our reading of "shows progress the whole way": the bar moves at least every second). The total time of
  that evaluation is printed as information.
- control change: on that Report page, each of these controls is used once and timed from the click (a
  capturing listener in the page) to the last change of the page's DOM (screen-reader text in a live region
  1 px wide left out), once it has stayed unchanged for 1 s and the app shows no running indicator: the
  Reframing radio back to `paper` (its evaluation cached, after one untimed visit to `mnist`), the
  "Row-normalised" checkbox (the chart's own, redrawn in the browser: ticked and unticked, each timed to the
  second animation frame after the click, or to its last DOM change if later), and the view switch (the
  widget keyed "view") to its second view, its third (Automation: the first view with a chart of its own, so a
  chart library not loaded yet would count) and back to the first (each when present: the page is being
  restructured). The figure is the slowest of them; each is printed.
- training revisit: Training Runs again (sidebar), the warm-up long over.

Server B (fresh process, same DIGITLAB_HOME, so the Report's evaluations are already cached on disk), a new
browser session:
- report cold: from `page.goto(<root>/report)` (a deep link, the server's first page) to the Accuracy
  figure being visible: the first of the page's headline row (ui.render.kpi_row, Markdown and a heading; an
  st.metric until 9bccd08). The floor page keeps its st.metric, so it still pays the wait for st.metric's script (and
  React's reveal throttle) that the Report no longer does.
- report warm: the same from a second new tab on that server (a fully cached Report). The warm-up started
  when the cold Report had run, so this page shares the machine with it (and, here, the browser does too).

Server C (fresh, empty DIGITLAB_HOME):
- canvas visible: from `page.goto(<root>/draw)` to the canvas being visible (information: no baseline).
- first prediction, drawn at once: the worst case. The stroke is drawn as soon as the canvas is visible; from
  mouse-up to "Predicted digit" visible. The shipped model's OpenCV twin answers it (core/twin.py), so it no
  longer waits for the warm-up still running (it did at 517bcf4 and before).
- first prediction, new tab: once the warm-up is done, a second browser context (nothing of the app loaded in
  it yet) opens /draw and draws at once; the same measure. A teacher opening the Draw page directly, where the
  teacher-pace figure comes after Home and Training Runs have loaded the browser's chunks.

With --compare, server D (fresh, empty DIGITLAB_HOME, DIGITLAB_WARMUP=0: the behaviour before the warm-up)
repeats server A's Home, Training Runs and first prediction (teacher pace), and server E (likewise) server C's
first prediction drawn at once, for ratios within one run.

Floor (first, its own fresh server, as information): from `page.goto` to the metric of a bare page holding a
title and one metric. It is what Streamlit itself costs on this machine at this moment: the figures above swing
with the machine's load (this 2-core machine's floor has measured 1.1 s and 2.4 s within half an hour), and each
page's own cost is its figure less the floor.

Information lines: the warm-up's own duration on servers A, B and C, from the server's log ("Model warm-up ready
in ... s"), and the commit measured (with "+ uncommitted changes" when the work tree differs).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 1000}

#: key: (label, baseline range in s from issue 8 or None, target in s or None)
FIGURES = {
    "home": ("Home (fresh server, first page)", (1.2, 2.6), 1.5),
    "training": ("Training Runs (during warm-up)", (0.6, 4.0), 1.5),
    "first_prediction": ("First prediction (teacher pace)", (5.1, 5.4), 1.0),
    "eval_gap": ("First MNIST-test evaluation: longest time without progress", None, 1.0),
    "eval_total": ("First MNIST-test evaluation: total", (33.0, 33.0), None),
    "control_change": ("Report control change (slowest)", (1.0, 3.0), 0.5),
    "training_revisit": ("Training Runs (revisit)", (0.6, 4.0), 1.5),
    "report_cold": ("Report cold, evaluation cached", (9.7, 9.7), 2.0),
    "report_warm": ("Report warm, fully cached", (4.0, 4.0), 2.0),
    "canvas_visible": ("Draw page canvas visible (fresh server)", None, None),
    "floor": ("Floor: a bare two-element Streamlit page (fresh server)", None, None),
    "first_prediction_at_once": ("First prediction (drawn at once)", (5.1, 5.4), 1.0),
    "first_prediction_new_tab": ("First prediction (new tab on /draw, warm-up done)", (5.1, 5.4), 1.0),
}

METRIC = '[data-testid="stMetric"]'
HEADLINE = '.st-key-headline [data-testid="stVerticalBlock"]'
PROGRESS_JS = """() => [...document.querySelectorAll('[data-testid="stProgress"]')].map(p => {
  const bar = p.querySelector('[aria-valuenow]');
  return (bar ? bar.getAttribute('aria-valuenow') : '?') + '|' + p.innerText.trim();
}).join(';')"""
RUNNING_JS = "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')"
# Records, in the page, when the DOM last changed and when the last click began. Changes inside a live region
# drawn 1 px wide or high are left out: screen-reader text no one sees (the one behind every select box, 1 px
# wide, clears "4 options available." after the box lost focus, up to 0.8 s after a click elsewhere; it was the
# late "empty DIV" of the Row-normalised checkbox's figure).
OBSERVE_JS = """() => {
  if (window.__observing) return;
  window.__observing = true; window.__lastMut = performance.now(); window.__clickAt = 0;
  document.addEventListener('pointerdown', () => { window.__clickAt = performance.now(); }, true);
  const seen = (m) => {
    const el = m.target.nodeType === 1 ? m.target : m.target.parentElement;
    const live = el && el.isConnected && el.closest('[aria-live], [role="log"], [role="status"]');
    if (!live) return true;
    const r = live.getBoundingClientRect();
    return r.width > 1 && r.height > 1;
  };
  new MutationObserver((ms) => { if (ms.some(seen)) window.__lastMut = performance.now(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
SETTLED_JS = """(quiet) => {
  const now = performance.now();
  if (document.querySelector('[data-testid="stStatusWidget"]')) window.__lastMut = Math.max(window.__lastMut, now);
  return now - window.__lastMut > quiet ? [window.__clickAt, window.__lastMut] : null;
}"""


class Skipped(Exception):
    """A control that is not on the page (it is being restructured): its figure is left out, not failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `streamlit run app.py` in its own process group; its output is kept for the warm-up log line."""

    def __init__(self, home: Path, label: str, env: dict | None = None, script: str = "app.py") -> None:
        self.home, self.label, self.port = home, label, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        env = dict(os.environ, DIGITLAB_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            start_new_session=True)  # its own group: stopping it also stops anything it started
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {label} exited: " + "".join(self.lines)[-2000:])
            try:
                urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2)
                self.healthy_at = time.perf_counter()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server {label} did not become healthy in 90 s: " + "".join(self.lines)[-2000:])

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def warmup_seconds(self) -> tuple[float | None, str]:
        for line in self.lines:
            m = re.search(r"Model warm-up ready in ([\d.]+) s \((.*)\)", line)
            if m:
                return float(m.group(1)), m.group(2)
            if "warm-up failed" in line:
                return None, line.strip()
        return None, "not finished"

    def wait_warmup(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and self.warmup_seconds()[1] == "not finished":
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)


@contextmanager
def server(home: Path, label: str, env: dict | None = None, script: str = "app.py"):
    s = Server(home, label, env, script)
    try:
        yield s
    finally:
        s.stop()


def _metric(page, text: str):
    return page.locator(METRIC).filter(has_text=text).first


def _headline(page, label: str):
    """A figure of a page's headline row (ui.render.kpi_row, keyed "headline"): the Report's Accuracy."""
    return page.locator(HEADLINE).filter(has_text=label).first


def _sidebar(page, title: str) -> float:
    """Click a page in the sidebar; the click's time (perf_counter)."""
    link = page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True)
    link.wait_for(timeout=60_000)
    t0 = time.perf_counter()
    link.click()
    return t0


def _stroke(page) -> float:
    """One vertical stroke in the middle of the canvas; the mouse-up's time (perf_counter)."""
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(state="visible", timeout=60_000)
    box = canvas.bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.85, steps=20)
    page.mouse.up()
    return time.perf_counter()


def _wait_prediction(page, t0: float, timeout: float = 120) -> tuple[float, bool]:
    """Seconds from t0 to the "Predicted digit" metric; whether the warm-up spinner was seen meanwhile."""
    metric, spinner_seen = _metric(page, "Predicted digit"), False
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if metric.is_visible():
            return time.perf_counter() - t0, spinner_seen
        spinner_seen = spinner_seen or page.get_by_text("warming up", exact=False).first.is_visible()
        time.sleep(0.03)
    raise TimeoutError("no 'Predicted digit' metric within %d s" % timeout)


def _settled(page, quiet_ms: int = 1000, timeout: float = 30) -> tuple[float, float]:
    """Wait until the page has been quiet (no DOM change, not running) for quiet_ms: (clickAt, lastChange) ms."""
    handle = page.wait_for_function(SETTLED_JS, arg=quiet_ms, polling=100, timeout=timeout * 1000)
    click_at, last = handle.json_value()
    return click_at, last


def _control_change(page, click) -> float:
    """Seconds from a click (captured in the page) to the last DOM change it caused."""
    _settled(page, 600)
    page.evaluate("() => { window.__clickAt = 0; }")
    click()
    click_at, last = _settled(page)
    if not click_at:
        raise RuntimeError("the click was not seen by the page")
    return max(0.0, last - click_at) / 1000


# A checkbox bound to a Vega-Lite parameter redraws the chart's canvas in the browser, which no DOM mutation
# shows: it is clicked from inside the page and timed to the second animation frame after the click (the frame
# after Vega's redraw), and to the last DOM change as any control (a rerun it caused would show there).
CHART_CHECKBOX_JS = """async (label) => {
  const bind = [...document.querySelectorAll('.vega-bind')].find(b => b.innerText.includes(label));
  const input = bind && bind.querySelector('input');
  if (!input) return null;
  const t0 = performance.now();
  window.__clickAt = t0;
  input.click();
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
}"""


def _chart_checkbox(page, label: str) -> float | None:
    """Seconds a chart's own checkbox takes to redraw the chart, or to the last DOM change it caused, the slower
    of ticking and unticking it; None when there is no such checkbox."""
    slowest = 0.0
    for _ in range(2):  # on, then off again
        _settled(page, 600)
        redraw = page.evaluate(CHART_CHECKBOX_JS, label)
        if redraw is None:
            return None
        click_at, last = _settled(page)
        slowest = max(slowest, redraw, last - click_at)
    return slowest / 1000


def _choose(page, box_label: str, option: str) -> float:
    """Pick `option` in the selectbox labelled box_label; the pick's time (perf_counter)."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=box_label).first
    if not box.count():
        raise Skipped(f"no '{box_label}' box")
    box.click()
    opt = page.get_by_role("option").filter(has_text=option).first
    opt.wait_for(timeout=10_000)
    t0 = time.perf_counter()
    opt.click()
    return t0


def _radio(page, group: str, option: str):
    radio = page.get_by_test_id("stRadio").filter(has_text=group).first
    if not radio.count():
        raise Skipped(f"no '{group}' radio")
    return radio.get_by_text(option, exact=True).first


def _first_evaluation(page, timeout: float = 150) -> tuple[float, float, int, str]:
    """Choose MNIST test on the Report: (longest no-progress stretch, total, progress changes, where that was)."""
    accuracy = _headline(page, "Accuracy")
    before = accuracy.inner_text()
    t0 = _choose(page, "Data set", "MNIST test")
    changes = [(t0, page.evaluate(PROGRESS_JS))]  # (time, the bars' reading from then on)
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        time.sleep(0.2)
        now, reading = time.perf_counter(), page.evaluate(PROGRESS_JS)
        if reading != changes[-1][1]:
            changes.append((now, reading))
        if not reading and not page.evaluate(RUNNING_JS) and accuracy.is_visible() and accuracy.inner_text() != before:
            changes.append((now, "(done)"))
            gaps = [(b[0] - a[0], a, b) for a, b in zip(changes, changes[1:])]
            gap, (a_t, a_read), (b_t, b_read) = max(gaps, key=lambda g: g[0])
            where = (f"{a_t - t0:.1f}-{b_t - t0:.1f} s after the choice, the bars reading "
                     f"{(a_read or '(none)')[:70]!r} until {(b_read or '(none)')[:70]!r}")
            return gap, now - t0, len(changes) - 2, where
    raise TimeoutError(f"the MNIST-test evaluation did not finish in {timeout:.0f} s")


def _teacher(srv: Server, page, think: float | str) -> dict:
    """Home, Training Runs, then Draw and one stroke `think` s after Home opened (a fresh server's first visitor)."""
    out = {}
    t0 = time.perf_counter()
    page.goto(srv.url, timeout=90_000)
    _metric(page, "MNIST test accuracy").wait_for(timeout=90_000)
    out["home"] = time.perf_counter() - t0
    opened_home = t0

    t0 = _sidebar(page, "Training Runs")
    page.get_by_role("heading", name="Training Runs").first.wait_for(timeout=90_000)
    page.get_by_test_id("stDataFrame").first.wait_for(timeout=90_000)
    out["training"] = time.perf_counter() - t0

    _sidebar(page, "Draw & Reframe")
    page.locator("canvas.upper-canvas").first.wait_for(state="visible", timeout=90_000)
    time.sleep(max(0.0, opened_home + (10.0 if think == "warm" else think) - time.perf_counter()))
    if think == "warm":
        srv.wait_warmup(180)
    out["think"] = time.perf_counter() - opened_home
    out["warmup_done_before_stroke"] = srv.warmup_seconds()[1] != "not finished"
    t_up = _stroke(page)
    out["first_prediction"], out["waited"] = _wait_prediction(page, t_up)
    return out


def _drawn_at_once(browser, home: Path, label: str, env: dict | None = None) -> tuple[float, float, bool, tuple,
                                                                                   float | None]:
    """A fresh server's /draw, a stroke as soon as the canvas shows: (canvas s, prediction s, spinner, warm-up,
    and with the warm-up on, the same in a new tab once it is done: its own new browser context, so the browser
    has loaded nothing of the app yet)."""
    with server(home, label, env) as srv:
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(f"{srv.url}/draw", timeout=90_000)
        page.locator("canvas.upper-canvas").first.wait_for(state="visible", timeout=90_000)
        canvas = time.perf_counter() - t0
        prediction, waited = _wait_prediction(page, _stroke(page))
        new_tab = None
        if not env:
            srv.wait_warmup(60)
            tab = browser.new_context(viewport=VIEWPORT).new_page()
            tab.goto(f"{srv.url}/draw", timeout=90_000)
            new_tab = _wait_prediction(tab, _stroke(tab))[0]
            tab.context.close()
        ctx.close()
        return canvas, prediction, waited, srv.warmup_seconds(), new_tab


FLOOR_APP = 'import streamlit as st\nst.title("Floor")\nst.metric("Accuracy", "0 %")\n'


def _floor(browser, home: Path) -> float:
    """Seconds from goto to the metric of a bare page (a title and one metric) on a fresh server: what Streamlit
    itself and this machine cost now, so that the figures above it can be read against the load of the day."""
    script = home / "floor.py"
    script.write_text(FLOOR_APP)
    with server(home, "floor", script=str(script)) as srv:
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(srv.url, timeout=90_000)
        _metric(page, "Accuracy").wait_for(timeout=90_000)
        seconds = time.perf_counter() - t0
        ctx.close()
    return seconds


def run_once(browser, think: float | str, log, compare: bool = False) -> tuple[dict, dict]:
    """One full measurement (a bare floor page, then three fresh servers, four with `compare`); the figures
    and notes."""
    out, notes = {}, {}
    home_a = Path(tempfile.mkdtemp(prefix="digitlab-bench-a-"))
    home_c = Path(tempfile.mkdtemp(prefix="digitlab-bench-c-"))
    try:
        floor_home = Path(tempfile.mkdtemp(prefix="digitlab-bench-floor-"))
        try:
            out["floor"] = _floor(browser, floor_home)
        finally:
            shutil.rmtree(floor_home, ignore_errors=True)
        log(f"  floor: a bare two-element page {out['floor']:.2f} s")
        with server(home_a, "A") as srv:
            ctx = browser.new_context(viewport=VIEWPORT)
            page = ctx.new_page()
            teacher = _teacher(srv, page, think)
            out.update(home=teacher["home"], training=teacher["training"], first_prediction=teacher["first_prediction"])
            notes.update(think=teacher["think"], warmup_done_before_stroke_A=teacher["warmup_done_before_stroke"],
                         waited_A=teacher["waited"])
            log(f"  server A: home {out['home']:.2f} s, training {out['training']:.2f} s, "
                f"first prediction {out['first_prediction']:.2f} s")

            _sidebar(page, "Reused-model report")
            _headline(page, "Accuracy").wait_for(timeout=150_000)
            page.evaluate(OBSERVE_JS)
            _settled(page, 800, 120)
            try:
                (out["eval_gap"], out["eval_total"], notes["progress_changes"],
                 notes["longest_without_progress"]) = _first_evaluation(page)
                log(f"  server A: first MNIST-test evaluation {out['eval_total']:.1f} s, "
                    f"longest without progress {out['eval_gap']:.2f} s")
            except Skipped as e:
                notes["eval"] = f"skipped: {e}"

            changes = {}
            try:
                _radio(page, "Reframing", "mnist").click()  # untimed: computes the mnist evaluation once
                _settled(page, 1000, 150)
                changes["reframing radio (cached method)"] = _control_change(
                    page, lambda: _radio(page, "Reframing", "paper").click())
            except Skipped as e:
                notes["radio"] = f"skipped: {e}"
            shares = _chart_checkbox(page, "Row-normalised")
            if shares is not None:
                changes["row-normalised (the chart's checkbox)"] = shares
            # The Report's view switch (st.segmented_control key="view"; Streamlit marks a keyed widget with the
            # class st-key-<key>): to the second view and back to the first.
            view = page.locator(".st-key-view").first
            if view.count():
                buttons = view.locator("button")  # role "radio" in Streamlit 1.67's segmented control
                for k in range(1, min(3, buttons.count())):
                    other = buttons.nth(k)
                    changes[f"view: {other.inner_text().strip()}"] = _control_change(page, other.click)
                if buttons.count() >= 2:
                    first = buttons.nth(0)
                    changes[f"view: back to {first.inner_text().strip()}"] = _control_change(page, first.click)
            if changes:
                out["control_change"] = max(changes.values())
                notes["control_changes"] = {k: round(v, 3) for k, v in changes.items()}

            t0 = _sidebar(page, "Training Runs")
            page.get_by_role("heading", name="Training Runs").first.wait_for(timeout=90_000)
            page.get_by_test_id("stDataFrame").first.wait_for(timeout=90_000)
            out["training_revisit"] = time.perf_counter() - t0
            notes["warmup_A"] = srv.warmup_seconds()
            ctx.close()

        with server(home_a, "B") as srv:  # the same home: the Report's evaluations are on disk
            for key in ("report_cold", "report_warm"):
                ctx = browser.new_context(viewport=VIEWPORT)
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(f"{srv.url}/report", timeout=90_000)
                _headline(page, "Accuracy").wait_for(timeout=150_000)
                out[key] = time.perf_counter() - t0
                ctx.close()
            notes["warmup_B"] = srv.warmup_seconds()  # started by the cold Report: it runs during the warm one
            log(f"  server B: report cold {out['report_cold']:.2f} s, warm {out['report_warm']:.2f} s")

        (out["canvas_visible"], out["first_prediction_at_once"], notes["waited_C"], notes["warmup_C"],
         out["first_prediction_new_tab"]) = _drawn_at_once(browser, home_c, "C")
        log(f"  server C: canvas {out['canvas_visible']:.2f} s, first prediction drawn at once "
            f"{out['first_prediction_at_once']:.2f} s, in a new tab after the warm-up "
            f"{out['first_prediction_new_tab']:.2f} s")

        if compare:
            home_d = Path(tempfile.mkdtemp(prefix="digitlab-bench-d-"))
            try:
                with server(home_d, "D", {"DIGITLAB_WARMUP": "0"}) as srv:
                    ctx = browser.new_context(viewport=VIEWPORT)
                    notes["no_warmup"] = _teacher(srv, ctx.new_page(), think)
                    ctx.close()
                log("  server D (warm-up off): " + ", ".join(
                    f"{k} {notes['no_warmup'][k]:.2f} s" for k in ("home", "training", "first_prediction")))
                shutil.rmtree(home_d, ignore_errors=True)
                home_d.mkdir()
                _, notes["no_warmup"]["first_prediction_at_once"], _, _, _ = _drawn_at_once(
                    browser, home_d, "E", {"DIGITLAB_WARMUP": "0"})
                log(f"  server E (warm-up off): first prediction drawn at once "
                    f"{notes['no_warmup']['first_prediction_at_once']:.2f} s")
            finally:
                shutil.rmtree(home_d, ignore_errors=True)
    finally:

        shutil.rmtree(home_a, ignore_errors=True)
        shutil.rmtree(home_c, ignore_errors=True)
    return out, notes


def _row(key: str, seconds: float) -> dict:
    label, baseline, target = FIGURES[key]
    ratio = None if baseline is None else (baseline[0] / seconds, baseline[1] / seconds)
    return {"figure": key, "label": label, "seconds": round(seconds, 3),
            "baseline_s": None if baseline is None else list(baseline),
            "ratio_baseline_over_measured": None if ratio is None else [round(r, 2) for r in ratio],
            "target_s": target, "met": None if target is None else seconds <= target}


def _fmt_range(pair, unit="") -> str:
    if pair is None:
        return "-"
    lo, hi = pair
    return f"{lo:g}{unit}" if lo == hi else f"{lo:g}-{hi:g}{unit}"


def _print_rows(rows: list[dict]) -> None:
    print(f"{'figure':<62} {'measured':>9} {'baseline':>10} {'ratio':>11} {'target':>8}  met")
    for r in rows:
        ratio = r["ratio_baseline_over_measured"]
        ratio_s = "-" if ratio is None else (f"{ratio[0]:.1f}x" if ratio[0] == ratio[1]
                                             else f"{ratio[0]:.1f}-{ratio[1]:.1f}x")
        target = "-" if r["target_s"] is None else f"<= {r['target_s']:g}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['label']:<62} {r['seconds']:>8.2f}s {_fmt_range(r['baseline_s'], ' s'):>10} {ratio_s:>11} "
              f"{target:>8}  {met}")


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _think(value: str) -> float | str:
    if value == "warm":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of seconds, or 'warm'") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole measurement N times (default 1)")
    ap.add_argument("--think", type=_think, default=10.0,
                    help="seconds from opening Home to the teacher's first stroke (default 10), or 'warm': once "
                         "the server's log says the warm-up is ready")
    ap.add_argument("--compare", action="store_true",
                    help="also run the teacher's path on a fourth fresh server with DIGITLAB_WARMUP=0 (the behaviour "
                         "before the warm-up), for ratios measured in the same run")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    if args.think == "warm":
        FIGURES["first_prediction"] = ("First prediction (stroke once warmed up)",) + FIGURES["first_prediction"][1:]
    elif args.think != 10.0:
        FIGURES["first_prediction"] = (f"First prediction (stroke {args.think:g} s after Home)",) + \
            FIGURES["first_prediction"][1:]
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: every server and the browser are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    from playwright.sync_api import sync_playwright

    commit, load_before = _commit(), os.getloadavg()
    runs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for i in range(args.runs):
                log(f"run {i + 1} of {args.runs} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
                figures, notes = run_once(browser, args.think, log, args.compare)
                rows = [_row(k, v) for k, v in figures.items()]
                runs.append({"figures": rows, "notes": notes, "load_average_1min": round(os.getloadavg()[0], 2)})
                if not args.json:
                    _print_rows(rows)
                    _print_notes(notes)
        finally:
            browser.close()
    summary = _summary(runs)
    if args.json:
        print(json.dumps({"commit": commit, "load_average_before": [round(x, 2) for x in load_before],
                          "viewport": VIEWPORT, "runs": runs, "summary": summary}, indent=1, default=str))
    else:
        if args.runs > 1:
            print("\nover all runs: min / median / max (ratio on the median)")
            _print_rows([dict(r, label=f"{r['label']} [{r['min']:.2f} / {r['max']:.2f}]") for r in summary])
        print(f"\ncommit measured: {commit}; load average before: "
              f"{', '.join(f'{x:.1f}' for x in load_before)} on {os.cpu_count()} CPUs")
    return 0


def _print_notes(notes: dict) -> None:
    for key in ("warmup_A", "warmup_B", "warmup_C"):
        if key in notes:
            s, detail = notes[key]
            where = {"warmup_A": "A (started by Home)", "warmup_B": "B (started by the cold Report; at the warm one)",
                     "warmup_C": "C (started after the Draw page)"}[key]
            print(f"  warm-up on server {where}: " + (f"{s:.1f} s ({detail})" if s is not None else detail))
    if "think" in notes:
        print(f"  teacher's stroke {notes['think']:.1f} s after Home opened; warm-up finished before it: "
              f"{'yes' if notes['warmup_done_before_stroke_A'] else 'no'}; warm-up spinner seen: "
              f"{'yes' if notes['waited_A'] else 'no'}")
    if "waited_C" in notes:
        print(f"  drawn at once: warm-up spinner seen: {'yes' if notes['waited_C'] else 'no'}")
    if "no_warmup" in notes:
        d = notes["no_warmup"]
        print(f"  warm-up off (servers D and E, same run): home {d['home']:.2f} s, "
              f"Training Runs {d['training']:.2f} s, first prediction {d['first_prediction']:.2f} s (teacher pace), "
              f"{d.get('first_prediction_at_once', float('nan')):.2f} s (drawn at once)")
    if "control_changes" in notes:
        print("  control changes: " + ", ".join(f"{k} {v:.2f} s" for k, v in notes["control_changes"].items()))
    if "progress_changes" in notes:
        print(f"  first evaluation: {notes['progress_changes']} visible progress changes; the longest stretch "
              f"without one: {notes['longest_without_progress']}")
    for key in ("eval", "radio"):
        if key in notes:
            print(f"  {key}: {notes[key]}")


def _summary(runs: list[dict]) -> list[dict]:
    by_key: dict[str, list[float]] = {}
    for run in runs:
        for r in run["figures"]:
            by_key.setdefault(r["figure"], []).append(r["seconds"])
    out = []
    for key, values in by_key.items():
        row = _row(key, statistics.median(values))
        row.update(min=min(values), max=max(values), n=len(values))
        out.append(row)
    return out


if __name__ == "__main__":
    sys.exit(main())
