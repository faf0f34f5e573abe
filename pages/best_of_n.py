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
from core.views.test_time_compute import compute_chart, compute_curves, point_rows, policies
from core.views.test_time_compute import version as compute_version
from core.views.demo import DEMO_SAMPLES, queue_best_of_n_demo
from pages._access import open_store
from pages._demo import demo_study
from pages._shared import db_path, stale_notice, store_for


# The curves, verifiers and sample sets are kept per data version in this process and beside the
# database (`remembered`, core.store.disk_cache); after a change, those that take a while are shown
# as they were (`stale` says so at the top) while the current ones are computed in the background.
# The samples they read are kept on the store for the data version (`memoized`), not in Streamlit's
# caches (a background computation has no script run).
def samples(path: str, chosen: tuple, dataset: str | None, split: str | None, aggregations: tuple[str, ...]):
    """The sample set's samples (arrays; `chosen` is its (source, model) key) with outcome verdicts and each
    PRM's solution score per aggregation, for the current database state."""
    def read():
        source, model = chosen
        found = sample_table(store_for(path), model, dataset, split, source=source)
        return with_prm_scores(store_for(path), found, aggregations, dataset) if aggregations else found

    return store_for(path).memoized(("best-of-n samples", chosen, dataset, split, aggregations), read)


def cached_curves(path: str, chosen: tuple, dataset: str | None, split: str | None, max_k: int,
                  verifiers: tuple[str, ...], aggregations: tuple[str, ...], weighted: bool,
                  version: tuple):  # fmt: skip
    key = (chosen, dataset, split, max_k, verifiers, aggregations, weighted)
    return remembered(store_for(path), "best-of-n-curves", key, version, lambda: curves_with_weighted_vote(
        samples(path, chosen, dataset, split, aggregations), max_k, list(verifiers),
        list(verifiers) if weighted else []), stale)  # fmt: skip


def cached_judges(path: str, chosen: tuple, dataset: str | None, split: str | None, aggregations: tuple[str, ...],
                  version: tuple) -> list[str]:  # fmt: skip
    return remembered(store_for(path), "best-of-n-verifiers", (chosen, dataset, split, aggregations), version,
                      lambda: judges_of(samples(path, chosen, dataset, split, aggregations)), stale)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_compute(path: str, dataset: str | None, policy: str, scorer_tokens: bool, version: tuple):
    """The policy's search settings as points, its own samples as references, and the chart, for one
    database state (`version` changes when a search finishes or trajectories change)."""
    found = compute_curves(store_for(path), dataset, policy, scorer_tokens)
    return found, compute_chart(found) if found.points else None


@st.cache_data(max_entries=16, show_spinner=False)
def cached_policies(path: str, dataset: str | None, version: tuple) -> list[str]:
    return policies(store_for(path), dataset)


def cached_sets(path: str, dataset: str | None, version: tuple):
    return remembered(store_for(path), "best-of-n-sets", (dataset,), version, lambda: sample_sets(store_for(path), dataset),
                      stale)


def best_of_k(store, dataset: str | None, cols) -> None:
    """Rerank a sample set's solutions: pass@k, majority vote, best-of-k and weighted votes against k."""
    sets = cached_sets(db_path(), dataset, fingerprint(store))
    if not sets:
        st.info("No policy solutions yet, and no imported solutions with two or more graded ones per problem. Sample "
                "some on Jobs and data (Generate) or with `stepscope generate`, or import a model's solutions "
                "(`stepscope import --format model-solutions`, or jsonl with a source and a model); then judge them with "
                "an outcome judge to compare verifiers.")
        demo_study(store, queue_best_of_n_demo, f"New here? A demo study: {DEMO_SAMPLES} solutions from the policy to each "
                   "sample problem; this page then shows pass@k and majority vote against k (judge them on Jobs and data "
                   "for verifier curves). Minutes on a CPU.", key="bon_demo")  # fmt: skip
        return
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

    with st.spinner("Computing the curves…", show_time=True):  # shown only if it takes over half a second
        points, largest = cached_curves(db_path(), chosen, dataset, split, int(max_k), tuple(verifiers), aggregations,
                                        weighted, fingerprint(store))  # fmt: skip
    if not points:
        st.warning("Every problem of this choice has fewer than two solutions in the set: nothing to choose between.")
        return
    frame = pd.DataFrame([p.__dict__ for p in points])
    st.text(f"{frame['problems'].max()} problems with at least {largest} solutions each; k up to {largest}.")
    st.vega_lite_chart(best_of_n_chart(points), width="stretch")
    st.dataframe(frame, hide_index=True, width="stretch")
    if verifiers:
        st.caption("The verifiers, and the base model each was trained on (a prompted judge: its own model).")
        st.dataframe(pd.DataFrame([info[j].__dict__ for j in verifiers]), hide_index=True, width="stretch")


def test_time_compute(store, dataset: str | None) -> None:
    """Accuracy against generated tokens per strategy x scorer, with the policy's samples as references."""
    st.header("Test-time compute")
    st.caption("Each point is one search setting (strategy, scorer, parameters; seeds pooled, a problem searched "
               "again counted once, its latest search): the share of problems whose chosen answer is correct, with a "
               "95% Wilson interval over problems, against the tokens generated per problem. Grey lines: the "
               "policy's own samples of the same problems, pass@k and majority vote at the tokens k samples cost.")
    version = compute_version(store)
    found = cached_policies(db_path(), dataset, version)
    if not found:
        st.info("No finished searches yet. Search problems with a verifier in the loop: `stepscope search --strategy "
                "beam --n 8 --width 2 --scorer mc:4 --dataset synth --limit 20` (strategies bon, beam, dvts, mcts, "
                "reject; scorers random, mc, self-judge, orm, prm), or on Explore → Search this problem step by step "
                "(the Search page). Sample the policy's own solutions to the same problems (`stepscope generate`) "
                "for the pass@k and majority-vote references.")
        return
    cols = st.columns(2)
    policy = cols[0].selectbox("Policy searched", found, key="ttc_policy")
    scorer_tokens = cols[1].checkbox("Count the scorer's generated tokens", value=False, key="ttc_scorer_tokens",
                                     help="Add what the scorer generated itself (the MC scorer's rollouts) to the "
                                          "policy's tokens on the x axis.")  # fmt: skip
    curves, chart = cached_compute(db_path(), dataset, policy, scorer_tokens, version)
    references = (f"; references over {curves.reference_problems} of them, k up to {curves.largest_k}"
                  if curves.references else "")
    st.text(f"{len(curves.points)} settings over {curves.searched_problems} problems searched{references}.")
    if chart is not None:
        st.vega_lite_chart(chart, width="stretch")
    if curves.note:
        st.text(curves.note)
    st.dataframe(pd.DataFrame(point_rows(curves)), hide_index=True, width="stretch")


store = open_store()
st.title("Best-of-N")
st.caption("N solutions per problem — a policy's own, or imported ones — grouped by problem. pass@k is the oracle "
           "(any of k right); majority vote and best-of-k pick one of k; a weighted vote sums each answer's verifier "
           "scores. Means over problems with 95% bootstrap intervals over problems.")
stale = stale_notice()

cols = st.columns(4)
dataset = cols[0].selectbox("Dataset", ["any", *dataset_names(store)], key="bon_dataset")
dataset = None if dataset == "any" else dataset
best_of_k(store, dataset, cols)
test_time_compute(store, dataset)
