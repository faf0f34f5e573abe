"""What a review window over a long trajectory reads: a range of steps and what is on them, and
the landmarks a person jumps to (a located first error, the lowest value, the next reflection).

A reasoning trace has hundreds to thousands of steps; a page that read them all to show twenty
would build a row per step and query per step. Every query here is bounded by the window, or is
one aggregate over the segmentation's steps that returns a single index.
"""

from __future__ import annotations

from typing import Sequence

from core.store.connection import ConnectionBase

_GLOB_SPECIAL = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})


def _model_clause(model: str | None) -> tuple[str, list]:
    return ("AND r.model IS ?", [model]) if model is not None else ("", [])


class ReviewQueries(ConnectionBase):
    def segmentation_size(self, segmentation_id: int) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM steps WHERE segmentation_id = ?", [segmentation_id]) or 0)

    def steps_between(self, segmentation_id: int, start: int, stop: int) -> list[dict]:
        """The steps with start <= idx < stop, in order."""
        return self._rows(
            "SELECT * FROM steps WHERE segmentation_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
            [segmentation_id, start, stop],
        )

    def step_verdict_rows(self, step_ids: Sequence[int]) -> list[dict]:
        """Step verdicts on these steps, oldest first, with the verifier's stored kind."""
        if not step_ids:
            return []
        marks = ", ".join("?" for _ in step_ids)
        return self._rows(
            f"""SELECT v.step_id, v.judge, v.p_yes, w.kind AS verifier_kind FROM verdicts v
                LEFT JOIN verifiers w ON w.name = v.judge
                WHERE v.kind = 'step' AND v.step_id IN ({marks}) ORDER BY v.id""",
            list(step_ids),
        )

    def step_label_rows(self, step_ids: Sequence[int], annotator: str | None = None) -> list[dict]:
        """Every annotator's labels on these steps (or one annotator's), by step then name."""
        if not step_ids:
            return []
        marks = ", ".join("?" for _ in step_ids)
        mine, params = ("AND n.name = ?", [annotator]) if annotator is not None else ("", [])
        rows = self._rows(
            f"""SELECT a.id, a.step_id, s.segmentation_id, s.idx, n.name AS annotator, a.rating, a.first_error,
                       a.flagged, a.note, a.confidence, a.rationale, a.category, a.dwell_ms, a.rating_order,
                       a.created_at, a.updated_at
                FROM annotations a JOIN steps s ON s.id = a.step_id JOIN annotators n ON n.id = a.annotator_id
                WHERE a.step_id IN ({marks}) {mine} ORDER BY s.idx, n.name""",
            [*step_ids, *params],
        )
        for row in rows:
            row["first_error"], row["flagged"] = bool(row["first_error"]), bool(row["flagged"])
        return rows

    def labelled_first_error(self, segmentation_id: int, annotator: str | None = None) -> int | None:
        """The first step a person marked as the first error, else the first they rated -1 (one
        annotator's labels, or anyone's)."""
        mine, params = ("AND n.name = ?", [annotator]) if annotator is not None else ("", [])
        row = self.conn.execute(
            f"""SELECT MIN(CASE WHEN a.first_error THEN s.idx END), MIN(CASE WHEN a.rating = -1 THEN s.idx END)
                FROM annotations a JOIN steps s ON s.id = a.step_id JOIN annotators n ON n.id = a.annotator_id
                WHERE s.segmentation_id = ? {mine}""",
            [segmentation_id, *params],
        ).fetchone()
        return row[0] if row[0] is not None else row[1]

    def first_rated_wrong(self, segmentation_id: int, annotator: str) -> int | None:
        """The first step the annotator rated -1 (stop-at-the-first-error mode greys out what follows)."""
        return self._scalar(
            """SELECT MIN(s.idx) FROM annotations a JOIN steps s ON s.id = a.step_id
               JOIN annotators n ON n.id = a.annotator_id
               WHERE s.segmentation_id = ? AND n.name = ? AND a.rating = -1""",
            [segmentation_id, annotator],
        )

    def mc_first_error(self, segmentation_id: int, model: str | None = None) -> int | None:
        """core.mcpe.first_error over the segmentation: the first sampled step none of whose
        rollouts reached the answer."""
        clause, params = _model_clause(model)
        return self._scalar(
            f"""SELECT MIN(idx) FROM (
                    SELECT s.idx FROM steps s JOIN rollouts r ON r.step_id = s.id
                    WHERE s.segmentation_id = ? {clause} GROUP BY s.idx HAVING SUM(r.correct) = 0)""",
            [segmentation_id, *params],
        )

    def lowest_value_step(self, segmentation_id: int, model: str | None = None) -> int | None:
        """The sampled step with the lowest MC value (the first of equals)."""
        clause, params = _model_clause(model)
        return self._scalar(
            f"""SELECT s.idx FROM steps s JOIN rollouts r ON r.step_id = s.id
                WHERE s.segmentation_id = ? {clause}
                GROUP BY s.idx ORDER BY CAST(SUM(r.correct) AS REAL) / COUNT(*), s.idx LIMIT 1""",
            [segmentation_id, *params],
        )

    def next_step_opening_with(self, segmentation_id: int, after: int, openings: Sequence[str]) -> int | None:
        """The first step after idx `after` whose text opens with one of `openings` as a word
        ("Wait," and "Wait." do, "Waiting" does not); case as written."""
        if not openings:
            return None
        tests, params = [], []
        for opening in openings:
            escaped = opening.translate(_GLOB_SPECIAL)
            tests.append("(text = ? OR text GLOB ?)")
            params += [opening, escaped + ("[^A-Za-z0-9_]*" if opening[-1:].isalnum() else "*")]
        return self._scalar(
            f"SELECT MIN(idx) FROM steps WHERE segmentation_id = ? AND idx > ? AND ({' OR '.join(tests)})",
            [segmentation_id, after, *params],
        )

    def sampled_step_values(self, segmentation_id: int, model: str | None = None) -> list[tuple[int, int, int]]:
        """(idx, n, n_correct) of each step with rollouts, in order: a long trajectory's value
        chart, which has a point per sampled step only."""
        clause, params = _model_clause(model)
        return [tuple(row) for row in self.conn.execute(
            f"""SELECT s.idx, COUNT(*), SUM(r.correct) FROM steps s JOIN rollouts r ON r.step_id = s.id
                WHERE s.segmentation_id = ? {clause} GROUP BY s.idx ORDER BY s.idx""",
            [segmentation_id, *params],
        )]  # fmt: skip

    def largest_disagreement_step(self, segmentation_id: int, model: str | None = None,
                                  annotator: str | None = None) -> int | None:  # fmt: skip
        """The step whose scores differ most: its MC value, each verifier's P(yes) or score, and
        each human rating read as 0, 0.5, 1 (one annotator's, or everyone's); steps with a
        single score, or scores that agree, are not candidates. The first of equals."""
        clause, model_params = _model_clause(model)
        mine, label_params = ("AND a.annotator_id = (SELECT id FROM annotators WHERE name = ?)", [annotator]) \
            if annotator is not None else ("", [])  # fmt: skip
        return self._scalar(
            f"""WITH scores AS (
                    SELECT s.idx, CAST(SUM(r.correct) AS REAL) / COUNT(*) AS score
                    FROM steps s JOIN rollouts r ON r.step_id = s.id
                    WHERE s.segmentation_id = ? {clause} GROUP BY s.idx
                    UNION ALL
                    SELECT s.idx, v.p_yes FROM steps s JOIN verdicts v ON v.step_id = s.id
                    WHERE s.segmentation_id = ? AND v.kind = 'step' AND v.p_yes IS NOT NULL
                    UNION ALL
                    SELECT s.idx, (a.rating + 1) / 2.0 FROM steps s JOIN annotations a ON a.step_id = s.id
                    WHERE s.segmentation_id = ? AND a.rating IS NOT NULL {mine})
                SELECT idx FROM scores GROUP BY idx HAVING MAX(score) > MIN(score)
                ORDER BY MAX(score) - MIN(score) DESC, idx LIMIT 1""",
            [segmentation_id, *model_params, segmentation_id, segmentation_id, *label_params],
        )
