"""Property tests: every importer, fed random, mutated and truncated input, either imports
cleanly or raises one StepScopeError, and an error never leaves part of the file behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import StepScopeError
from core.formats import import_file
from core.store import Store
from formats_samples import RECORDS
from fuzz_profile import fuzz_settings, record

FORMATS = sorted(RECORDS)
# 200 cases per importer in CI; STEPSCOPE_FUZZ=full runs 1,000 (tests/fuzz_profile.py).
FUZZ = fuzz_settings(200)

# Strings that have broken importers elsewhere: lone surrogates, NULs, markers, huge numbers.
_NASTY_TEXT = st.sampled_from(
    ["", " ", "\ud800", "\x00", "#### 12", "A: 3", "\n\n", "Step 1: x", "ки", "1" * 400, "\u2028"]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), _NASTY_TEXT,
)
# Small values: generating big nested ones costs more time than importing them, and the
# importers' type checks are reached just as well with a few leaves.
JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
    ),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    store = Store(folder / "fuzz.db")
    yield store, folder / "input.jsonl"
    store.close()


def table_counts(store: Store) -> dict:
    counts = store.counts()
    counts.pop("annotations_by_annotator")
    return counts


def check_import(store: Store, path: Path, format_name: str) -> None:
    """A clean error with nothing written, or a valid import that a second run does not repeat."""
    before = table_counts(store)
    try:
        import_file(store, path, format_name)
    except StepScopeError as error:
        message = str(error)
        assert str(path) in message and "\n" not in message  # one line that names the file
        assert table_counts(store) == before, "an import that failed left rows behind"
        return
    after = table_counts(store)
    second = import_file(store, path, format_name)
    assert sum(second.added.values()) == 0 and table_counts(store) == after


# --- mutation of valid records ----------------------------------------------------------------


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


@st.composite
def mutated_records(draw, format_name: str) -> list:
    """The format's valid records with a few values replaced, deleted or given a new key."""
    records = json.loads(json.dumps(RECORDS[format_name]))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(records) if len(p) >= 2]
        path = draw(st.sampled_from(paths))
        parent = records
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(JSON)
        else:
            parent[path[-1]] = draw(JSON)
    return records


def serialize(records: list, layout: str) -> bytes:
    if layout == "lines":
        text = "".join(json.dumps(r) + "\n" for r in records)
    elif layout == "pretty":
        text = "".join(json.dumps(r, indent=2) + "\n" for r in records)
    else:
        text = json.dumps(records, indent=1)
    return text.encode("utf-8")


LAYOUTS = st.sampled_from(["lines", "pretty", "array"])


def mutated_file(format_name: str) -> st.SearchStrategy[bytes]:
    """Valid records with some values replaced, deleted or added."""
    return st.builds(serialize, mutated_records(format_name), LAYOUTS)


def random_objects_file(format_name: str) -> st.SearchStrategy[bytes]:
    """Objects with the format's field names and random values, or any JSON value at all."""
    fields = sorted({key for record in RECORDS[format_name] for key in record})
    objects = st.one_of(st.fixed_dictionaries({}, optional={key: JSON for key in fields}), JSON)
    return st.builds(serialize, st.lists(objects, min_size=1, max_size=2), LAYOUTS)


@st.composite
def truncated_file(draw, format_name: str) -> bytes:
    """A valid file cut short at any byte, maybe with random bytes spliced in at the cut."""
    content = serialize(RECORDS[format_name], draw(LAYOUTS))
    cut = draw(st.integers(0, len(content)))
    noise = draw(st.one_of(st.just(b""), st.binary(max_size=8)))
    tail = content[cut:] if draw(st.booleans()) else b""
    return content[:cut] + noise + tail


# One test per importer, drawing from all three kinds of bad input: a
# separate test per kind would triple the run time for little extra reach.
@pytest.mark.parametrize("format_name", FORMATS)
def test_importer_survives_random_mutated_and_truncated_input(workspace, format_name):
    store, path = workspace
    inputs = st.one_of(
        mutated_file(format_name), random_objects_file(format_name), truncated_file(format_name)
    )

    cases = []

    @FUZZ
    @given(content=inputs)
    def run(content):
        cases.append(content)
        path.write_bytes(content)
        check_import(store, path, format_name)

    run()
    record(f"importer {format_name} (mutated, random objects, truncated)", len(cases))


def test_random_bytes(workspace):
    store, path = workspace

    cases = []

    @FUZZ
    @given(content=st.binary(max_size=200), format_name=st.sampled_from(FORMATS))
    def run(content, format_name):
        cases.append(format_name)
        path.write_bytes(content)
        check_import(store, path, format_name)

    run()
    for format_name in FORMATS:
        record(f"importer {format_name} (random bytes)", cases.count(format_name))
