"""Domain shift: what differs between MNIST and a target set, before and after reframing, in numbers and words."""
import streamlit as st

from core import shift
from core.errors import DigitLabError
from core.reframing import DEFAULT_METHOD, METHODS
from ui import cache, shift_view
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, show_error

ensure_app_navigation()

st.title("Domain shift")
st.caption("What differs between MNIST, the source the model learned from, and a target data set: measured on "
           "every image **before** reframing (the image as given, in gray, resized to 28x28) and **after** it (the "
           "28x28 input the model gets), for both domains.")

SOURCES = {"sklearn-digits": "scikit-learn digits (8x8 scans)", "mnist-test": "MNIST test set (source domain)",
           "collected": "my drawn digits", "upload": "upload a .zip"}
c1, c2 = st.columns([2, 1])
source = c1.selectbox("Target data set", list(SOURCES), format_func=SOURCES.get, key="source")
method = c2.radio("Reframing", METHODS, index=METHODS.index(DEFAULT_METHOD), horizontal=True, key="method")

try:
    if source == "upload":
        upload = st.file_uploader("A .zip of images in folders 0..9 (any depth, e.g. mydigits/7/scan12.png)",
                                  type=["zip"], key="zip")
        if upload is None:
            st.info("Upload a .zip whose folders 0..9 hold PNG, JPEG, BMP or TIFF images of those digits.")
            st.stop()
        dataset = cache.uploaded_target(upload.getvalue(), upload.name)
    else:
        dataset = cache.target(source)
except DigitLabError as e:
    show_error(e)
    st.stop()

source_ds = shift_view.source_dataset()
st.caption(f"Source: {md_escape(source_ds.provenance)}. Target: {md_escape(dataset.provenance)}.")
if source == "mnist-test":
    st.info("The target is the source itself: every gap should be near zero. Pick another target to see a shift.")

placeholder = st.empty()
with placeholder.status("Measuring image properties...", expanded=False) as status:
    status.update(label=f"Measuring {len(source_ds):,} MNIST digits before and after `{method}` reframing (1/2)...")
    src = shift_view.source_properties(method)
    status.update(label=f"Measuring {len(dataset):,} target images before and after `{method}` reframing (2/2)...")
    tgt = shift_view.target_properties(dataset, shift_view.dataset_key(dataset), method)
placeholder.empty()
if len(tgt) == 0:
    st.error("No image of this data set has ink after reframing: there is nothing to measure.")
    st.stop()
result = shift.analyse(src, tgt)

m = st.columns(4)
m[0].metric("MNIST digits", f"{len(src):,}")
m[1].metric("Target images", f"{len(tgt):,}",
            help=f"{len(tgt.dropped)} left out (blank after reframing, or unreadable)" if tgt.dropped else None)
closed = (result.distances["verdict"].isin(["closed", "narrowed"])).sum()
left = (result.distances["scaled_after"] >= shift.NOTICEABLE).sum()
m[2].metric("Gaps closed or narrowed", f"{closed} of {len(result.distances)}")
m[3].metric("Gaps left after reframing", f"{left} of {len(result.distances)}",
            help=f"Properties whose distance after reframing is at least {shift.NOTICEABLE} source standard "
                 "deviations.")
if tgt.dropped:
    with st.expander(f"{len(tgt.dropped)} target images left out"):
        st.text("\n".join(tgt.dropped[:500]))

st.subheader("In plain words")
st.markdown("\n".join(f"- {s}" for s in result.explanation))

st.subheader("Distance per property")
st.caption("Wasserstein distance (earth mover's distance) between the source's and the target's values, in the "
           "property's unit, and divided by the spread (standard deviation) of MNIST as given, so that properties "
           f"compare. Verdicts: a gap under {shift.NOTICEABLE} standard deviations is none; *closed* ends under "
           f"it; *narrowed* at most {shift.NARROWED:.0%} of before; *widened* at least {shift.WIDENED:.0%}.")
table = result.distances[["label", "unit", "before", "after", "scaled_before", "scaled_after", "change", "verdict"]]
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "label": st.column_config.TextColumn("property"),
    "before": st.column_config.NumberColumn("before", format="%.3f", help="distance before reframing (unit)"),
    "after": st.column_config.NumberColumn("after", format="%.3f", help="distance after reframing (unit)"),
    "scaled_before": st.column_config.NumberColumn("before (SD)", format="%.2f"),
    "scaled_after": st.column_config.NumberColumn("after (SD)", format="%.2f"),
    "change": st.column_config.NumberColumn("change (SD)", format="%+.2f"),
})
st.download_button("Download distances (CSV)", result.distances.to_csv(index=False),
                   f"shift-{result.target.name}-{method}.csv", "text/csv", key="dl_distances")
with st.expander("How each property is measured"):
    st.markdown("\n".join(f"- **{label}** ({unit}): {what}." for label, unit, what in shift.PROPERTIES.values()))
    st.markdown("*Before* reframing is the image as given: gray, resized to 28x28, nothing else. Its ink is read "
                "as the distance from the paper (the image is inverted where its border is light), so that the "
                "paper's polarity counts once, in *paper brightness*. Grey levels are counted at the image's own "
                "size: resizing invents levels the scan never had.")

st.subheader("Distributions, before and after reframing")
long = result.long_table()
props = list(shift.PROPERTIES)
for i in range(0, len(props), 2):
    cols = st.columns(2)
    for col, prop in zip(cols, props[i : i + 2]):
        col.plotly_chart(shift_view.histograms(long, prop), width="stretch", key=f"hist_{prop}")

st.subheader("What the model sees: its penultimate-layer features")
st.caption("The input of the model's last Dense layer (the features its classifier separates) for a stratified "
           "sample of each domain, both reframed, mapped to 2-D. Where the target's points sit apart from MNIST's, "
           "the model meets inputs unlike those it learned from.")
f1, f2, f3 = st.columns([2, 2, 1])
colour_by = f1.segmented_control("Colour by", list(shift_view.COLOUR_BY), default="domain", key="colour_by") \
    or "domain"
per_domain = f2.select_slider("Images per domain", [250, 500, 1000], value=1000, key="per_domain",
                              help="A stratified sample of at most this many images of each domain.")
want_tsne = f3.toggle("t-SNE", key="tsne", help="t-SNE takes seconds to a minute on a busy 2-core server.")
predictor = cache.predictor()
try:
    with st.spinner("Reading the model's features..."):
        sample, feats = shift_view.features(predictor, "reused", dataset, shift_view.dataset_key(dataset), method,
                                            per_domain, src.index, tgt.index)
        pca = shift_view.embedding(feats, "reused", shift_view.dataset_key(dataset), method, per_domain, "pca")
except DigitLabError as e:
    show_error(e)
    st.stop()
acc = sample.groupby("domain")["correct"].mean()
width = feats.shape[1]
st.caption(f"{(sample['domain'] == 'source').sum():,} MNIST and {(sample['domain'] == 'target').sum():,} target "
           f"images, {width:,} features each. Right on this sample: MNIST {acc.get('source', 0):.1%}, target "
           f"{acc.get('target', 0):.1%}.")
maps = st.columns(2) if want_tsne else [st.container()]
maps[0].plotly_chart(shift_view.feature_scatter(sample, pca, colour_by, "PCA (first two components)"),
                     width="stretch", key="map_pca")
if want_tsne:
    with maps[1]:
        with st.status(f"t-SNE of {len(sample):,} images (perplexity 30, random_state 0)...") as tsne_status:
            tsne = shift_view.embedding(feats, "reused", shift_view.dataset_key(dataset), method, per_domain,
                                        "tsne")
            tsne_status.update(label="t-SNE done", state="complete")
        st.plotly_chart(shift_view.feature_scatter(sample, tsne, colour_by, "t-SNE"), width="stretch",
                        key="map_tsne")
else:
    st.caption("Turn on t-SNE for a map that keeps neighbourhoods (on this sample; it takes seconds or more).")
