"""Running one search: the strategy chosen by name, its calls counted, its result recorded."""

from __future__ import annotations

import time
from typing import Callable

from core.grading import answers_equal
from core.search import beam, bon, dvts, mcts, reject
from core.search.answers import final_beams, weighted_vote
from core.search.compute import ComputeRecord, CountingEngine, CountingScorer
from core.search.config import SearchConfig, SearchProblem
from core.search.context import BudgetSpent, SearchContext
from core.search.records import SearchResult

STRATEGIES: dict[str, Callable[[SearchContext], None]] = {
    "bon": bon.search,
    "beam": beam.search,
    "dvts": dvts.search,
    "mcts": mcts.search,
    "reject": reject.search,
}


def run_search(problem: SearchProblem, engine, scorer, config: SearchConfig) -> SearchResult:
    """Search `problem` with the policy `engine`, guided by `scorer`, as `config` says.

    The final beams are graded against the gold answer for the record; no strategy sees a grade
    (only the MC scorer reads the gold answer, by its definition).
    """
    record = ComputeRecord()
    ctx = SearchContext(problem, config, CountingEngine(engine, record), CountingScorer(scorer, record), record)
    started = time.perf_counter()
    try:
        STRATEGIES[config.strategy](ctx)
    except BudgetSpent:
        ctx.stopped = "budget"
    beams = final_beams(ctx, ctx.finished)
    if ctx.answer_node is not None:
        answer = next(b.answer for b in beams if b.node == ctx.answer_node)
    else:
        answer = weighted_vote(beams)
    record.total_seconds = time.perf_counter() - started
    correct = answer is not None and answers_equal(answer, problem.gold)
    return SearchResult(config.strategy, config.as_manifest(), scorer.fingerprint, ctx.tree, beams, ctx.rollouts,
                        answer, correct, record, ctx.stopped)  # fmt: skip


