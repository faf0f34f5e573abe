"""Jobs and data: jobs with progress, cancel and retry; a generate job (k solutions per problem
from the policy) and judge jobs over the generated solutions (judge models and trained
verifiers); the loaded model; the database file and its counts; import (upload) and export
(download)."""

import pages._preload  # noqa: F401 - first, before any other module of ours: see its docstring
import pandas as pd
import streamlit as st

from core.views.jobs import (
    JUDGE_KINDS, EstimateRequest, active_jobs, cancel, job_table, queue_generate, queue_judge_solutions, retry,
    trained_verifiers,
)  # fmt: skip
from core.jobs.spec import MAX_K, MAX_NEW_TOKENS
from core.views.best_of_n import policy_models
from core.views.data import export_bytes, export_formats, import_formats, import_upload, splitting_formats
from core.errors import StepScopeError
from core.views.explore import dataset_names
from core.views.access import EXPORT, IMPORT, RUN_JOBS
from pages._access import act, annotator, live, open_store, require_action
from pages._invitations import access_section
from pages._shared import (
    db_path, engine, error_box, folder, judges, md, policy, policy_engine_options, running_worker,
)  # fmt: skip

store = open_store()
require_action(RUN_JOBS)  # the organiser's page: jobs, models, imports, exports, invitations
state = st.session_state
st.title("Jobs and data")


def jobs_section(watching: bool) -> None:
    table = job_table(store)
    if watching and not active_jobs(store):
        st.rerun()  # everything finished: a full run stops the polling
    if not table:
        st.caption("No jobs yet. Start one from Explore (Estimate values) or the CLI.")
        return
    st.dataframe(
        pd.DataFrame(table), hide_index=True, width="stretch",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)},
    )  # fmt: skip
    cols = st.columns([1, 1, 1, 4])
    job_id = cols[0].selectbox("Job", [row["id"] for row in table], key="jd_job")
    for col, label, action in ((cols[1], "Cancel", cancel), (cols[2], "Retry", retry)):
        if col.button(label, key=f"jd_{label.lower()}", width="stretch") and act(RUN_JOBS):
            try:
                state["jd_message"] = action(store, int(job_id))
            except StepScopeError as error:
                error_box(f"Cannot {label.lower()} job {job_id}", error)
            else:
                st.rerun()  # a whole run: the table starts (or stops) following the job
    if message := state.pop("jd_message", None):
        st.success(message)


def generate_section() -> None:
    st.subheader("Generate solutions")
    datasets = dataset_names(store)
    if not datasets:
        st.caption("No problems yet: import a dataset below.")
        return
    with st.form("jd_generate"):
        st.caption(md(f"Samples k solutions per problem from the policy {policy()} ({engine()}); they become "
                      "policy trajectories, graded against the gold answer and split into steps."))
        c = st.columns(6)
        dataset = c[0].selectbox("Problems from", datasets)
        limit = c[1].number_input("How many problems (first by id)", 1, 100_000, 10)
        k = c[2].number_input("k (solutions per problem)", 1, MAX_K, 4)
        tokens = c[3].number_input("Max new tokens", 1, MAX_NEW_TOKENS, 256)
        temperature = c[4].number_input("Temperature", 0.0, 5.0, 0.7, step=0.1)
        seed = c[5].number_input("Seed", 0, 2**31 - 1, 0)
        submitted = st.form_submit_button("Generate")
    if submitted and act(RUN_JOBS):
        try:
            request = EstimateRequest(policy=policy(), engine=engine(), max_new_tokens=int(tokens),
                                      engine_options=policy_engine_options(),
                                      temperature=float(temperature), seed=int(seed))  # fmt: skip
            job_id = queue_generate(store, request, dataset, int(k), int(limit))
        except StepScopeError as error:
            error_box("Cannot start the job", error)
        else:
            state["jd_message"] = f"job {job_id} queued: {int(k)} solutions for each of up to {int(limit)} problems"
            st.rerun()  # a whole run: the jobs table starts following the new job


def judge_section() -> None:
    """Judge the policy's generated solutions in bulk: Best-of-N reranks them by these verdicts."""
    st.subheader("Judge generated solutions")
    models = policy_models(store)
    if not models:
        st.caption("No generated solutions yet: generate some above.")
        return
    trained = trained_verifiers(store)
    with st.form("jd_judge"):
        st.caption(md(f"Judges (sidebar): {', '.join(judges())} · engine {engine()}"))
        c = st.columns(5)
        solutions_of = c[0].selectbox("Solutions of", models)
        dataset = c[1].selectbox("Dataset", ["all", *dataset_names(store)])
        kinds = c[2].multiselect("Verdicts", JUDGE_KINDS, default=["outcome"])
        chosen = c[3].multiselect("Trained verifiers", list(trained), format_func=lambda f: trained.get(f, f),
                                  placeholder="none trained" if not trained else "probes, ORMs")
        mode = c[4].selectbox("Mode", ["logprob", "generative"])
        submitted = st.form_submit_button("Judge solutions")
    if submitted and act(RUN_JOBS):
        try:
            ids = queue_judge_solutions(store, judges(), kinds, None if dataset == "all" else dataset, solutions_of,
                                        chosen, mode=mode, engine=engine(),
                                        engine_options=policy_engine_options())
        except StepScopeError as error:
            error_box("Cannot start the job", error)
        else:
            state["jd_message"] = f"judge jobs {', '.join(map(str, ids))} queued"
            st.rerun()  # a whole run: the jobs table starts following the new jobs


def model_section() -> None:
    st.subheader("Loaded model")
    worker = running_worker(db_path())
    loaded = worker.engines.loaded() if worker else None
    if worker is None:
        st.caption("No job worker runs for this database in this process.")
    elif loaded:
        rows = {k: str(v) for k, v in loaded.items() if k != "extra"} | {k: str(v) for k, v in loaded.get("extra", {}).items()}
        st.dataframe(pd.DataFrame([rows]), hide_index=True, width="stretch")
    else:
        st.caption("No model loaded: the worker loads one on the first job that needs it.")


def database_section() -> None:
    st.subheader("Database")
    st.text(f"File: {store.path}")
    counts = store.counts()
    table = {k: v for k, v in counts.items() if isinstance(v, int)}
    # Metrics, not a grid: the numbers are page text (a grid draws on a canvas).
    for column, (name, count) in zip(st.columns(len(table)), table.items()):
        column.metric(name, f"{count:,}")
    if counts["annotations_by_annotator"]:
        st.dataframe(
            pd.DataFrame([{"annotator": k, "annotations": v} for k, v in counts["annotations_by_annotator"].items()]),
            hide_index=True,
        )  # fmt: skip
    datasets = store.datasets()
    if datasets:
        st.dataframe(pd.DataFrame(datasets), hide_index=True)


def import_section() -> None:
    require_action(IMPORT)
    st.subheader("Import")
    splitting = splitting_formats()  # the formats that cut free text into steps, and their default rule
    with st.form("jd_import", clear_on_submit=True):
        upload = st.file_uploader("File (JSON lines or a JSON array)", type=["jsonl", "json"])
        cols = st.columns(4)
        format_name = cols[0].selectbox("Format", import_formats())
        dataset = cols[1].text_input("Dataset (optional)", max_chars=80)
        label_owner = cols[2].text_input("Annotator for unnamed labels", value=annotator() or "", max_chars=40)
        # The rule as `stepscope import --splitter` takes it, checked by the same function.
        rule = cols[3].text_input(
            "Splitter", max_chars=300,
            placeholder=" · ".join(f"{name}: {default}" for name, default in splitting.items()),
            help=md(f"For {', '.join(splitting)} only: how the text is cut into steps (blank: the format's default). "
                    "line, paragraph, sentence, sentence-merged[:MIN-MAX], reflection[:MARKER|MARKER...]"),
        )  # fmt: skip
        submitted = st.form_submit_button("Import")
    if submitted and act(IMPORT):
        if upload is None:
            st.error("Choose a file to import.")
            return
        try:
            result = import_upload(store, folder(), upload.name, upload.getvalue(), format_name,
                                   dataset=dataset, annotator=label_owner.strip() or None, splitter=rule)
        except StepScopeError as error:
            error_box("Import failed, nothing was changed", error)
        else:
            state["jd_imported"] = f"{upload.name}: {result.summary}"
            st.rerun()  # a whole run: the counts above include what was just imported
    if imported := state.pop("jd_imported", None):
        st.success(md(imported))


def export_section() -> None:
    require_action(EXPORT)
    st.subheader("Export")
    with st.form("jd_export"):
        cols = st.columns(3)
        format_name = cols[0].selectbox("Format", export_formats())
        labels = cols[1].text_input("Labels", placeholder="mc-hard, mc-soft:0.5, judge:NAME, prm:NAME, human:NAME, consensus, majority",
                                    max_chars=200)
        dataset = cols[2].selectbox("Dataset", ["all", *dataset_names(store)])
        prepared = st.form_submit_button("Prepare the file")
    if prepared and act(EXPORT):
        try:
            content, written, file_name = export_bytes(
                store, folder(), format_name, labels=labels, dataset=None if dataset == "all" else dataset)
            state["jd_export_file"] = (content, written, file_name)
        except StepScopeError as error:
            state.pop("jd_export_file", None)
            error_box("Export failed", error)
    if "jd_export_file" in state:
        content, written, file_name = state["jd_export_file"]
        st.caption(f"{written} records, {len(content):,} bytes")
        st.download_button(f"Download {file_name}", content, file_name=file_name, key="jd_download")


watching = bool(active_jobs(store))
st.subheader("Jobs")
st.fragment(live(jobs_section), run_every=2.0 if watching else None)(watching)
generate_section()
judge_section()
model_section()
database_section()
import_section()
export_section()
access_section(store)
