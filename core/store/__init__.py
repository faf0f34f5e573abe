"""The SQLite store: schema, migrations and the queries that jobs, pages and the CLI share.

All the SQL of StepScope lives in this package (tests/test_architecture.py checks it). `Store`
is assembled from one mixin per concern, so that `store.<query>()` works everywhere while each
module stays about one thing:

- connection.py: the file, a connection per thread, WAL, busy timeout, `transaction()`;
- schema.py: the tables as migrations, and the sample set;
- keys.py, rows.py: content and random keys, timestamps; row encoding;
- problems.py: problems, trajectories, segmentations, steps;
- rollouts.py: rollouts and the step values counted from them;
- verdicts.py, annotations.py, jobs.py: verdicts; annotators and labels; job rows;
- verifiers.py: who gave the verdicts: each verifier's name, kind (judge, prm, probe, ...) and
  fingerprint;
- imports.py: imports that commit in batches and are undone if they fail or their process dies;
- export.py: pages of trajectories with their current steps and labels, for the exports;
- label_provenance.py: what a step's MC label can be read from (its rollouts, its neighbours',
  its trajectory's outcome), set-wise, for labels that say where they came from;
- summary.py: row counts for `db info`;
- quality.py: gold quality-control items and project settings (the error taxonomy);
- access.py: invitations (a person, a role, a token kept only as a salted hash);
- latents.py: ratings with their human latents (confidence, dwell, category), for Compare;
- prm.py: a step verifier's (PRM's) latest step scores, per trajectory;
- nodes.py, tree.py: the rollout tree (nodes are step prefixes, pooled rollouts, search marks,
  child branches);
- segmentations.py: labels, verdicts and values of one segmentation mapped onto another's steps
  by character span;
- searches.py: searches with a verifier in the loop: each problem's search, its journal, every
  candidate it considered (a node of the rollout tree, its score and mark);
- explore.py, compare.py, best_of_n.py, annotate.py: what each app page reads beyond the above.
"""

from __future__ import annotations

from core.store.access import AccessQueries
from core.store.annotate import AnnotateQueries
from core.store.annotations import RATINGS, AnnotationQueries
from core.store.best_of_n import BestOfNQueries
from core.store.compare import CompareQueries
from core.store.connection import DEFAULT_DB, ConnectionBase, default_db_path
from core.store.explore import DISAGREEMENTS, ExploreQueries, TrajectoryFilter
from core.store.export import ExportQueries
from core.store.imports import ImportBatch, ImportQueries, ImportRowError
from core.store.jobs import JOB_STATUSES, JobQueries
from core.store.keys import content_key, new_key, now, problem_key, segmentation_key
from core.store.label_provenance import LabelProvenanceQueries
from core.store.problems import ProblemQueries
from core.store.prm import PrmQueries
from core.store.quality import QualityQueries
from core.store.latents import LatentQueries
from core.store.rollouts import RolloutQueries
from core.store.schema import MIGRATIONS, SAMPLE_CREATED_AT, SAMPLE_DATASET
from core.store.searches import SearchQueries
from core.store.review import ReviewQueries
from core.store.segmentations import SegmentationQueries
from core.store.summary import SummaryQueries
from core.store.tree import TreeQueries
from core.store.verdicts import VERDICT_KINDS, VerdictQueries
from core.store.verifiers import VERIFIER_KINDS, VerifierQueries, legacy_verifier_kind

__all__ = [
    "DEFAULT_DB", "DISAGREEMENTS", "ImportBatch", "ImportRowError", "JOB_STATUSES", "MIGRATIONS", "RATINGS", "SAMPLE_CREATED_AT",
    "SAMPLE_DATASET", "VERDICT_KINDS", "VERIFIER_KINDS", "Store", "TrajectoryFilter", "content_key", "default_db_path",
    "legacy_verifier_kind", "new_key", "now", "problem_key", "segmentation_key",
]  # fmt: skip


class Store(
    ProblemQueries,
    RolloutQueries,
    VerdictQueries,
    VerifierQueries,
    AnnotationQueries,
    JobQueries,
    SummaryQueries,
    ExploreQueries,
    CompareQueries,
    BestOfNQueries,
    AnnotateQueries,
    PrmQueries,
    QualityQueries,
    LatentQueries,
    TreeQueries,
    AccessQueries,
    ImportQueries,
    ExportQueries,
    LabelProvenanceQueries,
    SearchQueries,
    SegmentationQueries,
    ReviewQueries,
    ConnectionBase,
):
    """A StepScope database file. Safe to share between threads; each gets its own connection."""
