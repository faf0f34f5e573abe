"""The search job: generation with a verifier in the loop (core.search) over a selection of
problems, stored in the rollout tree.

Each problem is searched by `run_search` with the policy the runner loaded and the scorer the job
names. The search's journal (every engine and scorer call's result) is committed as it runs, in
batches (`JournalWriter`: what was emitted since the last commit, once `JOURNAL_COMMIT_SECONDS`
have passed, and the rest when the search ends or an exception leaves it); when the search ends,
its candidates, final beams (graded trajectories, source "search") and sampled rollouts are
stored in one transaction (core.store.searches). A killed job therefore resumes each unfinished
search from its stored journal: the calls it holds are answered from it, and the search grows the
tree an uninterrupted run would have grown. A kill that leaves no chance to write (kill -9, power
loss) loses at most the last batch's events: their calls are made again on resume, with the seeds
they had (a strategy's calls are a function of the search's seed and the results before them), so
the tree is the same; only the seconds spent on them are spent twice. One commit per call cost
as much as a fast engine's call (milliseconds each; benchmarks/search_overhead.py).

Scorers are named by a short description, the CLI's `--scorer`:

- `random[:SEED]`: uniform scores, the floor (seed: the search's);
- `mc[:K]`: the Monte Carlo value of the prefix, K rollouts of the policy (default 4);
- `self-judge`: the policy as its own judge, P(Yes) that the newest step is correct;
- `orm:FOLDER`: a fine-tuned ORM saved by `stepscope train-verifier --kind orm-finetune`;
- `prm:FOLDER`: a PRM in a local folder (what `stepscope train-prm` saves, or any PRM whose
  family its config or `stepscope_prm.json` says), on the transformers PRM engine, CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from core.engines.base import SamplingParams
from core.errors import StepScopeError
from core.grading import GRADER_NAME
from core.jobs.spec import (
    MAX_K, MAX_NEW_TOKENS, MAX_PROBLEMS, JobContext, JobSpec, Progress, check_range, known_fields, require_ids,
)  # fmt: skip
from core.policy import DEFAULT_TEMPLATE, load_template
from core.search.compute import ComputeRecord
from core.search.config import SearchConfig, SearchProblem
from core.search.journal import event_from_dict, event_to_dict
from core.search.run import run_search
from core.search.scorers import JudgeScorer, MCScorer, ORMScorer, PRMScorer, RandomScorer
from core.store import Store

SCORER_NAMES = ("random", "mc", "self-judge", "orm", "prm")
JOURNAL_COMMIT_SECONDS = 1.0  # a running search's journal is committed at least this often
JOURNAL_COMMIT_EVENTS = 256  # and whenever this many events wait
PROGRESS_SECONDS = 1.0  # the job's progress and compute are written at most this often (and at the end)
DEFAULT_MC_ROLLOUTS = 4
MAX_EXPANSIONS = 10_000
MAX_STEPS = 256


@dataclass(frozen=True)
class ScorerChoice:
    """A scorer as a job names it: `random[:SEED]`, `mc[:K]`, `self-judge`, `orm:FOLDER`, `prm:FOLDER`."""

    name: str
    argument: str | None = None

    @classmethod
    def parse(cls, described: str) -> "ScorerChoice":
        name, _, argument = described.strip().partition(":")
        if name not in SCORER_NAMES:
            raise StepScopeError(
                f"a scorer is one of random[:SEED], mc[:K], self-judge, orm:FOLDER, prm:FOLDER, not {described!r}")
        choice = cls(name, argument or None)
        choice.check()
        return choice

    def check(self) -> None:
        if self.name in ("random", "mc") and self.argument is not None and not self.argument.lstrip("-").isdigit():
            raise StepScopeError(f"scorer {self.name}: {self.argument!r} is not a whole number")
        if self.name == "mc" and self.argument is not None:
            check_range("mc scorer rollouts (K)", int(self.argument), 1, MAX_K)
        if self.name == "self-judge" and self.argument is not None:
            raise StepScopeError("scorer self-judge takes no argument: the policy judges its own steps")
        if self.name == "orm":
            if not self.argument:
                raise StepScopeError("scorer orm needs the ORM's folder: orm:FOLDER")
            if not (Path(self.argument) / "config.json").is_file():
                raise StepScopeError(f"scorer orm: {self.argument} is not a saved ORM's folder (no config.json)")
        if self.name == "prm":
            if not self.argument:
                raise StepScopeError("scorer prm needs the PRM's folder: prm:FOLDER")
            if not (Path(self.argument) / "config.json").is_file():
                raise StepScopeError(f"scorer prm: {self.argument} is not a model folder (no config.json)")

    def __str__(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def build(self, engine, config: SearchConfig):
        """The scorer, on the policy engine where it reads a model (mc, self-judge)."""
        if self.name == "random":
            return RandomScorer(config.seed if self.argument is None else int(self.argument))
        if self.name == "mc":
            # Rollouts as the search's own completions are sampled: to the end of the solution.
            sampling = SamplingParams(max_new_tokens=config.max_solution_tokens, temperature=config.temperature,
                                      top_p=config.top_p, stop=config.solution_stops)  # fmt: skip
            k = DEFAULT_MC_ROLLOUTS if self.argument is None else int(self.argument)
            return MCScorer(engine, k, sampling, delimiter=config.step_delimiter, seed=config.seed)
        if self.name == "self-judge":
            return JudgeScorer(engine)
        if self.name == "prm":
            return self._prm_scorer()
        return ORMScorer.from_folder(self.argument)

    def _prm_scorer(self) -> PRMScorer:
        """The PRM in the folder, its family and format as `stepscope prm score` settles them."""
        from core.engines import load_engine
        from core.jobs.prm_score import family_of
        from core.prm import prm_format

        family = family_of(self.argument, None)
        prm_engine = load_engine("prm:transformers", self.argument, family=family, device="cpu")
        return PRMScorer(prm_engine, prm_format(family, preset=self.argument), name=f"prm:{self.argument}")


class _Cancelled(Exception):
    pass


class _StoppableEngine:
    """The policy engine, asked before each call whether the job was cancelled: a search stops
    between calls (its journal holds every call made), not only between problems."""

    def __init__(self, engine, should_stop) -> None:
        self._engine, self._should_stop = engine, should_stop

    def generate(self, prompts, params):
        if self._should_stop():
            raise _Cancelled
        return self._engine.generate(prompts, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)  # info, tokenizer, model, scoring calls: the engine's own


class JournalWriter:
    """A search's journal events, stored in order (seq) in batches. An event arriving `seconds`
    or more after the last commit is committed at once, with those waiting before it, and so is
    the `events`-th waiting one. `close()` commits what is left when an exception leaves the
    search (every event is the result of a finished call, worth keeping); an ended search's last
    events are `take()`n and written with its outcome, in one transaction. So with calls slower
    than `seconds` every event is committed as it comes, and what a kill -9 can lose is events
    whose calls took under `seconds` together: made again on resume, to the same results."""

    def __init__(self, store: Store, search_id: int, seq: int, *, seconds: float | None = None,
                 events: int | None = None) -> None:  # fmt: skip
        self.store, self.search_id, self.seq = store, search_id, seq
        self.seconds = JOURNAL_COMMIT_SECONDS if seconds is None else seconds
        self.events = JOURNAL_COMMIT_EVENTS if events is None else events
        self.waiting: list[tuple[int, dict]] = []
        self.commits = 0
        self._committed_at = time.monotonic()

    def add(self, event) -> None:
        self.waiting.append((self.seq, event_to_dict(event)))
        self.seq += 1
        if len(self.waiting) >= self.events or time.monotonic() - self._committed_at >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.waiting:
            self.store.add_search_events(self.search_id, self.waiting)
            self.waiting = []
            self.commits += 1
        self._committed_at = time.monotonic()

    close = flush

    def take(self) -> list[tuple[int, dict]]:
        """The waiting events, handed over to be written with the search's outcome."""
        waiting, self.waiting = self.waiting, []
        return waiting


def run_problem_search(store: Store, engine, scorer, config: SearchConfig, problem: dict, context: str, *,
                       policy: str, job_id: int | None) -> tuple[dict, ComputeRecord]:  # fmt: skip
    """Search one problem (resuming the job's stored search of it), store the outcome; returns
    the search row and what it spent."""
    search = store.start_search(job_id=job_id, problem_id=problem["id"], policy=policy, strategy=config.strategy,
                                config=config.as_manifest(), scorer=scorer.fingerprint)  # fmt: skip
    if search["status"] == "done":
        return search, ComputeRecord.from_manifest(search["compute"])
    journal = [event_from_dict(entry) for entry in store.search_events(search["id"])]
    writer = JournalWriter(store, search["id"], len(journal))
    try:
        result = run_search(SearchProblem(problem["question"], problem["gold"], context), engine, scorer, config,
                            journal=journal, on_event=writer.add)  # fmt: skip
    except BaseException:
        writer.close()
        raise
    store.finish_search(
        search["id"], candidates=result.candidate_rows(),
        beams=[{"node": b.node, "solution": b.solution, "answer": b.answer, "correct": b.correct, "score": b.score}
               for b in result.beams],
        rollouts=[{"prefix": r.prefix, "text": r.text, "answer": r.answer, "correct": r.correct,
                   "num_tokens": r.num_tokens} for r in result.rollouts],
        answer=result.answer, correct=result.correct, stopped=result.stopped, compute=result.compute.as_manifest(),
        policy_prompt=context, delimiter=config.step_delimiter, events=writer.take(),
    )  # fmt: skip
    return store.get_search(search["id"]), result.compute


@dataclass(frozen=True, kw_only=True)
class SearchSpec(JobSpec):
    """Search each problem with a strategy, guided by a scorer (core.search.SearchConfig)."""

    kind: ClassVar[str] = "search"
    unit: ClassVar[str] = "problems"
    counts_compute: ClassVar[bool] = True  # each search counts its own, replayed calls included

    policy: str
    problem_ids: tuple[int, ...]
    config: SearchConfig = field(default_factory=SearchConfig)
    scorer: str = "random"
    template: str = DEFAULT_TEMPLATE

    def model_to_load(self) -> str:
        return self.policy

    def validate(self, store: Store) -> None:
        if not self.policy.strip():
            raise StepScopeError("choose a policy model")
        ScorerChoice.parse(self.scorer)
        config = self.config
        check_range("n", config.n, 1, MAX_K)
        check_range("the beam width", config.beam_width, 1, MAX_K)
        check_range("max steps", config.max_steps, 1, MAX_STEPS)
        check_range("max step tokens", config.max_step_tokens, 1, MAX_NEW_TOKENS)
        check_range("max solution tokens", config.max_solution_tokens, 1, MAX_NEW_TOKENS)
        check_range("expansions", config.expansions, 1, MAX_EXPANSIONS)
        require_ids(self.problem_ids, "problems to search")
        if len(set(self.problem_ids)) != len(self.problem_ids):
            raise StepScopeError("a problem is listed twice: a job searches each problem once")
        check_range("the number of problems", len(self.problem_ids), 1, MAX_PROBLEMS)
        for problem_id in self.problem_ids:
            problem = store.get_problem(problem_id)
            if problem is None:
                raise StepScopeError(f"problem {problem_id} does not exist")
            if not problem.get("gold"):
                raise StepScopeError(f"problem {problem_id} has no gold answer to grade the search's beams against")

    def planned(self) -> int:
        return len(self.problem_ids)

    def to_manifest(self, store: Store) -> dict:
        template = load_template(self.template)
        return {
            "policy": self.policy, **self.common_manifest(), "problem_ids": list(self.problem_ids),
            "search": self.config.as_manifest(), "scorer": self.scorer,
            "prompt_template": {"name": template.name, "sha256": template.sha256}, "grader": GRADER_NAME,
            "splitter": {"rule": "line" if self.config.step_delimiter == "\n" else "delimiter",
                         "delimiter": self.config.step_delimiter},
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "SearchSpec":
        return cls(**known_fields(
            cls, manifest, problem_ids=tuple(manifest["problem_ids"]), config=SearchConfig.from_manifest(manifest["search"]),
            template=manifest["prompt_template"]["name"],
        ))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        store = context.store
        template = load_template(self.template)
        engine = _StoppableEngine(context.engine, context.should_stop)
        scorer = ScorerChoice.parse(self.scorer).build(engine, self.config)
        job = store.get_job(context.job_id)
        # The scorer's identity as the run built it (model, fingerprint, sampling), with the job.
        store.update_job(context.job_id, manifest={**job["manifest"], "scorer_fingerprint": scorer.fingerprint})
        progress, spent, started = Progress(planned=self.planned()), ComputeRecord(), time.perf_counter()
        cancelled, reported_at, unreported = False, float("-inf"), False
        for problem_id in self.problem_ids:
            problem = store.get_problem(problem_id)
            try:
                _, compute = run_problem_search(store, engine, scorer, self.config, problem,
                                                template.render(problem["question"]), policy=self.policy,
                                                job_id=context.job_id)  # fmt: skip
            except _Cancelled:
                cancelled = True
                break
            spent = spent.plus(compute)
            progress.done += 1
            progress.calls, progress.tokens = spent.engine_calls, spent.policy_tokens
            progress.engine_seconds, progress.seconds = spent.engine_seconds, time.perf_counter() - started
            # The job's row at most once a second (two commits): a fast engine searches a problem
            # in tens of milliseconds.
            unreported = time.perf_counter() - reported_at < PROGRESS_SECONDS
            if not unreported:
                store.update_job(context.job_id, compute=spent.as_manifest())
                context.report(progress)
                reported_at = time.perf_counter()
        if unreported:
            context.report(progress)
        job = store.get_job(context.job_id)
        store.update_job(context.job_id, compute=spent.as_manifest(),
                         manifest={**job["manifest"], "compute": spent.as_manifest()})  # fmt: skip
        return cancelled
