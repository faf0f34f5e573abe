"""A large store for timing the analysis pages (Compare, Best-of-N, Explore's disagreement filter),
built in seconds by set-wise inserts through the Store's own connection, and the page timings.

The mix (issue 22), per N trajectories (N = 10,000 or 100,000):

- N / 8 problems x 8 policy solutions (source "policy", one model), 6 steps each (6 N steps),
  half of the solutions right;
- human labels: annotator "A" on every step, "B" on the steps of every 10th trajectory (6.6 N);
- verdicts: a judge ("bench-judge", kind judge) and a PRM ("bench-prm", kind prm) on every step,
  and the judge's outcome verdict on every solution (13 N);
- rollouts: 8 per step of every 5th trajectory (9.6 N), from the policy.

Stores are cached outside git (/tmp/stepscope-pages/scale-N.db; --rebuild builds again).

    python benchmarks/scale_store.py build 10000 100000
    python benchmarks/scale_store.py time 10000 --out benchmarks/results/pages_scale.json

`time` times each page's script inside Streamlit's script runner (what the server spends on the
run: the script thread's CPU) with AppTest, imports warmed first, four ways: `first` in a fresh
process with no results kept beside the database (never computed), `warm` in later sessions of
that process, `cold` in a second fresh process on the same data (results read back from
<database>.cache/, core/store/disk_cache.py), and `after_change` in a fresh process after a label
was saved (slow results shown as they were, marked stale, while the current ones are computed in
the background: how long that takes is `current_after`). `targets` checks the issue's bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.store import Store  # noqa: E402
from core.store.nodes import child_key, root_key  # noqa: E402
from core.store.verifiers import register_verifiers  # noqa: E402

CACHE = Path(os.environ.get("STEPSCOPE_SCALE_CACHE", "/tmp/stepscope-pages"))
PER_PROBLEM, STEPS, ROLLOUTS_PER_STEP = 8, 6, 8
B_EVERY, ROLLOUT_EVERY = 10, 5
POLICY, JUDGE, PRM = "bench-policy", "bench-judge", "bench-prm"
STAMP = "2026-01-01T00:00:00.000+00:00"


def store_path(n: int) -> Path:
    return CACHE / f"scale-{n}.db"


def build(path: Path, n: int, seed: int = 0) -> dict:
    """Bulk-insert the rows (executemany over generated columns; keys are sequential strings so
    the UNIQUE indexes grow at their end)."""
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store.open(path)
    rng = np.random.default_rng(seed)
    problems = n // PER_PROBLEM
    n = problems * PER_PROBLEM
    conn = store.conn
    conn.execute("PRAGMA synchronous = OFF")
    with store.transaction():
        conn.execute("PRAGMA defer_foreign_keys = ON")  # a trajectory names its segmentation before it exists
        base_p = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM problems").fetchone()[0])
        base_t = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM trajectories").fetchone()[0])
        base_g = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM segmentations").fetchone()[0])
        base_s = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM steps").fetchone()[0])
        conn.executemany(
            "INSERT INTO problems (id, key, dataset, question, gold, meta, created_at) VALUES (?, ?, 'bench', ?, ?, '{}', ?)",
            ((base_p + 1 + p, f"bench-p{p:08d}", f"Problem {p}: {p % 97 + 3} boxes of {p % 13 + 2} pens. How many pens?",
              str((p % 97 + 3) * (p % 13 + 2)), STAMP) for p in range(problems)),
        )  # fmt: skip
        correct = (rng.random(n) < 0.5).astype(int)
        answers = rng.integers(0, 4, n)  # a few distinct answers per problem, for the majority vote
        conn.executemany(
            """INSERT INTO trajectories (id, key, problem_id, source, model, solution, final_answer, correct, meta,
                   current_segmentation_id, created_at) VALUES (?, ?, ?, 'policy', ?, ?, ?, ?, '{}', ?, ?)""",
            ((base_t + 1 + t, f"bench-t{t:09d}", base_p + 1 + t // PER_PROBLEM, POLICY,
              "\n".join(f"Step {k} of solution {t}." for k in range(STEPS)),
              "right" if correct[t] else f"wrong-{answers[t]}", int(correct[t]), base_g + 1 + t, STAMP)
             for t in range(n)),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO segmentations (id, trajectory_id, rule, key, created_at) VALUES (?, ?, 'line', ?, ?)",
            ((base_g + 1 + t, base_t + 1 + t, f"bench-g{t:09d}", STAMP) for t in range(n)),
        )
        conn.executemany(
            """INSERT INTO steps (id, segmentation_id, trajectory_id, idx, text, start_char, end_char)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            ((base_s + 1 + t * STEPS + k, base_g + 1 + t, base_t + 1 + t, k, f"Step {k} of solution {t}.", 0, 0)
             for t in range(n) for k in range(STEPS)),
        )  # fmt: skip
        total_steps = n * STEPS
        # The rollout tree's nodes (Explore's tree panel): a root per problem, a node per step prefix.
        base_n = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM nodes").fetchone()[0])
        root_keys = [root_key(f"bench-p{p:08d}") for p in range(problems)]
        conn.executemany(
            "INSERT INTO nodes (id, key, problem_id, parent_id, depth, text, created_at) VALUES (?, ?, ?, NULL, 0, '', ?)",
            ((base_n + 1 + p, root_keys[p], base_p + 1 + p, STAMP) for p in range(problems)),
        )

        def step_nodes():
            for t in range(n):
                key, parent = root_keys[t // PER_PROBLEM], base_n + 1 + t // PER_PROBLEM
                for k in range(STEPS):
                    text = f"Step {k} of solution {t}."
                    key = child_key(key, text)
                    node = base_n + problems + 1 + t * STEPS + k
                    yield node, key, base_p + 1 + t // PER_PROBLEM, parent, k + 1, text, STAMP
                    parent = node

        conn.executemany(
            "INSERT INTO nodes (id, key, problem_id, parent_id, depth, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            step_nodes(),
        )
        conn.execute("UPDATE steps SET node_id = id - ? + ? WHERE id > ?", [base_s + 1, base_n + problems + 1, base_s])
        step_ids = base_s + 1 + np.arange(total_steps)
        traj_of = np.arange(total_steps) // STEPS
        # Human ratings: mostly +1, some -1, a few 0; B agrees with A on ~85% of its steps.
        rating_a = rng.choice([-1, 0, 1], total_steps, p=[0.25, 0.05, 0.70])
        rating_b = np.where(rng.random(total_steps) < 0.85, rating_a, rng.choice([-1, 0, 1], total_steps))
        ids = {name: store.annotator_id(name) for name in ("A", "B")}
        with_b = traj_of % B_EVERY == 0
        conn.executemany(
            """INSERT INTO annotations (annotator_id, step_id, rating, first_error, flagged, note, created_at,
                   updated_at, confidence, dwell_ms, rating_order) VALUES (?, ?, ?, 0, 0, NULL, ?, ?, ?, ?, ?)""",
            [(ids["A"], int(s), int(r), STAMP, STAMP, int(s % 5) + 1, int(s % 7) * 900 + 300, int(s % STEPS))
             for s, r in zip(step_ids, rating_a)]
            + [(ids["B"], int(s), int(r), STAMP, STAMP, int(s % 3) + 3, int(s % 11) * 700 + 200, int(s % STEPS))
               for s, r in zip(step_ids[with_b], rating_b[with_b])],
        )  # fmt: skip
        # Scores that track the human label, so AUROC and calibration say something.
        fine = rating_a >= 0
        judge = np.clip(np.where(fine, 0.65, 0.35) + rng.normal(0, 0.2, total_steps), 0, 1).round(4)
        prm = np.clip(np.where(fine, 0.7, 0.3) + rng.normal(0, 0.25, total_steps), 0, 1).round(4)
        register_verifiers(conn, [(JUDGE, "judge", None), (PRM, "prm", None)])
        tids = base_t + 1 + traj_of
        conn.executemany(
            """INSERT INTO verdicts (key, trajectory_id, step_id, judge, kind, p_yes, created_at)
               VALUES (?, ?, ?, ?, 'step', ?, ?)""",
            ((f"bench-vj{i:09d}", int(t), int(s), JUDGE, float(p), STAMP) for i, (t, s, p) in enumerate(zip(tids, step_ids, judge))),
        )  # fmt: skip
        conn.executemany(
            """INSERT INTO verdicts (key, trajectory_id, step_id, judge, kind, p_yes, created_at)
               VALUES (?, ?, ?, ?, 'step', ?, ?)""",
            ((f"bench-vp{i:09d}", int(t), int(s), PRM, float(p), STAMP) for i, (t, s, p) in enumerate(zip(tids, step_ids, prm))),
        )  # fmt: skip
        outcome = np.clip(np.where(correct == 1, 0.6, 0.4) + rng.normal(0, 0.25, n), 0, 1).round(4)
        conn.executemany(
            """INSERT INTO verdicts (key, trajectory_id, step_id, judge, kind, p_yes, created_at)
               VALUES (?, ?, NULL, ?, 'outcome', ?, ?)""",
            ((f"bench-vo{t:09d}", base_t + 1 + t, JUDGE, float(outcome[t]), STAMP) for t in range(n)),
        )  # fmt: skip
        rolled = step_ids[traj_of % ROLLOUT_EVERY == 0]
        p_right = np.where(fine[traj_of % ROLLOUT_EVERY == 0], 0.7, 0.25)
        hits = rng.random((len(rolled), ROLLOUTS_PER_STEP)) < p_right[:, None]
        node_of = base_n + problems + 1 - (base_s + 1)
        conn.executemany(
            """INSERT INTO rollouts (key, step_id, node_id, text, answer, correct, num_tokens, finish_reason, seed, model,
                   created_at) VALUES (?, ?, ?, ' so the total is 1.', '1', ?, 8, 'stop', ?, ?, ?)""",
            ((f"bench-r{i * ROLLOUTS_PER_STEP + r:010d}", int(s), int(s) + node_of, int(hits[i, r]), r, POLICY, STAMP)
             for i, s in enumerate(rolled) for r in range(ROLLOUTS_PER_STEP)),
        )  # fmt: skip
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("ANALYZE")
    counts = {k: v for k, v in store.counts().items() if isinstance(v, int)}
    store.close()
    return {"trajectories": n, "seconds": round(time.perf_counter() - started, 1), "counts": counts}


def ensure(n: int, rebuild: bool = False) -> Path:
    path = store_path(n)
    if rebuild or not path.exists():
        print(f"building {path} ...", flush=True)
        print(json.dumps(build(path, n)), flush=True)
    return path


# --- page timings ---------------------------------------------------------------------------

PAGES = {
    "compare": {},
    "best_of_n": {},
    "explore (labels disagree: anything)": {"ex_disagree": "anything"},
}
_SCRIPT_SECONDS: list[float] = []


def _time_script_runs() -> None:
    import streamlit.runtime.scriptrunner.script_runner as runner

    original = runner.exec_func_with_error_handling

    def timed_exec(func, ctx):
        started = time.thread_time()  # the script thread's own: not a background computation's
        wall = time.perf_counter()
        try:
            return original(func, ctx)
        finally:
            _SCRIPT_SECONDS.append((time.thread_time() - started, time.perf_counter() - wall))

    runner.exec_func_with_error_handling = timed_exec


def time_page(db: Path, page: str, repeats: int = 2, change: bool = False) -> dict:
    """In this process: the page's first run (cold caches) and `repeats - 1` more in new sessions.
    With `change`, a label is saved first (Best-of-N: a solution is added; a data change: the
    results kept beside the database are from the version before it), and the first run is timed, then the wait until the current
    figures are computed in the background, then one more run."""
    import resource

    from streamlit.testing.v1 import AppTest

    from core.store.disk_cache import revalidating

    os.environ["STEPSCOPE_DB"] = str(db)
    _time_script_runs()
    import scipy.stats  # noqa: F401 - imports are not the page's cost
    import sklearn.metrics  # noqa: F401
    import statsmodels.stats.inter_rater  # noqa: F401
    import statsmodels.stats.proportion  # noqa: F401
    import pages._preload  # noqa: F401

    if change:
        _save_a_label(db, page)
    script = page.split(" ")[0]
    runs = []
    for run in range(2 if change else repeats):
        at = AppTest.from_file(str(REPO / "pages" / f"{script}.py"), default_timeout=600)
        at.session_state["db_path"] = str(db)
        at.session_state["policy_model"] = POLICY
        for key, value in PAGES[page].items():
            at.session_state[key] = value
        _SCRIPT_SECONDS.clear()
        started, cpu_started = time.perf_counter(), time.process_time()
        at.run()
        if at.exception:
            raise RuntimeError([e.message for e in at.exception])
        cpu, wall = map(sum, zip(*_SCRIPT_SECONDS))
        runs.append({"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                     "stale_shown": any("before the latest change" in i.value for i in at.info)})  # fmt: skip
        if change and run == 0:
            while revalidating():
                time.sleep(0.05)
            runs[0]["current_after_wall_s"] = round(time.perf_counter() - started, 3)
            runs[0]["current_after_cpu_s"] = round(time.process_time() - cpu_started, 3)
    return {"cold": runs[0], "warm": runs[1:], "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _save_a_label(db: Path, page: str) -> None:
    """A data change as a person makes one: annotator "bench-change" rates the first step; for
    Best-of-N (whose data version labels do not change) the policy's solutions of a problem get
    one more, graded."""
    store = Store.open(db)
    if page.startswith("best_of_n"):
        problem, answer = store.conn.execute(
            "SELECT problem_id, final_answer FROM trajectories WHERE source = 'policy' AND model = ? LIMIT 1",
            [POLICY]).fetchone()  # fmt: skip
        count = store.conn.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0]
        store.add_trajectory(problem, f"One more sample ({count}). The answer is {answer}.", source="policy",
                             model=POLICY, final_answer=answer, correct=False)  # fmt: skip
    else:
        step = store.conn.execute("SELECT MIN(id) FROM steps").fetchone()[0]
        before = store.annotation("bench-change", step)
        store.save_annotation("bench-change", step, rating=1 if before is None or before["rating"] != 1 else -1)
    store.close()


def _page_process(db: Path, page: str, repeats: int, change: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "page", str(db), page, "--repeats", str(repeats),
                           *(["--change"] if change else [])], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_all(n: int, repeats: int) -> dict:
    """Per page: `first` = a fresh process on data it has never seen (no results kept beside the
    database: the first render after a change), then `warm` = later sessions of that process;
    `cold` = another fresh process on the same data (results read back from beside the database)."""
    return time_pages(ensure(n), repeats, label=f"N={n}")


def time_pages(db: Path, repeats: int = 2, label: str = "") -> dict:
    """`time_all` on any store with this mix's names (policy, judge, PRM): benchmarks/scale.py's too."""
    import shutil

    from core.store.disk_cache import folder

    out = {}
    for page in PAGES:
        started = time.perf_counter()
        shutil.rmtree(folder(db), ignore_errors=True)
        computed = _page_process(db, page, repeats)
        again = _page_process(db, page, 1)
        changed = _page_process(db, page, 1, change=True)
        if "error" in computed or "error" in again or "error" in changed:
            out[page] = {"error": computed.get("error") or again.get("error") or changed.get("error")}
        else:
            after = changed["cold"]
            out[page] = {"first_cpu_s": computed["cold"]["cpu_s"], "first_wall_s": computed["cold"]["wall_s"],
                         "cold_cpu_s": again["cold"]["cpu_s"], "cold_wall_s": again["cold"]["wall_s"],
                         "warm_cpu_s": max(r["cpu_s"] for r in computed["warm"]),
                         "warm_wall_s": max(r["wall_s"] for r in computed["warm"]),
                         "after_change_cpu_s": after["cpu_s"], "after_change_wall_s": after["wall_s"],
                         "after_change_stale_shown": after["stale_shown"],
                         "after_change_current_after_wall_s": after.get("current_after_wall_s"),
                         "after_change_current_after_cpu_s": after.get("current_after_cpu_s"),
                         "after_change_rerun_cpu_s": changed["warm"][0]["cpu_s"],
                         "after_change_rerun_stale_shown": changed["warm"][0]["stale_shown"],
                         "max_rss_mb": max(computed["max_rss_mb"], again["max_rss_mb"], changed["max_rss_mb"])}  # fmt: skip
        print(f"{label} {page}: {out[page]} ({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def targets(results: dict) -> dict:
    """The issue's checks: at the largest size every page <= 1.0 s cold and <= 0.3 s warm; from
    the smallest to the largest no page's cold time grows more than 3x (CPU seconds)."""
    small, large = results[min(results, key=int)], results[max(results, key=int)]
    checks = {}
    for page, figures in large.items():
        if "error" in figures:
            continue
        checks[page] = {
            "cold_le_1s": figures["cold_cpu_s"] <= 1.0, "first_le_1s": figures["first_cpu_s"] <= 1.0,
            "after_change_le_1s": figures["after_change_cpu_s"] <= 1.0,
            "warm_le_0.3s": figures["warm_cpu_s"] <= 0.3,
            "cold_growth": round(figures["cold_cpu_s"] / max(small[page]["cold_cpu_s"], 1e-3), 2),
            "first_growth": round(figures["first_cpu_s"] / max(small[page]["first_cpu_s"], 1e-3), 2),
        }  # fmt: skip
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("sizes", type=int, nargs="+")
    b.add_argument("--rebuild", action="store_true")
    t = sub.add_parser("time")
    t.add_argument("sizes", type=int, nargs="+")
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--out", type=Path)
    t.add_argument("--label", default="after")
    p = sub.add_parser("page")
    p.add_argument("db", type=Path)
    p.add_argument("page")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--change", action="store_true", help="save a label first, then time the page and its update")
    args = parser.parse_args()
    if args.command == "build":
        for n in args.sizes:
            ensure(n, args.rebuild)
    elif args.command == "page":
        print(json.dumps(time_page(args.db, args.page, args.repeats, args.change)))
    else:
        load_before = os.getloadavg()
        results = {str(n): time_all(n, args.repeats) for n in args.sizes}
        report = {
            "label": args.label, "results": results, "targets": targets(results) if len(results) > 1 else None,
            "method": ("AppTest, the page script thread's CPU (thread_time: a background computation is counted "
                       "apart) and wall seconds inside Streamlit's script runner, scientific imports warmed first; "
                       "first = a fresh process, no results kept beside the database (never computed); after_change "
                       "= a fresh process after a saved label, earlier results kept; warm = later sessions of that "
                       "process (max of the repeats); cold = another fresh process on the same data (results "
                       "read back from <database>.cache/)"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "load_average_before": load_before,
                        "load_average_after": os.getloadavg()},
        }  # fmt: skip
        print(json.dumps(report, indent=1))
        if args.out:
            existing = json.loads(args.out.read_text()) if args.out.exists() else {}
            existing[args.label] = report
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(existing, indent=1) + "\n")


if __name__ == "__main__":
    main()
