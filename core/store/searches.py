"""Searches (issue 25): one row per problem a search job searched, its journal, and every candidate
it considered, each a node of the rollout tree.

A search is written twice: its journal while it runs (each engine or scorer call's result, in
batches: core.jobs.search commits what a search emitted at most about a second after it, and all
of it when the search ends or fails, so that a killed search resumes to the identical tree), and
everything else in one transaction when it ends: the candidates (each mapped
onto the node of its step path, created if new, so that MC rollouts, verdicts and people reading
that prefix read the same node), the final beams as graded trajectories (source "search"), the
rollouts its scorer or its simulations sampled (at their nodes, so they count in node values),
and the search's own row (answer, compute). Reads are one query each, never one per candidate.

The full dump (core.formats.jsonl) reads a page of problems' searches at once (`search_dump`: one
query per table) with every row they name by key, and an import writes a batch of them set-wise
(`write_imported_searches`, called by core.store.imports for each batch).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Mapping, Sequence

from core.errors import StepScopeError
from core.steps import StepSpan
from core.store.connection import ConnectionBase
from core.store.imports import ImportQueries, ImportRowError
from core.store.keys import content_key, now
from core.store.nodes import ensure_path
from core.store.rows import _decode, _json
from core.store.verdicts import preferred_order
from core.store.verifier_identity import check_verifier_kind, register_verifiers

SEARCH_SOURCE = "search"  # the source of the trajectories a search's final beams become
_SEARCH_JSON = ("config", "scorer_fingerprint", "compute")


class SearchQueries(ConnectionBase):
    """Mixed into Store with ProblemQueries (trajectories) and TreeQueries (rollouts at nodes)."""

    def start_search(self, *, job_id: int | None, problem_id: int, policy: str, strategy: str,
                     config: Mapping[str, Any], scorer: Mapping[str, Any]) -> dict:  # fmt: skip
        """The job's search of the problem, created if new (a resumed job finds its own). The
        scorer (its fingerprint's kind and name) is registered as a verifier in the same
        transaction, so one name never mixes two kinds of scores."""
        with self.transaction() as conn:
            register_verifiers(conn, [(scorer["name"], scorer["kind"], _json(scorer))])
            conn.execute(
                """INSERT INTO searches (job_id, problem_id, policy, strategy, config, scorer, scorer_kind,
                   scorer_fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (job_id, problem_id) DO NOTHING""",
                [job_id, problem_id, policy, strategy, _json(config), scorer["name"], scorer["kind"], _json(scorer), now()],
            )  # fmt: skip
        return self._search_row("job_id IS ? AND problem_id = ?", [job_id, problem_id])[0]

    def _search_row(self, where: str, params: Sequence[Any]) -> list[dict]:
        rows = self._rows(f"SELECT * FROM searches WHERE {where} ORDER BY id", params)
        return [_decode(row, "correct", json_columns=_SEARCH_JSON) for row in rows]

    def get_search(self, search_id: int) -> dict | None:
        rows = self._search_row("id = ?", [search_id])
        return rows[0] if rows else None

    def job_searches(self, job_id: int) -> list[dict]:
        """The searches a job ran, in the order it started them."""
        return self._search_row("job_id = ?", [job_id])

    def problem_searches(self, problem_id: int) -> list[dict]:
        return self._search_row("problem_id = ?", [problem_id])

    # --- the journal ---------------------------------------------------------------------------

    def add_search_event(self, search_id: int, seq: int, event: Mapping[str, Any]) -> None:
        """One journal event (core.search.journal.event_to_dict), committed at once."""
        self.add_search_events(search_id, [(seq, event)])

    def add_search_events(self, search_id: int, events: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Journal events (seq, event), committed together in one transaction: all or none."""
        if not events:
            return
        with self.transaction() as conn:
            conn.executemany("INSERT INTO search_events (search_id, seq, event) VALUES (?, ?, ?)",
                             [(search_id, seq, json.dumps(event, sort_keys=True)) for seq, event in events])  # fmt: skip

    def search_events(self, search_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT event FROM search_events WHERE search_id = ? ORDER BY seq", [search_id])
        return [json.loads(row[0]) for row in rows.fetchall()]

    # --- the finished search -------------------------------------------------------------------

    def finish_search(self, search_id: int, *, candidates: Sequence[Mapping[str, Any]],
                      beams: Sequence[Mapping[str, Any]], rollouts: Sequence[Mapping[str, Any]], answer: str | None,
                      correct: bool, stopped: str, compute: Mapping[str, Any], policy_prompt: str,
                      delimiter: str, events: Sequence[tuple[int, Mapping[str, Any]]] = ()) -> None:  # fmt: skip
        """Store a search's outcome in one transaction.

        `candidates`: SearchResult.candidate_rows() (parents first); `beams`: (node, solution,
        answer, correct, score) of each final beam; `rollouts`: (prefix, text, answer, correct,
        num_tokens, source) of each rollout sampled outside the tree; `events`: the journal's
        last (seq, event) pairs not yet stored, written in the same transaction."""
        search = self.get_search(search_id)
        problem_id, job_id, policy = search["problem_id"], search["job_id"], search["policy"]
        with self.transaction() as conn:
            self.add_search_events(search_id, events)  # joins this transaction
            node_of: dict[int, int] = {}
            for row in candidates:
                node_of[row["order"]] = ensure_path(conn, problem_id, row["steps"])[-1]
            steps_of = {row["order"]: row["steps"] for row in candidates}
            trajectory_of = {}
            for beam in beams:
                steps = steps_of[beam["node"]]
                if not steps:
                    continue  # the policy ended its solution at once: nothing to study
                trajectory_of[beam["node"]] = self.add_trajectory(
                    problem_id, beam["solution"], source=SEARCH_SOURCE, model=policy, policy_prompt=policy_prompt,
                    final_answer=beam["answer"], correct=beam["correct"],
                    **_segmentation(beam["solution"], steps, delimiter),
                    meta={"search": search_id, "candidate": beam["node"], "score": beam["score"], "job_id": job_id},
                )  # fmt: skip
            conn.executemany(
                """INSERT OR REPLACE INTO search_candidates (search_id, candidate, parent, node_id, depth, call, text,
                   num_tokens, finish_reason, finished, score, rank, mark, subtree, prior, visits, value_sum,
                   trajectory_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [(search_id, c["order"], c["parent_order"], node_of[c["order"]], c["depth"], c["call"], c["text"],
                  c["num_tokens"], c["finish_reason"], int(c["finished"]), c["score"], c["rank"], c["mark"],
                  c["subtree"], c["prior"], c["visits"], c["value_sum"], trajectory_of.get(c["order"]))
                 for c in candidates],
            )  # fmt: skip
            by_prefix: dict[tuple[str, ...], list[dict]] = {}
            for rollout in rollouts:
                by_prefix.setdefault(tuple(rollout["prefix"]), []).append({
                    "text": rollout["text"], "answer": rollout["answer"], "correct": rollout["correct"],
                    "num_tokens": rollout["num_tokens"], "finish_reason": None, "job_id": job_id, "model": policy,
                })  # fmt: skip
            for prefix, rows in by_prefix.items():
                self.add_node_rollouts(ensure_path(conn, problem_id, list(prefix))[-1], rows)
            conn.execute(
                """UPDATE searches SET status = 'done', stopped = ?, answer = ?, correct = ?, compute = ?,
                   finished_at = ? WHERE id = ?""",
                [stopped, answer, int(bool(correct)), _json(compute), now(), search_id],
            )

    def job_search_summary(self, job_id: int) -> list[dict]:
        """Per search of the job, in order: its row's outcome and its candidates counted by mark
        (and how many became final-beam trajectories), in one grouped query."""
        rows = self._rows(
            """SELECT s.id, s.problem_id, s.status, s.answer, s.correct, s.stopped, COUNT(c.candidate) AS candidates,
                      COALESCE(SUM(c.mark = 'chosen'), 0) AS chosen, COALESCE(SUM(c.mark = 'pruned'), 0) AS pruned,
                      COALESCE(SUM(c.mark = 'pending'), 0) AS pending, COUNT(c.trajectory_id) AS beams
               FROM searches s LEFT JOIN search_candidates c ON c.search_id = s.id
               WHERE s.job_id = ? GROUP BY s.id ORDER BY s.id""",
            [job_id],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def search_candidates(self, search_id: int) -> list[dict]:
        """Every candidate of a search in generation order, with its node's id."""
        rows = self._rows("SELECT * FROM search_candidates WHERE search_id = ? ORDER BY candidate", [search_id])
        return [_decode(row, "finished", json_columns=()) for row in rows]

    # --- reads for the app's search view (core/views/search.py) ---------------------------------

    def search_beams(self, search_id: int) -> list[dict]:
        """The final beams a finished search stored as trajectories: candidate, trajectory_id,
        final_answer, correct, and the guiding score it ended with."""
        rows = self._rows(
            """SELECT c.candidate, t.id AS trajectory_id, t.final_answer, t.correct,
                      json_extract(t.meta, '$.score') AS score
               FROM search_candidates c JOIN trajectories t ON t.id = c.trajectory_id
               WHERE c.search_id = ? ORDER BY c.candidate""",
            [search_id],
        )
        return [_decode(row, "correct", json_columns=()) for row in rows]

    def node_search_scores(self, node_id: int) -> list[dict]:
        """Every search's guiding score at a node of the rollout tree (a candidate that reads the
        same prefix): search_id, strategy, scorer, scorer_kind, score, rank, mark."""
        return self._rows(
            """SELECT s.id AS search_id, s.strategy, s.scorer, s.scorer_kind, c.score, c.rank, c.mark
               FROM search_candidates c JOIN searches s ON s.id = c.search_id
               WHERE c.node_id = ? ORDER BY s.id, c.candidate""",
            [node_id],
        )

    def node_step_verdicts(self, node_id: int) -> list[dict]:
        """Each verifier's preferred step verdict (core.store.verdicts.preferred_order) on the
        current steps that end at a node: judge, verifier_kind, p_yes, trajectory_id, idx."""
        return self._rows(
            f"""SELECT judge, verifier_kind, p_yes, trajectory_id, idx FROM (
                    SELECT v.judge, w.kind AS verifier_kind, v.p_yes, s.trajectory_id, s.idx,
                           ROW_NUMBER() OVER (PARTITION BY v.judge
                                              ORDER BY {preferred_order(last=False, alias='v')}) AS rank
                    FROM steps s JOIN trajectories t
                         ON t.id = s.trajectory_id AND t.current_segmentation_id = s.segmentation_id
                    JOIN verdicts v ON v.step_id = s.id AND v.kind = 'step'
                    LEFT JOIN verifiers w ON w.name = v.judge
                    WHERE s.node_id = ?)
                WHERE rank = 1 ORDER BY judge""",
            [node_id],
        )

    # --- the full dump (core.formats.jsonl) and its import --------------------------------------

    def search_dump(self, problem_ids: Sequence[int]) -> dict[int, list[tuple[dict, dict]]]:
        """These problems' searches for the dump, one query per table for the page (never one per
        search or candidate): problem id -> [(ids, record)] by search id, where ids holds the
        search's own id and job_id (what the final beams' meta names) and record names every row
        by key: the job by its key, each candidate's node and final-beam trajectory by their
        content keys. `record["key"]` is search_key(...): what the final beams' meta names the
        search by in a dump. Events are the journal in seq order, decoded."""
        ids = json.dumps(list(problem_ids))
        in_page = "s.problem_id IN (SELECT value FROM json_each(?))"
        events: dict[int, list[dict]] = {}
        for search_id, event in self.conn.execute(
            f"""SELECT e.search_id, e.event FROM search_events e JOIN searches s ON s.id = e.search_id
                WHERE {in_page} ORDER BY e.search_id, e.seq""", [ids],
        ):  # fmt: skip
            events.setdefault(search_id, []).append(json.loads(event))
        candidates: dict[int, list[dict]] = {}
        for row in self._rows(
            f"""SELECT c.search_id, c.candidate, c.parent, n.key AS node, c.depth, c.call, c.text, c.num_tokens,
                       c.finish_reason, c.finished, c.score, c.rank, c.mark, c.subtree, c.prior, c.visits, c.value_sum,
                       t.key AS trajectory
                FROM search_candidates c JOIN searches s ON s.id = c.search_id JOIN nodes n ON n.id = c.node_id
                LEFT JOIN trajectories t ON t.id = c.trajectory_id
                WHERE {in_page} ORDER BY c.search_id, c.candidate""", [ids],
        ):  # fmt: skip
            candidates.setdefault(row.pop("search_id"), []).append(_decode(row, "finished", json_columns=()))
        out: dict[int, list[tuple[dict, dict]]] = {}
        for row in self._rows(
            f"""SELECT s.*, p.key AS problem_key, j.key AS job_key FROM searches s JOIN problems p ON p.id = s.problem_id
                LEFT JOIN jobs j ON j.id = s.job_id WHERE {in_page} ORDER BY s.problem_id, s.id""", [ids],
        ):  # fmt: skip
            row = _decode(row, "correct", json_columns=_SEARCH_JSON)
            record = {"key": search_key(row["problem_key"], row["job_key"], row["created_at"]), "job": row["job_key"]}
            record.update((column, row[column]) for column in _DUMP_COLUMNS)
            if events.get(row["id"]):
                record["events"] = events[row["id"]]
            if candidates.get(row["id"]):
                record["candidates"] = candidates[row["id"]]
            out.setdefault(row["problem_id"], []).append(({"id": row["id"], "job_id": row["job_id"]}, record))
        return out

    @staticmethod
    def write_imported_searches(conn: sqlite3.Connection, rows: Sequence[Mapping[str, Any]], *, problems: Mapping[str, int],
                                jobs: Mapping[str, tuple[int, str]], import_id: int, top_trajectory: int,
                                stamp: str) -> None:  # fmt: skip
        """Write a batch's searches (core.store.imports.ImportBatch.searches) inside its transaction:
        each with its journal and candidates, their nodes and trajectories found by key (stored, or
        earlier in the file: ImportRowError with the line otherwise, as for the tree). A search
        stored already (the same job and problem; with no job, the same problem and created_at) is
        left as it is, so importing twice adds nothing. The final beams' meta names the search and
        its job by key in a dump: set back to the new ids on the trajectories this import added."""
        if not rows:
            return
        seen = {_identity(job_id, problem_id, created_at) for job_id, problem_id, created_at in conn.execute(
            "SELECT job_id, problem_id, created_at FROM searches WHERE problem_id IN (SELECT value FROM json_each(?))",
            [json.dumps(sorted({problems[r["problem_key"]] for r in rows}))],
        )}  # fmt: skip
        new = []
        for r in rows:
            job_id = jobs[r["job"]][0] if r["job"] is not None else None
            identity = _identity(job_id, problems[r["problem_key"]], r["created_at"])
            if identity not in seen:
                seen.add(identity)
                new.append((r, job_id))
        if not new:
            return
        scorers: dict[str, tuple[str, str, int]] = {}
        for r, _ in new:
            try:
                check_verifier_kind(r["scorer_kind"])
            except StepScopeError as error:
                raise ImportRowError(r["line"], str(error)) from None
            scorers.setdefault(r["scorer"], (r["scorer_kind"], _json(r["scorer_fingerprint"]), r["line"]))
        # The scorer is a verifier, as start_search registers it; a stored one keeps its fingerprint.
        conn.executemany(
            """INSERT INTO verifiers (name, kind, fingerprint, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (name) DO NOTHING""",
            [(name, kind, fingerprint, stamp, stamp) for name, (kind, fingerprint, _) in scorers.items()],
        )
        stored = dict(conn.execute("SELECT name, kind FROM verifiers WHERE name IN (SELECT value FROM json_each(?))",
                                   [json.dumps(list(scorers))]).fetchall())  # fmt: skip
        for name, (kind, _, line) in scorers.items():
            if stored[name] != kind:
                raise ImportRowError(line, f"the search's scorer {name!r} already names a {stored[name]} verifier "
                                           f"in this database, not a {kind} one")  # fmt: skip
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM searches").fetchone()[0]
        ImportQueries._insert(
            conn,
            """INSERT INTO searches (job_id, problem_id, policy, strategy, config, scorer, scorer_kind, scorer_fingerprint,
               status, stopped, answer, correct, compute, created_at, finished_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [(job_id, problems[r["problem_key"]], r["policy"], r["strategy"], _json(r["config"]), r["scorer"],
              r["scorer_kind"], _json(r["scorer_fingerprint"]), r["status"], r["stopped"], r["answer"],
              None if r["correct"] is None else int(bool(r["correct"])),
              None if r["compute"] is None else _json(r["compute"]), r["created_at"] or stamp, r["finished_at"])
             for r, job_id in new],
            [r["line"] for r, _ in new], "searches",
        )  # fmt: skip
        # New ones only (none was stored or repeated, so none conflicted): ids follow in order.
        search_ids = [i for (i,) in conn.execute("SELECT id FROM searches WHERE id > ? ORDER BY id", [top])]
        if len(search_ids) != len(new):
            raise StepScopeError(f"expected {len(new)} new searches, found {len(search_ids)}")
        ImportQueries._insert(
            conn, "INSERT INTO search_events (search_id, seq, event) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(search_id, seq, json.dumps(event, sort_keys=True))
             for search_id, (r, _) in zip(search_ids, new) for seq, event in enumerate(r["events"])],
            [r["line"] for r, _ in new for _ in r["events"]], "search events",
        )  # fmt: skip
        nodes = _problem_rows(conn, "nodes", {c["node"] for r, _ in new for c in r["candidates"]})
        trajectories = _problem_rows(conn, "trajectories", {c["trajectory"] for r, _ in new for c in r["candidates"]
                                                            if c["trajectory"] is not None})  # fmt: skip

        def named(r: Mapping[str, Any], c: Mapping[str, Any], what: str, key: str, found: dict) -> int:
            problem_id = problems[r["problem_key"]]
            if key not in found or found[key][1] != problem_id:
                raise ImportRowError(r["line"], f"search candidate {c['candidate']} names a {what} {key!r} that is "
                                                "neither stored nor earlier in the file under this problem")  # fmt: skip
            return found[key][0]

        ImportQueries._insert(
            conn,
            """INSERT INTO search_candidates (search_id, candidate, parent, node_id, depth, call, text, num_tokens,
               finish_reason, finished, score, rank, mark, subtree, prior, visits, value_sum, trajectory_id)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [(search_id, c["candidate"], c["parent"], named(r, c, "node", c["node"], nodes), c["depth"], c["call"],
              c["text"], c["num_tokens"], c["finish_reason"], int(bool(c["finished"])), c["score"], c["rank"], c["mark"],
              c["subtree"], c["prior"], c["visits"], c["value_sum"],
              None if c["trajectory"] is None else named(r, c, "trajectory", c["trajectory"], trajectories))
             for search_id, (r, _) in zip(search_ids, new) for c in r["candidates"]],
            [r["line"] for r, _ in new for _ in r["candidates"]], "search candidates",
        )  # fmt: skip
        # The final beams' meta: a trajectory this import added names its search (and that
        # search's job) by the keys the dump wrote; one stored before keeps its own.
        beams = {}
        for search_id, (r, job_id) in zip(search_ids, new):
            for c in r["candidates"]:
                if c["trajectory"] is not None:
                    beams.setdefault(trajectories[c["trajectory"]][0], []).append((r["key"], search_id, r["job"], job_id))
        metas = dict(conn.execute(
            """SELECT id, meta FROM trajectories WHERE id IN (SELECT value FROM json_each(?))
                 AND (id > ? OR EXISTS (SELECT 1 FROM import_ranges g WHERE g.import_id = ? AND g.tbl = 'trajectories'
                                        AND trajectories.id BETWEEN g.first_id AND g.last_id))""",
            [json.dumps(sorted(beams)), top_trajectory, import_id],
        ).fetchall())  # fmt: skip
        updates = []
        for trajectory_id, meta in metas.items():
            meta = json.loads(meta) if meta else None
            if not isinstance(meta, dict):
                continue
            for key, search_id, job_key, job_id in beams[trajectory_id]:
                if meta.get("search") == key:
                    meta["search"] = search_id
                    if job_key is not None and meta.get("job_id") == job_key:
                        meta["job_id"] = job_id
                    updates.append((_json(meta), trajectory_id))
                    break
        conn.executemany("UPDATE trajectories SET meta = ? WHERE id = ?", updates)


# What a dump's search record holds of the row, after its key and job (core.formats.jsonl).
_DUMP_COLUMNS = ("policy", "strategy", "config", "scorer", "scorer_kind", "scorer_fingerprint", "status", "stopped",
                 "answer", "correct", "compute", "created_at", "finished_at")  # fmt: skip


def search_key(problem_key: str, job_key: str | None, created_at: str) -> str:
    """What a dump names a search by (searches have no key column): its problem, job and start,
    the same in every database the dump is imported into."""
    return content_key("search", problem_key, job_key, created_at)


def _identity(job_id: int | None, problem_id: int, created_at: str) -> tuple:
    """When an imported search is one stored already: UNIQUE (job_id, problem_id), and without a
    job (which the constraint does not cover), the same problem and start."""
    return (job_id, problem_id) if job_id is not None else (None, problem_id, created_at)


def _problem_rows(conn: sqlite3.Connection, table: str, keys: set[str]) -> dict[str, tuple[int, int]]:
    """key -> (id, problem_id) of the stored nodes or trajectories with these keys."""
    return {key: (row_id, problem_id) for key, row_id, problem_id in conn.execute(
        f"SELECT key, id, problem_id FROM {table} WHERE key IN (SELECT value FROM json_each(?))", [json.dumps(sorted(keys))]
    )}  # fmt: skip


def _segmentation(solution: str, steps: Sequence[str], delimiter: str) -> dict:
    """How a final beam's solution is cut into the search's own steps: by lines when they were
    lines, else at the spans where its steps stand (so its steps reach the candidates' nodes)."""
    if delimiter == "\n":
        return {"rule": "line"}
    spans, cursor = [], 0
    for step in steps:
        start = solution.index(step, cursor)
        spans.append(StepSpan(step, start, start + len(step)))
        cursor = start + len(step)
    return {"rule": "pre-split", "spans": spans}
