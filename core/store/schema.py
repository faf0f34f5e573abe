"""The schema as migrations (sqlite-utils' Migrations: each runs once per database, in order),
and the sample set a fresh database starts with."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from core.store.keys import problem_key
from core.store.rows import _json

SAMPLE_DATASET = "sample"
# The sample set's rows carry this fixed stamp instead of the time a database was created, so
# that every fresh database holds identical rows and dumps of two databases compare equal.
SAMPLE_CREATED_AT = "2025-01-01T00:00:00.000+00:00"

MIGRATIONS = Migrations("stepscope")

_SCHEMA_V1 = [
    """CREATE TABLE problems (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        dataset TEXT NOT NULL,
        question TEXT NOT NULL,
        gold TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX problems_dataset ON problems(dataset)",
    """CREATE TABLE trajectories (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        problem_id INTEGER NOT NULL REFERENCES problems(id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        model TEXT,
        policy_prompt TEXT,
        solution TEXT NOT NULL,
        final_answer TEXT,
        correct INTEGER CHECK (correct IN (0, 1)),
        meta TEXT NOT NULL DEFAULT '{}',
        current_segmentation_id INTEGER REFERENCES segmentations(id),
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX trajectories_problem ON trajectories(problem_id)",
    "CREATE INDEX trajectories_source_model ON trajectories(source, model)",
    """CREATE TABLE segmentations (
        id INTEGER PRIMARY KEY,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        rule TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (trajectory_id, key)
    )""",
    # trajectory_id is denormalised onto steps: pages ask for "the steps of trajectory T".
    """CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        segmentation_id INTEGER NOT NULL REFERENCES segmentations(id) ON DELETE CASCADE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        start_char INTEGER NOT NULL,
        end_char INTEGER NOT NULL,
        UNIQUE (segmentation_id, idx)
    )""",
    "CREATE INDEX steps_trajectory ON steps(trajectory_id)",
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        manifest TEXT NOT NULL DEFAULT '{}',
        planned INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        tokens INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        heartbeat_at TEXT
    )""",
    "CREATE INDEX jobs_status ON jobs(status)",
    """CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        step_id INTEGER NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        text TEXT NOT NULL,
        answer TEXT,
        correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
        num_tokens INTEGER,
        finish_reason TEXT,
        seed INTEGER,
        model TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX rollouts_step ON rollouts(step_id)",
    "CREATE INDEX rollouts_job ON rollouts(job_id)",
    # Values are always computed from the stored rollouts (never cached), per policy model:
    # pooling continuations of two different policies would measure neither.
    """CREATE VIEW step_values AS
        SELECT step_id, model,
               COUNT(*) AS n,
               SUM(correct) AS n_correct,
               CAST(SUM(correct) AS REAL) / COUNT(*) AS soft,
               MAX(correct) AS hard
        FROM rollouts GROUP BY step_id, model""",
    """CREATE TABLE verdicts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        step_id INTEGER REFERENCES steps(id) ON DELETE CASCADE,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        judge TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('step', 'outcome', 'critic')),
        p_yes REAL,
        mass REAL,
        raw TEXT,
        template TEXT,
        template_hash TEXT,
        created_at TEXT NOT NULL,
        CHECK (kind != 'step' OR step_id IS NOT NULL),
        CHECK (kind != 'outcome' OR step_id IS NULL)
    )""",
    "CREATE INDEX verdicts_step ON verdicts(step_id)",
    "CREATE INDEX verdicts_trajectory ON verdicts(trajectory_id)",
    """CREATE TABLE annotators (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )""",
    # The UNIQUE index (annotator_id, step_id) also serves "annotations by annotator".
    """CREATE TABLE annotations (
        id INTEGER PRIMARY KEY,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id) ON DELETE CASCADE,
        step_id INTEGER NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
        rating INTEGER CHECK (rating IN (-1, 0, 1)),
        first_error INTEGER NOT NULL DEFAULT 0 CHECK (first_error IN (0, 1)),
        flagged INTEGER NOT NULL DEFAULT 0 CHECK (flagged IN (0, 1)),
        note TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (annotator_id, step_id)
    )""",
    "CREATE INDEX annotations_step ON annotations(step_id)",
]


@MIGRATIONS(name="0001_schema")
def _schema_v1(db: Database) -> None:
    for statement in _SCHEMA_V1:
        db.execute(statement)


@MIGRATIONS(name="0002_sample_set")
def _sample_set(db: Database) -> None:
    # A data migration, so the set is loaded exactly once: a user who deletes it keeps it gone.
    from core.samples import load_sample_problems

    for problem in load_sample_problems():
        key = problem_key(SAMPLE_DATASET, problem.question, problem.gold)
        db.execute(
            "INSERT INTO problems (key, dataset, question, gold, meta, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [key, SAMPLE_DATASET, problem.question, problem.gold, _json(problem.meta),
             SAMPLE_CREATED_AT],
        )
