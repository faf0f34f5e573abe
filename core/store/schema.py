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


def _statements_migration(name: str, statements: list[str]) -> None:
    """Register a migration that runs `statements` in order (most migrations are just that)."""

    @MIGRATIONS(name=name)
    def run(db: Database) -> None:
        for statement in statements:
            db.execute(statement)

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


_statements_migration("0001_schema", _SCHEMA_V1)


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


# The rollout tree (issue 12): nodes are (problem, step prefix) pairs shared by every trajectory
# that reads the same; steps and rollouts point at them; a rollout can become a child branch (a
# trajectory with parent links); the tree search's marks on rollouts are kept. Rollouts sampled
# from a node that is no trajectory's step (the question itself, a binary-search probe) have no
# step, so the rollouts table is rebuilt with step_id nullable.
_ROLLOUT_TREE = [
    """CREATE TABLE nodes (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        problem_id INTEGER NOT NULL REFERENCES problems(id) ON DELETE CASCADE,
        parent_id INTEGER REFERENCES nodes(id) ON DELETE CASCADE,
        depth INTEGER NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX nodes_problem ON nodes(problem_id)",
    "CREATE INDEX nodes_parent ON nodes(parent_id)",
    "ALTER TABLE steps ADD COLUMN node_id INTEGER REFERENCES nodes(id) ON DELETE SET NULL",
    "CREATE INDEX steps_node ON steps(node_id)",
    "DROP VIEW step_values",
    """CREATE TABLE rollouts_tree (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        step_id INTEGER REFERENCES steps(id) ON DELETE CASCADE,
        node_id INTEGER REFERENCES nodes(id) ON DELETE CASCADE,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        text TEXT NOT NULL,
        answer TEXT,
        correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
        num_tokens INTEGER,
        finish_reason TEXT,
        seed INTEGER,
        model TEXT,
        created_at TEXT NOT NULL,
        CHECK (step_id IS NOT NULL OR node_id IS NOT NULL)
    )""",
    """INSERT INTO rollouts_tree (id, key, step_id, node_id, job_id, text, answer, correct, num_tokens,
           finish_reason, seed, model, created_at)
       SELECT id, key, step_id, NULL, job_id, text, answer, correct, num_tokens, finish_reason, seed, model,
              created_at FROM rollouts""",
    "DROP TABLE rollouts",
    "ALTER TABLE rollouts_tree RENAME TO rollouts",
    "CREATE INDEX rollouts_step ON rollouts(step_id)",
    "CREATE INDEX rollouts_job ON rollouts(job_id)",
    "CREATE INDEX rollouts_node ON rollouts(node_id, model)",
    """CREATE VIEW step_values AS
        SELECT step_id, model,
               COUNT(*) AS n,
               SUM(correct) AS n_correct,
               CAST(SUM(correct) AS REAL) / COUNT(*) AS soft,
               MAX(correct) AS hard
        FROM rollouts WHERE step_id IS NOT NULL GROUP BY step_id, model""",
    "ALTER TABLE trajectories ADD COLUMN parent_node_id INTEGER REFERENCES nodes(id) ON DELETE SET NULL",
    "ALTER TABLE trajectories ADD COLUMN parent_rollout_id INTEGER REFERENCES rollouts(id) ON DELETE SET NULL",
    "CREATE INDEX trajectories_parent_rollout ON trajectories(parent_rollout_id)",
    # One row per marked rollout: chosen by the search, its located first error (an index into
    # the rollout's full path, prefix steps first), the branch it was expanded into.
    """CREATE TABLE tree_marks (
        rollout_id INTEGER PRIMARY KEY REFERENCES rollouts(id) ON DELETE CASCADE,
        selected INTEGER NOT NULL DEFAULT 0 CHECK (selected IN (0, 1)),
        first_error INTEGER,
        branch_id INTEGER REFERENCES trajectories(id) ON DELETE SET NULL,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        updated_at TEXT NOT NULL
    )""",
]


@MIGRATIONS(name="0004_rollout_tree")
def _rollout_tree(db: Database) -> None:
    from core.store.nodes import attach_segmentation

    for statement in _ROLLOUT_TREE:
        db.execute(statement)
    for (segmentation_id,) in db.execute("SELECT id FROM segmentations ORDER BY id").fetchall():
        attach_segmentation(db.conn, segmentation_id)
    db.execute("UPDATE rollouts SET node_id = (SELECT node_id FROM steps WHERE steps.id = rollouts.step_id)")


# Human latents and quality control (issue 13). A label keeps how sure the annotator was, why,
# how long they looked (dwell_ms, measured by the app) and when in the trajectory they rated it
# (rating_order); every change to a label is a row in label_history, so nothing is overwritten
# silently and "first" and "final" labels can both be compared.
_SCHEMA_LATENTS = [
    "ALTER TABLE annotations ADD COLUMN confidence INTEGER CHECK (confidence BETWEEN 1 AND 5)",
    "ALTER TABLE annotations ADD COLUMN rationale TEXT",
    "ALTER TABLE annotations ADD COLUMN category TEXT",
    "ALTER TABLE annotations ADD COLUMN dwell_ms INTEGER CHECK (dwell_ms >= 0)",
    "ALTER TABLE annotations ADD COLUMN rating_order INTEGER",
    """CREATE TABLE label_history (
        id INTEGER PRIMARY KEY,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id) ON DELETE CASCADE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        step_id INTEGER REFERENCES steps(id) ON DELETE CASCADE,
        field TEXT NOT NULL,
        old_value TEXT,
        new_value TEXT,
        changed_at TEXT NOT NULL
    )""",
    "CREATE INDEX label_history_step ON label_history(step_id)",
    "CREATE INDEX label_history_trajectory ON label_history(trajectory_id)",
    # One row per (annotator, trajectory): the trajectory-level mark and the total dwell time
    # (PRM800K's total_time when imported).
    """CREATE TABLE trajectory_labels (
        id INTEGER PRIMARY KEY,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id) ON DELETE CASCADE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        flawed_process INTEGER NOT NULL DEFAULT 0 CHECK (flawed_process IN (0, 1)),
        dwell_ms INTEGER CHECK (dwell_ms >= 0),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (annotator_id, trajectory_id)
    )""",
    # Gold quality-control items: a trajectory's expected step ratings.
    """CREATE TABLE gold_labels (
        step_id INTEGER PRIMARY KEY REFERENCES steps(id) ON DELETE CASCADE,
        trajectory_id INTEGER NOT NULL REFERENCES trajectories(id) ON DELETE CASCADE,
        rating INTEGER NOT NULL CHECK (rating IN (-1, 0, 1)),
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX gold_labels_trajectory ON gold_labels(trajectory_id)",
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
]


_statements_migration("0003_label_latents", _SCHEMA_LATENTS)


# Invitations (issue 16): a served-beyond-loopback app opens a database only for a person with
# a link. The token is never stored: only a lookup (not secret) and the secret's salted hash.
_ACCESS = [
    """CREATE TABLE invitations (
        id INTEGER PRIMARY KEY,
        lookup TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('organiser', 'annotator', 'viewer')),
        salt BLOB NOT NULL,
        secret_hash BLOB NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT,
        last_used_at TEXT
    )""",
]


_statements_migration("0005_access", _ACCESS)


# A verifier's identity as data (issue 21): its kind and fingerprint in a table of their own, one
# row per name, instead of a prefix inside the name. Existing names are classified by the jobs that
# wrote their verdicts (core.store.verifiers.legacy_verifier_kind). The index serves "the verdicts
# of verifier X", which pages and exports ask for by name.
_VERIFIERS = [
    """CREATE TABLE verifiers (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('judge', 'prm', 'probe', 'orm', 'mc', 'human', 'search')),
        fingerprint TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX verdicts_judge ON verdicts(judge, kind)",
]


@MIGRATIONS(name="0006_verifier_identity")
def _verifier_identity(db: Database) -> None:
    from core.store.verifier_identity import legacy_verifier_kind, register_verifiers

    for statement in _VERIFIERS:
        db.execute(statement)
    # One grouped pass over the verdicts: a name and the kinds of the jobs that wrote it.
    rows = db.execute(
        """SELECT v.judge, GROUP_CONCAT(DISTINCT j.kind || ':' || COALESCE(json_extract(j.manifest, '$.mode'), ''))
           FROM verdicts v LEFT JOIN jobs j ON j.id = v.job_id GROUP BY v.judge"""
    ).fetchall()
    identities = []
    for name, jobs in rows:
        # A probe judged through the old "judge" kind in mode "probe" was a probe-judge job.
        kinds = ["probe-judge" if job == "judge:probe" else job.split(":", 1)[0] for job in (jobs or "").split(",") if job]
        identities.append((name, legacy_verifier_kind(name, kinds), None))
    register_verifiers(db.conn, identities)


# Imports that stream (issue 22): an import commits in batches of a few thousand rows, so a label
# saved meanwhile waits one batch, not the whole file. Each batch records, per table, the range of
# row ids it added (inside its own transaction nobody else writes, so the range holds its rows and
# only them); an import that fails, or whose process died (core.store.imports), is undone by
# deleting those ranges, and its row goes; a finished one keeps its row as history. The indexes
# let that delete check the foreign keys that point at trajectories, segmentations and nodes without
# scanning the child table once per deleted row.
_IMPORTS = [
    """CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        format TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'done')),
        pid INTEGER,
        started_at TEXT NOT NULL,
        finished_at TEXT
    )""",
    """CREATE TABLE import_ranges (
        id INTEGER PRIMARY KEY,
        import_id INTEGER NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
        tbl TEXT NOT NULL,
        first_id INTEGER NOT NULL,
        last_id INTEGER NOT NULL
    )""",
    "CREATE INDEX import_ranges_import ON import_ranges(import_id)",
    "CREATE INDEX trajectories_current_segmentation ON trajectories(current_segmentation_id)",
    "CREATE INDEX trajectories_parent_node ON trajectories(parent_node_id)",
    "CREATE INDEX trajectory_labels_trajectory ON trajectory_labels(trajectory_id)",
]


_statements_migration("0007_import_batches", _IMPORTS)


# Data versions for the analysis pages' caches (issue 22): counters bumped by triggers in the same
# transaction as the change, so a cache key is a few indexed reads at any size instead of counting
# 100,000s of labels on every rerun. "labels": any annotation added, changed or removed;
# "trajectories": a trajectory removed, regraded or resegmented (its rollouts, verdicts and labels go
# or stop being current with it). Rows added to rollouts and verdicts show in their largest id. The
# index serves "a verifier's latest verdict per step" (GROUP BY step_id on the index, MAX(id) from it).
_DATA_VERSIONS = [
    "CREATE TABLE data_versions (name TEXT PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0)",
    "INSERT INTO data_versions (name, value) VALUES ('labels', 0), ('trajectories', 0)",
    *[f"""CREATE TRIGGER annotations_version_{event.lower()} AFTER {event} ON annotations
          BEGIN UPDATE data_versions SET value = value + 1 WHERE name = 'labels'; END"""
      for event in ("INSERT", "UPDATE", "DELETE")],
    """CREATE TRIGGER trajectories_version_update AFTER UPDATE OF current_segmentation_id, correct ON trajectories
       BEGIN UPDATE data_versions SET value = value + 1 WHERE name = 'trajectories'; END""",
    """CREATE TRIGGER trajectories_version_delete AFTER DELETE ON trajectories
       BEGIN UPDATE data_versions SET value = value + 1 WHERE name = 'trajectories'; END""",
    "CREATE INDEX verdicts_judge_step ON verdicts(judge, kind, step_id)",
]


_statements_migration("0008_data_versions", _DATA_VERSIONS)


# Removed verdicts and rollouts (an undone import removes its rows by id range) change the data
# version too: without this, removing the newest rows and adding as many again could give the same
# largest id, and a kept result (core/store/disk_cache.py) would outlive the data it came from.
_DATA_VERSION_REMOVALS = [
    "INSERT INTO data_versions (name, value) VALUES ('removals', 0)",
    *[f"""CREATE TRIGGER {table}_version_delete AFTER DELETE ON {table}
          BEGIN UPDATE data_versions SET value = value + 1 WHERE name = 'removals'; END"""
      for table in ("verdicts", "rollouts")],
]


_statements_migration("0009_data_version_removals", _DATA_VERSION_REMOVALS)


# The key that signs the analysis pages' kept results (core/store/disk_cache.py), made here so that
# reading a page never writes to the database (a viewer writes nothing).
@MIGRATIONS(name="0010_analysis_cache_key")
def _analysis_cache_key(db: Database) -> None:
    from core.store.disk_cache import KEY_SETTING, new_signing_key

    db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", [KEY_SETTING, new_signing_key()])


# Whether a verdict is in-sample: a trained verifier (probe, fine-tuned ORM) scoring a target it was
# trained on (issue 24). Such a score flatters the verifier, so the pages read a verifier's newest
# verdict that is not in-sample where one exists (core.store.verdicts.preferred_order). A column, so
# that those reads never parse JSON. Rows written before it are classified from the record their
# writer kept in raw (probes and ORMs marked `in_training`); the trigger classifies rows inserted
# without the column (an import of a dump, whose verdicts carry raw) by the same rule, so the rule
# has this one home. add_verdicts sets the column itself.
_IN_SAMPLE_FROM_RAW = """(CASE WHEN json_valid({raw}) THEN (CASE WHEN json_type({raw}) = 'object'
                         THEN COALESCE(json_extract({raw}, '$.in_sample'), json_extract({raw}, '$.in_training'), 0)
                         END) END)"""  # nested CASE: json_type of text that is not JSON is an error
_IN_SAMPLE = [
    "ALTER TABLE verdicts ADD COLUMN in_sample INTEGER NOT NULL DEFAULT 0 CHECK (in_sample IN (0, 1))",
    f"UPDATE verdicts SET in_sample = 1 WHERE {_IN_SAMPLE_FROM_RAW.format(raw='raw')} = 1",
    f"""CREATE TRIGGER verdicts_in_sample_from_raw AFTER INSERT ON verdicts
        WHEN NEW.in_sample = 0 AND {_IN_SAMPLE_FROM_RAW.format(raw='NEW.raw')} = 1
        BEGIN UPDATE verdicts SET in_sample = 1 WHERE id = NEW.id; END""",
]


_statements_migration("0011_verdicts_in_sample", _IN_SAMPLE)


# Who runs a job (core.jobs.runner.this_runner: host, process id and its start time), so that a
# runner on the same machine can tell a job whose process is gone (kill -9, a crash, the OOM
# killer) from a live one and resume it at once instead of waiting out the stale heartbeat.
_statements_migration("0012_job_runner", ["ALTER TABLE jobs ADD COLUMN runner TEXT"])


# Search with a verifier in the loop (issue 25). A search is one problem searched by one job: its
# parameters and its scorer's identity as columns (kind, name, fingerprint: data, not a parsed name),
# the journal of its engine and scorer calls as they happen (so that a killed search resumes to the
# identical tree, core.search.journal), and, once it ends, every candidate it considered: the rollout
# tree's node it reaches (shared with trajectories and MC rollouts of the same prefix), its guiding
# score and rank, the search's mark, its depth and generation order; a final beam names the
# trajectory (source "search") it became. `compute` on a job: what it spent (core.search.compute).
_SEARCHES = [
    """CREATE TABLE searches (
        id INTEGER PRIMARY KEY,
        job_id INTEGER REFERENCES jobs(id) ON DELETE CASCADE,
        problem_id INTEGER NOT NULL REFERENCES problems(id) ON DELETE CASCADE,
        policy TEXT NOT NULL,
        strategy TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',
        scorer TEXT NOT NULL,
        scorer_kind TEXT NOT NULL,
        scorer_fingerprint TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
        stopped TEXT,
        answer TEXT,
        correct INTEGER CHECK (correct IN (0, 1)),
        compute TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE (job_id, problem_id)
    )""",
    "CREATE INDEX searches_problem ON searches(problem_id)",
    """CREATE TABLE search_events (
        search_id INTEGER NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (search_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE search_candidates (
        search_id INTEGER NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
        candidate INTEGER NOT NULL,
        parent INTEGER,
        node_id INTEGER NOT NULL REFERENCES nodes(id),
        depth INTEGER NOT NULL,
        call INTEGER NOT NULL,
        text TEXT NOT NULL,
        num_tokens INTEGER NOT NULL,
        finish_reason TEXT,
        finished INTEGER NOT NULL CHECK (finished IN (0, 1)),
        score REAL,
        rank INTEGER,
        mark TEXT NOT NULL CHECK (mark IN ('chosen', 'pruned', 'pending')),
        subtree INTEGER,
        prior REAL,
        visits INTEGER NOT NULL DEFAULT 0,
        value_sum REAL NOT NULL DEFAULT 0,
        trajectory_id INTEGER REFERENCES trajectories(id) ON DELETE SET NULL,
        PRIMARY KEY (search_id, candidate)
    ) WITHOUT ROWID""",
    "CREATE INDEX search_candidates_node ON search_candidates(node_id)",
    "ALTER TABLE jobs ADD COLUMN compute TEXT",
]


_statements_migration("0013_searches", _SEARCHES)


# The random scorer is a verifier kind (the floor a guided search must beat): SQLite cannot change a
# CHECK in place, so the small verifiers table is copied into one that allows it.
_RANDOM_VERIFIER_KIND = [
    """CREATE TABLE verifiers_new (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('judge', 'prm', 'probe', 'orm', 'mc', 'human', 'search', 'random')),
        fingerprint TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "INSERT INTO verifiers_new SELECT name, kind, fingerprint, created_at, updated_at FROM verifiers",
    "DROP TABLE verifiers",
    "ALTER TABLE verifiers_new RENAME TO verifiers",
]


_statements_migration("0014_random_verifier_kind", _RANDOM_VERIFIER_KIND)
