"""A safe default for sharing: local-only binding, read-only mode, no error details, user text shown literally."""
import html
import logging
import tomllib

import pytest
from streamlit.testing.v1 import AppTest

from core import config, jobs
from core.errors import DigitLabError, ReadOnlyError
from core.training import RunConfig
from tests.conftest import ROOT, canvas
from tests.test_pages import TIMEOUT, _upload, image_captions, png
from ui.safe import md_escape

HOSTILE = [
    "**x** [link](http://evil)",
    "<img src=x onerror=alert(1)>",
    "_under_ *star* `code` ~~gone~~ $x^2$ a|b",
    "# heading",
    "1. item",
    "- item",
    "> quote",
    "&lt;tag&gt; &amp;",
    "![img](http://evil/x.png)",
    "back\\slash\\*",
    ":red[colour] :smile: :material/home: :blue word",
    "www.evil.com mail@evil.com https://evil.com",
    "scan_01.png",
]
TITLE = "**x** [link](http://evil) <img src=x onerror=alert(1)>"


@pytest.fixture
def read_only(monkeypatch):
    monkeypatch.setenv("DIGITLAB_READ_ONLY", "1")


@pytest.fixture
def queued_job(monkeypatch):
    """A queued job with a hostile title, and no worker: the page must not start one in a test."""
    monkeypatch.setattr(jobs, "ensure_worker", lambda: None)
    cfg = RunConfig.preset("mlp", epochs=1, max_samples=40, batch_size=16, early_stopping=None)
    return jobs.submit(cfg, title=TITLE, start_worker=False)


# --- binding and error details -------------------------------------------------------------------------------

def test_server_binds_to_this_machine_and_hides_error_details():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["client"]["showErrorDetails"] in ("none", False)
    assert cfg["client"]["toolbarMode"] in ("viewer", "minimal")


def test_readme_says_how_to_share():
    readme = (ROOT / "README.md").read_text()
    assert "--server.address 0.0.0.0" in readme and "DIGITLAB_READ_ONLY=1" in readme


# --- read-only mode in core ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("YES", True), (" yes ", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("off", False),
])
def test_read_only_values(monkeypatch, value, expected):
    monkeypatch.setenv("DIGITLAB_READ_ONLY", value)
    assert config.read_only() is expected


def test_read_only_is_off_by_default(monkeypatch):
    monkeypatch.delenv("DIGITLAB_READ_ONLY", raising=False)
    assert not config.read_only()
    config.require_writable("queueing training jobs")  # no error


def test_require_writable_refuses_with_a_clear_message(read_only):
    with pytest.raises(ReadOnlyError) as e:
        config.require_writable("queueing training jobs")
    assert isinstance(e.value, DigitLabError)
    assert "read-only (DIGITLAB_READ_ONLY=1)" in str(e.value)
    assert "queueing training jobs is disabled" in str(e.value)


# --- read-only mode on the pages -----------------------------------------------------------------------------

def _labels(widgets) -> list[str]:
    return [w.label for w in widgets]


def test_training_page_owner_can_queue_and_cancel(queued_job):
    """The control: on a normal server the form, the weights field and the Cancel button are there."""
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Queue training" in _labels(at.button) and "Cancel" in _labels(at.button)
    at.selectbox(key="arch").set_value("vgg16").run()
    assert any(label.startswith("Weights") for label in _labels(at.text_input))


def test_training_page_read_only_has_no_launch_form_cancel_or_paths(queued_job, read_only):
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert "Queue training" not in _labels(at.button)
    assert "Cancel" not in _labels(at.button)
    assert not at.text_input  # neither the weights path nor a title
    assert not [s for s in at.selectbox if s.key == "arch"]
    note = " ".join(i.value for i in at.info)
    assert "read-only" in note and "DIGITLAB_READ_ONLY" in note
    assert at.multiselect(key="chosen").value  # the runs and curves are still there to read


def test_jobs_cannot_be_queued_or_cancelled_in_read_only_mode(queued_job, read_only):
    with pytest.raises(ReadOnlyError):
        jobs.cancel(queued_job.id)
    with pytest.raises(ReadOnlyError):
        jobs.submit(RunConfig.preset("mlp", epochs=1), start_worker=False)
    assert jobs.get_job(queued_job.id).status == "queued"


def test_draw_page_read_only_predicts_but_does_not_save(read_only):
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, "one.png", png(canvas([((140, 50), (140, 230))], rgba=False)))
    assert not at.exception and not at.error
    assert [m for m in at.metric if m.label == "Predicted digit"]  # visitors still draw, upload and see results
    assert not [b for b in at.button if b.key == "save" or b.label == "Save"]
    assert not [s for s in at.selectbox if s.key == "label"]
    popover = [p.proto.popover for p in at.get("popover") if p.proto.popover.label == "Save to my digits"]
    assert popover and popover[0].disabled and "read-only" in popover[0].help  # shown, with the reason


# --- user text is shown literally ----------------------------------------------------------------------------

def test_job_title_is_shown_as_plain_text(queued_job):
    at = AppTest.from_file("../pages/training.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert TITLE in [t.value for t in at.text]  # st.text: never Markdown, never HTML
    rendered = " ".join(m.value for m in list(at.markdown) + list(at.caption))
    assert "[link](" not in rendered and "<img" not in rendered


def test_upload_name_is_shown_literally_in_the_caption():
    name = "**bold** [x](http://evil) <b>.png"
    at = AppTest.from_file("../pages/draw.py", default_timeout=TIMEOUT).run()
    _upload(at, name, png(canvas([((140, 50), (140, 230))], rgba=False)))
    assert not at.exception
    assert f"{md_escape(name)}: 280x280" in image_captions(at)


def test_uploaded_zip_name_is_shown_literally_in_the_report(tmp_path):
    from tests.test_pages import _zip

    name = "[click](http://evil) **scans**.zip"
    one = png(canvas([((140, 50), (140, 230))], rgba=False))
    at = AppTest.from_file("../pages/report.py", default_timeout=TIMEOUT).run()
    at.selectbox(key="source").set_value("upload").run()
    at.file_uploader(key="zip").upload(name, _zip([("1/a.png", one), ("1/b.png", one)]), "application/zip")
    at.run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert any(md_escape(name) in c for c in captions) and not any("[click](" in c for c in captions)


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_renders_back_to_the_same_text(text):
    """CommonMark (with tables and strikethrough, as GFM) renders the escaped text as exactly the text."""
    markdown_it = pytest.importorskip("markdown_it")

    md = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    out = md.render(md_escape(text)).strip()
    assert out.startswith("<p>") and out.endswith("</p>"), out  # one paragraph: no heading, list or quote
    body = out[3:-4]
    assert "<" not in body.replace("&lt;", ""), out  # no element at all: no link, image, emphasis or HTML
    assert html.unescape(body).replace("\u2060", "") == text


def test_md_escape_leaves_ordinary_names_alone():
    for text in ("scan_01.png", "mydigits/7/scan12.png", "Weights file not found: /data/model_v2.h5 (16:05)"):
        assert md_escape(text) == text


# --- error details go to the server log ----------------------------------------------------------------------

def _raises():
    import streamlit as st

    from ui.safe import guard

    with guard():
        st.write("before the fault")
        raise RuntimeError("secret detail in /srv/private/path")


def test_unexpected_error_shows_a_short_message_and_logs_the_traceback(caplog):
    caplog.set_level(logging.ERROR, logger="digitlab")
    at = AppTest.from_function(_raises, default_timeout=TIMEOUT).run()
    assert not at.exception  # Streamlit's own traceback element is not shown
    assert len(at.error) == 1
    message = at.error[0].value
    assert "Something went wrong" in message and "server log" in message
    shown = " ".join(str(e.value) for e in list(at.error) + list(at.markdown) if hasattr(e, "value"))
    for leak in ("secret", "/srv/private", "Traceback", "RuntimeError"):
        assert leak not in shown
    logged = [r for r in caplog.records if r.name == "digitlab"]
    assert logged and logged[0].exc_info and "secret detail" in str(logged[0].exc_info[1])
    assert logged[0].getMessage().split("reference ")[1][:8] in message  # the visitor's reference finds it


def _user_error():
    from core.errors import DatasetError
    from ui.safe import guard

    with guard():
        raise DatasetError("**scans**.zip is not a valid .zip file.")


def test_a_digitlab_error_shows_its_message_escaped():
    at = AppTest.from_function(_user_error, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.error[0].value == md_escape("**scans**.zip is not a valid .zip file.")


def _stops_and_reruns():
    import streamlit as st

    from ui.safe import guard

    with guard():
        st.session_state.runs = st.session_state.get("runs", 0) + 1
        if st.session_state.runs == 1:
            st.rerun()
        st.write(f"ran {st.session_state.runs} times")
        st.stop()
        st.write("never")


def test_st_stop_and_st_rerun_pass_through_the_guard():
    at = AppTest.from_function(_stops_and_reruns, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert [m.value for m in at.markdown] == ["ran 2 times"]


def _fragment_fault():
    import streamlit as st

    from ui.safe import guarded

    @st.fragment
    @guarded
    def part():
        raise KeyError("/srv/private")

    part()
    st.write("the rest of the page")


def test_a_fault_in_a_fragment_stays_in_the_fragment():
    at = AppTest.from_function(_fragment_fault, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Something went wrong" in at.error[0].value and "/srv/private" not in at.error[0].value
    assert "the rest of the page" in [m.value for m in at.markdown]


def test_app_wraps_navigation_in_the_guard():
    import ast

    tree = ast.parse((ROOT / "app.py").read_text())
    guarded = [w for w in ast.walk(tree) if isinstance(w, ast.With)
               and any(ast.unparse(item.context_expr) == "guard()" for item in w.items)]
    inside = " ".join(ast.unparse(node) for w in guarded for node in w.body)
    assert "st.navigation(PAGES)" in inside and "page.run()" in inside  # the page runs inside the guard


def test_collected_digits_cannot_be_saved_in_read_only_mode(read_only):
    import numpy as np

    from core.datasets import collected_dir, save_collected
    from core.errors import ReadOnlyError

    with pytest.raises(ReadOnlyError, match="saving digits to my digits is disabled"):
        save_collected(np.zeros((28, 28), np.uint8), 3)
    assert not collected_dir().exists()
