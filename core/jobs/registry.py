"""Job kinds by name: the one place that lists them (search-and-learn's APPROACHES dict).

A new kind is a module under core/jobs/ with a JobSpec subclass, one line here, and the page or
CLI command that offers it.
"""

from __future__ import annotations

from typing import Mapping

from core.errors import StepScopeError
from core.jobs.estimate import EstimateSpec
from core.jobs.generate import GenerateSpec
from core.jobs.judge import JudgeSpec, ProbeJudgeSpec
from core.jobs.orm_score import OrmScoreSpec
from core.jobs.prm_score import PrmScoreSpec
from core.jobs.search import SearchSpec
from core.jobs.split import SplitSpec
from core.jobs.train_orm import TrainOrmSpec
from core.jobs.train_prm import TrainPrmSpec
from core.jobs.spec import JobSpec
from core.jobs.train_verifier import TrainVerifierSpec
from core.jobs.tree_search import TreeSearchSpec

KINDS: Mapping[str, type[JobSpec]] = {
    spec.kind: spec for spec in (EstimateSpec, GenerateSpec, JudgeSpec, ProbeJudgeSpec, TrainVerifierSpec, PrmScoreSpec,
                                TrainPrmSpec, TreeSearchSpec, TrainOrmSpec, OrmScoreSpec,
                                SearchSpec, SplitSpec)
}


def spec_of(job: Mapping) -> JobSpec:
    """The spec a stored job row was queued with."""
    kind, manifest = job["kind"], job["manifest"]
    if kind == "judge" and manifest.get("mode") == "probe":
        kind = ProbeJudgeSpec.kind  # probe judging was a mode of "judge" before it had its own kind
    spec = KINDS.get(kind)
    if spec is None:
        raise StepScopeError(f"job {job['id']}: unknown kind {kind!r}")
    try:
        return spec.from_manifest(manifest)
    except (KeyError, TypeError, ValueError) as error:
        raise StepScopeError(f"job {job['id']}: its manifest cannot be read ({type(error).__name__}: {error})") from None


def unit_of(kind: str) -> str:
    """What a job of this kind counts as done/planned."""
    spec = KINDS.get(kind)
    return spec.unit if spec else "items"
