"""Best-of-N: the same samples, better judges — pass@k, majority vote, best-of-k and weighted majority vote per
verifier (judges, ORMs, and PRMs under the chosen aggregations), over any sample set: a policy's own solutions or
imported ones (one model's, or every model's of a source)."""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import pandas as pd
import streamlit as st

from core.prm import AGGREGATIONS, prm_judges
from core.views.best_of_n import fingerprint, judges_of, remembered, sample_set_of, sample_sets, sample_table
from core.views.prm import curves_with_weighted_vote, verifier_info_with_prms, with_prm_scores
from core.views.charts import best_of_n_chart
from core.views.explore import dataset_names
from core.views.demo import DEMO_SAMPLES, queue_best_of_n_demo
from pages._access import open_store
from pages._demo import demo_study
from pages._shared import db_path, store_for


@st.cache_data(max_entries=16, show_spinner=False)
def samples(path: str, chosen: tuple, dataset: str | None, split: str | None, aggregations: tuple[str, ...],
            version: tuple):  # fmt: skip
    """The sample set's samples (arrays; `chosen` is its (source, model) key) with outcome verdicts and each
    PRM's solution score per aggregation, for one database state (`version` changes when trajectories or
    verdicts are added)."""
    source, model = chosen
    found = sample_table(store_for(path), model, dataset, split, source=source)
    return with_prm_scores(store_for(path), found, aggregations, dataset) if aggregations else found


@st.cache_data(max_entries=32, show_spinner="Computing the curves…")
def cached_curves(path: str, chosen: tuple, dataset: str | None, split: str | None, max_k: int,
                  verifiers: tuple[str, ...], aggregations: tuple[str, ...], weighted: bool,
                  version: tuple):  # fmt: skip
    """Curves for one database state (kept beside the database too: core.store.disk_cache)."""
    key = (chosen, dataset, split, max_k, verifiers, aggregations, weighted)
    return remembered(store_for(path), "best-of-n-curves", key, version, lambda: curves_with_weighted_vote(
        samples(path, chosen, dataset, split, aggregations, version), max_k, list(verifiers),
        list(verifiers) if weighted else []))  # fmt: skip


@st.cache_data(max_entries=32)
def cached_judges(path: str, chosen: tuple, dataset: str | None, split: str | None, aggregations: tuple[str, ...],
                  version: tuple) -> list[str]:  # fmt: skip
    return remembered(store_for(path), "best-of-n-verifiers", (chosen, dataset, split, aggregations), version,
                      lambda: judges_of(samples(path, chosen, dataset, split, aggregations, version)))


@st.cache_data(max_entries=16, show_spinner=False)
def cached_sets(path: str, dataset: str | None, version: tuple):
    return remembered(store_for(path), "best-of-n-sets", (dataset,), version, lambda: sample_sets(store_for(path), dataset))


store = open_store()
st.title("Best-of-N")
st.caption("N solutions per problem — a policy's own, or imported ones — grouped by problem. pass@k is the oracle "
           "(any of k right); majority vote and best-of-k pick one of k; a weighted vote sums each answer's verifier "
           "scores. Means over problems with 95% bootstrap intervals over problems.")

cols = st.columns(4)
dataset = cols[0].selectbox("Dataset", ["any", *dataset_names(store)], key="bon_dataset")
dataset = None if dataset == "any" else dataset
sets = cached_sets(db_path(), dataset, fingerprint(store))
if not sets:
    st.info("No policy solutions yet, and no imported solutions with two or more graded ones per problem. Sample "
            "some on Jobs and data (Generate) or with `stepscope generate`, or import a model's solutions "
            "(`stepscope import --format model-solutions`, or jsonl with a source and a model); then judge them with "
            "an outcome judge to compare verifiers.")
    demo_study(store, queue_best_of_n_demo, f"New here? A demo study: {DEMO_SAMPLES} solutions from the policy to each "
               "sample problem; this page then shows pass@k and majority vote against k (judge them on Jobs and data "
               "for verifier curves). Minutes on a CPU.", key="bon_demo")  # fmt: skip
    st.stop()
chosen = cols[1].selectbox("Solutions", [s.key for s in sets], key="bon_set",
                           format_func=lambda key: sample_set_of(sets, key).describe(),
                           help="source · model: one model's solutions, or every model's of the source together")
splits = {"all problems": None, "test split": "test", "train split": "train"}
split = splits[cols[2].selectbox("Problems", list(splits), key="bon_split",
                                 help="Train/test split by problem (a synthetic problem's own, else by question "
                                      "hash): compare trained verifiers on the test split, which they never saw.")]  # fmt: skip
max_k = cols[3].number_input("Largest k", 1, 1024, 64, key="bon_max_k")

aggregations: tuple[str, ...] = ()
cols = st.columns([3, 2])
if prm_judges(store):
    aggregations = tuple(cols[0].multiselect(
        "PRM aggregation", AGGREGATIONS, default=["min"], key="bon_aggregations",
        help="A PRM's solution score from its step scores: the lowest (min), their product, the last step's, "
             "or their mean. Each PRM appears once per aggregation chosen."))  # fmt: skip
weighted = cols[1].checkbox("Weighted majority vote", value=True, key="bon_weighted",
                            help="for each chosen verifier: the answer whose samples' scores sum highest wins")
judges = cached_judges(db_path(), chosen, dataset, split, aggregations, fingerprint(store))
info = {v.judge: v for v in verifier_info_with_prms(store, judges)}
# Keyed by what it chooses from: another policy or split offers other verifiers.
verifiers = st.multiselect("Verifiers (best-of-k, weighted vote)", judges, default=judges,
                        key=f"bon_verifiers:{chosen}:{dataset}:{split}:{','.join(aggregations)}",
                        format_func=lambda j: f"{j} — {info[j].type}, base {info[j].base}")  # fmt: skip

points, largest = cached_curves(db_path(), chosen, dataset, split, int(max_k), tuple(verifiers), aggregations,
                                weighted, fingerprint(store))  # fmt: skip
if not points:
    st.warning("Every problem of this choice has fewer than two solutions in the set: nothing to choose between.")
    st.stop()
frame = pd.DataFrame([p.__dict__ for p in points])
st.text(f"{frame['problems'].max()} problems with at least {largest} solutions each; k up to {largest}.")
st.vega_lite_chart(best_of_n_chart(points), width="stretch")
st.dataframe(frame, hide_index=True, width="stretch")
if verifiers:
    st.caption("The verifiers, and the base model each was trained on (a prompted judge: its own model).")
    st.dataframe(pd.DataFrame([info[j].__dict__ for j in verifiers]), hide_index=True, width="stretch")
