"""What the Best-of-N page's test-time compute section reads (issue 25): finished searches
aggregated per setting, and the policy's own sampled solutions to the problems they searched.

Plain functions over a store (or anything with `.conn`), each one statement whatever the number
of searches or samples: a setting's accuracy and tokens are summed in SQL where the searches
live, never one query (or one Python object) per search.

A *setting* is everything a search was asked to do except its seed: the policy, the strategy,
the scorer (a random scorer's name carries its seed, so random scorers are one scorer), and the
search's parameters (its stored config without `seed`). Searches of one setting that searched the
same problem again (another job, another seed) count once: the latest finished one, so a setting's
accuracy is over problems, one outcome each.
"""

from __future__ import annotations

import json

import numpy as np

from core.store.best_of_n import solution_arrays

POLICY_SOURCE = "policy"  # a policy's own sampled solutions (core.jobs.generate)

_FILTER = "s.status = 'done' AND s.correct IS NOT NULL"


def _where(dataset: str | None, policy: str | None) -> tuple[str, str, list]:
    """(join, conditions, params) selecting the finished, graded searches of a dataset and policy."""
    join, conditions, params = "", [_FILTER], []
    if dataset:
        join = "JOIN problems p ON p.id = s.problem_id"
        conditions.append("p.dataset = ?")
        params.append(dataset)
    if policy is not None:
        conditions.append("s.policy = ?")
        params.append(policy)
    return join, " AND ".join(conditions), params


def search_policies(store, dataset: str | None = None) -> list[dict]:
    """Policies with finished searches (of the dataset): policy, searches, problems; most searches
    first. One grouped query."""
    join, where, params = _where(dataset, None)
    return store._rows(
        f"""SELECT s.policy, COUNT(*) AS searches, COUNT(DISTINCT s.problem_id) AS problems FROM searches s {join}
            WHERE {where} GROUP BY s.policy ORDER BY searches DESC, s.policy""",
        params,
    )


def search_settings(store, dataset: str | None = None, policy: str | None = None) -> list[dict]:
    """One row per setting (see the module's docstring) of the finished searches, one query:

    policy, strategy, scorer (the scorer's name; "random" for every random scorer), scorer_kind,
    config (the parameters, decoded, seed left out), problems (searched, the latest search of each
    counted), correct (how many of those chose a correct final answer), policy_tokens and
    scorer_generated_tokens (summed over those searches, from each search's compute record; the
    scorer's are what it generated itself, e.g. MC rollouts), searches (every finished search of
    the setting, reruns included). Ordered by policy, strategy, scorer, then by policy tokens."""
    join, where, params = _where(dataset, policy)
    rows = store._rows(
        f"""WITH finished AS (
                SELECT s.id, s.problem_id, s.policy, s.strategy, s.scorer_kind, s.correct,
                       CASE WHEN s.scorer_kind = 'random' THEN 'random' ELSE s.scorer END AS scorer,
                       json_remove(s.config, '$.seed') AS setting,
                       COALESCE(json_extract(s.compute, '$.policy_tokens'), 0) AS policy_tokens,
                       COALESCE(json_extract(s.compute, '$.verifier_generated_tokens'), 0) AS scorer_tokens
                FROM searches s {join} WHERE {where}),
            ranked AS (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY policy, strategy, scorer, setting, problem_id
                                             ORDER BY id DESC) AS newest,
                       COUNT(*) OVER (PARTITION BY policy, strategy, scorer, setting) AS searches
                FROM finished)
            SELECT policy, strategy, scorer, MIN(scorer_kind) AS scorer_kind, setting AS config,
                   COUNT(*) AS problems, SUM(correct) AS correct, SUM(policy_tokens) AS policy_tokens,
                   SUM(scorer_tokens) AS scorer_generated_tokens, MAX(searches) AS searches
            FROM ranked WHERE newest = 1
            GROUP BY policy, strategy, scorer, setting
            ORDER BY policy, strategy, scorer, SUM(policy_tokens) * 1.0 / COUNT(*), setting""",
        params,
    )  # fmt: skip
    return [{**row, "config": json.loads(row["config"]) if row["config"] else {}} for row in rows]


def policy_sample_arrays(store, policy: str, dataset: str | None = None) -> dict[str, np.ndarray]:
    """The policy's own graded sampled solutions (source "policy", model `policy`) to the problems
    its finished searches (of the dataset) searched, as arrays from one query, grouped by problem
    (by problem id, then by id): id, problem_id, answer (a code per distinct final answer, -1 for
    none: equal codes where the answers are), correct, num_tokens (what its job generated, from the
    trajectory's meta; NaN where unknown, e.g. imported)."""
    join, where, params = _where(dataset, policy)
    rows = store.conn.execute(
        f"""SELECT t.id, t.problem_id, t.final_answer, t.correct, json_extract(t.meta, '$.num_tokens')
            FROM trajectories t
            WHERE t.source = ? AND t.model = ? AND t.correct IS NOT NULL
              AND t.problem_id IN (SELECT s.problem_id FROM searches s {join} WHERE {where})
            ORDER BY t.problem_id, t.id""",
        [POLICY_SOURCE, policy, *params],
    ).fetchall()
    return {**solution_arrays(rows),
            "num_tokens": np.fromiter((np.nan if r[4] is None else r[4] for r in rows), dtype=float, count=len(rows))}


def searches_version(store) -> tuple:
    """Changes whenever a search finishes or is removed, or trajectories change (the reference
    samples): a cache key of one statement."""
    found = store.conn.execute(
        """SELECT (SELECT COUNT(*) FROM searches WHERE status = 'done'), (SELECT MAX(id) FROM searches),
                  (SELECT MAX(finished_at) FROM searches),
                  (SELECT value FROM data_versions WHERE name = 'trajectories'),
                  (SELECT value FROM data_versions WHERE name = 'removals'), (SELECT MAX(id) FROM trajectories)"""
    ).fetchone()
    return tuple(found)
