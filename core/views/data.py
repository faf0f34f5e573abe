"""Import and export from the app: files go through a temporary file inside the data folder.

An upload is written to data/uploads/ under a name the app makes up (the uploaded name is only
kept as a suffix hint), imported in one transaction, and deleted; an export is written to a
temporary file there and read back as bytes for the download button. Nothing a user types ever
becomes a path.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import StepScopeError
from core.formats import EXPORTERS, IMPORTERS, check_import_splitter, export_file, import_file
from core.store import Store

UPLOAD_FOLDER = "uploads"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
_SUFFIXES = (".jsonl", ".json")
EXPORT_SUFFIX = {"trl-parquet": ".parquet"}
DATASET_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/+-]{0,79}")


def import_formats() -> list[str]:
    return list(IMPORTERS)


def splitting_formats() -> dict[str, str]:
    """The import formats that cut free text into steps (and so take a splitter), each with the
    rule it cuts by when none is chosen."""
    return {name: importer.splitter for name, importer in IMPORTERS.items() if importer.splitter is not None}


def export_formats() -> list[str]:
    return list(EXPORTERS)


def _suffix(name: str) -> str:
    lowered = name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return suffix
    return ".jsonl"


def _work_folder(data_folder: Path) -> Path:
    folder = data_folder / UPLOAD_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StepScopeError(f"cannot create {folder}: {error}") from None
    return folder


def check_dataset_name(name: str | None) -> str | None:
    name = (name or "").strip()
    if not name:
        return None
    if not DATASET_PATTERN.fullmatch(name):
        raise StepScopeError("a dataset name is up to 80 letters, digits, spaces and . _ : / + -")
    return name


@dataclass(frozen=True)
class ImportResult:
    summary: str


def import_upload(
    store: Store,
    data_folder: Path,
    file_name: str,
    content: bytes,
    format_name: str,
    *,
    dataset: str | None = None,
    annotator: str | None = None,
    splitter: str | None = None,
) -> ImportResult:
    """Import uploaded bytes; StepScopeError naming the cause (the database is left unchanged).
    `splitter` (blank: the format's default) is a rule as `stepscope import --splitter` takes it,
    checked the same way (core.formats.check_import_splitter) before anything is written."""
    if format_name not in IMPORTERS:
        raise StepScopeError(f"unknown import format {format_name!r}")
    if len(content) > MAX_UPLOAD_BYTES:
        raise StepScopeError(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    dataset = check_dataset_name(dataset)
    splitter = (splitter or "").strip() or None
    if splitter is not None:
        splitter = check_import_splitter(format_name, splitter)
    folder = _work_folder(data_folder)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", suffix=_suffix(file_name), delete=False)
    path = Path(handle.name)
    try:
        with handle:
            handle.write(content)
        report = import_file(store, path, format_name, dataset=dataset, annotator=annotator or None,
                             splitter=splitter)
    except StepScopeError as error:
        # The cause names the temporary file; the user knows the file by its uploaded name.
        raise StepScopeError(str(error).replace(str(path), file_name)) from None
    finally:
        path.unlink(missing_ok=True)
    return ImportResult(report.summary().replace(str(path), file_name))


def export_bytes(
    store: Store,
    data_folder: Path,
    format_name: str,
    *,
    labels: str | None = None,
    dataset: str | None = None,
) -> tuple[bytes, int, str]:
    """(file content, records written, a download file name)."""
    if format_name not in EXPORTERS:
        raise StepScopeError(f"unknown export format {format_name!r}")
    suffix = EXPORT_SUFFIX.get(format_name, ".jsonl")
    folder = _work_folder(data_folder)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix="export-", suffix=suffix, delete=False)
    handle.close()
    path = Path(handle.name)
    try:
        written = export_file(store, format_name, path, labels=(labels or "").strip() or None, dataset=dataset)
        content = path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
    return content, written, f"stepscope-{format_name}{suffix}"
