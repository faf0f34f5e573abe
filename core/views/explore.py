"""What the Explore page shows, read from the store: trajectory lists, step cards, chart rows,
a step's exact prefix and its rollouts. Plain Python, tested without Streamlit.

Lists are filtered and paged in SQL (a database can hold 10,000s of trajectories); a trajectory
is read whole, because its steps, values, verdicts and labels are a handful of indexed queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from core.mcpe import ROLLOUTS_PER_STEP, Counts, StepValue, default_strategy_name, make_strategy, step_value
from core.sample_solutions import featured_trajectory
from core.policy import join_context, load_template, policy_context
from core.steps import StepSpan, prefix_end
from core.views.math_text import show_bidi
# The filter is a value the page builds and the store turns into SQL; the page imports it from here.
from core.store import DISAGREEMENTS, Store, TrajectoryFilter  # noqa: F401
from core.store.disk_cache import OnStale

LIST_LIMIT = 300


# --- choosing a trajectory -----------------------------------------------------------------


def find_trajectories(
    store: Store, filters: TrajectoryFilter, *, limit: int = LIST_LIMIT, offset: int = 0, on_stale: OnStale = None
) -> list[dict]:
    """Matching trajectories by id: id, dataset, source, model, correct, question. `on_stale`: a
    disagreement filter may read the set of the data before the latest change while the current
    one is computed (core.store.disk_cache.remembered)."""
    return store.find_trajectories(filters, limit=limit, offset=offset, on_stale=on_stale)


def count_trajectories(store: Store, filters: TrajectoryFilter, on_stale: OnStale = None) -> int:
    return store.count_matching_trajectories(filters, on_stale)


def neighbour(store: Store, filters: TrajectoryFilter, current: int, direction: int,
              on_stale: OnStale = None) -> int | None:  # fmt: skip
    """The next (direction 1) or previous (-1) matching trajectory by id, or None."""
    return store.neighbour_trajectory(filters, current, direction, on_stale)


def opening_trajectory(store: Store, ids: Sequence[int]) -> int | None:
    """Where a first visit opens: the sample set's featured trajectory when it is listed (a
    fresh app), else the first listed."""
    featured = featured_trajectory(store)
    return featured if featured in ids else (ids[0] if ids else None)


def keeps_current(current: int | None, listed, linked: bool, filters_changed: bool) -> bool:
    """Whether the view stays on the trajectory it has: one opened by a link always does (the
    list holds only the first LIST_LIMIT matches, so a linked trajectory may well be outside it);
    otherwise a change of filters moves off a trajectory they no longer list. A first visit has
    no filters to change from."""
    if current is None:
        return False
    return linked or not filters_changed or current in listed


def trajectory_label(row: dict, width: int = 70) -> str:
    """One line for a picker: plain text (a picker shows it as text, never as markup)."""
    verdict = {True: "correct", False: "wrong", None: "ungraded"}[
        None if row.get("correct") is None else bool(row["correct"])
    ]
    question = " ".join(str(row.get("question", "")).split())
    if len(question) > width:
        question = question[: width - 1] + "…"
    return f"#{row['id']} · {row.get('source', '')} · {verdict} · {question}"


def find_problems(store: Store, dataset: str | None, search: str = "", *, limit: int = LIST_LIMIT) -> list[dict]:
    """Problems (id, question) that have at least one trajectory."""
    return store.problems_with_trajectories(dataset, search, limit=limit)


def dataset_names(store: Store) -> list[str]:
    return [row["dataset"] for row in store.datasets()]


# --- one trajectory ------------------------------------------------------------------------


@dataclass
class StepCard:
    idx: int
    step_id: int
    text: str
    value: StepValue
    verdicts: dict[str, float | None] = field(default_factory=dict)  # verifier -> P(yes) or score
    labels: list[dict] = field(default_factory=list)  # annotator, rating, first_error, flagged, note
    prms: frozenset[str] = frozenset()  # the verifiers among `verdicts` that are PRMs (by stored kind)
    # The graded outcome, on the last step of a solution with a final answer: its prefix is the
    # whole solution, so its value is known without a rollout (1 when right, 0 when wrong).
    outcome: bool | None = None
    alternatives: list[dict] = field(default_factory=list)  # other candidates rated here (PRM800K)

    @property
    def judge_verdicts(self) -> dict[str, float | None]:
        """Judges' and probes' P(yes), without the PRMs' scores."""
        return {j: p for j, p in self.verdicts.items() if j not in self.prms}

    @property
    def prm_scores(self) -> dict[str, float | None]:
        """Each PRM's step score."""
        return {j: p for j, p in self.verdicts.items() if j in self.prms}

    @property
    def value_text(self) -> str:
        v = self.value
        if v.n == 0 and self.outcome is not None:
            return (f"value {int(self.outcome)} without rollouts: this prefix is the whole solution, graded "
                    f"{'right' if self.outcome else 'wrong'}")  # fmt: skip
        if v.n == 0:
            return "no rollouts yet"
        return f"MC {v.soft:.2f}  [{v.low:.2f}, {v.high:.2f}]  ({v.correct}/{v.n} reach the answer)"


def value_models(store: Store, trajectory_id: int) -> list[str]:
    """Policies that have rollouts on this trajectory's current steps."""
    return store.current_rollout_models(trajectory_id)


def step_cards(store: Store, trajectory_id: int, model: str | None) -> list[StepCard]:
    """Every step of the current segmentation with its MC value (for `model`), the latest step
    verdict of each judge and every annotator's label."""
    steps = store.steps(trajectory_id)
    segmentation = steps[0]["segmentation_id"] if steps else None
    return cards_for(
        steps, store.step_value_counts([s["id"] for s in steps], model=model),
        store.verdicts(trajectory_id, kind="step"), store.annotations(trajectory_id, segmentation_id=segmentation),
        store.get_trajectory(trajectory_id) or {}, len(steps),
    )  # fmt: skip


def cards_for(steps: list[dict], counts: dict, verdict_rows, label_rows, trajectory: dict,
              n_steps: int) -> list[StepCard]:  # fmt: skip
    """Step cards from what was read for `steps` (all of a segmentation's, or a window of them):
    value counts by step id, step verdict rows (the latest per judge last) and label rows; the
    last step of the `n_steps` carries the trajectory's graded outcome."""
    verdicts: dict[int, dict[str, float | None]] = {}
    prms = set()
    for verdict in verdict_rows:
        verdicts.setdefault(verdict["step_id"], {})[verdict["judge"]] = verdict["p_yes"]
        if verdict["verifier_kind"] == "prm":
            prms.add(verdict["judge"])
    labels: dict[int, list[dict]] = {}
    for row in label_rows:
        labels.setdefault(row["step_id"], []).append(row)
    decided = trajectory.get("correct") is not None and trajectory.get("final_answer") is not None
    alternatives = (trajectory.get("meta") or {}).get("alternatives") or {}
    return [
        StepCard(
            s["idx"], s["id"], s["text"], step_value(Counts(*counts[s["id"]])),
            verdicts.get(s["id"], {}), labels.get(s["id"], []), frozenset(prms),
            bool(trajectory["correct"]) if decided and s["idx"] == n_steps - 1 else None,
            [a for a in alternatives.get(str(s["idx"]), []) if isinstance(a, dict)],
        )
        for s in steps
    ]


def outcome_text(trajectory: dict) -> str:
    """The trajectory's gold and final answer and whether it reaches the gold one; a PRM800K
    solution that its labeller stopped at a wrong step (finish_reason found_error) says so instead
    of showing a missing final answer."""
    verdict = {True: "reaches the gold answer", False: "does not reach the gold answer", None: "not graded"}
    final = trajectory.get("final_answer")
    if final is None and (trajectory.get("meta") or {}).get("finish_reason") == "found_error":
        final_text = "none: the labeller stopped at a step rated −1 (PRM800K found_error)"
    else:
        final_text = show_bidi(final or "—")
    return (f"Gold answer: {trajectory.get('gold') or '—'}   ·   final answer: {final_text} "
            f"({verdict[trajectory.get('correct')]})")


def outcome_verdicts(store: Store, trajectory_id: int) -> dict[str, float | None]:
    return {v["judge"]: v["p_yes"] for v in store.verdicts(trajectory_id, kind="outcome")}


RATING_MARK = {1: "+1", 0: "0", -1: "−1", None: "·"}


def label_text(label: dict) -> str:
    parts = [f"{label['annotator']}: {RATING_MARK.get(label['rating'], '·')}"]
    if label.get("first_error"):
        parts.append("first error")
    if label.get("flagged"):
        parts.append("flagged")
    return " ".join(parts)


def chart_rows(cards: Sequence[StepCard]) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows for the chart: MC values with interval, judge P(yes) (PRMs apart: `prm_chart_rows`),
    human ratings.

    Ratings are drawn on the value axis: +1 at 1, 0 at 0.5, -1 at 0.
    """
    values = [
        {"step": c.idx, "value": c.value.soft, "low": c.value.low, "high": c.value.high, "n": c.value.n}
        for c in cards
        if c.value.n
    ]
    verdicts = [
        {"step": c.idx, "judge": judge, "p_yes": p}
        for c in cards
        for judge, p in c.judge_verdicts.items()
        if p is not None
    ]
    labels = [
        {"step": c.idx, "annotator": label["annotator"], "rating": label["rating"],
         "y": (label["rating"] + 1) / 2, "first_error": bool(label.get("first_error"))}
        for c in cards
        for label in c.labels
        if label["rating"] is not None
    ]  # fmt: skip
    return values, verdicts, labels


def prm_chart_rows(cards: Sequence[StepCard]) -> list[dict]:
    """Rows for the chart's PRM layer: each PRM's score per step."""
    return [{"step": c.idx, "prm": prm, "score": p} for c in cards for prm, p in c.prm_scores.items() if p is not None]


def page_of(idx: int, page_size: int) -> int:
    return max(0, idx) // page_size


def step_prefix(store: Store, trajectory_id: int, idx: int) -> str:
    """The exact text sent to the policy for rollouts from step `idx` (what a job samples from).

    For a trajectory with a gold answer this is what `core.jobs.estimate.load_tasks` builds; it is
    computed for the one step only, so that a 10,000-step trajectory does not build 10,000
    prefixes.
    """
    trajectory = store.get_trajectory(trajectory_id)
    if trajectory is None:
        raise KeyError(trajectory_id)
    spans = [StepSpan(s["text"], s["start_char"], s["end_char"]) for s in store.steps(trajectory_id)]
    context = policy_context(trajectory["question"], trajectory.get("policy_prompt"), load_template())
    return join_context(context, trajectory["solution"][: prefix_end(trajectory["solution"], spans, idx)])


def estimate_budget_text(store: Store, trajectory_id: int, policy: str, n: int = ROLLOUTS_PER_STEP) -> str:
    """What the Estimate button spends on this trajectory with the form's defaults, said before
    it is pressed: the strategy core.mcpe.default_strategy_name picks for its length and the most
    rollouts it takes given the policy's stored ones (most_to_spend: exact for fixed N). The
    outcome is the stored grade, as the cards show it; the counts are one aggregate query."""
    trajectory = store.get_trajectory(trajectory_id) or {}
    segmentation = trajectory.get("current_segmentation_id")
    n_steps = store.segmentation_size(segmentation) if segmentation is not None else 0
    counts = [Counts()] * n_steps
    for idx, sampled, correct in store.sampled_step_values(segmentation, policy) if n_steps else ():
        if idx < n_steps:
            counts[idx] = Counts(int(sampled), int(correct or 0))
    decided = trajectory.get("correct") is not None and trajectory.get("final_answer") is not None
    strategy = make_strategy(default_strategy_name(n_steps), n)
    most = strategy.most_to_spend(counts, bool(trajectory["correct"]) if decided else None)
    if strategy.name == "fixed":
        return f"{most:,} rollouts: fixed N = {n} over {n_steps:,} steps"
    if most == 0:
        return f"no rollouts: the first-error search over {n_steps:,} steps has nothing to probe (right answer, or done)"
    return f"at most {most:,} rollouts: first-error search over {n_steps:,} steps"


def rollout_rows(store: Store, step_id: int, model: str | None) -> list[dict]:
    return [
        {"answer": r["answer"], "correct": bool(r["correct"]), "tokens": r["num_tokens"],
         "finish": r["finish_reason"], "text": r["text"], "model": r["model"], "job": r["job_id"]}
        for r in store.rollouts(step_id)
        if model is None or r["model"] == model
    ]  # fmt: skip
