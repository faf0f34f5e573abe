"""Exports from the rollout tree, on a hand-built tree: per-node labels in TRL's stepwise shape,
and sibling-step preference pairs that `datasets` loads as DPO data; and the `tree` commands."""

from __future__ import annotations

import json

import pytest

from cli_runner import assert_one_line_error, run_cli
from core.formats import export_file
from core.formats.tree import preference_pairs
from core.store import Store

QUESTION = "Tom has 3 apples and buys 5. How many?"


def _rollouts(store: Store, node: int, correct: int, n: int = 8) -> None:
    store.add_node_rollouts(node, [{"text": f"r{i}", "correct": i < correct, "model": "p"} for i in range(n)])


@pytest.fixture
def tree(tmp_path):
    """root -> A (6/8), B (1/8), C (4/8), D (none) -> D1 (2/8); A -> A1 (8/8), A2 (0/8)."""
    store = Store.open(tmp_path / "tree.db")
    problem = store.add_problem("hand", QUESTION, "8")
    nodes = {}
    for path in (["A", "A1"], ["A", "A2"], ["B"], ["C"], ["D", "D1"]):
        ids = store.ensure_node_path(problem, path)
        nodes.update({name: node for name, node in zip(path, ids[1:])})
        nodes["root"] = ids[0]
    for name, correct in (("A", 6), ("B", 1), ("C", 4), ("A1", 8), ("A2", 0), ("D1", 2), ("root", 5)):
        _rollouts(store, nodes[name], correct)
    return store, nodes


def test_preference_pairs_round_trip_through_datasets(tree, tmp_path):
    import datasets  # a declared test dependency (pyproject.toml): its absence fails, never skips

    store, _ = tree
    out = tmp_path / "pairs.jsonl"
    result = run_cli("tree", "pairs", str(out), "--margin", "0.3", "--db", str(store.path))
    assert result.returncode == 0, result.stderr
    assert "wrote 3 pairs" in result.stdout
    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    # Siblings under the root: A-B (0.625) and C-B (0.375) differ by more than 0.3, A-C (0.25) does
    # not; under A: A1-A2 (1.0). D has no rollouts, so no value to compare.
    assert loaded.num_rows == 3
    assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)
    got = sorted((row["chosen"], row["rejected"]) for row in loaded)
    assert got == [("A", "B"), ("A1", "A2"), ("C", "B")]
    for row in loaded:
        assert isinstance(row["prompt"], str) and row["prompt"].startswith(QUESTION)
        assert row["chosen_value"] - row["rejected_value"] > 0.3
    under_a = next(row for row in loaded if row["chosen"] == "A1")
    assert under_a["prompt"] == QUESTION + "\n\nA\n"
    assert len(list(preference_pairs(store, 0.6))) == 2  # A-B and A1-A2 only
    assert len(list(preference_pairs(store, 0.0, model="someone else"))) == 0


def test_node_labels_export_in_trl_stepwise_shape(tree, tmp_path):
    store, _ = tree
    out = tmp_path / "labels.jsonl"
    assert export_file(store, "tree-trl", out, labels="mc-soft:0.5") == 5
    rows = sorted((tuple(r["completions"]), tuple(r["labels"])) for r in map(json.loads, out.read_text().splitlines()))
    assert rows == [
        (("A", "A1"), (True, True)), (("A", "A2"), (True, False)), (("B",), (False,)), (("C",), (True,)),
        (("D\nD1",), (False,)),  # D has no rollouts: its step joins D1's completion
    ]  # fmt: skip
    hard = [json.loads(line) for line in export_path(store, tmp_path, "mc-hard").read_text().splitlines()]
    assert sorted(r["labels"] for r in hard) == [[True], [True], [True], [True, False], [True, True]]


def export_path(store: Store, folder, labels: str):
    out = folder / f"{labels}.jsonl"
    export_file(store, "tree-trl", out, labels=labels)
    return out


def test_tree_commands(tmp_path):
    db = tmp_path / "cli.db"
    store = Store.open(db)
    problem = store.list_problems()[0]["id"]
    trajectory = store.add_trajectory(problem, "First.\nSecond.", source="ref")
    step = store.steps(trajectory)[0]
    store.add_rollouts([{"step_id": step["id"], "text": "Next.\nThe answer is 3", "correct": False, "model": "p"}])
    rollout = store.node_rollouts(step["node_id"])[0]["id"]
    result = run_cli("tree", "expand", str(rollout), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert f"rollout {rollout} is trajectory" in result.stdout and "(3 steps)" in result.stdout
    shown = run_cli("tree", "show", "--trajectory", str(trajectory), "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "Next." in shown.stdout and "5 nodes, 1 rollouts" in shown.stdout
    assert_one_line_error(run_cli("tree", "expand", "999", "--db", str(db)), "rollout 999 does not exist")
    bad = run_cli("tree", "search", "--trajectory", str(trajectory), "--mode", "sideways", "--db", str(db))
    assert_one_line_error(bad, "mode")
