"""Real datasets at full size (issue 22): import, `db info` and the labelled exports at 1K, 10K
and 100K trajectories, through the public paths (a JSONL dump imported by `stepscope import`).

The mix, per N trajectories of 6 steps (N / 8 problems, 8 solutions each, half of them right):
- human labels: annotator "A" on every step, "B" also on every 10th trajectory (6.6 N);
- verdicts: a judge ("bench-judge", verifier_kind judge) and a PRM ("bench-prm", verifier_kind
  prm) on every step, and the judge's outcome verdict on every solution (13 N);
- rollouts: 2 per step of 4 trajectories in 5 (9.6 N).

What is measured:
- import: `stepscope import --format jsonl` in a fresh process (wall time, peak RSS of the child
  by os.wait4), rows added per second (all tables the import writes, nodes included); meanwhile a
  second process saves a label with `Store.save_annotation` every 100 ms and records its worst
  wait (`max_save_wait_during_import_s`);
- `stepscope db info`, `stepscope export trl --labels human:A`, `stepscope export processbench
  --labels human:A`: each in a fresh process twice; `cold_s` is the first run (Python's imports
  and the file's pages may still be in the OS cache from the import: "cold" means a new process),
  `warm_s` the second, `peak_rss_mb` the larger of the two children's peak RSS.

Dumps and stores are cached outside git under $STEPSCOPE_SCALE_CACHE (default
/tmp/stepscope-scale): `store_for(size)` returns a built store (the hook for page timings: an
AppTest measurement can open `store_for("M")` without rebuilding), `--rebuild` builds again.

    nice .venv/bin/python benchmarks/scale.py S M          # figures to benchmarks/results/scale.json
    nice .venv/bin/python benchmarks/scale.py S M L
    nice .venv/bin/python benchmarks/scale.py M L --pages-only   # page timings into scale.json's "pages"

Page timings (Compare, Best-of-N, Explore's "labels disagree" filter: AppTest, fresh processes, see
benchmarks/scale_store.py, which also builds a store of this mix in seconds for them) run on the
imported stores with --pages (after the import figures) or --pages-only (the stores as built).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.formats import import_file  # noqa: E402
from core.store import Store  # noqa: E402

CACHE = Path(os.environ.get("STEPSCOPE_SCALE_CACHE", "/tmp/stepscope-scale"))
RESULTS = REPO / "benchmarks" / "results" / "scale.json"
SIZES = {"S": 1_000, "M": 10_000, "L": 100_000}
STEPS, PER_PROBLEM, B_EVERY, NO_ROLLOUTS_EVERY, ROLLOUTS_PER_STEP = 6, 8, 10, 5, 2
STAMP = "2026-01-01T00:00:00.000+00:00"
STEPSCOPE = str(Path(sys.executable).with_name("stepscope"))
# The tables an import writes (their rows are what "rows per second" counts).
TABLES = ("problems", "trajectories", "segmentations", "steps", "nodes", "annotators", "annotations",
          "rollouts", "verdicts", "verifiers", "jobs")  # fmt: skip


def dump_path(size: str) -> Path:
    return CACHE / f"scale-{size}.jsonl"


def store_path(size: str) -> Path:
    return CACHE / f"scale-{size}.db"


def write_dump(size: str, *, rebuild: bool = False) -> Path:
    """The size's JSONL dump (the jsonl format's full form, core/formats/jsonl.py), cached."""
    path = dump_path(size)
    if path.exists() and not rebuild:
        return path
    n, rng = SIZES[size], random.Random(22)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    keys = iter(range(10**12))
    with open(temporary, "w", encoding="utf-8") as out:
        for t in range(n):
            p = t // PER_PROBLEM
            gold = str(p % 97)
            correct = t % 2 == 0
            texts = [f"Step {k + 1}: x{k} = {p} + {t} * {k} = {p + t * k}." for k in range(STEPS)]
            solution = "\n".join(texts) + f"\nThe answer is {gold if correct else 'unknown'}."
            texts[-1] = solution[solution.index(texts[-1]):]
            steps, start = [], 0
            for k, text in enumerate(texts):
                step = {"text": text, "start": start, "end": start + len(text)}
                start += len(text) + 1
                wrong = not correct and k >= 3
                step["annotations"] = [_label("A", -1 if wrong else 1, k == 3 and wrong)]
                if t % B_EVERY == 0:
                    step["annotations"].append(_label("B", rng.choice((-1, 1)), False))
                if t % NO_ROLLOUTS_EVERY:
                    step["rollouts"] = [
                        {"key": f"r{next(keys):013d}", "job": None, "text": f"... so the answer is {j}.",
                         "answer": str(j), "correct": j == 0, "num_tokens": 40, "finish_reason": "stop",
                         "seed": j, "model": "bench-policy", "created_at": STAMP}
                        for j in range(ROLLOUTS_PER_STEP)
                    ]  # fmt: skip
                step["verdicts"] = [_verdict(next(keys), name, kind, "step", rng.random())
                                    for name, kind in (("bench-judge", "judge"), ("bench-prm", "prm"))]  # fmt: skip
                steps.append(step)
            trajectory = {
                "source": "policy", "model": "bench-policy", "policy_prompt": None, "solution": solution,
                "final_answer": gold if correct else "unknown", "correct": correct, "meta": {},
                "created_at": STAMP, "current_segmentation": 0,
                "segmentations": [{"rule": "pre-split", "created_at": STAMP, "steps": steps}],
                "verdicts": [_verdict(next(keys), "bench-judge", "judge", "outcome", rng.random())],
            }  # fmt: skip
            problem = {"dataset": f"scale-{size}", "question": f"Problem {p}: what is {p} mod 97?", "gold": gold,
                       "meta": {}, "created_at": STAMP}  # fmt: skip
            out.write(json.dumps({"problem": problem, "trajectory": trajectory}) + "\n")
    temporary.replace(path)
    return path


def _label(annotator: str, rating: int, first_error: bool) -> dict:
    return {"annotator": annotator, "rating": rating, "first_error": first_error, "flagged": False, "note": None,
            "created_at": STAMP, "updated_at": STAMP}  # fmt: skip


def _verdict(key: int, judge: str, verifier_kind: str, kind: str, p_yes: float) -> dict:
    return {"key": f"v{key:013d}", "job": None, "judge": judge, "verifier_kind": verifier_kind, "kind": kind,
            "p_yes": round(p_yes, 4), "mass": 1.0, "raw": None, "template": None, "template_hash": None,
            "created_at": STAMP}  # fmt: skip


def _seed(path: Path) -> int:
    """One small trajectory imported first: the step the concurrent saver labels."""
    seed = path.with_name(path.name + ".seed.jsonl")
    seed.write_text(json.dumps({"question": "Seed: 1 + 1?", "gold": "2", "dataset": "seed",
                                "steps": ["1 + 1 = 2.", "The answer is 2."]}) + "\n")  # fmt: skip
    store = Store(path)
    import_file(store, seed, "jsonl")
    step_id = store.steps(store.list_trajectories(dataset="seed")[0]["id"])[0]["id"]
    store.save_annotation("saver", step_id, rating=1)  # the saver's later saves add no rows
    store.close()
    return step_id


def _counts(path: Path) -> dict[str, int]:
    store = Store(path)
    counts = {t: store.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608
    store.close()
    return counts


def run_child(args: list[str], **kwargs) -> tuple[float, float, subprocess.Popen]:
    """(wall seconds, peak RSS in MB) of one child process, from its own rusage."""
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {child.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, child


SAVER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from core.store import Store
store = Store({db!r}, timeout=120)
stop, waits, rating = Path({stop!r}), [], 1
Path({ready!r}).touch()
while not stop.exists():
    started = time.perf_counter()
    store.save_annotation("saver", {step}, rating=rating)
    waits.append(time.perf_counter() - started)
    rating = -rating
    time.sleep(0.1)
Path({out!r}).write_text(json.dumps({{"saves": len(waits), "max_s": max(waits), "mean_s": sum(waits) / len(waits)}}))
"""


def build_store(size: str, *, rebuild: bool = False) -> tuple[Path, dict]:
    """Import the size's dump into a fresh store through `stepscope import`, with a process saving
    a label every 100 ms meanwhile; the store's path and the import's figures."""
    dump = write_dump(size, rebuild=rebuild)
    path = store_path(size)
    for suffix in ("", "-wal", "-shm", "-imports.lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    step_id = _seed(path)
    before = _counts(path)
    stop, ready, out = (path.with_name(f"{path.name}.{name}") for name in ("stop", "ready", "saver.json"))
    for marker in (stop, ready, out):
        marker.unlink(missing_ok=True)
    code = SAVER.format(repo=str(REPO), db=str(path), stop=str(stop), ready=str(ready), out=str(out), step=step_id)
    saver = subprocess.Popen([sys.executable, "-c", code])
    while not ready.exists():
        if saver.poll() is not None:
            raise SystemExit("the saver process failed")
        time.sleep(0.05)
    try:
        wall, rss, child = run_child([STEPSCOPE, "import", "--format", "jsonl", str(dump), "--db", str(path)])
    finally:
        stop.touch()
        saver.wait()
    waits = json.loads(out.read_text())
    after = _counts(path)
    added = {t: after[t] - before[t] for t in TABLES}
    rows = sum(added.values())
    figures = {
        "cold_s": round(wall, 2), "peak_rss_mb": round(rss, 1), "rows": rows, "rows_added": added,
        "rows_per_s": round(rows / wall), "dump_mb": round(dump.stat().st_size / 2**20, 1),
        "max_save_wait_s": round(waits["max_s"], 3), "mean_save_wait_s": round(waits["mean_s"], 4),
        "saves": waits["saves"], "summary": child.stdout.read().decode().strip(),
    }  # fmt: skip
    return path, figures


def store_for(size: str) -> Path:
    """The hook for other measurements (page timings): the size's store, built if missing."""
    path = store_path(size)
    if not path.exists():
        build_store(size)
    return path


def time_command(args: list[str], repeats: int = 2) -> dict:
    runs = [run_child(args) for _ in range(repeats)]
    return {"cold_s": round(runs[0][0], 2), "warm_s": round(min(r[0] for r in runs[1:]), 2),
            "peak_rss_mb": round(max(r[1] for r in runs), 1)}  # fmt: skip


def measure(size: str, *, rebuild: bool) -> dict:
    path, imported = build_store(size, rebuild=rebuild)
    out = CACHE / f"export-{size}"
    figures = {"trajectories": SIZES[size], "import": imported,
               "db_info": time_command([STEPSCOPE, "db", "info", "--db", str(path)])}  # fmt: skip
    for name in ("trl", "processbench"):
        target = out.with_suffix(f".{name}.jsonl")
        figures[f"export_{name}"] = time_command(
            [STEPSCOPE, "export", name, str(target), "--labels", "human:A", "--db", str(path)])
        figures[f"export_{name}"]["records"] = sum(1 for _ in open(target, encoding="utf-8"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", default=["S", "M"], choices=list(SIZES))
    parser.add_argument("--rebuild", action="store_true", help="write the dumps again")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pages", action="store_true", help="also time the analysis pages on each store")
    parser.add_argument("--pages-only", action="store_true", help="only time the pages; keep the other figures")
    args = parser.parse_args()
    if args.pages_only:
        main_pages(args.sizes, args.out)
        return
    results: dict = {"sizes": {}, "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    for size in args.sizes:
        started = time.perf_counter()
        results["sizes"][size] = measure(size, rebuild=args.rebuild)
        print(size, f"{time.perf_counter() - started:.0f}s", json.dumps(results["sizes"][size]), flush=True)
    largest = max(args.sizes, key=SIZES.get)
    results.update({
        "largest_trajectories": SIZES[largest],
        "import_rows_per_s": results["sizes"][largest]["import"]["rows_per_s"],
        "max_save_wait_during_import_s": max(r["import"]["max_save_wait_s"] for r in results["sizes"].values()),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": "each command in a fresh process; cold = first run, warm = second; peak RSS of the child "
                 "(os.wait4); the import runs beside a process saving a label every 100 ms",
    })  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.pages:
        main_pages(args.sizes, args.out)


def main_pages(sizes: list[str], out: Path) -> None:
    """Page timings per size into the figures file's "pages" section (the rest is kept)."""
    from benchmarks.scale_store import targets, time_pages

    load_before = [round(x, 2) for x in os.getloadavg()]
    pages = {str(SIZES[size]): time_pages(store_for(size), label=size) for size in sizes}
    figures = json.loads(out.read_text()) if out.exists() else {}
    figures["pages"] = {
        "by_trajectories": pages, "targets": targets(pages) if len(pages) > 1 else None,
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": "benchmarks/scale_store.py time_pages: AppTest in fresh processes, the script thread's CPU "
                  "seconds; first = no results kept beside the database (never computed), cold = a second fresh "
                  "process, warm = a later session, after_change = a fresh process after a label was saved (the "
                  "earlier results shown, marked stale) and current_after = until the background computation of "
                  "the current ones is done (wall, and the process's CPU)",
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote the page timings to {out}")


if __name__ == "__main__":
    main()
