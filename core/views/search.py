"""What the Search page starts and lists (issue 25): a search job on one problem with the form's
parameters, the problem's searches (newest first, or those that ended wrong), the jobs to watch,
and the jobs that act on a candidate's node (its MC value, judges' verdicts). One search as the
page shows it is core.views.search_tree's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from core.errors import StepScopeError
from core.jobs.runner import queue
from core.jobs.search import DEFAULT_MC_ROLLOUTS, SearchSpec
from core.jobs.spec import JobSpec
from core.orm_training import list_orms
from core.search.config import STRATEGY_NAMES, SearchConfig  # noqa: F401 - the strategies, for the form
from core.store import Store
from core.store.searches import SEARCH_SOURCE
from core.verifier_folders import verifier_folders
from core.views.jobs import ACTIVE, queue_judging
from core.views.search_tree import NodeDetail, outcome_text, with_job_state
from core.views.tree import TreeSearchRequest, queue_tree_search

# One help text per parameter, the CLI's (SearchConfig.options()).
HELP = {name: help_text for name, _, help_text in SearchConfig.options()}


@dataclass(frozen=True)
class SearchRequest:
    """The search form's fields. The defaults are smaller than the CLI's (SearchConfig's) so that
    a search from the app finishes in seconds on the embedded CPU model: 4 beams of short steps,
    a few depths, and a token budget that stops it wherever it stands."""

    policy: str
    engine: str = JobSpec.engine
    engine_options: dict | None = None
    strategy: str = "beam"
    scorer: str = "random"
    n: int = 4
    beam_width: int = 2
    token_budget: int | None = 1024
    max_steps: int = 4
    max_step_tokens: int = 64
    seed: int = SearchConfig.seed

    def config(self) -> SearchConfig:
        # A whole solution (the last depth, a best-of-N sample) is allowed what its steps would be.
        return SearchConfig(strategy=self.strategy, n=self.n, beam_width=self.beam_width, max_steps=self.max_steps,
                            max_step_tokens=self.max_step_tokens,
                            max_solution_tokens=self.max_steps * self.max_step_tokens,
                            token_budget=self.token_budget, seed=self.seed)  # fmt: skip


def scorer_choices(store: Store) -> dict[str, str]:
    """Scorers a search can be guided by (ScorerChoice's names) -> what the form shows."""
    choices = {
        "random": "random (the floor)",
        f"mc:{DEFAULT_MC_ROLLOUTS}": f"MC value ({DEFAULT_MC_ROLLOUTS} policy rollouts per candidate)",
        "self-judge": "self-judge (the policy's P(Yes) on its step)",
    }
    try:
        orms = list_orms(store)
    except (OSError, ValueError, StepScopeError):  # a manifest being written or damaged: offer none
        orms = []
    for orm in orms:
        choices[f"orm:{orm['folder']}"] = f"ORM {orm.get('judge') or orm['folder']}"
    for folder in verifier_folders(store, "prm"):  # trained here (train-prm): a finished one has its config
        if (folder / "config.json").is_file():
            choices[f"prm:{folder}"] = f"PRM {folder.name} (its score of the newest step)"
    return choices


def queue_search(store: Store, request: SearchRequest, problem_id: int) -> int:
    """Queue a search job on one problem; returns the job id."""
    return queue(store, SearchSpec(policy=request.policy, problem_ids=(problem_id,), config=request.config(),
                                   scorer=request.scorer, engine=request.engine,
                                   engine_options=request.engine_options or {}))  # fmt: skip


def parse_problem(raw: str | None, store: Store) -> int | None:
    """The problem a link names (`?problem=ID`), checked; None when it names none."""
    if raw is None:
        return None
    raw = str(raw).strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise StepScopeError(f"the link's problem must be a whole number, not {raw[:40]!r}")
    if store.get_problem(int(raw)) is None:
        raise StepScopeError(f"the link names problem {int(raw)}, which does not exist")
    return int(raw)


def problem_jobs(store: Store, problem_id: int) -> list[dict]:
    """Queued and running jobs that change what the page shows for the problem: its searches,
    and jobs on its trajectories (judging or estimating a candidate's node). One query for the
    trajectories those jobs name, whatever the number of the problem's own."""
    jobs = [job for status in ACTIVE for job in store.list_jobs(status=status, limit=200)]
    named = sorted({t for job in jobs for t in job["manifest"].get("trajectory_ids", ())})
    problem_of = store.trajectory_problem_ids(named) if named else {}
    found = [job for job in jobs if problem_id in job["manifest"].get("problem_ids", ())
             or any(problem_of.get(t) == problem_id for t in job["manifest"].get("trajectory_ids", ()))]  # fmt: skip
    return sorted(found, key=lambda job: job["id"])


def search_page_params(trajectory: dict) -> dict[str, str]:
    """The Search page's address for a trajectory: its problem, and the search whose final beam it
    is, if it is one."""
    params = {"problem": str(trajectory["problem_id"])}
    search_id = (trajectory.get("meta") or {}).get("search")
    if trajectory.get("source") == SEARCH_SOURCE and isinstance(search_id, int):
        params["search"] = str(search_id)
    return params


def linked_search(raw: str | None, search_ids: Sequence[int]) -> int | None:
    """The search a link names (`?search=ID`) if it is one of these; None otherwise."""
    raw = str(raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 and int(raw) in search_ids else None


# --- the problem's searches ------------------------------------------------------------------


def search_label(search: dict) -> str:
    config = search.get("config") or {}
    return (f"search #{search['id']} · {search['strategy']} · {search['scorer']} · n={config.get('n')} "
            f"M={config.get('beam_width')} · {outcome_text(search)}")  # fmt: skip


def problem_searches(store: Store, problem_id: int, *, wrong_only: bool = False) -> list[dict]:
    """The problem's searches, newest first; `wrong_only`: finished ones whose answer is not
    correct (no answer counts as wrong)."""
    searches = with_job_state(store, store.problem_searches(problem_id)[::-1])
    if wrong_only:
        searches = [s for s in searches if s["status"] == "done" and not s["correct"]]
    return searches


# --- acting on a candidate's node ---------------------------------------------------------------


def queue_node_estimate(store: Store, detail: NodeDetail, *, policy: str, engine: str, engine_options: dict, k: int,
                        seed: int = TreeSearchRequest.seed) -> int:  # fmt: skip
    """k rollouts from the node (its Monte Carlo value): the tree view's expand job with a budget
    of k, which samples the node's rollouts and stops before expanding them."""
    if detail.anchor is None:
        raise StepScopeError("the problem has no trajectory to anchor the rollouts on")
    request = TreeSearchRequest(policy=policy, engine=engine, engine_options=engine_options, mode="expand",
                                budget=k, k=k, depth=1, node_id=detail.node_id, seed=seed)  # fmt: skip
    return queue_tree_search(store, request, detail.anchor)


def queue_node_judging(store: Store, detail: NodeDetail, judges: Sequence[str], **options) -> list[int]:
    """Step verdicts of the judges on the trajectories that read the node (options: queue_judging's)."""
    if not detail.trajectories:
        raise StepScopeError("no trajectory has a step ending at this node (judges score trajectories' steps): "
                             "only final beams' steps can be judged")  # fmt: skip
    return queue_judging(store, judges, ["step"], [], detail.trajectories, **options)
