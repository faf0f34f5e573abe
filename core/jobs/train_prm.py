"""The train-prm job: a token-classification PRM fine-tuned on the store's step labels
(core.prm_training); the model folder goes under prms/ next to the database, and family
"token-classification" scoring reads it (`stepscope prm score --prm FOLDER`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from core.errors import StepScopeError
from core.jobs.spec import JobContext, JobSpec, check_range, known_fields, require_ids, splitters_of, step_reporter
from core.store import Store


def default_output(store: Store, base: str, labels: str) -> str:
    from core.prm_training import prms_dir

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(base).name or base).strip("-")
    return str(prms_dir(store) / f"sorm-{labels}-{name}")


@dataclass(frozen=True, kw_only=True)
class TrainPrmSpec(JobSpec):
    kind: ClassVar[str] = "train-prm"
    unit: ClassVar[str] = "training steps"

    base: str
    labels: str  # core.prm_training.PRM_LABELS
    trajectory_ids: tuple[int, ...]
    output: str  # the model folder
    judge: str | None = None  # consensus: the judge or PRM whose step verdicts must agree
    label_policy: str | None = None
    annotator: str | None = None
    epochs: float = 3.0
    learning_rate: float = 5e-5
    batch_size: int = 4
    heldout_fraction: float = 0.2
    seed: int = 0
    lora: bool = False

    def model_to_load(self) -> str:
        return self.base

    def validate(self, store: Store) -> None:
        from core.prm_training import check_labels

        if not self.base.strip():
            raise StepScopeError("name a base model")
        if self.engine != "transformers":
            raise StepScopeError("PRMs train on the transformers engine")
        check_labels(self.labels)
        if self.labels == "consensus" and not self.judge:
            raise StepScopeError("consensus labels need a judge or PRM to agree with (--judge NAME)")
        check_range("epochs", self.epochs, 0.01, 1000)
        check_range("learning rate", self.learning_rate, 1e-8, 1)
        check_range("batch size", self.batch_size, 1, 1024)
        check_range("held-out fraction", self.heldout_fraction, 0.01, 0.9)
        require_ids(self.trajectory_ids, "trajectories to train on")

    def to_manifest(self, store: Store) -> dict:
        return {
            "base": self.base, "policy": self.base, **self.common_manifest(), "labels": self.labels,
            "trajectory_ids": list(self.trajectory_ids), "output": self.output, "judge": self.judge,
            "label_policy": self.label_policy, "annotator": self.annotator, "epochs": self.epochs,
            "learning_rate": self.learning_rate, "batch_size": self.batch_size,
            "heldout_fraction": self.heldout_fraction, "seed": self.seed, "lora": self.lora,
            "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "TrainPrmSpec":
        return cls(**known_fields(cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"])))

    def run(self, context: JobContext) -> bool:
        from core.prm_training import step_labels, train_prm

        store, engine = context.store, context.engine
        labels = step_labels(store, self.trajectory_ids, self.labels, policy=self.label_policy,
                             annotator=self.annotator, judge=self.judge)  # fmt: skip
        report = step_reporter(context)
        trained = train_prm(
            store, engine.info.extra["directory"], self.base, engine.info.extra.get("fingerprint", ""),
            engine.tokenizer, labels, self.labels, Path(self.output), epochs=self.epochs,
            learning_rate=self.learning_rate, batch_size=self.batch_size, heldout_fraction=self.heldout_fraction,
            seed=self.seed, lora=self.lora, device=engine.device, max_length=getattr(engine.model.config,
            "max_position_embeddings", 2048), should_stop=context.should_stop, on_progress=report,
        )  # fmt: skip
        if trained is None:
            return True
        job = store.get_job(context.job_id)
        store.update_job(context.job_id, manifest={**job["manifest"], "artifact": str(trained.folder),
                                                   "metrics": trained.manifest["metrics"],
                                                   "kept_fraction": trained.manifest["kept_fraction"],
                                                   "data_hash": trained.manifest["data_hash"],
                                                   "split": trained.manifest["split"]})  # fmt: skip
        return False
