"""What the Compare page reads: the human ratings of current steps, and each automatic source's
number for those steps (rollout counts per policy, the latest step verdict per judge).

"Latest" throughout is core.store.verdicts.preferred_order's: a verifier's newest verdict that is
not in-sample, else its newest one (an in-sample score never hides a cross-fitted one)."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from core.store.connection import ConnectionBase
from core.store.rows import _chunks
from core.store.verdicts import preferred_order


# The data version the analysis caches are keyed by (core.store.disk_cache, the pages' caches).
DATA_VERSION_SQL = """SELECT (SELECT SUM(value) FROM data_versions), (SELECT MAX(id) FROM rollouts),
                             (SELECT MAX(id) FROM verdicts), (SELECT MAX(id) FROM trajectories)"""


def int_columns(cursor, columns: int) -> np.ndarray:
    """A cursor's integer rows as one (rows x columns) int64 array, without a Python object per
    row beyond the tuples sqlite3 hands out."""
    rows = cursor.fetchall()
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=len(rows) * columns)
    return flat.reshape(len(rows), columns)


def latest_per_key(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, the value of each key's last row): rows come in
    preferred_order(last=True), the preferred (latest) row of each key last."""
    if not len(keys):
        return keys, values
    last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
    return keys[last], values[last]


class CompareQueries(ConnectionBase):
    def step_ratings(self, dataset: str | None = None) -> list[tuple[int, int, int, str, int, int]]:
        """(step id, trajectory id, idx, annotator, rating, first error) for every rating of a
        step of a current segmentation, by trajectory and step."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        cursor = self.conn.execute(
            f"""SELECT s.id, s.trajectory_id, s.idx, n.name, a.rating, a.first_error
                FROM annotations a JOIN annotators n ON n.id = a.annotator_id
                JOIN steps s ON s.id = a.step_id
                JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                JOIN problems p ON p.id = t.problem_id
                WHERE a.rating IS NOT NULL {where}
                ORDER BY s.trajectory_id, s.idx""",
            params,
        )
        return cursor.fetchall()

    def rated_step_arrays(self, dataset: str | None = None, first: bool = False) -> dict:
        """Every rating of a step of a current segmentation with its latents, as arrays from one
        query (unordered): step id, trajectory id, idx, annotator id, rating, first error,
        confidence (-1 not given), dwell_ms (NaN not given), category (a code into `categories`,
        -1 none) and n_steps (the steps of its segmentation); `names` maps annotator ids to names.
        With `first`, each rating is the first one its annotator gave (label history), where known."""
        where, params = ("AND p.dataset = ?", [dataset]) if dataset else ("", [])
        join = "JOIN problems p ON p.id = t.problem_id" if dataset else ""
        rating = "a.rating"
        first_join = ""
        if first:
            # The first rating each annotator gave a step: its oldest history row with a rating.
            first_join = """LEFT JOIN (SELECT h.annotator_id, h.step_id, h.new_value FROM label_history h
                                WHERE h.id IN (SELECT MIN(id) FROM label_history
                                               WHERE field = 'rating' AND new_value != 'null'
                                               GROUP BY annotator_id, step_id)) f
                            ON f.annotator_id = a.annotator_id AND f.step_id = a.step_id"""
            rating = "COALESCE(CAST(f.new_value AS INTEGER), a.rating)"
        rows = self.conn.execute(
            f"""SELECT s.id, s.trajectory_id, s.idx, a.annotator_id, {rating}, a.first_error,
                       COALESCE(a.confidence, -1), s.segmentation_id, a.dwell_ms, a.category
                FROM annotations a JOIN steps s ON s.id = a.step_id
                JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                {join} {first_join}
                WHERE a.rating IS NOT NULL {where}""",
            params,
        ).fetchall()
        count = len(rows)
        ints = np.fromiter(itertools.chain.from_iterable(r[:8] for r in rows), dtype=np.int64, count=8 * count)
        ints = ints.reshape(count, 8)
        categories = sorted({r[9] for r in rows if r[9] is not None})
        code = {c: i for i, c in enumerate(categories)}
        # The step count of each segmentation: one pass over the (segmentation, idx) index.
        sizes = int_columns(self.conn.execute("SELECT segmentation_id, COUNT(*) FROM steps GROUP BY segmentation_id"), 2)
        at = np.searchsorted(sizes[:, 0], ints[:, 7]) if count else np.zeros(0, dtype=np.int64)
        return {
            "step_id": ints[:, 0], "trajectory_id": ints[:, 1], "idx": ints[:, 2], "annotator_id": ints[:, 3],
            "rating": ints[:, 4], "first_error": ints[:, 5], "confidence": ints[:, 6],
            "n_steps": sizes[at, 1] if count else np.zeros(0, dtype=np.int64),
            "dwell_ms": np.fromiter((np.nan if r[8] is None else r[8] for r in rows), dtype=float, count=count),
            "category": np.fromiter((-1 if r[9] is None else code[r[9]] for r in rows), dtype=np.int64, count=count),
            "categories": tuple(categories),
            "names": dict(self.conn.execute("SELECT id, name FROM annotators").fetchall()),
        }  # fmt: skip

    def labels_fingerprint(self) -> tuple:
        """Changes whenever a label, rollout or verdict is added, changed or removed: a cache key.
        Cheap at any size: the counters triggers keep (migrations 0008, 0009; they only grow, so
        their sum changes with any of them) and the largest ids (indexed)."""
        return tuple(self.conn.execute(DATA_VERSION_SQL).fetchone())

    def memoized(self, key: tuple, compute):
        """`compute()`, kept on this Store object for the current data version (a few compact
        arrays that several of a page's figures read: a verifier's verdicts, the current steps)."""
        version = tuple(self.conn.execute(DATA_VERSION_SQL).fetchone())
        memo = self.__dict__.get("_version_memo")
        if memo is None or memo.get("version") != version:
            memo = self.__dict__["_version_memo"] = {"version": version}  # sessions' threads share it
        value = memo.get(key)
        if value is None:
            value = memo[key] = compute()
        return value

    def step_verdict_arrays(self, judge: str) -> tuple[np.ndarray, np.ndarray]:
        """(step ids, P(yes) or NaN) of every step verdict of the judge, the one to read per step
        last (preferred_order): one pass over the (judge, kind, step) index, remembered for the
        data version."""
        def read():
            rows = self.conn.execute(
                f"SELECT step_id, p_yes FROM verdicts WHERE judge = ? AND kind = 'step' ORDER BY {preferred_order(last=True)}",
                [judge]).fetchall()
            steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            values = np.fromiter((np.nan if r[1] is None else r[1] for r in rows), dtype=float, count=len(rows))
            return steps, values

        return self.memoized(("step verdicts", judge), read)

    def latest_step_score_arrays(self, judge: str) -> tuple[np.ndarray, np.ndarray]:
        """(step ids, P(yes)) of the judge's latest step verdict with a P(yes) on each step it
        scored, sorted by step id."""
        steps, values = self.step_verdict_arrays(judge)
        scored = ~np.isnan(values)
        return latest_per_key(steps[scored], values[scored])

    def current_step_arrays(self, dataset: str | None = None) -> dict[str, np.ndarray]:
        """Every step of a current segmentation (of the dataset's trajectories), sorted by id: id,
        trajectory id, idx, the trajectory's grade (1, 0; -1 ungraded) and its segmentation's step
        count. One query, remembered for the data version."""
        def read():
            join, where, params = "", "", []
            if dataset is not None:
                join, where, params = "JOIN problems p ON p.id = t.problem_id", "WHERE p.dataset = ?", [dataset]
            rows = int_columns(self.conn.execute(
                f"""SELECT s.id, s.trajectory_id, s.idx, COALESCE(t.correct, -1), s.segmentation_id
                    FROM trajectories t JOIN steps s ON s.segmentation_id = t.current_segmentation_id {join} {where}""",
                params), 5)  # fmt: skip
            rows = rows[np.argsort(rows[:, 0])]
            segmentations, at, counts = np.unique(rows[:, 4], return_inverse=True, return_counts=True)
            return {"id": rows[:, 0], "trajectory_id": rows[:, 1], "idx": rows[:, 2], "correct": rows[:, 3],
                    "n_steps": counts[np.asarray(at).reshape(-1)]}  # fmt: skip

        return self.memoized(("current steps", dataset), read)

    def rated_step_rollout_arrays(self, policy: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step ids, n, n correct) of the policy's rollouts for every rated step that has some,
        sorted by step id (`rated_step_rollout_counts` as arrays)."""
        rows = int_columns(self.conn.execute(
            """SELECT step_id, COUNT(*), SUM(correct) FROM rollouts
               WHERE model IS ? AND step_id IN (SELECT DISTINCT step_id FROM annotations WHERE rating IS NOT NULL)
               GROUP BY step_id ORDER BY step_id""",
            [policy],
        ), 3)
        return rows[:, 0], rows[:, 1], rows[:, 2]

    def step_rollout_arrays(self, policy: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(step ids, n, n correct) of the policy's rollouts for every step that has some, rated or
        not, sorted by step id: an automatic reference (Compare without humans) labels any step."""
        rows = int_columns(self.conn.execute(
            """SELECT step_id, COUNT(*), SUM(correct) FROM rollouts WHERE model IS ? AND step_id IS NOT NULL
               GROUP BY step_id ORDER BY step_id""",
            [policy],
        ), 3)  # fmt: skip
        return rows[:, 0], rows[:, 1], rows[:, 2]

    def trajectory_problem_rows(self) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """(trajectory ids, their problem ids) of every trajectory, and every problem with a
        trajectory (id, question, meta), for splitting by problem set-wise."""
        pairs = int_columns(self.conn.execute("SELECT id, problem_id FROM trajectories ORDER BY id"), 2)
        problems = self._rows(
            "SELECT id, question, meta FROM problems WHERE id IN (SELECT DISTINCT problem_id FROM trajectories)")
        return pairs[:, 0], pairs[:, 1], problems

    def mc_agreement_counts(self, judge: str, policy: str | None) -> tuple[int, int, bool]:
        """Over current steps with the policy's rollouts (every model's with None) and a latest
        step verdict of `judge` with a P(yes): (steps compared, steps where MC hard (some rollout
        right) and P(yes) >= 0.5 agree, whether any trajectory with such rollouts has a step with
        such a verdict). Driven from the steps with rollouts; the latest verdict is an index probe."""
        model = "AND model IS ?" if policy is not None else ""
        params = [policy] if policy is not None else []
        latest = f"""(SELECT w.id FROM verdicts w WHERE w.judge = ? AND w.kind = 'step' AND w.step_id = s.id
                      ORDER BY {preferred_order(last=False, alias="w")} LIMIT 1)"""
        compared, agree = self.conn.execute(
            f"""SELECT COUNT(*), SUM(m.hard = (v.p_yes >= 0.5))
                FROM (SELECT step_id, MAX(correct) AS hard FROM rollouts WHERE step_id IS NOT NULL {model}
                      GROUP BY step_id) m
                JOIN steps s ON s.id = m.step_id
                JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                JOIN verdicts v ON v.id = {latest}
                WHERE v.p_yes IS NOT NULL AND v.trajectory_id = s.trajectory_id""",
            [*params, judge],
        ).fetchone()
        if compared:
            return int(compared), int(agree), True
        labelled = self.conn.execute(
            f"""SELECT EXISTS (
                    SELECT 1 FROM steps s
                    JOIN trajectories t ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                    JOIN verdicts v ON v.id = {latest}
                    WHERE v.p_yes IS NOT NULL AND v.trajectory_id = s.trajectory_id AND s.trajectory_id IN (
                        SELECT x.trajectory_id FROM rollouts r JOIN steps x ON x.id = r.step_id
                        JOIN trajectories u ON u.id = x.trajectory_id AND u.current_segmentation_id = x.segmentation_id
                        WHERE 1 {model.replace("model", "r.model")}))""",
            [judge, *params],
        ).fetchone()[0]
        return 0, 0, bool(labelled)

    def has_step_verdicts(self, judge: str) -> bool:
        return self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM verdicts WHERE judge = ? AND kind = 'step')", [judge]).fetchone()[0] == 1

    def step_judges(self) -> list[str]:
        """Verifiers (of any kind) with step verdicts that carry a P(yes): one indexed probe per
        verifier, not a scan of the verdicts."""
        rows = self.conn.execute(
            """SELECT name FROM verifiers WHERE EXISTS (
                   SELECT 1 FROM verdicts WHERE judge = verifiers.name AND kind = 'step' AND p_yes IS NOT NULL)
               ORDER BY name""")
        return [row[0] for row in rows]

    def rated_step_rollout_counts(self, policy: str | None) -> dict[int, tuple[int, int]]:
        """(n, n_correct) of the policy's rollouts for every rated step that has some.

        One pass over the rollouts of every rated step (what step_value_counts does in chunks of
        500 ids, here in a single indexed query).
        """
        cursor = self.conn.execute(
            """SELECT step_id, COUNT(*), SUM(correct) FROM rollouts
               WHERE model IS ? AND step_id IN (SELECT DISTINCT step_id FROM annotations WHERE rating IS NOT NULL)
               GROUP BY step_id""",
            [policy],
        )
        return {step_id: (n, n_correct) for step_id, n, n_correct in cursor}

    def latest_step_p_yes(self, judge: str, step_ids: Sequence[int]) -> dict[int, float]:
        """The judge's latest step verdict with a P(yes), for each of the steps that has one."""
        found: dict[int, float] = {}
        for chunk in _chunks(list(step_ids)):
            marks = ", ".join("?" for _ in chunk)
            for row in self._rows(
                f"""SELECT step_id, p_yes FROM verdicts WHERE kind = 'step' AND judge = ? AND p_yes IS NOT NULL
                    AND step_id IN ({marks}) ORDER BY {preferred_order(last=True)}""",
                [judge, *chunk],
            ):
                found[row["step_id"]] = row["p_yes"]  # the latest verdict wins
        return found
