"""The train-verifier job: a probe verifier on a base model's hidden states (core.probes), with
grouped cross-fitting; the artifact goes under verifiers/probe/ next to the database, and the
cross-fitted verdicts into the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from core.jobs.spec import JobContext, JobSpec, check_range, require_ids, step_reporter
from core.jobs.training import check_base, record_training, ReadsTrainingManifest, training_data_manifest
from core.policy import DEFAULT_TEMPLATE, load_template
from core.store import Store


@dataclass(frozen=True, kw_only=True)
class TrainVerifierSpec(ReadsTrainingManifest, JobSpec):
    kind: ClassVar[str] = "train-verifier"
    unit: ClassVar[str] = "examples"
    engine_role: ClassVar[str] = "verifier"

    base: str
    labels: str  # what the probe learns: see core.probes.PROBE_LABELS
    trajectory_ids: tuple[int, ...]
    layer: int = -1
    context: str = "question"
    folds: int = 5
    seed: int = 0
    label_policy: str | None = None  # MC labels from this policy's rollouts
    annotator: str | None = None  # human labels of this annotator
    template: str = DEFAULT_TEMPLATE

    def model_to_load(self) -> str:
        return self.base

    def validate(self, store: Store) -> None:
        from core.probes import check_labels

        check_base(self.base, self.engine, "probe verifiers (they read hidden states)")
        check_labels(self.labels)
        check_range("folds", self.folds, 2, 100)
        require_ids(self.trajectory_ids, "trajectories to train on")

    def to_manifest(self, store: Store) -> dict:
        return {
            "base": self.base, "policy": self.base, **self.common_manifest(), "labels": self.labels,
            "layer": self.layer, "context": self.context, "folds": self.folds, "seed": self.seed,
            "label_policy": self.label_policy, "annotator": self.annotator,
            **training_data_manifest(store, self.trajectory_ids, self.template),
        }  # fmt: skip

    def run(self, context: JobContext) -> bool:
        from core.probes import train_probe

        report = step_reporter(context)
        trained = train_probe(
            context.store, context.engine, self.base, self.labels, list(self.trajectory_ids), layer=self.layer,
            context=self.context, folds=self.folds, seed=self.seed, policy=self.label_policy,
            annotator=self.annotator, template=load_template(self.template), job_id=context.job_id,
            should_stop=context.should_stop, on_progress=report,
        )  # fmt: skip
        if trained is None:
            return True
        record_training(context, trained.probe.folder, trained.probe.manifest)
        return False
