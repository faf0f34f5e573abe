"""Compare: an automatic label source against a reference — human labels, or another automatic source (MC vs
a judge vs a PRM, no humans needed) — and annotators against each other."""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import pandas as pd
import streamlit as st

from core.views.compare import (
    align_values, annotator_names, compare, fingerprint, inter_annotator, is_human_reference, labelled_steps,
    rating_rows, reference_names, reference_steps, remembered, source_names, source_values, uses_threshold, values_key,
)  # fmt: skip
from core.views.charts import calibration_chart, confusion_chart, position_chart, threshold_chart
from core.views.prm import agreement_kept, is_prm_source, outcome_rows, step_level_rows, threshold_choice
from core.views.explore import dataset_names
from core.errors import StepScopeError
from core.views.annotate import error_taxonomy, set_error_taxonomy
from core.views.charts import category_position_chart, confidence_chart, dwell_chart
from core.views.latents import (
    gold_from_annotator, latent_rows, latent_views, per_annotator,
)  # fmt: skip
from core.views.access import EDIT_PROJECT
from core.views.demo import DEMO_ROLLOUTS, queue_compare_demo
from pages._access import act, allowed, open_store
from pages._demo import demo_study
from pages._shared import db_path, md, policy, stale_notice, store_for

store = open_store()
st.title("Compare")

# The page's figures are kept per data version (`version`: it changes with every label, rollout,
# verdict or trajectory change) in this process and beside the database (`remembered`,
# core.store.disk_cache), so a new server process shows an unchanged database's figures without
# reading its labels again; after a change, figures that take a while are shown as they were
# (`stale` says so at the top) while the current ones are computed in the background. The compact
# arrays several figures read (ratings, steps, a source's values) are kept on the store for the
# data version (`memoized`), not in Streamlit's caches, which any client can clear.
stale = stale_notice()


def cached_ratings(path: str, dataset: str | None, first: bool = False):
    """Every rating with its latents (arrays, read-only), read once for the steps and the latents."""
    return store_for(path).memoized(("ratings", dataset, first), lambda: rating_rows(store_for(path), dataset, first))


def cached_steps(path: str, dataset: str | None, first: bool = False):
    """The labelled steps (arrays, shared read-only: not copied per rerun) for one state of the database."""
    return store_for(path).memoized(("labelled steps", dataset, first), lambda: labelled_steps(
        store_for(path), dataset, first, cached_ratings(path, dataset, first)))


def cached_values(path: str, source: str, policy_name: str, every_step: bool = False):
    """(step ids, numbers) of one automatic source: one query, shared by sources with the same numbers;
    `every_step`: on unrated steps too (what an automatic reference needs)."""
    key = values_key(source)
    return store_for(path).memoized(("values", key, policy_name, every_step),
                                    lambda: source_values(store_for(path), key, policy_name, every_step))


def values_for(path: str, source: str, policy_name: str, step_ids, every_step: bool = False):
    return align_values(*cached_values(path, source, policy_name, every_step), step_ids)


def cached_reference_steps(path: str, dataset: str | None, reference: str, policy_name: str, threshold: float):
    """An automatic reference's labels (arrays, shared read-only) on every step it has a number for."""
    return store_for(path).memoized(("reference steps", dataset, reference, policy_name, threshold), lambda: (
        reference_steps(store_for(path), reference, policy_name, threshold, dataset,
                        cached_values(path, reference, policy_name, True))))  # fmt: skip


def units(path: str, dataset: str | None, reference: str, policy_name: str, threshold: float, first: bool,
          automatic: bool):  # fmt: skip
    """The steps compared, with the reference's labels: the rated steps, or an automatic reference's."""
    if automatic:
        return cached_reference_steps(path, dataset, reference, policy_name, threshold)
    return cached_steps(path, dataset, first)


def cached_summary(path: str, dataset: str | None, version: tuple, first: bool = False):
    """(rated steps, annotator names): what the page needs of the labels before any figure."""
    def compute():
        steps = cached_steps(path, dataset, first)
        return len(steps), annotator_names(steps)

    return remembered(store_for(path), "compare-summary", (dataset, first), version, compute, stale)


def cached_comparison(path: str, dataset: str | None, source: str, reference: str, policy_name: str,
                      threshold: float, version: tuple, first: bool = False, automatic: bool = False):  # fmt: skip
    def compute():
        steps = units(path, dataset, reference, policy_name, threshold, first, automatic)
        values = values_for(path, source, policy_name, steps.step_id, automatic)
        return compare(store_for(path), steps, source, reference, policy_name, threshold, values)

    key = (dataset, source, reference, policy_name, threshold, first, automatic)
    return remembered(store_for(path), "compare", key, version, compute, stale)


def cached_agreement(path: str, dataset: str | None, version: tuple, first: bool = False):
    return remembered(store_for(path), "compare-annotators", (dataset, first), version,
                      lambda: inter_annotator(cached_steps(path, dataset, first)), stale)


def fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


cols = st.columns([2, 2, 2, 2])
dataset = cols[0].selectbox("Dataset", ["any", *dataset_names(store)], key="cmp_dataset")
dataset = None if dataset == "any" else dataset
version = fingerprint(store)
with st.spinner("Reading the labels…", show_time=True):  # shown only if it takes over half a second
    labelled = bool(cached_summary(db_path(), dataset, version)[0])
first = labelled and st.radio(  # offered where there are human labels
    "Labels", ["final", "first"], horizontal=True, key="cmp_which",
    help="each annotator's label as it is now, or the first one they gave (before any edit)") == "first"
rated, annotators = cached_summary(db_path(), dataset, version, first)
if not rated:
    st.info("No human labels yet: label some steps on the Annotate page, or compare two automatic label sources "
            "(MC, a judge, a PRM, a probe) with each other below.")
sources = source_names(store)
source = cols[1].selectbox("Automatic labels", sources, key="cmp_source",
                           help="mc-soft: MC value ≥ threshold · mc-hard: any rollout reached the answer · "
                                "judge / probe / orm: its step verdict's P(yes) ≥ 0.5 · prm: its score ≥ threshold")  # fmt: skip
reference = cols[2].selectbox("Reference labels", reference_names(sources, annotators, source), key="cmp_human",
                              help="majority: more than half of the annotators say fine (a tie is wrong) · "
                                   "consensus: all agree (steps they disagree on are left out) · an annotator · "
                                   "or another automatic source, read as on the left")  # fmt: skip
automatic = not is_human_reference(reference, annotators)
threshold = cols[3].slider("Threshold (MC soft, PRM)", 0.0, 1.0, 0.5, 0.05, key="cmp_threshold",
                           disabled=not (uses_threshold(source) or (automatic and uses_threshold(reference))),
                           help="a step at or above it is fine (on either side); for a PRM, see the threshold chosen "
                                "on held-out problems below")  # fmt: skip
st.caption(md(f"Policy for MC values: {policy()}") + " · " + (
    "the unit is a step both sources labelled." if automatic else "a human 0 or +1 counts as fine, −1 as wrong."))

with st.spinner(md(f"Comparing {source} with {reference}…"), show_time=True):
    result = cached_comparison(db_path(), dataset, source, reference, policy(), threshold, version, first, automatic)
if result.n == 0:
    st.warning(f"No step has both a label from {md(reference)} and a value from {md(source)} ({result.missing} steps "
               f"labelled by {md(reference)} have no value).")
    if not rated:
        demo_study(store, queue_compare_demo, f"New here? A demo study: the policy's Monte Carlo values ({DEMO_ROLLOUTS} "
                   "rollouts per step) and its own step verdicts on the hand-written sample solutions (three carry a "
                   "deliberate error); this page then measures the judge against the MC labels. Minutes on a CPU.",
                   key="cmp_demo")  # fmt: skip
    st.stop()
kappa = result.kappa
metric_cols = st.columns(7)
metric_cols[0].metric("Steps compared", result.n,
                      help=f"{result.missing} steps labelled by the reference have no value from this source")
metric_cols[1].metric("Accuracy", fmt(result.accuracy))
metric_cols[2].metric("Cohen's kappa", fmt(kappa.value if kappa else None),
                      help="with its 95% interval (statsmodels, asymptotic)")
metric_cols[2].caption(f"95% interval [{fmt(kappa.low)}, {fmt(kappa.high)}]" if kappa and kappa.low is not None else "")
metric_cols[3].metric("AUROC", fmt(result.auroc), help="the source's score against the reference label")
pb = result.processbench
metric_cols[4].metric("ProcessBench F1", fmt(pb.f1 if pb else None),
                      help="first-error F1 over trajectories whose compared steps start at step 0 without gaps")
metric_cols[5].metric("Accuracy on erroneous", fmt(pb.error_accuracy if pb else None),
                      help=f"the first error found exactly, over {pb.n_error if pb else 0} trajectories with one")
metric_cols[6].metric("Accuracy on correct", fmt(pb.correct_accuracy if pb else None),
                      help=f"no error found, over {pb.n_correct if pb else 0} trajectories without one")

left, middle, right = st.columns(3)
with left:
    st.subheader("Confusion")
    st.vega_lite_chart(confusion_chart(result.confusion, reference), width="stretch")
with middle:
    st.subheader("Calibration")
    st.vega_lite_chart(calibration_chart(result.calibration, reference if automatic else "the human"), width="stretch")
    st.caption(f"expected calibration error {fmt(result.ece, 3)}")
with right:
    st.subheader("By step position")
    st.vega_lite_chart(position_chart(result.by_position), width="stretch")

def cached_threshold(path: str, dataset: str | None, source: str, reference: str, version: tuple, first: bool,
                     automatic: bool, policy_name: str, threshold: float):  # fmt: skip
    """The PRM threshold chosen against the reference's first errors (an automatic reference's labels
    depend on the policy and the threshold, so they are part of its key)."""
    def compute():
        steps = units(path, dataset, reference, policy_name, threshold, first, automatic)
        return threshold_choice(store_for(path), steps, source, reference,
                                values_for(path, source, "", steps.step_id, automatic))  # fmt: skip

    key = (dataset, source, reference, first, *((policy_name, threshold) if automatic else ()))
    return remembered(store_for(path), "compare-threshold", key, version, compute, stale)


def cached_agreement_kept(path: str, source: str, policy_name: str, version: tuple):
    return remembered(store_for(path), "compare-mc-agreement", (source, policy_name), version,
                      lambda: agreement_kept(store_for(path), source, policy_name), stale)


def prm_section() -> None:
    """A scalar PRM's threshold, chosen where ProcessBench F1 is best on the train half of the
    problems and reported on the test half."""
    st.subheader(md(f"Threshold for {source}"))
    choice = cached_threshold(db_path(), dataset, source, reference, version, first, automatic, policy(), threshold)
    counts = choice.trajectories
    if choice.threshold is None:
        st.caption(f"No threshold chosen: the train split ({counts['train']} trajectories) needs trajectories with "
                   "and without an error the reference marks, each labelled from step 0.")
    else:
        cells = st.columns(4)
        cells[0].metric("Chosen threshold (train problems)", f"{choice.threshold:.2f}")
        test = choice.test
        cells[1].metric("Held-out F1", fmt(test.f1 if test else None), help=f"{counts['test']} test trajectories")
        cells[2].metric("Held-out accuracy on erroneous", fmt(test.error_accuracy if test else None))
        cells[3].metric("Held-out accuracy on correct", fmt(test.correct_accuracy if test else None))
    st.vega_lite_chart(threshold_chart(choice.rows, choice.threshold), width="stretch")
    st.caption(f"Split by problem (core.splits): {counts['train']} train, {counts['test']} test trajectories.")


def agreement_note() -> None:
    kept = cached_agreement_kept(db_path(), source, policy(), version)
    if kept.kept_fraction is None:
        st.caption(md(f"MC-agreement labels with {source}: none ({kept.problem or 'no steps with both labels'})."))
    else:
        st.caption(md(f"MC-agreement labels (MC hard of {policy()} kept where {source} agrees): "
                      f"{kept.kept_fraction:.1%} kept of {kept.compared} steps with both labels."))


if source not in ("mc-soft", "mc-hard"):
    agreement_note()
if is_prm_source(source):
    prm_section()

st.subheader(f"Disagreements ({result.disagreement_count})")
if result.disagreements:
    if result.disagreement_count > len(result.disagreements):
        st.caption(f"the first {len(result.disagreements)} by trajectory and step")
    st.dataframe(
        pd.DataFrame(result.disagreements), hide_index=True, width="stretch",
        column_config={"explore": st.column_config.LinkColumn("explore", display_text="open in Explore")},
    )  # fmt: skip

def cached_sources(path: str, dataset: str | None, reference: str, policy_name: str, threshold: float, version: tuple,
                   first: bool, automatic: bool):  # fmt: skip
    def compute():
        steps = units(path, dataset, reference, policy_name, threshold, first, automatic)
        values = {name: values_for(path, name, policy_name, steps.step_id, automatic)
                  for name in source_names(store_for(path))}  # fmt: skip
        return step_level_rows(store_for(path), steps, reference, policy_name, threshold, values)

    key = (dataset, reference, policy_name, threshold, first, automatic)
    return remembered(store_for(path), "compare-sources", key, version, compute, stale)


def cached_outcomes(path: str, dataset: str | None, version: tuple):
    return remembered(store_for(path), "compare-outcomes", (dataset,), version,
                      lambda: outcome_rows(store_for(path), dataset), stale)


every_source = cached_sources(db_path(), dataset, reference, policy(), threshold, version, first, automatic)
outcomes = cached_outcomes(db_path(), dataset, version)
with st.expander(md(f"Every step source against {reference if automatic else 'these human labels'}")):
    st.dataframe(pd.DataFrame(every_source), hide_index=True, width="stretch")
if outcomes:
    with st.expander("PRMs at outcome level: each aggregation against the final answer"):
        st.dataframe(pd.DataFrame(outcomes), hide_index=True, width="stretch")


def annotators_section() -> None:
    agreement = cached_agreement(db_path(), dataset, version, first)
    st.subheader("Agreement between annotators")
    st.metric("Krippendorff's alpha (ordinal)", fmt(agreement.alpha),
              help=f"over {agreement.units} steps rated by two or more")  # fmt: skip
    if agreement.pairs:
        st.dataframe(pd.DataFrame(agreement.pairs), hide_index=True)
    else:
        st.caption("No step was rated by two annotators yet.")


def cached_latents(path: str, source: str, policy_name: str, threshold: float, dataset: str | None, version: tuple):
    """What Compare shows of the latents (small tables), from every rating's latents and its
    agreement with the source at the threshold."""
    def compute():
        return latent_views(latent_rows(store_for(path), source, policy_name, threshold, dataset,
                                        cached_values(path, source, policy_name),
                                        cached_ratings(path, dataset, False)))

    return remembered(store_for(path), "compare-latents", (source, policy_name, threshold, dataset), version, compute,
                      stale)


def latents_section() -> None:
    """Human latents against the chosen automatic source; per-annotator calibration and gold
    accuracy (for the organiser: the Annotate page never shows gold results)."""
    st.subheader("Human latents")
    views = cached_latents(db_path(), source, policy(), threshold, dataset, version)
    left, middle, right = st.columns(3)
    with left:
        st.caption(md(f"Confidence: agreement with {source} (bars), mean MC interval width (points)"))
        st.vega_lite_chart(confidence_chart(views["by_confidence"]), width="stretch")
    with middle:
        st.caption(md(f"Dwell time: disagreement with {source}"))
        st.vega_lite_chart(dwell_chart(views["by_dwell"]), width="stretch")
    with right:
        st.caption("Error categories of −1 steps by position")
        st.vega_lite_chart(category_position_chart(views["categories_by_position"]), width="stretch")
    if allowed(EDIT_PROJECT):  # gold results are the organiser's: not computed, so not sent, for anyone else
        st.caption("Per annotator (organiser view): calibration and accuracy on gold items")
        st.dataframe(pd.DataFrame(per_annotator(views["annotators"], store.gold_answers())), hide_index=True,
                     width="stretch")  # fmt: skip


def organiser_section() -> None:
    with st.expander("Organiser: gold items and error taxonomy"):
        cols = st.columns([1, 2, 1])
        tid = cols[0].number_input("Trajectory id", 1, 10**12, key="cmp_gold_tid")
        expert = cols[1].selectbox("Expected labels from", annotators, key="cmp_gold_from")
        if cols[2].button("Mark as gold", key="cmp_gold_mark") and act(EDIT_PROJECT):
            try:
                count = gold_from_annotator(store, int(tid), expert)
                st.success(f"trajectory {int(tid)} is a gold item with {count} expected step labels")
            except StepScopeError as error:
                st.error(md(error))
        st.caption(md(f"Gold trajectories: {', '.join(map(str, store.gold_trajectory_ids())) or 'none'}"))
        typed = st.text_input("Error categories (comma-separated; empty for the default)",
                              value=", ".join(error_taxonomy(store)), key="cmp_taxonomy", max_chars=2000)
        if st.button("Save categories", key="cmp_taxonomy_save") and act(EDIT_PROJECT):
            try:
                st.success(md("categories: " + ", ".join(set_error_taxonomy(store, typed))))
            except StepScopeError as error:
                st.error(md(error))


if rated:  # the human side: annotators against each other, their latents, gold items
    annotators_section()
    latents_section()
    if allowed(EDIT_PROJECT):
        organiser_section()
