"""The house rules that keep the code navigable: layers, no cycles, SQL only in core/store/,
no Streamlit in core/."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
# SQL shapes, not words: "UPDATE" alone appears in prose, "UPDATE jobs SET" does not.
SQL = re.compile(
    r"\bSELECT\b[\s\S]*?\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bCREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b|\bALTER\s+TABLE\b|\bPRAGMA\s+\w+"
)


def _python_files() -> list[Path]:
    files = [ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *CORE.rglob("*.py")]
    return [f for f in files if "__pycache__" not in f.parts]


def sql_strings(source: str) -> list[str]:
    """String literals in Python source that hold SQL."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and SQL.search(token.string):
            found.append(token.string)
    return found


def test_the_sql_detector_finds_sql_and_ignores_prose():
    assert sql_strings('q = f"SELECT id FROM jobs WHERE x = {y}"\n')
    assert sql_strings('q = """UPDATE jobs\n   SET status = ?"""\n')
    assert sql_strings("conn.execute('DELETE FROM rollouts')\n")
    assert not sql_strings('"""Select the rollout with the best score; the UPDATE is the lock."""\n')


def test_no_sql_outside_the_store():
    offenders = {}
    for path in _python_files():
        if CORE / "store" in path.parents:
            continue
        hits = sql_strings(path.read_text(encoding="utf-8"))
        if hits:
            offenders[str(path.relative_to(ROOT))] = [h[:60] for h in hits]
    assert offenders == {}


def test_core_never_imports_streamlit():
    pattern = re.compile(r"^\s*(?:import|from)\s+streamlit\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in CORE.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def _layer_contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    [layers] = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers


def test_every_module_of_core_sits_in_a_layer():
    """A module left out of the contract would escape the layer check."""
    named = {name for layer in _layer_contract()["layers"] for name in re.split(r"\s*[|:]\s*", layer)}
    present = {p.stem for p in CORE.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    present -= {"prompts", "samples"}  # data packages, no code
    assert present - named == set()


@pytest.mark.timeout(300)
def test_import_contracts_hold():
    """import-linter's layers and acyclic-siblings contracts from pyproject.toml."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and result.stdout.count("KEPT") == 2


def import_graph() -> dict[str, set[str]]:
    """Every module of ours (core, pages, app) -> the modules of ours it imports, anywhere in the
    module (an import inside a function closes a cycle all the same: Python runs it when first
    called, against a module that may be half imported); type-checking imports left out, as in
    the contracts."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # pages/ is a folder of scripts, found from the repository root
    # pages has no __init__.py: grimp takes it as a namespace package. app.py is a lone module,
    # which grimp does not build, so its imports are added from its source.
    graph = grimp.build_graph("core", "pages", cache_dir=None, exclude_type_checking_imports=True)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    edges["app"] = {name for node in ast.walk(ast.parse((ROOT / "app.py").read_text(encoding="utf-8")))
                    for name in _imported_names(node) if name.split(".")[0] in ("core", "pages")}
    return edges


def _imported_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in the graph, each module importing the next, the first repeated last: one, then
    one more with that import taken out, until none is left, so every cycle has one listed."""
    edges = {module: set(imported) for module, imported in edges.items()}
    found = []
    while True:
        try:
            TopologicalSorter(edges).prepare()  # takes the imported modules as predecessors
            return found
        except CycleError as error:
            cycle = error.args[1][::-1]  # listed each a predecessor of the next: an import backwards
            found.append(cycle)
            edges[cycle[0]].discard(cycle[1])


def test_the_cycle_finder_finds_every_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d", "a"}}
    cycles = import_cycles(edges)
    assert sorted(sorted(set(cycle)) for cycle in cycles) == [["a", "b", "c"], ["d", "e"]]
    for cycle in cycles:
        assert cycle[0] == cycle[-1]
        assert all(imported in edges[importer] for importer, imported in zip(cycle, cycle[1:]))


@pytest.mark.timeout(120)
def test_our_modules_import_each_other_without_a_cycle():
    """Module by module across core, pages and app.py, not only between siblings (the
    acyclic-siblings contract): a cycle through a function-level import is a cycle too."""
    edges = import_graph()
    assert {"app", "core.store", "pages._shared", "pages.annotate"} <= edges.keys()
    cycles = import_cycles(edges)
    assert cycles == [], "\n".join(" imports ".join(cycle) for cycle in cycles)


# --- pages/_preload.py ----------------------------------------------------------------------


def _project_imports(path: Path) -> list[str]:
    """The core / pages modules a script imports at its top level, in order."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name.split(".")[0] in ("core", "pages")]


def test_every_script_imports_the_preload_first_and_it_covers_their_imports():
    """Concurrent first imports on a fresh server failed a session (pages/_preload.py): app.py
    and every page import pages._preload before anything of ours, and it imports all of it."""
    scripts = [ROOT / "app.py", *sorted(p for p in (ROOT / "pages").glob("*.py") if not p.name.startswith("_"))]
    preloaded = set(_project_imports(ROOT / "pages" / "_preload.py"))
    for script in scripts:
        imports = _project_imports(script)
        assert imports[:1] == ["pages._preload"], f"{script.name} imports {imports[:1]} first"
        missing = set(imports[1:]) - preloaded
        assert not missing, f"{script.name} imports {sorted(missing)}, which pages/_preload.py does not"
    for support in (ROOT / "pages").glob("_*.py"):
        if support.name != "_preload.py":
            missing = set(_project_imports(support)) - preloaded - {"pages._preload"}
            assert not missing, f"{support.name} imports {sorted(missing)}, which pages/_preload.py does not"
