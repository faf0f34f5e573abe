"""Problems, trajectories, their segmentations and steps.

An annotation refers to a step row, and a step row belongs to one segmentation: re-segmenting
a trajectory adds a new segmentation with new step rows and leaves the old ones (and their
annotations) where they were.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from core.errors import StepScopeError
from core.steps import SPLITTERS, StepSpan, is_rule, segment
from core.store.connection import ConnectionBase
from core.store.keys import content_key, now, problem_key, segmentation_key
from core.store.nodes import attach_segmentation
from core.store.rows import _as_int_bool, _decode, _json


def _check_spans(solution: str, spans: Sequence[StepSpan]) -> None:
    previous_end = 0
    for index, span in enumerate(spans):
        in_order = previous_end <= span.start <= span.end <= len(solution)
        if not in_order or solution[span.start : span.end] != span.text:
            raise StepScopeError(
                f"step {index} does not match the solution text at [{span.start}:{span.end}]"
            )
        previous_end = span.end


class ProblemQueries(ConnectionBase):
    """Problems, trajectories, segmentations, steps: adding them (idempotently) and reading them."""

    def add_problem(
        self,
        dataset: str,
        question: str,
        gold: str | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        created_at: str | None = None,
    ) -> int:
        """The id of the problem (dataset, question, gold), created if new."""
        row = {
            "key": problem_key(dataset, question, gold),
            "dataset": dataset,
            "question": question,
            "gold": gold,
            "meta": _json(meta),
            "created_at": created_at or now(),
        }
        with self.transaction():
            problem_id, _ = self._insert_or_get("problems", row, ["key"])
        return problem_id

    def get_problem(self, problem_id: int) -> dict | None:
        row = self._one("SELECT * FROM problems WHERE id = ?", [problem_id])
        return _decode(row) if row else None

    def list_problems(
        self, *, dataset: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[dict]:
        where, params = ("WHERE dataset = ?", [dataset]) if dataset is not None else ("", [])
        rows = self._rows(
            f"SELECT * FROM problems {where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, -1 if limit is None else limit, offset],
        )
        return [_decode(row) for row in rows]

    def datasets(self) -> list[dict]:
        """Each dataset with its number of problems."""
        return self._rows(
            "SELECT dataset, COUNT(*) AS problems FROM problems GROUP BY dataset ORDER BY dataset"
        )

    # --- trajectories and segmentations -----------------------------------------------------

    def insert_trajectory(
        self,
        problem_id: int,
        solution: str,
        *,
        source: str,
        model: str | None = None,
        policy_prompt: str | None = None,
        final_answer: str | None = None,
        correct: bool | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: str | None = None,
    ) -> tuple[int, bool]:
        """The trajectory row alone, without a segmentation: (id, created). For importers."""
        pkey = self._scalar("SELECT key FROM problems WHERE id = ?", [problem_id])
        if pkey is None:
            raise StepScopeError(f"problem {problem_id} does not exist")
        row = {
            "key": content_key("trajectory", pkey, source, model, policy_prompt, solution),
            "problem_id": problem_id,
            "source": source,
            "model": model,
            "policy_prompt": policy_prompt,
            "solution": solution,
            "final_answer": final_answer,
            "correct": _as_int_bool(correct),
            "meta": _json(meta),
            "created_at": created_at or now(),
        }
        with self.transaction():
            return self._insert_or_get("trajectories", row, ["key"])

    def add_trajectory(
        self,
        problem_id: int,
        solution: str,
        *,
        source: str,
        rule: str = "line",
        spans: Sequence[StepSpan] | None = None,
        model: str | None = None,
        policy_prompt: str | None = None,
        final_answer: str | None = None,
        correct: bool | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """The id of this trajectory, created (and segmented by `rule`) if new.

        `spans` gives pre-split steps (rule "pre-split"); otherwise the solution is cut by
        `rule`. An existing trajectory keeps its current segmentation.
        """
        with self.transaction():
            trajectory_id, created = self.insert_trajectory(
                problem_id, solution, source=source, model=model, policy_prompt=policy_prompt,
                final_answer=final_answer, correct=correct, meta=meta,
            )
            self.add_segmentation(trajectory_id, rule, spans, make_current=created)
        return trajectory_id

    def add_segmentation(
        self,
        trajectory_id: int,
        rule: str,
        spans: Sequence[StepSpan] | None = None,
        *,
        make_current: bool = True,
        created_at: str | None = None,
    ) -> int:
        """Segment a trajectory by `rule` (or the given spans); returns the segmentation id.

        The same rule and spans as an existing segmentation return that one. Step rows (and
        the annotations on them) of other segmentations are never touched.
        """
        if not is_rule(rule):
            raise StepScopeError(
                f"unknown step splitter {rule!r}; choose one of: {', '.join(SPLITTERS)}"
            )
        solution = self._scalar("SELECT solution FROM trajectories WHERE id = ?", [trajectory_id])
        if solution is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        if spans is None:
            if rule == "pre-split":
                raise StepScopeError("pre-split steps need their spans")
            spans = segment(solution, rule)
        _check_spans(solution, spans)
        row = {
            "trajectory_id": trajectory_id,
            "rule": rule,
            "key": segmentation_key(rule, spans),
            "created_at": created_at or now(),
        }
        with self.transaction() as conn:
            segmentation_id, created = self._insert_or_get(
                "segmentations", row, ["trajectory_id", "key"]
            )
            if created:
                conn.executemany(
                    "INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char,"
                    " end_char) VALUES (?, ?, ?, ?, ?, ?)",
                    [(segmentation_id, trajectory_id, i, s.text, s.start, s.end)
                     for i, s in enumerate(spans)],
                )
                attach_segmentation(conn, segmentation_id)
            if make_current:
                self.set_current_segmentation(trajectory_id, segmentation_id)
        return segmentation_id

    def resegment(self, trajectory_id: int, rule: str) -> int:
        """Cut the trajectory by another rule and make that the current segmentation."""
        return self.add_segmentation(trajectory_id, rule)

    def set_current_segmentation(self, trajectory_id: int, segmentation_id: int) -> None:
        owner = self._scalar(
            "SELECT trajectory_id FROM segmentations WHERE id = ?", [segmentation_id]
        )
        if owner != trajectory_id:
            raise StepScopeError(
                f"segmentation {segmentation_id} is not one of trajectory {trajectory_id}"
            )
        with self.transaction() as conn:
            conn.execute(
                "UPDATE trajectories SET current_segmentation_id = ? WHERE id = ?",
                [segmentation_id, trajectory_id],
            )

    def get_trajectory(self, trajectory_id: int) -> dict | None:
        """The trajectory with its problem (dataset, question, gold) and current segmentation."""
        row = self._one(
            """SELECT t.*, p.dataset, p.question, p.gold,
                      t.current_segmentation_id AS segmentation_id, s.rule
               FROM trajectories t
               JOIN problems p ON p.id = t.problem_id
               LEFT JOIN segmentations s ON s.id = t.current_segmentation_id
               WHERE t.id = ?""",
            [trajectory_id],
        )
        return _decode(row, "correct") if row else None

    def list_trajectories(
        self,
        *,
        dataset: str | None = None,
        problem_id: int | None = None,
        source: str | None = None,
        model: str | None = None,
        correct: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """Trajectories (without meta and prompt) with their problem and current step count."""
        where, params = self._trajectory_filters(dataset, problem_id, source, model, correct)
        rows = self._rows(
            f"""SELECT t.id, t.problem_id, p.dataset, p.question, p.gold, t.source, t.model,
                       t.solution, t.final_answer, t.correct,
                       t.current_segmentation_id AS segmentation_id, s.rule,
                       (SELECT COUNT(*) FROM steps st
                        WHERE st.segmentation_id = t.current_segmentation_id) AS n_steps,
                       t.created_at
                FROM trajectories t
                JOIN problems p ON p.id = t.problem_id
                LEFT JOIN segmentations s ON s.id = t.current_segmentation_id
                {where} ORDER BY t.id LIMIT ? OFFSET ?""",
            [*params, -1 if limit is None else limit, offset],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def count_trajectories(
        self,
        *,
        dataset: str | None = None,
        problem_id: int | None = None,
        source: str | None = None,
        model: str | None = None,
        correct: bool | None = None,
    ) -> int:
        where, params = self._trajectory_filters(dataset, problem_id, source, model, correct)
        return int(self._scalar(
            f"SELECT COUNT(*) FROM trajectories t JOIN problems p ON p.id = t.problem_id {where}",
            params,
        ))

    @staticmethod
    def _trajectory_filters(
        dataset: str | None, problem_id: int | None, source: str | None,
        model: str | None, correct: bool | None,
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for clause, value in (
            ("p.dataset = ?", dataset),
            ("t.problem_id = ?", problem_id),
            ("t.source = ?", source),
            ("t.model = ?", model),
            ("t.correct = ?", _as_int_bool(correct)),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def segmentations(self, trajectory_id: int) -> list[dict]:
        """All segmentations of a trajectory, oldest first, with `current` and step counts."""
        rows = self._rows(
            """SELECT s.*, (s.id = t.current_segmentation_id) AS current,
                      (SELECT COUNT(*) FROM steps st WHERE st.segmentation_id = s.id) AS n_steps
               FROM segmentations s JOIN trajectories t ON t.id = s.trajectory_id
               WHERE s.trajectory_id = ? ORDER BY s.id""",
            [trajectory_id],
        )
        return [_decode(row, "current", json_columns=()) for row in rows]

    def steps(self, trajectory_id: int, segmentation_id: int | None = None) -> list[dict]:
        """Steps in order (current segmentation unless one is named)."""
        if segmentation_id is None:
            segmentation_id = self._scalar(
                "SELECT current_segmentation_id FROM trajectories WHERE id = ?", [trajectory_id]
            )
        return self._rows(
            "SELECT * FROM steps WHERE segmentation_id = ? AND trajectory_id = ? ORDER BY idx",
            [segmentation_id, trajectory_id],
        )

    def step_spans(self, trajectory_id: int, segmentation_id: int | None = None) -> list[StepSpan]:
        return [
            StepSpan(row["text"], row["start_char"], row["end_char"])
            for row in self.steps(trajectory_id, segmentation_id)
        ]

    def get_step(self, step_id: int) -> dict | None:
        return self._one("SELECT * FROM steps WHERE id = ?", [step_id])
