"""Explore's tree view model: the path is always shown, the rest best-first by rollouts up to the
limit, collapsed children counted, the layout puts parents between their children, and the chart
keeps nodes that have no rollouts yet."""

from __future__ import annotations

from core.store import Store
from core.views.charts import picked_node, tree_chart
from core.views.tree import chart_rows, node_detail, tree_view


def test_tree_view_shows_the_path_and_the_best_branches(tmp_path):
    store = Store.open(tmp_path / "view.db")
    problem = store.add_problem("v", "Q?", "1")
    trajectory = store.add_trajectory(problem, "a\nb\nc", source="x")
    path = store.trajectory_nodes(trajectory)
    # Ten branches off step "a", with 1..10 rollouts each.
    branch_nodes = []
    for i in range(10):
        node = store.ensure_node_path(problem, ["a", f"alt {i}"])[-1]
        store.add_node_rollouts(node, [{"text": "t", "correct": j % 2 == 0, "model": "p"} for j in range(i + 1)])
        branch_nodes.append(node)
    view = tree_view(store, trajectory, "p", max_nodes=7, top_children=10)
    shown = {n.id for n in view.shown}
    assert set(path) <= shown and len(shown) == 7
    assert shown - set(path) == set(branch_nodes[-3:])  # the three with the most rollouts
    assert view.by_id[path[1]].collapsed == 7 and view.total == 14 and view.rollouts == 55
    for node in view.shown:
        kids = [k for k in view.shown if k.parent_id == node.id]
        if kids:
            assert min(k.y for k in kids) <= node.y <= max(k.y for k in kids)
            assert all(k.x == node.x + 1 for k in kids)
    assert view.by_id[path[1]].on_path and not view.by_id[branch_nodes[-1]].on_path
    nodes, edges = chart_rows(view, selected=path[2])
    assert len(nodes) == 7 and len(edges) == 6
    empty = next(row for row in nodes if row["id"] == path[3])
    assert empty["value"] is None and empty["shade"] == -1.0 and empty["label"].startswith(f"node {path[3]}:")
    spec = tree_chart(nodes, edges, view.leaves)
    assert spec["layer"][1]["encoding"]["size"]["scale"]["domain"] == [0, 10]
    assert picked_node({"selection": {"node": [{"id": path[2]}]}}) == path[2]
    assert picked_node({"selection": {}}) is None
    detail = node_detail(store, trajectory, branch_nodes[-1], "p")
    assert len(detail.rollouts) == 10 and detail.value_text.startswith("MC 0.50")
    assert detail.prefix.endswith("a\nalt 9\n")
