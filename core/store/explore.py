"""What the Explore page reads: trajectories matching a filter (paged, counted, next and
previous), problems to pick from, the policies with rollouts on a trajectory.

Lists are filtered and paged in SQL: a database can hold 10,000s of trajectories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.store.compare import DATA_VERSION_SQL
from core.store.connection import ConnectionBase
from core.store.disk_cache import OnStale, remembered
from core.store.verdicts import preferred_order

# Disagreement filters: which pairs of labels a step's human rating is checked against. A rating
# counts as "fine" at 0 or +1 and "wrong" at -1, as on Compare; MC hard says fine when any of the
# policy's rollouts from the step reached the answer; a judge (or probe) says fine at P(yes) >= 0.5,
# its latest verdict counting (preferred_order: an in-sample score never hides a cross-fitted one).
DISAGREEMENTS = ("anything", "mc-hard", "judge", "annotators")

# Each kind is found set-wise: the steps in disagreement by one grouped pass (GROUP BY step on an
# index), joined to the current steps, as the trajectories they belong to. The set is computed once
# per data version (core.store.disk_cache.remembered) and the page's list, count and next/previous
# queries read it as a JSON array, so a rerun never repeats the grouping.
_CURRENT = """JOIN steps s ON s.id = d.step_id
              JOIN trajectories u ON u.id = s.trajectory_id AND u.current_segmentation_id = s.segmentation_id"""
_DISAGREE_SQL = {
    # Annotators: a step some call fine and some wrong.
    "annotators": f"""SELECT DISTINCT s.trajectory_id FROM (
                          SELECT step_id FROM annotations WHERE rating IS NOT NULL GROUP BY step_id
                          HAVING MIN(rating >= 0) <> MAX(rating >= 0)) d {_CURRENT}""",
    # MC hard (the policy's rollouts, grouped per step) against any human rating of the step.
    "mc-hard": f"""SELECT DISTINCT s.trajectory_id FROM (
                       SELECT step_id, MAX(correct) AS hard FROM rollouts WHERE step_id IS NOT NULL AND model IS ?
                       GROUP BY step_id) d {_CURRENT}
                   JOIN annotations a ON a.step_id = d.step_id AND a.rating IS NOT NULL AND (a.rating >= 0) <> d.hard""",
    # One judge's latest step verdict with a P(yes) (ranked per step on the (judge, kind, step)
    # index) against any human rating of the step; run once per verifier with step verdicts.
    "judge": f"""SELECT DISTINCT s.trajectory_id FROM (
                     SELECT step_id, p_yes, ROW_NUMBER() OVER (
                         PARTITION BY step_id ORDER BY {preferred_order(last=False)}) AS rank FROM verdicts
                     WHERE judge = ? AND kind = 'step' AND p_yes IS NOT NULL) d {_CURRENT}
                 JOIN annotations a ON a.step_id = d.step_id AND a.rating IS NOT NULL
                      AND (a.rating >= 0) <> (d.p_yes >= 0.5)
                 WHERE d.rank = 1""",
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


def _disagreeing(store: "ExploreQueries", kind: str, policy: str | None, on_stale: OnStale = None) -> str:
    """The ids of the trajectories with a rated current step where the human rating and `kind`
    disagree, as a JSON array, remembered for the store's data version (with `on_stale`, an
    earlier version's while the current one is computed: core.store.disk_cache.remembered)."""
    if kind not in DISAGREEMENTS:
        raise ValueError(f"unknown disagreement {kind!r}")
    version = tuple(store.conn.execute(DATA_VERSION_SQL).fetchone())
    key = (kind, policy if kind in ("mc-hard", "anything") else None)
    return remembered(store, "explore-disagree", key, version, lambda: _find_disagreeing(store, kind, policy), on_stale)


def _find_disagreeing(store: "ExploreQueries", kind: str, policy: str | None) -> str:
    if kind == "anything":  # the union of the three, each remembered on its own
        found = set()
        for part in ("mc-hard", "judge", "annotators"):
            found.update(json.loads(_disagreeing(store, part, policy)))
    elif kind == "judge":
        judges = [row[0] for row in store.conn.execute(
            "SELECT name FROM verifiers WHERE EXISTS (SELECT 1 FROM verdicts WHERE judge = verifiers.name AND kind = 'step')")]
        found = {row[0] for judge in judges for row in store.conn.execute(_DISAGREE_SQL["judge"], [judge])}
    else:
        found = {row[0] for row in store.conn.execute(_DISAGREE_SQL[kind], [policy] if kind == "mc-hard" else [])}
    return json.dumps(sorted(found))


def _where(store: "ExploreQueries", filters: TrajectoryFilter, on_stale: OnStale = None) -> tuple[str, list[Any]]:
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
        clauses.append("t.id IN (SELECT value FROM json_each(?))")
        params.append(_disagreeing(store, filters.disagree, filters.policy, on_stale))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


_FROM = "FROM trajectories t JOIN problems p ON p.id = t.problem_id"


class ExploreQueries(ConnectionBase):
    def find_trajectories(self, filters: TrajectoryFilter, *, limit: int, offset: int = 0,
                          on_stale: OnStale = None) -> list[dict]:  # fmt: skip
        """Matching trajectories by id: id, dataset, source, model, correct, question."""
        where, params = _where(self, filters, on_stale)
        return self._rows(
            f"SELECT t.id, p.dataset, t.source, t.model, t.correct, p.question {_FROM} {where}"
            " ORDER BY t.id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )

    def count_matching_trajectories(self, filters: TrajectoryFilter, on_stale: OnStale = None) -> int:
        where, params = _where(self, filters, on_stale)
        return int(self._scalar(f"SELECT COUNT(*) {_FROM} {where}", params))

    def neighbour_trajectory(self, filters: TrajectoryFilter, current: int, direction: int,
                             on_stale: OnStale = None) -> int | None:  # fmt: skip
        """The next (direction 1) or previous (-1) matching trajectory by id, or None."""
        where, params = _where(self, filters, on_stale)
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
