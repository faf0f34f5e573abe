"""The train-orm job: an outcome reward model fine-tuned on the policy's graded solutions
(core.orm_training): trained on the train split's problems, evaluated on the test split's, its
verdicts on the test split stored; the model folder goes under verifiers/orm/ next to the database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.errors import StepScopeError
from core.jobs.spec import JobContext, JobSpec, require_ids, step_reporter
from core.jobs.training import (
    check_base, check_fine_tuning, record_training, ReadsTrainingManifest, training_data_manifest,
)  # fmt: skip
from core.policy import DEFAULT_TEMPLATE, load_template
from core.search.compute import meter_of
from core.splits import DEFAULT_TEST_FRACTION, check_test_fraction
from core.store import Store


@dataclass(frozen=True, kw_only=True)
class TrainOrmSpec(ReadsTrainingManifest, JobSpec):
    kind: ClassVar[str] = "train-orm"
    unit: ClassVar[str] = "training steps"

    base: str  # a model, or random-init[:MODEL] (MODEL's architecture, random weights)
    trajectory_ids: tuple[int, ...]
    output: str  # the model folder
    context: str = "question"  # what the ORM reads before the solution (core.probes.PROBE_CONTEXTS)
    epochs: float = 2.0
    learning_rate: float = 2e-5
    batch_size: int = 8
    test_fraction: float = DEFAULT_TEST_FRACTION  # problems without a split in their meta
    seed: int = 0
    lora: bool = False
    template: str = DEFAULT_TEMPLATE

    def model_to_load(self) -> str:
        from core.orm_training import model_to_load

        return model_to_load(self.base)

    def validate(self, store: Store) -> None:
        from core.orm_training import random_init_architecture
        from core.probes import PROBE_CONTEXTS

        check_base(self.base, self.engine, "ORMs")
        random_init_architecture(self.base)
        if self.context not in PROBE_CONTEXTS:
            raise StepScopeError(f"the ORM's context is one of {', '.join(PROBE_CONTEXTS)}, not {self.context!r}")
        check_fine_tuning(self.epochs, self.learning_rate, self.batch_size)
        check_test_fraction(self.test_fraction)
        require_ids(self.trajectory_ids, "trajectories to train on")

    def to_manifest(self, store: Store) -> dict:
        from core.orm_training import canonical_base, orm_judge_name

        return {
            "base": self.base, "policy": self.model_to_load(), "judge": orm_judge_name(canonical_base(self.base)),
            **self.common_manifest(), "output": self.output, "context": self.context, "epochs": self.epochs,
            "learning_rate": self.learning_rate, "batch_size": self.batch_size, "test_fraction": self.test_fraction,
            "seed": self.seed, "lora": self.lora,
            **training_data_manifest(store, self.trajectory_ids, self.template),
        }  # fmt: skip

    def run(self, context: JobContext) -> bool:
        from core.orm_training import train_orm

        store, engine = context.store, context.engine
        report = step_reporter(context)
        trained = train_orm(
            store, self.base, engine.info.extra["directory"], engine.info.extra.get("fingerprint", ""),
            engine.tokenizer, self.trajectory_ids, Path(self.output), context=self.context,
            template=load_template(self.template), epochs=self.epochs, learning_rate=self.learning_rate,
            batch_size=self.batch_size, test_fraction=self.test_fraction, seed=self.seed, lora=self.lora,
            device=engine.device, max_length=getattr(engine.model.config, "max_position_embeddings", 2048),
            job_id=context.job_id, should_stop=context.should_stop, on_progress=report, meter=meter_of(engine),
        )  # fmt: skip
        if trained is None:
            return True
        record_training(context, trained.folder, trained.manifest)
        return False
