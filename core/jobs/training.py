"""What the job kinds that train a verifier (train-verifier, train-orm, train-prm) share: the
checks of what they train from, and where the trained verifier is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from core.errors import StepScopeError
from core.jobs.spec import JobContext, check_range, known_fields, splitters_of
from core.policy import load_template


def check_base(base: str, engine: str, what: str) -> None:
    """A base model is named, and loaded on transformers (training needs its weights and gradients)."""
    if not base.strip():
        raise StepScopeError("name a base model")
    if engine != "transformers":
        raise StepScopeError(f"{what} train on the transformers engine")


def check_fine_tuning(epochs: float, learning_rate: float, batch_size: int) -> None:
    check_range("epochs", epochs, 0.01, 1000)
    check_range("learning rate", learning_rate, 1e-8, 1)
    check_range("batch size", batch_size, 1, 1024)


def training_data_manifest(store, trajectory_ids, template_name: str) -> dict:
    """What a verifier trained on the policy's solutions read: the trajectories, the policy prompt
    they were rendered with, and the splitters that cut them into steps."""
    template = load_template(template_name)
    return {
        "trajectory_ids": list(trajectory_ids), "policy_template": {"name": template.name, "sha256": template.sha256},
        "splitters": splitters_of(store, trajectory_ids),
    }  # fmt: skip


class ReadsTrainingManifest:
    """A training spec whose manifest holds training_data_manifest's keys reads itself back."""

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]):
        return cls(**known_fields(cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"]),
                                  template=manifest["policy_template"]["name"]))  # fmt: skip


def record_training(context: JobContext, folder: Path, manifest: dict, **more) -> None:
    """Add the trained verifier's folder and metrics (and `more`, else its data hash and split) to
    the job's manifest, where the CLI and the app read what a training job made."""
    store = context.store
    recorded = {"artifact": str(folder), "metrics": manifest["metrics"]}
    recorded |= {key: manifest[key] for key in ("data_hash", "split") if key in manifest}
    store.update_job(context.job_id, manifest={**store.get_job(context.job_id)["manifest"], **recorded, **more})
