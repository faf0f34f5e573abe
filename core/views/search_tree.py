"""One search as the Search page shows it (issue 25): each depth's candidates with the guiding
score, rank and mark, the path to the search's answer, the search as a tree chart, and for one
candidate what other verifiers and Monte Carlo rollouts say about its node of the rollout tree.

A search stores its candidates only when it ends (core.store.searches, one transaction), but it
stores its journal (every engine and scorer call's result) as it runs. While it runs, the page
replays that journal through the search's own strategy with no model behind it: the tree the
strategy had grown after its last stored call, marks included, exactly as the job holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from core.errors import StepScopeError
from core.grading import answers_equal
from core.mcpe import Counts, step_value
from core.policy import load_template
from core.search.compute import ComputeRecord
from core.search.config import SearchConfig, SearchProblem
from core.search.context import BudgetSpent, SearchContext
from core.search.journal import Journal, JournaledEngine, JournaledScorer, event_from_dict
from core.search.run import STRATEGIES
from core.store import Store
from core.views.jobs import ACTIVE

MAX_TABLE_ROWS = 200  # candidates listed per depth (the best ranked): an MCTS can expand one depth many times


def with_job_state(store: Store, searches: list[dict]) -> list[dict]:
    """Each search with `interrupted`: unfinished while its job is no longer queued or running
    (failed, cancelled, or killed and not resumed yet: `stepscope jobs resume`, or Retry)."""
    active = {job["id"] for status in ACTIVE for job in store.list_jobs(status=status, limit=200)}
    return [{**s, "interrupted": s["status"] != "done" and s["job_id"] not in active} for s in searches]


def outcome_text(search: dict) -> str:
    if search["status"] != "done":
        return "interrupted: its job stopped before the search ended" if search.get("interrupted") else "running"
    if search["answer"] is None:
        return "no answer" + (" (token budget spent)" if search.get("stopped") == "budget" else "")
    return f"answer {search['answer']} · {'correct' if search['correct'] else 'wrong'}"


def compute_text(search: dict) -> str | None:
    """What a finished search spent (its compute record), in one line; None before it ends."""
    compute = search.get("compute") or {}
    if not compute:
        return None
    flops = compute.get("flops")
    verifier = [compute.get("verifier_tokens", 0), compute.get("verifier_generated_tokens", 0)]
    parts = [f"{compute.get('policy_tokens', 0):,} policy tokens generated",
             f"{compute.get('prompt_tokens') or 0:,} prompt tokens",
             "verifier tokens unknown" if None in verifier else f"{sum(verifier):,} verifier tokens",
             f"{compute.get('engine_calls', 0)} policy calls, {compute.get('scorer_calls', 0)} scorer calls",
             f"{compute.get('total_seconds', 0.0):.1f} s",
             "FLOPs unknown" if flops is None else f"{flops:.2e} FLOPs"]  # fmt: skip
    return "Compute: " + " · ".join(parts)


# --- one search --------------------------------------------------------------------------------


@dataclass
class Candidate:
    order: int  # the search's own numbering, in generation order
    parent: int | None
    depth: int
    text: str
    num_tokens: int
    finished: bool
    score: float | None
    rank: int | None
    mark: str
    node_id: int | None = None  # the rollout tree's node (None while the search runs)
    trajectory_id: int | None = None  # a final beam's trajectory
    on_path: bool = False  # on the path to the search's answer


@dataclass
class SearchView:
    search: dict
    candidates: list[Candidate]
    beams: list[dict] = field(default_factory=list)  # finished: candidate, trajectory_id, final_answer, correct
    live: bool = False  # replayed from the journal of a running search
    calls: int = 0  # engine and scorer calls stored so far

    @property
    def depths(self) -> dict[int, list[Candidate]]:
        grouped: dict[int, list[Candidate]] = {}
        for candidate in self.candidates:
            grouped.setdefault(candidate.depth, []).append(candidate)
        return dict(sorted(grouped.items()))

    def counts(self) -> dict[str, int]:
        marks = [c.mark for c in self.candidates]
        return {mark: marks.count(mark) for mark in ("chosen", "pruned", "pending")}


class _JournalEnd(Exception):
    """The replay reached the first call the running search has not stored yet."""


class _NoModel:
    """Stands for the policy and the scorer in a replay: every stored call is answered from the
    journal before it gets here, so reaching it means the journal ends."""

    info = None

    def __init__(self, fingerprint: dict, name: str, kind: str) -> None:
        self.fingerprint, self.name, self.kind = fingerprint, name, kind

    def generate(self, prompts, params):
        raise _JournalEnd

    def score(self, problem, prefixes):
        raise _JournalEnd


def replayed_candidates(store: Store, search: dict) -> tuple[list[Candidate], int]:
    """The candidates a running search holds now, replayed from its stored journal, and the
    number of calls replayed."""
    job = store.get_job(search["job_id"]) if search["job_id"] is not None else None
    problem = store.get_problem(search["problem_id"])
    template_name = ((job or {}).get("manifest") or {}).get("prompt_template", {}).get("name")
    template = load_template(template_name) if template_name else load_template()
    config = SearchConfig.from_manifest(search["config"])
    events = [event_from_dict(entry) for entry in store.search_events(search["id"])]
    stand_in = _NoModel(search["scorer_fingerprint"], search["scorer"], search["scorer_kind"])
    record = ComputeRecord()
    journal = Journal(record, events)
    context = SearchContext(
        SearchProblem(problem["question"], problem["gold"], template.render(problem["question"])), config,
        JournaledEngine(stand_in, journal), JournaledScorer(stand_in, journal), record,
    )  # fmt: skip
    try:
        STRATEGIES[config.strategy](context)
    except (_JournalEnd, BudgetSpent):
        pass
    candidates = [Candidate(node.id, node.parent, node.depth, node.text, node.num_tokens, node.finished, node.score,
                            node.rank, node.mark) for node in context.tree.nodes]  # fmt: skip
    return candidates, len(journal.events)


def _answer_path(candidates: Sequence[Candidate], beams: Sequence[dict], answer: str | None) -> set[int]:
    """The candidates from the question to the final beam that gives the search's answer (the
    best-scored of the beams with that answer)."""
    giving = [b for b in beams if answer is not None and b["final_answer"] is not None
              and answers_equal(b["final_answer"], answer)]  # fmt: skip
    if not giving:
        return set()
    best = max(giving, key=lambda b: (b["score"] if b["score"] is not None else float("-inf"), -b["candidate"]))
    by_order = {c.order: c for c in candidates}
    path, order = set(), best["candidate"]
    while order is not None and order in by_order:
        path.add(order)
        order = by_order[order].parent
    return path


def search_view(store: Store, search_id: int) -> SearchView:
    search = store.get_search(search_id)
    if search is None:
        raise StepScopeError(f"search {search_id} does not exist")
    [search] = with_job_state(store, [search])
    if search["status"] != "done":
        try:
            candidates, calls = replayed_candidates(store, search)
        except StepScopeError:  # a journal the strategy no longer matches: show what is known
            candidates, calls = [], len(store.search_events(search_id))
        return SearchView(search, candidates, live=True, calls=calls)
    candidates = [
        Candidate(row["candidate"], row["parent"], row["depth"], row["text"], row["num_tokens"], row["finished"],
                  row["score"], row["rank"], row["mark"], row["node_id"], row["trajectory_id"])
        for row in store.search_candidates(search_id)
    ]  # fmt: skip
    beams = store.search_beams(search_id)
    for order in _answer_path(candidates, beams, search["answer"]):
        next(c for c in candidates if c.order == order).on_path = True
    return SearchView(search, candidates, beams)


def one_line(text: str, limit: int = 120) -> str:
    """A step for a table cell: whitespace runs as single spaces, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def depth_rows(candidates: Sequence[Candidate]) -> list[dict]:
    """One depth's candidates for a table, best rank first."""
    ordered = sorted(candidates, key=lambda c: (c.rank if c.rank is not None else 1 << 30, c.order))
    return [
        {"candidate": c.order, "parent": "question" if c.parent is None else str(c.parent),
         "score": None if c.score is None else round(c.score, 3), "rank": c.rank,
         "mark": c.mark + (" · answer path" if c.on_path else "") + (" · final beam" if c.trajectory_id else ""),
         "step": "(ends the solution)" if not c.text.strip() else one_line(c.text), "tokens": c.num_tokens}
        for c in ordered[:MAX_TABLE_ROWS]
    ]  # fmt: skip


def candidate_label(candidate: Candidate) -> str:
    score = "—" if candidate.score is None else f"{candidate.score:.2f}"
    beam = " · final beam" if candidate.trajectory_id is not None else ""
    return (f"#{candidate.order} · depth {candidate.depth} · {candidate.mark}{beam} · score {score} · "
            f"{one_line(candidate.text, 50)}")  # fmt: skip


# --- one candidate's node ------------------------------------------------------------------------


@dataclass
class NodeDetail:
    node_id: int
    steps: list[str]  # the node's step path, root excluded
    value_text: str  # the MC value of the node, from the search's policy's rollouts there
    verdicts: list[dict]  # each other verifier's step verdict on trajectories' steps ending here
    search_scores: list[dict]  # every search's guiding score at this node
    trajectories: list[int]  # trajectories with a step ending here (what a judge scores)
    anchor: int | None  # a trajectory of the problem to anchor an MC estimate at the node on


def node_detail(store: Store, view: SearchView, candidate: Candidate) -> NodeDetail:
    if candidate.node_id is None:
        raise StepScopeError("the search is still running: its candidates become nodes of the tree when it ends")
    node_id, policy = candidate.node_id, view.search["policy"]
    rollouts = store.node_rollouts(node_id, policy)
    value = step_value(Counts(len(rollouts), sum(1 for r in rollouts if r["correct"])))
    value_text = ("MC value: no rollouts yet" if value.n == 0 else
                  f"MC value {value.soft:.2f}  [{value.low:.2f}, {value.high:.2f}]  "
                  f"({value.correct}/{value.n} reach the answer)")  # fmt: skip
    trajectories = sorted({row["trajectory_id"] for row in store.node_steps(node_id)})
    beams = [b["trajectory_id"] for b in view.beams]
    anchor = beams[0] if beams else (trajectories[0] if trajectories else None)
    if anchor is None:
        first = store.list_trajectories(problem_id=view.search["problem_id"], limit=1)
        anchor = first[0]["id"] if first else None
    steps = [row["text"] for row in store.node_path(node_id)][1:]
    return NodeDetail(node_id, steps, value_text, store.node_step_verdicts(node_id), store.node_search_scores(node_id),
                      trajectories, anchor)  # fmt: skip


# --- the tree chart ------------------------------------------------------------------------------

CANDIDATE_SELECTION = "candidate"
MARK_COLORS = {"domain": ["chosen", "pruned", "pending"], "range": ["#1f77b4", "#c7c7c7", "#f2c744"]}


def chart_rows(view: SearchView, selected: int | None = None) -> tuple[list[dict], list[dict], int]:
    """Rows for the search's tree chart: candidates (depth across, leaves down in depth-first
    order, best rank first, a parent mid-way between its children), the edges, and the number of
    leaves. The question is the root at depth 0. Iterative: an MCTS can grow a deep tree."""
    children: dict[int | None, list[Candidate]] = {}
    for candidate in view.candidates:
        children.setdefault(candidate.parent, []).append(candidate)
    for kids in children.values():
        kids.sort(key=lambda c: (c.rank if c.rank is not None else 1 << 30, c.order))
    y: dict[int | None, float] = {}
    next_leaf = 0
    stack: list[tuple[int | None, bool]] = [(None, False)]
    while stack:
        order, done = stack.pop()
        kids = children.get(order, [])
        if not kids:
            y[order], next_leaf = float(next_leaf), next_leaf + 1
        elif done:
            y[order] = (y[kids[0].order] + y[kids[-1].order]) / 2
        else:
            stack.append((order, True))
            stack.extend((kid.order, False) for kid in reversed(kids))
    nodes = [{"id": -1, "x": 0, "y": y[None], "mark": "chosen", "path": True, "selected": False, "score": None,
              "rank": None, "label": "the question", "text": "the question"}]  # fmt: skip
    nodes += [
        {"id": c.order, "x": c.depth, "y": y[c.order], "mark": c.mark, "path": c.on_path,
         "selected": c.order == selected, "score": c.score,
         "rank": c.rank, "text": one_line(c.text, 80) or "(ends the solution)",
         "label": f"candidate {c.order}: {c.mark}, score {'none' if c.score is None else f'{c.score:.2f}'}"}
        for c in view.candidates
    ]  # fmt: skip
    depth_of = {c.order: c.depth for c in view.candidates}
    edges = [{"x": 0 if c.parent is None else depth_of[c.parent], "y": y[c.parent], "x2": c.depth, "y2": y[c.order],
              "path": c.on_path, "pruned": c.mark == "pruned"} for c in view.candidates]  # fmt: skip
    return nodes, edges, next_leaf


def search_tree_chart(view: SearchView, selected: int | None = None) -> dict:
    """The search as a tree: candidates coloured by mark (pruned grey), the path to the answer
    outlined with bold edges, the `selected` candidate ringed; a click selects a candidate
    (parameter `candidate`, field `id`). Plain Vega-Lite with the rows inline, SVG so that each
    candidate is an element with a label."""
    nodes, edges, leaves = chart_rows(view, selected)
    x = {"field": "x", "type": "quantitative", "title": "depth (steps)", "axis": {"tickMinStep": 1, "format": "d"}}
    y = {"field": "y", "type": "quantitative", "axis": None, "scale": {"reverse": True}}
    return {
        "usermeta": {"embedOptions": {"renderer": "svg"}},
        "height": max(160, min(900, 18 * leaves)),
        "layer": [
            {"data": {"values": edges}, "mark": {"type": "rule"},
             "encoding": {"x": x, "y": y, "x2": {"field": "x2"}, "y2": {"field": "y2"},
                          "color": {"condition": {"test": "datum.path", "value": "#000000"}, "value": "#999999"},
                          "strokeWidth": {"condition": {"test": "datum.path", "value": 3}, "value": 1},
                          "opacity": {"condition": {"test": "datum.pruned", "value": 0.3}, "value": 0.8}}},
            {"data": {"values": nodes}, "params": [{"name": CANDIDATE_SELECTION, "select": {
                "type": "point", "fields": ["id"], "on": "click", "clear": False}}],
             "mark": {"type": "circle", "size": 140, "opacity": 1, "cursor": "pointer"},
             "encoding": {
                 "x": x, "y": y, "description": {"field": "label"},
                 "color": {"field": "mark", "type": "nominal", "scale": MARK_COLORS, "title": "mark"},
                 "stroke": {"condition": [{"test": "datum.selected", "value": "#ff7f0e"},
                                          {"test": "datum.path", "value": "#000000"}], "value": None},
                 "strokeWidth": {"condition": [{"test": "datum.selected", "value": 4},
                                               {"test": "datum.path", "value": 2}], "value": 0},
                 "tooltip": [{"field": "id", "title": "candidate"}, {"field": "mark"},
                             {"field": "score", "format": ".3f"}, {"field": "rank"},
                             {"field": "text", "title": "step"}]}},
        ],
    }  # fmt: skip


def picked_candidate(event) -> int | None:
    """The candidate a tree-chart click selected (None: the question, or nothing)."""
    picked = ((event or {}).get("selection") or {}).get(CANDIDATE_SELECTION) or []
    if picked and isinstance(picked[0], dict):
        try:
            order = int(picked[0].get("id"))
        except (TypeError, ValueError):
            return None
        return order if order >= 0 else None
    return None
