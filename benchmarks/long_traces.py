"""Long reasoning traces (issue 26): Explore and Annotate on 1,000- and 2,000-step trajectories,
and the first-error search's budget against fixed N as traces grow.

    .venv/bin/python benchmarks/long_traces.py                      # -> benchmarks/results/long_traces.json
    .venv/bin/python benchmarks/long_traces.py --sizes 1000 --repeats 2 --trajectories 100   (quicker)

1. page_s: a trajectory of 1,000 and one of 2,000 steps, each the think parts of 250-step
   synthetic traces (core.synth.long_trace: 4 and 8 of them, the last one wrong) joined by blank
   lines into one plain-text `reasoning` record and imported through core.formats.import_file
   (the CLI's and the app's import path; cut by `paragraph`). Rollouts are written straight to
   the store (not by an estimate job: there is no model in the loop here) at every 10th step and
   at the true first error, 4 each, consistent with the ground truth: one of four reaches the
   answer before the first error, none from it on. Each page's script is timed inside
   Streamlit's script runner with AppTest, as benchmarks/scale_store.py's time_page does (CPU =
   process_time, wall = perf_counter, scientific imports warmed first): `cold` = the first run in
   a fresh process, `warm` = later sessions of that process (max of the repeats), and for
   Annotate `key` = the rerun after a rating key (what a save costs the server). Each size is
   timed in its own process; a 20-step trajectory is timed the same way for reference.
2. budget_ratio_by_steps: benchmarks/mcpe_bench.py's simulated replay (a policy with a known
   first error, success probability 0.5 per rollout before it, 0 after) at M = 16, 64 and 256
   steps: core.mcpe.FirstErrorSearch (round size 4, at most N per step) against fixed N = 16 over
   the same rollout streams, rollouts spent and agreement on the located first error, wrong
   solutions only (a correct outcome settles the search at 0 rollouts; reported apart by
   mcpe_bench). If the search's cost grows like log M, its rollouts per trajectory rise by about
   the same amount for each doubling of M, and the ratio to fixed N (M x N) falls like log M / M.

3. real_model (`--real-model`, or `real-model` alone to add only this section to the existing
   JSON): the embedded policy (SmolLM2-135M, transformers engine, CPU) continuing synthetic long
   traces (core.synth.long_trace, outcome wrong: 2 of 16 steps and 2 of 64, imported through the
   reasoning importer, paragraph steps) in real estimate jobs (core.jobs.estimate.run_estimate),
   the first-error search against fixed N over the same trajectories in separate stores: rollouts
   used, how many reached the gold answer and from which steps, and the prompt tokens the engine
   prefilled and took from its prefix cache (core.search.compute's counting wrapper). Fixed N is
   sampled on the 16-step traces only (on the 64-step ones it would cost M x N rollouts exactly,
   reported, not sampled, to keep the run within minutes). Rollouts run up to a token cap with the
   policy's stops but the blank line (which ends a paragraph step, so a rollout would otherwise
   stop after one step and could reach the final answer only from the last one).

The machine's load average is recorded before and after: the timings are of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # app_components: the keyboard bar's key event, as in the page tests

from core.formats import import_file  # noqa: E402
from core.store import Store  # noqa: E402
from core.synth import long_trace  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "long_traces.json"
POLICY, ANNOTATOR = "bench-policy", "bench-annotator"
TRACE_STEPS = 250
SAMPLE_EVERY, ROLLOUTS = 10, 4
TARGET_SCRIPT_S, TARGET_PAINT_S = 1.0, 2.0


def long_record(steps: int) -> tuple[dict, int]:
    """A plain-text reasoning record of `steps` paragraphs (a multiple of 250), and its first
    wrong step: the traces are right but the last, which goes wrong at its own first error."""
    count = steps // TRACE_STEPS
    traces = [long_trace(TRACE_STEPS, seed, outcome="wrong" if seed == count - 1 else "correct") for seed in range(count)]
    think = "\n\n".join(trace.think.strip("\n") for trace in traces)
    last = traces[-1]
    first_error = (count - 1) * TRACE_STEPS + last.first_error
    record = {"problem": last.question, "answer": str(last.gold), "text": f"<think>\n{think}\n</think>\n\n{last.answer}",
              "model": "synthetic-long"}  # fmt: skip
    return record, first_error


def build(db: Path, steps: int) -> dict:
    """Import one `steps`-step trajectory through the reasoning importer and give it values."""
    record, first_error = long_record(steps)
    source = db.with_suffix(".jsonl")
    source.write_text(json.dumps(record) + "\n")
    store = Store.open(db)
    started = time.perf_counter()
    import_file(store, source, "reasoning", dataset=f"long-{steps}")
    import_s = time.perf_counter() - started
    [row] = store.list_trajectories(dataset=f"long-{steps}")
    ids = [s["id"] for s in store.steps(row["id"])]
    if len(ids) != steps:
        raise RuntimeError(f"the {steps}-step record was cut into {len(ids)} steps")
    sampled = sorted({*range(0, steps, SAMPLE_EVERY), first_error})
    store.add_rollouts([
        {"step_id": ids[i], "text": "rollout", "correct": i < first_error and k == 0, "model": POLICY}
        for i in sampled for k in range(ROLLOUTS)
    ])  # fmt: skip
    return {"trajectory_id": row["id"], "steps": steps, "characters": len(record["text"]), "first_error": first_error,
            "import_s": round(import_s, 3), "rollouts": len(sampled) * ROLLOUTS}  # fmt: skip


def short_reference(db: Path) -> dict:
    """A 20-step trajectory in the same store, for comparison."""
    store = Store.open(db)
    problem = store.add_problem("short", "A short one.", "1")
    tid = store.add_trajectory(problem, "\n\n".join(f"Step {i}: 1 + 0 = 1." for i in range(20)), source="synth",
                               rule="paragraph")  # fmt: skip
    return {"trajectory_id": tid, "steps": 20}


# --- page timing (in a fresh process per page and size) ---------------------------------------


def page_state(page: str, tid: int) -> dict:
    if page == "explore":
        return {"explore_tid": tid}
    return {"annotator": ANNOTATOR, "ann_mode": "assigned list", "ann_assigned": str(tid), "ann_blind": False}


def time_page(db: Path, page: str, tid: int, repeats: int) -> dict:
    """benchmarks/scale_store.py's time_page for one trajectory: cold, then warm sessions, and
    for Annotate the rerun after a rating key."""
    import resource

    from streamlit.testing.v1 import AppTest

    from benchmarks.scale_store import _SCRIPT_SECONDS, _time_script_runs

    os.environ["STEPSCOPE_DB"] = str(db)
    _time_script_runs()
    import scipy.stats  # noqa: F401 - imports are not the page's cost
    import sklearn.metrics  # noqa: F401
    import statsmodels.stats.proportion  # noqa: F401
    import pages._preload  # noqa: F401

    def measured(action) -> dict:
        _SCRIPT_SECONDS.clear()
        action()
        cpu, wall = map(sum, zip(*_SCRIPT_SECONDS))
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}

    runs, key = [], None
    for _ in range(repeats):
        at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=600)
        at.session_state["db_path"] = str(db)
        at.session_state["policy_model"] = POLICY
        for name, value in page_state(page, tid).items():
            at.session_state[name] = value
        runs.append(measured(at.run))
        if at.exception:
            raise RuntimeError([e.message for e in at.exception])
    if page == "annotate":
        from app_components import press_key

        key = measured(lambda: press_key(at, "ann_key_r1"))
        if at.exception:
            raise RuntimeError([e.message for e in at.exception])
    rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"cold": runs[0], "warm": runs[1:], "key": key, "max_rss_mb": rss}


def page_process(db: Path, page: str, tid: int, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "page", str(db), page, str(tid), "--repeats", str(repeats)],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(timed: dict) -> dict:
    if "error" in timed:
        return timed
    out = {"cold_cpu_s": timed["cold"]["cpu_s"], "cold_wall_s": timed["cold"]["wall_s"],
           "warm_cpu_s": max(r["cpu_s"] for r in timed["warm"]), "warm_wall_s": max(r["wall_s"] for r in timed["warm"]),
           "max_rss_mb": timed["max_rss_mb"]}  # fmt: skip
    if timed.get("key"):
        out |= {"key_cpu_s": timed["key"]["cpu_s"], "key_wall_s": timed["key"]["wall_s"]}
    return out


# --- browser first paint -------------------------------------------------------------------


PAINT_REPEATS = 3


def browser_paint(folder: Path, sizes: list[int]) -> dict:
    """A real `streamlit run app.py` and headless Chromium (tests/e2e_server.py), after one
    warm-up visit (the server's first session pays its imports: `server_first_visit_s`). Per
    size, the 20-step reference first: seconds from opening Explore's deep link to its heading,
    to the step cards (the window's caption on a long trajectory) and to the value chart; on
    Annotate, from committing the annotator name (then N, the next trajectory) to the rows (the
    review window's caption on a long one), and from a rating key to its "saved" line. Explore's
    figures are medians of PAINT_REPEATS visits per size."""
    from e2e_server import chromium, settle, streamlit_server

    db = folder / "browser.db"
    trajectories = {20: short_reference(db)["trajectory_id"]}
    trajectories |= {size: build(db, size)["trajectory_id"] for size in sizes}  # ids in queue order
    shown = {size: (f"of {size:,}; click the chart to jump" if size > 20 else "Step 0") for size in trajectories}
    opened = {size: (re.compile(f"Review window: steps .* of {size:,}") if size > 20 else "Trajectory 1 of")
              for size in trajectories}  # fmt: skip
    out: dict[str, dict] = {str(size): {} for size in trajectories}

    def since(started: float) -> float:
        return round(time.perf_counter() - started, 2)

    with streamlit_server(db, log=folder / "server.log", start_timeout=180) as url, chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        started = time.perf_counter()
        page.goto(f"{url}/?trajectory={trajectories[20]}&step=0")
        page.get_by_text("Step 0").first.wait_for(timeout=180_000)
        warm_up = since(started)
        page.context.close()
        visits: dict[str, dict[str, list[float]]] = {str(size): {} for size in trajectories}
        for _ in range(PAINT_REPEATS):  # sizes interleaved, so a slow moment of the machine hits each
            for size, tid in trajectories.items():
                page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
                started = time.perf_counter()
                page.goto(f"{url}/?trajectory={tid}&step=0")
                figures = visits[str(size)]
                page.get_by_role("heading", name="Explore").wait_for(timeout=120_000)
                figures.setdefault("explore_heading_s", []).append(since(started))
                page.get_by_text(shown[size]).first.wait_for(timeout=120_000)
                figures.setdefault("explore_steps_s", []).append(since(started))
                page.locator(".vega-embed").first.wait_for(timeout=120_000)
                figures.setdefault("explore_chart_s", []).append(since(started))
                page.context.close()
        for size, figures in visits.items():  # the median of the visits, and every visit
            for name, runs in figures.items():
                out[size][name] = round(statistics.median(runs), 2)
                out[size][name[: -len("_s")] + "_runs_s"] = runs
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        page.goto(f"{url}/annotate")
        page.get_by_role("heading", name="Annotate").wait_for(timeout=120_000)
        settle(page, timeout=120_000)
        page.get_by_role("textbox", name="Annotator name").focus()
        page.keyboard.type(ANNOTATOR)
        for number, size in enumerate(trajectories):
            started = time.perf_counter()
            page.keyboard.press("Tab" if number == 0 else "n")
            page.get_by_text(opened[size]).first.wait_for(timeout=120_000)
            out[str(size)]["annotate_rows_s"] = since(started)
            out[str(size)]["annotate_after"] = "annotator name entered" if number == 0 else "N (next trajectory)"
            settle(page, timeout=120_000)
            page.wait_for_timeout(2500)  # Streamlit binds a button's shortcut a moment after it shows
            started = time.perf_counter()
            page.keyboard.press("3")
            page.get_by_text("saved: step").first.wait_for(timeout=120_000)
            out[str(size)]["annotate_save_s"] = since(started)
            settle(page, timeout=120_000)
            page.wait_for_timeout(1500)
        page.context.close()
    return {"server_first_visit_s": warm_up, "by_steps": out, "load_average_after": os.getloadavg()}


# --- first-error budget by trace length --------------------------------------------------------


def budget_by_steps(lengths: tuple[int, ...], trajectories: int, n: int = 16) -> dict:
    from benchmarks.mcpe_bench import simulated_budgets

    started = time.perf_counter()
    raw = simulated_budgets(n, lengths=lengths, trajectories=trajectories)
    rows = {}
    for m in lengths:
        figures = raw[str(m)]
        per = figures["search_rollouts"] / figures["trajectories"]
        rows[str(m)] = {
            "trajectories": figures["trajectories"], "budget_ratio": figures["budget_ratio"],
            "agreement": figures["agreement"], "agreement_first_zero": figures["agreement_first_zero"],
            "search_rollouts_per_trajectory": round(per, 1),
            "fixed_rollouts_per_trajectory": round(figures["fixed_rollouts"] / figures["trajectories"], 1),
            "search_rollouts_per_log2_m": round(per / math.log2(m), 2),
            "ratio_times_m_over_log2_m": round(figures["budget_ratio"] * m / math.log2(m), 3),
        }  # fmt: skip
    # Rollouts per doubling of M between the sizes: constant if the cost grows like log M.
    per_doubling = [
        round((rows[str(b)]["search_rollouts_per_trajectory"] - rows[str(a)]["search_rollouts_per_trajectory"])
              / math.log2(b / a), 2)
        for a, b in zip(lengths, lengths[1:])
    ]  # fmt: skip
    return {
        "rows": rows, "search_rollouts_per_doubling_of_m": per_doubling,
        "grows_like_log_m": bool(per_doubling and max(per_doubling) <= 1.5 * min(per_doubling)),
        "n": n, "round_size": 4, "p_success_before_error": 0.5,
        "counts": "wrong solutions only (the outcome is incorrect, so the search samples); mcpe_bench.simulated_budgets",
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip


# --- the embedded policy continuing the long traces ------------------------------------------

REAL_POLICY = "smollm2-135m"
REAL_SIZES, REAL_SEEDS = (16, 64), (0, 1)
REAL_N, REAL_ROUND, REAL_CAP = 4, 4, 48


def real_model(sizes: tuple[int, ...] = REAL_SIZES, seeds: tuple[int, ...] = REAL_SEEDS, n: int = REAL_N,
               max_new_tokens: int = REAL_CAP, fixed_sizes: tuple[int, ...] = (16,), policy: str = REAL_POLICY) -> dict:  # fmt: skip
    """First-error search vs fixed N with the embedded policy on synthetic long traces (see 3.)."""
    from core.engines import load_engine
    from core.jobs.estimate import default_sampling, load_tasks, run_estimate
    from core.mcpe import FirstErrorSearch, FixedN
    from core.models import resolve_model
    from core.policy import POLICY_STOP, load_template
    from core.search.compute import ComputeRecord, CountingEngine

    try:
        resolve_model(policy, dense=True, fetch=False)
    except Exception as error:  # noqa: BLE001 - not on disk: said, not fetched
        return {"error": f"the embedded model is not on disk here ({type(error).__name__}: {error})"[:500]}
    started = time.perf_counter()
    engine = load_engine("transformers", policy, device="cpu")
    load_s = time.perf_counter() - started
    stops = tuple(stop for stop in POLICY_STOP if stop != "\n\n")
    sampling = replace_sampling(default_sampling(max_new_tokens=max_new_tokens), stop=stops)
    traces = {(m, seed): long_trace(m, seed, outcome="wrong") for m in sizes for seed in seeds}
    strategies = {"first-error": FirstErrorSearch(round_size=REAL_ROUND, max_per_step=n), "fixed": FixedN(n)}
    out: dict = {"trajectories": {}, "by_strategy": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, strategy in strategies.items():
            store = Store.open(Path(folder) / f"{name}.db")
            source = Path(folder) / "traces.jsonl"
            chosen = [key for key in traces if name != "fixed" or key[0] in fixed_sizes]
            source.write_text("".join(json.dumps(traces[key].openr1_record()) + "\n" for key in chosen))
            import_file(store, source, "reasoning", dataset="long-real")
            rows = store.list_trajectories(dataset="long-real")
            by_question = {row["question"]: row["id"] for row in rows}
            ids = [by_question[traces[key].question] for key in chosen]
            tasks = load_tasks(store, ids, load_template())
            record = ComputeRecord()
            counting = CountingEngine(engine, record)
            engine.clear_prefix_cache()  # each strategy starts cold
            t0 = time.perf_counter()
            progress = run_estimate(store, counting, tasks, strategy, policy, sampling)
            seconds = time.perf_counter() - t0
            per_trajectory = {}
            for key, tid, task in zip(chosen, ids, tasks):
                m, seed = key
                trace = traces[key]
                rollouts = store.trajectory_rollouts(tid)
                by_step: dict[int, list[int]] = {}
                index_of = {step.step_id: i for i, step in enumerate(task.steps)}
                for rollout in rollouts:
                    counts = by_step.setdefault(index_of[rollout["step_id"]], [0, 0])
                    counts[0] += 1
                    counts[1] += bool(rollout["correct"])
                reached = sorted(i for i, (_, ok) in by_step.items() if ok)
                located = None
                if name == "first-error":
                    from core.mcpe import Counts

                    stored = [Counts(*by_step.get(i, (0, 0))) for i in range(len(task.steps))]
                    located = strategy.decision(stored, task.outcome)
                per_trajectory[f"{m}-steps-seed-{seed}"] = {
                    "steps": len(task.steps), "true_first_error": trace.first_error, "gold": trace.gold,
                    "trace_final_answer": trace.final, "rollouts": len(rollouts),
                    "reached_gold": sum(ok for _, ok in by_step.values()),
                    "steps_sampled": sorted(by_step), "steps_that_reached_gold": reached,
                    "located_first_error": located,
                    "prompt_tokens_longest": len(engine.tokenizer(task.steps[-1].prompt)["input_ids"]),
                }  # fmt: skip
                out["trajectories"][f"{m}-steps-seed-{seed}"] = {"steps": len(task.steps), "first_error": trace.first_error}
            sample = [r["text"] for r in store.trajectory_rollouts(ids[0])[:3]]
            out["by_strategy"][name] = {
                "strategy": strategy.describe(), "rollouts": progress.done, "tokens": progress.tokens,
                "engine_calls": progress.calls, "seconds": round(seconds, 1),
                "prompt_tokens": record.prompt_tokens, "prompt_tokens_cached": record.prompt_tokens_cached,
                "by_trajectory": per_trajectory, "example_rollouts": sample,
            }  # fmt: skip
            store.close() if hasattr(store, "close") else None
            print(f"real model, {name}: {progress.done} rollouts, {round(seconds)} s", flush=True)
    engine_info = engine.info
    engine.close()
    search, fixed = out["by_strategy"]["first-error"], out["by_strategy"]["fixed"]
    ratios = {}
    for m in sizes:
        keys = [f"{m}-steps-seed-{seed}" for seed in seeds]
        spent = sum(search["by_trajectory"][k]["rollouts"] for k in keys)
        fixed_n = sum(fixed["by_trajectory"][k]["rollouts"] for k in keys) if m in fixed_sizes else None
        ratios[str(m)] = {"search_rollouts": spent, "fixed_rollouts": fixed_n if fixed_n is not None else m * n * len(seeds),
                          "fixed_sampled": fixed_n is not None,
                          "budget_ratio": round(spent / (fixed_n if fixed_n is not None else m * n * len(seeds)), 3)}
    reached = sum(t["reached_gold"] for st in out["by_strategy"].values() for t in st["by_trajectory"].values())
    total = sum(st["rollouts"] for st in out["by_strategy"].values())
    out |= {
        "budget_by_steps": ratios, "rollouts_reached_gold": reached, "rollouts_total": total,
        "measurable": reached > 0,
        "engine": {"engine": engine_info.engine, "model": engine_info.model, "device": engine_info.device,
                   "dtype": engine_info.dtype, "threads": engine_info.extra.get("threads"),
                   "prefix_cache_mib": engine_info.extra.get("prefix_cache_mib"), "load_s": round(load_s, 1)},
        "sampling": {"n": n, "round_size": REAL_ROUND, "max_new_tokens": max_new_tokens, "temperature": sampling.temperature,
                     "stop": list(stops), "seed": sampling.seed},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    out["verdict"] = verdict(out, n, max_new_tokens)
    return out


def verdict(out: dict, n: int, cap: int) -> str:
    reached, total = out["rollouts_reached_gold"], out["rollouts_total"]
    search = out["by_strategy"]["first-error"]["by_trajectory"]
    located = ", ".join(f"{key}: {t['located_first_error']} (true {t['true_first_error']})" for key, t in search.items())
    if reached == 0:
        return (
            f"not measurable with this model: SmolLM2-135M's continuations reached the gold answer from no "
            f"prefix of the synthetic long traces (0 of {total} rollouts, N = {n}, up to {cap} new tokens). "
            "To reach it from step k a continuation must carry the running quantity through every change "
            "the question lists after step k and state the total; the 135M model does not (it is right on "
            "about 35% of one-step problems and about 0% of two-step ones, MACHINE-NOTES): within the token "
            "cap it writes a step or two with wrong arithmetic, or jumps to 'The answer is' with a number "
            "already in the text (from the last steps, the trace's own wrong total: see example_rollouts). "
            "So every probed step reads unreachable, the search "
            f"locates the first error where the binary search runs out of steps, not at the true one "
            f"(located, by trajectory: {located}), and its rollout count measures "
            "how fast it concludes 'unreachable everywhere', not the cost of finding a real first error: "
            "the budget ratio on real continuations needs a policy that can continue these traces (the "
            "simulated replay in budget_ratio_by_steps stands in for it)."
        )
    return (f"{reached} of {total} rollouts reached the gold answer: the ratio is measurable on these traces, "
            "see budget_by_steps and each trajectory's located against true first error.")


def replace_sampling(sampling, **changes):
    from dataclasses import replace

    return replace(sampling, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("page")
    p.add_argument("db", type=Path)
    p.add_argument("page")
    p.add_argument("tid", type=int)
    p.add_argument("--repeats", type=int, default=3)
    sub.add_parser("real-model", help="only the real-model section, added to the existing JSON")
    parser.add_argument("--real-model", action="store_true", help="also the embedded policy on the traces (minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trajectories", type=int, default=400, help="simulated trajectories per M")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--browser", action="store_true", help="also the first paint in headless Chromium")
    args = parser.parse_args()
    if args.command == "page":
        print(json.dumps(time_page(args.db, args.page, args.tid, args.repeats)))
        return
    if args.command == "real-model":
        report = json.loads(args.out.read_text()) if args.out.exists() else {}
        add_real_model(report, real_model_measured())
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote the real_model section of {args.out}")
        return

    load_before = os.getloadavg()
    started = time.perf_counter()
    pages: dict[str, dict] = {}
    built: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "long.db"
        built["20"] = short_reference(db)
        for size in args.sizes:
            built[str(size)] = build(db, size)
        for size, info in built.items():
            for page in ("explore", "annotate"):
                pages.setdefault(page, {})[size] = summary(page_process(db, page, info["trajectory_id"], args.repeats))
                print(f"{page} {size} steps: {pages[page][size]}", flush=True)
        paint = None
        if args.browser:
            try:
                paint = browser_paint(Path(folder), args.sizes)
            except Exception as error:  # noqa: BLE001 - a browser that cannot run is reported, not fatal
                paint = {"error": f"{type(error).__name__}: {error}"[:2000]}
            print(f"browser: {paint}", flush=True)
    load_mid = os.getloadavg()
    budget = budget_by_steps((16, 64, 256), args.trajectories)
    print(f"budget_ratio_by_steps: {budget['rows']}", flush=True)
    long_sizes = [str(s) for s in args.sizes]
    checks = {
        page: {size: {"cold_cpu_le_1s": figures.get("cold_cpu_s", math.inf) <= TARGET_SCRIPT_S,
                      "cold_wall_le_1s": figures.get("cold_wall_s", math.inf) <= TARGET_SCRIPT_S}
               for size, figures in by_size.items() if size in long_sizes}
        for page, by_size in pages.items()
    }  # fmt: skip
    by_steps = (paint or {}).get("by_steps") or {}
    browser_checks = {
        size: {"explore_steps_le_2s": figures["explore_steps_s"] <= TARGET_PAINT_S,
               "annotate_rows_le_2s": figures["annotate_rows_s"] <= TARGET_PAINT_S,
               "explore_steps_over_20_step_reference": round(figures["explore_steps_s"] / by_steps["20"]["explore_steps_s"], 2)}
        for size, figures in by_steps.items() if size in long_sizes
    }  # fmt: skip
    report = {
        "browser_targets": browser_checks or None,
        "page_s": pages, "page_targets": checks, "browser_s": paint, "trajectories": built, "budget_ratio_by_steps": budget,
        "method": ("AppTest, each page's script CPU (process_time) and wall seconds inside Streamlit's script runner "
                   "(benchmarks/scale_store.py's hook), scientific imports warmed first; one fresh process per page "
                   "and size; cold = its first run, warm = later sessions (max), key = Annotate's rerun after a "
                   "rating key. Trajectories imported by core.formats.import_file (format reasoning, paragraph "
                   "splitter); rollouts written directly (4 at every 10th step and at the true first error)."),
        "not_measured": {
            **({} if paint and "error" not in paint else {
                "browser_first_paint_s": "not measured in this run (target <= 2 s): run with --browser"}),
            "real_model_continuations": "not measured in this run: --real-model (or the real-model command) adds it",
            "estimate_job_on_long_traces": "rollouts were written to the store, not sampled by an estimate job",
        },
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_before": load_before, "load_average_after_pages": load_mid,
                    "load_average_after": os.getloadavg(),
                    "note": "wall-clock figures depend on the load averages above (2 cores); CPU seconds less so"},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    if args.real_model:
        add_real_model(report, real_model_measured())
    elif args.out.exists() and "real_model" in (earlier := json.loads(args.out.read_text())):
        add_real_model(report, earlier["real_model"])  # measured by an earlier run (its own load figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


def real_model_measured() -> dict:
    load_before = os.getloadavg()
    section = real_model()
    section["machine"] = {"load_average_before": load_before, "load_average_after": os.getloadavg(),
                          "cpus": os.cpu_count(), "note": "a shared 2-core machine; other work ran alongside"}
    return section


def add_real_model(report: dict, section: dict) -> None:
    """The real_model section, and what not_measured says about real continuations."""
    report["real_model"] = section
    notes = report.setdefault("not_measured", {})
    if "error" in section:
        notes["real_model_continuations"] = f"not measured: {section['error']}"
    elif not section.get("measurable"):
        notes["real_model_continuations"] = section["verdict"]
    else:
        notes.pop("real_model_continuations", None)


if __name__ == "__main__":
    main()
