"""Bad input: every value a user types or a URL carries, fuzzed (hypothesis).

Two layers. The checks the pages call (database names, annotator names, deep links, assigned
lists, uploads, export labels, the search box) take thousands of random and hostile values:
each either passes and stays inside the data folder, or raises one StepScopeError with a
message. Then the pages themselves, through Streamlit's AppTest on a real SQLite file: each
form value and query parameter set to a random value and the script rerun; the run must end
without an exception, and a refused value must show a message.

CI draws a few cases per test; `STEPSCOPE_FUZZ=full` draws 1,000 per test and records the
counts in benchmarks/results/reliability_fuzz.json (see tests/fuzz_profile.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from core.views.annotate import parse_assigned
from core.views.inputs import ANNOTATOR_PATTERN, parse_deep_link, resolve_database, validate_annotator
from core.views.data import UPLOAD_FOLDER, export_bytes, export_formats, import_formats, import_upload
from core.errors import StepScopeError
from core.views.explore import TrajectoryFilter, find_problems, find_trajectories
from core.sample_solutions import ensure_trajectories
from core.store import Store
from app_components import step_controls
from fuzz_profile import fuzz_settings, record

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CORE_CI, PAGE_CI = 200, 12
APP_TIMEOUT = 60

# Values that have broken path handling, parsers and renderers elsewhere.
NASTY = st.sampled_from([
    "", " ", "..", "../stepscope.db", "../../etc/passwd", "/etc/passwd", "/tmp/x.db", "~/x.db", "..\\x.db",
    "C:\\x.db", "x.db/../../y.db", "%2e%2e%2fx.db", "x.db\x00.txt", "\x00", "link.db", "uploads/x.db",
    ".hidden.db", "x.DB", "a" * 81 + ".db", "con.db", "x.db ", " x.db", "x .db", "ok.db", "ok.sqlite3",
    "<script>alert(1)</script>", "![x](http://evil.example/x.png)", "' OR 1=1 --", "%", "_", "\\",
    "1", "0", "-1", "1e3", "1.5", "²", "٣", "１", "9" * 40, "3, 7, 10-14", "1-99999", "5-1", "\ud7ff", "\u202e",
    "alice", "a" * 40, "a" * 41, "bob smith", "é", "\n", "\t", "𝟘",
])  # fmt: skip
PATHS = st.builds(
    lambda parts, sep, suffix: sep.join(parts) + suffix,
    st.lists(st.sampled_from(["..", ".", "", "data", "etc", "passwd", "x", "%2e%2e", "~", "uploads", "link.db"]),
             max_size=5),
    st.sampled_from(["/", "\\", "/./", "//"]),
    st.sampled_from(["", ".db", ".sqlite", ".sqlite3", ".db\x00.txt", ".jsonl"]),
)  # fmt: skip
TEXT = st.one_of(NASTY, PATHS, st.text(max_size=60), st.text(st.characters(codec="ascii"), max_size=30))


def short(strategy, size: int):
    """What a browser can send to a text box with max_chars=size: it cuts longer input."""
    return strategy.map(lambda s: s[:size])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A data folder with a database, and a link inside it that leads out."""
    root = tmp_path_factory.mktemp("fuzz-root")
    data = root / "data"
    data.mkdir()
    (root / "outside.db").write_bytes(b"not yours")
    (data / "link.db").symlink_to(root / "outside.db")
    ensure_trajectories(Store.open(data / "fuzz.db"))
    return data


def files_under(root: Path) -> set[Path]:
    """Every path under root, less SQLite's -wal/-shm files (they come and go with connections)."""
    return {p for p in root.rglob("*") if not p.name.endswith(("-wal", "-shm"))}


def outside(folder: Path) -> set[Path]:
    """What exists around the data folder (two levels up), the folder itself excluded, and the
    job worker's lock beside a database (another test's worker process may create it late)."""
    return {p for p in files_under(folder.parent.parent)
            if p != folder and folder not in p.parents and not p.name.endswith(".worker.lock")}  # fmt: skip


def count(name: str, cases: list) -> None:
    record(name, len(cases))
    assert cases, "hypothesis ran no case"


# --- the checks the pages call --------------------------------------------------------------


def test_database_names_never_leave_the_data_folder(folder):
    cases, before = [], files_under(folder.parent)

    @fuzz_settings(CORE_CI)
    @given(name=TEXT)
    def run(name):
        cases.append(name)
        for must_exist in (True, False):
            try:
                path = resolve_database(name, folder, must_exist=must_exist)
            except StepScopeError as error:
                assert str(error)
                continue
            assert path.parent == folder.resolve() and not path.is_symlink() and "/" not in path.name
        assert files_under(folder.parent) == before  # resolving never creates anything

    run()
    count("core.resolve_database", cases)


def test_annotator_names_are_validated():
    cases = []

    @fuzz_settings(CORE_CI)
    @given(name=TEXT)
    def run(name):
        cases.append(name)
        try:
            accepted = validate_annotator(name)
        except StepScopeError as error:
            assert "annotator name" in str(error)
            return
        assert ANNOTATOR_PATTERN.fullmatch(accepted) and accepted == name.strip()

    run()
    count("core.validate_annotator", cases)


def test_deep_links_never_raise(folder):
    store = Store.open(folder / "fuzz.db")
    n_trajectories = store.count_trajectories()
    cases = []

    @fuzz_settings(CORE_CI)
    @given(trajectory=st.one_of(st.none(), TEXT), step=st.one_of(st.none(), TEXT))
    @example(trajectory="²", step=None)  # str.isdigit() says yes, int() said ValueError: found by this test
    @example(trajectory="1", step="²")
    def run(trajectory, step):
        cases.append((trajectory, step))
        params = {k: v for k, v in (("trajectory", trajectory), ("step", step)) if v is not None}
        link = parse_deep_link(params, store)
        if link.problem:
            assert link.step_idx is None
            return
        if link.trajectory_id is not None:
            assert 1 <= link.trajectory_id <= n_trajectories
            assert link.step_idx is None or link.step_idx < len(store.steps(link.trajectory_id))

    run()
    count("core.parse_deep_link", cases)


def test_assigned_lists_parse_or_say_why():
    cases = []

    @fuzz_settings(CORE_CI)
    @given(text=st.one_of(TEXT, st.lists(st.integers(-5, 10**13).map(str), max_size=6).map(", ".join)))
    def run(text):
        cases.append(text)
        try:
            ids = parse_assigned(text)
        except StepScopeError as error:
            assert "assigned list" in str(error) or "range" in str(error)
            return
        assert all(isinstance(i, int) and i >= 0 for i in ids) and len(ids) == len(set(ids)) <= 5000

    run()
    count("core.parse_assigned", cases)


def test_uploads_stay_in_the_uploads_folder_and_leave_nothing(folder):
    store = Store.open(folder / "fuzz.db")
    before = files_under(folder.parent)
    formats = import_formats()
    cases = []

    @fuzz_settings(CORE_CI)
    @given(name=TEXT, dataset=TEXT, annotator=TEXT, format_name=st.sampled_from([*formats, "../jsonl"]),
           content=st.one_of(st.binary(max_size=64), st.sampled_from(
               [b'{"question": "1+1?", "answer": "2 #### 2"}\n', b"[]", b'{"problem": "<script>x</script>"}'])))
    def run(name, dataset, annotator, format_name, content):
        cases.append(name)
        try:
            import_upload(store, folder, name, content, format_name, dataset=dataset, annotator=annotator)
        except StepScopeError as error:
            assert str(error).strip()  # (it quotes the uploaded name, which may hold a line break)
        uploads = folder / UPLOAD_FOLDER
        assert not any(uploads.iterdir()), "an upload left a file behind"
        assert files_under(folder.parent) - before <= {uploads, *(folder.glob("fuzz.db*"))}

    run()
    count("core.import_upload (file name, format, dataset, annotator, content)", cases)


def test_export_labels_and_formats_say_why(folder):
    store = Store.open(folder / "fuzz.db")
    cases = []

    @fuzz_settings(CORE_CI)
    @given(format_name=st.sampled_from([*export_formats(), "../../x"]),
           labels=st.one_of(TEXT, st.sampled_from(["mc-soft:0.5", "mc-soft:2", "mc-soft:nan", "judge:", "human:../x",
                                                   "consensus", "mc-hard"])),
           dataset=st.one_of(st.none(), TEXT))
    def run(format_name, labels, dataset):
        cases.append(labels)
        try:
            content, written, file_name = export_bytes(store, folder, format_name, labels=labels, dataset=dataset)
        except StepScopeError as error:
            assert str(error)
        else:
            assert isinstance(content, bytes) and written >= 0 and "/" not in file_name
        assert not any((folder / UPLOAD_FOLDER).iterdir())

    run()
    count("core.export_bytes (format, labels, dataset)", cases)


def test_search_box_is_a_plain_substring(folder):
    store = Store.open(folder / "fuzz.db")
    cases = []

    @fuzz_settings(CORE_CI)
    @given(text=TEXT)
    def run(text):
        cases.append(text)
        needle = text.strip().lower()
        if "\x00" in needle:
            # SQLite ends a LIKE pattern at a NUL, so such a search matches more than it should;
            # it cannot come from typing, and it must still not fail.
            find_trajectories(store, TrajectoryFilter(search=text))
            return
        for row in find_trajectories(store, TrajectoryFilter(search=text)):
            assert needle in row["question"].lower()
        for row in find_problems(store, None, text):
            assert needle in row["question"].lower()

    run()
    count("core.search (find_trajectories, find_problems)", cases)


# --- the pages, through AppTest -------------------------------------------------------------


@pytest.fixture
def app_db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "data" / "pages.db"
    monkeypatch.setenv("STEPSCOPE_DB", str(path))
    ensure_trajectories(Store.open(path))
    return path


def script(name: str, db: Path, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / name), default_timeout=APP_TIMEOUT)
    at.session_state["db_path"] = str(db)
    at.session_state["policy_model"] = "tiny-policy"
    for key, value in state.items():
        at.session_state[key] = value
    return at


def clean_run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def messages(elements) -> list[str]:
    return [e.value for e in elements]


def test_app_db_query_parameter(app_db):
    folder = app_db.parent
    outside_before = outside(folder)
    at = clean_run(script("app.py", app_db))
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(value=TEXT)
    def run(value):
        cases.append(value)
        if "db_link_seen" in at.session_state:  # a link is read once per session: make this one new
            del at.session_state["db_link_seen"]
        at.query_params["db"] = value
        clean_run(at)
        assert Path(at.session_state["db_path"]).parent == folder.resolve()
        try:
            resolve_database(value, folder)
        except StepScopeError:
            assert any("The link's database" in m for m in messages(at.sidebar.error)), value
        assert outside(folder) == outside_before

    run()
    count("page app.py ?db=", cases)


def test_app_annotator_name_box(app_db):
    at = clean_run(script("app.py", app_db))
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(value=short(TEXT, 40))
    def run(value):
        cases.append(value)
        at.session_state["annotator_input"] = value
        clean_run(at)
        accepted = at.session_state["annotator"]
        if accepted is None:
            assert not value.strip() or any("1 to 40 letters" in m for m in messages(at.sidebar.error)), value
        else:
            assert accepted == value.strip() and ANNOTATOR_PATTERN.fullmatch(accepted)

    run()
    count("page app.py annotator name", cases)


def test_app_new_database_name_box(app_db):
    folder = app_db.parent
    outside_before = outside(folder)
    at = clean_run(script("app.py", app_db))
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(value=TEXT)
    def run(value):
        cases.append(value)
        at.session_state["db_choice"] = "new database file…"
        at.session_state["db_new"] = value
        clean_run(at)
        assert Path(at.session_state["db_path"]).parent == folder.resolve()
        try:
            resolve_database(value, folder, must_exist=False)
        except StepScopeError:
            assert not value or at.sidebar.error, value
        assert outside(folder) == outside_before

    run()
    count("page app.py new database file name", cases)


def test_explore_trajectory_and_step_parameters(app_db):
    at = clean_run(script("pages/explore.py", app_db))
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(trajectory=st.one_of(st.none(), TEXT), step=st.one_of(st.none(), TEXT))
    @example(trajectory="²", step=None)
    def run(trajectory, step):
        cases.append((trajectory, step))
        at.query_params.clear()
        for key, value in (("trajectory", trajectory), ("step", step)):
            if value is not None:
                at.query_params[key] = value
        at.session_state["explore_synced"] = None
        clean_run(at)
        link = parse_deep_link({k: v for k, v in (("trajectory", trajectory), ("step", step)) if v is not None},
                               Store.open(app_db))
        if link.problem:
            assert any("Cannot open that link" in m for m in messages(at.warning)), (trajectory, step)

    run()
    count("page explore ?trajectory=&step=", cases)


def test_explore_search_box(app_db):
    at = clean_run(script("pages/explore.py", app_db))
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(value=short(TEXT, 200))
    def run(value):
        cases.append(value)
        at.text_input(key="ex_search").input(value)
        clean_run(at)

    run()
    count("page explore search box", cases)


def test_annotate_note_box(app_db):
    at = clean_run(script("pages/annotate.py", app_db, annotator="fuzzer"))
    store = Store.open(app_db)
    step_id = store.steps(1)[0]["id"]
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(value=short(st.one_of(TEXT, st.text(min_size=1000, max_size=6000)), 5000))
    def run(value):
        cases.append(value)
        previous = (store.annotation("fuzzer", step_id) or {}).get("note")
        at.text_input(key=f"ann_note_{step_id}").input(value)
        clean_run(at)
        stored = (store.annotation("fuzzer", step_id) or {}).get("note")
        expected = value.strip()[:5000] or None  # notes are stored trimmed; blank is no note
        if expected != previous:  # a change is saved and reported
            assert stored == expected
            assert "note saved" in step_controls(at, step_id)["status"]  # the row's own saved line
        else:
            assert stored == previous

    run()
    count("page annotate note", cases)


def test_annotate_assigned_list_box(app_db):
    at = clean_run(script("pages/annotate.py", app_db, annotator="fuzzer"))
    at.selectbox(key="ann_mode").select("assigned list")
    clean_run(at)
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(value=short(st.one_of(TEXT, st.lists(st.integers(0, 30).map(str), max_size=5).map(",".join)), 2000))
    def run(value):
        cases.append(value)
        at.text_input(key="ann_assigned").input(value)
        clean_run(at)
        try:
            ids = parse_assigned(value)
        except StepScopeError:
            assert any("Cannot build the queue" in m for m in messages(at.error)), value
            return
        if not ids:
            assert any("queue is empty" in m for m in messages(at.info))

    run()
    count("page annotate assigned list", cases)


def test_jobs_and_data_export_form(app_db):
    at = clean_run(script("pages/jobs_data.py", app_db))
    cases = []

    @fuzz_settings(PAGE_CI)
    @given(labels=short(TEXT, 200), format_name=st.sampled_from(export_formats()))
    def run(labels, format_name):
        cases.append(labels)
        [t for t in at.text_input if t.label == "Labels"][0].input(labels)
        [s for s in at.selectbox if s.label == "Format"][-1].select(format_name)  # the export form's (last)
        [b for b in at.button if b.label == "Prepare the file"][0].click()
        clean_run(at)
        assert at.error or any("records" in c.value for c in at.caption), labels

    run()
    count("page jobs_data export form", cases)
