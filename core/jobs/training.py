"""What the job kinds that train a verifier (train-verifier, train-orm, train-prm) share: the
checks of what they train from, and where the trained verifier is recorded."""

from __future__ import annotations

from pathlib import Path

from core.errors import StepScopeError
from core.jobs.spec import JobContext, check_range


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


def record_training(context: JobContext, folder: Path, manifest: dict, **more) -> None:
    """Add the trained verifier's folder and metrics (and `more`, else its data hash and split) to
    the job's manifest, where the CLI and the app read what a training job made."""
    store = context.store
    recorded = {"artifact": str(folder), "metrics": manifest["metrics"]}
    recorded |= {key: manifest[key] for key in ("data_hash", "split") if key in manifest}
    store.update_job(context.job_id, manifest={**store.get_job(context.job_id)["manifest"], **recorded, **more})
