"""Best-of-N: the same policy, better judges — pass@k, majority vote and best-of-k per verifier."""

import pandas as pd
import streamlit as st

from core.views.best_of_n import curves, fingerprint, judges_of, policy_models, samples_by_problem, verifier_info
from core.views.charts import best_of_n_chart
from core.views.explore import dataset_names
from pages._shared import db_path, open_store, store_for


@st.cache_data(max_entries=32, show_spinner="Computing the curves…")
def cached_curves(path: str, model: str, dataset: str | None, split: str | None, max_k: int,
                  verifiers: tuple[str, ...], version: tuple):  # fmt: skip
    """Curves for one database state (`version` changes when trajectories or verdicts are added)."""
    return curves(samples_by_problem(store_for(path), model, dataset, split), max_k, list(verifiers))


@st.cache_data(max_entries=32)
def cached_judges(path: str, model: str, dataset: str | None, split: str | None, version: tuple) -> list[str]:
    return judges_of(samples_by_problem(store_for(path), model, dataset, split))


store = open_store()
st.title("Best-of-N")
st.caption("A policy's own solutions, grouped by problem. pass@k is the oracle (any of k right); majority vote "
           "and best-of-k pick one of k. Means over problems with 95% bootstrap intervals over problems.")

cols = st.columns(4)
dataset = cols[0].selectbox("Dataset", ["any", *dataset_names(store)], key="bon_dataset")
dataset = None if dataset == "any" else dataset
models = policy_models(store, dataset)
if not models:
    st.info("No policy solutions yet. Sample some on Jobs and data (Generate) or with `stepscope generate`, "
            "and judge them with an outcome judge to compare verifiers.")
    st.stop()
model = cols[1].selectbox("Policy", models, key="bon_model")
splits = {"all problems": None, "test split": "test", "train split": "train"}
split = splits[cols[2].selectbox("Problems", list(splits), key="bon_split",
                                 help="Train/test split by problem (a synthetic problem's own, else by question "
                                      "hash): compare trained verifiers on the test split, which they never saw.")]  # fmt: skip
max_k = cols[3].number_input("Largest k", 1, 1024, 64, key="bon_max_k")

judges = cached_judges(db_path(), model, dataset, split, fingerprint(store))
info = {v.judge: v for v in verifier_info(store, judges)}
# Keyed by what it chooses from: another policy or split offers other verifiers.
chosen = st.multiselect("Verifiers (best-of-k)", judges, default=judges, key=f"bon_verifiers:{model}:{dataset}:{split}",
                        format_func=lambda j: f"{j} — {info[j].type}, base {info[j].base}")  # fmt: skip

points, largest = cached_curves(db_path(), model, dataset, split, int(max_k), tuple(chosen), fingerprint(store))
if not points:
    st.warning("Every problem has fewer than two solutions from this policy: nothing to choose between.")
    st.stop()
frame = pd.DataFrame([p.__dict__ for p in points])
st.text(f"{frame['problems'].max()} problems with at least {largest} solutions each; k up to {largest}.")
st.vega_lite_chart(best_of_n_chart(points), width="stretch")
st.dataframe(frame, hide_index=True, width="stretch")
if chosen:
    st.caption("The verifiers, and the base model each was trained on (a prompted judge: its own model).")
    st.dataframe(pd.DataFrame([info[j].__dict__ for j in chosen]), hide_index=True, width="stretch")
