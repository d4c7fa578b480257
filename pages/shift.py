"""Domain shift: what differs between MNIST and a target set, before and after reframing, in numbers and words."""
import streamlit as st

from core import report, shift
from core.coverage import DEFAULT_TARGET
from core.errors import DigitLabError
from core.reframing import DEFAULT_METHOD, METHODS
from core.wording import pct, plural
from ui import cache, pickers, render, shift_view
from ui.nav import ensure_app_navigation
from ui.safe import md_escape, show_error, shown_path

ensure_app_navigation()

st.title("Domain shift")
st.caption("What differs between MNIST, the source the model learned from, and a target data set: measured on "
           "every image **before** reframing (the image as given, in gray, resized to 28x28) and **after** it (the "
           "28x28 input the model gets), for both domains.")

c1, c2 = st.columns([3, 2])
source = c1.selectbox("Target data set", list(pickers.SOURCES), format_func=pickers.SOURCES.get, key="source")
method = c2.radio("Reframing", METHODS, index=METHODS.index(DEFAULT_METHOD), horizontal=True, key="method")

try:
    dataset = pickers.target_dataset(source)
except DigitLabError as e:
    show_error(e)
    st.stop()
if dataset is None:
    st.stop()

source_ds = shift_view.source_dataset()
st.caption(f"Source: {md_escape(source_ds.provenance)}. Target: {md_escape(dataset.provenance)}.")
if source == "mnist-test":
    st.info("The target is the source itself: every gap should be near zero. Pick another target to see a shift.")

placeholder = st.empty()
with placeholder.status("Measuring image properties...", expanded=False) as status:
    status.update(label=f"Measuring {len(source_ds):,} MNIST digits before and after `{method}` reframing (1/2)...")
    src = shift_view.source_properties(method)
    status.update(label=f"Measuring {plural(len(dataset), 'target image')} before and after `{method}` "
                        "reframing (2/2)...")
    tgt = shift_view.target_properties(dataset, shift_view.dataset_key(dataset), method)
    # chance: as many MNIST digits as the target has images, drawn at random
    drawn, one = f"{plural(len(tgt), 'MNIST digit')} drawn at random", len(tgt) == 1
    if len(tgt):
        status.update(label=f"Measuring how much {drawn} {'differs' if one else 'differ'} by chance...")
        chance = shift_view.chance_levels(method, len(tgt))
placeholder.empty()
if len(tgt) == 0:
    st.error("No image of this data set has ink after reframing: there is nothing to measure.")
    st.stop()
result = shift.analyse(src, tgt, chance)

m = st.columns(4)
m[0].metric("MNIST digits", f"{len(src):,}")
m[1].metric("Target images", f"{len(tgt):,}",
            help=f"{len(tgt.dropped)} left out (blank after reframing, or unreadable)" if tgt.dropped else None)
shrunk = (result.distances["verdict"].isin(["closed", "narrowed"])).sum()
left = result.distances["open_after"].sum()
m[2].metric("Gaps shrunk", f"{shrunk} of {len(result.distances)}",
            help="Properties whose gap reframing closed, or narrowed to half or less.")
m[3].metric("Gaps still open", f"{left} of {len(result.distances)}",
            help=f"Properties whose distance after reframing is at least {shift.NOTICEABLE} source standard "
                 f"deviations, and more than {drawn} {'shows' if one else 'show'} by chance; a gap narrowed by "
                 "reframing can still be one.")
unsure = int((result.distances["verdict"] == "unsure").sum())
if unsure:
    st.caption(f"**Unsure** for {unsure} of {len(result.distances)} properties: "
               f"{plural(len(tgt), 'target image')} {'is' if len(tgt) == 1 else 'are'} too few to tell a gap "
               "there from chance (the table's *chance* column). Neither count above includes them.")
if tgt.dropped:
    with st.expander(f"{plural(len(tgt.dropped), 'target image')} left out"):
        st.text("\n".join(tgt.dropped[:500]))

st.subheader("In plain words")
st.markdown("\n".join(f"- {s}" for s in result.explanation))

st.subheader("Distance per property")
st.caption("Wasserstein distance (earth mover's distance) between the source's and the target's values, in the "
           "property's unit, and divided by the spread (standard deviation) of MNIST as given, so that properties "
           "compare; where MNIST hardly varies, by a minimum instead (paper brightness 0.05: every MNIST background "
           "is black; digit size 0.5 px: nearly every MNIST digit is 20 px on its longer side)."
           f" Verdicts: a gap under {shift.NOTICEABLE} standard deviations is none; *closed* ends under "
           f"it; *narrowed* at most {pct(shift.NARROWED, 0)} of before; *widened* at least {pct(shift.WIDENED, 0)}; "
           f"*unsure*: whether a gap is left cannot be told, the distance after reframing being within *chance* "
           f"(what {drawn} {'shows' if one else 'show'}) or chance itself over {shift.NOTICEABLE}.")
# Units and the change are in the CSV and under "How each property is measured": the table fits 1024 px.
chance_how = f"the {shift.CHANCE_PERCENTILE}th percentile over {shift.CHANCE_DRAWS} such draws"
# Chance after reframing only, which decides *unsure* (the one before is in the CSV): eight columns did not fit.
table = result.distances[["label", "before", "after", "scaled_before", "scaled_after", "chance_after", "verdict"]]
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "label": st.column_config.TextColumn("property"),
    "before": st.column_config.NumberColumn("before", format="%.3f",
                                            help="Distance before reframing, in the property's unit"),
    "after": st.column_config.NumberColumn("after", format="%.3f",
                                           help="Distance after reframing, in the property's unit"),
    "scaled_before": st.column_config.NumberColumn("before (SD)", format="%.2f",
                                                   help="Before, in standard deviations of MNIST as given"),
    "scaled_after": st.column_config.NumberColumn("after (SD)", format="%.2f",
                                                  help="After, in standard deviations of MNIST as given"),
    "chance_after": st.column_config.NumberColumn(
        "chance (SD)", format="%.2f", help=f"After reframing, the distance from MNIST of {drawn}, "
                                           f"with no shift at all ({chance_how}): a smaller gap may be "
                                           "chance. The same before reframing is in the CSV."),
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
st.caption("**Blue**: MNIST (source). **Orange**: the target (brown where the two overlap). Share of each domain's "
           "images per bin; both views of "
           "a property share bins and axes. The axes leave off at most the most extreme 0.5 % of each domain on "
           "either side.")
long = result.long_table()
props = list(shift.PROPERTIES)
for i in range(0, len(props), 2):
    cols = st.columns(2)
    for col, prop in zip(cols, props[i : i + 2]):
        col.vega_lite_chart(shift_view.histograms(long, prop), width="stretch", key=f"hist_{prop}")

st.subheader("What the model sees: its penultimate-layer features")
st.caption("The input of the model's last Dense layer (the features its classifier separates) for a stratified "
           "sample of each domain, both reframed, mapped to 2-D. Where the target's points sit apart from MNIST's, "
           "the model meets inputs unlike those it learned from.")
f1, f2 = st.columns([3, 2], vertical_alignment="bottom")
colour_by = f1.segmented_control("Colour by", list(shift_view.COLOUR_BY), default="domain", key="colour_by") \
    or "domain"
per_domain = f2.select_slider("Images per domain", [250, 500, 1000], value=1000, key="per_domain",
                              help="A stratified sample of at most this many images of each domain.")
want_tsne = st.toggle("Also draw a t-SNE map (seconds; longer on a busy server)", key="tsne")
predictor = cache.predictor()
target_key = shift_view.dataset_key(dataset)
try:
    with st.spinner("Reading the model's features..."):
        sample, feats = shift_view.features(predictor, "reused", dataset, target_key, method, per_domain,
                                            src.index, tgt.index)
        pca = shift_view.embedding(feats, "reused", target_key, method, per_domain, "pca")
    tsne = None
    if want_tsne:
        working = st.empty()
        with working.status(f"t-SNE of {len(sample):,} images (perplexity 30, random_state 0)..."):
            tsne = shift_view.embedding(feats, "reused", target_key, method, per_domain, "tsne")
        working.empty()
except DigitLabError as e:
    show_error(e)
    st.stop()
acc = sample.groupby("domain")["correct"].mean()
n_target = int((sample["domain"] == "target").sum())
st.caption(f"{(sample['domain'] == 'source').sum():,} MNIST and {plural(n_target, 'target image')}, "
           f"{feats.shape[1]:,} features each. Right on this sample: MNIST {pct(acc.get('source', 0))}, "
           f"target {pct(acc.get('target', 0))}.")
maps = st.columns(2)
maps[0].vega_lite_chart(shift_view.feature_scatter(sample, pca, colour_by, "PCA (first two components)"),
                        width="stretch", key="map_pca")
if tsne is not None:
    maps[1].vega_lite_chart(shift_view.feature_scatter(sample, tsne, colour_by, "t-SNE"), width="stretch",
                            key="map_tsne")
else:
    maps[1].info("Turn on **t-SNE** (above) for a map that keeps neighbourhoods: images the model finds alike "
                 "land together.")

st.subheader("What labelled target digits would buy")
adapted = pickers.adaptation_result(shift_view.adaptations(dataset.name, method), key="shift_adaptation",
                                    scope="this data set (the shipped model's first)")
if adapted is None and source == "mnist-test":
    st.caption("The target is MNIST itself, the model's own domain: there is nothing to adapt it to.")
elif adapted is None:
    st.caption("No few-shot adaptation has been saved for this data set yet. Run one on the Few-shot adaptation "
               f"page, or in the background: `python -m core adapt --target "
               f"{source if source != 'upload' else 'PATH.zip'} --background`; "
               "its learning curve then appears here: what reframing cannot close, a few labels per class can.")
else:
    try:
        st.vega_lite_chart(render.learning_curve(shift_view.adaptation_summary(adapted),
                                                 title="Accuracy on the target's test part",
                                                 baseline=adapted["zero_shot"]), width="stretch", key="kshot")
        # the report's sentence: the pages and the HTML report quote the same k and strategy
        st.markdown(md_escape(report.adaptation_sentence(adapted, DEFAULT_TARGET, dataset.name)))
        st.caption(f"Adaptation {md_escape(adapted.get('id', ''))}: {adapted['n_test']:,} test images, reframing "
                   f"`{adapted['reframing']}`, model {md_escape(shown_path(adapted.get('model')))}; the mean over "
                   "seeds, with a band of ± 1 standard deviation where there are several.")
    except (KeyError, TypeError, ValueError, IndexError):  # a result written by another version: say so, go on
        st.caption("The saved adaptation result for this data set could not be read by this version.")
