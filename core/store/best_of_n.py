"""What the Best-of-N page reads: a sample set's graded solutions by problem (a policy's own, or
any imported source's: one model's, or every model's of the source together), and the outcome
verdicts on them."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import json

import numpy as np

from core.store.compare import latest_per_key
from core.store.connection import ConnectionBase
from core.store.rows import _chunks
from core.store.verdicts import preferred_order


def solution_arrays(rows: list[tuple]) -> dict[str, np.ndarray]:
    """Rows starting (id, problem id, final answer, correct) as arrays; each distinct answer a code
    (-1: none), so votes compare integers."""
    codes: dict[str, int] = {}
    count = len(rows)
    return {
        "id": np.fromiter((r[0] for r in rows), dtype=np.int64, count=count),
        "problem_id": np.fromiter((r[1] for r in rows), dtype=np.int64, count=count),
        "answer": np.fromiter((-1 if r[2] is None else codes.setdefault(r[2], len(codes)) for r in rows),
                              dtype=np.int64, count=count),
        "correct": np.fromiter((r[3] for r in rows), dtype=np.int64, count=count),
    }  # fmt: skip

class BestOfNQueries(ConnectionBase):
    def graded_policy_models(self, dataset: str | None = None) -> list[str]:
        """Policies with graded solutions of their own (source "policy")."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        found = self._rows(
            f"""SELECT DISTINCT t.model FROM trajectories t JOIN problems p ON p.id = t.problem_id
                WHERE t.source = 'policy' AND t.model IS NOT NULL AND t.correct IS NOT NULL {where} ORDER BY t.model""",
            params,
        )
        return [row["model"] for row in found]

    def graded_sample_set_counts(self, dataset: str | None = None) -> list[dict]:
        """Every (source, model) with graded solutions, and every source with more than one model
        (or solutions without a model) as a whole (model None, every_model 1): problems with two or
        more graded solutions (`problems`) and the graded solutions on them (`solutions`). Two
        aggregate queries: one row per set, never per trajectory."""
        join, where, params = ("JOIN problems p ON p.id = t.problem_id", "AND p.dataset = ?", [dataset]) if dataset \
            else ("", "", [])  # fmt: skip
        per_model = self._rows(
            f"""SELECT source, model, 0 AS every_model, SUM(n >= 2) AS problems, SUM(CASE WHEN n >= 2 THEN n ELSE 0 END) AS solutions
                FROM (SELECT t.source, t.model, t.problem_id, COUNT(*) AS n FROM trajectories t {join}
                      WHERE t.correct IS NOT NULL AND t.model IS NOT NULL {where} GROUP BY t.source, t.model, t.problem_id)
                GROUP BY source, model ORDER BY source, model""",
            params,
        )  # fmt: skip
        whole = self._rows(
            f"""SELECT source, NULL AS model, 1 AS every_model, SUM(n >= 2) AS problems,
                       SUM(CASE WHEN n >= 2 THEN n ELSE 0 END) AS solutions
                FROM (SELECT t.source, t.problem_id, COUNT(*) AS n FROM trajectories t {join}
                      WHERE t.correct IS NOT NULL {where} GROUP BY t.source, t.problem_id)
                WHERE source IN (SELECT t.source FROM trajectories t {join} WHERE t.correct IS NOT NULL {where}
                                 GROUP BY t.source HAVING COUNT(DISTINCT t.model) > 1 OR SUM(t.model IS NULL) > 0)
                GROUP BY source ORDER BY source""",
            [*params, *params],
        )  # fmt: skip
        return [*per_model, *whole]

    def graded_solution_arrays(self, source: str, model: str | None, dataset: str | None = None) -> dict[str, np.ndarray]:
        """`graded_policy_solution_arrays` for any sample set: the source's graded solutions by one
        model, or with `model` None by every model of the source."""
        conditions, params = ["t.source = ?", "t.correct IS NOT NULL"], [source]
        if model is not None:
            conditions.append("t.model = ?")
            params.append(model)
        join = ""
        if dataset:
            join = "JOIN problems p ON p.id = t.problem_id"
            conditions.append("p.dataset = ?")
            params.append(dataset)
        rows = self.conn.execute(
            f"""SELECT t.id, t.problem_id, t.final_answer, t.correct FROM trajectories t {join}
                WHERE {" AND ".join(conditions)} ORDER BY t.id""",
            params,
        ).fetchall()
        return solution_arrays(rows)

    def graded_solutions(self, source: str, model: str | None, dataset: str | None = None) -> list[dict]:
        """`graded_policy_solutions` for any sample set (for tests and small data)."""
        conditions, params = ["t.source = ?", "t.correct IS NOT NULL"], [source]
        if model is not None:
            conditions.append("t.model = ?")
            params.append(model)
        if dataset:
            conditions.append("p.dataset = ?")
            params.append(dataset)
        return self._rows(
            f"""SELECT t.id, t.problem_id, t.final_answer, t.correct FROM trajectories t
                JOIN problems p ON p.id = t.problem_id WHERE {" AND ".join(conditions)} ORDER BY t.id""",
            params,
        )

    def graded_policy_solutions(self, model: str, dataset: str | None = None) -> list[dict]:
        """The policy's graded solutions by id: id, problem_id, final_answer, correct."""
        return self.graded_solutions("policy", model, dataset)

    def graded_policy_solution_arrays(self, model: str, dataset: str | None = None) -> dict[str, np.ndarray]:
        """`graded_policy_solutions` as arrays from one query, by id: id, problem_id, answer (a code
        per distinct final answer, -1 for none), correct."""
        return self.graded_solution_arrays("policy", model, dataset)

    def problems_by_id(self, problem_ids) -> list[dict]:
        """id, question and meta (decoded) of the given problems."""
        wanted = {int(p) for p in problem_ids}
        rows = self._rows("SELECT id, question, meta FROM problems")
        return [{**row, "meta": json.loads(row["meta"]) if isinstance(row["meta"], str) else row["meta"]}
                for row in rows if row["id"] in wanted]  # fmt: skip

    def latest_outcome_score_arrays(self, trajectory_ids: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(judges, a trajectories x judges matrix of the P(yes) of each judge's latest outcome
        verdict on each of `trajectory_ids`, NaN where none): one query over the outcome verdicts."""
        rows = self.conn.execute(
            "SELECT trajectory_id, judge, p_yes FROM verdicts WHERE kind = 'outcome' AND p_yes IS NOT NULL"
            f" ORDER BY {preferred_order(last=True)}"
        ).fetchall()
        judges = sorted({r[1] for r in rows})
        column = {j: i for i, j in enumerate(judges)}
        count = len(rows)
        trajectory = np.fromiter((r[0] for r in rows), dtype=np.int64, count=count)
        judge = np.fromiter((column[r[1]] for r in rows), dtype=np.int64, count=count)
        p_yes = np.fromiter((r[2] for r in rows), dtype=float, count=count)
        ids = np.asarray(trajectory_ids, dtype=np.int64)
        out = np.full((len(ids), len(judges)), np.nan)
        if count and len(ids):
            order = np.argsort(ids)
            at = np.minimum(np.searchsorted(ids[order], trajectory), len(ids) - 1)
            found = ids[order][at] == trajectory
            cells, values = latest_per_key(order[at[found]] * len(judges) + judge[found], p_yes[found])
            out[cells // len(judges), cells % len(judges)] = values
        used = [j for j in range(len(judges)) if (~np.isnan(out[:, j])).any()]
        return [judges[j] for j in used], out[:, used]

    def latest_outcome_p_yes(self, trajectory_ids: Sequence[int]) -> dict[int, dict[str, float]]:
        """For each trajectory with outcome verdicts: judge -> P(yes) of its latest one."""
        scores: dict[int, dict[str, float]] = defaultdict(dict)
        for chunk in _chunks(list(trajectory_ids)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT trajectory_id, judge, p_yes FROM verdicts WHERE kind = 'outcome' AND p_yes IS NOT NULL
                    AND trajectory_id IN ({marks}) ORDER BY {preferred_order(last=True)}""",
                chunk,
            ):
                scores[row["trajectory_id"]][row["judge"]] = row["p_yes"]  # the latest verdict wins
        return dict(scores)

    def solutions_fingerprint(self) -> tuple:
        """Changes whenever trajectories or verdicts are added, removed or regraded (not with labels
        or rollouts, which Best-of-N does not read): a cache key of a few indexed reads."""
        return tuple(self.conn.execute(
            """SELECT (SELECT value FROM data_versions WHERE name = 'trajectories'),
                      (SELECT value FROM data_versions WHERE name = 'removals'),
                      (SELECT MAX(id) FROM trajectories), (SELECT MAX(id) FROM verdicts)"""
        ).fetchone())
