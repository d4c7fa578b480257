"""My digits: the digits saved from the Draw page, counted per label, each one relabelled or deleted."""
import streamlit as st

from core.collected import CollectedDigit, counts, delete_collected, list_collected, relabel_collected, saved_at
from core.config import read_only
from core.errors import DigitLabError
from core.images import read_image
from core.wording import plural
from ui import render
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, read_only_note, show_error

ensure_app_navigation()

TILE_PX = 112  # a tile's width: the grid wraps as many per row as the screen holds
SHOWN = 12  # per label at first, newest first: a large collection still opens at once

st.title("My digits")
st.caption("The digits saved with their true label on the Draw & Reframe page: drawn, uploaded or examples. The "
           "Reused-model report evaluates them as a data set (\"my digits\"). A wrong label here makes a right "
           "answer look wrong there: relabel or delete it.")

# What the last relabel or delete did, kept across the rerun its callback triggers: a toast, seen wherever the
# page is scrolled; an error also stays at the top.
done = st.session_state.pop("my_digits_done", None)
if done:
    kind, text = done
    st.toast(text, icon=":material/check:" if kind == "ok" else ":material/error:")
    if kind != "ok":
        st.error(text)


def _relabel(digit: CollectedDigit) -> None:
    new = st.session_state[f"label-{digit.key}"]
    try:
        relabel_collected(digit.path, new)
        st.session_state["my_digits_done"] = ("ok", f"Moved {md_escape(digit.name)} from {digit.label} to {new}.")
    except DigitLabError as e:
        st.session_state["my_digits_done"] = ("error", md_escape(e))


def _delete(digit: CollectedDigit) -> None:
    try:
        delete_collected(digit.path)
        st.session_state["my_digits_done"] = ("ok", f"Deleted {md_escape(digit.name)} (labelled {digit.label}).")
    except DigitLabError as e:
        st.session_state["my_digits_done"] = ("error", md_escape(e))


try:
    digits = list_collected()
except DigitLabError as e:
    show_error(e)
    st.stop()
if not digits:
    st.info("No digits saved yet: draw one on the Draw & Reframe page, then use **Save to my digits** with its "
            "true label.")
    st.stop()

per_label = counts(digits)
missing = [d for d, n in per_label.items() if n == 0]
st.metric("Saved digits", f"{len(digits):,}")
st.vega_lite_chart(render.count_bars(per_label), width="stretch", key="counts")
if missing:
    st.caption(f"None yet labelled {', '.join(map(str, missing))}: the report then has no images of "
               f"{'that digit' if len(missing) == 1 else 'those digits'} to measure.")
editable = not read_only()
if editable:
    st.caption("Under each digit: pick another label to move it there, or delete it (you are asked first).")
else:  # a shared server: look, never change
    st.info(read_only_note("relabelling and deleting digits is turned off"))

for label in range(10):
    mine = [d for d in digits if d.label == label]
    if not mine:
        continue
    st.subheader(f"Labelled {label}", anchor=False)
    show_all = len(mine) <= SHOWN or st.toggle(f"Show all {plural(len(mine), 'digit')}",
                                               key=f"all-{label}")
    if not show_all:
        st.caption(f"The newest {SHOWN} of {len(mine)}.")
    grid = st.container(horizontal=True, gap="small")
    for digit in mine if show_all else mine[:SHOWN]:
        tile = grid.container(width=TILE_PX, gap="small")
        try:
            tile.image(render.framed(read_image(digit.path), TILE_PX), caption=saved_at(digit), clamp=True)
        except DigitLabError:
            tile.caption(f"{md_escape(digit.name)}: could not be read")
        if not editable:
            continue
        tile.selectbox(f"Label of {md_escape(digit.name)}", range(10), index=label, key=f"label-{digit.key}",
                       format_func=lambda d: f"label {d}", label_visibility="collapsed", on_change=_relabel,
                       args=(digit,))
        with tile.popover("Delete", icon=":material/delete:", width="stretch", key=f"delete-{digit.key}"):
            st.caption(f"Delete {md_escape(digit.name)}, labelled {label}, from this server? This cannot be "
                       "undone.")
            st.button("Delete it", type="primary", key=f"confirm-{digit.key}", on_click=_delete, args=(digit,))
