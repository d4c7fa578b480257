"""Data sets and ImageNet weights on the Training Runs page: what the Keras cache holds, and a Fetch button with a
progress bar for what it lacks. No TensorFlow; core.downloads does the work (short timeouts: it never hangs).

A fetch runs in the script run that its button starts, so its progress bar moves while the bytes arrive; any
other click on the page stops the script there, and core.downloads then leaves no partial file behind.
"""
from __future__ import annotations

import streamlit as st

from core import downloads
from core.errors import DigitLabError
from ui.safe import md_escape, shown_path

#: Session key of the message a finished fetch leaves for the rerun that shows the updated list.
MESSAGE_KEY = "download_message"


def size_text(n: int | None) -> str:
    """Bytes as a reader takes them in: "58.9 MB", "312 kB", "" when unknown."""
    if n is None:
        return ""
    if n >= 10**9:
        return f"{n / 10**9:.2f} GB"
    if n >= 10**6:
        return f"{n / 10**6:.1f} MB"
    if n >= 10**3:
        return f"{n / 10**3:.0f} kB"
    return f"{n} bytes"


def resource_state(row: dict) -> str:
    """A status row (core.downloads.status) in a few words, Markdown: here with its size, or missing."""
    if row["present"]:
        return ":green[here]" + (f", {size_text(row['bytes'])}" if row["bytes"] is not None else "")
    return ":orange[missing]" + (f" ({size_text(row['bytes'])} of it there)" if row["bytes"] else "")


def resource_place(row: dict) -> str:
    """Where the resource lives or would go (as a visitor may see it), escaped for st.caption."""
    return ("in " if row["present"] else "would go to ") + md_escape(shown_path(row["path"]))


def show_download_error(e: DigitLabError) -> None:
    """What went wrong on the first line, as st.error; the rest (how to provide the file by hand: URLs and the
    exact paths) as a code block, so a URL or path copies exactly."""
    first, _, rest = str(e).partition("\n")
    st.error(md_escape(first))
    if rest.strip():
        st.code(rest, language=None, wrap_lines=True)


def fetch_with_progress(name: str) -> downloads.FetchResult | None:
    """Fetch one resource with a progress bar; on failure (offline, checksum, disk) show why and how to provide
    it by hand and return None."""
    res = downloads.get_resource(name)
    bar = st.progress(0.0, text=f"Connecting to fetch {res.title}...")
    state = {"prefix": ""}

    def on_file(file_name: str, index: int, count: int) -> None:
        state["prefix"] = f"file {index + 1} of {count} ({file_name}): " if count > 1 else ""

    def progress(done: int, total: int | None) -> None:
        text = state["prefix"] + (f"{size_text(done)} of {size_text(total)}" if total else size_text(done))
        bar.progress(min(1.0, done / total) if total else 0.0, text=text or "starting")

    try:
        result = downloads.fetch(name, progress=progress, on_file=on_file)
    except DigitLabError as e:
        bar.empty()
        show_download_error(e)
        return None
    bar.empty()
    return result


def result_text(result: downloads.FetchResult) -> str:
    """A finished fetch in one line: what, how big, where, and how it was checked."""
    got = "fetched" if any(f.downloaded for f in result.files) else "already in the Keras cache"
    check = ("checksum published by Keras verified" if result.verified
             else "Keras publishes no checksum: its SHA-256 is recorded beside it")
    unpacked = " and unpacked" if result.extracted else ""
    return (f"{result.title}: {got}{unpacked}, {size_text(result.bytes)} in {shown_path(result.path)}; "
            f"{check}.")


def fetch_button(name: str, place: str, button_at=st) -> None:
    """A Fetch button for one resource (in `button_at`; `place` names where on the page, for its key and its
    message). When clicked: the download with its progress bar below the row, then a rerun that shows the
    updated page with a success message there (`show_fetch_message(place)`); or, below the row, why it failed
    and how to provide the file by hand."""
    res = downloads.get_resource(name)
    if button_at.button("Fetch", key=f"{place}_{name}",
                        help=f"Download {res.title} into the Keras cache (like `{res.command}`)"):
        with st.container():  # below the row the button is in, full width
            result = fetch_with_progress(name)
        if result is not None:
            st.session_state[MESSAGE_KEY] = (place, result_text(result))
            st.rerun()


def show_fetch_message(place: str) -> None:
    """The success message a fetch started at `place` left for this run (shown once)."""
    message = st.session_state.get(MESSAGE_KEY)
    if message and message[0] == place:
        del st.session_state[MESSAGE_KEY]
        st.success(md_escape(message[1]))


def resource_row(name: str, place: str, caption: str, state: str = "", fetch: bool = True) -> None:
    """One resource on a line: its title (and `state`, Markdown), `caption` (Markdown) below, and a Fetch
    button at the right when `fetch`. The one row for the downloads list and a reproduction's needs."""
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    c1.markdown(md_escape(downloads.get_resource(name).title) + (f" · {state}" if state else ""))
    c1.caption(caption)
    if fetch:
        fetch_button(name, place, c2)


def downloads_list(place: str = "fetch") -> None:
    """Every resource core.downloads knows, weights then data sets: here (size, place) or missing, with a Fetch
    button per missing one. Not for visitors of a read-only server (it shows server paths)."""
    show_fetch_message(place)
    for kind, heading in (("weights", "ImageNet weights (transfer runs)"), ("data", "Training data sets")):
        st.markdown(f"**{heading}**")
        for row in downloads.status(kind):
            resource_row(row["name"], place, resource_place(row), resource_state(row), fetch=not row["present"])
