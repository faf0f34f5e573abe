"""How fast the app's pages render on a large database: 10,000 trajectories, 100,000 steps.

Builds (once, cached under benchmarks/results/ unless --rebuild) a database with 2,000 problems x
5 policy solutions x 10 steps, 40 rollouts on each step of the first 1,000 trajectories (400,000),
judge verdicts on those steps and on every solution, and annotations by three annotators on the
first 500 trajectories.
Then, with Streamlit's AppTest (the page script run in-process, as the server runs it, without
the browser's drawing time), it times:

- each page's first render in a new session (Explore, Annotate, Compare, Best-of-N, Jobs and
  data), Explore on the first and on the last trajectory (a deep link to trajectory 10,000), and
  Explore filtered to the trajectories where labels disagree;
- a step switch on Explore (the "Next step" button), a trajectory switch ("Next"), a chart
  click's equivalent (selecting a step card), and on Annotate a rating click (saved + rerender).

Each figure is the median of --repeats runs (the maximum is reported too; for Best-of-N the
first run computes the curves and later ones, in any session, reuse them until the data changes,
so its maximum is the cold figure). Imports are warmed up
first: the first run of a process imports the scientific stack (several seconds) whatever the page.

    python benchmarks/app_render.py            # prints a table, writes benchmarks/results/app_render.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.store import Store, content_key, new_key, now, problem_key, segmentation_key  # noqa: E402
from core.steps import StepSpan  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PROBLEMS, PER_PROBLEM, STEPS = 2_000, 5, 10
ROLLOUT_TRAJECTORIES, ROLLOUTS_PER_STEP = 1_000, 40
LABELLED_TRAJECTORIES = 500
POLICY = "bench-policy"
LIMIT_SECONDS = 1.0


def build(path: Path) -> dict:
    """Bulk-insert the rows directly (the Store's per-row API would take minutes for 500k rows)."""
    started = time.perf_counter()
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store.open(path)
    stamp = now()
    with store.transaction() as conn:
        trajectory_id = step_id = 0
        for p in range(PROBLEMS):
            question = f"Problem {p}: a shop sells {p % 97 + 3} boxes of {p % 13 + 2} pens. How many pens?"
            gold = str((p % 97 + 3) * (p % 13 + 2))
            cursor = conn.execute(
                "INSERT INTO problems (key, dataset, question, gold, meta, created_at) VALUES (?, ?, ?, ?, '{}', ?)",
                [problem_key("bench", question, gold), "bench", question, gold, stamp],
            )
            problem_id = cursor.lastrowid
            for t in range(PER_PROBLEM):
                lines = [f"Step {k}: we compute {p} + {k} = {p + k} and keep going (variant {t})." for k in range(STEPS - 1)]
                lines.append(f"The answer is {gold if t % 2 == 0 else int(gold) + 1}.")
                solution = "\n".join(lines)
                spans, offset = [], 0
                for line in lines:
                    spans.append(StepSpan(line, offset, offset + len(line)))
                    offset += len(line) + 1
                trajectory_id = conn.execute(
                    """INSERT INTO trajectories (key, problem_id, source, model, solution, final_answer, correct,
                       meta, created_at) VALUES (?, ?, 'policy', ?, ?, ?, ?, '{}', ?)""",
                    [content_key("t", p, t), problem_id, POLICY, solution, lines[-1][14:-1], int(t % 2 == 0), stamp],
                ).lastrowid
                segmentation_id = conn.execute(
                    "INSERT INTO segmentations (trajectory_id, rule, key, created_at) VALUES (?, 'line', ?, ?)",
                    [trajectory_id, segmentation_key("line", spans), stamp],
                ).lastrowid
                conn.execute("UPDATE trajectories SET current_segmentation_id = ? WHERE id = ?",
                             [segmentation_id, trajectory_id])
                conn.executemany(
                    "INSERT INTO steps (segmentation_id, trajectory_id, idx, text, start_char, end_char) VALUES (?, ?, ?, ?, ?, ?)",
                    [(segmentation_id, trajectory_id, k, s.text, s.start, s.end) for k, s in enumerate(spans)],
                )
        steps = conn.execute(
            "SELECT id, trajectory_id, idx FROM steps WHERE trajectory_id <= ? ORDER BY id", [ROLLOUT_TRAJECTORIES]
        ).fetchall()
        conn.executemany(
            """INSERT INTO rollouts (key, step_id, text, answer, correct, num_tokens, finish_reason, seed, model, created_at)
               VALUES (?, ?, ?, ?, ?, 24, 'stop', 0, ?, ?)""",
            [(new_key(), sid, f" so the total is {r}.", str(r), int((sid + r) % 3 != 0), POLICY, stamp)
             for sid, _, _ in steps for r in range(ROLLOUTS_PER_STEP)],
        )  # fmt: skip
        conn.executemany(
            """INSERT INTO verdicts (key, trajectory_id, step_id, judge, kind, p_yes, created_at)
               VALUES (?, ?, ?, 'bench-judge', 'step', ?, ?)""",
            [(new_key(), tid, sid, ((sid * 37) % 100) / 100, stamp) for sid, tid, _ in steps],
        )
        conn.executemany(  # an outcome judge on every solution, for Best-of-N
            """INSERT INTO verdicts (key, trajectory_id, judge, kind, p_yes, created_at)
               VALUES (?, ?, 'bench-judge', 'outcome', ?, ?)""",
            [(new_key(), tid, ((tid * 53) % 100) / 100, stamp) for tid in range(1, trajectory_id + 1)],
        )
    labelled = store.db.execute(
        "SELECT id, idx FROM steps WHERE trajectory_id <= ? ORDER BY id", [LABELLED_TRAJECTORIES]
    ).fetchall()
    with store.transaction():
        for name in ("ann-a", "ann-b", "ann-c"):
            store.annotator_id(name)
        ids = {row[1]: row[0] for row in store.db.execute("SELECT id, name FROM annotators").fetchall()}
        store.conn.executemany(
            """INSERT INTO annotations (annotator_id, step_id, rating, first_error, flagged, note, created_at, updated_at)
               VALUES (?, ?, ?, 0, 0, NULL, ?, ?)""",
            [(ids[name], sid, (sid + i) % 3 - 1, stamp, stamp)
             for i, name in enumerate(ids) for sid, _ in labelled],
        )  # fmt: skip
    store.conn.execute("ANALYZE")
    counts = store.counts()
    store.close()
    return {"seconds": round(time.perf_counter() - started, 1), **{k: v for k, v in counts.items() if isinstance(v, int)}}


SCRIPT_SECONDS: list[float] = []


def time_script_runs() -> None:
    """Record how long each script run takes inside Streamlit's script runner: what the server
    spends on a rerun, without AppTest's own set-up (about 0.7 s for a new session here)."""
    import streamlit.runtime.scriptrunner.script_runner as runner

    original = runner.exec_func_with_error_handling

    def timed_exec(func, ctx):
        started = time.perf_counter()
        try:
            return original(func, ctx)
        finally:
            SCRIPT_SECONDS.append(time.perf_counter() - started)

    runner.exec_func_with_error_handling = timed_exec


def timed(action) -> tuple[float, float]:
    """(wall seconds of the AppTest call, seconds of the script run it triggered)."""
    SCRIPT_SECONDS.clear()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started, sum(SCRIPT_SECONDS)


def measure(db: Path, repeats: int) -> dict:
    from streamlit.testing.v1 import AppTest

    def page(name: str, **state) -> AppTest:
        at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=120)
        at.session_state["db_path"] = str(db)
        at.session_state["policy_model"] = POLICY
        for key, value in state.items():
            at.session_state[key] = value
        return at

    def check(at: AppTest) -> AppTest:
        if at.exception:
            raise RuntimeError([e.message for e in at.exception])
        return at

    def first_render(name: str, params: dict | None = None, **state) -> tuple[float, float]:
        at = page(name, **state)
        for key, value in (params or {}).items():
            at.query_params[key] = value
        seconds = timed(at.run)
        check(at)
        return seconds

    def explore_action(label: str, nth: int = 0, params: dict | None = None) -> tuple[float, float]:
        at = page("explore")
        for key, value in (params or {}).items():
            at.query_params[key] = value
        check(at.run())
        target = [b for b in at.button if b.label == label][nth]
        return timed(lambda: target.click().run())

    def annotate_click() -> tuple[float, float]:
        at = page("annotate", annotator="bench-annotator")
        check(at.run())
        target = [b for b in at.button if b.label == "+1"][0]
        return timed(lambda: target.click().run())

    last = str(PROBLEMS * PER_PROBLEM)
    cases = {
        "explore: first render (trajectory 1)": lambda: first_render("explore", {"trajectory": "1", "step": "0"}),
        "explore: first render (deep link to trajectory 10000, step 9)":
            lambda: first_render("explore", {"trajectory": last, "step": "9"}),
        "explore: first render filtered where labels disagree (human vs anything, 500 labelled trajectories)":
            lambda: first_render("explore", ex_disagree="anything"),
        "explore: step switch (Next step)": lambda: explore_action("Next step"),
        "explore: step switch (Select a step card)": lambda: explore_action("Select", 3),
        "explore: trajectory switch (Next)": lambda: explore_action("Next"),
        "annotate: first render (unlabelled first, queue of 100)":
            lambda: first_render("annotate", annotator="bench-annotator"),
        "annotate: first render (annotator with 500 labelled)": lambda: first_render("annotate", annotator="ann-a"),
        "annotate: a rating click (save and rerender)": annotate_click,
        "compare: first render (MC soft vs consensus, 5,000 labelled steps, 3 annotators)":
            lambda: first_render("compare"),
        "best-of-n: first render (2,000 problems x 5 solutions, 1 judge)": lambda: first_render("best_of_n"),
        "jobs and data: first render": lambda: first_render("jobs_data"),
    }  # fmt: skip
    time_script_runs()
    check(page("explore").run())  # warm-up: imports and the cached Store
    # The statistics libraries Compare imports on first use (about a second, once per process).
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import statsmodels.stats.inter_rater  # noqa: F401
    results = {"apptest overhead: a one-line page": {"script_median_s": 0.0, "apptest_median_s": round(
        statistics.median(timed(AppTest.from_string("import streamlit as st\nst.title('x')").run)[0]
                          for _ in range(repeats)), 3)}}  # fmt: skip
    print(f"{'script':>8} {'(max)':>8} {'AppTest':>8}  case")
    overhead = results["apptest overhead: a one-line page"]["apptest_median_s"]
    print(f"{'':>8} {'':>8} {overhead:8.3f}  AppTest's own cost: a one-line page, new session")
    for name, case in cases.items():
        runs = [case() for _ in range(repeats)]
        walls, scripts = [r[0] for r in runs], [r[1] for r in runs]
        results[name] = {
            "script_median_s": round(statistics.median(scripts), 3), "script_max_s": round(max(scripts), 3),
            "apptest_median_s": round(statistics.median(walls), 3), "apptest_max_s": round(max(walls), 3),
        }  # fmt: skip
        r = results[name]
        print(f"{r['script_median_s']:8.3f} {r['script_max_s']:8.3f} {r['apptest_median_s']:8.3f}  {name}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=RESULTS / "app_render.db")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "app_render.json")
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    os.environ["STEPSCOPE_DB"] = str(args.db)  # its folder is the app's data folder
    built = None
    if args.rebuild or not args.db.exists():
        print(f"building {args.db} …", flush=True)
        built = build(args.db)
        print(f"built in {built['seconds']} s: {built}", flush=True)
    results = measure(args.db, args.repeats)
    load = os.getloadavg()
    report = {
        "database": {"path": str(args.db), "built": built,
                     "counts": {k: v for k, v in Store.open(args.db).counts().items() if isinstance(v, int)}},
        "method": ("streamlit.testing.v1.AppTest; script_*: time of the page's script run inside Streamlit's "
                   "script runner (the server's work per rerun); apptest_*: wall time of the AppTest call, "
                   "including its per-session set-up; medians of repeats; imports warmed up"),
        "limit_s": LIMIT_SECONDS,
        "all_scripts_under_limit": all(r["script_median_s"] < LIMIT_SECONDS for r in results.values()),
        "results": results,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in load]},
        "when": now(),
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"all script runs under {LIMIT_SECONDS} s: {report['all_scripts_under_limit']} · "
          f"load average {load[0]:.1f} · wrote {args.out}")


if __name__ == "__main__":
    main()
