"""Monte Carlo tree search with PUCT, the scorer as prior and value, rollouts as simulation.

States are step prefixes; the question is the root. Each candidate holds its scorer score s,
its prior P (s normalised over its siblings; uniform when they all score 0), its visit count N
and its value sum W. One iteration (`expansions` of them in all):

1. Select: from the root, while the current node has children, go to the child maximising
   Q(c) + c_puct * P(c) * sqrt(N(parent)) / (1 + N(c)), where Q(c) = W(c) / N(c), or s(c)
   while N(c) = 0 (the scorer's value stands in until the child has been visited); ties go to
   the earlier child. Stop at a node without children, or at a finished one.
2. Expand: a node without children and not finished gets M children (one engine call, n = M),
   scored in one batch; their scores become its children's priors.
3. Simulate and evaluate: a finished node is worth its own score. Otherwise, with
   rollout_weight lambda > 0, one rollout from the node to the end of the solution is sampled
   and the scorer scores the completed solution's last step (z); the value is
   v = (1 - lambda) * s + lambda * z (AlphaGo's mix of value and rollout). The root has no
   value: its iteration only expands it.
4. Back up: every node on the path gets N += 1, W += v; the root's N += 1.

The answer follows the most visited child from the root (ties: higher Q, then earlier) down to a
node with no visited child; if that node is not finished, the rest of its solution is generated
(one completion, scored) and becomes its child. Nodes on that path are chosen, the rest pruned.
"""

from __future__ import annotations

import math

from core.search.context import BudgetSpent
from core.search.records import SearchRollout, split_steps


def q_value(node) -> float:
    if node.visits:
        return node.value_sum / node.visits
    return node.score if node.score is not None else 0.0


def puct(node, parent_visits: int, c_puct: float) -> float:
    prior = node.prior if node.prior is not None else 0.0
    return q_value(node) + c_puct * prior * math.sqrt(parent_visits) / (1 + node.visits)


def select_child(children, parent_visits: int, c_puct: float):
    return max(children, key=lambda node: (puct(node, parent_visits, c_puct), -node.id))


def set_priors(children) -> None:
    scores = [max(node.score or 0.0, 0.0) for node in children]
    total = sum(scores)
    for node, score in zip(children, scores):
        node.prior = score / total if total > 0 else 1.0 / len(children)


class _Tree:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.children: dict[int | None, list] = {}
        self.root_visits = 0

    def visits(self, node_id: int | None) -> int:
        return self.root_visits if node_id is None else self.ctx.tree.nodes[node_id].visits

    def expand(self, node_id: int | None) -> None:
        [children] = self.ctx.expand([node_id], [self.ctx.config.beam_width])
        self.ctx.score(children)
        set_priors(children)
        self.children[node_id] = children

    def simulate(self, node) -> float:
        """The node's value: its score mixed with the scorer's score of a rollout's end."""
        ctx, weight = self.ctx, self.ctx.config.rollout_weight
        own = node.score if node.score is not None else 0.0
        if node.finished or weight == 0:
            return own
        sample = ctx.sample_rest(node.id)
        steps = ctx.tree.steps(node.id)
        rollout_steps = split_steps([sample.text], ctx.config.step_delimiter)
        graded = ctx.grader.grade(ctx.tree.solution(node.id) + ctx.config.step_delimiter + sample.text)
        ctx.rollouts.append(SearchRollout(tuple(steps), sample.text, graded.answer, graded.correct,
                                          sample.num_tokens, "simulation"))  # fmt: skip
        if not rollout_steps:
            return own
        [end] = ctx.scorer.score(ctx.problem, [steps + rollout_steps])
        ctx.collect_scorer_rollouts()
        return (1 - weight) * own + weight * end

    def iterate(self) -> None:
        nodes, c_puct = self.ctx.tree.nodes, self.ctx.config.c_puct
        path, current = [], None
        while self.children.get(current):
            current = select_child(self.children[current], self.visits(current), c_puct).id
            path.append(current)
            if nodes[current].finished:
                break
        if current is None:
            self.expand(None)
            self.root_visits += 1
            return
        leaf = nodes[current]
        if not leaf.finished:
            self.expand(current)
        value = self.simulate(leaf)
        for node_id in path:
            nodes[node_id].visits += 1
            nodes[node_id].value_sum += value
        self.root_visits += 1

    def answer_path(self) -> list[int]:
        path, current = [], None
        while True:
            visited = [c for c in self.children.get(current, []) if c.visits > 0]
            if not visited:
                return path
            current = max(visited, key=lambda c: (c.visits, q_value(c), -c.id)).id
            path.append(current)


def search(ctx) -> None:
    tree = _Tree(ctx)
    try:
        for _ in range(ctx.config.expansions):
            tree.iterate()
    except BudgetSpent:
        ctx.stopped = "budget"
    path = tree.answer_path()
    if path and not ctx.tree.nodes[path[-1]].finished and ctx.budget_left():
        [[completion]] = ctx.expand([path[-1]], [1], complete=True)
        ctx.score([completion])
        path.append(completion.id)
    on_path = set(path)
    for node in ctx.tree.nodes:
        node.mark = "chosen" if node.id in on_path else "pruned"
    if path and ctx.tree.nodes[path[-1]].finished:
        ctx.finished.append(path[-1])
        ctx.answer_node = path[-1]
