"""Explore on imported data (issue 24, item 8): a last step whose value the graded outcome
decides, a PRM800K solution its labeller stopped at an error, and PRM800K's other rated candidates."""

from __future__ import annotations

import json

from core.formats import import_file
from core.store import Store
from core.views.explore import outcome_text, step_cards
from formats_samples import PRM800K


def test_the_last_steps_value_is_its_graded_outcome_until_rollouts_exist(tmp_path):
    store = Store.open(tmp_path / "outcome.db")
    problem = store.add_problem("t", "What is 2 + 2?", "4")
    right = store.add_trajectory(problem, "2 + 2 = 4.\nThe answer is 4.", source="test", final_answer="4", correct=True)
    wrong = store.add_trajectory(problem, "2 + 2 = 5.\nThe answer is 5.", source="test", final_answer="5", correct=False)
    cut = store.add_trajectory(problem, "2 + 2 is\nfive", source="test", correct=False)  # graded, no final answer
    cards = step_cards(store, right, None)
    assert cards[0].value_text == "no rollouts yet"
    assert cards[-1].value_text == "value 1 without rollouts: this prefix is the whole solution, graded right"
    assert step_cards(store, wrong, None)[-1].value_text.startswith("value 0 without rollouts")
    assert step_cards(store, cut, None)[-1].value_text == "no rollouts yet"
    last = store.steps(right)[-1]["id"]
    store.add_rollouts([{"step_id": last, "text": " 4", "correct": True, "model": "m"}])
    assert step_cards(store, right, "m")[-1].value_text.startswith("MC 1.00")  # stored rollouts speak for themselves


def test_prm800k_found_error_and_alternatives_are_shown(tmp_path):
    source = tmp_path / "prm800k.jsonl"
    source.write_text("\n".join(json.dumps(record) for record in PRM800K) + "\n")
    store = Store.open(tmp_path / "prm.db")
    import_file(store, source, "prm800k")
    trajectories = [store.get_trajectory(t["id"]) for t in store.list_trajectories()]
    [trajectory] = [t for t in trajectories if t["meta"].get("finish_reason") == "found_error"]
    assert "none: the labeller stopped at a step rated −1 (PRM800K found_error)" in outcome_text(trajectory)
    assert "does not reach the gold answer" in outcome_text(trajectory)
    cards = step_cards(store, trajectory["id"], None)
    assert [card.alternatives for card in cards] == [[], [], [{"text": "So $2 + 12 = 14$.", "rating": 1, "flagged": False}]]
