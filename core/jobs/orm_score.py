"""The orm-score job: a fine-tuned ORM folder (train-orm) gives outcome verdicts on trajectories,
so Best-of-N can rerank any policy's samples with it. Its scores on trajectories it trained on
are in-sample (marked `in_sample`), and one that already has a held-out verdict of this ORM keeps
it (counted in the manifest, core.jobs.judge.KEPT_HELD_OUT); those it already scored are skipped,
so a killed job resumes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from core.errors import StepScopeError
from core.jobs.spec import JobContext, JobSpec, Progress, known_fields, require_ids, splitters_of
from core.store import Store


@dataclass(frozen=True, kw_only=True)
class OrmScoreSpec(JobSpec):
    kind: ClassVar[str] = "orm-score"
    unit: ClassVar[str] = "verdicts"
    engine_role: ClassVar[str] = "verifier"

    verifier: str  # the ORM's folder
    trajectory_ids: tuple[int, ...]

    def manifest_of_orm(self) -> dict:
        from core.orm_training import read_manifest

        return read_manifest(self.verifier)

    def model_to_load(self) -> str:
        # The runner loads an engine for every job; the base's tokenizer is what it needs to
        # check the folder against (the ORM itself is loaded from its folder).
        from core.orm_training import model_to_load

        return model_to_load(self.manifest_of_orm()["base"])

    def validate(self, store: Store) -> None:
        if self.engine != "transformers":
            raise StepScopeError("fine-tuned ORMs run on the transformers engine")
        self.manifest_of_orm()
        require_ids(self.trajectory_ids, "trajectories to score")
        for trajectory_id in self.trajectory_ids:
            if store.get_trajectory(trajectory_id) is None:
                raise StepScopeError(f"trajectory {trajectory_id} does not exist")

    def to_manifest(self, store: Store) -> dict:
        orm = self.manifest_of_orm()
        return {
            "judge": orm["judge"], "verifier": str(Path(self.verifier).resolve()), "verifier_fingerprint": orm["fingerprint"],
            "base": orm["base"], "policy": self.model_to_load(), **self.common_manifest(), "kind": "outcome",
            "trajectory_ids": list(self.trajectory_ids), "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "OrmScoreSpec":
        return cls(**known_fields(cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"])))

    def planned(self) -> int:
        return len(self.trajectory_ids)

    def run(self, context: JobContext) -> bool:
        from core.orm_training import score_trajectories

        recorded = context.store.get_job(context.job_id)["manifest"].get("verifier_fingerprint")
        if recorded and recorded != self.manifest_of_orm()["fingerprint"]:
            raise StepScopeError(f"ORM {self.verifier} changed since the job was queued")
        progress = Progress(planned=len(self.trajectory_ids))

        def report(done: int, planned: int) -> None:
            progress.done = len(self.trajectory_ids) - planned + done
            context.report(progress)

        from core.jobs.judge import record_kept_held_out
        from core.search.compute import meter_of

        scored = score_trajectories(context.store, self.verifier, self.trajectory_ids, device=context.engine.device,
                                    job_id=context.job_id, should_stop=context.should_stop, on_progress=report,
                                    meter=meter_of(context.engine))  # fmt: skip
        if scored is None:
            return True
        record_kept_held_out(context.store, context.job_id, scored[1])
        return False
