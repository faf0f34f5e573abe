"""Job rows: create, claim, heartbeat and cancel, and what a job has stored so far."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from core.errors import StepScopeError
from core.store.connection import ConnectionBase
from core.store.keys import new_key, now
from core.store.rows import _decode, _json

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
# compute: what the job spent, tokens, seconds and FLOPs (core.search.compute.ComputeRecord); NULL
# until its runner records some.
_JOB_JSON = ("manifest", "compute")
_JOB_FIELDS = frozenset(
    {"status", "manifest", "planned", "done", "tokens", "error", "started_at", "finished_at",
     "heartbeat_at", "compute"}
)


class JobQueries(ConnectionBase):
    """Job rows and the rows a job has stored (for resuming and progress)."""

    def create_job(
        self, kind: str, manifest: Mapping[str, Any], *, planned: int = 0, key: str | None = None
    ) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (key, kind, manifest, planned, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [key or new_key(), kind, _json(manifest), planned, now()],
            )
        return int(cursor.lastrowid)

    def insert_job(
        self,
        *,
        key: str,
        kind: str,
        status: str = "queued",
        manifest: Any = None,
        planned: int = 0,
        done: int = 0,
        tokens: int = 0,
        error: str | None = None,
        created_at: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
        heartbeat_at: str | None = None,
    ) -> tuple[int, bool]:
        """A complete job row (from a dump), unless its key is stored: (id, created)."""
        if status not in JOB_STATUSES:
            raise StepScopeError(f"job status {status!r} is not one of {', '.join(JOB_STATUSES)}")
        row = {
            "key": key, "kind": kind, "status": status, "manifest": _json(manifest),
            "planned": planned, "done": done, "tokens": tokens, "error": error,
            "created_at": created_at or now(), "started_at": started_at,
            "finished_at": finished_at, "heartbeat_at": heartbeat_at,
        }
        with self.transaction():
            return self._insert_or_get("jobs", row, ["key"])

    def get_job(self, job_id: int) -> dict | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", [job_id])
        return _decode(row, json_columns=_JOB_JSON) if row else None

    def job_id_for_key(self, key: str) -> int | None:
        return self._scalar("SELECT id FROM jobs WHERE key = ?", [key])

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Set job columns: status, manifest, planned, done, tokens, error, compute, *_at."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in JOB_STATUSES:
            raise ValueError(f"job status {fields['status']!r} is not one of {JOB_STATUSES}")
        for column in _JOB_JSON:
            if column in fields:
                fields[column] = _json(fields[column])
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*fields.values(), job_id])

    def list_jobs(self, *, status: str | None = None, limit: int | None = None) -> list[dict]:
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        rows = self._rows(
            f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?",
            [*params, -1 if limit is None else limit],
        )
        return [_decode(row, json_columns=_JOB_JSON) for row in rows]

    def job_status(self, job_id: int) -> str | None:
        return self._scalar("SELECT status FROM jobs WHERE id = ?", [job_id])

    def running_job_runners(self) -> list[str]:
        """The runners of jobs marked running (for a liveness check outside SQL)."""
        rows = self.db.execute("SELECT DISTINCT runner FROM jobs WHERE status = 'running' AND runner IS NOT NULL")
        return [row[0] for row in rows]

    def claim_job(self, job_id: int | None = None, stale_after: float = 30.0, *, runner: str | None = None,
                  gone_runners: Sequence[str] = ()) -> dict | None:
        """Mark one job running for `runner` and return it: the given one, or the oldest queued or
        abandoned (running with a heartbeat older than `stale_after` seconds, or by one of
        `gone_runners`, runners known to have died).

        The UPDATE is the lock: of two runners racing for a job, only one sees its row change.
        """
        stale = (datetime.now(timezone.utc) - timedelta(seconds=stale_after)).isoformat(timespec="milliseconds")
        gone = ", ".join("?" * len(gone_runners))
        abandoned = "heartbeat_at IS NULL OR heartbeat_at < ?" + (f" OR runner IN ({gone})" if gone_runners else "")
        claimable = f"(status = 'queued' OR (status = 'running' AND ({abandoned})))"
        claimable_params = [stale, *gone_runners]
        with self.transaction() as conn:
            if job_id is None:
                row = conn.execute(f"SELECT id FROM jobs WHERE {claimable} ORDER BY id LIMIT 1",
                                   claimable_params).fetchone()  # fmt: skip
                if row is None:
                    return None
                job_id = row[0]
            stamp = now()
            changed = conn.execute(
                f"UPDATE jobs SET status = 'running', heartbeat_at = ?, error = NULL, runner = ?,"
                f" started_at = COALESCE(started_at, ?) WHERE id = ? AND {claimable}",
                [stamp, runner, stamp, job_id, *claimable_params],
            ).rowcount
        return self.get_job(job_id) if changed else None

    def cancel_job(self, job_id: int) -> bool:
        """Mark a queued or running job cancelled; False when it is neither."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')",
                [now(), job_id],
            ).rowcount
        return bool(changed)

    def job_rollout_totals(self, job_id: int) -> tuple[int, int]:
        """(rollouts, tokens) this job has stored, counted from the rollouts themselves."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(num_tokens), 0) FROM rollouts WHERE job_id = ?", [job_id]
        ).fetchone()
        return int(row[0]), int(row[1])

    def problems_done_by_job(self, job_key: str) -> set[int]:
        """Problems a generate job has stored solutions for (its key is in their meta)."""
        rows = self.db.execute(
            "SELECT DISTINCT problem_id FROM trajectories WHERE json_extract(meta, '$.job') = ?", [job_key]
        ).fetchall()
        return {row[0] for row in rows}

    def verdict_targets_of_job(self, job_id: int) -> list[tuple[int, int | None]]:
        """(trajectory, step) of every verdict a judge job stored."""
        return [tuple(r) for r in self.db.execute(
            "SELECT trajectory_id, step_id FROM verdicts WHERE job_id = ?", [job_id]).fetchall()]  # fmt: skip

    def job_verdicts_with_outcome(self, job_id: int) -> list[tuple]:
        """(kind, p_yes, mass, raw, trajectory correct) of every verdict a judge job stored."""
        return [tuple(r) for r in self.db.execute(
            """SELECT v.kind, v.p_yes, v.mass, v.raw, t.correct FROM verdicts v
               JOIN trajectories t ON t.id = v.trajectory_id WHERE v.job_id = ?""",
            [job_id],
        ).fetchall()]  # fmt: skip
