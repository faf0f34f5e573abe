"""The shape of an importer and an exporter, as the registry in `core.formats` holds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from core.formats.records import Item, Job

if TYPE_CHECKING:
    from core.formats.labels import LabelSource, ProvenanceTally
    from core.store import Store


@dataclass(frozen=True)
class ImportOptions:
    dataset: str | None = None  # the user's choice of dataset for the problems, if any
    annotator: str | None = None  # for formats whose labels have no author of their own
    splitter: str | None = None  # how free text is cut into steps, for formats that cut it (else their default)

    def dataset_or(self, default: str) -> str:
        return self.dataset or default


@dataclass(frozen=True)
class Importer:
    name: str
    description: str
    default_dataset: str
    # One JSON object of the file -> the records it holds. Raises RecordError on bad fields.
    parse: Callable[[dict, ImportOptions], Sequence[Item | Job]]
    # The rule it cuts free text into steps with when none is chosen; None for formats whose steps
    # come split or are cut one fixed way (they take no splitter: resegment after importing).
    splitter: str | None = None


@dataclass(frozen=True)
class ExportOptions:
    labels: "LabelSource | None" = None
    dataset: str | None = None  # only trajectories of problems in this dataset
    # Counts the provenance of the MC labels written (sampled, implied), for the caller to report.
    tally: "ProvenanceTally | None" = None


@dataclass(frozen=True)
class Exporter:
    name: str
    description: str
    needs_labels: bool
    # Writes the file; returns the number of records written.
    write: Callable[["Store", Path, ExportOptions], int]
