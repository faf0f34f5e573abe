"""Exports from the rollout tree: per-node labels as PRM training data, and step-level
preference pairs from sibling steps (rStar-Math-style process preferences).

`tree-trl` (an exporter): TRL stepwise supervision rows, one per labelled leaf of each problem's
tree (a node with rollouts and no descendant with rollouts): `prompt` is the question,
`completions` the path from the root cut at every labelled node (a completion is the steps since
the previous labelled node, joined by newlines: nodes without rollouts, which a binary search
skips over, have no label of their own), `labels` each labelled node's label from the node's
pooled rollouts (`--labels mc-hard` or `mc-soft:T`), and `values` each one's soft value.

Preference pairs (`stepscope tree pairs`): for every node, each two children with rollouts
whose soft values differ by more than the margin give one row: `prompt` (the question, a blank
line, then the node's steps one per line, each ending in a newline), `chosen` (the better
child's step), `rejected` (the worse one's), the two values and the problem id. This is the
prompt/chosen/rejected shape TRL's DPO trainer reads.
"""

from __future__ import annotations

from itertools import combinations
from operator import itemgetter
from pathlib import Path
from typing import Iterator

from core.errors import StepScopeError
from core.formats.base import Exporter, ExportOptions
from core.formats.labels import LabelSource
from core.formats.output import write_jsonl
from core.formats.sorted_streams import join_sorted
from core.store import Store

DEFAULT_MARGIN = 0.3


def _trees(store: Store, dataset: str | None, model: str | None) -> Iterator[tuple[dict, dict, dict, dict]]:
    """(problem, its nodes by id, (rollouts, correct ones) of each node with rollouts of `model`
    (any model's if None), each node's children) for each problem with rollouts at any node, by
    id: two streams ordered by problem (core.store.export), merged in one pass, one tree held at a
    time. Nodes come parents first (by depth, then id), and children in that order."""
    for problem, rows in join_sorted(store.tree_problem_stream(dataset=dataset), itemgetter("id"),
                                     (store.tree_nodes(model, dataset=dataset), itemgetter(0))):  # fmt: skip
        nodes: dict[int, dict] = {}
        counts: dict[int, tuple[int, int]] = {}
        children: dict[int | None, list[int]] = {}
        for _, node_id, parent_id, depth, text, n, correct in rows:
            nodes[node_id] = {"id": node_id, "parent_id": parent_id, "depth": depth, "text": text}
            if n:
                counts[node_id] = (int(n), int(correct))
            children.setdefault(parent_id, []).append(node_id)
        yield problem, nodes, counts, children


def _label(n: int, correct: int, source: LabelSource) -> bool:
    return correct > 0 if source.kind == "mc-hard" else correct / n >= source.threshold


def label_rows(store: Store, options: ExportOptions, model: str | None = None) -> Iterator[dict]:
    source = options.labels
    if source is None or source.kind not in ("mc-hard", "mc-soft"):
        raise StepScopeError("tree exports label nodes by their rollouts: use --labels mc-hard or mc-soft:THRESHOLD")
    for problem, nodes, counts, _ in _trees(store, options.dataset, model):
        has_labelled_below: set[int] = set()
        for node_id in sorted(nodes, key=lambda i: -nodes[i]["depth"]):  # children before parents
            if node_id in counts or node_id in has_labelled_below:
                parent = nodes[node_id]["parent_id"]
                if parent is not None:
                    has_labelled_below.add(parent)
        for leaf in sorted(counts):
            if leaf in has_labelled_below or nodes[leaf]["depth"] == 0:
                continue
            path = []
            node_id = leaf
            while node_id is not None and nodes[node_id]["depth"] > 0:
                path.append(nodes[node_id])
                node_id = nodes[node_id]["parent_id"]
            path.reverse()
            completions, labels, values, pending = [], [], [], []
            for node in path:
                pending.append(node["text"])
                if node["id"] in counts:
                    n, correct = counts[node["id"]]
                    completions.append("\n".join(pending))
                    labels.append(_label(n, correct, source))
                    values.append(correct / n)
                    pending = []
            yield {"prompt": problem["question"], "completions": completions, "labels": labels, "values": values}


def preference_pairs(store: Store, margin: float = DEFAULT_MARGIN, *, model: str | None = None,
                     dataset: str | None = None) -> Iterator[dict]:  # fmt: skip
    if not 0 <= margin < 1:
        raise StepScopeError(f"the value margin is between 0 and 1, not {margin:g}")
    for problem, nodes, counts, children in _trees(store, dataset, model):
        for parent_id, kids in children.items():
            if parent_id is None:
                continue
            valued = [(counts[k][1] / counts[k][0], k) for k in sorted(kids) if k in counts]
            if len(valued) < 2:
                continue
            steps = []
            node_id = parent_id
            while nodes[node_id]["depth"] > 0:
                steps.append(nodes[node_id]["text"])
                node_id = nodes[node_id]["parent_id"]
            prompt = problem["question"] + "\n\n" + "".join(f"{step}\n" for step in reversed(steps))
            for (value_a, a), (value_b, b) in combinations(valued, 2):
                if abs(value_a - value_b) <= margin or nodes[a]["text"] == nodes[b]["text"]:
                    continue
                (high, chosen), (low, rejected) = sorted([(value_a, a), (value_b, b)], reverse=True)
                yield {"prompt": prompt, "chosen": nodes[chosen]["text"], "rejected": nodes[rejected]["text"],
                       "chosen_value": high, "rejected_value": low, "problem_id": problem["id"]}  # fmt: skip


def export_labels(store: Store, out: Path, options: ExportOptions) -> int:
    return write_jsonl(out, label_rows(store, options))


def export_pairs(store: Store, out: Path, margin: float = DEFAULT_MARGIN, *, model: str | None = None,
                 dataset: str | None = None) -> int:  # fmt: skip
    return write_jsonl(out, preference_pairs(store, margin, model=model, dataset=dataset))


EXPORTER = Exporter("tree-trl", "rollout-tree node labels as TRL stepwise supervision, JSON lines", True, export_labels)
