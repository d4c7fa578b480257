"""One navigation mechanism: app.py's st.navigation, also for a deep link into a fresh server.

Streamlit keeps its legacy `pages/` router on until the entry script has called st.navigation once per process
(`PagesManager.uses_pages_directory`). So when a server's very first request is a deep link such as /draw,
the legacy router runs pages/draw.py by itself: no page config, the wrong sidebar. Each page calls
`ensure_app_navigation()` first; in that one case it runs app.py, whose st.navigation takes over for good and
renders the requested page, and then stops the legacy run.
"""
from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parents[1] / "app.py"


def _legacy_router_active() -> bool:
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy router
        return False
    return bool(getattr(PagesManager, "uses_pages_directory", False))


def ensure_app_navigation() -> None:
    if _legacy_router_active():
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()
