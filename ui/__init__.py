"""Streamlit-side helpers: cached resources and small renderers shared by pages (core never imports Streamlit)."""
