"""Each page's logic through Streamlit's AppTest: a page file run on its own against a real
SQLite file, with the sidebar's choices put in session state (app.py is tested for its first
render: AppTest with st.navigation does not keep the sidebar across widget changes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.sample_solutions import ensure_trajectories, featured_trajectory
from core.store import Store
from core.views.annotate import row_buttons
from core.views.math_text import math_markdown

from app_components import click_step, keyboard_bar, press_key, send_action, send_event, step_controls

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # pages import pages._shared, as under `streamlit run app.py`

TIMEOUT = 60


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "data" / "pages.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    return path


def seeded(db: Path) -> Store:
    """The store as the app leaves it on first start: sample set plus reference trajectories."""
    store = Store.open(db)
    ensure_trajectories(store)
    return store


def page(name: str, db: Path, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = "tiny-policy"
    for key, value in state.items():
        at.session_state[key] = value
    return at


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def button(at: AppTest, label: str, nth: int = 0):
    return [b for b in at.button if b.label == label][nth]


# --- app.py --------------------------------------------------------------------------------


def test_fresh_start_shows_a_trajectory_ready_to_explore(db):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    no_exceptions(at)
    assert db.exists()  # created on first start, with the sample set and reference trajectories
    labels = [s.label for s in at.sidebar.selectbox]
    assert labels[:2] == ["Database file", "Policy model"] and at.sidebar.selectbox[0].value == "pages.db"
    assert [t.label for t in at.sidebar.text_input] == ["Other judge models", "Annotator name"]
    assert at.sidebar.multiselect[0].label == "Judge models" and at.sidebar.multiselect[0].value == ["the policy"]
    assert at.session_state["judge_models"] == [at.session_state["policy_model"]]  # the policy judges itself
    assert any("No model loaded yet" in c.value for c in at.sidebar.caption)
    assert at.title[0].value == "Explore"
    # It opens on the featured reference solution: a reachable first step, then a real error.
    featured = featured_trajectory(Store.open(db))
    assert "Maria has 12 stickers" in at.markdown[0].value  # the question, math-aware
    assert (at.query_params["trajectory"], at.query_params["step"]) == (str(featured), "0")
    assert "Now she has 12" in " ".join(m.value for m in at.markdown)  # its wrong step


def test_bad_annotator_name_is_refused_in_the_sidebar(db):
    # Typed before the first run: a widget change on app.py (st.navigation) is not kept by AppTest.
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state["annotator_input"] = "<img src=x>"
    at.run()
    assert any("1 to 40 letters" in e.value for e in at.sidebar.error)
    assert at.session_state["annotator"] is None
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state["annotator_input"] = " alice "
    at.run()
    assert at.session_state["annotator"] == "alice" and not at.sidebar.error


def test_sidebar_judge_models_reach_the_pages(db):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state["judge_choice"] = ["the policy", "qwen2.5-math-1.5b"]
    at.session_state["judge_other"] = " org/judge-7b , qwen2.5-math-1.5b,"
    at.run()
    no_exceptions(at)
    policy = at.session_state["policy_model"]
    assert at.session_state["judge_models"] == [policy, "qwen2.5-math-1.5b", "org/judge-7b"]  # no repeats
    # The caption is escaped markdown (model names are typed text).
    assert any(c.value.startswith("Judges \\(sidebar\\)") and "org\\/judge\\-7b" in c.value for c in at.caption)


# --- Explore -------------------------------------------------------------------------------


def test_explore_deep_link_opens_the_named_step(db):
    at = page("explore", db)
    at.query_params["trajectory"] = "3"
    at.query_params["step"] = "2"
    at.run()
    no_exceptions(at)
    assert at.session_state["explore_tid"] == 3 and at.session_state["explore_step"] == 2
    assert [h.value for h in at.subheader][-2:] == ["Step 2: prefix and rollouts", "Rollout tree"]
    # The question renders its math (KaTeX) with the rest escaped: it is a markdown element.
    assert any("Jack has 50 dollars" in m.value for m in at.markdown)


@pytest.mark.parametrize("params, cause", [
    ({"trajectory": "abc"}, "whole number"),
    ({"trajectory": "999"}, "does not exist"),
    ({"trajectory": "2", "step": "50"}, "has 3 steps"),
])  # fmt: skip
def test_explore_bad_links_give_a_message_not_a_crash(db, params, cause):
    at = page("explore", db)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    no_exceptions(at)
    assert any(cause in w.value for w in at.warning)
    # Falls back to something to show: the linked trajectory, else where a first visit opens.
    assert at.session_state["explore_tid"] in (2, featured_trajectory(Store.open(db)))


def test_explore_step_and_trajectory_navigation(db):
    at = page("explore", db, explore_tid=1)
    at.run()
    assert at.session_state["explore_step"] == 0
    button(at, "Next step").click().run()
    assert at.session_state["explore_step"] == 1
    button(at, "Previous step").click().run()
    assert at.session_state["explore_step"] == 0
    button(at, "Select", 1).click().run()  # the card of step 2 (step 0's card is selected)
    assert at.session_state["explore_step"] == 2
    button(at, "Next").click().run()
    assert at.session_state["explore_tid"] == 2 and at.session_state["explore_step"] == 0
    button(at, "Previous").click().run()
    assert at.session_state["explore_tid"] == 1
    no_exceptions(at)


def test_explore_filters_pick_a_matching_trajectory(db):
    at = page("explore", db, explore_tid=1)
    at.run()
    at.selectbox(key="ex_correct").set_value("wrong").run()
    assert at.session_state["explore_tid"] == 8
    assert at.selectbox(key="ex_pick").options == [
        o for o in at.selectbox(key="ex_pick").options if o.startswith(("#8", "#9", "#10"))]
    button(at, "Next").click().run()
    assert at.session_state["explore_tid"] == 9
    at.text_input(key="ex_search").set_value("no such question").run()
    assert any("No trajectory matches" in i.value for i in at.info)


def test_explore_starts_a_job_and_shows_values(db):
    from core.mcpe import FixedN

    at = page("explore", db, explore_tid=1)
    at.run()
    n_input = [n for n in at.number_input if n.label == "N (rollouts per step)"][0]
    assert n_input.value == FixedN().n == 16  # one default for app, CLI and job (core.mcpe.ROLLOUTS_PER_STEP)
    n_input.set_value(3)
    button(at, "Estimate values").click().run()
    no_exceptions(at)
    assert any("job 1 queued" in s.value for s in at.success)
    store = Store.open(db)
    job = store.get_job(1)
    assert job["status"] == "queued" and job["manifest"]["policy"] == "tiny-policy"
    assert job["manifest"]["strategy"]["n"] == 3 and job["manifest"]["trajectory_ids"] == [1]
    # The job's rollouts (written here as a worker would) show on the cards.
    step = store.steps(1)[0]
    store.add_rollouts([{"step_id": step["id"], "text": " 48 - 30 = 18", "correct": True, "model": "tiny-policy"},
                        {"step_id": step["id"], "text": " 7", "correct": False, "model": "tiny-policy"}])
    store.update_job(1, status="done")
    at.run()
    assert "MC 0.50  [0.09, 0.91]  (1/2 reach the answer)" in texts(at)
    assert len(at.dataframe) == 2 and list(at.dataframe[0].value["correct"]) == [True, False]
    assert list(at.dataframe[1].value["correct"]) == [True, False]  # the rollout tree: the step's node


def test_explore_queues_judge_jobs(db):
    at = page("explore", db)
    at.run()
    button(at, "Judge").click().run()
    no_exceptions(at)
    assert any("judge jobs 1 queued" in s.value for s in at.success)
    job = Store.open(db).get_job(1)
    assert (job["kind"], job["manifest"]["model"], job["manifest"]["kind"]) == ("judge", "tiny-policy", "step")


def test_explore_judge_button_uses_the_sidebar_judges(db):
    at = page("explore", db, judge_models=["judge-a", "judge-b"], explore_tid=1)
    at.run()
    verdicts = [m for m in at.multiselect if m.label == "Verdicts"][0]
    verdicts.set_value(["step", "outcome"])
    button(at, "Judge").click().run()
    no_exceptions(at)
    assert any("judge jobs 1, 2, 3, 4 queued" in s.value for s in at.success)
    jobs = [Store.open(db).get_job(i) for i in range(1, 5)]
    assert [(j["manifest"]["model"], j["manifest"]["kind"], j["manifest"]["trajectory_ids"]) for j in jobs] == [
        ("judge-a", "step", [1]), ("judge-a", "outcome", [1]), ("judge-b", "step", [1]), ("judge-b", "outcome", [1])]
    [m for m in at.multiselect if m.label == "Verdicts"][0].set_value([])
    button(at, "Judge").click().run()
    assert any("or a trained verifier" in e.value for e in at.error)  # nothing to judge with: said, not crashed
    assert len(Store.open(db).list_jobs()) == 4


def test_explore_more_rollouts_tops_up(db):
    store = seeded(db)
    step = store.steps(1)[0]
    store.add_rollouts({"step_id": step["id"], "text": f" {i}", "correct": True, "model": "tiny-policy"} for i in range(3))
    at = page("explore", db, explore_tid=1)
    at.run()
    [n for n in at.number_input if n.label == "Extra rollouts per step"][0].set_value(5)
    button(at, "More rollouts").click().run()
    no_exceptions(at)
    assert any("job 1 queued" in s.value for s in at.success)
    job = store.get_job(1)
    assert job["kind"] == "estimate" and job["manifest"]["strategy"] == {"strategy": "fixed", "n": 8}  # 3 + 5


def test_explore_filter_where_labels_disagree(db):
    store = seeded(db)
    step = store.steps(4)[1]
    store.save_annotation("alice", step["id"], rating=1)
    store.save_annotation("bob", step["id"], rating=-1)
    at = page("explore", db)
    at.run()
    at.selectbox(key="ex_disagree").set_value("annotators").run()
    no_exceptions(at)
    assert at.session_state["explore_tid"] == 4 and at.selectbox(key="ex_pick").options[0].startswith("#4")
    assert len(at.selectbox(key="ex_pick").options) == 1
    at.selectbox(key="ex_disagree").set_value("mc-hard").run()
    assert any("No trajectory matches" in i.value for i in at.info)


def test_explore_refuses_a_job_it_cannot_run(db):
    at = page("explore", db, policy_engine="openai")
    at.run()
    button(at, "Estimate values").click().run()
    assert any("needs server URLs" in e.value for e in at.error)
    assert Store.open(db).list_jobs() == []


def test_untrusted_text_is_rendered_as_text(db):
    store = Store.open(db)
    evil = "<script>alert(1)</script> ![x](http://evil.example/x.png) **bold**"
    problem = store.add_problem("evil_set", evil, "1")
    trajectory = store.add_trajectory(problem, f"{evil}\nThe answer is 1.", source="<b>src</b>", model="[m](http://x)")
    at = page("explore", db)
    at.query_params["trajectory"] = str(trajectory)
    at.run()
    no_exceptions(at)
    # Question and step as math-aware markdown: every markup character escaped, shown verbatim.
    assert math_markdown(evil) in [m.value for m in at.markdown]
    for element in [*at.markdown, *at.caption]:
        assert "](http" not in element.value and "<script" not in element.value.replace("\\<", "")


# --- Annotate ------------------------------------------------------------------------------


def test_annotate_needs_an_annotator(db):
    at = page("annotate", db)
    at.run()
    assert "annotator name" in at.info[0].value


def test_annotate_opens_the_optional_fields_on_the_highlighted_step(db):
    at = page("annotate", db, annotator="alice")
    at.run()
    store = Store.open(db)
    steps = [s["id"] for s in store.steps(1)]
    notes = lambda: [t.key for t in at.text_input if t.key and t.key.startswith("ann_note_")]  # noqa: E731
    assert notes() == [f"ann_note_{steps[0]}"]  # one step's fields open, the highlighted one
    at.text_input(key=f"ann_note_{steps[0]}").set_value("check <b>units</b>").run()
    click_step(at, steps[2], "highlight")
    no_exceptions(at)
    assert at.session_state["ann_step"] == 2 and notes() == [f"ann_note_{steps[2]}"]
    # The row that was left shows what it holds, as text (its controls set text, not HTML).
    assert step_controls(at, steps[0])["summary"] == "note: check <b>units</b>"
    assert step_controls(at, steps[2])["cursor"] and not step_controls(at, steps[0])["cursor"]
    press_key(at, "ann_key_r1")  # the keyboard bar acts on the newly highlighted step
    assert store.annotation("alice", steps[2])["rating"] == 1 and store.annotation("alice", steps[0])["rating"] is None


def test_annotate_every_click_is_saved(db):
    at = page("annotate", db, annotator="alice")
    at.run()
    no_exceptions(at)
    store = Store.open(db)
    steps = store.steps(1)
    status = lambda step: step_controls(at, step["id"])["status"]  # noqa: E731
    press_key(at, "ann_key_r1")  # the keyboard bar's +1: the highlighted step, then the next
    assert "saved: step 0 +1 at " in status(steps[0])
    assert store.annotation("alice", steps[0]["id"])["rating"] == 1
    assert at.session_state["ann_step"] == 1  # rating by key moves the keyboard to the next step
    click_step(at, steps[1]["id"], "rating", -1)
    click_step(at, steps[1]["id"], "first_error")
    click_step(at, steps[1]["id"], "flagged")
    assert step_controls(at, steps[1]["id"]) | {"status": ""} == {
        "rating": -1, "first_error": True, "flagged": True, "greyed": False, "cursor": True, "summary": "",
        "status": "", "error": "", "buttons": row_buttons()}
    at.text_input(key=f"ann_note_{steps[1]['id']}").set_value("sign error").run()
    at.segmented_control(key=f"ann_conf_{steps[1]['id']}").set_value(4).run()
    at.selectbox(key=f"ann_cat_{steps[1]['id']}").set_value("calculation").run()
    at.text_input(key=f"ann_why_{steps[1]['id']}").set_value("7 x 8 is not 54").run()
    label = store.annotation("alice", steps[1]["id"])
    assert (label["rating"], label["first_error"], label["flagged"], label["note"]) == (-1, True, True, "sign error")
    assert (label["confidence"], label["category"], label["rationale"]) == (4, "calculation", "7 x 8 is not 54")
    assert label["dwell_ms"] is not None and label["rating_order"] == 2
    assert "saved: step 1 rationale saved" in status(steps[1])
    click_step(at, steps[1]["id"], "rating", 0)  # an edit: kept in the history
    changes = [(h["field"], h["old_value"], h["new_value"]) for h in store.label_history(trajectory_id=1)]
    assert ("rating", -1, 0) in changes and ("category", "calculation", None) in changes
    at.checkbox(key="ann_flawed_1").check().run()
    assert store.trajectory_label("alice", 1)["flawed_process"] is True
    for step in steps[2:]:
        click_step(at, step["id"], "rating", 0)
    at.run()
    assert "1 of 10 trajectories fully labelled" in texts(at)[0]
    button(at, "Next").click().run()
    assert at.session_state["ann_pos"] == 1 and "Trajectory 2 of 10 (#2)" in texts(at)[0]
    no_exceptions(at)


def test_annotate_refuses_an_action_a_row_does_not_have(db):
    at = page("annotate", db, annotator="alice")
    at.run()
    step = Store.open(db).steps(1)[0]["id"]
    for action in ({"field": "rating", "value": 7}, {"field": "rating", "value": True}, {"field": "note", "value": "x"},
                   {"field": "flagged", "value": "yes"}, "rating", None):
        at.session_state[f"ann_error_{step}"] = None  # each payload must set the message anew
        send_action(at, step, action)
        no_exceptions(at)
        assert "does not have" in step_controls(at, step)["error"]
    assert Store.open(db).annotation("alice", step) is None
    click_step(at, step, "rating", 1)  # a real click afterwards saves and clears the message
    assert step_controls(at, step)["error"] == "" and Store.open(db).annotation("alice", step)["rating"] == 1


def test_annotate_keyboard_bar_acts_on_the_highlighted_step(db):
    at = page("annotate", db, annotator="alice")
    at.run()
    store = Store.open(db)
    steps = [s["id"] for s in store.steps(1)]
    # At the top, with no values and no reflection step: nowhere up, and nowhere those jumps go.
    assert keyboard_bar(at)["disabled"] == ["ann_up", "ann_page_up", "ann_jump_lowest", "ann_jump_disagree",
                                             "ann_jump_reflection"]
    assert "(step 0)" in keyboard_bar(at)["caption"]
    press_key(at, "ann_down")
    assert at.session_state["ann_step"] == 1 and step_controls(at, steps[1])["cursor"]
    for key in ("ann_key_c4", "ann_key_fe", "ann_key_fl", "ann_key_r-1"):
        press_key(at, key)
    label = store.annotation("alice", steps[1])
    assert (label["confidence"], label["first_error"], label["flagged"], label["rating"]) == (4, True, True, -1)
    assert at.session_state["ann_step"] == 2  # rating moves the highlight on
    press_key(at, "ann_up")
    press_key(at, "ann_key_fl")  # a toggle: off again
    assert store.annotation("alice", steps[1])["flagged"] is False
    for junk in ("ann_submit", "ann_key_r7", 3, None):  # not the bar's keys: a message, nothing saved
        at.session_state[f"ann_error_{steps[1]}"] = None
        send_event(at, "ann_keys", "key", junk)
        no_exceptions(at)
        assert "does not have" in step_controls(at, steps[1])["error"]
    assert store.annotation("alice", steps[1])["flagged"] is False and store.annotation("alice", steps[0]) is None


def test_annotate_stop_at_the_first_error_greys_out_later_steps(db):
    at = page("annotate", db, annotator="alice")
    at.run()
    at.toggle(key="ann_stop_mode").set_value(True).run()
    steps = Store.open(db).steps(1)
    click_step(at, steps[0]["id"], "rating", -1)
    assert Store.open(db).annotation("alice", steps[0]["id"])["first_error"] is True
    assert step_controls(at, steps[1]["id"])["greyed"] and not step_controls(at, steps[0]["id"])["greyed"]
    # Highlighted, greyed-out step 1: the bar's rating keys are off, and a click that arrives
    # anyway (sent before the row was redrawn) changes nothing.
    press_key(at, "ann_down")
    assert {"ann_key_r1", "ann_key_fe", "ann_key_c3"} <= set(keyboard_bar(at)["disabled"])
    press_key(at, "ann_key_r1")
    click_step(at, steps[2]["id"], "rating", 1)
    assert Store.open(db).annotation("alice", steps[1]["id"]) is None
    assert Store.open(db).annotation("alice", steps[2]["id"]) is None
    no_exceptions(at)


def test_annotate_blind_mode_hides_automatic_labels_until_submitted(db):
    store = seeded(db)
    step = store.steps(1)[0]
    store.add_rollouts([{"step_id": step["id"], "text": " 18", "correct": True, "model": "tiny-policy"}])
    store.save_annotation("bob", step["id"], rating=-1)
    at = page("annotate", db, annotator="alice")
    at.run()
    shown = " ".join(c.value for c in at.caption)
    assert "MC 1" not in shown and "bob" not in shown and "Blind mode" in shown
    button(at, "Submit").click().run()
    shown = " ".join(c.value for c in at.caption)
    assert "MC 1\\.00" in shown and "bob" in shown
    at.toggle(key="ann_blind_box").set_value(False)
    button(at, "Next").click().run()
    assert "Blind mode" not in " ".join(c.value for c in at.caption)


def test_annotate_random_queue_with_seed(db):
    at = page("annotate", db, annotator="alice")
    at.run()
    at.selectbox(key="ann_mode").set_value("random sample").run()
    at.number_input(key="ann_size").set_value(4).run()
    first = list(at.session_state["ann_queue"])
    assert len(first) == 4
    at.number_input(key="ann_seed").set_value(1).run()
    assert list(at.session_state["ann_queue"]) != first
    at.selectbox(key="ann_mode").set_value("assigned list").run()
    at.text_input(key="ann_assigned").set_value("5, 99").run()
    assert any("no trajectory with id 99" in e.value for e in at.error)


# --- Jobs and data -------------------------------------------------------------------------


def test_jobs_and_data_page(db):
    from core.views.jobs import EstimateRequest, queue_estimate

    store = Store.open(db)
    at = page("jobs_data", db)
    at.run()
    no_exceptions(at)
    assert any(str(db.resolve()) in t or str(db) in t for t in texts(at))
    job_id = queue_estimate(store, EstimateRequest(policy="tiny-policy"), [1])
    at.run()
    assert list(at.dataframe[0].value["status"]) == ["queued"]
    button(at, "Cancel").click().run()
    assert store.get_job(job_id)["status"] == "cancelled"
    assert any(f"job {job_id} cancelled" in s.value for s in at.success)
    button(at, "Retry").click().run()
    assert store.get_job(job_id)["status"] == "queued"
    button(at, "Cancel").click().run()
    button(at, "Cancel").click().run()
    assert any("is not queued or running" in e.value for e in at.error)
    button(at, "Prepare the file").click().run()  # trl, the first format, needs labels
    assert any("needs \\-\\-labels" in e.value for e in at.error)
    [s for s in at.selectbox if s.label == "Format"][1].set_value("jsonl")
    button(at, "Prepare the file").click().run()
    no_exceptions(at)
    assert [d.proto.label for d in at.get("download_button")] == ["Download stepscope-jsonl.jsonl"]


def test_jobs_and_data_queues_a_generate_job(db):
    seeded(db)
    at = page("jobs_data", db)
    at.run()
    [n for n in at.number_input if n.label == "How many problems (first by id)"][0].set_value(3)
    [n for n in at.number_input if n.label == "k (solutions per problem)"][0].set_value(2)
    button(at, "Generate").click().run()
    no_exceptions(at)
    job = Store.open(db).get_job(1)
    assert (job["kind"], job["status"], job["planned"], job["manifest"]["policy"]) == ("generate", "queued", 6, "tiny-policy")
    assert job["manifest"]["problem_ids"] == [1, 2, 3] and job["manifest"]["k"] == 2
    assert any("job 1 queued" in s.value for s in at.success)
    assert list(at.dataframe[0].value["kind"]) == ["generate"]
    at.session_state["policy_engine"] = "openai"  # no server URLs: refused with its cause
    button(at, "Generate").click().run()
    assert any("needs server URLs" in e.value for e in at.error) and len(Store.open(db).list_jobs()) == 1


def test_jobs_and_data_judges_generated_solutions(db):
    store = seeded(db)
    at = page("jobs_data", db, judge_models=["judge-a"])
    at.run()
    assert any("No generated solutions yet" in c.value for c in at.caption)
    problem = store.add_problem("bon", "2 + 2?", "4")
    solutions = [store.add_trajectory(problem, f"Try {i}: the answer is {a}.", source="policy", model="pol",
                                      final_answer=a, correct=a == "4") for i, a in enumerate("45")]
    at.run()
    button(at, "Judge solutions").click().run()
    no_exceptions(at)
    job = store.get_job(1)
    assert (job["kind"], job["manifest"]["model"], job["manifest"]["kind"]) == ("judge", "judge-a", "outcome")
    assert job["manifest"]["trajectory_ids"] == solutions
    assert any("judge jobs 1 queued" in s.value for s in at.success)
    # A trained verifier next to the database is offered too (a constant probe: queueing is tested).
    from core.probes import ConstantProbe, save_probe, verifiers_dir

    folder = verifiers_dir(store) / "probe-tiny"
    save_probe(folder, ConstantProbe(0.5), {"judge": "probe-orm:tiny", "base": "tiny", "kind": "outcome"}, {})
    at.run()
    [picker] = [m for m in at.multiselect if m.label == "Trained verifiers"]
    assert picker.options == ["probe-orm:tiny"]
    picker.set_value([str(folder)])
    at.multiselect[[m.label for m in at.multiselect].index("Verdicts")].set_value([])
    button(at, "Judge solutions").click().run()
    no_exceptions(at)
    probe_job = store.get_job(2)
    assert (probe_job["kind"], probe_job["manifest"]["judge"]) == ("probe-judge", "probe-orm:tiny")
    assert probe_job["manifest"]["trajectory_ids"] == solutions and len(store.list_jobs()) == 2


# --- Compare -------------------------------------------------------------------------------


def test_compare_without_labels_says_so(db):
    seeded(db)
    at = page("compare", db)
    at.run()
    no_exceptions(at)
    assert "No human labels yet" in at.info[0].value


def test_compare_shows_kappa_from_the_labels(db):
    from core.metrics import cohen_kappa

    store = seeded(db)
    steps = store.steps(1)
    for step, outcomes, rating in zip(steps, ([True, True], [True, False], [False, False]), (1, 1, -1)):
        store.add_rollouts({"step_id": step["id"], "text": " x", "correct": ok, "model": "tiny-policy"} for ok in outcomes)
        store.save_annotation("alice", step["id"], rating=rating)
    store.save_annotation("bob", steps[0]["id"], rating=-1)
    at = page("compare", db)
    at.run()
    no_exceptions(at)
    at.selectbox(key="cmp_source").set_value("mc-hard").run()
    at.selectbox(key="cmp_human").set_value("alice").run()
    metrics = {m.label: m.value for m in at.metric}
    expected = cohen_kappa([True, True, False], [True, True, False]).value
    assert metrics["Steps compared"] == "3" and metrics["Cohen's kappa"] == f"{expected:.2f}"
    assert metrics["Accuracy"] == "1.00"
    at.selectbox(key="cmp_human").set_value("bob").run()
    assert {m.label: m.value for m in at.metric}["Steps compared"] == "1"
    assert len(at.dataframe) >= 1  # the disagreement table: bob says wrong, MC hard says fine
    assert list(at.dataframe[0].value["explore"]) == ["/?trajectory=1&step=0"]


def test_compare_offers_each_judge_and_probe_as_a_source(db):
    store = seeded(db)
    steps = store.steps(1)
    for step, rating, p_judge, p_probe in zip(steps, (1, 1, -1), (0.9, 0.3, 0.2), (0.8, 0.6, 0.4)):
        store.save_annotation("alice", step["id"], rating=rating)
        store.add_verdicts([{"step_id": step["id"], "judge": "judge-a", "kind": "step", "p_yes": p_judge}])
        # The kind is what the writer says, not read from the name (which says nothing here).
        store.add_verdicts([{"step_id": step["id"], "judge": "my-verifier", "kind": "step", "p_yes": p_probe}],
                           verifier_kind="probe")
    store.add_verdicts([{"trajectory_id": 1, "judge": "outcome-only", "kind": "outcome", "p_yes": 0.5}])
    at = page("compare", db)
    at.run()
    no_exceptions(at)
    assert at.selectbox(key="cmp_source").options == ["mc-soft", "mc-hard", "judge:judge-a", "probe:my-verifier"]
    at.selectbox(key="cmp_source").set_value("probe:my-verifier").run()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Steps compared"], metrics["Accuracy"], metrics["Cohen's kappa"]) == ("3", "1.00", "1.00")
    at.selectbox(key="cmp_source").set_value("judge:judge-a").run()
    assert {m.label: m.value for m in at.metric}["Accuracy"] == "0.67"  # step 1: alice +1, judge 0.3


# --- Best-of-N -----------------------------------------------------------------------------


def test_best_of_n_page(db):
    store = seeded(db)
    at = page("best_of_n", db)
    at.run()
    no_exceptions(at)
    assert "No policy solutions yet" in at.info[0].value
    problem = store.add_problem("bon", "2 + 2?", "4")
    for i, answer in enumerate(["4", "5", "4"]):
        store.add_trajectory(problem, f"Attempt {i}: the answer is {answer}.", source="policy", model="pol",
                             final_answer=answer, correct=answer == "4")
    at.run()
    no_exceptions(at)
    frame = at.dataframe[0].value
    assert set(frame["method"]) == {"pass@k", "majority vote"} and list(frame["k"].unique()) == [1, 2, 3]


@pytest.mark.parametrize("name", ["home", "models"])
def test_about_and_models_pages_render(db, name):
    at = page(name, db)
    at.run()
    no_exceptions(at)
    assert at.title[0].value in ("StepScope", "Models")
