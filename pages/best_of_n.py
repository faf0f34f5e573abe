"""Best-of-N: the same policy, better judges — pass@k, majority vote and best-of-k per verifier."""

import pandas as pd
import streamlit as st

from core.views.best_of_n import curves, fingerprint, policy_models, samples_by_problem
from core.views.charts import best_of_n_chart
from core.views.explore import dataset_names
from pages._shared import db_path, open_store, store_for


@st.cache_data(max_entries=32, show_spinner="Computing the curves…")
def cached_curves(path: str, model: str, dataset: str | None, max_k: int, version: tuple):
    """Curves for one database state (`version` changes when trajectories or verdicts are added)."""
    return curves(samples_by_problem(store_for(path), model, dataset), max_k)


store = open_store()
st.title("Best-of-N")
st.caption("A policy's own solutions, grouped by problem. pass@k is the oracle (any of k right); majority vote "
           "and best-of-k pick one of k. Means over problems with 95% bootstrap intervals over problems.")

cols = st.columns(3)
dataset = cols[0].selectbox("Dataset", ["any", *dataset_names(store)], key="bon_dataset")
dataset = None if dataset == "any" else dataset
models = policy_models(store, dataset)
if not models:
    st.info("No policy solutions yet. Sample some on Jobs and data (Generate) or with `stepscope generate`, "
            "and judge them with an outcome judge to compare verifiers.")
    st.stop()
model = cols[1].selectbox("Policy", models, key="bon_model")
max_k = cols[2].number_input("Largest k", 1, 1024, 64, key="bon_max_k")

points, largest = cached_curves(db_path(), model, dataset, int(max_k), fingerprint(store))
if not points:
    st.warning("Every problem has fewer than two solutions from this policy: nothing to choose between.")
    st.stop()
frame = pd.DataFrame([p.__dict__ for p in points])
st.text(f"{frame['problems'].max()} problems with at least {largest} solutions each; k up to {largest}.")
st.vega_lite_chart(best_of_n_chart(points), width="stretch")
st.dataframe(frame, hide_index=True, width="stretch")
