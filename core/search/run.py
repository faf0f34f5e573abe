"""Running one search: the strategy chosen by name, its calls counted, its result recorded."""

from __future__ import annotations

import time
from typing import Callable, Sequence

from core.search import beam, bon, dvts, mcts, reject
from core.search.answers import final_beams, weighted_vote
from core.search.compute import ComputeRecord, CountingEngine, CountingScorer
from core.search.config import SearchConfig, SearchProblem
from core.search.context import BudgetSpent, SearchContext
from core.search.journal import Event, Journal, JournaledEngine, JournaledScorer
from core.search.records import SearchResult

STRATEGIES: dict[str, Callable[[SearchContext], None]] = {
    "bon": bon.search,
    "beam": beam.search,
    "dvts": dvts.search,
    "mcts": mcts.search,
    "reject": reject.search,
}


def run_search(problem: SearchProblem, engine, scorer, config: SearchConfig, *, journal: Sequence[Event] = (),
               on_event: Callable[[Event], None] | None = None) -> SearchResult:  # fmt: skip
    """Search `problem` with the policy `engine`, guided by `scorer`, as `config` says.

    `on_event` is given each engine and scorer call's result as it happens; handing those back
    as `journal` resumes a killed search to the identical tree (core.search.journal).
    The final beams are graded against the gold answer for the record; no strategy sees a grade
    (only the MC scorer reads the gold answer, by its definition).
    """
    record = ComputeRecord()
    calls = Journal(record, journal, on_event)
    engine_calls = JournaledEngine(CountingEngine(engine, record), calls)
    scorer_calls = JournaledScorer(CountingScorer(scorer, record), calls)
    ctx = SearchContext(problem, config, engine_calls, scorer_calls, record)
    started = time.perf_counter()
    try:
        STRATEGIES[config.strategy](ctx)
    except BudgetSpent:
        ctx.stopped = "budget"
    beams = final_beams(ctx, ctx.finished)
    if ctx.answer_node is not None:
        answer = next(b.answer for b in beams if b.node == ctx.answer_node)
    else:
        answer = weighted_vote(beams, ctx.grader.equal)
    # A resumed search's replayed calls took their recorded seconds in the killed run.
    replayed = calls.events[: len(calls.replay)]
    record.total_seconds = time.perf_counter() - started + sum(
        value for event in replayed for name, value in event.counted if name in ("engine_seconds", "scorer_seconds"))
    correct = ctx.grader.correct(answer)
    return SearchResult(config.strategy, config.as_manifest(), scorer.fingerprint, ctx.tree, beams, ctx.rollouts,
                        answer, correct, record, ctx.stopped)  # fmt: skip


