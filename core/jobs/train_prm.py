"""The train-prm job: a token-classification PRM fine-tuned on the store's step labels
(core.prm_training); the model folder goes under verifiers/prm/ next to the database, and family
"token-classification" scoring reads it (`stepscope prm score --prm FOLDER`)."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from core.errors import StepScopeError
from core.jobs.spec import JobContext, JobSpec, known_fields, require_ids, splitters_of, step_reporter
from core.jobs.training import check_base, check_fine_tuning, record_training
from core.search.compute import meter_of
from core.splits import DEFAULT_TEST_FRACTION, check_test_fraction
from core.store import Store
from core.verifier_folders import verifier_folder


def default_output(store: Store, base: str, labels: str, sampled_only: bool = False) -> str:
    kind = f"{labels}-sampled" if sampled_only else labels  # two label sets, two folders
    return str(verifier_folder(store, "prm", f"sorm-{kind}-{Path(base).name or base}"))


@dataclass(frozen=True, kw_only=True)
class TrainPrmSpec(JobSpec):
    kind: ClassVar[str] = "train-prm"
    unit: ClassVar[str] = "training steps"

    base: str
    labels: str  # core.prm_training.PRM_LABELS
    trajectory_ids: tuple[int, ...]
    output: str  # the model folder
    judge: str | None = None  # mc-agree: the judge or PRM whose step verdicts must agree
    label_policy: str | None = None
    annotator: str | None = None
    sampled_only: bool = False  # MC labels: sampled steps only, none implied by search or outcome
    epochs: float = 3.0
    learning_rate: float = 5e-5
    batch_size: int = 4
    test_fraction: float = DEFAULT_TEST_FRACTION  # held out: problems without a split in their meta (core.splits)
    seed: int = 0
    lora: bool = False
    # The CLI's and benchmarks' older name of test_fraction, taken until they pass test_fraction.
    heldout_fraction: InitVar[float | None] = None

    def __post_init__(self, heldout_fraction: float | None) -> None:
        if heldout_fraction is not None:
            object.__setattr__(self, "test_fraction", heldout_fraction)

    def model_to_load(self) -> str:
        return self.base

    def validate(self, store: Store) -> None:
        from core.prm_training import MC_AGREE, check_agreeing_verifier, check_labels

        check_base(self.base, self.engine, "PRMs")
        check_labels(self.labels)
        if self.labels == MC_AGREE:
            check_agreeing_verifier(self.judge)
        if self.sampled_only and self.labels not in ("mc-hard", "mc-soft", MC_AGREE):
            raise StepScopeError(f"only MC labels are sampled or implied, not {self.labels}: drop sampled_only")
        check_fine_tuning(self.epochs, self.learning_rate, self.batch_size)
        check_test_fraction(self.test_fraction)
        require_ids(self.trajectory_ids, "trajectories to train on")

    def to_manifest(self, store: Store) -> dict:
        return {
            "base": self.base, "policy": self.base, **self.common_manifest(), "labels": self.labels,
            "trajectory_ids": list(self.trajectory_ids), "output": self.output, "judge": self.judge,
            "label_policy": self.label_policy, "annotator": self.annotator, "sampled_only": self.sampled_only,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate, "batch_size": self.batch_size,
            "test_fraction": self.test_fraction, "seed": self.seed, "lora": self.lora,
            "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "TrainPrmSpec":
        # Rows queued before the split was core.splits' name the fraction heldout_fraction.
        fraction = manifest.get("test_fraction", manifest.get("heldout_fraction", DEFAULT_TEST_FRACTION))
        return cls(**known_fields(cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"]),
                                  test_fraction=fraction))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        from core.prm_training import step_labels, train_prm

        store, engine = context.store, context.engine
        labels = step_labels(store, self.trajectory_ids, self.labels, policy=self.label_policy,
                             annotator=self.annotator, judge=self.judge, sampled_only=self.sampled_only)  # fmt: skip
        report = step_reporter(context)
        trained = train_prm(
            store, engine.info.extra["directory"], self.base, engine.info.extra.get("fingerprint", ""),
            engine.tokenizer, labels, self.labels, Path(self.output), epochs=self.epochs,
            learning_rate=self.learning_rate, batch_size=self.batch_size, test_fraction=self.test_fraction,
            seed=self.seed, lora=self.lora, device=engine.device, max_length=getattr(engine.model.config,
            "max_position_embeddings", 2048), sampled_only=self.sampled_only, should_stop=context.should_stop,
            on_progress=report, meter=meter_of(engine),
        )  # fmt: skip
        if trained is None:
            return True
        split = trained.manifest["split"]
        # heldout_problems: what the CLI's train-prm summary reads, until it reads test_problems.
        # The labels' provenance and the held-out warning: what the CLI's summary says of the data.
        record_training(context, trained.folder, trained.manifest, kept_fraction=trained.manifest["kept_fraction"],
                        split={**split, "heldout_problems": split["test_problems"]},
                        label_provenance=trained.manifest["label_provenance"],
                        heldout_warning=trained.manifest["heldout_warning"])  # fmt: skip
        return False
