"""How fast Explore's tree view is on a 10,000-node rollout tree.

Builds a database with one problem whose tree has --nodes nodes (a trajectory of --depth steps,
and random branches off it and off each other, as a long search grows them), 4 to 16 rollouts at
each node, and search marks on a tenth of them. Then times, --repeats times each:

- read: `core.views.tree.tree_view` (the store queries, the choice of nodes to show, the layout);
- spec: chart rows and the Vega-Lite spec (`core.views.charts.tree_chart`);
- draw: the spec drawn to SVG by Vega itself (vl-convert: the same Vega the browser runs, in
  process, no network), standing in for the browser's drawing time;

and reports the median and maximum of read + spec + draw against the 2 s target, with the load
average. Writes benchmarks/results/tree_view.json and the drawn tree as tree_view.png.

    python benchmarks/tree_view.py [--nodes 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.store import Store  # noqa: E402
from core.views.charts import tree_chart  # noqa: E402
from core.views.tree import MAX_NODES, chart_rows, tree_view  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET_SECONDS = 2.0
POLICY = "bench-policy"


def build(path: Path, nodes: int, depth: int, seed: int) -> int:
    """The problem's tree with `nodes` nodes; returns the anchor trajectory's id."""
    rng = random.Random(seed)
    store = Store.open(path)
    problem = store.add_problem("bench", "A shop sells 12 boxes of 8 pens. How many pens?", "96")
    steps = [f"Step {i + 1}: a sound step number {i + 1}." for i in range(depth)]
    trajectory = store.add_trajectory(problem, "\n".join(steps), source="bench")
    paths = [tuple(steps[:d]) for d in range(depth + 1)]
    known = set(paths)  # every prefix is one node (the root is the empty one)
    with store.transaction():
        while len(known) < nodes:
            base = rng.choice(paths)
            branch = base + tuple(f"branch {rng.getrandbits(32):08x} at {len(base) + i}" for i in range(rng.randint(1, 4)))
            store.ensure_node_path(problem, branch)
            new = [branch[:d] for d in range(len(base) + 1, len(branch) + 1)]
            paths.extend(new)
            known.update(new)
        all_nodes = [n["id"] for n in store.problem_nodes(problem)]
        for node in all_nodes:
            n = rng.randint(4, 16)
            p = rng.random()
            ids = store.add_node_rollouts(node, [{"text": "x", "correct": rng.random() < p, "model": POLICY,
                                                  "num_tokens": 20} for _ in range(n)])  # fmt: skip
            if rng.random() < 0.1:
                store.mark_rollout(ids[0], selected=True)
    return trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import vl_convert

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        trajectory = build(Path(folder) / "tree.db", args.nodes, args.depth, seed=0)
        store = Store.open(Path(folder) / "tree.db")
        built = time.perf_counter() - started
        total_nodes = len(store.problem_nodes(store.get_trajectory(trajectory)["problem_id"]))
        vl_convert.vegalite_to_svg(tree_chart([], [], 1))  # start Vega once, as a browser tab has it
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            view = tree_view(store, trajectory, POLICY)
            t1 = time.perf_counter()
            nodes, edges = chart_rows(view, view.path[-1])
            spec = tree_chart(nodes, edges, view.leaves)
            t2 = time.perf_counter()
            vl_convert.vegalite_to_svg(spec)
            t3 = time.perf_counter()
            runs.append({"read": t1 - t0, "spec": t2 - t1, "draw": t3 - t2, "total": t3 - t0})
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "tree_view.png").write_bytes(vl_convert.vegalite_to_png({**spec, "width": 900}, scale=1))
    totals = [r["total"] for r in runs]
    result = {
        "nodes": total_nodes, "shown": len(view.shown), "max_nodes_shown": MAX_NODES, "rollouts": view.rollouts,
        "repeats": args.repeats, "build_seconds": round(built, 1),
        "median": {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]},
        "max_total": round(max(totals), 4), "target_seconds": TARGET_SECONDS,
        "meets_target": max(totals) < TARGET_SECONDS, "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
    }  # fmt: skip
    (RESULTS / "tree_view.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
