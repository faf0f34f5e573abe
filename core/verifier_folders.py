"""Where trained verifiers live: `<database folder>/verifiers/<kind>/<name>/`, one layout for probe
verifiers ("probe"), fine-tuned ORMs ("orm") and trained PRMs ("prm"). Each folder holds a
`manifest.json` that says what was trained, on what, and how well it did.

Folders written before this layout are still found where they are: probes directly under
`verifiers/`, ORMs under `orms/`, PRMs under `prms/`. Listing reads both, this layout first; new
folders are only ever written in this layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.errors import StepScopeError

VERIFIERS_FOLDER = "verifiers"
TRAINED_KINDS = ("probe", "orm", "prm")
MANIFEST = "manifest.json"
# The folder each kind was written to before the layout above (read, never written).
_LEGACY_FOLDERS = {"probe": VERIFIERS_FOLDER, "orm": "orms", "prm": "prms"}


def _check_kind(kind: str) -> None:
    if kind not in TRAINED_KINDS:
        raise StepScopeError(f"a trained verifier's kind is one of {', '.join(TRAINED_KINDS)}, not {kind!r}")


def folder_name(text: str) -> str:
    """`text` as one folder name: other characters become "-"; the last 60 characters are kept,
    since names that share a long prefix (a model path) differ at the end."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[-60:].strip("-.")
    return name or "model"


def kind_folder(store, kind: str) -> Path:
    """The folder that holds the trained verifiers of `kind` next to the store's database."""
    _check_kind(kind)
    return store.path.parent / VERIFIERS_FOLDER / kind


def verifier_folder(store, kind: str, name: str) -> Path:
    """The folder of the trained verifier `name` of `kind` next to the store's database."""
    return kind_folder(store, kind) / folder_name(name)


def verifier_folders(store, kind: str) -> list[Path]:
    """Every folder of `kind` next to the database that holds a manifest: this layout's, then the
    old layout's."""
    found = []
    for parent in (kind_folder(store, kind), store.path.parent / _LEGACY_FOLDERS[kind]):
        if parent.is_dir():
            found += sorted(manifest.parent for manifest in parent.glob(f"*/{MANIFEST}"))
    return found


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a trained verifier's folder, or a StepScopeError saying why there is none."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StepScopeError(f"{folder} is not a trained verifier's folder: {error}") from None


def write_manifest(folder: Path, manifest: dict) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
