"""What a visitor may see: user text shown literally, errors without server details, the read-only notice.

- `md_escape(text)`: text from users (file names, titles, error messages that quote them) for any element
  that renders Markdown (st.markdown, st.caption, st.error, image captions, labels). Shown literally: no
  bold, links, images, HTML, math, colour directives or list/heading syntax. Prefer `st.text` where it fits.
- `guard()` (`@guarded` for a function): around a page (app.py) or a fragment. An unexpected exception is
  logged with its traceback to the server log (logger "digitlab") and the visitor gets one short `st.error`;
  a DigitLabError is meant for users and shows its message. Streamlit's st.stop/st.rerun (ScriptControlException, a BaseException) and a
  fragment's already-handled error pass through untouched.
- `show_error(e)`: a DigitLabError's message as st.error, escaped.
"""
from __future__ import annotations

import functools
import logging
import re
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from core.config import read_only
from core.errors import DigitLabError

LOG = logging.getLogger("digitlab")

GENERIC_ERROR = ("Something went wrong on this page. The details are in the server log (reference {ref}); "
                 "try again, or tell the person who runs this server.")
READ_ONLY_NOTE = ("This server is read-only (DIGITLAB_READ_ONLY=1): {what}. Whoever runs it enables this by "
                  "starting it without DIGITLAB_READ_ONLY.")


class _WhenRootSilent(logging.Filter):
    """Print through our own handler only when nobody configured the root logger (no double lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


if not LOG.handlers:  # the terminal that runs `streamlit run`, like Streamlit's own log lines
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _handler.addFilter(_WhenRootSilent())
    LOG.addHandler(_handler)
    LOG.setLevel(logging.INFO)


# Always escaped: emphasis and code (* `), links and images ([ ]), HTML and autolinks (< >), tables (|),
# the backslash itself, and Streamlit's directives ({ } after :color[...]).
_ALWAYS = re.compile(r"([\\`*\[\]<>|{}])")
# Escaped where they would start a block: ordered lists here, headings, quotes, lists and rules below.
_ORDERED = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)
_BLOCK = re.compile(r"^(\s*)([#>+=-])", re.MULTILINE)
# `_` emphasises only when not inside a word (file_name.png stays as it is).
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# Entities (&lt;) would become other characters.
_ENTITY = re.compile(r"&(?=#?\w+;)")
# GFM autolinks (http://, www., user@host) and Streamlit's :emoji:, :material/icon: and :color[...] directives
# are also found in the parsed text, where a backslash no longer counts (checked in a browser): an invisible
# word joiner (U+2060) after the colon, before the dot of www. and before @ keeps the text and breaks them.
_BREAK = re.compile(r"(?<=:)(?=[A-Za-z/])|(?i:(?<=www)(?=\.))|(?=@)")


def md_escape(text: object) -> str:
    """`text` as Markdown that Streamlit renders back to these characters (with invisible word joiners)."""
    s = _ALWAYS.sub(r"\\\1", str(text))
    s = _UNDERSCORE.sub(r"\\_", s)
    for ch in "~$":  # strikethrough and math need a pair
        if s.count(ch) >= 2:
            s = s.replace(ch, "\\" + ch)
    s = _ORDERED.sub(r"\1\\\2", s)
    s = _BLOCK.sub(r"\1\\\2", s)
    s = _ENTITY.sub(r"\\&", s)
    return _BREAK.sub("\u2060", s)


def show_error(e: BaseException, where=st) -> None:
    """A DigitLabError for the user, as st.error (st.info for a data set with nothing in it yet); its message
    may quote file names, so it is escaped."""
    from core.errors import NothingYetError

    (where.info if isinstance(e, NothingYetError) else where.error)(md_escape(e))


def shown_path(path) -> str:
    """A server path as a visitor may see it: only its last part on a read-only server."""
    if path is None:
        return ""
    return Path(str(path)).name if read_only() else str(path)


def read_only_note(what: str) -> str:
    return READ_ONLY_NOTE.format(what=what)


@contextmanager
def guard(where=st):
    """Run a page or fragment; an unexpected error goes to the server log and a short message to the page."""
    try:
        yield
    except DigitLabError as e:
        LOG.warning("%s: %s", type(e).__name__, e)
        show_error(e, where)
    except Exception as e:
        if _passes_through(e):
            raise
        ref = uuid.uuid4().hex[:8]
        LOG.exception("Unexpected error (reference %s) in %s", ref, _page_name())
        where.error(GENERIC_ERROR.format(ref=ref), icon=":material/error:")


def guarded(fn):
    """`guard()` as a decorator, e.g. under @st.fragment (a fragment's reruns skip app.py)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with guard():
            return fn(*args, **kwargs)

    return run


def _passes_through(e: Exception) -> bool:
    """Streamlit's own control flow: a fragment's error it has already shown (and logged)."""
    try:
        from streamlit.errors import FragmentHandledException
    except ImportError:  # pragma: no cover - older Streamlit
        return False
    return isinstance(e, FragmentHandledException)


def _page_name() -> str:
    try:
        return st.context.url or "the app"
    except Exception:  # outside a browser session (AppTest, bare mode)
        return "the app"
