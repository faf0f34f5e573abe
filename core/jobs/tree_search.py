"""The tree-search job: grow a problem's rollout tree in the store with OmegaPRM (core.tree_search),
or expand every rollout of a node N levels deep; and expanding one stored rollout into a branch.

The search itself is storage-free; this module connects it to the store. The tree is rebuilt
from the stored rows (nodes, the policy's rollouts at them, the marks), every event the search
emits is written in one transaction before the in-memory tree applies it, and the rollout budget
left is the job's budget minus the rollouts it has stored. A killed job therefore resumes on the
same tree with the same seeds and grows what an uninterrupted run would have grown.

The sampler renders the policy prompt (the trajectory's own, or the template for its question)
plus the prefix: the trajectory's exact text where the prefix is one of its step prefixes, else
the prefix's steps joined by the splitter's separator. Each completion is graded against the
gold answer (with the prefix) and cut into steps by the trajectory's splitter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Sequence

from core.engines.base import Engine, SamplingParams
from core.errors import StepScopeError
from core.grading import GRADER_NAME, grade
from core.jobs.estimate import default_sampling
from core.jobs.spec import MAX_N, JobContext, JobSpec, Progress, check_range, check_sampling, known_fields, sampling_from
from core.policy import DEFAULT_TEMPLATE, join_context, load_template, policy_context, rollout_stops
from core.steps import StepSpan, join_steps, parse_rule, prefix_end, segment
from core.store import Store
from core.tree_search import (
    BranchExpanded, Event, FirstErrorLocated, OmegaPRM, Prefix, Rollout, RolloutKey, RolloutSelected, RolloutsSampled,
    RolloutTree, SampledRollout, expand, search,
)  # fmt: skip

MODES = ("omegaprm", "expand")
MAX_BUDGET = 1_000_000
MAX_DEPTH = 64
# How the sampler joins the steps of a prefix that is no trajectory's own text, per splitter:
# what the splitter cuts at, so that splitting the joined text gives the steps back. A splitter
# missing here cannot be rebuilt that way (sentence-merged cuts by length, so joined steps merge
# differently; reflection cuts only before a marker, and a rollout's first step has none), and
# a search on a trajectory cut by it is refused rather than grown on steps that re-split wrong.
SEPARATORS = {
    "line": "\n", "blank-line": "\n\n", "paragraph": "\n\n", "step-marker": "\n", "sentence": " ", "pre-split": "\n",
}  # fmt: skip


def check_rebuildable(rule: str, trajectory_id: int) -> None:
    """Refuse a splitter whose steps the search cannot join back into text that splits the same."""
    if parse_rule(rule).name not in SEPARATORS:
        raise StepScopeError(
            f"trajectory {trajectory_id} is cut by {rule!r}, whose steps a tree search cannot rebuild exactly; "
            f"resegment it by one of: {', '.join(name for name in SEPARATORS if name != 'pre-split')}"
        )


def cutting_rule(rule: str | None) -> str:
    """The splitter that cuts free text (a rollout): pre-split steps were split by someone else,
    and a rollout continuing them is cut into lines."""
    return "line" if not rule or rule == "pre-split" else rule


def split_steps(text: str, rule: str) -> tuple[str, ...]:
    return tuple(span.text for span in segment(text, cutting_rule(rule))) if text.strip() else ()


@dataclass(frozen=True)
class Anchor:
    """The trajectory a search or an expansion is anchored on: its prompt, text and steps."""

    trajectory: dict
    spans: tuple[StepSpan, ...]
    step_ids: tuple[int, ...]

    @classmethod
    def load(cls, store: Store, trajectory_id: int) -> "Anchor":
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        steps = store.steps(trajectory_id)
        spans = tuple(StepSpan(s["text"], s["start_char"], s["end_char"]) for s in steps)
        return cls(trajectory, spans, tuple(s["id"] for s in steps))

    @property
    def rule(self) -> str:
        return self.trajectory.get("rule") or "line"

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(span.text for span in self.spans)

    def solution_part(self, prefix: Prefix) -> tuple[str, list[StepSpan]]:
        """The solution text of `prefix` (ending where its next step would start) and its spans."""
        if not prefix:
            return "", []
        depth = len(prefix)
        if self.steps[:depth] == prefix:
            solution = self.trajectory["solution"]
            return solution[: prefix_end(solution, list(self.spans), depth - 1)], list(self.spans[:depth])
        # A splitter missing from SEPARATORS only reaches here to show a node's prefix or expand a
        # rollout grown before the trajectory was resegmented: a search on it is refused.
        separator = SEPARATORS.get(parse_rule(self.rule).name, "\n")
        joined, spans = join_steps(prefix, separator)
        return joined + separator, spans

    def step_id_at(self, prefix: Prefix) -> int | None:
        depth = len(prefix)
        return self.step_ids[depth - 1] if 0 < depth <= len(self.steps) and self.steps[:depth] == prefix else None


def expand_rollout(store: Store, rollout_id: int) -> int:
    """Turn a stored rollout into a child branch of the node it was sampled from: a trajectory
    (source "rollout") whose solution is the node's prefix followed by the rollout, cut into the
    prefix's steps and the rollout's own steps by the trajectory's splitter. Returns its id; a
    rollout expanded before gives the same branch."""
    rollout = store.get_rollout(rollout_id)
    if rollout is None:
        raise StepScopeError(f"rollout {rollout_id} does not exist")
    if rollout["node_id"] is None:
        raise StepScopeError(f"rollout {rollout_id} belongs to no tree node")
    manifest = rollout.get("job_manifest") or {}
    origin = rollout.get("trajectory_id") or manifest.get("trajectory_id")
    if origin is None or store.get_trajectory(origin) is None:
        # A rollout of the question alone: any trajectory of the problem gives prompt and splitter.
        found = store.list_trajectories(problem_id=rollout["problem_id"], limit=1)
        origin = found[0]["id"] if found else None
    if origin is None:
        raise StepScopeError(f"rollout {rollout_id}: its problem has no trajectory to take the splitter from")
    anchor = Anchor.load(store, origin)
    rule = anchor.rule if rollout.get("trajectory_id") else manifest.get("splitter") or anchor.rule
    prefix = tuple(node["text"] for node in store.node_path(rollout["node_id"]))[1:]
    part, spans = anchor.solution_part(prefix)
    own = segment(rollout["text"], cutting_rule(rule)) if rollout["text"].strip() else []
    if not own:
        raise StepScopeError(f"rollout {rollout_id} has no steps to expand")
    offset = len(part)
    spans = [*spans, *(StepSpan(s.text, s.start + offset, s.end + offset) for s in own)]
    trajectory_id, _ = store.add_branch(
        rollout_id, part + rollout["text"], spans, rule=rule if rule != "pre-split" else "line",
        model=rollout.get("model"), policy_prompt=anchor.trajectory.get("policy_prompt"),
        final_answer=rollout.get("answer"), correct=rollout.get("correct"), meta={"node": rollout["node_id"]},
    )  # fmt: skip
    return trajectory_id


def rebuild_tree(store: Store, problem_id: int, policy: str, rule: str) -> tuple[RolloutTree, dict[RolloutKey, int]]:
    """The problem's tree as the search sees it, from the store: the policy's rollouts at every
    node (ordinals in storage order), and the marks; with each rollout key's row id."""
    prefixes: dict[int, Prefix] = {}
    for node in store.problem_nodes(problem_id):  # parents come first
        parent = prefixes.get(node["parent_id"], ()) if node["parent_id"] is not None else None
        prefixes[node["id"]] = () if parent is None else parent + (node["text"],)
    ordinals: dict[int, int] = {}
    rollouts, ids = [], {}
    for row in store.problem_rollouts(problem_id, policy):
        ordinal = ordinals.get(row["node_id"], 0)
        ordinals[row["node_id"]] = ordinal + 1
        key = RolloutKey(prefixes[row["node_id"]], ordinal)
        rollouts.append(Rollout(key, split_steps(row["text"], rule), bool(row["correct"]), int(row["num_tokens"] or 0)))
        ids[key] = row["id"]
    keys = {rollout_id: key for key, rollout_id in ids.items()}
    marks = [m for m in store.problem_marks(problem_id) if m["rollout_id"] in keys]
    tree = RolloutTree.rebuild(
        rollouts,
        selected=[keys[m["rollout_id"]] for m in marks if m["selected"]],
        located={keys[m["rollout_id"]]: m["first_error"] for m in marks if m["first_error"] is not None},
        expanded=[keys[m["rollout_id"]] for m in marks if m["branch_id"] is not None],
    )
    return tree, ids


class _Cancelled(Exception):
    pass


class PolicySampler:
    """Rollouts from the policy engine for a prefix of the anchor's problem (the search's
    Sampler). It keeps each batch's texts for the writer, which stores them."""

    def __init__(self, engine: Engine, anchor: Anchor, template: str, sampling: SamplingParams,
                 should_stop: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.engine, self.anchor, self.sampling, self.should_stop = engine, anchor, sampling, should_stop
        self.context = policy_context(anchor.trajectory["question"], anchor.trajectory.get("policy_prompt"),
                                      load_template(template))  # fmt: skip
        self.pending: dict[tuple[Prefix, int], list[dict]] = {}
        self.engine_seconds = 0.0
        self.tokens = 0

    def __call__(self, prefix: Prefix, k: int, seed: int) -> Sequence[SampledRollout]:
        if self.should_stop():
            raise _Cancelled
        part, _ = self.anchor.solution_part(prefix)
        started = time.perf_counter()
        stop = rollout_stops(self.sampling.stop, self.anchor.trajectory["solution"])  # a paragraph trace's blank lines
        [samples] = self.engine.generate([join_context(self.context, part)], replace(self.sampling, n=k, seed=seed, stop=stop))
        self.engine_seconds += time.perf_counter() - started
        rows, sampled = [], []
        for sample in samples:
            graded = grade(part + sample.text, self.anchor.trajectory["gold"])
            rows.append({"text": sample.text, "answer": graded.answer, "correct": graded.correct,
                         "num_tokens": sample.num_tokens, "finish_reason": sample.finish_reason, "seed": seed})
            sampled.append(SampledRollout(split_steps(sample.text, self.anchor.rule), graded.correct, sample.num_tokens))
            self.tokens += sample.num_tokens or 0
        self.pending[(prefix, seed)] = rows
        return sampled


class StoreWriter:
    """The search's event sink: each event is one transaction in the store."""

    def __init__(self, store: Store, anchor: Anchor, sampler: PolicySampler, ids: dict[RolloutKey, int], *,
                 policy: str, job_id: int | None, on_sampled: Callable[[int], None] = lambda count: None) -> None:  # fmt: skip
        self.store, self.anchor, self.sampler, self.ids = store, anchor, sampler, ids
        self.policy, self.job_id, self.on_sampled = policy, job_id, on_sampled
        self.problem_id = anchor.trajectory["problem_id"]

    def __call__(self, event: Event) -> None:
        store = self.store
        if isinstance(event, RolloutsSampled):
            rows = self.sampler.pending.pop((event.prefix, event.seed))
            step_id = self.anchor.step_id_at(event.prefix)
            with store.transaction():
                node = store.ensure_node_path(self.problem_id, event.prefix)[-1]
                ids = store.add_node_rollouts(node, [
                    {**row, "step_id": step_id, "job_id": self.job_id, "model": self.policy} for row in rows
                ])  # fmt: skip
            self.ids.update({rollout.key: rollout_id for rollout, rollout_id in zip(event.rollouts, ids)})
            self.on_sampled(len(ids))
        elif isinstance(event, RolloutSelected):
            store.mark_rollout(self.ids[event.key], selected=True, job_id=self.job_id)
        elif isinstance(event, FirstErrorLocated):
            store.mark_rollout(self.ids[event.key], first_error=event.first_error, job_id=self.job_id)
        elif isinstance(event, BranchExpanded):
            expand_rollout(store, self.ids[event.key])


@dataclass(frozen=True, kw_only=True)
class TreeSearchSpec(JobSpec):
    """Grow the rollout tree of a trajectory's problem: OmegaPRM with a rollout budget, or expand
    every rollout of a node `depth` levels deep (k rollouts at every new node)."""

    kind: ClassVar[str] = "tree-search"
    unit: ClassVar[str] = "rollouts"

    policy: str
    trajectory_id: int
    mode: str = "omegaprm"
    budget: int = 64
    k: int = 8  # rollouts per probed (or expanded) node
    alpha: float = 0.5
    beta: float = 0.9
    length_scale: float = 500
    c_puct: float = 0.125
    node_id: int | None = None  # expand: whose rollouts (default: the question, the root)
    depth: int = 1
    sampling: SamplingParams = field(default_factory=default_sampling)
    template: str = DEFAULT_TEMPLATE

    def model_to_load(self) -> str:
        return self.policy

    def params(self) -> OmegaPRM:
        return OmegaPRM(k=self.k, alpha=self.alpha, beta=self.beta, length_scale=self.length_scale, c_puct=self.c_puct)

    def validate(self, store: Store) -> None:
        if not self.policy.strip():
            raise StepScopeError("choose a policy model")
        if self.mode not in MODES:
            raise StepScopeError(f"tree search mode is one of {', '.join(MODES)}, not {self.mode!r}")
        check_range("the rollout budget", self.budget, 1, MAX_BUDGET)
        check_range("k (rollouts per node)", self.k, 1, MAX_N)
        check_range("the expansion depth", self.depth, 1, MAX_DEPTH)
        check_sampling(self.sampling)
        self.params()  # raises on alpha, beta, L, c_puct out of range
        trajectory = store.get_trajectory(self.trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {self.trajectory_id} does not exist")
        if not trajectory.get("gold"):
            raise StepScopeError(f"trajectory {self.trajectory_id}: its problem has no gold answer to grade rollouts")
        check_rebuildable(trajectory.get("rule") or "line", self.trajectory_id)
        if self.node_id is not None:
            node = store.get_node(self.node_id)
            if node is None or node["problem_id"] != trajectory["problem_id"]:
                raise StepScopeError(f"node {self.node_id} is not a node of trajectory {self.trajectory_id}'s problem")

    def planned(self) -> int:
        return self.budget

    def to_manifest(self, store: Store) -> dict:
        template = load_template(self.template)
        trajectory = store.get_trajectory(self.trajectory_id) or {}
        return {
            "policy": self.policy, **self.common_manifest(), "trajectory_id": self.trajectory_id,
            "trajectory_ids": [self.trajectory_id],  # so Explore watches the job on this trajectory
            "mode": self.mode, "budget": self.budget, "search": self.params().describe(),
            "node_id": self.node_id, "depth": self.depth, "sampling": self.sampling.as_manifest(),
            "prompt_template": {"name": template.name, "sha256": template.sha256}, "grader": GRADER_NAME,
            "splitter": cutting_rule(trajectory.get("rule")),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "TreeSearchSpec":
        search_params = {k: v for k, v in manifest["search"].items() if k != "strategy"}
        return cls(**known_fields(
            cls, manifest, sampling=sampling_from(manifest["sampling"]), template=manifest["prompt_template"]["name"],
            **search_params,
        ))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        store = context.store
        anchor = Anchor.load(store, self.trajectory_id)
        check_rebuildable(anchor.rule, self.trajectory_id)  # resegmented since it was queued
        problem_id = anchor.trajectory["problem_id"]
        spent_before, tokens_before = store.job_rollout_totals(context.job_id)
        tree, ids = rebuild_tree(store, problem_id, self.policy, anchor.rule)
        sampler = PolicySampler(context.engine, anchor, self.template, self.sampling, context.should_stop)
        progress = Progress(planned=self.budget, done=spent_before, tokens=tokens_before)
        started = time.perf_counter()

        def sampled(count: int) -> None:
            progress.done += count
            progress.calls += 1
            progress.tokens = tokens_before + sampler.tokens
            progress.engine_seconds = sampler.engine_seconds
            progress.seconds = time.perf_counter() - started
            context.report(progress)

        writer = StoreWriter(store, anchor, sampler, ids, policy=self.policy, job_id=context.job_id, on_sampled=sampled)
        left = max(0, self.budget - spent_before)
        seed = self.sampling.seed or 0
        try:
            if self.mode == "omegaprm":
                report = search(tree, sampler, self.params(), budget=left, seed=seed, on_event=writer)
            else:
                node = self.node_id if self.node_id is not None else store.root_node(problem_id)
                prefix = tuple(n["text"] for n in store.node_path(node))[1:]
                report = expand(tree, sampler, prefix, self.depth, self.k, budget=left, seed=seed, on_event=writer)
        except _Cancelled:
            return True
        progress.planned = progress.done  # what the search spent is what it needed
        context.report(progress)
        # Why it stopped belongs with the job: a search that ends before its budget is not a failure.
        job = store.get_job(context.job_id)
        store.update_job(context.job_id, manifest={**job["manifest"], "stopped": self.stop_reason(report, progress.done)})
        return False

    def stop_reason(self, report, spent: int) -> str:
        """Why the search ended, in words (the CLI prints it, the job keeps it)."""
        if report.stopped == "budget":
            return f"the rollout budget was spent ({spent} of {self.budget} rollouts)"
        if report.stopped == "pool empty":
            return (f"OmegaPRM's pool is empty after {spent} of {self.budget} rollouts: no unselected rollout with a "
                    "wrong answer starts from a state whose value is strictly between 0 and 1")  # fmt: skip
        return f"every level was expanded ({self.depth} deep, {spent} of {self.budget} rollouts)"
