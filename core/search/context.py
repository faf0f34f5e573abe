"""What one running search holds: the problem, its parameters, the counted policy and scorer,
and the record of every candidate. Strategies only step the policy and score through it, so
every token and second they spend is counted and every candidate is recorded.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

from core.engines.base import SamplingParams
from core.search.answers import Grader
from core.search.compute import ComputeRecord
from core.search.config import SearchConfig, SearchProblem
from core.search.journal import rollout_holder
from core.search.prompts import continuation_prompt, ends_solution_marker, has_final_answer
from core.search.records import CandidateNode, SearchRollout, SearchTree


class BudgetSpent(Exception):
    """The policy-token budget is spent: the strategy stops where it stands."""


def derive_seed(seed: int, call: int) -> int:
    """The sampling seed of a search's `call`-th engine call: reproducible from the search's seed
    alone, and unrelated between calls."""
    digest = hashlib.blake2b(json.dumps(["search", seed, call]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class SearchContext:
    def __init__(self, problem: SearchProblem, config: SearchConfig, engine, scorer, record: ComputeRecord) -> None:
        self.problem, self.config = problem, config
        self.engine, self.scorer, self.record = engine, scorer, record  # both already journaled and counted
        self.tree = SearchTree(config.step_delimiter)
        self.rollouts: list[SearchRollout] = []
        self.calls = 0
        self.finished: list[int] = []  # final beams, in the order the strategy finished them
        self.answer_node: int | None = None  # a strategy that answers with one path (MCTS) says which
        self.stopped = "done"  # or "budget"
        self.grader = Grader(problem.gold)  # grades against the gold, each distinct answer once

    # -- the policy -------------------------------------------------------------------------

    def budget_left(self) -> bool:
        budget = self.config.token_budget
        return budget is None or self.record.policy_tokens < budget

    def prompt(self, parent: int | None) -> str:
        return continuation_prompt(self.problem.context, self.tree.texts(parent), self.config.step_delimiter)

    def expand(self, parents: Sequence[int | None], counts: Sequence[int], *, complete: bool = False,
               subtrees: Sequence[int | None] | None = None) -> list[list[CandidateNode]]:  # fmt: skip
        """For each parent, `counts[i]` new candidates of one step (or, `complete`, of the rest of
        the solution). Parents that ask for the same count share one engine call; a parent at
        `max_steps - 1` is completed (search-and-learn's last iteration generates to the end).
        Raises BudgetSpent before generating when the token budget is spent."""
        if not self.budget_left():
            raise BudgetSpent()
        subtrees = list(subtrees) if subtrees is not None else [None] * len(parents)
        out: list[list[CandidateNode]] = [[] for _ in parents]
        groups: dict[tuple[int, bool], list[int]] = {}
        for index, (parent, count) in enumerate(zip(parents, counts)):
            depth = 1 if parent is None else self.tree.nodes[parent].depth + 1
            whole = complete or depth >= self.config.max_steps
            if count > 0:
                groups.setdefault((count, whole), []).append(index)
        for (count, whole), indices in groups.items():
            params = SamplingParams(
                n=count, temperature=self.config.temperature, top_p=self.config.top_p,
                max_new_tokens=self.config.max_solution_tokens if whole else self.config.max_step_tokens,
                stop=self.config.solution_stops if whole else (self.config.step_delimiter, *self.config.solution_stops),
                seed=derive_seed(self.config.seed, self.calls),
            )  # fmt: skip
            call = self.calls
            self.calls += 1
            results = self.engine.generate([self.prompt(parents[i]) for i in indices], params)
            for index, samples in zip(indices, results):
                for sample in samples:
                    out[index].append(self._record(parents[index], sample, whole, call, subtrees[index]))
        return out

    def _record(self, parent: int | None, sample, whole: bool, call: int, subtree: int | None) -> CandidateNode:
        text = sample.text
        marker = ends_solution_marker(text, self.config.step_delimiter, self.config.solution_stops)
        if marker:
            text = ""  # the policy ended its solution; what it started after that is not a step
        finished = whole or marker or sample.finish_reason == "length" or has_final_answer(text)
        return self.tree.add(parent, text, sample.num_tokens, sample.finish_reason, finished, call, subtree)

    # -- the scorer -------------------------------------------------------------------------

    def score(self, nodes: Sequence[CandidateNode]) -> None:
        """Score candidates in one batch; an empty candidate (the end of a solution) adds no step
        and takes its parent's score. Ranks are set within the batch (0 = best)."""
        to_score = [node for node in nodes if node.text]
        if to_score:
            scores = self.scorer.score(self.problem, [self.tree.steps(node.id) for node in to_score])
            for node, value in zip(to_score, scores):
                node.score = value
        for node in nodes:
            if not node.text:
                node.score = self.tree.nodes[node.parent].score if node.parent is not None else None
        for rank, node in enumerate(best_first(nodes)):
            node.rank = rank
        self.collect_scorer_rollouts()

    def collect_scorer_rollouts(self) -> None:
        """Move the rollouts an MC scorer sampled (or its journal replayed) into the record."""
        holder = rollout_holder(self.scorer)
        if holder is not None and holder.rollouts:
            self.rollouts.extend(holder.rollouts)
            holder.rollouts.clear()

    def sample_rest(self, parent: int | None):
        """One sample of the rest of the solution after `parent`, kept out of the tree (a
        simulation); counted like every policy call."""
        if not self.budget_left():
            raise BudgetSpent()
        params = SamplingParams(
            n=1, temperature=self.config.temperature, top_p=self.config.top_p,
            max_new_tokens=self.config.max_solution_tokens, stop=self.config.solution_stops,
            seed=derive_seed(self.config.seed, self.calls),
        )  # fmt: skip
        self.calls += 1
        [[sample]] = self.engine.generate([self.prompt(parent)], params)
        return sample


def best_first(nodes: Sequence[CandidateNode]) -> list[CandidateNode]:
    """Highest score first; ties go to the earlier candidate, so a search never depends on how a
    sort breaks ties."""
    return sorted(nodes, key=lambda n: (-(n.score if n.score is not None else float("-inf")), n.id))
