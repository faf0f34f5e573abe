"""What a search leaves behind: every candidate it considered, and the beams it finished.

Records are plain dataclasses, written to map onto the rollout tree (core/store/nodes.py): a
node of the store is (problem, step prefix) with its depth and step text, keyed by its parent's
key and its text. A candidate here is one generated piece hanging from a parent candidate (or
from the question, `parent=None`): usually one step; a completion (a best-of-N sample, the last
iteration of a beam, an MCTS completion) may hold several steps, which `SearchTree.steps`
splits at the delimiter and strips exactly as the "line" splitter does, so the store path is
`ensure_path(problem_id, tree.steps(node_id))`.

Two candidates with the same text under the same parent are two records here (the search spent
tokens on each) and one node in the store, which pools them. An empty candidate is the policy
ending its solution; it holds tokens and a mark but adds no step, so it maps to its parent's node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from core.search.compute import ComputeRecord

# chosen: kept by the search (expanded further, or part of a final beam); pruned: considered and
# dropped (below the beam's cut, rejected, not the best of a DVTS expansion); pending: not yet
# decided (a search stopped by its budget leaves its open frontier pending).
MARKS = ("chosen", "pruned", "pending")


@dataclass
class CandidateNode:
    id: int  # also the order in which the search generated it
    parent: int | None  # None: a child of the question (the root)
    depth: int  # hops from the root: 1 for a first step
    text: str  # exactly as generated (leading space and all); the prompt continues this text
    num_tokens: int
    finish_reason: str
    finished: bool  # ends its solution (a final answer, an empty step, the last depth, a length stop)
    call: int  # which engine call generated it (candidates of one call were sampled together)
    score: float | None = None  # the guiding scorer's score of its newest step
    rank: int | None = None  # 0 = best among the candidates scored in the same batch
    mark: str = "pending"
    subtree: int | None = None  # DVTS: which independent subtree it belongs to
    prior: float | None = None  # MCTS: P(s, a), its score normalised over its siblings
    visits: int = 0  # MCTS: N(s, a)
    value_sum: float = 0.0  # MCTS: W(s, a)


@dataclass(frozen=True)
class FinalBeam:
    node: int  # the candidate that ends it
    solution: str  # the whole solution text (steps joined by the delimiter)
    answer: str | None
    correct: bool
    score: float | None  # the scorer's score of its last step (search-and-learn's "last" aggregation)


@dataclass(frozen=True)
class SearchRollout:
    """A continuation sampled to the end outside the tree: an MC scorer's rollouts, an MCTS
    simulation. `prefix` is the step path it continues (the store's node for it)."""

    prefix: tuple[str, ...]
    text: str
    answer: str | None
    correct: bool
    num_tokens: int
    source: str  # "scorer" | "simulation"


@dataclass
class SearchTree:
    delimiter: str
    nodes: list[CandidateNode] = field(default_factory=list)

    def add(self, parent: int | None, text: str, num_tokens: int, finish_reason: str, finished: bool, call: int,
            subtree: int | None = None) -> CandidateNode:  # fmt: skip
        depth = 1 if parent is None else self.nodes[parent].depth + 1
        node = CandidateNode(len(self.nodes), parent, depth, text, num_tokens, finish_reason, finished, call,
                             subtree=subtree)  # fmt: skip
        self.nodes.append(node)
        return node

    def lineage(self, node_id: int | None) -> list[CandidateNode]:
        """The candidates from the first step down to `node_id` (empty for the root)."""
        chain = []
        while node_id is not None:
            node = self.nodes[node_id]
            chain.append(node)
            node_id = node.parent
        return chain[::-1]

    def texts(self, node_id: int | None) -> list[str]:
        """The raw texts along the path, as the policy continues them."""
        return [node.text for node in self.lineage(node_id)]

    def steps(self, node_id: int | None) -> list[str]:
        """The path's steps as the store keeps them: split at the delimiter, stripped, no empties."""
        return split_steps(self.texts(node_id), self.delimiter)

    def solution(self, node_id: int | None) -> str:
        return solution_text(self.texts(node_id), self.delimiter)

    def children(self, node_id: int | None) -> list[CandidateNode]:
        return [node for node in self.nodes if node.parent == node_id]


def split_steps(texts: Sequence[str], delimiter: str) -> list[str]:
    pieces = [piece.strip() for text in texts for piece in text.split(delimiter)]
    return [piece for piece in pieces if piece]


def solution_text(texts: Sequence[str], delimiter: str) -> str:
    # An empty piece (the policy ending its solution) adds no delimiter.
    return delimiter.join(text for text in texts if text)


@dataclass
class SearchResult:
    strategy: str
    config: dict  # SearchConfig.as_manifest()
    scorer: dict  # the scorer's fingerprint
    tree: SearchTree
    beams: list[FinalBeam]
    rollouts: list[SearchRollout]
    answer: str | None  # the search's answer (weighted vote for bon/beam/dvts/reject, MCTS: its path)
    correct: bool
    compute: ComputeRecord
    stopped: str = "done"  # or "budget"

    @property
    def nodes(self) -> list[CandidateNode]:
        return self.tree.nodes

    def manifest(self) -> dict:
        """What a job manifest records about this search: every parameter, the scorer's
        fingerprint, how steps were cut (the line splitter at the delimiter), the grader, compute."""
        from core.grading import GRADER_NAME

        return {"strategy": self.strategy, "config": self.config, "scorer": self.scorer,
                "splitter": {"rule": "line" if self.tree.delimiter == "\n" else "delimiter",
                             "delimiter": self.tree.delimiter},
                "grader": GRADER_NAME, "stopped": self.stopped, "compute": self.compute.as_manifest()}  # fmt: skip

    def candidate_rows(self) -> list[dict]:
        """One row per candidate, parents before children, with the step path the store's node
        is keyed by (`ensure_path(problem_id, row["steps"])`) and everything the search said
        about it."""
        rows = []
        for node in self.tree.nodes:
            rows.append({
                "order": node.id, "parent_order": node.parent, "depth": node.depth, "steps": self.tree.steps(node.id),
                "text": node.text, "num_tokens": node.num_tokens, "finish_reason": node.finish_reason,
                "finished": node.finished, "call": node.call, "score": node.score, "rank": node.rank,
                "mark": node.mark, "subtree": node.subtree, "prior": node.prior, "visits": node.visits,
                "value_sum": node.value_sum,
            })  # fmt: skip
        return rows

    @property
    def best_beam(self) -> FinalBeam | None:
        """The final beam with the highest score (ties: the earliest)."""
        scored = [(beam.score if beam.score is not None else float("-inf"), -i, beam) for i, beam in enumerate(self.beams)]
        return max(scored, key=lambda item: item[:2])[2] if scored else None
