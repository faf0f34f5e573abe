"""What Explore's tree view shows: the rollout tree of the current trajectory's problem, laid out
for a chart, with the nodes a reader can take in at once.

A tree grown by a search can hold 10,000s of nodes; the view shows the current trajectory's path,
then the branches with the most rollouts (best first, at most `top_children` children of a node
beyond the path's), up to `max_nodes`. A node whose children are not all shown says how many are
collapsed. Layout: depth across, leaves down in order (the path's child first, then by
rollouts), a parent level with the middle of its children.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from core.errors import StepScopeError
from core.jobs.estimate import default_sampling
from core.jobs.runner import queue
from core.jobs.tree_search import Anchor, TreeSearchSpec, expand_rollout
from core.mcpe import Counts, step_value
from core.policy import join_context, load_template, policy_context
from core.store import Store

MAX_NODES = 300
TOP_CHILDREN = 6


@dataclass
class TreeNode:
    id: int
    parent_id: int | None
    depth: int
    text: str
    n: int = 0  # rollouts from this node (its visits, in the chart's size)
    correct: int = 0
    visits: int = 0  # rollouts the search selected here (OmegaPRM's N(s))
    on_path: bool = False
    collapsed: int = 0  # children not shown
    x: float = 0.0
    y: float = 0.0
    soft: float | None = None
    low: float = 0.0
    high: float = 1.0


@dataclass
class TreeView:
    problem_id: int
    shown: list[TreeNode]
    path: list[int]  # node ids of the trajectory's steps, root first
    total: int  # nodes in the whole tree
    rollouts: int
    leaves: int = 0
    by_id: dict[int, TreeNode] = field(default_factory=dict)


def tree_view(store: Store, trajectory_id: int, model: str | None, *, max_nodes: int = MAX_NODES,
              top_children: int = TOP_CHILDREN) -> TreeView:  # fmt: skip
    trajectory = store.get_trajectory(trajectory_id)
    if trajectory is None:
        raise StepScopeError(f"trajectory {trajectory_id} does not exist")
    problem_id = trajectory["problem_id"]
    path = store.trajectory_nodes(trajectory_id)
    rows = store.problem_nodes(problem_id)
    counts = store.node_counts(problem_id, model)
    nodes = {r["id"]: TreeNode(r["id"], r["parent_id"], r["depth"], r["text"], *counts.get(r["id"], (0, 0))) for r in rows}
    children: dict[int, list[int]] = {}
    for node in nodes.values():
        if node.parent_id is not None:
            children.setdefault(node.parent_id, []).append(node.id)
    on_path = set(path)
    shown = _choose(nodes, children, path, max_nodes, top_children)
    for node_id in shown:
        node = nodes[node_id]
        node.on_path = node_id in on_path
        node.collapsed = sum(1 for child in children.get(node_id, ()) if child not in shown)
        value = step_value(Counts(node.n, node.correct))
        node.soft, node.low, node.high = value.soft, value.low, value.high
    for node_id, visits in store.node_visits(list(shown)).items():
        nodes[node_id].visits = visits
    leaves = _layout(nodes, children, shown, path[0], on_path)
    ordered = sorted((nodes[i] for i in shown), key=lambda n: (n.depth, n.y))
    return TreeView(problem_id, ordered, path, len(nodes), sum(n.n for n in nodes.values()), leaves,
                    {n.id: n for n in ordered})  # fmt: skip


def _choose(nodes: dict[int, TreeNode], children: dict[int, list[int]], path: list[int], max_nodes: int,
            top_children: int) -> set[int]:  # fmt: skip
    """The path, then best-first by rollouts among the children of shown nodes."""
    shown = set(path)
    frontier: list[tuple[int, int, int]] = []  # (-rollouts, id, rank among siblings)

    def offer(parent: int) -> None:
        kids = sorted((k for k in children.get(parent, ()) if k not in shown), key=lambda k: (-nodes[k].n, k))
        for rank, kid in enumerate(kids[:top_children]):
            heapq.heappush(frontier, (-nodes[kid].n, kid, rank))

    for node_id in path:
        offer(node_id)
    while frontier and len(shown) < max(max_nodes, len(path)):
        _, node_id, _ = heapq.heappop(frontier)
        if node_id in shown:
            continue
        shown.add(node_id)
        offer(node_id)
    return shown


def _layout(nodes: dict[int, TreeNode], children: dict[int, list[int]], shown: set[int], root: int,
            on_path: set[int]) -> int:  # fmt: skip
    """x = depth; leaves get y = 0, 1, 2... in depth-first order; a parent sits mid-way between
    its first and last child. Iterative: a 10,000-step path would overflow Python's recursion."""
    next_leaf = 0
    stack: list[tuple[int, bool]] = [(root, False)]
    while stack:
        node_id, done = stack.pop()
        node = nodes[node_id]
        kids = sorted((k for k in children.get(node_id, ()) if k in shown),
                      key=lambda k: (k not in on_path, -nodes[k].n, k))  # fmt: skip
        node.x = float(node.depth)
        if not kids:
            node.y = float(next_leaf)
            next_leaf += 1
        elif done:
            node.y = (nodes[kids[0]].y + nodes[kids[-1]].y) / 2
        else:
            stack.append((node_id, True))
            stack.extend((kid, False) for kid in reversed(kids))
    return next_leaf


def chart_rows(view: TreeView, selected: int | None) -> tuple[list[dict], list[dict]]:
    """Rows for the tree chart: nodes (position, value, rollouts, path, text) and edges."""
    nodes = [
        {"id": n.id, "x": n.x, "y": n.y, "depth": n.depth, "n": n.n, "value": n.soft, "visits": n.visits,
         "shade": -1.0 if n.soft is None else n.soft,
         "path": n.on_path, "selected": n.id == selected, "collapsed": n.collapsed,
         "label": f"node {n.id}: {n.n} rollouts, value {'none' if n.soft is None else f'{n.soft:.2f}'}",
         "text": (n.text[:77] + "…") if len(n.text) > 80 else n.text}
        for n in view.shown
    ]  # fmt: skip
    edges = [
        {"x": view.by_id[n.parent_id].x, "y": view.by_id[n.parent_id].y, "x2": n.x, "y2": n.y, "path": n.on_path}
        for n in view.shown
        if n.parent_id is not None and n.parent_id in view.by_id
    ]
    return nodes, edges


# --- one node ------------------------------------------------------------------------------


@dataclass
class NodeDetail:
    node: dict
    prefix: str  # the exact text a tree search sends the policy from this node
    value_text: str
    rollouts: list[dict]
    labels: list[str]
    steps: list[dict]  # trajectories' steps that end here


def node_detail(store: Store, trajectory_id: int, node_id: int, model: str | None) -> NodeDetail:
    node = store.get_node(node_id)
    if node is None:
        raise StepScopeError(f"node {node_id} does not exist")
    anchor = Anchor.load(store, trajectory_id)
    prefix = tuple(n["text"] for n in store.node_path(node_id))[1:]
    part, _ = anchor.solution_part(prefix)
    context = policy_context(anchor.trajectory["question"], anchor.trajectory.get("policy_prompt"), load_template())
    rollouts = store.node_rollouts(node_id, model)
    value = step_value(Counts(len(rollouts), sum(1 for r in rollouts if r["correct"])))
    value_text = ("no rollouts yet" if value.n == 0 else
                  f"MC {value.soft:.2f}  [{value.low:.2f}, {value.high:.2f}]  ({value.correct}/{value.n} reach the answer)")  # fmt: skip
    rows = [
        {"rollout": r["id"], "correct": bool(r["correct"]), "answer": r["answer"], "tokens": r["num_tokens"],
         "selected": bool(r.get("selected")), "first error": r.get("first_error"), "branch": r.get("branch_id"),
         "job": r["job_id"], "text": r["text"]}
        for r in rollouts
    ]  # fmt: skip
    labels = [
        f"{a['annotator']} on trajectory {a['trajectory_id']} step {a['idx']}: "
        f"{ {1: '+1', 0: '0', -1: '−1', None: '·'}.get(a['rating'], '·') }" + (" first error" if a["first_error"] else "")
        for a in store.node_labels(node_id)
    ]  # fmt: skip
    return NodeDetail(node, join_context(context, part), value_text, rows, labels, store.node_steps(node_id))


def expand(store: Store, rollout_id: int) -> int:
    """Explore's "Expand rollout": the branch's trajectory id."""
    return expand_rollout(store, rollout_id)


_SAMPLING = default_sampling()


@dataclass(frozen=True)
class TreeSearchRequest:
    """The tree-search form's fields; the defaults are the job's (as the CLI's are)."""

    policy: str
    engine: str
    engine_options: dict
    mode: str = TreeSearchSpec.mode
    budget: int = TreeSearchSpec.budget
    k: int = TreeSearchSpec.k
    depth: int = TreeSearchSpec.depth
    node_id: int | None = None
    max_new_tokens: int = _SAMPLING.max_new_tokens
    temperature: float = _SAMPLING.temperature
    seed: int = _SAMPLING.seed


def queue_tree_search(store: Store, request: TreeSearchRequest, trajectory_id: int) -> int:
    spec = TreeSearchSpec(
        policy=request.policy, trajectory_id=trajectory_id, mode=request.mode, budget=request.budget, k=request.k,
        depth=request.depth, node_id=request.node_id if request.mode == "expand" else None,
        engine=request.engine, engine_options=dict(request.engine_options),
        sampling=default_sampling(request.max_new_tokens, request.temperature, request.seed),
    )  # fmt: skip
    return queue(store, spec)
