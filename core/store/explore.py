"""What the Explore page reads: trajectories matching a filter (paged, counted, next and
previous), problems to pick from, the policies with rollouts on a trajectory.

Lists are filtered and paged in SQL: a database can hold 10,000s of trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.store.connection import ConnectionBase

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


@dataclass(frozen=True)
class TrajectoryFilter:
    dataset: str | None = None
    problem_id: int | None = None
    correct: bool | None = None
    labelled: bool | None = None  # labelled by anyone (any step, any segmentation)
    search: str = ""  # a substring of the question
    disagree: str | None = None  # one of DISAGREEMENTS: a human rating disagrees with that source
    policy: str | None = None  # whose rollouts give the MC hard label for `disagree`


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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


def _where(filters: TrajectoryFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if filters.dataset is not None:
        clauses.append("p.dataset = ?")
        params.append(filters.dataset)
    if filters.problem_id is not None:
        clauses.append("t.problem_id = ?")
        params.append(filters.problem_id)
    if filters.correct is not None:
        clauses.append("t.correct = ?")
        params.append(int(filters.correct))
    if filters.labelled is not None:
        exists = ("EXISTS (SELECT 1 FROM steps s JOIN annotations a ON a.step_id = s.id"
                  " WHERE s.trajectory_id = t.id)")  # fmt: skip
        clauses.append(exists if filters.labelled else f"NOT {exists}")
    if filters.search.strip():
        clauses.append("p.question LIKE ? ESCAPE '\\'")
        params.append(_like(filters.search.strip()))
    if filters.disagree is not None:
        clause, extra = _disagree_clause(filters.disagree, filters.policy)
        clauses.append(clause)
        params.extend(extra)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


_FROM = "FROM trajectories t JOIN problems p ON p.id = t.problem_id"


class ExploreQueries(ConnectionBase):
    def find_trajectories(self, filters: TrajectoryFilter, *, limit: int, offset: int = 0) -> list[dict]:
        """Matching trajectories by id: id, dataset, source, model, correct, question."""
        where, params = _where(filters)
        return self._rows(
            f"SELECT t.id, p.dataset, t.source, t.model, t.correct, p.question {_FROM} {where}"
            " ORDER BY t.id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )

    def count_matching_trajectories(self, filters: TrajectoryFilter) -> int:
        where, params = _where(filters)
        return int(self._scalar(f"SELECT COUNT(*) {_FROM} {where}", params))

    def neighbour_trajectory(self, filters: TrajectoryFilter, current: int, direction: int) -> int | None:
        """The next (direction 1) or previous (-1) matching trajectory by id, or None."""
        where, params = _where(filters)
        compare, order = (">", "ASC") if direction > 0 else ("<", "DESC")
        where = f"{where} AND t.id {compare} ?" if where else f"WHERE t.id {compare} ?"
        found = self._scalar(f"SELECT t.id {_FROM} {where} ORDER BY t.id {order} LIMIT 1", [*params, current])
        return None if found is None else int(found)

    def problems_with_trajectories(self, dataset: str | None, search: str = "", *, limit: int) -> list[dict]:
        """Problems (id, question) that have at least one trajectory, optionally by a substring
        of the question."""
        clauses = ["EXISTS (SELECT 1 FROM trajectories t WHERE t.problem_id = p.id)"]
        params: list[Any] = []
        if dataset is not None:
            clauses.append("p.dataset = ?")
            params.append(dataset)
        if search.strip():
            clauses.append("p.question LIKE ? ESCAPE '\\'")
            params.append(_like(search.strip()))
        return self._rows(
            f"SELECT p.id, p.question FROM problems p WHERE {' AND '.join(clauses)} ORDER BY p.id LIMIT ?",
            [*params, limit],
        )

    def current_rollout_models(self, trajectory_id: int) -> list[str]:
        """Policies that have rollouts on this trajectory's current steps."""
        found = self._rows(
            """SELECT DISTINCT r.model FROM rollouts r JOIN steps s ON s.id = r.step_id
               JOIN trajectories t ON t.id = s.trajectory_id AND s.segmentation_id = t.current_segmentation_id
               WHERE s.trajectory_id = ? AND r.model IS NOT NULL ORDER BY r.model""",
            [trajectory_id],
        )
        return [row["model"] for row in found]
