"""The Search page (pages/search.py) through Streamlit's AppTest, on a real SQLite file: a search
queued from the form, a running search's candidates replayed from its journal, a finished one's
depths with marks, answer and beams, a candidate's node with other verifiers' scores, the filter
to searches that ended wrong, and two searches side by side. Jobs are run here by the job runner
with the simulated stepped policy (tests/simulated_steps.py), as the app's worker would run them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from simulated_steps import KilledAt, SteppedPolicy
from streamlit.testing.v1 import AppTest

from core.jobs.runner import EngineCache, claim_job, run_job
from core.sample_solutions import ensure_trajectories
from core.store import Store
from core.views.jobs import queue_judging
from core.views.search import SearchRequest, problem_jobs, queue_search, scorer_choices, search_page_params
from core.views.search_tree import chart_rows, picked_candidate, search_tree_chart, search_view

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # pages import pages._shared, as under `streamlit run app.py`

TIMEOUT = 60
POLICY = "simulated-steps"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    path = tmp_path / "data" / "search.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    store = Store.open(path)
    ensure_trajectories(store)
    return store


def add_problem(store: Store) -> int:
    """A problem the stepped policy answers (gold 42), with one trajectory so that Explore lists it."""
    problem_id = store.add_problem("search-page", "What is the number?", "42")
    store.add_trajectory(problem_id, "step 1: ok\nThe answer is 42.", source="reference", final_answer="42",
                         correct=True, rule="line")  # fmt: skip
    return problem_id


def run(store: Store, job_id: int, engine) -> None:
    run_job(store, claim_job(store, job_id, stale_after=0), EngineCache(loader=lambda *args, **kwargs: engine))


def searched(store: Store, problem_id: int, seed: int = 7, **fields) -> int:
    request = SearchRequest(policy=POLICY, n=4, beam_width=2, max_steps=3, token_budget=None, seed=seed, **fields)
    job_id = queue_search(store, request, problem_id)
    run(store, job_id, SteppedPolicy([0.7] * 3))
    return store.job_searches(job_id)[0]["id"]


def page(store: Store, problem_id: int | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "search.py"), default_timeout=TIMEOUT)
    at.session_state["db_path"] = str(store.path)
    at.session_state["policy_model"] = POLICY
    if problem_id is not None:
        at.query_params["problem"] = str(problem_id)
    return at


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def table_rows(at: AppTest) -> list[dict]:
    """Every row of every table the page drew (depth tables and final beams)."""
    return [row for table in at.table for row in table.value.to_dict("records")]


def test_the_form_queues_a_search_job_on_the_linked_problem(store):
    problem_id = add_problem(store)
    at = page(store, problem_id)
    at.run()
    no_exceptions(at)
    assert at.selectbox(key="search_problem").value == problem_id
    assert "Gold answer: 42" in texts(at)
    assert "No search of this problem yet." in [i.value for i in at.info]
    [submit] = [b for b in at.button if b.label == "Start the search"]
    submit.click().run()
    no_exceptions(at)
    [job] = store.list_jobs()
    assert job["kind"] == "search" and job["status"] == "queued"
    assert job["manifest"]["problem_ids"] == [problem_id] and job["manifest"]["search"]["strategy"] == "beam"
    assert job["manifest"]["search"]["token_budget"] == SearchRequest.token_budget
    assert f"search job {job['id']} queued" in [s.value for s in at.success]


def test_the_scorers_offered_include_a_prm_trained_next_to_the_database(store):
    assert list(scorer_choices(store)) == ["random", "mc:4", "self-judge"]
    folder = store.path.parent / "verifiers" / "prm" / "sorm-mc-hard"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    assert "prm:" + str(folder) not in scorer_choices(store)  # still training: no model saved yet
    (folder / "config.json").write_text("{}")
    assert scorer_choices(store)["prm:" + str(folder)].startswith("PRM sorm-mc-hard")


def test_an_invalid_search_is_refused_in_one_line(store):
    problem_id = add_problem(store)
    at = page(store, problem_id)
    at.run()
    [n_input] = [w for w in at.number_input if w.label == "N (beams)"]
    n_input.set_value(3)  # not a multiple of the width (2)
    [submit] = [b for b in at.button if b.label == "Start the search"]
    submit.click().run()
    no_exceptions(at)
    [error] = at.error
    assert error.value.startswith("Cannot start the search:") and "multiple of the beam width" in error.value
    assert "\n" not in error.value and store.list_jobs() == []


def test_a_running_search_shows_the_candidates_its_journal_holds(store):
    problem_id = add_problem(store)
    job_id = queue_search(store, SearchRequest(policy=POLICY, n=4, beam_width=2, max_steps=3, token_budget=None,
                                               seed=7), problem_id)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):  # killed after two policy calls: depths 1 and 2 generated
        run(store, job_id, KilledAt(SteppedPolicy([0.7] * 3), 2))
    at = page(store, problem_id)
    at.run()
    no_exceptions(at)
    assert any(c.value.startswith("running: ") for c in at.caption)
    rows = table_rows(at)
    assert len(rows) == 8  # 4 first steps, 4 second steps
    marks = [row["mark"] for row in rows]
    assert marks.count("pruned") == 4 and marks.count("chosen") == 4  # each depth keeps n / M = 2
    # Ranked best first within each depth, scored by the random scorer.
    assert [row["rank"] for row in rows] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert "running" in at.selectbox(key="search_pick").options[0]
    # Its job cancelled, the search says it was interrupted, not running.
    store.cancel_job(job_id)
    at.run()
    assert any(c.value.startswith("interrupted: its job stopped") for c in at.caption)
    assert "interrupted" in at.selectbox(key="search_pick").options[0]
    # The replay is the job's own tree: resumed, the job stores the same marks for those candidates.
    store.update_job(job_id, status="queued")
    run(store, job_id, SteppedPolicy([0.7] * 3))
    [search] = store.job_searches(job_id)
    stored = {c["candidate"]: c["mark"] for c in store.search_candidates(search["id"])}
    assert {row["candidate"]: row["mark"] for row in rows} == {order: stored[order] for order in range(8)}
    # Watched to its end, the page opens the node panel on the final beam that gave the answer.
    at.run()
    no_exceptions(at)
    answer_beam = max(c.order for c in search_view(store, search["id"]).candidates if c.on_path)
    assert at.selectbox(key=f"search_candidate_{search['id']}").value == answer_beam


def test_a_finished_search_shows_marks_the_answer_path_and_its_grade(store):
    problem_id = add_problem(store)
    search_id = searched(store, problem_id)
    search = store.get_search(search_id)
    at = page(store, problem_id)
    at.run()
    no_exceptions(at)
    assert f"Final answer: answer {search['answer']} · {'correct' if search['correct'] else 'wrong'}" in texts(at)
    compute = search["compute"]
    [spent] = [c.value for c in at.caption if c.value.startswith("Compute: ")]
    assert f"{compute['policy_tokens']:,} policy tokens generated" in spent and compute["policy_tokens"] > 0
    assert f"{compute['engine_calls']} policy calls, {compute['scorer_calls']} scorer calls" in spent
    depths = [m.value for m in at.markdown if m.value.startswith("**Depth")]
    assert depths == ["**Depth 1** · 4 candidates", "**Depth 2** · 4 candidates", "**Depth 3** · 4 candidates"]
    rows = table_rows(at)
    candidates = store.search_candidates(search_id)
    depth_rows = [row for row in rows if "mark" in row]
    assert len(depth_rows) == len(candidates) == 12
    assert sum("pruned" in row["mark"] for row in depth_rows) == sum(c["mark"] == "pruned" for c in candidates) == 4
    # The answer path: one candidate per depth, each the parent of the next, ending at a final beam.
    path = [row for row in depth_rows if "answer path" in row["mark"]]
    assert len(path) == 3 and "final beam" in path[-1]["mark"]
    assert [row["parent"] for row in path[1:]] == [str(row["candidate"]) for row in path[:-1]]
    beams = [row for row in rows if "trajectory" in row]
    assert len(beams) == 4 and all(row["correct"] in (True, False) for row in beams)
    # Pruned rows are greyed, the path highlighted: the table's own styles.
    styles = str(at.table[0].proto.arrow_data.styler.styles)
    assert "color: #9aa0a6" in styles and "background-color: rgba(33, 195, 84, 0.18)" in styles



def test_model_text_in_tables_is_made_inert_for_markdown(store):
    """st.table renders each cell as markdown: a step's text reaches it escaped."""
    problem_id = add_problem(store)
    search_id = searched(store, problem_id)
    with store.transaction() as conn:
        conn.execute("UPDATE search_candidates SET text = ? WHERE search_id = ? AND candidate = 0",
                     ["**bold** [link](http://example.com)", search_id])  # fmt: skip
    at = page(store, problem_id)
    at.run()
    no_exceptions(at)
    [step] = [row["step"] for row in table_rows(at) if "step" in row and row["candidate"] == 0]
    assert step.startswith(r"\*\*bold\*\* \[link\]")


def test_the_tree_chart_lays_out_every_candidate_under_its_parent(store):
    problem_id = add_problem(store)
    view = search_view(store, searched(store, problem_id))
    nodes, edges, leaves = chart_rows(view)
    by_id = {node["id"]: node for node in nodes}
    assert len(nodes) == 1 + len(view.candidates) and len(edges) == len(view.candidates)
    assert leaves == sum(1 for c in view.candidates if not any(o.parent == c.order for o in view.candidates))
    for candidate in view.candidates:
        children = [by_id[o.order]["y"] for o in view.candidates if o.parent == candidate.order]
        if children:  # a parent sits mid-way between its first and last child
            assert by_id[candidate.order]["y"] == (min(children) + max(children)) / 2
        assert by_id[candidate.order]["x"] == candidate.depth and by_id[candidate.order]["mark"] == candidate.mark
    assert sum(node["path"] for node in nodes) == 1 + 3  # the question and one candidate per depth
    assert [node["id"] for node in chart_rows(view, selected=5)[0] if node["selected"]] == [5]
    spec = search_tree_chart(view)
    assert spec["layer"][1]["encoding"]["color"]["scale"]["range"][1] == "#c7c7c7"  # pruned: grey
    assert picked_candidate({"selection": {"candidate": [{"id": 5}]}}) == 5
    assert picked_candidate({"selection": {"candidate": [{"id": -1}]}}) is None  # the question
    assert picked_candidate({"selection": {}}) is None


def test_a_candidate_shows_other_verifiers_and_mc_values_at_its_node(store):
    problem_id = add_problem(store)
    first = searched(store, problem_id, seed=7)
    beam = next(c for c in store.search_candidates(first) if c["trajectory_id"] is not None)
    # Another verifier's verdict on the beam's last step, and MC rollouts at its node.
    step = store.steps(beam["trajectory_id"])[-1]
    store.add_verdicts([{"judge": "other-judge", "kind": "step", "step_id": step["id"], "p_yes": 0.25}])
    store.add_node_rollouts(beam["node_id"], [{"text": " The answer is 42.", "answer": "42", "correct": True,
                                               "model": POLICY}] * 3)  # fmt: skip
    at = page(store, problem_id)
    at.run()
    at.selectbox(key=f"search_candidate_{first}").set_value(beam["candidate"]).run()
    no_exceptions(at)
    shown = texts(at)
    assert any(t.startswith("MC value 1.00") and "(3/3 reach the answer)" in t for t in shown), shown
    assert f"other-judge (judge): P(yes) 0.25 on trajectory #{beam['trajectory_id']} step {step['idx']}" in shown
    assert any(t.startswith(f"search #{first} (beam, scorer random:7): score {beam['score']:.3f}") for t in shown)
    # The actions on the node queue the tree view's jobs: k rollouts at the node, and the judges.
    at.button(key=f"search_node_estimate_{beam['node_id']}").click().run()
    no_exceptions(at)
    [estimate] = [job for job in store.list_jobs() if job["kind"] == "tree-search"]
    assert estimate["manifest"]["node_id"] == beam["node_id"] and estimate["manifest"]["budget"] == 8
    at.button(key=f"search_node_judge_{beam['node_id']}").click().run()
    no_exceptions(at)
    judged = [job for job in store.list_jobs() if job["kind"] == "judge"]
    assert len(judged) == 1 and judged[0]["manifest"]["trajectory_ids"] == [beam["trajectory_id"]]
    # Watched until a full run sees them end, however quickly they run.
    assert at.session_state["search_queued"] == {estimate["id"], judged[0]["id"]}


def test_filter_to_wrong_searches_and_two_side_by_side(store):
    problem_id = add_problem(store)
    ids = [searched(store, problem_id, seed=seed) for seed in range(1, 7)]
    outcomes = {i: store.get_search(i)["correct"] for i in ids}
    assert set(outcomes.values()) == {True, False}, "the seeds should give both outcomes"
    at = page(store, problem_id)
    at.run()
    at.checkbox(key="search_wrong_only").check().run()
    no_exceptions(at)
    listed = at.selectbox(key="search_pick").options
    assert len(listed) == sum(not ok for ok in outcomes.values()) and all("wrong" in label for label in listed)
    at.checkbox(key="search_wrong_only").uncheck().run()
    at.checkbox(key="search_side_by_side").check().run()
    no_exceptions(at)
    left, right = at.selectbox(key="search_pick").value, at.selectbox(key="search_pick_other").value
    assert left != right
    assert sum(t.startswith("Final answer:") for t in texts(at)) == 2


def test_the_page_watches_its_problems_searches_and_jobs_on_its_trajectories(store):
    problem_id = add_problem(store)
    [own] = [row["id"] for row in store.list_trajectories(problem_id=problem_id)]
    search = queue_search(store, SearchRequest(policy=POLICY), problem_id)
    judged = queue_judging(store, [POLICY], ["step"], [], [own])
    elsewhere = queue_judging(store, [POLICY], ["step"], [], [1])  # a sample problem's trajectory
    assert [job["id"] for job in problem_jobs(store, problem_id)] == [search, *judged]
    assert [job["id"] for job in problem_jobs(store, store.get_trajectory(1)["problem_id"])] == elsewhere


def test_a_bad_problem_link_gives_a_message_not_a_crash(store):
    at = page(store)
    at.query_params["problem"] = "99999"
    at.run()
    no_exceptions(at)
    [warning] = at.warning
    assert warning.value.startswith("Cannot open that link:") and "99999" in warning.value and "does not exist" in warning.value
    assert at.query_params["problem"] != "99999"  # the page opened on a problem that exists


def test_explore_offers_the_search_of_its_problem_or_of_its_beam(store):
    at = AppTest.from_file(str(REPO / "pages" / "explore.py"), default_timeout=TIMEOUT)
    at.session_state["db_path"] = str(store.path)
    at.session_state["policy_model"] = POLICY
    at.run()
    no_exceptions(at)
    assert at.button(key="ex_search_problem").label == "Search this problem step by step"
    problem_id = add_problem(store)
    search_id = searched(store, problem_id)
    beam = next(c["trajectory_id"] for c in store.search_candidates(search_id) if c["trajectory_id"] is not None)
    assert search_page_params(store.get_trajectory(beam)) == {"problem": str(problem_id), "search": str(search_id)}
    at.query_params["trajectory"], at.query_params["step"] = str(beam), "0"
    at.run()
    no_exceptions(at)
    assert at.button(key="ex_search_problem").label == "Open its search"


def test_a_link_opens_the_search_it_names(store):
    problem_id = add_problem(store)
    first, second = searched(store, problem_id, seed=1), searched(store, problem_id, seed=2)
    at = page(store, problem_id)
    at.run()
    assert at.selectbox(key="search_pick").value == second  # the newest first
    at = page(store, problem_id)
    at.query_params["search"] = str(first)
    at.run()
    no_exceptions(at)
    assert at.selectbox(key="search_pick").value == first


def signed_in(store: Store, name: str, role: str, problem_id: int) -> AppTest:
    """The page run by a session an invitation signed in, served beyond loopback (as app.py's gate
    leaves it; tests/test_access_pages.py)."""
    from datetime import timedelta

    from core.views.access import Identity

    invitation, _ = store.create_invitation(name, role, timedelta(days=1))
    at = page(store, problem_id)
    at.session_state["access_identity"] = Identity(role, name, invitation.id, store.path.name)
    return at


def test_a_viewer_sees_the_searches_but_no_action(store, monkeypatch):
    monkeypatch.setenv("STEPSCOPE_SERVED_REMOTELY", "1")
    problem_id = add_problem(store)
    searched(store, problem_id)
    at = signed_in(store, "vic", "viewer", problem_id)
    at.run()
    no_exceptions(at)
    assert any(m.value.startswith("**Depth 1**") for m in at.markdown)  # the search is there to read
    assert any(t.startswith("MC value") for t in texts(at))  # and a candidate's node
    assert not at.button and not [w for w in at.number_input if w.label in ("N (beams)", "Rollouts (k)")]


def test_a_revoked_organiser_queues_nothing(store, monkeypatch):
    """The gate is asked when the button is clicked, not when the page was drawn."""
    monkeypatch.setenv("STEPSCOPE_SERVED_REMOTELY", "1")
    problem_id = add_problem(store)
    at = signed_in(store, "olga", "organiser", problem_id)
    at.run()
    no_exceptions(at)
    store.revoke_invitations("olga")
    [submit] = [b for b in at.button if b.label == "Start the search"]
    submit.click().run()
    no_exceptions(at)
    assert store.list_jobs() == []
    # Signed out at that moment (app.py's gate says why on the next full run): no form any more.
    assert "access_identity" not in at.session_state and not [b for b in at.button if b.label == "Start the search"]
