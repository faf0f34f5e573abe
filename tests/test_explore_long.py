"""Explore on a long reasoning trace (issue 26): the value chart as a minimap of the whole
trajectory, a window of 20 steps that follows the selected one, jumps, and quiet runs collapsed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from core.views.review_window import CONTEXT_BEFORE, MIN_COLLAPSED_RUN, Run, minimap_rows, runs, window_cards

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

N = 300
WRONG_FROM = 180  # rollouts from here on never reach the answer


@pytest.fixture
def long_db(tmp_path, monkeypatch):
    path = tmp_path / "data" / "long.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    store = Store.open(path)
    problem = store.add_problem("long", "What is the running total?", "7")
    solution = "\n\n".join(f"Wait, recheck step {i}." if i % 50 == 7 else f"Add one more: step {i}." for i in range(N))
    tid = store.add_trajectory(problem, solution, source="synth", rule="paragraph")
    steps = store.steps(tid)
    store.add_rollouts([{"step_id": steps[i]["id"], "text": "x", "correct": i < WRONG_FROM and k == 0,
                         "model": "tiny-policy"} for i in range(0, N, 10) for k in range(4)])  # fmt: skip
    store.save_annotation("bob", steps[5]["id"], rating=1)
    return path, tid, steps


def explore(path: Path, tid: int) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "explore.py"), default_timeout=60)
    at.session_state["db_path"] = str(path)
    at.session_state["policy_model"] = "tiny-policy"
    at.session_state["explore_tid"] = tid
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def button(at: AppTest, label: str):
    [found] = [b for b in at.button if b.label == label]
    return found


def minimap_spec(at: AppTest) -> str:
    """The value chart's spec: the chart whose first layer draws a column per step."""
    [spec] = [c.proto.spec for c in at.get("vega_lite_chart") if '"name": "columns"' in c.proto.spec]
    return spec


def plain(markdown: str) -> str:
    """A message's text, markdown escapes dropped."""
    return markdown.replace("\\", "")


def card_headers(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**Step ")]


def test_a_long_trajectory_shows_a_minimap_and_a_window_and_jumps(long_db):
    path, tid, steps = long_db
    at = explore(path, tid)
    assert f'"domain": [-0.5, {N - 0.5}]' in minimap_spec(at)  # the whole trajectory, to jump from
    values, labels = minimap_rows(Store.open(path), Store.open(path).get_trajectory(tid), "tiny-policy")
    assert [row["step"] for row in values] == list(range(0, N, 10)) and [row["step"] for row in labels] == [5]
    assert [row["value"] for row in values] == [0.25] * (WRONG_FROM // 10) + [0.0] * ((N - WRONG_FROM) // 10)
    assert any(f"steps 0–19 of {N}" in c.value for c in at.caption)
    # Steps 0-19: step 0 selected, step 5 labelled, steps 0/10 sampled, 7 a reflection with nothing on it.
    assert card_headers(at)[0].startswith("**Step 0**") and len(card_headers(at)) < 20
    assert any(e.label.startswith("Steps 11–19: 9 steps with no label") for e in at.expander)
    button(at, "First error").click().run()
    assert at.session_state["explore_step"] == WRONG_FROM
    assert any(f"steps {WRONG_FROM - CONTEXT_BEFORE}–{WRONG_FROM - CONTEXT_BEFORE + 19} of {N}" in c.value
               for c in at.caption)  # fmt: skip
    button(at, "Next reflection").click().run()
    assert at.session_state["explore_step"] == 207
    button(at, "Lowest value").click().run()
    assert at.session_state["explore_step"] == WRONG_FROM
    # A far step (the chart's click or the step box) opens the window there, with context before it.
    at.number_input(key="ex_step_input").set_value(290).run()
    assert at.session_state["explore_step"] == 290 and any(f"steps 280–299 of {N}" in c.value for c in at.caption)
    assert [h.value for h in at.subheader][0] == "Step 290: prefix and rollouts"
    assert not at.exception


def test_quiet_runs_collapse_and_the_selected_step_never_does(long_db):
    path, tid, steps = long_db
    store = Store.open(path)
    trajectory = store.get_trajectory(tid)
    cards = window_cards(store, trajectory, N, "tiny-policy", 0, 20)
    found = runs(cards, selected=13)
    shapes = [(run.cards[0].idx, len(run.cards), run.collapsed) for run in found]
    # 0 (values), 1-4 quiet, 5 (bob's label), 6-9 quiet, 10 (values), 11-12, 13 selected, 14-19 quiet.
    assert shapes == [(0, 1, False), (1, 4, True), (5, 1, False), (6, 4, True), (10, 1, False), (11, 1, False),
                      (12, 1, False), (13, 1, False), (14, 6, True)]  # fmt: skip
    assert MIN_COLLAPSED_RUN == 4 and isinstance(found[1], Run)
    assert found[-1].title == "Steps 14–19: 6 steps with no label, value or verdict"


def test_explore_switches_the_splitter_and_back_with_labels_moved(long_db):
    path, tid, steps = long_db
    at = explore(path, tid)
    assert at.selectbox(key="ex_split_rule").value == "paragraph"  # the current segmentation first
    at.selectbox(key="ex_split_rule").set_value("sentence-merged")
    at.checkbox(key="ex_split_move").check()
    button(at, "Split").click().run()
    assert not at.exception
    store = Store.open(path)
    assert store.get_trajectory(tid)["rule"] == "sentence-merged" and len(store.steps(tid)) < N
    [done] = [plain(s.value) for s in at.success]
    assert "cut by 'sentence-merged'" in done and "a new segmentation" in done
    assert "labels moved: 1, did not map: 0" in done  # bob's label on a paragraph, inside a merged step
    # A typed rule wins over the list; a bad one is one line, and nothing changes.
    at.text_input(key="ex_split_rule_text").set_value("sentence-merged:400-80")
    button(at, "Split").click().run()
    assert "need 1 <= MIN <= MAX" in plain(at.error[0].value) and store.get_trajectory(tid)["rule"] == "sentence-merged"
    at.text_input(key="ex_split_rule_text").set_value("")
    at.selectbox(key="ex_split_rule").set_value("paragraph")
    button(at, "Split").click().run()
    assert "an existing segmentation, current again" in plain(at.success[0].value)
    assert [s["id"] for s in store.steps(tid)] == [s["id"] for s in steps]
    assert any(f"steps 0–19 of {N}" in c.value for c in at.caption)  # the long view again, from step 0


def test_only_the_organiser_may_switch_the_splitter(long_db, monkeypatch):
    """On a shared server an invited annotator or viewer is not offered the switch (its callback,
    which checks the gate again, is registered only where the form is drawn)."""
    from datetime import timedelta

    from core.views.access import Identity

    path, tid, steps = long_db
    monkeypatch.setenv("STEPSCOPE_SERVED_REMOTELY", "1")
    store = Store.open(path)
    for role in ("annotator", "viewer"):
        invitation, _ = store.create_invitation(f"someone-{role}", role, timedelta(days=1))
        at = AppTest.from_file(str(REPO / "pages" / "explore.py"), default_timeout=60)
        at.session_state["db_path"] = str(path)
        at.session_state["access_identity"] = Identity(role, f"someone-{role}", invitation.id, path.name)
        at.session_state["explore_tid"] = tid
        at.run()
        assert not at.exception and not [s for s in at.selectbox if s.key == "ex_split_rule"]
    assert store.get_trajectory(tid)["rule"] == "paragraph"


def test_a_long_trajectory_offers_the_first_error_search_with_its_budget_first(long_db):
    path, tid, steps = long_db
    at = explore(path, tid)
    [strategy] = [s for s in at.selectbox if s.label == "Strategy"]
    assert strategy.value == "first-error"
    assert any(f"on its {N} steps: fixed N samples {16 * N:,} rollouts" in c.value.replace("\\", "")
               and "the first-error search at most 144" in c.value.replace("\\", "") for c in at.caption)  # fmt: skip
    button(at, "Estimate values").click().run()
    [job] = Store.open(path).list_jobs()
    assert job["manifest"]["strategy"]["strategy"] == "first-error"
