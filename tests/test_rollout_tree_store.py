"""The rollout tree in the store: nodes are step prefixes shared between trajectories, rollouts
pool at them, expanded rollouts become branches, and old databases migrate without loss."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from core.store import MIGRATIONS, Store


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "tree.db")


def _problem(store: Store) -> int:
    return store.add_problem("t", "Tom has 3 apples and buys 5. How many?", "8")


def test_two_trajectories_sharing_a_prefix_pool_their_rollouts_at_its_node(store):
    problem = _problem(store)
    first = store.add_trajectory(problem, "He has 3.\nHe buys 5.\n3 + 5 = 8", source="a")
    second = store.add_trajectory(problem, "He has 3.\nHe buys 5.\nThe answer is 9", source="b")
    third = store.add_trajectory(problem, "He starts with 3.\n3 + 5 = 8", source="c")
    nodes_a, nodes_b, nodes_c = (store.trajectory_nodes(t) for t in (first, second, third))
    assert nodes_a[:3] == nodes_b[:3] and nodes_a[3] != nodes_b[3]  # root, step 0, step 1 shared
    assert nodes_c[0] == nodes_a[0] and nodes_c[1] != nodes_a[1]
    steps_a, steps_b = store.steps(first), store.steps(second)
    # Rollouts from step 1 of each trajectory: 3 (2 right) and 2 (0 right).
    store.add_rollouts([{"step_id": steps_a[1]["id"], "text": f"x{i}", "correct": i < 2, "model": "p"} for i in range(3)])
    store.add_rollouts([{"step_id": steps_b[1]["id"], "text": f"y{i}", "correct": False, "model": "p"} for i in range(2)])
    shared = nodes_a[2]
    assert store.node_counts(problem, "p")[shared] == (5, 2)
    assert store.node_counts(problem, "other").get(shared) is None
    assert len(store.node_rollouts(shared)) == 5
    # Per-step values are unchanged: each step still counts its own rollouts.
    assert store.step_value_counts([steps_a[1]["id"], steps_b[1]["id"]]) == {
        steps_a[1]["id"]: (3, 2), steps_b[1]["id"]: (2, 0)}
    depths = {n["id"]: n["depth"] for n in store.problem_nodes(problem)}
    assert [depths[n] for n in nodes_a] == [0, 1, 2, 3]
    assert len(depths) == 1 + 3 + 1 + 2  # root, a's three, b's last step, c's two


def test_rollouts_at_a_node_without_a_step_and_the_search_marks(store):
    problem = _problem(store)
    path = store.ensure_node_path(problem, ["He has 3.", "He buys 6."])
    assert store.ensure_node_path(problem, ["He has 3.", "He buys 6."]) == path  # idempotent
    ids = store.add_node_rollouts(path[2], [{"text": "3 + 6 = 9", "correct": False, "model": "p", "num_tokens": 7}])
    store.mark_rollout(ids[0], selected=True)
    store.mark_rollout(ids[0], first_error=1)
    assert store.problem_marks(problem) == [{"rollout_id": ids[0], "selected": True, "first_error": 1, "branch_id": None}]
    assert store.node_visits([path[2], path[1]]) == {path[2]: 1, path[1]: 0}
    assert [n["text"] for n in store.node_path(path[2])] == ["", "He has 3.", "He buys 6."]


def test_a_branch_creates_exactly_the_nodes_of_its_new_steps(store):
    from core.jobs.tree_search import expand_rollout

    problem = _problem(store)
    trajectory = store.add_trajectory(problem, "He has 3.\nHe buys 5.\n3 + 5 = 8", source="a")
    step = store.steps(trajectory)[0]
    store.add_rollouts([{"step_id": step["id"], "text": "He buys 5 more.\nSo 3 + 5 = 8.\nThe answer is 8",
                         "correct": True, "model": "p"}])  # fmt: skip
    [rollout] = store.node_rollouts(step["node_id"])
    before = {n["id"] for n in store.problem_nodes(problem)}
    branch = expand_rollout(store, rollout["id"])
    after = store.problem_nodes(problem)
    new = [n for n in after if n["id"] not in before]
    assert [n["text"] for n in new] == ["He buys 5 more.", "So 3 + 5 = 8.", "The answer is 8"]
    assert [n["depth"] for n in new] == [2, 3, 4]
    assert new[0]["parent_id"] == step["node_id"]
    row = store.get_trajectory(branch)
    assert row["source"] == "rollout" and row["parent_rollout_id"] == rollout["id"]
    assert row["parent_node_id"] == step["node_id"] and row["correct"] is True
    assert store.trajectory_nodes(branch)[:2] == store.trajectory_nodes(trajectory)[:2]
    assert expand_rollout(store, rollout["id"]) == branch  # twice: the same branch, no new nodes
    assert len(store.problem_nodes(problem)) == len(after)
    assert store.problem_marks(problem)[0]["branch_id"] == branch


def test_migration_keeps_every_rollout_and_every_value(tmp_path):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path))
    MIGRATIONS.apply(db, stop_before="0004_rollout_tree")
    assert "nodes" not in db.table_names()
    conn = db.conn
    problem = conn.execute("SELECT id FROM problems ORDER BY id LIMIT 1").fetchone()[0]
    stamp = "2025-01-01T00:00:00"
    rows = []
    for t, solution in enumerate(["A.\nB.\nC.", "A.\nB.\nD.", "E."]):
        conn.execute("INSERT INTO trajectories (key, problem_id, source, solution, created_at) VALUES (?, ?, 'x', ?, ?)",
                     [f"t{t}", problem, solution, stamp])
        tid = conn.execute("SELECT max(id) FROM trajectories").fetchone()[0]
        conn.execute("INSERT INTO segmentations (trajectory_id, rule, key, created_at) VALUES (?, 'line', ?, ?)",
                     [tid, f"s{t}", stamp])
        sid = conn.execute("SELECT max(id) FROM segmentations").fetchone()[0]
        conn.execute("UPDATE trajectories SET current_segmentation_id = ? WHERE id = ?", [sid, tid])
        offset = 0
        for idx, text in enumerate(solution.split("\n")):
            conn.execute("INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char, end_char)"
                         " VALUES (?, ?, ?, ?, ?, ?)", [sid, tid, idx, text, offset, offset + len(text)])
            offset += len(text) + 1
            step = conn.execute("SELECT max(id) FROM steps").fetchone()[0]
            for r in range(idx + 2):
                rows.append((f"r{step}-{r}", step, f"text {step} {r}", int((step + r) % 3 == 0), 5 + r, "pol"))
    conn.executemany("INSERT INTO rollouts (key, step_id, text, correct, num_tokens, model, created_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, '2025')", rows)
    conn.commit()
    before = conn.execute("SELECT id, key, step_id, text, correct, num_tokens, model FROM rollouts ORDER BY id").fetchall()
    values_before = conn.execute("SELECT * FROM step_values ORDER BY step_id").fetchall()
    conn.close()

    store = Store.open(path)
    assert "0004_rollout_tree" in store.applied_migrations()
    after = store.conn.execute(
        "SELECT id, key, step_id, text, correct, num_tokens, model FROM rollouts ORDER BY id").fetchall()
    assert after == before and len(after) == len(rows)
    assert store.conn.execute("SELECT * FROM step_values ORDER BY step_id").fetchall() == values_before
    # Every rollout hangs at its step's node; the two trajectories that start "A.", "B." share
    # those nodes, so the node values pool both trajectories' rollouts.
    assert store.conn.execute("SELECT COUNT(*) FROM rollouts r JOIN steps s ON s.id = r.step_id"
                              " WHERE r.node_id IS NOT s.node_id OR s.node_id IS NULL").fetchone()[0] == 0
    counts = store.node_counts(problem, "pol")
    first, second = 1, 2  # the sample set brings problems only, so these are the first two trajectories
    a, b = store.trajectory_nodes(first), store.trajectory_nodes(second)
    assert a[1:3] == b[1:3]
    by_step = {row[0]: (row[2], row[3]) for row in values_before}
    steps_a, steps_b = store.steps(first), store.steps(second)
    for k in range(2):
        n = by_step[steps_a[k]["id"]][0] + by_step[steps_b[k]["id"]][0]
        correct = by_step[steps_a[k]["id"]][1] + by_step[steps_b[k]["id"]][1]
        assert counts[a[k + 1]] == (n, correct)
    assert sum(n for n, _ in counts.values()) == len(rows)
    # The migrated database takes new trajectories and rollouts as a fresh one does.
    new = store.add_trajectory(problem, "A.\nZ.", source="y")
    assert store.trajectory_nodes(new)[1] == a[1]
