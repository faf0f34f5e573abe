"""What the Explore page shows, read from the store: trajectory lists, step cards, chart rows,
a step's exact prefix and its rollouts. Plain Python, tested without Streamlit.

Lists are filtered and paged in SQL (a database can hold 10,000s of trajectories); a trajectory
is read whole, because its steps, values, verdicts and labels are a handful of indexed queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from core.jobs.estimate import load_tasks
from core.mcpe import Counts, StepValue, step_value
from core.policy import join_context, load_template, policy_context
from core.steps import StepSpan, prefix_end
from core.store import Store

LIST_LIMIT = 300


def rows(store: Store, sql: str, params: Sequence[Any] = ()) -> list[dict]:
    cursor = store.conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# --- choosing a trajectory -----------------------------------------------------------------


# Disagreement filters: which pairs of labels a step's human rating is checked against. A rating
# counts as "fine" at 0 or +1 and "wrong" at -1, as on Compare; MC hard says fine when any of the
# policy's rollouts from the step reached the answer; a judge (or probe) says fine at P(yes) >= 0.5,
# its latest verdict counting.
DISAGREEMENTS = ("anything", "mc-hard", "judge", "annotators")

_HUMAN_FINE = "(a.rating >= 0)"
_DISAGREE_SQL = {
    # Written as EXISTS tests that stop at the first matching rollout, not as MAX(correct) over
    # all of a step's rollouts: on 10,000s of rollouts this is what keeps the filter under a second.
    "mc-hard": """((a.rating < 0 AND EXISTS (SELECT 1 FROM rollouts r WHERE r.step_id = s.id AND r.model IS ?
                                           AND r.correct = 1))
                  OR (a.rating >= 0 AND EXISTS (SELECT 1 FROM rollouts r WHERE r.step_id = s.id AND r.model IS ?)
                      AND NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.step_id = s.id AND r.model IS ?
                                      AND r.correct = 1)))""",
    "judge": f"""EXISTS (SELECT 1 FROM verdicts v WHERE v.step_id = s.id AND v.kind = 'step'
                 AND v.p_yes IS NOT NULL AND (v.p_yes >= 0.5) != {_HUMAN_FINE}
                 AND v.id = (SELECT MAX(w.id) FROM verdicts w WHERE w.step_id = s.id AND w.kind = 'step'
                             AND w.judge = v.judge AND w.p_yes IS NOT NULL))""",
    "annotators": f"""EXISTS (SELECT 1 FROM annotations b WHERE b.step_id = s.id AND b.rating IS NOT NULL
                      AND (b.rating >= 0) != {_HUMAN_FINE})""",
}


def _disagree_clause(kind: str, policy: str | None) -> tuple[str, list[Any]]:
    """Trajectories with a rated step (current segmentation) where the human rating and `kind`
    disagree. Driven from the annotations (few) rather than the trajectories (many)."""
    if kind not in DISAGREEMENTS:
        raise ValueError(f"unknown disagreement {kind!r}")
    kinds = ["mc-hard", "judge", "annotators"] if kind == "anything" else [kind]
    tests = " OR ".join(_DISAGREE_SQL[k] for k in kinds)
    params = [policy] * _DISAGREE_SQL["mc-hard"].count("?") if "mc-hard" in kinds else []
    sql = f"""t.id IN (SELECT s.trajectory_id FROM annotations a JOIN steps s ON s.id = a.step_id
                JOIN trajectories u ON u.id = s.trajectory_id AND u.current_segmentation_id = s.segmentation_id
                WHERE a.rating IS NOT NULL AND ({tests}))"""
    return sql, params


@dataclass(frozen=True)
class TrajectoryFilter:
    dataset: str | None = None
    problem_id: int | None = None
    correct: bool | None = None
    labelled: bool | None = None  # labelled by anyone (any step, any segmentation)
    search: str = ""  # a substring of the question
    disagree: str | None = None  # one of DISAGREEMENTS: a human rating disagrees with that source
    policy: str | None = None  # whose rollouts give the MC hard label for `disagree`

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.dataset is not None:
            clauses.append("p.dataset = ?")
            params.append(self.dataset)
        if self.problem_id is not None:
            clauses.append("t.problem_id = ?")
            params.append(self.problem_id)
        if self.correct is not None:
            clauses.append("t.correct = ?")
            params.append(int(self.correct))
        if self.labelled is not None:
            exists = ("EXISTS (SELECT 1 FROM steps s JOIN annotations a ON a.step_id = s.id"
                      " WHERE s.trajectory_id = t.id)")  # fmt: skip
            clauses.append(exists if self.labelled else f"NOT {exists}")
        if self.search.strip():
            clauses.append("p.question LIKE ? ESCAPE '\\'")
            params.append(_like(self.search.strip()))
        if self.disagree is not None:
            clause, extra = _disagree_clause(self.disagree, self.policy)
            clauses.append(clause)
            params.extend(extra)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


_FROM = "FROM trajectories t JOIN problems p ON p.id = t.problem_id"


def find_trajectories(
    store: Store, filters: TrajectoryFilter, *, limit: int = LIST_LIMIT, offset: int = 0
) -> list[dict]:
    """Matching trajectories by id: id, dataset, source, model, correct, question."""
    where, params = filters.where()
    return rows(
        store,
        f"SELECT t.id, p.dataset, t.source, t.model, t.correct, p.question {_FROM} {where}"
        " ORDER BY t.id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )


def count_trajectories(store: Store, filters: TrajectoryFilter) -> int:
    where, params = filters.where()
    return int(store.conn.execute(f"SELECT COUNT(*) {_FROM} {where}", params).fetchone()[0])


def neighbour(store: Store, filters: TrajectoryFilter, current: int, direction: int) -> int | None:
    """The next (direction 1) or previous (-1) matching trajectory by id, or None."""
    where, params = filters.where()
    compare, order = (">", "ASC") if direction > 0 else ("<", "DESC")
    where = f"{where} AND t.id {compare} ?" if where else f"WHERE t.id {compare} ?"
    row = store.conn.execute(
        f"SELECT t.id {_FROM} {where} ORDER BY t.id {order} LIMIT 1", [*params, current]
    ).fetchone()
    return None if row is None else int(row[0])


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
    clauses = ["EXISTS (SELECT 1 FROM trajectories t WHERE t.problem_id = p.id)"]
    params: list[Any] = []
    if dataset is not None:
        clauses.append("p.dataset = ?")
        params.append(dataset)
    if search.strip():
        clauses.append("p.question LIKE ? ESCAPE '\\'")
        params.append(_like(search.strip()))
    return rows(
        store,
        f"SELECT p.id, p.question FROM problems p WHERE {' AND '.join(clauses)} ORDER BY p.id LIMIT ?",
        [*params, limit],
    )


def dataset_names(store: Store) -> list[str]:
    return [row["dataset"] for row in store.datasets()]


# --- one trajectory ------------------------------------------------------------------------


@dataclass
class StepCard:
    idx: int
    step_id: int
    text: str
    value: StepValue
    verdicts: dict[str, float | None] = field(default_factory=dict)  # judge -> P(yes)
    labels: list[dict] = field(default_factory=list)  # annotator, rating, first_error, flagged, note

    @property
    def value_text(self) -> str:
        v = self.value
        if v.n == 0:
            return "no rollouts yet"
        return f"MC {v.soft:.2f}  [{v.low:.2f}, {v.high:.2f}]  ({v.correct}/{v.n} reach the answer)"


def value_models(store: Store, trajectory_id: int) -> list[str]:
    """Policies that have rollouts on this trajectory's current steps."""
    found = rows(
        store,
        """SELECT DISTINCT r.model FROM rollouts r JOIN steps s ON s.id = r.step_id
           JOIN trajectories t ON t.id = s.trajectory_id AND s.segmentation_id = t.current_segmentation_id
           WHERE s.trajectory_id = ? AND r.model IS NOT NULL ORDER BY r.model""",
        [trajectory_id],
    )
    return [row["model"] for row in found]


def step_cards(store: Store, trajectory_id: int, model: str | None) -> list[StepCard]:
    """Every step of the current segmentation with its MC value (for `model`), the latest step
    verdict of each judge and every annotator's label."""
    steps = store.steps(trajectory_id)
    counts = store.step_value_counts([s["id"] for s in steps], model=model)
    verdicts: dict[int, dict[str, float | None]] = {}
    for verdict in store.verdicts(trajectory_id, kind="step"):
        verdicts.setdefault(verdict["step_id"], {})[verdict["judge"]] = verdict["p_yes"]
    labels: dict[int, list[dict]] = {}
    segmentation = steps[0]["segmentation_id"] if steps else None
    for row in store.annotations(trajectory_id, segmentation_id=segmentation):
        labels.setdefault(row["step_id"], []).append(row)
    return [
        StepCard(
            s["idx"], s["id"], s["text"], step_value(Counts(*counts[s["id"]])),
            verdicts.get(s["id"], {}), labels.get(s["id"], []),
        )
        for s in steps
    ]


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
    """Rows for the chart: MC values with interval, judge P(yes), human ratings.

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
        for judge, p in c.verdicts.items()
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


def step_prefix_via_tasks(store: Store, trajectory_id: int, idx: int) -> str:
    """The same prefix through the job's own code path (used by tests to pin the two together)."""
    return load_tasks(store, [trajectory_id], load_template())[0].steps[idx].prompt


def rollout_rows(store: Store, step_id: int, model: str | None) -> list[dict]:
    return [
        {"answer": r["answer"], "correct": bool(r["correct"]), "tokens": r["num_tokens"],
         "finish": r["finish_reason"], "text": r["text"], "model": r["model"], "job": r["job_id"]}
        for r in store.rollouts(step_id)
        if model is None or r["model"] == model
    ]  # fmt: skip
